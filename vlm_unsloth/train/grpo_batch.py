"""`--batch-size auto` for GRPO: the step's answers sampled together, and the largest training
micro-batch that fits the GPU memory cap, measured before training.

    train_args = settle_grpo_batch(trainer, train_args, grpo_args, loaded, console)

The generation batch is one optimizer step's answers per process (--effective-batch-size,
default 16, over the processes): the fullest generate call, and no answer trained on after a
later policy sampled. The probe samples it once through the trainer's own path, from the
dataset's longest prompts, every answer forced to --max-completion-length tokens (the worst
case for the KV cache and the loss), and measures that peak; a batch that does not fit stops
with one line. Then `perf.auto_batch.largest_that_fits` climbs the micro-batches (divisors of
that batch) with one forward and backward of the GRPO loss each on its first rows, the sampled
batch held as it is in training. Without CUDA there is no memory to measure: the probes only
check that the steps run (the largest micro-batch is kept).
"""

from __future__ import annotations

import dataclasses

from vlm_unsloth import distributed
from vlm_unsloth.config import DEFAULT_AUTO_EFFECTIVE_BATCH, TrainArgs
from vlm_unsloth.errors import ConfigError
from vlm_unsloth.models.backend import backend_module
from vlm_unsloth.models.loading import LoadedModel
from vlm_unsloth.perf.auto_batch import batch_candidates, largest_that_fits, peak_gib_of
from vlm_unsloth.train.grpo_options import GrpoArgs


def answers_per_process(train_args: TrainArgs) -> int:
    """A step's answers on this process: --effective-batch-size (default 16) over processes."""
    return (train_args.effective_batch_size or DEFAULT_AUTO_EFFECTIVE_BATCH) // (
        distributed.world_size()
    )


def placeholder_batch(train_args: TrainArgs) -> TrainArgs:
    """What the trainer is built with before the probes: micro-batch 1, the step's answers as
    accumulation (a valid GRPO config of the same generation batch)."""
    return dataclasses.replace(train_args, batch_size=1, grad_accum=answers_per_process(train_args))


def settle_grpo_batch(
    trainer, train_args: TrainArgs, grpo_args: GrpoArgs, loaded: LoadedModel, lengths, console
) -> TrainArgs:
    """Measure and apply the micro-batch (see the module docstring); the options unchanged
    without --batch-size auto. `lengths`: the training rows' token counts (the longest first)."""
    if not train_args.auto_batch_size:
        return train_args
    if train_args.resume:
        raise ConfigError(
            "GRPO does not record the batch --batch-size auto measured",
            where="--batch-size auto --resume",
            fix="resume with the batch size the run printed (batch size auto -> N)",
        )
    answers = answers_per_process(train_args)
    cap = None
    if loaded.setup.device == "cuda":
        import torch

        total = torch.cuda.get_device_properties(distributed.local_index()).total_memory
        cap = train_args.gpu_memory_gib or total / 2**30
    training_mode = backend_module(loaded.setup.backend).for_training
    training_mode(trainer.model)
    sampled = {}

    def sample() -> None:
        sampled["batch"] = _sample_worst_case(trainer, answers, lengths)

    sampling = peak_gib_of(sample)
    limit = f"{cap:g} GiB" if cap else "the CPU"
    console.print(f"batch size auto: sampling {answers} answers: {_describe(sampling, cap)}")
    if sampling[0] is None or (cap and sampling[0] > cap):
        raise ConfigError(
            f"sampling {answers} answers of {grpo_args.max_completion_length} tokens does not fit "
            f"{limit}",
            where="--batch-size auto",
            fix="lower --effective-batch-size or --max-completion-length, or raise "
            "--gpu-memory-gib",
        )
    batch = sampled["batch"]

    def measure(micro_batch: int):
        return peak_gib_of(lambda: _loss_step(trainer, batch, answers, micro_batch))

    choice = largest_that_fits(
        batch_candidates(answers), measure, cap, report=console.print,
        where=f"answers of {grpo_args.max_completion_length} tokens",
    )  # fmt: skip
    micro = distributed.smallest_across_processes(choice.batch_size)
    choice.batch_size, choice.grad_accum = micro, answers // micro
    _clear_probe_traces(trainer)
    console.print(
        choice.describe().replace("accumulation", f"accumulation, {answers} answers sampled")
    )
    args = trainer.args
    args.per_device_train_batch_size = args.per_device_eval_batch_size = micro
    args.gradient_accumulation_steps = args.steps_per_generation = answers // micro
    args.generation_batch_size = answers * distributed.world_size()
    trainer._train_batch_size = args.train_batch_size
    return dataclasses.replace(train_args, batch_size=micro, grad_accum=answers // micro)


def _sample_worst_case(trainer, answers: int, lengths: list[int]) -> dict:
    """The trainer's sampled and scored batch for the dataset's longest prompts, every answer
    as long as --max-completion-length allows."""
    dataset = trainer.train_dataset
    longest = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups = answers // trainer.num_generations
    rows = [dataset[longest[g % len(longest)]] for g in range(groups)]
    rows = [row for row in rows for _ in range(trainer.num_generations)]  # as TRL's sampler
    config = trainer.generation_config
    config.min_new_tokens = trainer.max_completion_length  # no early end of turn
    scored, trainer.on_step_without_scores = trainer.on_step_without_scores, lambda s, a: None
    try:
        return trainer._generate_and_score_completions(rows)
    finally:
        config.min_new_tokens = None
        trainer.on_step_without_scores = scored


def _loss_step(trainer, batch: dict, answers: int, micro_batch: int) -> None:
    """One forward and backward of the GRPO loss on the first `micro_batch` answers, cut as
    TRL's `_prepare_inputs` cuts a generation batch."""
    from trl.trainer.utils import (
        split_pixel_values_by_grid,
        split_tensor_dict,
        unsplit_pixel_values_by_grid,
    )

    pieces = split_tensor_dict(split_pixel_values_by_grid(batch), answers // micro_batch)
    inputs = unsplit_pixel_values_by_grid(pieces[0])
    # The loss normaliser reads the step's accumulation (set by the training loop).
    trainer.current_gradient_accumulation_steps = answers // micro_batch
    try:
        trainer.compute_loss(trainer.model, inputs).backward()
    finally:
        trainer.model.zero_grad(set_to_none=True)


def _clear_probe_traces(trainer) -> None:
    """The probes' metrics, token count and skipped-step count are no training's."""
    for metrics in trainer._metrics.values():
        metrics.clear()
    trainer.state.num_input_tokens_seen = 0
    trainer._steps_without_scores = 0
    trainer._buffered_inputs = None


def _describe(peaks: tuple, cap: float | None) -> str:
    allocated, reserved = peaks
    if allocated is None:
        return f"out of memory ({reserved})"
    return f"{allocated:.2f} GiB allocated, {reserved:.2f} reserved" if cap else "ran"
