"""LoRA target selection: the hf backend picks exactly the modules Unsloth picks (every family,
every switch mix); Qwen2-VL's parts by name; nothing to train is refused; what is particular to
Qwen3-VL's, Gemma 3's and Qwen3.5's projectors and layers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import TINY_MODELS

from vlm_unsloth.errors import ConfigError
from vlm_unsloth.models.lora import LoraArgs, select_lora_targets

# Runs in its own process: importing unsloth patches transformers and must stay out of this one.
# On CPU `import unsloth` enters its CPU mode, where unsloth_zoo's regex builder still works.
_UNSLOTH_SELECTION = r"""
import itertools, json, re, sys
import unsloth
from unsloth_zoo.peft_utils import get_peft_regex
from transformers import AutoModelForImageTextToText
from vlm_unsloth.models.lora import linear_leaf_names
from vlm_unsloth.models.loading import resolve_model
result = {}
for name in sys.argv[1:]:
    model = AutoModelForImageTextToText.from_pretrained(resolve_model(name).path)
    for mix in itertools.product([True, False], repeat=4):
        if not (mix[0] or mix[1]) or not (mix[2] or mix[3]):
            continue
        regex = get_peft_regex(model, *mix)
        result[f"{name}:{mix}"] = [n for n in linear_leaf_names(model) if re.fullmatch(regex, n)]
