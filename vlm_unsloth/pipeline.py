"""The steps SFT and DPO share: plan the device, guard the output folder, load model and data,
build trainer arguments and callbacks, train resumably, save and summarise.

Each function does one step and is called in order by `sft.train_sft` / `dpo.train_dpo`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_unsloth import distributed, run_dir
from vlm_unsloth.backend import DevicePlan, activate_backend, backend_module, plan_device
from vlm_unsloth.batching import LENGTH_COLUMN, padding_report
from vlm_unsloth.config import (
    DEFAULT_AUTO_EFFECTIVE_BATCH,
    DEMO_DATASET,
    DataArgs,
    ModelArgs,
    TrainArgs,
)
from vlm_unsloth.console import format_count, key_value_table
from vlm_unsloth.errors import BackendError, ConfigError
from vlm_unsloth.families import TINY_MODEL_NAMES
from vlm_unsloth.lora import LoraArgs
from vlm_unsloth.models import LoadedModel, count_parameters, load_model

DEMO_DIR = Path(__file__).resolve().parent.parent / "data" / "demo"


@dataclass
class TrainingData:
    train: Any
    """datasets.Dataset of canonical records (images as references)."""
    eval: Any | None
    report: Any
    """validation.ValidationReport of the training data."""


def resolve_plan(model_args: ModelArgs, train_args: TrainArgs) -> DevicePlan:
    backend, why = activate_backend(model_args.backend)
    if (
        model_args.backend == "auto"
        and backend == "hf"
        and model_args.model not in TINY_MODEL_NAMES
    ):
        # Training a multi-billion-parameter model on a CPU would run for days: refuse unless
        # the user asks for it with --backend hf.
        raise BackendError(
            f"no NVIDIA GPU found, and training {model_args.model} needs one",
            where="--backend auto",
            fix="for the offline CPU demo run: python scripts/train_sft.py --model tiny-qwen2-vl "
            "--backend hf (or pass --backend hf to train this model on CPU anyway)",
        )
    plan = plan_device(backend, why, train_args.precision)
    if train_args.gpu_memory_gib is not None:
        cap_gpu_memory(train_args.gpu_memory_gib, plan)
    return plan


def cap_gpu_memory(gib: float, plan: DevicePlan) -> None:
    """Make the allocator refuse more than `gib` on this process's GPU (OOM as on a small card)."""
    if plan.device != "cuda":
        raise ConfigError(
            "there is no GPU to cap", where="--gpu-memory-gib", fix="drop it on a CPU machine"
        )
    import torch

    device = distributed.local_index()  # under torchrun, this process's own GPU
    total = torch.cuda.get_device_properties(device).total_memory
    if gib <= 0 or gib * 2**30 > total:
        raise ConfigError(
            f"{gib} GiB is not within this GPU's {total / 2**30:.1f} GiB",
            where="--gpu-memory-gib",
            fix="pass a positive size up to the card's memory",
        )
    torch.cuda.set_per_process_memory_fraction(gib * 2**30 / total, device)


def prepare_output(train_args: TrainArgs, config: dict[str, Any], plan: DevicePlan) -> Path:
    from vlm_unsloth.hub import check_can_push

    check_can_push(train_args.push_to_hub)
    options = dict(overwrite=train_args.overwrite, resume=train_args.resume)
    # Every process checks (so all stop with the same error); only the main one writes.
    output = run_dir.prepare_output_dir(train_args.output_dir, check_only=True, **options)
    # Every process must have looked before the main one writes (else the others find the
    # folder it just made and refuse it).
    distributed.wait_for_everyone()
    if distributed.is_main_process():
        run_dir.prepare_output_dir(output, **options)
        if not train_args.resume:  # a resumed run keeps the configuration it started with
            resolved = {
                "backend": plan.backend, "device": plan.device, "dtype": plan.dtype,
                "processes": distributed.world_size(),
            }  # fmt: skip
            run_dir.save_run_config(output, {**config, "resolved": resolved})
    distributed.wait_for_everyone()
    return output


