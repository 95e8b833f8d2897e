"""The backend protocol, written down once, and the choice of the module that implements it.

    activate_backend("auto")           # first thing every entry point does
    backend = backend_module("hf")      # hf_backend or unsloth_backend: a `Backend`
    model, processor = backend.load(path, quantization="16bit", setup=setup, max_seq_length=2048)

Two modules implement `Backend`, with the same options and the same outputs:
- `unsloth_backend`: Unsloth's FastVisionModel on an NVIDIA GPU (the product path), the only
  module that imports unsloth;
- `hf_backend`: transformers + PEFT (+ bitsandbytes): CPU, other GPUs, and the baseline.
Code above this layer asks the backend instead of branching on its name.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from vlm_unsloth.families import Family
from vlm_unsloth.models import hf_backend, unsloth_backend
from vlm_unsloth.models.checkpoints import peek_family
from vlm_unsloth.models.device import DeviceSetup, resolve_backend
from vlm_unsloth.models.lora import LoraArgs


@runtime_checkable
class Backend(Protocol):
    """What a training/inference backend provides (each is a module of these functions)."""

    GRPO_CROSS_ATTENTION_IMAGES: bool
    """Whether GRPO on this backend can train a family whose images enter by cross-attention
    (Llama 3.2 Vision): its trainer must carry their inputs to the loss forward."""

    def load(
        self,
        path: str,
        *,
        family: Family,
        quantization: str,
        setup: DeviceSetup,
        max_seq_length: int,
    ) -> tuple[Any, Any]:
        """(model, processor) of the checkpoint at `path` (a folder or a hub id) of `family`."""

    def add_lora(
        self,
        model: Any,
        lora_args: LoraArgs,
        *,
        family: Family,
        seed: int,
        adapter: str | None,
        gradient_checkpointing: bool,
    ) -> Any:
        """`model` with trainable LoRA (a new adapter, or the saved `adapter` folder)."""

    def for_training(self, model: Any) -> Any:
        """Switch the model to training mode (Unsloth: its training kernels)."""

    def for_inference(self, model: Any) -> Any:
        """Switch the model to inference mode (Unsloth: its fast generation path)."""

    def make_sft_collator(
        self,
        model: Any,
        processor: Any,
        family: Family,
        *,
        max_side: int,
        train_on_prompt: bool,
        max_seq_length: int,
    ) -> Any:
        """The SFT data collator: canonical records in, a model batch with labels out."""

    def save_merged(
        self,
        model: Any,
        processor: Any,
        *,
        base_path: str,
        setup: DeviceSetup,
        adapter_dir: Path,
        merged_dir: Path,
    ) -> None:
        """Write base + adapter merged into 16-bit weights to `merged_dir` (loads without PEFT)."""


def backend_module(backend: str) -> Backend:
    """The module implementing `backend` ("unsloth" or "hf")."""
    module: ModuleType = unsloth_backend if backend == "unsloth" else hf_backend
    return module  # type: ignore[return-value]  # a module of the protocol's functions


def activate_backend(choice: str, model: str | None = None) -> tuple[str, str]:
    """`resolve_backend` for `--model model` (its family found without loading it), then import
    Unsloth when it is the one that will run: it patches transformers/TRL/PEFT on import and must
    come before they are used. Every entry point calls this first."""
    backend, why = resolve_backend(choice, peek_family(model) if model else None)
    if backend == "unsloth":
        unsloth_backend.import_unsloth()
    return backend, why
