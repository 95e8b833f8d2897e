"""Trainer callbacks: the run folder's books, metrics.jsonl, the rich progress line, a graceful
Ctrl-C, the data wait and the model's inputs.

All are plain `transformers.TrainerCallback`s, so SFT, DPO and GRPO (and both backends) share
them.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from transformers import TrainerCallback

from vlm_unsloth import run_dir


def peak_gpu_memory_gib() -> float | None:
    """Peak reserved GPU memory of this process in GiB (None without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_reserved() / 2**30


class NothingLeftToTrain(Exception):
    """Raised by RunFolderCallback when training begins: the resumed checkpoint is already the
    run's final step. `step` is that step; the model holds the checkpoint's weights."""

    def __init__(self, step: int):
        super().__init__(f"the checkpoint is the run's final step ({step})")
        self.step = step


class RunFolderCallback(TrainerCallback):
    """The run folder across --resume and saves (install it first: it may stop training).

    When training begins on a resumed run: stop (NothingLeftToTrain) if its checkpoint is already
    the final step — transformers checks max_steps only after a step, so it would train one step
    more and each --resume would add another — else drop the metrics.jsonl lines logged after the
    checkpoint, which the run logs again. The trainer has loaded the checkpoint's weights,
    optimizer and state by then. After each save: record the checkpoint in the run's manifest,
    and delete the earlier run that --overwrite set aside (the new run has replaced it now).
    """

    def __init__(self, output: Path):
        self.output = output

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps > 0:
            raise NothingLeftToTrain(state.global_step)
        if state.global_step > 0 and state.is_world_process_zero:
            run_dir.drop_metrics_after(self.output, state.global_step)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            run_dir.record_files(self.output, [f"checkpoint-{state.global_step}/"])
            run_dir.discard_previous_run(self.output)


class MetricsCallback(TrainerCallback):
    """Adds throughput and memory to every log and appends it to `metrics.jsonl`.

    samples/s, tokens/s and seconds per step are measured over the interval since the previous
    log, so a slow first step (Unsloth compiles on it) does not hide the steady-state speed.
    (GRPO's trainer adds its phases and generated tokens/s itself: train/grpo_trainer.py.)
    """

    def __init__(self, output: Path):
        self.output = output
        self.samples_per_step = 0
        self._last_time: float | None = None
        self._last_step = 0
        self._last_tokens = 0

    def on_train_begin(self, args, state, control, **kwargs):
        # Read here, not at construction: --batch-size auto settles the batch after that.
        self.samples_per_step = (
            args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        )
        self._last_time = time.perf_counter()
        self._last_step = state.global_step
        self._last_tokens = state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or not state.is_world_process_zero:
            return
        now = time.perf_counter()
        steps = state.global_step - self._last_step
        if "loss" in logs and steps > 0 and self._last_time is not None:
            elapsed = max(now - self._last_time, 1e-9)
            logs["samples_per_second"] = round(steps * self.samples_per_step / elapsed, 4)
            tokens = state.num_input_tokens_seen - self._last_tokens
            logs["tokens_per_second"] = round(tokens / elapsed, 2)
            logs["seconds_per_step"] = round(elapsed / steps, 4)
            self._last_time, self._last_step = now, state.global_step
            self._last_tokens = state.num_input_tokens_seen
        peak = peak_gpu_memory_gib()
        if peak is not None:
            logs["peak_gpu_memory_gib"] = round(peak, 3)
        run_dir.append_metrics(
            self.output, {"step": state.global_step, "epoch": state.epoch, **logs}
        )


class DataWaitCallback(TrainerCallback):
    """Adds `data_wait_fraction` to every training log: the share of wall time the loop spent
    waiting for batches (image decoding, resizing, the processor) instead of computing.

    The trainer fetches a step's micro-batches between the previous step's end (and its
    logging/saving/evaluation) and this step's begin, so that gap is the wait. With
    --dataloader-num-workers > 0 workers prepare batches ahead and the gap shrinks.
    """

    def __init__(self):
        self._ready: float | None = None
        self._step_start: float | None = None
        self._waiting = 0.0
        self._computing = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if self._ready is not None:
            self._waiting += now - self._ready
        self._step_start = now

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if self._step_start is not None:
            self._computing += now - self._step_start
        self._ready = now

    def _after_bookkeeping(self):
        # Logging, saving and evaluating happen in the gap too; they are not data waiting.
        if self._ready is not None:
            self._ready = time.perf_counter()

    def on_save(self, args, state, control, **kwargs):
        self._after_bookkeeping()

    def on_evaluate(self, args, state, control, **kwargs):
        self._after_bookkeeping()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and "loss" in logs and self._waiting + self._computing > 0:
            logs["data_wait_fraction"] = round(self._waiting / (self._waiting + self._computing), 4)
            self._waiting = self._computing = 0.0
        self._after_bookkeeping()


class RichProgressCallback(TrainerCallback):
    """One live progress line: step, loss (GRPO: reward), samples/s, GPU memory, ETA."""

    SHOWN = {
        "loss": "loss {:.4f}",
        "reward": "reward {:.3f}",
        "eval_loss": "eval_loss {:.4f}",
        "rewards/accuracies": "reward acc {:.2f}",
        "rewards/margins": "margin {:.3f}",
        "samples_per_second": "{:.2f} samples/s",
        "generated_tokens_per_second": "{:.0f} generated tokens/s",
        # GRPO's phases, seconds a step: a step that reuses its generation batch shows sample
        # 0.0 s (and the generated tokens/s of the last step that sampled).
        "sample_seconds": "sample {:.1f} s",
        "reward_seconds": "reward {:.1f} s",
        "train_seconds": "train {:.1f} s",
        "peak_gpu_memory_gib": "{:.1f} GiB",
    }

    def __init__(self, console):
        self.console = console
        self.latest: dict[str, float] = {}
        self.progress = None
        self.task = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=state.max_steps, completed=state.global_step, status=""
        )

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is None or not logs:
            return
        # Logs come in several kinds (train step, eval, end-of-training summary): keep the last
        # value of each shown metric so a log without loss does not blank the line. None is a
        # metric with no value this time (GRPO's reward in a step that no reward scored).
        for key in self.SHOWN:
            if logs.get(key) is not None:
                self.latest[key] = logs[key]
        parts = [
            template.format(self.latest[key])
            for key, template in self.SHOWN.items()
            if key in self.latest
        ]
        self.progress.update(self.task, status=" · ".join(parts))

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class GracefulInterruptCallback(TrainerCallback):
    """First Ctrl-C: finish the current step, save a checkpoint, stop cleanly. Second: abort.

    The trainer saves through its normal path, so `--resume` continues from that checkpoint.
    """

    def __init__(self, console):
        self.console = console
        self.interrupted = False
        self._previous_handler = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._previous_handler = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        self.console.print(
            "[yellow]Ctrl-C: saving a checkpoint and the adapter after this step "
            "(press again to abort without saving)[/]"
        )

    def on_step_end(self, args, state, control, **kwargs):
        if self.interrupted:
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        self.restore_handler()

    def restore_handler(self) -> None:
        """Give Ctrl-C back to whoever had it. Also called after `trainer.train()` raised: a
        training that ends in an exception never reaches on_train_end, and a notebook would
        otherwise keep swallowing its first Ctrl-C."""
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)
            self._previous_handler = None


class ModelInputsCallback(TrainerCallback):
    """Records the tensor inputs (name -> shape) of the first training forward of the VLM (in
    training mode, with gradients: not GRPO's generation, nor a reference pass).

    Vision training has silently lost images before (TRL's DPO once dropped Qwen2-VL's
    image_grid_thw), so the summary shows what the model itself received: for Qwen
    `pixel_values` and `image_grid_thw`, for Llama 3.2 Vision `pixel_values`, `aspect_ratio_ids`
    and `cross_attention_mask`. The hook sits on the VLM inside PEFT, after every wrapper.
    """

    def __init__(self):
        self.first_inputs: dict[str, list[int]] | None = None
        self._handle = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        import torch

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        vlm = getattr(base, "model", base)

        def record(module, positional, keywords):
            if self.first_inputs is None and module.training and torch.is_grad_enabled():
                self.first_inputs = {
                    name: list(value.shape)
                    for name, value in keywords.items()
                    if isinstance(value, torch.Tensor)
                }

        self._handle = vlm.register_forward_pre_hook(record, with_kwargs=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
