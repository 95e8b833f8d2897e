"""Ask a (fine-tuned) model about images: one streamed answer, or a whole dataset in batches.

    python scripts/infer.py --adapter outputs/sft --image chart.png --prompt "Which bar is highest?"
    python scripts/infer.py --adapter outputs/sft --input data/demo/eval.jsonl --output pred.jsonl
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

import dataclasses
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlm_unsloth import run_dir
from vlm_unsloth.backend import activate_backend, backend_module, plan_device
from vlm_unsloth.config import BACKENDS, QUANTIZATIONS, DataArgs, ModelArgs
from vlm_unsloth.errors import ConfigError, DataError
from vlm_unsloth.images import DEFAULT_MAX_SIDE
from vlm_unsloth.models import LoadedModel, load_model


@dataclass
class GenerationArgs:
    """How answers are generated."""

    max_new_tokens: int = field(default=128, metadata={"help": "Longest answer in tokens."})
    temperature: float = field(
        default=0.0, metadata={"help": "0 = greedy (deterministic, the default); > 0 samples."}
    )
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (with sampling)."})
    min_p: float = field(default=0.0, metadata={"help": "Min-p sampling floor (with sampling)."})
    batch_size: int = field(default=8, metadata={"help": "Rows generated together (left padded)."})

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens}
        if self.temperature > 0:
            kwargs.update(do_sample=True, temperature=self.temperature, top_p=self.top_p)
            if self.min_p > 0:
                kwargs["min_p"] = self.min_p
        else:
            kwargs["do_sample"] = False
        return kwargs

    def problems(self) -> list[str]:
        found = []
        if self.max_new_tokens < 1:
            found.append(f"--max-new-tokens {self.max_new_tokens}: must be >= 1")
        if self.temperature < 0:
            found.append(f"--temperature {self.temperature}: must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            found.append(f"--top-p {self.top_p}: must be in (0, 1]")
        if not 0 <= self.min_p < 1:
            found.append(f"--min-p {self.min_p}: must be in [0, 1)")
        if self.batch_size < 1:
            found.append(f"--batch-size {self.batch_size}: must be >= 1")
        return found


@dataclass
class PromptDataArgs(DataArgs):
    """The training data flags, for inference and evaluation: the image cap and the system
    prompt default to the training run's (None = the run's, else 768 px / no system prompt)."""

    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Rows to answer (infer.py: --input; evaluate.py: default = the run's eval "
            "data, else the demo eval split): a JSONL/JSON/CSV/Parquet file, image folder, "
            "dataset saved with save_to_disk, or hub name.",
            "aliases": ["--input"],
        },
    )
    split: str = field(default="train", metadata={"help": "Split of --dataset to read."})
    max_samples: int | None = field(default=None, metadata={"help": "Use only the first N rows."})
    system_prompt: str | None = field(
        default=None,
        metadata={"help": "System message before every prompt (default: the training run's)."},
    )
    max_side: int | None = field(
        default=None,
        metadata={
            "help": "Cap every image's longest side (default: the training run's, else 768)."
        },
    )

    def problems(self) -> list[str]:
        stand_in = dataclasses.replace(self, max_side=self.max_side or DEFAULT_MAX_SIDE)
        return DataArgs.problems(stand_in)


@dataclass
class ModelChoiceArgs:
    """Which model answers: a base model and/or a fine-tuned adapter, and how it is loaded."""

    model: str | None = field(
        default=None,
        metadata={
            "help": "Base model (hub id, folder, tiny-qwen2-vl, ...) or a merged folder "
            "(OUTPUT/merged). Default: the base model the adapter was trained from."
        },
    )
    adapter: str | None = field(
        default=None,
        metadata={"help": "A training output folder (--output-dir of train_sft.py) or a LoRA "
                  "adapter folder."},
    )  # fmt: skip
    backend: str = field(
        default="auto",
        metadata={
            "help": "unsloth, hf, or auto (unsloth when CUDA is available).",
            "choices": BACKENDS,
        },
    )
    quantization: str = field(
        default="auto",
        metadata={"help": "Weights: 4bit, 8bit, 16bit; auto = 4bit on CUDA, 16bit on CPU.",
                  "choices": QUANTIZATIONS},
    )  # fmt: skip


@dataclass
class InferArgs(ModelChoiceArgs):
    """What to load and what to ask."""

    image: str | None = field(
        default=None, metadata={"help": "Image path or http(s) URL to ask about (with --prompt)."}
    )
    prompt: str | None = field(
        default=None,
        metadata={"help": "Question about --image; the answer streams to the terminal."},
    )
    output: str | None = field(
        default=None,
        metadata={"help": "Predictions JSONL for --input: each row plus `prediction`."},
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace an existing --output file."})


@dataclass
class TrainedRun:
    """What inference needs to know about the model: its base, adapter and training settings."""

    base_model: str
    adapter_dir: str | None
    max_side: int
    """The run's --max-side (768 when the model is not from a training run)."""
    system_prompt: str | None
    run_folder: Path | None = None
    """The training output folder, when the model comes from one (its run_config.yaml)."""


