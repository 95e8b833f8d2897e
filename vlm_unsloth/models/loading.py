"""Resolve a model name once, load it on a backend, add LoRA.

    model_args = ModelArgs(model="tiny-qwen2-vl", backend="hf")
    resolved = resolve_run_model(model_args, precision="auto")   # backend, path, family, device
    loaded = load_model(model_args, LoraArgs(), resolved.setup, seed=0, ref=resolved.ref)

A name is a tiny offline model (`tiny-qwen2-vl`, ...), a local folder, or a hub id; all load
through the same `from_pretrained` path. The family (chat markers, image tokens) comes from the
checkpoint's own config, never from its name. A run resolves its --model once
(`resolve_run_model`): before Unsloth is imported only an offline peek at the family chooses the
backend (models/backend.py); everything after takes the resolved object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_unsloth import distributed
from vlm_unsloth.config import ModelArgs
from vlm_unsloth.data.image_tokens import prepare_processor
from vlm_unsloth.errors import ModelError
from vlm_unsloth.families import TINY_MODEL_NAMES, Family, family_for_config, tiny_family
from vlm_unsloth.models.backend import activate_backend, backend_module
from vlm_unsloth.models.device import DeviceSetup, choose_device
from vlm_unsloth.models.lora import LoraArgs
from vlm_unsloth.models.tiny import build_tiny_checkpoint


@dataclass(frozen=True)
class ModelRef:
    name: str
    """What the user passed."""
    path: str
    """What `from_pretrained` gets: a local folder or a hub id."""
    family: Family
    config: dict
    """The checkpoint's config.json (the base model's, for an adapter folder)."""


@dataclass(frozen=True)
class ResolvedModel:
    """A run's --model resolved once: the checkpoint, and the backend, device and precision it
    computes with (each with the reason why)."""

    ref: ModelRef
    setup: DeviceSetup

    @property
    def family(self) -> Family:
        return self.ref.family


@dataclass
class LoadedModel:
    model: Any
    processor: Any
    ref: ModelRef
    setup: DeviceSetup
    quantization: str
    gradient_checkpointing: bool

    @property
    def family(self) -> Family:
        return self.ref.family


def resolve_model(name: str, *, where: str = "--model") -> ModelRef:
    """Turn `--model` into a loadable path and its family (builds tiny models on demand)."""
    if name in TINY_MODEL_NAMES:
        path = str(build_tiny_checkpoint(name))
    elif Path(name).expanduser().exists():
        path = str(Path(name).expanduser().resolve())
    else:
        tiny_family(name)  # a tiny-* name no family has: the one-line error
        path = name
    config = _config(path, where)
    return ModelRef(
        name=name, path=path, family=family_for_config(config, where=where), config=config
    )


def resolve_run_model(model_args: ModelArgs, *, precision: str) -> ResolvedModel:
    """The backend (Unsloth imported first when it runs: an offline peek at the family decides),
    then the checkpoint (a tiny one built by one process), then the device and the precision for
    its family (`--precision`; float16 refused for a family that overflows it)."""
    backend, why = activate_backend(model_args.backend, model_args.model)
    with distributed.main_process_first():
        ref = resolve_model(model_args.model)  # may build a tiny checkpoint: one writer
    setup = choose_device(
        backend, why, precision, family=ref.family, cpu_threads=model_args.cpu_threads
    )
    return ResolvedModel(ref, setup)


def _config(path: str, where: str) -> dict:
    """The checkpoint's config.json (of the base model, for an adapter folder)."""
    local = Path(path)
    if local.is_dir():
        config_file = local / "config.json"
        if not config_file.is_file():
            adapter_config = local / "adapter_config.json"
            if adapter_config.is_file():
                base = json.loads(adapter_config.read_text())["base_model_name_or_path"]
                return _config(base, where)
            raise ModelError(
                f"{local} has no config.json", where=where, fix="pass a model folder or a hub id"
            )
        return json.loads(config_file.read_text())
    if local.exists():
        raise ModelError(f"{local} is a file, not a model folder", where=where)
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path).to_dict()
    except OSError as error:
        raise ModelError(
            f"cannot load the config of {path!r} (not a local folder, and the Hugging Face Hub "
            "is unreachable or has no such model)",
            where=where,
            fix="check the name, connect to the Hub, or use a local folder / a tiny-* model",
        ) from error


def load_processor(ref: ModelRef) -> Any:
    """The checkpoint's processor alone (no weights), for counting tokens."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(ref.path)
    except OSError as error:
        raise ModelError(
            f"cannot load the processor of {ref.path}: {error}".splitlines()[0],
            where="--model",
            fix="pass a model folder with its processor and tokenizer files, or a tiny-* model",
        ) from error
    return prepare_processor(ref.family, processor)


def resolve_quantization(choice: str, device: str) -> str:
    """`--quantization auto`: 4-bit on CUDA (QLoRA), 16-bit weights elsewhere."""
    if choice == "auto":
        return "4bit" if device == "cuda" else "16bit"
    return choice


def load_model(
    model_args: ModelArgs,
    lora_args: LoraArgs | None,
    setup: DeviceSetup,
    *,
    seed: int,
    max_seq_length: int = 2048,
    ref: ModelRef | None = None,
) -> LoadedModel:
    """Load the model and processor on `setup.backend`; with `lora_args`, add trainable LoRA.
    `ref`: the run's resolved --model (`resolve_run_model`); resolved here when not given."""
    ref = ref or resolve_model(model_args.model)
    quantization = resolve_quantization(model_args.quantization, setup.device)
    implementation = backend_module(setup.backend)
    model, processor = implementation.load(
        ref.path,
        family=ref.family,
        quantization=quantization,
        setup=setup,
        max_seq_length=max_seq_length,
    )
    prepare_processor(ref.family, processor)  # e.g. SmolVLM: no upscaling past --max-side
    if lora_args is not None:
        model = implementation.add_lora(
            model,
            lora_args,
            family=ref.family,
            seed=seed,
            adapter=model_args.adapter,
            gradient_checkpointing=model_args.gradient_checkpointing,
        )
    return LoadedModel(
        model=model,
        processor=processor,
        ref=ref,
        setup=setup,
        quantization=quantization,
        gradient_checkpointing=model_args.gradient_checkpointing,
    )


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters, counting 4-bit packed weights at their real size."""
    if hasattr(model, "get_nb_trainable_parameters"):  # a PEFT model: knows 4-bit packing
        return model.get_nb_trainable_parameters()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