def load_model_for_training(
    model_args: ModelArgs,
    lora_args: LoraArgs,
    data_args: DataArgs,
    train_args: TrainArgs,
    plan: DevicePlan,
) -> LoadedModel:
    from vlm_unsloth.models import resolve_model

    with distributed.main_process_first():
        resolve_model(model_args.model)  # may build a tiny checkpoint: one writer
    # Every process loads at once: Unsloth's loader runs collectives across the ranks while it
    # compiles (unsloth_zoo's distributed_function), so a rank held back in a barrier would
    # desynchronise them (seen on 2 H100s: "too many values to unpack" in rank 1).
    return load_model(
        model_args, lora_args, plan, seed=train_args.seed, max_seq_length=data_args.max_seq_length
    )


def dataset_paths(data_args: DataArgs, *, preference: bool) -> tuple[str, str | None]:
    """(train, eval) dataset locations; `demo` names the shipped set and its eval split."""
    if data_args.dataset != DEMO_DATASET:
        return data_args.dataset, data_args.eval_dataset
    prefix = "dpo_" if preference else ""
    train = DEMO_DIR / f"{prefix}train.jsonl"
    evaluation = DEMO_DIR / f"{prefix}eval.jsonl"
    default_eval = None if (data_args.eval_fraction or data_args.eval_split) else str(evaluation)
    return str(train), data_args.eval_dataset or default_eval


def load_sft_data(
    data_args: DataArgs, loaded: LoadedModel, train_args: TrainArgs, output: Path
) -> TrainingData:
    from vlm_unsloth.data import load_sft_dataset

    with distributed.main_process_first():
        return _load_and_validate(
            data_args, loaded, train_args, output, load_sft_dataset, preference=False
        )


def load_preference_data(
    data_args: DataArgs, loaded: LoadedModel, train_args: TrainArgs, output: Path
) -> TrainingData:
    from vlm_unsloth.data import load_preference_dataset

    with distributed.main_process_first():
        return _load_and_validate(
            data_args, loaded, train_args, output, load_preference_dataset, preference=True
        )


def _load_and_validate(data_args, loaded, train_args, output, loader, *, preference: bool):
    from vlm_unsloth.data import data_spec, split_dataset
    from vlm_unsloth.validation import validate_dataset, write_rejected

    train_path, eval_path = dataset_paths(data_args, preference=preference)
    dataset = loader(data_spec(data_args, train_path, split=data_args.split))
    if eval_path:
        eval_dataset = loader(
            data_spec(data_args, eval_path, split=data_args.eval_split or "train")
        )
    elif data_args.eval_split or data_args.eval_fraction:
        dataset, eval_dataset = split_dataset(
            dataset,
            eval_split=data_args.eval_split,
            eval_fraction=data_args.eval_fraction or None,
            seed=train_args.seed,
            spec=data_spec(data_args, train_path, split=data_args.eval_split),
            loader=loader,
        )
    else:
        eval_dataset = None
    if data_args.max_samples is not None:
        dataset = dataset.select(range(min(data_args.max_samples, len(dataset))))
    check = dict(
        family=loaded.family,
        processor=loaded.processor,
        max_side=data_args.max_side,
        max_seq_length=data_args.max_seq_length,
        strict=data_args.strict,
        fit_images=data_args.fit_images,
    )
    report = validate_dataset(dataset, **check)
    if distributed.is_main_process():
        write_rejected(report, output / run_dir.REJECTED_FILE)
    eval_kept = validate_dataset(eval_dataset, **check).kept if eval_dataset is not None else None
    return TrainingData(train=report.kept, eval=eval_kept, report=report)


def make_sft_collator(loaded: LoadedModel, data_args: DataArgs, train_args: TrainArgs):
    from vlm_unsloth.collate import SftCollator, UnslothRecordCollator

    if loaded.plan.backend == "unsloth":
        from vlm_unsloth.unsloth_backend import make_collator

        unsloth_collator = make_collator(
            loaded.model,
            loaded.processor,
            loaded.family,
            train_on_prompt=train_args.train_on_prompt,
            max_seq_length=data_args.max_seq_length,
        )
        return UnslothRecordCollator(unsloth_collator, loaded.family, max_side=data_args.max_side)
    return SftCollator(
        loaded.processor,
        loaded.family,
        max_side=data_args.max_side,
        train_on_prompt=train_args.train_on_prompt,
    )


