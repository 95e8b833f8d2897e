"""Did fine-tuning help? The base model and the fine-tuned adapter answer the same eval rows.

    python scripts/evaluate.py --adapter outputs/sft          # the run's own eval data
    python scripts/evaluate.py --adapter outputs/sft --dataset eval.jsonl --num-samples 24
    python scripts/train_sft.py ... --eval-at-end             # writes OUTPUT/eval after training

From a notebook: `evaluate_adapter("outputs/sft", max_samples=50).metrics`.

Both answer greedily with the run's image cap, chat template and system prompt, and are scored
with `metrics.score_predictions` (exact match, relaxed accuracy, ANLS, CER). The output folder:

    report.html        self-contained (inline CSS, base64 thumbnails): metrics table and gallery
    report.md          the same metrics table and gallery, text only
    predictions.jsonl  every row: source, question, reference, base and fine-tuned answers
    metrics.json       base, fine_tuned and delta (fine-tuned minus base) per metric
    run_config.yaml    this evaluation's settings
    vlm_unsloth_run.json  the manifest (run_dir.py): --overwrite replaces only such a folder

The folder is written once the answers are in: a typo in --dataset or a failure while answering
never costs an earlier report. It is held from the start (output_access.py): a second evaluation
into it stops at once, and a folder that cannot be written is one line before anything loads.

The weights are loaded ONCE: the fine-tuned answers come from the PEFT model, the base answers
from the same model inside `model.disable_adapter()` (LoRA layers and modules_to_save copies
bypassed). That holds one copy of the weights instead of two, works the same on both backends
(Unsloth's LoRA kernels honour PEFT's disabled flag) and cannot compare against a different
base than the adapter was trained on. A merged model has no adapter to switch off: pass the
adapter instead.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from vlm_unsloth import output_access, run_dir
from vlm_unsloth.config import DEMO_DATASET, DataArgs, ModelArgs, TrainArgs
from vlm_unsloth.console import make_console
from vlm_unsloth.data.splits import describe_eval_data, load_eval_rows
from vlm_unsloth.data.validation import validate_dataset
from vlm_unsloth.errors import ConfigError
from vlm_unsloth.infer.args import GenerationArgs, PromptDataArgs
from vlm_unsloth.infer.generation import generate_answers, load_for_inference
from vlm_unsloth.infer.metrics import METRICS, exact_match, score_predictions
from vlm_unsloth.infer.report import EvalResult, EvalSample, summary_table, write_outputs
from vlm_unsloth.infer.trained_run import TrainedRun, resolve_adapter
from vlm_unsloth.models.backend import backend_module
from vlm_unsloth.models.loading import LoadedModel

EVAL_DIR = "eval"
"""Where `train_sft.py --eval-at-end` (and evaluate.py with a run folder) writes: OUTPUT/eval."""
EVAL_JOB = "evaluate"
"""The job an evaluation folder's manifest names (--overwrite replaces only those)."""

# ---------------------------------------------------------------------------------------------
# Entry points


def evaluate_adapter(
    adapter: str,
    *,
    model: str | None = None,
    data_args: DataArgs | None = None,
    output_dir: str | Path | None = None,
    overwrite: bool = False,
    generation: GenerationArgs | None = None,
    num_samples: int = 12,
    max_samples: int | None = None,
    backend: str = "auto",
    quantization: str = "auto",
    console=None,
) -> EvalResult:
    """Evaluate base vs fine-tuned on an eval split and write the report; see the module doc.

    adapter: a training output folder or an adapter folder. data_args: dataset and column flags
    (`PromptDataArgs()`: the run's eval data when `adapter` is a training run, else the demo
    eval split). max_samples: evaluate only the first N rows (default: data_args.max_samples).
    """
    data_args = data_args or PromptDataArgs()
    generation = generation or GenerationArgs()
    run = resolve_adapter(adapter, model)
    if run.adapter_dir is None:
        raise ConfigError(
            "no adapter to evaluate", where="--adapter", fix="pass a run or adapter folder"
        )
    with _hold_eval_dir(output_dir, run, overwrite=overwrite) as output:
        loaded = load_for_inference(
            ModelArgs(
                model=run.base_model,
                backend=backend,
                quantization=quantization,
                cpu_threads=run.cpu_threads,
            ),
            run.adapter_dir,
        )
        eval_args, seed = _eval_data_args(data_args, run)
        max_side = data_args.max_side or run.max_side
        records, rejected = _validated(
            load_eval_rows(eval_args, seed=seed), loaded, eval_args, max_side
        )
        return _evaluate(
            loaded,
            records,
            run,
            output,
            generation=generation,
            num_samples=num_samples,
            max_samples=max_samples if max_samples is not None else data_args.max_samples,
            max_side=max_side,
            info={"dataset": describe_eval_data(eval_args), "rejected_rows": rejected},
            settings={"DataArgs": dataclasses.asdict(eval_args)},
            console=console,
        )


