"""Settle the per-device batch and accumulation before training: measured (`--batch-size auto`),
derived from `--effective-batch-size`, or as given; and what the memory planner predicts for it.

    train_args = settle_batch_size(trainer, train_args, data, loaded, output, console)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from vlm_unsloth import distributed, run_dir
from vlm_unsloth.config import DEFAULT_AUTO_EFFECTIVE_BATCH, TrainArgs
from vlm_unsloth.data.validation import LENGTH_COLUMN
from vlm_unsloth.errors import ConfigError
from vlm_unsloth.models.backend import backend_module
from vlm_unsloth.models.loading import LoadedModel
from vlm_unsloth.perf.auto_batch import BatchChoice, batch_candidates, choose_batch_size
from vlm_unsloth.perf.memory_plan import (
    architecture_of,
    calibrated_fit,
    covers,
    planned_batch_size,
)
from vlm_unsloth.train.steps import TrainingData


def settle_batch_size(
    trainer, train_args: TrainArgs, data: TrainingData, loaded: LoadedModel, output: Path, console
) -> TrainArgs:
    """Fix the per-device batch and accumulation: measured with `--batch-size auto`, derived
    from `--effective-batch-size`, or as given. Applies them to `trainer`; returns the settled
    options (batch size an int). A resumed run keeps the batch it started with (data order)."""
    if not train_args.auto_batch_size and train_args.effective_batch_size is None:
        return train_args
    if not train_args.auto_batch_size:
        settled = accumulation_for_effective_batch(train_args)
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
        per_process = _samples_per_process(train_args)
        choice = _measure_batch_size(trainer, train_args, data, loaded, per_process, console)
        console.print(choice.describe())
        # run_config.yaml records it (`resolved`) when the run claims its folder.
        settled = dataclasses.replace(
            train_args, batch_size=choice.batch_size, grad_accum=choice.grad_accum
        )
    trainer.args.per_device_train_batch_size = settled.batch_size
    trainer.args.per_device_eval_batch_size = settled.batch_size
    trainer.args.gradient_accumulation_steps = settled.grad_accum
    trainer._train_batch_size = trainer.args.train_batch_size
    return settled


def accumulation_for_effective_batch(train_args: TrainArgs) -> TrainArgs:
    """The options with --grad-accum derived from --effective-batch-size and a fixed batch size
    (unchanged without --effective-batch-size)."""
    if train_args.effective_batch_size is None:
        return train_args
    per_process = _samples_per_process(train_args)
    if per_process % train_args.batch_size:
        raise ConfigError(
            f"{train_args.effective_batch_size} is not a multiple of batch size "
            f"{train_args.batch_size} x {distributed.world_size()} process(es)",
            where="--effective-batch-size",
            fix="pick a multiple, or --batch-size auto",
        )
    return dataclasses.replace(train_args, grad_accum=per_process // train_args.batch_size)


def _samples_per_process(train_args: TrainArgs) -> int:
    """--effective-batch-size (default 16 with --batch-size auto) over this run's processes."""
    world = distributed.world_size()
    samples = train_args.effective_batch_size
    if samples is None:
        samples = DEFAULT_AUTO_EFFECTIVE_BATCH
    if samples % world:
        raise ConfigError(
            f"{samples} samples per step do not split over {world} processes",
            where="--effective-batch-size",
            fix=f"use a multiple of {world}",
        )
    return samples // world


def _measure_batch_size(
    trainer, train_args: TrainArgs, data: TrainingData, loaded: LoadedModel, per_process: int,
    console,
) -> BatchChoice:  # fmt: skip
    cap = None
    if loaded.setup.device == "cuda":
        import torch

        total = torch.cuda.get_device_properties(distributed.local_index()).total_memory
        cap = train_args.gpu_memory_gib or total / 2**30
    planned = None
    if cap is not None and len(data.train):
        longest = max(data.train[LENGTH_COLUMN])
        planned = planned_batch_size(
            calibrated_arch(loaded),
            loaded.setup.backend,
            cap,
            longest,
            batch_candidates(per_process),
        )
    choice = choose_batch_size(
        trainer, data.train, samples_per_process=per_process, cap_gib=cap, planned=planned,
        report=console.print, training_mode=backend_module(loaded.setup.backend).for_training,
    )  # fmt: skip
    # Every process must train with the same batch: the smallest any of them measured.
    agreed = distributed.smallest_across_processes(choice.batch_size)
    if agreed != choice.batch_size:
        choice.batch_size, choice.grad_accum = agreed, per_process // agreed
    return choice


def planned_peak_gib(loaded: LoadedModel, data: TrainingData, batch_size: int) -> float | None:
    """The memory planner's prediction for an SFT run of this batch size on this data (None
    where it has no calibration, or on CPU)."""
    if loaded.setup.device != "cuda" or not len(data.train):
        return None
    fit = calibrated_fit(calibrated_arch(loaded), loaded.setup.backend)
    if fit is None:
        return None
    return round(fit.peak_gib(batch_size, max(data.train[LENGTH_COLUMN])), 2)


def calibrated_arch(loaded: LoadedModel) -> str | None:
    """The planner's name for this model, or None where its calibration does not speak for the
    setup (memory_plan.covers: 4-bit weights with gradient checkpointing)."""
    if not covers(loaded.quantization, loaded.gradient_checkpointing):
        return None
    return architecture_of(loaded.family, loaded.model.config)
