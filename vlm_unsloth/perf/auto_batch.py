"""`--batch-size auto`: the largest per-device batch that fits GPU memory, measured before training.

The course's advice, automated: a large batch is fastest, memory decides how large, and gradient
accumulation keeps the effective batch. Candidates are the divisors of the samples each process
contributes per optimizer step (so accumulation stays a whole number). Each probe runs one forward
and backward pass through the real trainer's loss on the dataset's longest rows — the worst case
a batch can meet, since padding makes every row as long as the longest — and reads the peak.

A candidate fits when it does not run out of memory and its peak of allocated memory stays under
the cap with the planner's safety margin (the optimizer's 8-bit states, allocator fragmentation
and the caching allocator's slack come on top; under a cap the allocator hands cached blocks back
before it fails, so the reserved peak is not the limit). The search starts at the memory planner's
choice (or at 1 for an uncalibrated model) and climbs while candidates fit, skipping a candidate
that the last two probes extrapolate over the cap: a real out-of-memory error mid-forward can
leave buffers behind (Unsloth keeps its offloading buffers at their largest size), so the probes
avoid provoking one. If the starting candidate does not fit, it steps down.

Without CUDA there is no memory to measure: a probe then only checks that the step runs.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field

from vlm_unsloth.data.validation import LENGTH_COLUMN
from vlm_unsloth.errors import ConfigError
from vlm_unsloth.perf.memory_plan import SAFETY_MARGIN
from vlm_unsloth.perf.oom import RECORDS_KEY

LARGEST_AUTO_BATCH = 64


@dataclass
class Probe:
    batch_size: int
    allocated_gib: float | None
    """Peak allocated GPU memory of the probe step; None when it ran out of memory."""
    reserved_gib: float | str | None
    """Peak reserved GPU memory; the out-of-memory message when it ran out."""
    fits: bool
    on_gpu: bool = True

    def describe(self) -> str:
        if self.allocated_gib is None:
            return f"{self.batch_size}: out of memory ({self.reserved_gib})"
        if not self.on_gpu:
            return f"{self.batch_size}: ran"
        return (
            f"{self.batch_size}: {self.allocated_gib:.2f} GiB allocated, "
            f"{self.reserved_gib:.2f} reserved" + ("" if self.fits else " (over)")
        )


@dataclass
class BatchChoice:
    batch_size: int
    grad_accum: int
    cap_gib: float | None
    probes: list[Probe] = field(default_factory=list)
    planned_start: int | None = None
    """The planner's first candidate (None when the model has no memory calibration)."""

    def describe(self) -> str:
        tried = "; ".join(p.describe() for p in self.probes)
        cap = f"allocated under {self.cap_gib * SAFETY_MARGIN:.1f} GiB" if self.cap_gib else "CPU"
        start = f"planner's start {self.planned_start}; " if self.planned_start else ""
        return (
            f"batch size auto -> {self.batch_size} x {self.grad_accum} accumulation "
            f"({start}probed {tried}; fits: {cap})"
        )


def batch_candidates(samples_per_process: int) -> list[int]:
    """Batch sizes that divide the per-process samples of a step, ascending."""
    limit = min(samples_per_process, LARGEST_AUTO_BATCH)
    return [b for b in range(1, limit + 1) if samples_per_process % b == 0]


def choose_batch_size(
    trainer,
    dataset,
    *,
    samples_per_process: int,
    cap_gib: float | None,
    planned: int | None = None,
    report=None,
    training_mode=None,
) -> BatchChoice:
    """Probe `trainer`'s loss on `dataset`'s longest rows; see the module docstring.

    `planned`: the planner's largest predicted-to-fit batch, the first one tried.
    `report(line)`: called with each probe's result as it comes.
    `training_mode(model)`: the backend's switch to training (see probe_peak_gib).
    """
    candidates = batch_candidates(samples_per_process)
    lengths = dataset[LENGTH_COLUMN]
    longest = sorted(range(len(lengths)), key=lambda i: -lengths[i])

    def measure(batch_size: int):
        # More rows than the dataset holds: repeat the longest (the worst case stays the same).
        rows = [dataset[longest[i % len(longest)]] for i in range(batch_size)]
        return probe_peak_gib(trainer, rows, training_mode)

    where = f"the longest rows ({lengths[longest[0]]} tokens)"
    choice = largest_that_fits(candidates, measure, cap_gib, planned, report, where=where)
    choice.grad_accum = samples_per_process // choice.batch_size
    return choice


