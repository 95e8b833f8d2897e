"""vlm-unsloth: fine-tune vision-language models (the families in vlm_unsloth/families/, listed by
`vlm-unsloth models`) on one GPU with Unsloth — or on CPU with transformers + PEFT, with the same
options and outputs.

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
    "LoraArgs": "vlm_unsloth.models.lora",
    "GenerationArgs": "vlm_unsloth.infer.args",
    "FAMILIES": "vlm_unsloth.families",
    "VlmUnslothError": "vlm_unsloth.errors",
    # data
    "DataSpec": "vlm_unsloth.data.loaders",
    "load_sft_dataset": "vlm_unsloth.data.loaders",
    "load_preference_dataset": "vlm_unsloth.data.loaders",
    "validate_dataset": "vlm_unsloth.data.validation",
    "load_image": "vlm_unsloth.data.images",
    # models
    "load_model": "vlm_unsloth.models.loading",
    "resolve_model": "vlm_unsloth.models.loading",
    "build_tiny_checkpoint": "vlm_unsloth.models.tiny",
    # inference and evaluation
    "load_for_inference": "vlm_unsloth.infer.generation",
    "generate_answers": "vlm_unsloth.infer.generation",
    "stream_answer": "vlm_unsloth.infer.generation",
    "evaluate_adapter": "vlm_unsloth.infer.evaluate",
    # training
    "train_sft": "vlm_unsloth.train.sft",
    "train_dpo": "vlm_unsloth.train.dpo",
    "train_grpo": "vlm_unsloth.train.grpo",
    "inspect_dataset": "vlm_unsloth.train.inspect",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover - for editors and type checkers only
    from vlm_unsloth.config import DataArgs, ModelArgs, TrainArgs
    from vlm_unsloth.data.images import load_image
    from vlm_unsloth.data.loaders import DataSpec, load_preference_dataset, load_sft_dataset
    from vlm_unsloth.data.validation import validate_dataset
    from vlm_unsloth.errors import VlmUnslothError
    from vlm_unsloth.families import FAMILIES
    from vlm_unsloth.infer.args import GenerationArgs
    from vlm_unsloth.infer.evaluate import evaluate_adapter
    from vlm_unsloth.infer.generation import generate_answers, load_for_inference, stream_answer
    from vlm_unsloth.models.loading import load_model, resolve_model
    from vlm_unsloth.models.lora import LoraArgs
    from vlm_unsloth.models.tiny import build_tiny_checkpoint
    from vlm_unsloth.train.dpo import train_dpo
    from vlm_unsloth.train.grpo import train_grpo
    from vlm_unsloth.train.inspect import inspect_dataset
    from vlm_unsloth.train.sft import train_sft


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vlm_unsloth' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
