"""Precision per GPU and family: `--precision auto` never computes Gemma 3 in float16.

A T4 (no bf16) is simulated by answering torch's two device questions; nothing else is mocked.
Unsloth lists gemma3 among the models whose activations overflow float16 and computes it in
float32 on such GPUs (unsloth_zoo/model_lists.py FORCE_FLOAT32); the hf backend would run
whatever dtype it is given, so the choice is made here, for both backends.
"""

from __future__ import annotations

import pytest
import torch

# Imported before a GPU is simulated: importing transformers' vision code asks CUDA for real.
import vlm_unsloth.train.sft  # noqa: F401
from vlm_unsloth.cli import train_sft_main
from vlm_unsloth.errors import ConfigError
from vlm_unsloth.families import FAMILIES
from vlm_unsloth.models.device import choose_device


@pytest.fixture
def gpu(monkeypatch):
    """gpu(bf16=...) makes this process see a CUDA GPU with or without bf16."""

    def simulate(*, bf16: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)

    return simulate


@pytest.mark.parametrize("backend", ["hf", "unsloth"])
def test_auto_on_a_t4_is_fp16_except_for_families_that_overflow_it(gpu, backend):
    gpu(bf16=False)
    for key in ("qwen2-vl", "qwen3-vl", "llama-3.2-vision"):
        assert choose_device(backend, "test", "auto", FAMILIES[key]).dtype == "float16"
    assert choose_device(backend, "test", "auto").dtype == "float16"  # family not known
    gemma = choose_device(backend, "test", "auto", FAMILIES["gemma3"])
    assert (gemma.device, gemma.dtype) == ("cuda", "float32")
    assert "overflow float16" in gemma.why and "fp32" in gemma.why
    qwen3_5 = choose_device(backend, "test", "auto", FAMILIES["qwen3.5"])
    assert qwen3_5.dtype == "float32" and "NaN gradients in float16" in qwen3_5.why
    gpu(bf16=True)  # an A100/H100: bf16 for every family
    assert choose_device(backend, "test", "auto", FAMILIES["gemma3"]).dtype == "bfloat16"


def test_fp16_for_gemma3_is_refused_with_the_reason(gpu):
    gpu(bf16=False)
    with pytest.raises(ConfigError) as error:
        choose_device("hf", "test", "fp16", FAMILIES["gemma3"])
    message = str(error.value)
    assert "--precision fp16" in message and "overflow float16" in message
    assert "\n" not in message
    assert choose_device("hf", "test", "fp32", FAMILIES["gemma3"]).dtype == "float32"
    assert choose_device("hf", "test", "fp16", FAMILIES["qwen3-vl"]).dtype == "float16"


def test_train_sft_on_a_t4_refuses_fp16_for_gemma3_in_one_line(gpu, tiny_ref, tmp_path, capsys):
    tiny_ref("tiny-gemma3")  # built before this process pretends to have a GPU
    capsys.readouterr()  # (importing transformers to build it may print library notices)
    gpu(bf16=False)
    code = train_sft_main(
        ["--model", "tiny-gemma3", "--backend", "hf", "--precision", "fp16",
         "--output-dir", str(tmp_path / "run")]
    )  # fmt: skip
    assert code != 0
    err = capsys.readouterr().err.strip()
    assert "gemma3 cannot compute in float16" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()  # stopped before anything was written


def test_why_gemma3_needs_float32(tiny_ref):
    """The mechanism behind Unsloth's rule, on the tiny Gemma 3: residual activations past
    float16's 65,504 (trained Gemma 3 weights produce them; here the post-norm scales are set to
    make them) turn into inf/NaN in float16 and stay finite in float32."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_ref("tiny-gemma3").path)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "language_model" in name and name.endswith(
                ("post_attention_layernorm.weight", "post_feedforward_layernorm.weight")
            ):
                parameter.fill_(20_000.0)  # Gemma's RMSNorm scales by (1 + weight)
    ids = torch.arange(5, 45).unsqueeze(0)
    with torch.no_grad():
        full = model(input_ids=ids).logits
        half = model.to(torch.float16)(input_ids=ids).logits
    assert torch.isfinite(full).all()
    assert not torch.isfinite(half).all()
