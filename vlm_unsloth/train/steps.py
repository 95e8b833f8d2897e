"""The steps every training method takes, in the order `sft.py` and `dpo.py` call them:

    setup_device → prepare_output → load_model_for_training → load_training_data →
    trainer_arguments → build_trainer (callbacks, OOM recovery, optimizer) → run_training

Sizing the batch (`batch_size.py`) and the end of a run (`summary.py`: save, summarise, print)
are steps too, in their own modules.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_unsloth import distributed, run_dir
from vlm_unsloth.config import DataArgs, ModelArgs, TrainArgs
from vlm_unsloth.data.splits import first_rows, load_train_and_eval
from vlm_unsloth.data.validation import (
    LENGTH_COLUMN,
    ValidationReport,
    validate_dataset,
    write_rejected,
)
from vlm_unsloth.errors import BackendError
from vlm_unsloth.families import TINY_MODEL_NAMES
from vlm_unsloth.models.backend import activate_backend
from vlm_unsloth.models.checkpoints import peek_family
from vlm_unsloth.models.device import (
    DeviceSetup,
    cap_gpu_memory,
    choose_device,
    cuda_available,
)
from vlm_unsloth.models.loading import LoadedModel, load_model, resolve_model
from vlm_unsloth.models.lora import LoraArgs
from vlm_unsloth.perf.oom import RecordKeepingCollator, with_oom_recovery
from vlm_unsloth.perf.optimizer import optimizer_cls_and_kwargs
from vlm_unsloth.train.callbacks import (
    DataWaitCallback,
    GracefulInterruptCallback,
    MetricsCallback,
    ModelInputsCallback,
    RichProgressCallback,
)
from vlm_unsloth.train.hub import check_can_push


@dataclass
class TrainingData:
    train: Any
    """datasets.Dataset of validated canonical records (images as references)."""
    eval: Any | None
    report: ValidationReport
    """What validating the training rows found."""


def setup_device(model_args: ModelArgs, train_args: TrainArgs) -> DeviceSetup:
    """Backend (Unsloth imported first when it runs), device and precision; the GPU capped to
    `--gpu-memory-gib`. Refuses to train a real-size model on a CPU unless asked for."""
    backend, why = activate_backend(model_args.backend, model_args.model)
    if (
        model_args.backend == "auto"
        and backend == "hf"
        and not cuda_available()  # (on a GPU, auto may pick hf for a family Unsloth can't train)
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
    setup = choose_device(backend, why, train_args.precision, peek_family(model_args.model))
    if train_args.gpu_memory_gib is not None:
        cap_gpu_memory(train_args.gpu_memory_gib, setup)
    return setup


def prepare_output(train_args: TrainArgs, config: dict[str, Any], setup: DeviceSetup) -> Path:
    """Check (every process) and create (the main one) the output folder; save the run's
    resolved configuration in it."""
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
                "backend": setup.backend, "device": setup.device, "dtype": setup.dtype,
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
    setup: DeviceSetup,
) -> LoadedModel:
    """The model with trainable LoRA, loaded by every process at once."""
    with distributed.main_process_first():
        resolve_model(model_args.model)  # may build a tiny checkpoint: one writer
    # Every process loads at once: Unsloth's loader runs collectives across the ranks while it
    # compiles (unsloth_zoo's distributed_function), so a rank held back in a barrier would
    # desynchronise them (seen on 2 H100s: "too many values to unpack" in rank 1).
    return load_model(
        model_args, lora_args, setup, seed=train_args.seed, max_seq_length=data_args.max_seq_length
    )


def load_training_data(
    data_args: DataArgs,
    loaded: LoadedModel,
    train_args: TrainArgs,
    output: Path,
    *,
    preference: bool,
) -> TrainingData:
    """Train and eval records (SFT, or preference pairs for DPO), validated with the model's
    processor; the rejected training rows are written to the run folder."""
    with distributed.main_process_first():
        train, held_out = load_train_and_eval(
            data_args, preference=preference, seed=train_args.seed
        )
        train = first_rows(train, data_args.max_samples)
        check = dict(
            family=loaded.family,
            processor=loaded.processor,
            max_side=data_args.max_side,
            max_seq_length=data_args.max_seq_length,
            strict=data_args.strict,
            fit_images=data_args.fit_images,
        )
        report = validate_dataset(train, **check)
        if distributed.is_main_process():
            write_rejected(report, output / run_dir.REJECTED_FILE)
        eval_kept = validate_dataset(held_out, **check).kept if held_out is not None else None
    return TrainingData(train=report.kept, eval=eval_kept, report=report)


def dataloader_workers(train_args: TrainArgs, setup: DeviceSetup) -> int:
    """--dataloader-num-workers, or by default: on a GPU, up to 4 worker processes decode,
    resize and process images while it computes (measured on an H100 with 1280 px JPEGs: the
    GPU waited for data 24-35% of the time with none); on CPU none (they would compete with the
    training for the same cores)."""
    if train_args.dataloader_num_workers is not None:
        return train_args.dataloader_num_workers
    if setup.device != "cuda":
        return 0
    return min(4, max((os.cpu_count() or 1) - 1, 0))


def trainer_arguments(
    train_args: TrainArgs, setup: DeviceSetup, output: Path, *, has_eval: bool
) -> dict:
    """TrainingArguments shared by SFTConfig and DPOConfig, from our options and the device."""
    optim = train_args.optim
    if optim == "auto":
        # 8-bit AdamW states, paged to CPU under memory pressure: the QLoRA recipe on CUDA.
        optim = "paged_adamw_8bit" if setup.device == "cuda" else "adamw_torch"
    evaluate_during = has_eval and train_args.eval_steps > 0
    # With --batch-size auto, 1 until batch_size.settle_batch_size measures it.
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
        bf16=setup.dtype == "bfloat16",
        fp16=setup.dtype == "float16",
        use_cpu=setup.device == "cpu",
        logging_steps=train_args.logging_steps,
        save_strategy="steps",
        save_steps=train_args.save_steps,
        save_total_limit=train_args.save_total_limit,
        eval_strategy="steps" if evaluate_during else "no",
        eval_steps=train_args.eval_steps if evaluate_during else None,
        report_to=train_args.report_to,
        dataloader_num_workers=dataloader_workers(train_args, setup),
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
    """Our trainer callbacks, each installed once (`installed_callback` finds them)."""
    return [
        DataWaitCallback(),  # first: its log entry must exist when MetricsCallback writes
        MetricsCallback(output),
        RichProgressCallback(console),
        GracefulInterruptCallback(console),
        ModelInputsCallback(),
    ]


def build_trainer(trainer_class: type, *, loss_is_mean_over_rows: bool, console, output, **kwargs):
    """`trainer_class` (TRL's SFTTrainer/DPOTrainer, as Unsloth patched them) with out-of-memory
    recovery (perf/oom.py: its collator keeps each batch's records so a batch can be split) and
    the optimizer of perf/optimizer.py."""
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


def run_training(trainer, train_args: TrainArgs, output: Path) -> bool:
    """Train (from the last checkpoint with --resume). True when stopped early by Ctrl-C."""
    from transformers.trainer_callback import PrinterCallback

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