def largest_that_fits(
    candidates: list[int], measure, cap_gib: float | None, planned: int | None = None,
    report=None, *, where: str = "the data",
) -> BatchChoice:  # fmt: skip
    """The largest of `candidates` (ascending) whose `measure(batch) -> (peak allocated, peak
    reserved)` fits the cap; the search of the module docstring (grad_accum left 0)."""
    fitting = [b for b in candidates if planned is not None and b <= planned]
    index = candidates.index(fitting[-1]) if fitting else 0
    limit = cap_gib * SAFETY_MARGIN if cap_gib else None
    choice = BatchChoice(0, 0, cap_gib, planned_start=candidates[index] if fitting else None)

    def probe(batch_size: int) -> bool:
        allocated, reserved = measure(batch_size)
        fits = allocated is not None and (limit is None or allocated <= limit)
        choice.probes.append(Probe(batch_size, allocated, reserved, fits, on_gpu=bool(limit)))
        if report is not None:
            report(f"batch size auto: probe {choice.probes[-1].describe()}")
        return fits

    def predicted_over(batch_size: int) -> bool:
        measured = [p for p in choice.probes if p.fits]
        if limit is None or len(measured) < 2:
            return False
        (b1, m1), (b2, m2) = [(p.batch_size, p.allocated_gib) for p in measured[-2:]]
        return m2 + (m2 - m1) / (b2 - b1) * (batch_size - b2) > limit

    if probe(candidates[index]):
        while index + 1 < len(candidates) and not predicted_over(candidates[index + 1]):
            if not probe(candidates[index + 1]):
                break
            index += 1
    else:
        while index > 0 and not probe(candidates[index - 1]):
            index -= 1
        index -= 1
        if index < 0:
            raise ConfigError(
                f"even a batch of 1 does not fit {cap_gib:g} GiB on {where} "
                f"({choice.probes[-1].describe()})",
                where="--batch-size auto",
                fix="lower --max-side (e.g. 512), raise --gpu-memory-gib, or --max-seq-length",
            )
    choice.batch_size = candidates[index]
    return choice


def probe_peak_gib(
    trainer, rows: list[dict], training_mode=None
) -> tuple[float | None, float | str | None]:
    """(peak allocated, peak reserved) GiB of one forward + backward of the trainer's loss on
    `rows` ((0, 0) on CPU); (None, the error's first line) when it runs out of GPU memory.
    Leaves no gradients or logged metrics behind.

    `training_mode(model)` must put the model in the state `trainer.train()` would: Unsloth's
    trainer leaves the model in inference mode after construction (no gradient checkpointing,
    KV cache on) and only `FastVisionModel.for_training` re-arms it; a bare `model.train()`
    would measure a run without checkpointing, several GiB too high for a 7B model."""
    import torch

    model = trainer.model
    (training_mode or (lambda m: m.train()))(model)
    dtype = torch.bfloat16 if trainer.args.bf16 else torch.float16 if trainer.args.fp16 else None
    autocast = torch.cuda.is_available() and dtype is not None

    def forward_backward():
        inputs = trainer._prepare_inputs(trainer.data_collator(rows))
        inputs.pop(RECORDS_KEY, None)
        with torch.autocast("cuda", dtype=dtype, enabled=autocast):
            loss = trainer.compute_loss(model, inputs)
        loss.backward()
        # Returning frees the inputs and activations (also when it runs out of memory).

    try:
        return peak_gib_of(forward_backward)
    finally:
        model.zero_grad(set_to_none=True)
        for metrics in getattr(trainer, "_metrics", {}).values():
            metrics.clear()  # TRL logs per-step metrics inside compute_loss


def _release_cached_memory() -> None:
    """Hand cached blocks back and restart the peak counters, so a probe's peak is its own."""
    import torch

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def peak_gib_of(step) -> tuple[float | None, float | str | None]:
    """(peak allocated, peak reserved) GiB while `step()` runs ((0, 0) on CPU); (None, the
    error's first line) when it runs out of GPU memory."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        _release_cached_memory()
    peaks = out_of_memory = None
    try:
        step()
        peaks = (
            (torch.cuda.max_memory_allocated() / 2**30, torch.cuda.max_memory_reserved() / 2**30)
            if cuda
            else (0.0, 0.0)
        )
    except torch.OutOfMemoryError as error:
        out_of_memory = str(error).splitlines()[0][:200]
    if cuda:
        _release_cached_memory()
    return peaks or (None, out_of_memory)
