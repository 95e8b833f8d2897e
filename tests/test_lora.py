"""LoRA target selection: the hf backend picks exactly the modules Unsloth picks."""

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


# Where each family keeps its towers and the connector between them (nn.Linear leaves).
PARTS = {
    "tiny-smolvlm": ("model.vision_model.", "model.text_model.", "model.connector."),
    "tiny-smolvlm2": ("model.vision_model.", "model.text_model.", "model.connector."),
    "tiny-pixtral": (
        "model.vision_tower.", "model.language_model.", "model.multi_modal_projector.",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(PARTS))
def test_switches_split_the_new_families_and_leave_the_connector_out(name, tiny_ref):
    """The vision/language and attention/MLP switches pick whole groups; the connector (SmolVLM's
    modality projection, Pixtral's multi-modal projector) and lm_head are never adapted (as
    Unsloth): train them fully with --modules-to-save connector / multi_modal_projector."""
    from transformers import AutoModelForImageTextToText

    from vlm_unsloth.models.lora import linear_leaf_names

    model = AutoModelForImageTextToText.from_pretrained(tiny_ref(name).path)
    vision, language, connector = PARTS[name]
    linear = linear_leaf_names(model)
    assert any(n.startswith(connector) for n in linear)  # there is a Linear connector...
    everything = select_lora_targets(model, LoraArgs())
    assert not any(n.startswith(connector) or n == "lm_head" for n in everything)  # ...left out
    towers = [n for n in linear if n.startswith((vision, language)) and ".layers." in n]
    assert everything == towers  # every Linear of both towers' layer stacks
    only_vision = select_lora_targets(model, LoraArgs(finetune_language_layers=False))
    assert only_vision and all(n.startswith(vision) for n in only_vision)
    only_language = select_lora_targets(model, LoraArgs(finetune_vision_layers=False))
    assert set(only_vision) | set(only_language) == set(everything)
    attention = select_lora_targets(model, LoraArgs(finetune_mlp_modules=False))
    mlp = select_lora_targets(model, LoraArgs(finetune_attention_modules=False))
    assert attention and mlp and not set(attention) & set(mlp)
    assert set(attention) | set(mlp) == set(everything)
    assert all(n.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj", "o_proj", "out_proj")
               for n in attention)  # fmt: skip


@pytest.mark.parametrize("name", list(PARTS))
def test_modules_to_save_trains_the_connector_fully(name, tiny_ref):
    from vlm_unsloth.models.device import DeviceSetup
    from vlm_unsloth.models.hf_backend import add_lora, load

    setup = DeviceSetup(backend="hf", device="cpu", dtype="float32", why="test")
    ref = tiny_ref(name)
    model, _ = load(
        ref.path, family=ref.family, quantization="16bit", setup=setup, max_seq_length=512
    )
    connector = PARTS[name][2].removeprefix("model.").rstrip(".")
    peft_model = add_lora(
        model, LoraArgs(modules_to_save=[connector]), family=ref.family, seed=0, adapter=None,
        gradient_checkpointing=False,
    )  # fmt: skip
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert any(connector in n and "modules_to_save" in n for n in trainable)
    assert all("lora_" in n or "modules_to_save" in n for n in trainable)


# Qwen3-VL and Gemma 3: (vision tower's block stack, language model's layer stack, projector).
# Qwen3-VL's projector is the merger plus one DeepStack merger per deepstack index (Linear
# layers outside any attention/MLP, so never adapted, as by Unsloth); Gemma 3's is a bare
# parameter matrix (and an RMSNorm): no Linear at all, so LoRA cannot reach it.
STACKS = {
    "tiny-qwen3-vl": (
        "model.visual.blocks.", "model.language_model.layers.",
        ("model.visual.merger.", "model.visual.deepstack_merger_list."), "merger",
    ),
    "tiny-gemma3": (
        "model.vision_tower.encoder.layers.", "model.language_model.layers.",
        ("model.multi_modal_projector.",), "multi_modal_projector",
    ),
    # Qwen3.5: no DeepStack, so the merger alone; its Gated DeltaNet projections (in_proj_*,
    # out_proj under linear_attn) count as attention, as Unsloth's "attn" tag has them.
    "tiny-qwen3.5": (
        "model.visual.blocks.", "model.language_model.layers.",
        ("model.visual.merger.",), "merger",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(STACKS))
def test_qwen3_vl_and_gemma3_adapt_both_towers_and_never_the_projector(name, tiny_ref):
    from transformers import AutoModelForImageTextToText

    from vlm_unsloth.models.lora import linear_leaf_names

    model = AutoModelForImageTextToText.from_pretrained(tiny_ref(name).path)
    vision, language, projector, _ = STACKS[name]
    linear = linear_leaf_names(model)
    everything = select_lora_targets(model, LoraArgs())
    towers = [n for n in linear if n.startswith((vision, language))]
    assert everything == towers and any(n.startswith(vision) for n in everything)
    assert not any(n.startswith(projector) or n == "lm_head" for n in everything)
    projector_linear = [n for n in linear if n.startswith(projector)]
    if name == "tiny-gemma3":
        assert projector_linear == []
        assert isinstance(model.model.multi_modal_projector.mm_input_projection_weight,
                          torch.nn.Parameter)  # fmt: skip
    elif name == "tiny-qwen3-vl":  # the merger and two DeepStack mergers, two Linear layers each
        assert len(projector_linear) == 6
    else:
        assert len(projector_linear) == 2
        gated_delta_net = {"in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a", "out_proj"}
        attention_only = select_lora_targets(model, LoraArgs(finetune_mlp_modules=False))
        adapted = {n.rsplit(".", 1)[1] for n in attention_only if ".linear_attn." in n}
        assert adapted == gated_delta_net
    only_vision = select_lora_targets(model, LoraArgs(finetune_language_layers=False))
    only_language = select_lora_targets(model, LoraArgs(finetune_vision_layers=False))
    assert all(n.startswith(vision) for n in only_vision)
    assert all(n.startswith(language) for n in only_language)
    assert set(only_vision) | set(only_language) == set(everything)
    attention = select_lora_targets(model, LoraArgs(finetune_mlp_modules=False))
    mlp = select_lora_targets(model, LoraArgs(finetune_attention_modules=False))
    assert attention and mlp and not set(attention) & set(mlp)
    assert set(attention) | set(mlp) == set(everything)


@pytest.mark.parametrize("name", list(STACKS))
def test_modules_to_save_trains_the_qwen3_vl_and_gemma3_projector(name, tiny_ref, tiny_processor):
    """--modules-to-save merger / multi_modal_projector: a full trainable copy that the loss
    reaches (Gemma's bare projector matrix included), saved with the adapter."""
    from test_tiny import _record

    from vlm_unsloth.data.collate import SftCollator
    from vlm_unsloth.models.device import DeviceSetup
    from vlm_unsloth.models.hf_backend import add_lora, load

    setup = DeviceSetup(backend="hf", device="cpu", dtype="float32", why="test")
    ref = tiny_ref(name)
    model, _ = load(
        ref.path, family=ref.family, quantization="16bit", setup=setup, max_seq_length=512
    )
    module = STACKS[name][3]
    peft_model = add_lora(
        model, LoraArgs(modules_to_save=[module]), family=ref.family, seed=0, adapter=None,
        gradient_checkpointing=False,
    )  # fmt: skip
    saved = {n: p for n, p in peft_model.named_parameters() if p.requires_grad and
             "modules_to_save" in n}  # fmt: skip
    assert saved and all(module in n for n in saved)
    collator = SftCollator(tiny_processor(name), ref.family, max_side=768, train_on_prompt=False)
    peft_model(**collator([_record("red"), _record("blue")])).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in saved.values())