def resolve_adapter(adapter: str | None, model: str | None) -> TrainedRun:
    """`--adapter` (a training output folder or an adapter folder) and/or `--model`.

    An explicit `--model` always wins as the base; settings come from the training run the
    adapter (or the merged `--model` folder) belongs to, if any.
    """
    if adapter is None:
        if model is None:
            raise ConfigError(
                "nothing to load", where="--model/--adapter", fix="pass --model, --adapter or both"
            )
        parent = Path(model).expanduser().resolve().parent
        if Path(model).expanduser().is_dir() and (parent / run_dir.RUN_MARKER).is_file():
            return _from_run(parent, base_model=model, adapter_dir=None)  # OUTPUT/merged
        return TrainedRun(model, None, DEFAULT_MAX_SIDE, None)
    folder = Path(adapter).expanduser().resolve()
    if (folder / run_dir.RUN_MARKER).is_file():
        if not (folder / run_dir.ADAPTER_DIR / "adapter_config.json").is_file():
            raise ConfigError(
                f"{folder} has a {run_dir.RUN_MARKER} but no {run_dir.ADAPTER_DIR}/ adapter "
                "(a run saves it when training ends; an evaluation folder has none)",
                where="--adapter",
                fix="finish the run (train_sft.py --resume) or pass a finished run's folder",
            )
        return _from_run(folder, base_model=model, adapter_dir=folder / run_dir.ADAPTER_DIR)
    if not (folder / "adapter_config.json").is_file():
        raise ConfigError(
            f"{folder} is neither a training output folder nor a LoRA adapter",
            where="--adapter",
            fix="pass the --output-dir of a training run or its adapter/ folder",
        )
    if (folder.parent / run_dir.RUN_MARKER).is_file():  # OUTPUT/adapter: the run's settings apply
        return _from_run(folder.parent, base_model=model, adapter_dir=folder)
    saved = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    base = model or saved["base_model_name_or_path"]
    return TrainedRun(base, str(folder), DEFAULT_MAX_SIDE, None)


def _from_run(folder: Path, *, base_model: str | None, adapter_dir: Path | None) -> TrainedRun:
    config = run_dir.load_run_config(folder)
    return TrainedRun(
        # The run's own --model (e.g. "tiny-qwen2-vl"), not the adapter's absolute base path,
        # which for a tiny model points into a cache that may have been rebuilt elsewhere.
        base_model=base_model or config["ModelArgs"]["model"],
        adapter_dir=str(adapter_dir) if adapter_dir else None,
        max_side=config["DataArgs"]["max_side"],
        system_prompt=config["DataArgs"]["system_prompt"],
        run_folder=folder,
    )