print("RESULT" + json.dumps(result))
"""


def test_selection_matches_unsloth_for_every_family_and_flag_mix(tiny_ref):
    from itertools import product

    from transformers import AutoModelForImageTextToText

    proc = subprocess.run(
        [sys.executable, "-c", _UNSLOTH_SELECTION, *TINY_MODELS],
        capture_output=True,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = json.loads(proc.stdout.split("RESULT", 1)[1])
    compared = 0
    for name in TINY_MODELS:
        model = AutoModelForImageTextToText.from_pretrained(tiny_ref(name).path)
        for mix in product([True, False], repeat=4):
            if not (mix[0] or mix[1]) or not (mix[2] or mix[3]):
                continue
            args = LoraArgs(
                finetune_vision_layers=mix[0],
                finetune_language_layers=mix[1],
                finetune_attention_modules=mix[2],
                finetune_mlp_modules=mix[3],
            )
            if mix[:3] == (True, False, True) and not mix[3]:
                family = tiny_ref(name).family
                if not family.vision_tower_has_linear_layers:
                    # Vision and attention alone on Gemma 3n's convolutions: nothing matches, and
                    # Unsloth falls back to every attention layer of the model (language and
                    # audio); we refuse in one line instead, on both backends.
                    with pytest.raises(ConfigError, match="no linear layer"):
                        select_lora_targets(model, args)
                    compared += 1
                    continue
            ours = select_lora_targets(model, args)
            assert ours == theirs[f"{name}:{mix}"], (name, mix)
            assert ours  # every allowed mix adapts something
            compared += 1
    assert compared == len(TINY_MODELS) * 9


def test_switches_select_the_expected_parts(tiny_ref):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_ref("tiny-qwen2-vl").path)
    vision_attention = select_lora_targets(
        model,
        LoraArgs(finetune_language_layers=False, finetune_mlp_modules=False),
    )
    assert vision_attention == [
        "model.visual.blocks.0.attn.qkv",
        "model.visual.blocks.0.attn.proj",
        "model.visual.blocks.1.attn.qkv",
        "model.visual.blocks.1.attn.proj",
    ]
    language = select_lora_targets(model, LoraArgs(finetune_vision_layers=False))
    assert all(n.startswith("model.language_model.layers.") for n in language)
    assert len(language) == 2 * 7  # q k v o gate up down, two layers
    everything = select_lora_targets(model, LoraArgs())
    assert "lm_head" not in everything and not any("merger" in n for n in everything)
    only_q = select_lora_targets(model, LoraArgs(target_modules=["q_proj"]))
    assert only_q == ["model.language_model.layers.0.self_attn.q_proj",
                      "model.language_model.layers.1.self_attn.q_proj"]  # fmt: skip


def test_nothing_to_train_is_refused_with_every_problem_named(tiny_ref):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_ref("tiny-qwen2-vl").path)
    args = LoraArgs(
        lora_r=0,
        finetune_vision_layers=False,
        finetune_language_layers=False,
    )
    with pytest.raises(ConfigError) as error:
        select_lora_targets(model, args)
    message = str(error.value)
    assert "--lora-r 0" in message and "--no-finetune-language-layers" in message
    assert "\n" not in message


# (The switches split every family's towers and leave its connector out, and --modules-to-save
# trains the connector: tests/test_every_family.py.) What is particular to a family's projector:


def test_qwen3_vl_deepstack_mergers_and_gemma3_bare_projector_are_never_adapted(tiny_ref):
    """Qwen3-VL's projector is the merger plus one DeepStack merger per deepstack index (Linear
    layers outside any attention/MLP, so never adapted, as by Unsloth); Gemma 3's is a bare
    parameter matrix (and an RMSNorm): no Linear at all, so LoRA cannot reach it (train it with
    --modules-to-save multi_modal_projector)."""
    from transformers import AutoModelForImageTextToText

    from vlm_unsloth.models.lora import linear_leaf_names

    qwen3_vl = AutoModelForImageTextToText.from_pretrained(tiny_ref("tiny-qwen3-vl").path)
    projector = ("model.visual.merger.", "model.visual.deepstack_merger_list.")
    linear = [n for n in linear_leaf_names(qwen3_vl) if n.startswith(projector)]
    assert len(linear) == 6  # the merger and two DeepStack mergers, two Linear layers each
    assert not set(linear) & set(select_lora_targets(qwen3_vl, LoraArgs()))
    gemma3 = AutoModelForImageTextToText.from_pretrained(tiny_ref("tiny-gemma3").path)
    assert not [n for n in linear_leaf_names(gemma3) if n.startswith("model.multi_modal_proj")]
    assert isinstance(gemma3.model.multi_modal_projector.mm_input_projection_weight,
                      torch.nn.Parameter)  # fmt: skip


def test_qwen3_5_gated_delta_net_projections_count_as_attention(tiny_ref):
    """Qwen3.5: no DeepStack, so the merger alone (two Linear layers); its Gated DeltaNet
    projections (in_proj_*, out_proj under linear_attn) count as attention, as Unsloth's "attn"
    tag has them."""
    from transformers import AutoModelForImageTextToText

    from vlm_unsloth.models.lora import linear_leaf_names

    model = AutoModelForImageTextToText.from_pretrained(tiny_ref("tiny-qwen3.5").path)
    assert len([n for n in linear_leaf_names(model) if n.startswith("model.visual.merger.")]) == 2
    gated_delta_net = {"in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a", "out_proj"}
    attention_only = select_lora_targets(model, LoraArgs(finetune_mlp_modules=False))
    adapted = {n.rsplit(".", 1)[1] for n in attention_only if ".linear_attn." in n}
    assert adapted == gated_delta_net


def test_hf_backend_keeps_the_modules_a_family_names_in_16_bit_when_quantized(tiny_ref):
    """PEFT's k-bit preparation casts every 16-bit parameter to float32; a family's
    `hf_keeps_16bit` modules (Gemma 3n's and Gemma 4's per-layer embedding tables, gigabytes in
    float32) stay as loaded and frozen, the rest is cast as before."""
    import dataclasses

    from vlm_unsloth.models import hf_backend
    from vlm_unsloth.models.device import DeviceSetup

    ref = tiny_ref("tiny-qwen2-vl")
    setup = DeviceSetup(backend="hf", device="cpu", dtype="bfloat16", why="test")

    def prepared(family):
        model, _ = hf_backend.load(
            ref.path, family=family, quantization="4bit", setup=setup, max_seq_length=512
        )
        model = hf_backend.add_lora(
            model, LoraArgs(), family=family, seed=0, adapter=None, gradient_checkpointing=True
        )
        return dict(model.named_parameters())

    kept = dataclasses.replace(ref.family, hf_keeps_16bit=("embed_tokens",))
    for family, embedding_dtype in ((ref.family, torch.float32), (kept, torch.bfloat16)):
        parameters = prepared(family)
        embedding = next(p for n, p in parameters.items() if n.endswith("embed_tokens.weight"))
        norm = next(p for n, p in parameters.items() if n.endswith("norm.weight"))
        assert embedding.dtype == embedding_dtype and not embedding.requires_grad
        assert norm.dtype == torch.float32
        assert any(p.requires_grad for n, p in parameters.items() if "lora_" in n)
