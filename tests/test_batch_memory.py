"""--batch-size auto, --effective-batch-size and out-of-memory recovery, on the tiny models (CPU).

A CPU cannot run out of GPU memory, so these tests make the model's forward raise
torch.OutOfMemoryError for batches above a size — the real search and split code paths then run
exactly as on a GPU (where tests/test_gpu.py and scripts/bench.py measure them).
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import TrainerCallback

from vlm_unsloth.config import DataArgs, ModelArgs, TrainArgs, parse_args
from vlm_unsloth.errors import ConfigError
from vlm_unsloth.models.lora import LoraArgs
from vlm_unsloth.perf.oom import split_evenly
from vlm_unsloth.train.dpo import DpoArgs, DpoTrainArgs, train_dpo
from vlm_unsloth.train.sft import train_sft


class GradientRecorder(TrainerCallback):
    """The trainable parameters' gradients just before each optimizer step: what a split batch
    promises to reproduce. (Weights after an Adam step would amplify rounding: a near-zero
    gradient that changes sign moves a weight by about the learning rate.)"""

    def __init__(self):
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = {
            n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None
        }
        self.steps.append(grads)


def assert_same_gradients(expected: GradientRecorder, got: GradientRecorder) -> None:
    assert len(expected.steps) == len(got.steps) > 0
    for step, (want, have) in enumerate(zip(expected.steps, got.steps, strict=True)):
        assert want.keys() == have.keys()
        scale = max(g.abs().max().item() for g in want.values())
        assert scale > 0, f"step {step + 1}: no gradient reached the adapter"
        for name in want:
            # Summing the same per-token terms in another grouping: float32 rounding only.
            torch.testing.assert_close(
                have[name], want[name], rtol=1e-3, atol=1e-5 * scale, msg=f"step {step + 1} {name}"
            )


def _sft(output, callbacks=(), model="tiny-qwen2-vl", **train):
    return train_sft(
        ModelArgs(model=model, backend="hf"),
        LoraArgs(lora_r=8, lora_alpha=16, lora_dropout=0.0),
        DataArgs(max_samples=32),
        TrainArgs(output_dir=str(output), **{"max_steps": 3, "learning_rate": 1e-3, **train}),
        extra_callbacks=list(callbacks),
    )


def test_batch_size_flag_takes_a_number_or_auto():
    (train,) = parse_args([TrainArgs], ["--batch-size", "auto", "--effective-batch-size", "32"])
    assert train.auto_batch_size and train.effective_batch_size == 32
    (train,) = parse_args([TrainArgs], ["--batch-size", "8"])
    assert train.batch_size == 8 and train.samples_per_step() == 32
    with pytest.raises(ConfigError, match="--batch-size many: must be a number >= 1 or auto"):
        parse_args([TrainArgs], ["--batch-size", "many"])


@pytest.mark.slow
def test_auto_batch_size_takes_the_largest_batch_that_fits(tmp_path, memory_limit):
    calls = memory_limit(rows=2)
    result = _sft(tmp_path / "run", batch_size="auto", effective_batch_size=8)
    # Candidates 1, 2, 4, 8 (divisors of 8): 4 runs out of memory, so 2 x 4 keeps 8 per step.
    assert (result.summary["batch_size"], result.summary["grad_accum"]) == (2, 4)
    assert calls["oom"] == 1  # only the probe of 4: training itself never ran out
    resolved = (tmp_path / "run" / "run_config.yaml").read_text()
    assert "batch_size: 2" in resolved and "grad_accum: 4" in resolved
    assert result.summary["global_step"] == 3


def test_resumed_auto_run_keeps_the_batch_it_measured(tmp_path, memory_limit, monkeypatch):
    memory_limit(rows=2)
    _sft(tmp_path / "run", batch_size="auto", effective_batch_size=8, max_steps=2, save_steps=2)
    monkeypatch.undo()  # more memory now: a fresh probe would pick 8, the resumed run must not
    resumed = _sft(
        tmp_path / "run", batch_size="auto", effective_batch_size=8, max_steps=4, resume=True
    )
    assert (resumed.summary["batch_size"], resumed.summary["grad_accum"]) == (2, 4)
    assert resumed.summary["global_step"] == 4


@pytest.mark.slow
def test_effective_batch_size_sets_the_accumulation(tmp_path):
    result = _sft(tmp_path / "run", batch_size=2, effective_batch_size=6, max_steps=1)
    assert (result.summary["batch_size"], result.summary["grad_accum"]) == (2, 3)
    with pytest.raises(ConfigError, match="not a multiple of batch size 4"):
        _sft(tmp_path / "bad", batch_size=4, effective_batch_size=6, max_steps=1)


@pytest.mark.slow
def test_out_of_memory_mid_training_splits_the_batch_and_loses_nothing(tmp_path, memory_limit):
    # Plain SGD: each step is linear in its gradient, so equal gradients keep equal trajectories.
    sgd = dict(batch_size=4, grad_accum=2, optim="sgd", weight_decay=0.0)
    plain_grads, split_grads = GradientRecorder(), GradientRecorder()
    plain = _sft(tmp_path / "plain", [plain_grads], **sgd)

    calls = memory_limit(rows=2)
    split = _sft(tmp_path / "split", [split_grads], **sgd)
    assert calls["oom"] == 1  # once; every later micro-batch runs as two halves of 2
    assert split.summary["global_step"] == plain.summary["global_step"] == 3
    events = [
        json.loads(line)
        for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
        if '"event"' in line
    ]
    # Step 1, the step it happened in (the one a resumed run would log again).
    assert events == [{"step": 1, "event": "oom_split", "pieces": 2}]
    # Same samples, same optimizer steps: every step's gradient is the one the run without the
    # error computed, and so is its loss.
    assert_same_gradients(plain_grads, split_grads)
    losses = [
        [r["loss"] for r in _logs(tmp_path / name) if "loss" in r] for name in ("plain", "split")
    ]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def _logs(output) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_dpo_splits_its_batch_with_each_half_weighted_by_its_pairs(tmp_path, memory_limit):
    def run(output, gradients):
        return train_dpo(
            ModelArgs(model="tiny-qwen2-vl", backend="hf"),
            LoraArgs(lora_r=8, lora_alpha=16, lora_dropout=0.0),
            DataArgs(max_samples=12),
            DpoTrainArgs(
                output_dir=str(output), max_steps=2, batch_size=3, grad_accum=1,
                learning_rate=1e-3, warmup_ratio=0.0, optim="sgd", weight_decay=0.0,
            ),
            DpoArgs(accuracy_rows=4),
            extra_callbacks=[gradients],
        )  # fmt: skip

    plain_grads, split_grads = GradientRecorder(), GradientRecorder()
    run(tmp_path / "plain", plain_grads)
    # DPO's forward holds chosen and rejected rows: 3 pairs are 6 rows, so 2 pairs (4) fit.
    calls = memory_limit(rows=4)
    run(tmp_path / "split", split_grads)
    assert calls["oom"] >= 1
    # Halves of 2 and 1 pairs, weighted 2/3 and 1/3: the gradient of the mean over 3 pairs.
    assert_same_gradients(plain_grads, split_grads)


def test_split_evenly_keeps_order_and_sizes_within_one():
    assert split_evenly([1, 2, 3, 4, 5], 2) == [[1, 2, 3], [4, 5]]
    assert split_evenly([1, 2, 3], 4) == [[1], [2], [3]]
