"""Ask a (fine-tuned) model about images: one streamed answer, or a whole dataset in batches.

    python scripts/infer.py --adapter outputs/sft --image chart.png --prompt "Which bar is highest?"
    python scripts/infer.py --adapter outputs/sft --input eval.jsonl --output pred.jsonl
    python scripts/infer.py --model tiny-qwen2-vl --backend hf --image x.png --prompt "What is it?"

`--adapter` may be a training output folder, its adapter/ folder, or any LoRA adapter folder;
`--model` alone may be a base model or a merged folder (OUTPUT/merged). When the folder belongs to
a training run, the run's saved configuration supplies the base model, the image cap and the
system prompt, and the adapter folder's saved processor supplies the chat template: inference
sees images and prompts exactly as training did. `--max-side` / `--system-prompt` override them.

Batch mode reads the same dataset formats and column flags as training (`--input` is
`--dataset`), generates greedily with left padding, and writes every input row with an added
`prediction` field (see `original_rows` for how the input row is kept).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from vlm_unsloth import output_access
from vlm_unsloth.config import ModelArgs
from vlm_unsloth.console import make_console
from vlm_unsloth.data.loaders import data_spec, load_sft_dataset
from vlm_unsloth.data.splits import first_rows
from vlm_unsloth.data.tables import read_table
from vlm_unsloth.errors import ConfigError, DataError
from vlm_unsloth.infer.args import GenerationArgs, InferArgs, PromptDataArgs
from vlm_unsloth.infer.generation import (
    generate_answers,
    image_record,
    load_for_inference,
    stream_answer,
)
from vlm_unsloth.infer.trained_run import resolve_adapter
from vlm_unsloth.models.loading import LoadedModel


def load_prompt_records(spec) -> Any:
    """Canonical records of `spec` (a data.DataSpec) in row order, answers optional.

    A plain table without an answer column (image + question only, the usual thing to run
    inference on) gets an empty answer so the training converter accepts it; `prompt_messages`
    drops the final answer anyway.
    """
    return load_sft_dataset(spec, require_answers=False)


def original_rows(spec, count: int) -> list[dict[str, Any]]:
    """The input rows as the user wrote them, to write back with their prediction.

    A JSONL file is re-read line by line, so every field comes back exactly (types, key order,
    keys other rows lack, nested values). Other inputs come from `datasets`, which unifies
    the columns (a key missing from a row reads as null); an embedded image is written as its
    path (or null), never as its bytes.
    """
    path = Path(spec.dataset).expanduser()
    if path.is_file() and path.suffix.lower() == ".jsonl":
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        rows = [json.loads(line) for line in lines]
    else:
        rows = [_json_safe(row) for row in read_table(spec.dataset, spec.split).rows]
    if len(rows) != count:  # row i must be record i
        raise DataError(
            f"read {len(rows)} rows back but the dataset has {count}",
            where=str(spec.dataset),
            fix="write the input as JSONL, one object a line",
        )
    return rows


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"bytes", "path"}:  # an undecoded image
            return value["path"]
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, bytes):
        return None
    return value


def predict_dataset(
    loaded: LoadedModel,
    records: Any,
    rows: list[dict[str, Any]],
    output: str | Path,
    generation: GenerationArgs,
    *,
    max_side: int,
    system_prompt: str | None = None,
    console=None,
) -> Path:
    """Answer `records` in batches and write `rows[i]` + {"prediction": answer} to `output`.

    Lines are written (and flushed) batch by batch, so a long run that fails or is stopped keeps
    the predictions made so far.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    path = Path(output).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = (TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with (
        path.open("w", encoding="utf-8") as handle,
        Progress(*columns, console=console or make_console()) as progress,
    ):
        task = progress.add_task("predict", total=len(records))
        for start in range(0, len(records), generation.batch_size):
            end = min(start + generation.batch_size, len(records))
            chunk = [records[i] for i in range(start, end)]
            answers = generate_answers(
                loaded, chunk, generation, max_side=max_side, system_prompt=system_prompt
            )
            for row, answer in zip(rows[start:end], answers, strict=True):
                handle.write(json.dumps({**row, "prediction": answer}, ensure_ascii=False) + "\n")
            handle.flush()
            progress.advance(task, len(chunk))
    return path


def inference_problems(args: InferArgs, data_args: PromptDataArgs) -> list[str]:
    """Every inconsistency between the flags of one infer.py call."""
    found = []
    streaming = args.image is not None or args.prompt is not None
    batch = data_args.dataset is not None or args.output is not None
    if streaming and batch:
        found.append("--image/--prompt (one answer) and --input/--output (a file): choose one")
    elif streaming and (args.image is None or args.prompt is None):
        found.append("--image and --prompt go together: pass both")
    elif batch and (data_args.dataset is None or args.output is None):
        found.append("--input and --output go together: pass both")
    elif not streaming and not batch:
        found.append("nothing to do: pass --image and --prompt, or --input and --output")
    if args.model is None and args.adapter is None:
        found.append("--model/--adapter: pass the model to run (--adapter OUTPUT_DIR, or --model)")
    for flag in ("eval_dataset", "eval_split"):
        if getattr(data_args, flag) is not None:
            found.append(f"--{flag.replace('_', '-')}: for evaluate.py; infer.py answers --input")
    if data_args.eval_fraction:
        found.append("--eval-fraction: for evaluate.py; infer.py answers every --input row")
    if args.output is not None:
        found += _output_file_problems(Path(args.output).expanduser().resolve(), args.overwrite)
    return found


def _output_file_problems(path: Path, overwrite: bool) -> list[str]:
    """What keeps the predictions from being written to `path`, found before the model loads."""
    if path.is_dir():
        return [f"--output {path} is a folder: name a file in it"]
    if path.exists() and not overwrite:
        return [f"--output {path} exists: pass --overwrite to replace it"]
    problem = output_access.why_unwritable(path.parent)
    return [f"--output: {problem}"] if problem else []


def run_inference(
    args: InferArgs, data_args: PromptDataArgs, generation: GenerationArgs, *, console=None
) -> str | Path:
    """scripts/infer.py: stream one answer to stdout (returns it), or predict a dataset into
    `args.output` (returns its path)."""
    problems = inference_problems(args, data_args)
    if problems:
        raise ConfigError("; ".join(problems), where="options")
    run = resolve_adapter(args.adapter, args.model)
    max_side = data_args.max_side or run.max_side
    system_prompt = data_args.system_prompt or run.system_prompt
    model_args = ModelArgs(
        model=run.base_model,
        backend=args.backend,
        quantization=args.quantization,
        cpu_threads=run.cpu_threads,
    )
    if args.image is not None:
        record = image_record(args.image, args.prompt)
        loaded = load_for_inference(model_args, run.adapter_dir)
        pieces = []
        for piece in stream_answer(
            loaded, record, generation, max_side=max_side, system_prompt=system_prompt
        ):
            pieces.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return "".join(pieces).strip()
    console = console or make_console()
    spec = data_spec(data_args, data_args.dataset)
    records = load_prompt_records(spec)  # before loading the model: a bad file fails fast
    rows = original_rows(spec, len(records))
    records = first_rows(records, data_args.max_samples)
    rows = rows[: len(records)]
    loaded = load_for_inference(model_args, run.adapter_dir)
    path = predict_dataset(
        loaded, records, rows, args.output, generation,
        max_side=max_side, system_prompt=system_prompt, console=console,
    )  # fmt: skip
    console.print(f"{len(records)} predictions written to {path}")
    return path