def load_for_inference(model_args: ModelArgs, adapter_dir: str | None) -> LoadedModel:
    """Base model (+ LoRA adapter) on the chosen backend, switched to inference mode
    (`FastVisionModel.for_inference` on unsloth, `eval()` on hf).

    With an adapter, the processor is the one training saved next to it: same chat template
    and image settings as training, even if the base model's files have changed since.
    """
    backend, why = activate_backend(model_args.backend)
    plan = plan_device(backend, why, "auto")
    loaded = load_model(model_args, None, plan, seed=0)
    if adapter_dir:
        from peft import PeftModel
        from transformers import AutoProcessor

        loaded.model = PeftModel.from_pretrained(loaded.model, adapter_dir)
        if (Path(adapter_dir) / "processor_config.json").is_file():
            loaded.processor = AutoProcessor.from_pretrained(adapter_dir)
    loaded.model = backend_module(backend).for_inference(loaded.model)
    return loaded


def prompt_messages(record: dict[str, Any], system_prompt: str | None = None) -> list[dict]:
    """The record's conversation up to (not including) its final assistant answer."""
    from vlm_unsloth.data import to_chat_template_messages

    messages = list(record.get("messages") or record.get("prompt") or [])
    while messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    messages = to_chat_template_messages(messages)
    if system_prompt and messages and messages[0]["role"] != "system":
        system = {"role": "system", "content": [{"type": "text", "text": system_prompt}]}
        messages = [system, *messages]
    return messages


def image_record(image: str, prompt: str) -> dict[str, Any]:
    """A canonical record asking `prompt` about one image (a path, relative to the current
    folder, or an http(s) URL)."""
    from vlm_unsloth.data import image_references

    is_url = image.startswith(("http://", "https://"))
    if not is_url and not Path(image).expanduser().is_file():
        raise ConfigError(
            f"no image file {image} (relative paths start from {Path.cwd()})",
            where="--image",
            fix="pass an existing image file or an http(s) URL",
        )
    content = [{"type": "image", "text": None}, {"type": "text", "text": prompt}]
    return {
        "messages": [{"role": "user", "content": content}],
        "images": image_references(image, Path.cwd()),
        "source": "--image",
    }


def _inputs(loaded: LoadedModel, records: list[dict], max_side: int, system_prompt: str | None):
    from vlm_unsloth.collate import decode_images, images_argument

    processor = loaded.processor
    texts = [
        processor.apply_chat_template(
            prompt_messages(r, system_prompt), tokenize=False, add_generation_prompt=True
        )
        for r in records
    ]
    images = [decode_images(r, max_side=max_side, family=loaded.family) for r in records]
    batch = processor(
        text=texts,
        images=images_argument(images, loaded.family),
        padding=True,
        padding_side="left",  # generation appends on the right: prompts must end aligned
        return_tensors="pt",
    )
    return batch.to(loaded.plan.device)


def _stop_tokens(loaded: LoadedModel) -> dict[str, Any]:
    tokenizer = loaded.processor.tokenizer
    return {
        "pad_token_id": tokenizer.pad_token_id,
        # The family's end-of-turn token: what a fine-tuned model learned to stop with (the
        # tokenizer's own eos may be another token, e.g. <|endoftext|> for Qwen).
        "eos_token_id": tokenizer.convert_tokens_to_ids(loaded.family.end_of_turn),
    }


def generate_answers(
    loaded: LoadedModel,
    records: list[dict[str, Any]],
    generation: GenerationArgs,
    *,
    max_side: int,
    system_prompt: str | None = None,
    progress: Callable[[int], object] | None = None,
) -> list[str]:
    """Answers for canonical records (their final assistant turn, if any, is ignored).

    Rows go through the model `generation.batch_size` at a time, left padded; greedy answers
    equal those generated one row at a time. `progress(n)` is called after each batch.
    """
    import torch

    answers: list[str] = []
    tokenizer = loaded.processor.tokenizer
    for start in range(0, len(records), generation.batch_size):
        chunk = [records[i] for i in range(start, min(start + generation.batch_size, len(records)))]
        batch = _inputs(loaded, chunk, max_side, system_prompt)
        with torch.inference_mode():
            output = loaded.model.generate(
                **batch, **generation.generate_kwargs(), **_stop_tokens(loaded)
            )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        decoded = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        answers += [text.strip() for text in decoded]
        if progress is not None:
            progress(len(chunk))
    return answers


