"""The start and the end of a training run: the banner that shows the whole run before it
trains, and the steps after it: save (adapter, merged model, Hub), summarise (summary.json),
print (the summary table).

    print_banner(console, "SFT", loaded, data, train_args, output)
    ...
    result = finish(FinishedRun("SFT", trainer, loaded, data, train_args, output, started,
                                interrupted), console)   # or already_finished(output, console)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_unsloth import distributed, run_dir
from vlm_unsloth.config import TrainArgs
from vlm_unsloth.console import format_count, key_value_table
from vlm_unsloth.data.validation import LENGTH_COLUMN
from vlm_unsloth.models.backend import backend_module
from vlm_unsloth.models.device import device_name
from vlm_unsloth.models.loading import LoadedModel, count_parameters
from vlm_unsloth.perf.batching import padding_report
from vlm_unsloth.train import full_disk
from vlm_unsloth.train.batch_size import planned_peak_gib
from vlm_unsloth.train.hub import push_folders
from vlm_unsloth.train.steps import TrainingData, installed_callback


@dataclass
class TrainResult:
    """What a training run returns: where its outputs are, and its summary.json."""

    output_dir: Path
    adapter_dir: Path
    summary: dict[str, Any]


@dataclass
class FinishedRun:
    """A run whose training loop has returned: what the end-of-run steps read."""

    job: str
    """"SFT", "DPO" or "GRPO"."""
    trainer: Any
    loaded: LoadedModel
    data: TrainingData
    train_args: TrainArgs
    """The settled options (batch size an int)."""
    output: Path
    started: float
    """time.perf_counter() when the run started."""
    interrupted: bool
    """Stopped by Ctrl-C: saved, but neither evaluated, merged nor pushed."""


@dataclass
class SavedOutputs:
    adapter_dir: Path
    merged_dir: Path | None
    pushed: list[str]
    loss_curve: Path | None


def print_banner(
    console, job: str, loaded: LoadedModel, data: TrainingData, train_args: TrainArgs, output: Path
) -> None:
    """The whole run before it trains: model, backend and why, parameters, rows, batch."""
    trainable, total = count_parameters(loaded.model)
    report = data.report
    setup = loaded.setup
    frames = report.multi_frame
    multi_frame = f", {frames} multi-frame: first frame used" if frames else ""
    rows = [
        ("model", f"{loaded.ref.name} ({loaded.family.key})"),
        (
            "backend",
            f"{setup.backend} on {setup.device}, {setup.dtype}, "
            f"{loaded.quantization} weights — {setup.why}",
        ),
        (
            "parameters",
            f"{format_count(trainable)} trainable of {format_count(total)} "
            f"({100 * trainable / max(total, 1):.2f}%)",
        ),
        (
            "train rows",
            f"{len(data.train)} kept of {report.rows_read} read"
            f" ({report.rejected_count} rejected, {report.resized} resized{multi_frame})",
        ),
        ("eval rows", len(data.eval) if data.eval is not None else "none"),
        (
            "batch",
            f"{train_args.batch_size} x {train_args.grad_accum} accumulation"
            f" x {distributed.world_size()} process(es) = "
            f"{train_args.samples_per_step(distributed.world_size())} effective",
        ),
        ("padding", describe_padding(data.train, train_args)),
        ("output", output),
    ]
    console.print(key_value_table(f"vlm-unsloth {job}", rows))


def describe_padding(dataset, train_args: TrainArgs) -> str:
    """Padding share of an epoch's batches, in random order and grouped by length."""
    if len(dataset) == 0 or LENGTH_COLUMN not in dataset.column_names:
        return "n/a"
    report = padding_report(
        dataset[LENGTH_COLUMN], train_args.batch_size, train_args.grad_accum, train_args.seed
    )
    chosen = (
        "grouped by length"
        if train_args.group_by_length
        else "random order (--group-by-length to cut it)"
    )
    return (
        f"{100 * report['random']:.1f}% in random order, {100 * report['grouped']:.1f}% grouped "
        f"by length; using {chosen}"
    )