def build_trainer(trainer_class: type, *, loss_is_mean_over_rows: bool, console, output, **kwargs):
    """`trainer_class` (TRL's SFTTrainer/DPOTrainer, as Unsloth patched them) with out-of-memory
    recovery (oom.py): its collator keeps each batch's records so a batch can be split; and the
    optimizer of optimizer.py."""
    from vlm_unsloth.oom import RecordKeepingCollator, with_oom_recovery
    from vlm_unsloth.optimizer import optimizer_cls_and_kwargs

    recovering = with_oom_recovery(trainer_class, loss_is_mean_over_rows=loss_is_mean_over_rows)
    trainer = recovering(data_collator=RecordKeepingCollator(kwargs.pop("data_collator")), **kwargs)
    # --optim as transformers resolves it, without bitsandbytes' per-parameter GPU stalls.
    trainer.optimizer_cls_and_kwargs = optimizer_cls_and_kwargs(trainer.args, trainer.model)

    def on_split(step: int, rows: int, pieces: int) -> None:
        line = (
            f"out of GPU memory at step {step + 1}: batch of {rows} now runs as {pieces} pieces "
            f"(accumulation x{pieces}); same effective batch, same step"
        )
        console.print(f"[yellow]{line}[/]")
        if distributed.is_main_process():
            run_dir.append_metrics(output, {"step": step, "event": "oom_split", "pieces": pieces})

    trainer.on_split = on_split
    return trainer


