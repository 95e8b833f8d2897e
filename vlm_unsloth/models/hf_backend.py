"""The hf backend: transformers + PEFT (+ bitsandbytes for 4/8-bit), same options as Unsloth.

Runs on CPU (tests, the offline demo), on GPUs Unsloth does not support, and is the benchmark
baseline. Never imports unsloth.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vlm_unsloth import distributed
from vlm_unsloth.data.collate import SftCollator
from vlm_unsloth.families import Family
from vlm_unsloth.models.device import DeviceSetup
from vlm_unsloth.models.lora import LoraArgs, select_lora_targets

GRPO_CROSS_ATTENTION_IMAGES = True
"""train/grpo_trainer.py carries Llama 3.2 Vision's image inputs through TRL's GRPOTrainer."""


def load(path: str, *, family: Family, quantization: str, setup: DeviceSetup, max_seq_length: int):
    """(model, processor) through transformers, quantized by bitsandbytes for 4bit/8bit."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

    dtype = getattr(torch, setup.dtype)
    kwargs: dict = {"dtype": dtype}
    skip = (
        {"llm_int8_skip_modules": _unquantized(path, family)} if family.unquantized_modules else {}
    )
    if quantization == "4bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
            **skip,
        )
    elif quantization == "8bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True, **skip)
    if setup.device == "cuda":
        # One process per GPU under torchrun: each loads its copy onto its own device.
        kwargs["device_map"] = {"": distributed.local_index()}
    model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    processor = AutoProcessor.from_pretrained(path)
    return model, processor


def _unquantized(path: str, family: Family) -> list[str]:
    """The modules bitsandbytes leaves in float: the family's `unquantized_modules` and the ones
    transformers skips by default (lm_head, tied embeddings), which an explicit
    llm_int8_skip_modules would otherwise replace."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText
    from transformers.quantizers.base import get_keys_to_not_convert

    with torch.device("meta"):  # the module tree only: no weights are made
        skeleton = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(path))
    return sorted({*get_keys_to_not_convert(skeleton), *family.unquantized_modules})


def add_lora(
    model,
    lora_args: LoraArgs,
    *,
    family: Family,
    seed: int,
    adapter: str | None,
    gradient_checkpointing: bool,
):
    """PEFT LoRA on the modules `lora_args` selects (or the saved `adapter`), trainable."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_quantized", False):
        # Casts norms to fp32 and makes inputs require grad so checkpointed blocks backpropagate.
        with _set_aside(model, family.hf_keeps_16bit):
            model = prepare_model_for_kbit_training(
                model,
                use_gradient_checkpointing=gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False},
            )
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if adapter:
        return PeftModel.from_pretrained(model, adapter, is_trainable=True)
    torch.manual_seed(seed)  # LoRA A matrices are random: same seed, same adapter init
    config = LoraConfig(
        r=lora_args.lora_r,
        lora_alpha=lora_args.lora_alpha,
        lora_dropout=lora_args.lora_dropout,
        use_rslora=lora_args.use_rslora,
        # The selected nn.Linear paths, not the regex: PEFT full-matches a regex against every
        # module, and Gemma 4's vision linears sit inside a wrapper of the same leaf name
        # (Gemma4ClippableLinear `q_proj` around its nn.Linear `q_proj.linear`) that PEFT cannot
        # adapt ("Target module Gemma4ClippableLinear(...) is not supported").
        target_modules=select_lora_targets(model, lora_args),
        modules_to_save=lora_args.modules_to_save,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


@contextmanager
def _set_aside(model, names: tuple[str, ...]):
    """Detach the modules named (by their last name part) for the duration, frozen and in their
    own dtype when they come back: what PEFT's k-bit preparation must not cast to float32."""
    aside = [
        (model.get_submodule(path.rpartition(".")[0]), path.rpartition(".")[2], module)
        for path, module in model.named_modules()
        if path.rpartition(".")[2] in names
    ]
    for parent, name, _ in aside:
        setattr(parent, name, None)
    try:
        yield
    finally:
        for parent, name, module in aside:
            module.requires_grad_(False)
            setattr(parent, name, module)


def for_inference(model):
    """eval() mode: no dropout."""
    model.eval()
    return model


def for_training(model):
    """train() mode."""
    model.train()
    return model


def make_sft_collator(
    model: Any,
    processor: Any,
    family: Family,
    *,
    max_side: int,
    train_on_prompt: bool,
    max_seq_length: int,
) -> SftCollator:
    """Our collator: the processor builds the batch, labels keep only the answers."""
    return SftCollator(processor, family, max_side=max_side, train_on_prompt=train_on_prompt)


def save_merged(
    model: Any,
    processor: Any,
    *,
    base_path: str,
    setup: DeviceSetup,
    adapter_dir: Path,
    merged_dir: Path,
) -> None:
    """Reload the base in 16 bit (32 on CPU) and merge the saved adapter into it: a quantized
    base cannot take merged weights without re-quantizing away the adapter's effect."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    dtype = torch.bfloat16 if setup.dtype == "bfloat16" else torch.float16
    if setup.device == "cpu":
        dtype = torch.float32
    base = AutoModelForImageTextToText.from_pretrained(base_path, dtype=dtype)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.save_pretrained(merged_dir)
    processor.save_pretrained(merged_dir)
