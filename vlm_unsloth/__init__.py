"""vlm-unsloth: fine-tune vision-language models (Qwen2-VL, Qwen2.5-VL, Llama 3.2 Vision) on one
GPU with Unsloth — or on CPU with transformers + PEFT, with the same options and outputs.

    from vlm_unsloth import ModelArgs, LoraArgs, DataArgs, TrainArgs, train_sft, evaluate_adapter
    result = train_sft(ModelArgs(model="tiny-qwen2-vl", backend="hf"), LoraArgs(), DataArgs(),
                       TrainArgs(output_dir="outputs/demo", max_steps=20))
    report = evaluate_adapter(str(result.output_dir), output_dir="outputs/demo-eval")

The scripts in scripts/ are thin wrappers over these same functions (notebooks/ shows a whole run).

Importing the package is cheap and side-effect free: no torch, transformers or unsloth import,
no GPU touch, no printing. Names below load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    # configuration
    "ModelArgs": "vlm_unsloth.config",
    "DataArgs": "vlm_unsloth.config",
    "TrainArgs": "vlm_unsloth.config",
    "LoraArgs": "vlm_unsloth.lora",
    "GenerationArgs": "vlm_unsloth.infer",
    # data
    "DataSpec": "vlm_unsloth.data",
    "load_sft_dataset": "vlm_unsloth.data",
    "load_preference_dataset": "vlm_unsloth.data",
    "validate_dataset": "vlm_unsloth.validation",
    "inspect_dataset": "vlm_unsloth.validation",
    "load_image": "vlm_unsloth.images",
    # models
    "load_model": "vlm_unsloth.models",
    "resolve_model": "vlm_unsloth.models",
    "build_tiny_checkpoint": "vlm_unsloth.tiny",
    "FAMILIES": "vlm_unsloth.families",
    # training
    "train_sft": "vlm_unsloth.sft",
    "train_dpo": "vlm_unsloth.dpo",
    # inference and evaluation
    "load_for_inference": "vlm_unsloth.infer",
    "generate_answers": "vlm_unsloth.infer",
    "stream_answer": "vlm_unsloth.infer",
    "evaluate_adapter": "vlm_unsloth.evaluate",
    "VlmUnslothError": "vlm_unsloth.errors",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover - for editors and type checkers only
    from vlm_unsloth.config import DataArgs, ModelArgs, TrainArgs
    from vlm_unsloth.data import DataSpec, load_preference_dataset, load_sft_dataset
    from vlm_unsloth.dpo import train_dpo
    from vlm_unsloth.errors import VlmUnslothError
    from vlm_unsloth.evaluate import evaluate_adapter
    from vlm_unsloth.families import FAMILIES
    from vlm_unsloth.images import load_image
    from vlm_unsloth.infer import (
        GenerationArgs,
        generate_answers,
        load_for_inference,
        stream_answer,
    )
    from vlm_unsloth.lora import LoraArgs
    from vlm_unsloth.models import load_model, resolve_model
    from vlm_unsloth.sft import train_sft
    from vlm_unsloth.tiny import build_tiny_checkpoint
    from vlm_unsloth.validation import inspect_dataset, validate_dataset


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vlm_unsloth' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