def settle_batch_size(
    trainer, train_args: TrainArgs, data: TrainingData, loaded: LoadedModel, output: Path, console
) -> TrainArgs:
    """Fix the per-device batch and accumulation: measured with `--batch-size auto`, derived
    from `--effective-batch-size`, or as given. Applies them to `trainer`; returns the settled
    options (batch size an int). A resumed run keeps the batch it started with (data order)."""
    world = distributed.world_size()
    if not train_args.auto_batch_size and train_args.effective_batch_size is None:
        return train_args
    samples = train_args.effective_batch_size
    if samples is None:
        samples = DEFAULT_AUTO_EFFECTIVE_BATCH
    if samples % world:
        raise ConfigError(
            f"{samples} samples per step do not split over {world} processes",
            where="--effective-batch-size",
            fix=f"use a multiple of {world}",
        )
    per_process = samples // world
    if not train_args.auto_batch_size:
        if per_process % train_args.batch_size:
            raise ConfigError(
                f"{samples} is not a multiple of batch size {train_args.batch_size} x {world} "
                "process(es)",
                where="--effective-batch-size",
                fix="pick a multiple, or --batch-size auto",
            )
        settled = dataclasses.replace(train_args, grad_accum=per_process // train_args.batch_size)
    elif train_args.resume:
        resolved = run_dir.load_run_config(output).get("resolved", {})
        if "batch_size" not in resolved:
            raise ConfigError(
                "the run being resumed did not measure its batch size",
                where="--batch-size auto --resume",
                fix="resume with the batch size it started with (see its run_config.yaml)",
            )
        settled = dataclasses.replace(
            train_args, batch_size=resolved["batch_size"], grad_accum=resolved["grad_accum"]
        )
        console.print(f"batch size auto: resuming with the run's {settled.batch_size}")
    else:
        choice = _measure_batch_size(trainer, train_args, data, loaded, per_process, console)
        console.print(choice.describe())
        settled = dataclasses.replace(
            train_args, batch_size=choice.batch_size, grad_accum=choice.grad_accum
        )
        if distributed.is_main_process():
            run_dir.update_resolved(
                output, batch_size=settled.batch_size, grad_accum=settled.grad_accum
            )
    trainer.args.per_device_train_batch_size = settled.batch_size
    trainer.args.per_device_eval_batch_size = settled.batch_size
    trainer.args.gradient_accumulation_steps = settled.grad_accum
    trainer._train_batch_size = trainer.args.train_batch_size
    return settled


def _measure_batch_size(trainer, train_args, data, loaded, per_process, console):
    from vlm_unsloth.auto_batch import batch_candidates, choose_batch_size
    from vlm_unsloth.memory_plan import planned_batch_size

    cap = None
    if loaded.plan.device == "cuda":
        import torch

        total = torch.cuda.get_device_properties(distributed.local_index()).total_memory
        cap = train_args.gpu_memory_gib or total / 2**30
    planned = None
    if cap is not None and len(data.train):
        longest = max(data.train[LENGTH_COLUMN])
        planned = planned_batch_size(
            _calibrated_arch(loaded),
            loaded.plan.backend,
            cap,
            longest,
            batch_candidates(per_process),
        )
    choice = choose_batch_size(
        trainer, data.train, samples_per_process=per_process, cap_gib=cap, planned=planned,
        report=console.print, training_mode=backend_module(loaded.plan.backend).for_training,
    )  # fmt: skip
    # Every process must train with the same batch: the smallest any of them measured.
    agreed = distributed.smallest_across_processes(choice.batch_size)
    if agreed != choice.batch_size:
        choice.batch_size, choice.grad_accum = agreed, per_process // agreed
    return choice


def dataloader_workers(train_args: TrainArgs, plan: DevicePlan) -> int:
    """--dataloader-num-workers, or by default: on a GPU, up to 4 worker processes decode,
    resize and process images while it computes (measured on an H100 with 1280 px JPEGs: the
    GPU waited for data 24-35% of the time with none); on CPU none (they would compete with the
    training for the same cores)."""
    import os

    if train_args.dataloader_num_workers is not None:
        return train_args.dataloader_num_workers
    if plan.device != "cuda":
        return 0
    return min(4, max((os.cpu_count() or 1) - 1, 0))


def trainer_arguments(
    train_args: TrainArgs, plan: DevicePlan, output: Path, *, has_eval: bool
) -> dict:
    """TrainingArguments shared by SFTConfig and DPOConfig, from our options and the device."""
    optim = train_args.optim
    if optim == "auto":
        # 8-bit AdamW states, paged to CPU under memory pressure: the QLoRA recipe on CUDA.
        optim = "paged_adamw_8bit" if plan.device == "cuda" else "adamw_torch"
    evaluate_during = has_eval and train_args.eval_steps > 0
    # With --batch-size auto, 1 until settle_batch_size measures it.
    batch_size = 1 if train_args.auto_batch_size else train_args.batch_size
    return dict(
        output_dir=str(output),
        num_train_epochs=train_args.epochs,
        max_steps=train_args.max_steps,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        gradient_accumulation_steps=train_args.grad_accum,
        learning_rate=train_args.learning_rate,
        warmup_steps=train_args.warmup_ratio,  # a float in [0, 1) is a ratio of total steps
        lr_scheduler_type=train_args.lr_scheduler_type,
        weight_decay=train_args.weight_decay,
        max_grad_norm=train_args.max_grad_norm,
        optim=optim,
        seed=train_args.seed,
        data_seed=train_args.seed,
        bf16=plan.dtype == "bfloat16",
        fp16=plan.dtype == "float16",
        use_cpu=plan.device == "cpu",
        logging_steps=train_args.logging_steps,
        save_strategy="steps",
        save_steps=train_args.save_steps,
        save_total_limit=train_args.save_total_limit,
        eval_strategy="steps" if evaluate_during else "no",
        eval_steps=train_args.eval_steps if evaluate_during else None,
        report_to=train_args.report_to,
        dataloader_num_workers=dataloader_workers(train_args, plan),
        train_sampling_strategy="group_by_length" if train_args.group_by_length else "random",
        length_column_name=LENGTH_COLUMN,
        # Gradient checkpointing is set up when the model is loaded (Unsloth's own variant on
        # the unsloth backend); the trainer must not wrap the model a second time.
        gradient_checkpointing=False,
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=True,  # the rich progress line replaces tqdm
        logging_first_step=True,
    )


def callbacks(output: Path, console) -> list:
    from vlm_unsloth.callbacks import (
        DataWaitCallback,
        GracefulInterruptCallback,
        MetricsCallback,
        ModelInputsCallback,
        RichProgressCallback,
    )

    return [
        DataWaitCallback(),  # first: its log entry must exist when MetricsCallback writes
        MetricsCallback(output),
        RichProgressCallback(console),
        GracefulInterruptCallback(console),
        ModelInputsCallback(),
    ]


def print_banner(
    console, job: str, loaded: LoadedModel, data: TrainingData, train_args: TrainArgs, output: Path
) -> None:
    trainable, total = count_parameters(loaded.model)
    report = data.report
    rows = [
        ("model", f"{loaded.ref.name} ({loaded.family.key})"),
        (
            "backend",
            f"{loaded.plan.backend} on {loaded.plan.device}, {loaded.plan.dtype}, "
            f"{loaded.quantization} weights — {loaded.plan.why}",
        ),
        (
            "parameters",
            f"{format_count(trainable)} trainable of {format_count(total)} "
            f"({100 * trainable / max(total, 1):.2f}%)",
        ),
        (
            "train rows",
            f"{len(data.train)} kept of {report.rows_read} read"
            f" ({report.rejected_count} rejected, {report.resized} resized)",
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


def run_training(trainer, train_args: TrainArgs, output: Path) -> bool:
    """Train (from the last checkpoint with --resume). True when stopped early by Ctrl-C."""
    from transformers.trainer_callback import PrinterCallback

    from vlm_unsloth.callbacks import GracefulInterruptCallback

    # The rich progress line and metrics.jsonl replace the trainer's raw dict printing.
    trainer.remove_callback(PrinterCallback)
    resume_from = run_dir.last_checkpoint(output) if train_args.resume else None
    if resume_from is not None:
        distributed.let_cpu_processes_load_checkpoints()
    trainer.train(resume_from_checkpoint=resume_from)
    return installed_callback(trainer, GracefulInterruptCallback).interrupted


def installed_callback(trainer, kind: type):
    """The trainer's instance of one of our callbacks (`callbacks()` installs each once)."""
    return next(c for c in trainer.callback_handler.callbacks if isinstance(c, kind))


def save_adapter(trainer, loaded: LoadedModel, output: Path) -> Path:
    adapter_dir = output / run_dir.ADAPTER_DIR
    # Only the trained adapter: DPO may hold a frozen copy of the starting one as its reference.
    trainer.model.save_pretrained(adapter_dir, selected_adapters=[trainer.model.active_adapter])
    loaded.processor.save_pretrained(adapter_dir)
    return adapter_dir


def save_merged(loaded: LoadedModel, output: Path) -> Path:
    """A merged 16-bit model (base + adapter): loadable without PEFT."""
    merged_dir = output / run_dir.MERGED_DIR
    if loaded.plan.backend == "unsloth":
        loaded.model.save_pretrained_merged(
            str(merged_dir), loaded.processor, save_method="merged_16bit"
        )
        return merged_dir
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    # A quantized base cannot take merged weights: reload it in 16 bit and merge into that.
    dtype = torch.bfloat16 if loaded.plan.dtype == "bfloat16" else torch.float16
    if loaded.plan.device == "cpu":
        dtype = torch.float32
    base = AutoModelForImageTextToText.from_pretrained(loaded.ref.path, dtype=dtype)
    merged = PeftModel.from_pretrained(base, output / run_dir.ADAPTER_DIR).merge_and_unload()
    merged.save_pretrained(merged_dir)
    loaded.processor.save_pretrained(merged_dir)
    return merged_dir


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def finish(
    console, job, trainer, loaded, data, train_args, output, started, interrupted, *, extra=None
):
    """Save, evaluate, summarise. `extra`: more summary.json entries, also printed as rows."""
    from vlm_unsloth.callbacks import peak_gpu_memory_gib
    from vlm_unsloth.sft import TrainResult

    main = distributed.is_main_process()
    adapter_dir = save_adapter(trainer, loaded, output) if main else output / run_dir.ADAPTER_DIR
    # Evaluation is collective under DDP: every process takes part.
    eval_metrics = trainer.evaluate() if data.eval is not None and not interrupted else {}
    merged_dir = None
    if main and train_args.save_merged and not interrupted:
        merged_dir = save_merged(loaded, output)
    distributed.wait_for_everyone()
    pushed = []
    if main and train_args.push_to_hub and not interrupted:
        from vlm_unsloth.hub import push_folders

        pushed = push_folders(train_args.push_to_hub, adapter_dir, merged_dir)
    curve = run_dir.plot_loss_curve(output) if main else None
    history = [r for r in run_dir.read_metrics(output) if "loss" in r]
    speeds = [r["samples_per_second"] for r in history[1:] if "samples_per_second" in r]
    waits = [r["data_wait_fraction"] for r in history[1:] if "data_wait_fraction" in r]
    summary = {
        "job": job,
        "interrupted": interrupted,
        "global_step": trainer.state.global_step,
        "wall_time_s": round(time.perf_counter() - started, 1),
        "final_loss": history[-1]["loss"] if history else None,
        "samples_per_second": round(sum(speeds) / len(speeds), 3) if speeds else None,
        "peak_gpu_memory_gib": peak_gpu_memory_gib(),
        "data_wait_fraction": round(sum(waits) / len(waits), 4) if waits else None,
        "eval": eval_metrics,
        "adapter_dir": str(adapter_dir),
        "merged_dir": str(merged_dir) if merged_dir else None,
        "loss_curve": str(curve) if curve else None,
        "train_rows": len(data.train),
        "rejected_rows": data.report.rejected_count,
        "parameters": dict(
            zip(("trainable", "total"), count_parameters(loaded.model), strict=True)
        ),
        "backend": loaded.plan.backend,
        "device_name": device_name(),
        "pushed_to": pushed,
        "model_inputs_first_step": _first_model_inputs(trainer),
        "batch_size": train_args.batch_size,
        "grad_accum": train_args.grad_accum,
        "planned_peak_gib": _planned_peak_gib(job, loaded, data, train_args),
        **(extra or {}),
    }
    if main:
        run_dir.write_summary(output, summary)
    rows = [
        ("status", "interrupted — resume with --resume" if interrupted else "done"),
        ("steps", summary["global_step"]),
        ("wall time", f"{summary['wall_time_s']} s"),
        ("final loss", summary["final_loss"]),
        ("samples/s", summary["samples_per_second"]),
        (
            "waiting for data",
            f"{100 * summary['data_wait_fraction']:.1f}% of the time" if waits else "n/a",
        ),
        (
            "peak GPU memory",
            f"{summary['peak_gpu_memory_gib']:.2f} GiB"
            if summary["peak_gpu_memory_gib"]
            else "n/a (CPU)",
        ),
        ("eval loss", eval_metrics.get("eval_loss", "n/a")),
        ("adapter", adapter_dir),
        ("merged model", merged_dir or "not written (--save-merged)"),
        ("metrics", output / run_dir.METRICS_FILE),
        ("loss curve", curve or "n/a"),
        ("model inputs", _describe_inputs(summary["model_inputs_first_step"])),
        *((key.replace("_", " "), value) for key, value in (extra or {}).items()),
    ]
    console.print(key_value_table(f"{job} summary", rows))
    return TrainResult(output_dir=output, adapter_dir=adapter_dir, summary=summary)


def _first_model_inputs(trainer) -> dict[str, list[int]] | None:
    from vlm_unsloth.callbacks import ModelInputsCallback

    return installed_callback(trainer, ModelInputsCallback).first_inputs


def _describe_inputs(inputs: dict[str, list[int]] | None) -> str:
    """`pixel_values [1200, 1176] · image_grid_thw [2, 3] · ...` for the summary table."""
    if not inputs:
        return "n/a"
    return " · ".join(f"{name} {shape}" for name, shape in inputs.items())


def _planned_peak_gib(job: str, loaded: LoadedModel, data: TrainingData, train_args: TrainArgs):
    """The memory planner's prediction for this SFT run (None where it has no calibration)."""
    from vlm_unsloth.memory_plan import calibrated_fit

    if job != "SFT" or loaded.plan.device != "cuda" or not len(data.train):
        return None
    fit = calibrated_fit(_calibrated_arch(loaded), loaded.plan.backend)
    if fit is None:
        return None
    return round(fit.peak_gib(train_args.batch_size, max(data.train[LENGTH_COLUMN])), 2)


def _calibrated_arch(loaded: LoadedModel) -> str | None:
    """The planner's name for this model, or None where its calibration does not speak for the
    setup (memory_plan.covers: 4-bit weights with gradient checkpointing)."""
    from vlm_unsloth.memory_plan import architecture_of, covers

    if not covers(loaded.quantization, loaded.gradient_checkpointing):
        return None
    return architecture_of(loaded.family.key, loaded.model.config)
