"""The unsloth backend — the ONLY module that imports unsloth.

Unsloth patches transformers, TRL and PEFT when imported and wants to come first, so
`import_unsloth()` runs as soon as the backend is resolved, before the rest of the run imports
them. It only works on an NVIDIA GPU (on CPU its FastVisionModel raises NotImplementedError), so
CPU tests never reach this module; the GPU tests exercise it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vlm_unsloth import distributed
from vlm_unsloth.data.collate import UnslothRecordCollator
from vlm_unsloth.data.image_tokens import image_cap
from vlm_unsloth.families import Family
from vlm_unsloth.models.device import DeviceSetup
from vlm_unsloth.models.lora import LoraArgs, select_lora_targets

GRPO_CROSS_ATTENTION_IMAGES = False
"""Unsloth 2026.10.9 rewrites GRPOTrainer's log-probability and loss path, and its vision inputs
(unsloth/models/rl_replacements.py, `_unsloth_grpo_vision_inputs`) have no aspect ratios or
cross-attention mask: Llama 3.2 Vision's images would not reach the loss. GRPO refuses it here;
the hf backend trains it."""


def import_unsloth():
    """Import Unsloth (patches transformers/TRL/PEFT) and return the module."""
    import unsloth

    return unsloth


@contextmanager
def block_compile_as_the_family_needs(family: Family):
    """Turn Unsloth's per-decoder-layer compile off while it patches a model of `family` that
    needs it off. Unsloth decides when it patches (FastVisionModel.from_pretrained and
    get_peft_model both do) by reading UNSLOTH_BLOCK_COMPILE; a layer class it did not wrap then
    stays stock. A user's own UNSLOTH_BLOCK_COMPILE is left as it is."""
    if family.unsloth_block_compile or "UNSLOTH_BLOCK_COMPILE" in os.environ:
        yield
        return
    os.environ["UNSLOTH_BLOCK_COMPILE"] = "0"
    try:
        yield
    finally:
        del os.environ["UNSLOTH_BLOCK_COMPILE"]


def load(path: str, *, family: Family, quantization: str, setup: DeviceSetup, max_seq_length: int):
    """(model, processor) through FastVisionModel, with Unsloth's gradient checkpointing."""
    import_unsloth()
    import torch
    from unsloth import FastVisionModel

    placement = {}
    if distributed.is_distributed():  # one process per GPU: each loads onto its own device
        placement["device_map"] = {"": distributed.local_index()}
    with block_compile_as_the_family_needs(family):
        model, processor = FastVisionModel.from_pretrained(
            model_name=path,
            max_seq_length=max_seq_length,
            dtype=getattr(torch, setup.dtype),
            load_in_4bit=quantization == "4bit",
            load_in_8bit=quantization == "8bit",
            # Unsloth's variant offloads checkpointed activations to CPU asynchronously: the
            # memory saving that makes long image-token sequences fit on 12 GB.
            use_gradient_checkpointing="unsloth",
            **placement,
        )
    return model, processor


def add_lora(
    model,
    lora_args: LoraArgs,
    *,
    family: Family,
    seed: int,
    adapter: str | None,
    gradient_checkpointing: bool,
):
    """FastVisionModel.get_peft_model on the parts `lora_args` selects (or the saved
    `adapter`), in Unsloth's training mode."""
    from unsloth import FastVisionModel

    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
        return FastVisionModel.for_training(model)
    select_lora_targets(model, lora_args)  # switches that select nothing: a one-line error
    with block_compile_as_the_family_needs(family):
        model = FastVisionModel.get_peft_model(
            model,
            finetune_vision_layers=lora_args.finetune_vision_layers,
            finetune_language_layers=lora_args.finetune_language_layers,
            finetune_attention_modules=lora_args.finetune_attention_modules,
            finetune_mlp_modules=lora_args.finetune_mlp_modules,
            target_modules=lora_args.target_modules,
            modules_to_save=lora_args.modules_to_save,
            r=lora_args.lora_r,
            lora_alpha=lora_args.lora_alpha,
            lora_dropout=lora_args.lora_dropout,
            use_rslora=lora_args.use_rslora,
            bias="none",
            random_state=seed,
            use_gradient_checkpointing="unsloth" if gradient_checkpointing else False,
        )
    return FastVisionModel.for_training(model)


def for_inference(model):
    """Unsloth's fast generation mode."""
    from unsloth import FastVisionModel

    return FastVisionModel.for_inference(model)


def for_training(model):
    """Unsloth's training mode."""
    from unsloth import FastVisionModel

    return FastVisionModel.for_training(model)


def make_sft_collator(
    model: Any,
    processor: Any,
    family: Family,
    *,
    max_side: int,
    train_on_prompt: bool,
    max_seq_length: int,
) -> UnslothRecordCollator:
    """Unsloth's vision collator with our label semantics, over our canonical records.

    resize="max": images arrive already capped at --max-side by our preparation, and the
    collator's default ("min") would shrink Qwen images to 512 px wide regardless.
    train_on_responses_only with the family's markers: otherwise it trains on the prompt too.
    """
    from unsloth.trainer import UnslothVisionDataCollator

    unsloth_collator = UnslothVisionDataCollator(
        model,
        processor,
        resize="max",
        max_seq_length=max_seq_length,
        train_on_responses_only=not train_on_prompt,
        instruction_part=family.instruction_part,
        response_part=family.response_part,
    )
    cap = image_cap(family, max_side, processor)
    return UnslothRecordCollator(unsloth_collator, family, max_side=cap)


def save_merged(
    model: Any,
    processor: Any,
    *,
    base_path: str,
    setup: DeviceSetup,
    adapter_dir: Path,
    merged_dir: Path,
) -> None:
    """Unsloth's merged_16bit save: it reloads the base in 16 bit and merges there."""
    model.save_pretrained_merged(str(merged_dir), processor, save_method="merged_16bit")