def stream_answer(
    loaded: LoadedModel,
    record: dict[str, Any],
    generation: GenerationArgs,
    *,
    max_side: int,
    system_prompt: str | None = None,
) -> Iterator[str]:
    """Yield the answer's text piece by piece as it is generated (joined: the whole answer,
    before `generate_answers`' strip)."""
    from threading import Thread

    import torch
    from transformers import TextIteratorStreamer

    batch = _inputs(loaded, [record], max_side, system_prompt)
    streamer = TextIteratorStreamer(
        loaded.processor.tokenizer, skip_prompt=True, skip_special_tokens=True
    )
    failures: list[BaseException] = []

    def generate() -> None:
        # Footgun: if generate raises in its thread, the streamer never receives its end mark
        # and the loop below would wait forever. End it, and re-raise here.
        try:
            with torch.inference_mode():
                loaded.model.generate(
                    **batch,
                    **generation.generate_kwargs(),
                    **_stop_tokens(loaded),
                    streamer=streamer,
                )
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            failures.append(error)
            streamer.end()

    worker = Thread(target=generate, daemon=True)
    worker.start()
    yield from streamer
    worker.join()
    if failures:
        raise failures[0]


# ---------------------------------------------------------------------------------------------
# Datasets in, predictions out


def load_prompt_records(spec) -> Any:
    """Canonical records of `spec` (a data.DataSpec) in row order, answers optional.

    A plain table without an answer column (image + question only, the usual thing to run
    inference on) gets an empty answer so the training converter accepts it; `prompt_messages`
    drops the final answer anyway.
    """
    from vlm_unsloth.data import load_sft_dataset

    return load_sft_dataset(spec, require_answers=False)


def original_rows(spec, count: int) -> list[dict[str, Any]]:
    """The input rows as the user wrote them, to write back with their prediction.

    A JSONL file is re-read line by line, so every field comes back exactly (types, key order,
    keys other rows lack, nested values). Other inputs come from `datasets`, which unifies
    the columns (a key missing from a row reads as null); an embedded image is written as its
    path (or null), never as its bytes.
    """
    from vlm_unsloth import data

    path = Path(spec.dataset).expanduser()
    if path.is_file() and path.suffix.lower() == ".jsonl":
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        rows = [json.loads(line) for line in lines]
    else:
        rows = [_json_safe(row) for row in data.read_table(spec).rows]
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

    from vlm_unsloth.console import make_console

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
    if args.output is not None and Path(args.output).exists() and not args.overwrite:
        found.append(f"--output {args.output} exists: pass --overwrite to replace it")
    return found


def run_inference(
    args: InferArgs, data_args: PromptDataArgs, generation: GenerationArgs, *, console=None
) -> str | Path:
    """scripts/infer.py: stream one answer to stdout (returns it), or predict a dataset into
    `args.output` (returns its path)."""
    from vlm_unsloth.console import make_console
    from vlm_unsloth.data import data_spec

    problems = inference_problems(args, data_args)
    if problems:
        raise ConfigError("; ".join(problems), where="options")
    run = resolve_adapter(args.adapter, args.model)
    max_side = data_args.max_side or run.max_side
    system_prompt = data_args.system_prompt or run.system_prompt
    model_args = ModelArgs(
        model=run.base_model, backend=args.backend, quantization=args.quantization
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
    if data_args.max_samples is not None:
        records = records.select(range(min(data_args.max_samples, len(records))))
        rows = rows[: len(records)]
    loaded = load_for_inference(model_args, run.adapter_dir)
    path = predict_dataset(
        loaded, records, rows, args.output, generation,
        max_side=max_side, system_prompt=system_prompt, console=console,
    )  # fmt: skip
    console.print(f"{len(records)} predictions written to {path}")
    return path
