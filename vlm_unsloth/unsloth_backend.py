"""The unsloth backend — the ONLY module that imports unsloth.

Unsloth patches transformers, TRL and PEFT when imported and wants to come first, so
`import_unsloth()` runs as soon as the backend is resolved, before the rest of the run imports
them. It only works on an NVIDIA GPU (on CPU its FastVisionModel raises NotImplementedError), so
CPU tests never reach this module; the GPU tests exercise it.
"""

from __future__ import annotations

from vlm_unsloth.backend import DevicePlan
from vlm_unsloth.lora import LoraArgs


def import_unsloth():
    """Import Unsloth (patches transformers/TRL/PEFT) and return the module."""
    import unsloth

    return unsloth


def load(path: str, *, quantization: str, plan: DevicePlan, max_seq_length: int):
    import_unsloth()
    import torch
    from unsloth import FastVisionModel

    from vlm_unsloth import distributed

    placement = {}
    if distributed.is_distributed():  # one process per GPU: each loads onto its own device
        placement["device_map"] = {"": distributed.local_index()}
    model, processor = FastVisionModel.from_pretrained(
        model_name=path,
        max_seq_length=max_seq_length,
        dtype=getattr(torch, plan.dtype),
        load_in_4bit=quantization == "4bit",
        load_in_8bit=quantization == "8bit",
        # Unsloth's variant offloads checkpointed activations to CPU asynchronously: the memory
        # saving that makes long image-token sequences fit on 12 GB.
        use_gradient_checkpointing="unsloth",
        **placement,
    )
    return model, processor


def add_lora(
    model, lora_args: LoraArgs, *, seed: int, adapter: str | None, gradient_checkpointing: bool
):
    from unsloth import FastVisionModel

    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
        return FastVisionModel.for_training(model)
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
    from unsloth import FastVisionModel

    return FastVisionModel.for_inference(model)


def for_training(model):
    from unsloth import FastVisionModel

    return FastVisionModel.for_training(model)


def make_collator(model, processor, family, *, train_on_prompt: bool, max_seq_length: int):
    """Unsloth's vision collator with our label semantics.

    resize="max": images arrive already capped at --max-side by our preparation, and the
    collator's default ("min") would shrink Qwen images to 512 px wide regardless.
    train_on_responses_only with the family's markers: otherwise it trains on the prompt too.
    """
    from unsloth.trainer import UnslothVisionDataCollator

    return UnslothVisionDataCollator(
        model,
        processor,
        resize="max",
        max_seq_length=max_seq_length,
        train_on_responses_only=not train_on_prompt,
        instruction_part=family.instruction_part,
        response_part=family.response_part,
    )
