"""The hf backend: transformers + PEFT (+ bitsandbytes for 4/8-bit), same options as Unsloth.

Runs on CPU (tests, the offline demo), on GPUs Unsloth does not support, and is the benchmark
baseline. Never imports unsloth.
"""

from __future__ import annotations

from vlm_unsloth.backend import DevicePlan
from vlm_unsloth.lora import LoraArgs, lora_target_regex


def load(path: str, *, quantization: str, plan: DevicePlan, max_seq_length: int):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

    dtype = getattr(torch, plan.dtype)
    kwargs: dict = {"dtype": dtype}
    if quantization == "4bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    elif quantization == "8bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    if plan.device == "cuda":
        from vlm_unsloth.distributed import local_index

        # One process per GPU under torchrun: each loads its copy onto its own device.
        kwargs["device_map"] = {"": local_index()}
    model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    processor = AutoProcessor.from_pretrained(path)
    return model, processor


def add_lora(
    model, lora_args: LoraArgs, *, seed: int, adapter: str | None, gradient_checkpointing: bool
):
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_quantized", False):
        # Casts norms to fp32 and makes inputs require grad so checkpointed blocks backpropagate.
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
        target_modules=lora_target_regex(model, lora_args),
        modules_to_save=lora_args.modules_to_save,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def for_inference(model):
    model.eval()
    return model


def for_training(model):
    model.train()
    return model