def finish(run: FinishedRun, console, *, extra: dict[str, Any] | None = None) -> TrainResult:
    """Save, evaluate (the trainer's eval loss), summarise and print. `extra`: more
    summary.json entries, also printed as rows."""
    adapter_dir = run.output / run_dir.ADAPTER_DIR
    main = distributed.is_main_process()
    if main:
        with full_disk.saving_to(adapter_dir, "the adapter", run.output):
            save_adapter(run.trainer, run.loaded, adapter_dir)
        run_dir.record_files(run.output, run_dir.files_in(adapter_dir))
    # Evaluation is collective under DDP: every process takes part. Before the loss curve is
    # drawn, so that its last eval point is on it.
    has_eval = run.data.eval is not None and not run.interrupted
    eval_metrics = run.trainer.evaluate() if has_eval else {}
    saved = save_outputs(run, adapter_dir)
    summary = summarise(run, saved, eval_metrics, extra or {})
    if main:
        run_dir.write_summary(run.output, summary)
        merged = run_dir.files_in(saved.merged_dir) if saved.merged_dir else []
        run_dir.record_files(run.output, [run_dir.SUMMARY_FILE, run_dir.LOSS_CURVE_FILE, *merged])
    print_summary(console, summary, saved, run.output, extra or {})
    return TrainResult(output_dir=run.output, adapter_dir=adapter_dir, summary=summary)


def already_finished(output: Path, console) -> TrainResult:
    """--resume of a run that had finished: say so, change nothing, return its summary."""
    summary = run_dir.read_summary(output)
    console.print(
        f"[yellow]{output} already finished at step {summary['global_step']}: nothing to resume, "
        "nothing changed. To train longer, resume with a larger --max-steps (or --epochs).[/]"
    )
    return TrainResult(output, output / run_dir.ADAPTER_DIR, summary)


def save_adapter(trainer, loaded: LoadedModel, adapter_dir: Path) -> None:
    """The trained LoRA adapter and the processor (its chat template), loadable anywhere."""
    # Only the trained adapter: DPO may hold a frozen copy of the starting one as its reference.
    trainer.model.save_pretrained(adapter_dir, selected_adapters=[trainer.model.active_adapter])
    loaded.processor.save_pretrained(adapter_dir)


def save_outputs(run: FinishedRun, adapter_dir: Path) -> SavedOutputs:
    """After the adapter: with --save-merged the merged model, with --push-to-hub the upload,
    and the loss curve. The main process writes; the others wait for it."""
    main = distributed.is_main_process()
    merged_dir = None
    if main and run.train_args.save_merged and not run.interrupted:
        merged_dir = run.output / run_dir.MERGED_DIR
        with full_disk.saving_to(merged_dir, "the merged model", run.output):
            backend_module(run.loaded.setup.backend).save_merged(
                run.loaded.model,
                run.loaded.processor,
                base_path=run.loaded.ref.path,
                setup=run.loaded.setup,
                adapter_dir=adapter_dir,
                merged_dir=merged_dir,
            )
    distributed.wait_for_everyone()
    pushed = []
    if main and run.train_args.push_to_hub and not run.interrupted:
        pushed = push_folders(run.train_args.push_to_hub, adapter_dir, merged_dir)
    curve = run_dir.plot_loss_curve(run.output) if main else None
    return SavedOutputs(adapter_dir, merged_dir, pushed, curve)


