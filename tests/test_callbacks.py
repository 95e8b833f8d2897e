"""The trainer callbacks' arithmetic, with a scripted clock (no dependence on this machine's
speed): the share of time spent waiting for data, and the throughput in metrics.jsonl. And the
progress line, given a metric without a value."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest
from rich.console import Console

from vlm_unsloth.train import callbacks
from vlm_unsloth.train.callbacks import DataWaitCallback, MetricsCallback, RichProgressCallback


@pytest.fixture
def clock(monkeypatch):
    """clock.now = t sets what time.perf_counter() returns inside callbacks.py."""
    state = SimpleNamespace(now=0.0)
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: state.now)
    return state


def test_data_wait_is_the_gap_before_each_step_without_the_bookkeeping(clock):
    wait = DataWaitCallback()
    args = state = control = None
    # step 1: computes 0.0-1.0; step 2 waits 1.0-4.0 for its batch and computes 4.0-5.0
    clock.now = 0.0
    wait.on_step_begin(args, state, control)
    clock.now = 1.0
    wait.on_step_end(args, state, control)
    clock.now = 4.0
    wait.on_step_begin(args, state, control)
    clock.now = 5.0
    wait.on_step_end(args, state, control)
    logs = {"loss": 1.0}
    wait.on_log(args, state, control, logs=logs)
    assert logs["data_wait_fraction"] == pytest.approx(3 / 5)
    # Saving takes 10 s between steps: not data waiting. Then 1 s of real waiting, 1 s of compute.
    clock.now = 15.0
    wait.on_save(args, state, control)
    clock.now = 16.0
    wait.on_step_begin(args, state, control)
    clock.now = 17.0
    wait.on_step_end(args, state, control)
    logs = {"loss": 0.9}
    wait.on_log(args, state, control, logs=logs)
    assert logs["data_wait_fraction"] == pytest.approx(1 / 2)
    logs = {"eval_loss": 0.8}  # an eval log carries no training share
    wait.on_log(args, state, control, logs=logs)
    assert "data_wait_fraction" not in logs


def test_samples_per_second_covers_the_steps_since_the_last_log(clock, tmp_path, monkeypatch):
    monkeypatch.setattr(callbacks, "peak_gpu_memory_gib", lambda: None)
    metrics = MetricsCallback(tmp_path)
    args = SimpleNamespace(
        per_device_train_batch_size=2, gradient_accumulation_steps=4, world_size=1
    )
    state = SimpleNamespace(
        global_step=0, num_input_tokens_seen=0, epoch=0.0, is_world_process_zero=True
    )
    clock.now = 100.0
    metrics.on_train_begin(args, state, None)
    clock.now = 104.0
    state.global_step, state.num_input_tokens_seen, state.epoch = 2, 4000, 0.5
    metrics.on_log(args, state, None, logs={"loss": 1.5})
    (line,) = (tmp_path / "metrics.jsonl").read_text().splitlines()
    logged = json.loads(line)
    assert logged["samples_per_second"] == pytest.approx(2 * 8 / 4)  # 2 steps of 8 in 4 s
    assert logged["tokens_per_second"] == pytest.approx(1000)
    assert logged["step"] == 2 and logged["loss"] == 1.5


def test_the_progress_line_keeps_a_metric_that_was_logged_without_a_value():
    """TRL logs GRPO's reward as None in a step that no reward scored."""
    progress = RichProgressCallback(Console(file=io.StringIO(), width=200))
    state = SimpleNamespace(max_steps=3, global_step=0, is_world_process_zero=True)
    progress.on_train_begin(None, state, None)
    try:
        progress.on_log(None, state, None, logs={"loss": 0.5, "reward": 0.25})
        progress.on_log(None, state, None, logs={"loss": 0.0, "reward": None})
        status = progress.progress.tasks[0].fields["status"]
    finally:
        progress.on_train_end(None, state, None)
    assert status == "loss 0.0000 · reward 0.250"
