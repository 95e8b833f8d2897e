"""optimizer.py: bitsandbytes' 8-bit optimizers, same updates, no per-parameter GPU stalls."""

import bitsandbytes as bnb
import bitsandbytes.utils
import pytest
import torch
from transformers import TrainerCallback, TrainingArguments

from vlm_unsloth.config import DataArgs, ModelArgs, TrainArgs
from vlm_unsloth.models.lora import LoraArgs
from vlm_unsloth.perf.optimizer import optimizer_cls_and_kwargs, without_per_parameter_syncs
from vlm_unsloth.train.sft import train_sft


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    # Sizes like LoRA A/B matrices, above bitsandbytes' 4096-element floor for 8-bit states.
    generator = torch.Generator().manual_seed(seed)
    shapes = [(16, 512), (512, 16), (16, 300), (300, 16)]
    return [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in shapes]


def _train(optimizer_cls, steps: int = 3) -> list[torch.Tensor]:
    params = _params()
    optimizer = optimizer_cls(params, lr=1e-2)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for param in params:
            param.grad = torch.randn(param.shape, generator=generator)
        optimizer.step()
    return [param.detach().clone() for param in params]


@pytest.fixture
def sync_calls(monkeypatch) -> list[torch.Tensor]:
    """Every bitsandbytes sync_gpu call (theirs and ours), recorded instead of run."""
    calls = []
    monkeypatch.setattr(bnb.optim.optimizer, "sync_gpu", calls.append)
    monkeypatch.setattr(bitsandbytes.utils, "sync_gpu", calls.append)
    return calls


@pytest.mark.filterwarnings("ignore:Paged optimizers are not supported on CPU")
@pytest.mark.parametrize("optimizer_cls", [bnb.optim.AdamW8bit, bnb.optim.PagedAdamW8bit])
def test_same_updates_as_bitsandbytes_with_at_most_one_sync_per_step(optimizer_cls, sync_calls):
    expected = _train(optimizer_cls)
    theirs = len(sync_calls)
    sync_calls.clear()
    got = _train(without_per_parameter_syncs(optimizer_cls))
    for want, have in zip(expected, got, strict=True):
        assert torch.equal(want, have)
    assert not torch.equal(got[0], _params()[0])  # the parameters did move
    paged = optimizer_cls is bnb.optim.PagedAdamW8bit
    assert theirs == 3 * (4 + paged)  # one per parameter (+ one per paged step)
    assert len(sync_calls) == 3 * paged


def test_other_optimizers_are_left_alone():
    assert without_per_parameter_syncs(torch.optim.AdamW) is torch.optim.AdamW


def test_the_trainer_gets_the_optimizer_transformers_would_build(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), optim="paged_adamw_8bit", use_cpu=True)
    optimizer_cls, kwargs = optimizer_cls_and_kwargs(args, None)
    assert issubclass(optimizer_cls, bnb.optim.AdamW)
    assert optimizer_cls is not bnb.optim.AdamW
    assert kwargs["optim_bits"] == 8 and kwargs["is_paged"] is True
    args = TrainingArguments(output_dir=str(tmp_path), optim="adamw_torch", use_cpu=True)
    assert optimizer_cls_and_kwargs(args, None)[0] is torch.optim.AdamW


class _RecordOptimizer(TrainerCallback):
    def __init__(self):
        self.optimizer = None

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        self.optimizer = optimizer


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Paged optimizers are not supported on CPU")
def test_training_steps_with_the_unsynced_paged_optimizer(tmp_path):
    recorder = _RecordOptimizer()
    result = train_sft(
        ModelArgs(model="tiny-qwen2-vl", backend="hf"),
        LoraArgs(lora_r=8),
        DataArgs(max_samples=8),
        TrainArgs(
            output_dir=str(tmp_path / "run"),
            max_steps=2,
            batch_size=2,
            grad_accum=1,
            optim="paged_adamw_8bit",
            learning_rate=1e-2,
        ),
        extra_callbacks=[recorder],
    )
    assert result.summary["global_step"] == 2
    optimizer = getattr(recorder.optimizer, "optimizer", recorder.optimizer)  # accelerate wraps it
    assert isinstance(optimizer, bnb.optim.AdamW) and type(optimizer) is not bnb.optim.AdamW
    assert optimizer.is_paged and optimizer.state  # it stepped, with 8-bit states