def evaluate_run(
    output_dir: str | Path,
    *,
    loaded: LoadedModel | None = None,
    records: Any = None,
    generation: GenerationArgs | None = None,
    num_samples: int = 12,
    max_samples: int | None = None,
    console=None,
) -> EvalResult:
    """Evaluate a training run into OUTPUT/eval (what `train_sft.py --eval-at-end` calls).

    `loaded` and `records` let the training process pass its own model and validated eval rows:
    no second copy of the weights, no reload, exactly the adapter just trained. Without them,
    the run's adapter is loaded and its eval data re-read from run_config.yaml.
    """
    folder = Path(output_dir).expanduser().resolve()
    if loaded is None or records is None:
        return evaluate_adapter(
            str(folder),
            output_dir=folder / EVAL_DIR,
            overwrite=True,
            generation=generation,
            num_samples=num_samples,
            max_samples=max_samples,
            console=console,
        )
    run = resolve_adapter(str(folder), None)
    with _hold_eval_dir(folder / EVAL_DIR, run, overwrite=True) as output:
        loaded.model = backend_module(loaded.setup.backend).for_inference(loaded.model)
        return _evaluate(
            loaded,
            records,
            run,
            output,
            generation=generation or GenerationArgs(),
            num_samples=num_samples,
            max_samples=max_samples,
            max_side=run.max_side,
            info={"dataset": describe_eval_data(run.data_args), "rejected_rows": None},
            settings={"DataArgs": dataclasses.asdict(run.data_args)},
            console=console,
        )


# ---------------------------------------------------------------------------------------------
# Eval data


def _eval_data_args(data_args: DataArgs, run: TrainedRun) -> tuple[DataArgs, int]:
    """(DataArgs to read eval rows with, split seed): the run's own data unless --dataset.
    The seed is the run's, so --eval-fraction holds out the rows training held out."""
    seed = run.seed if run.seed is not None else TrainArgs().seed
    if data_args.dataset is None and run.data_args is not None:
        return run.data_args, seed
    return dataclasses.replace(data_args, dataset=data_args.dataset or DEMO_DATASET), seed


def _validated(dataset, loaded: LoadedModel, data_args: DataArgs, max_side: int):
    """Rows the model can be asked about (images readable, a reference answer, not too long)."""
    report = validate_dataset(
        dataset,
        family=loaded.family,
        processor=loaded.processor,
        max_side=max_side,
        max_seq_length=data_args.max_seq_length,
        fit_images=data_args.fit_images,
    )
    if len(report.kept) == 0:
        reasons = "; ".join(f"{r.source} {r.reason}" for r in report.rejected[:3])
        raise ConfigError(f"no usable eval rows ({reasons})", where="--dataset")
    return report.kept, report.rejected_count


# ---------------------------------------------------------------------------------------------
# Evaluation


@contextmanager
def _hold_eval_dir(
    output_dir: str | Path | None, run: TrainedRun, *, overwrite: bool
) -> Iterator[Path]:
    """The evaluation folder, this evaluation's until the block ends (output_access.py: another
    evaluation writing it stops at once) and checked before any slow work; `_evaluate` replaces
    it later, once the model and the rows have loaded (a typo in --dataset never costs an
    earlier report)."""
    if output_dir is None:
        output_dir = run.run_folder / EVAL_DIR if run.run_folder else Path("outputs") / EVAL_DIR
    output = Path(output_dir).expanduser().resolve()
    adapter = Path(run.adapter_dir).resolve()
    if output == adapter or output in adapter.parents:
        raise ConfigError(
            f"{output} holds the adapter being evaluated",
            where="--output-dir",
            fix=f"choose another folder, e.g. {adapter.parent / EVAL_DIR}",
        )
    with output_access.holding(output):
        yield run_dir.check_output_dir(
            output, overwrite=overwrite, jobs=(EVAL_JOB,), what="evaluation"
        )