def summarise(
    run: FinishedRun, saved: SavedOutputs, eval_metrics: dict, extra: dict[str, Any]
) -> dict[str, Any]:
    """summary.json: the run's outcome, speed, memory, and where its outputs are."""
    from vlm_unsloth.train.callbacks import ModelInputsCallback, peak_gpu_memory_gib

    history = [r for r in run_dir.read_metrics(run.output) if "loss" in r]

    def mean_after_first(key: str, digits: int) -> float | None:
        """The mean of a logged speed over every log but the first (Unsloth compiles there)."""
        values = [r[key] for r in history[1:] if r.get(key) is not None]
        return round(sum(values) / len(values), digits) if values else None

    loaded, train_args = run.loaded, run.train_args
    planned = (
        planned_peak_gib(loaded, run.data, train_args.batch_size) if run.job == "SFT" else None
    )
    return {
        "job": run.job,
        "interrupted": run.interrupted,
        "global_step": run.trainer.state.global_step,
        # The length asked for: a later --resume with the same one has nothing left to train.
        "max_steps": run.train_args.max_steps,
        "epochs": run.train_args.epochs,
        "wall_time_s": round(time.perf_counter() - run.started, 1),
        "final_loss": history[-1]["loss"] if history else None,
        "samples_per_second": mean_after_first("samples_per_second", 3),
        "seconds_per_step": mean_after_first("seconds_per_step", 3),
        "generated_tokens_per_second": mean_after_first("generated_tokens_per_second", 1),
        "peak_gpu_memory_gib": peak_gpu_memory_gib(),
        "data_wait_fraction": mean_after_first("data_wait_fraction", 4),
        "eval": eval_metrics,
        "adapter_dir": str(saved.adapter_dir),
        "merged_dir": str(saved.merged_dir) if saved.merged_dir else None,
        "loss_curve": str(saved.loss_curve) if saved.loss_curve else None,
        "train_rows": len(run.data.train),
        "rejected_rows": run.data.report.rejected_count,
        "parameters": dict(
            zip(("trainable", "total"), count_parameters(loaded.model), strict=True)
        ),
        "backend": loaded.setup.backend,
        "device_name": device_name(),
        "pushed_to": saved.pushed,
        "model_inputs_first_step": installed_callback(
            run.trainer, ModelInputsCallback
        ).first_inputs,
        "batch_size": train_args.batch_size,
        "grad_accum": train_args.grad_accum,
        "planned_peak_gib": planned,
        **extra,
    }


def print_summary(
    console, summary: dict[str, Any], saved: SavedOutputs, output: Path, extra: dict[str, Any]
) -> None:
    """The summary table at the end of a run."""
    wait = summary["data_wait_fraction"]
    peak = summary["peak_gpu_memory_gib"]
    rows = [
        ("status", "interrupted — resume with --resume" if summary["interrupted"] else "done"),
        ("steps", summary["global_step"]),
        ("wall time", f"{summary['wall_time_s']} s"),
        ("final loss", summary["final_loss"]),
        ("samples/s", summary["samples_per_second"]),
        ("seconds/step", summary["seconds_per_step"]),
        *(
            [("generated tokens/s", summary["generated_tokens_per_second"])]
            if summary["generated_tokens_per_second"] is not None
            else []
        ),
        ("waiting for data", f"{100 * wait:.1f}% of the time" if wait is not None else "n/a"),
        ("peak GPU memory", f"{peak:.2f} GiB" if peak else "n/a (CPU)"),
        ("eval loss", summary["eval"].get("eval_loss", "n/a")),
        ("adapter", saved.adapter_dir),
        ("merged model", saved.merged_dir or "not written (--save-merged)"),
        ("metrics", output / run_dir.METRICS_FILE),
        ("loss curve", saved.loss_curve or "n/a"),
        ("model inputs", _describe_inputs(summary["model_inputs_first_step"])),
        *((key.replace("_", " "), _describe_extra(value)) for key, value in extra.items()),
    ]
    console.print(key_value_table(f"{summary['job']} summary", rows))


def _describe_extra(value: Any) -> Any:
    """A list of names as "a, b" ("none" when empty); anything else as it is."""
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return value


def _describe_inputs(inputs: dict[str, list[int]] | None) -> str:
    """`pixel_values [1200, 1176] · image_grid_thw [2, 3] · ...` for the summary table."""
    if not inputs:
        return "n/a"
    return " · ".join(f"{name} {shape}" for name, shape in inputs.items())