def _text(message: dict) -> str:
    return " ".join(p["text"] for p in message["content"] if p["type"] == "text" and p["text"])


def _question_and_reference(record: dict) -> tuple[str, str]:
    """The last question and the reference answer (a preference record's chosen answer)."""
    messages = record["messages"] if "messages" in record else record["prompt"] + record["chosen"]
    reference = _text(messages[-1]) if messages[-1]["role"] == "assistant" else ""
    users = [m for m in messages if m["role"] == "user"]
    return (_text(users[-1]) if users else ""), reference


def _evaluate(
    loaded: LoadedModel,
    records,
    run: TrainedRun,
    output: Path,
    *,
    generation: GenerationArgs,
    num_samples: int,
    max_samples: int | None,
    max_side: int,
    info: dict[str, Any],
    settings: dict[str, Any],
    console,
) -> EvalResult:
    console = console or make_console()
    if max_samples is not None:
        records = records.select(range(min(max_samples, len(records))))
    started = time.perf_counter()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    answer = dict(max_side=max_side, system_prompt=run.system_prompt)
    with Progress(*columns, console=console) as progress:
        tuned_task = progress.add_task("fine-tuned", total=len(records))
        tuned = generate_answers(
            loaded,
            records,
            generation,
            **answer,
            progress=lambda n: progress.advance(tuned_task, n),
        )
        base_task = progress.add_task("base      ", total=len(records))
        with loaded.model.disable_adapter():
            base = generate_answers(
                loaded,
                records,
                generation,
                **answer,
                progress=lambda n: progress.advance(base_task, n),
            )
    samples = []
    for index, (base_answer, tuned_answer) in enumerate(zip(base, tuned, strict=True)):
        record = records[index]
        question, reference = _question_and_reference(record)
        samples.append(
            EvalSample(
                source=record["source"],
                question=question,
                reference=reference,
                base=base_answer,
                fine_tuned=tuned_answer,
                base_correct=bool(exact_match(base_answer, reference)),
                fine_tuned_correct=bool(exact_match(tuned_answer, reference)),
                image=(record["images"] or [None])[0],
            )
        )
    references = [s.reference for s in samples]
    scores = {
        "base": score_predictions(base, references),
        "fine_tuned": score_predictions(tuned, references),
    }
    scores["delta"] = {name: scores["fine_tuned"][name] - scores["base"][name] for name in METRICS}
    info = {
        "model": run.base_model,
        "adapter": run.adapter_dir,
        "backend": f"{loaded.setup.backend} on {loaded.setup.device} ({loaded.setup.dtype})",
        **info,
        "rows": len(samples),
        "max_side": max_side,
        "generation": "greedy"
        if generation.temperature == 0
        else f"sampled at T={generation.temperature}",
        "seconds": round(time.perf_counter() - started, 1),
    }
    result = EvalResult(
        output_dir=output,
        metrics=scores,
        samples=samples,
        report_html=output / "report.html",
        report_md=output / "report.md",
        predictions=output / "predictions.jsonl",
        info=info,
    )
    # Checked by _hold_eval_dir: empty, or an earlier evaluation (its manifest) to replace.
    run_dir.start_run(output, job=EVAL_JOB)
    run_dir.save_run_config(
        output,
        {
            "job": EVAL_JOB,
            "model": run.base_model,
            "adapter": run.adapter_dir,
            "max_side": max_side,
            "system_prompt": run.system_prompt,
            "GenerationArgs": dataclasses.asdict(generation),
            "num_samples": num_samples,
            "max_samples": max_samples,
            **settings,
        },
    )
    write_outputs(result, num_samples=num_samples)
    run_dir.record_files(output, run_dir.files_in(output))  # all of it: a fresh folder
    run_dir.discard_previous_run(output)
    console.print(summary_table(result))
    return result
