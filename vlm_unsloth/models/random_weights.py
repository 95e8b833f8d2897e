"""Random-weight checkpoints of the REAL model sizes, for memory and speed measurements.

    python scripts/make_random_checkpoint.py --arch qwen2-vl-7b --output-dir /tmp/q7

No machine here reaches the Hub, but memory and throughput depend only on the architecture and
the image tokens, not on trained values. These folders use the real configs (layer counts,
widths, vocabulary sizes: each family module's `ModelSize.real`) with the tiny checkpoints'
processors, so the loading and training code is exactly the product's. Weights are initialised
on the GPU when there is one (seconds for 8B parameters instead of minutes on the CPU) and
written as bf16 safetensors.
"""

from __future__ import annotations

from pathlib import Path

from vlm_unsloth.errors import ModelError
from vlm_unsloth.families import FAMILIES, Family
from vlm_unsloth.families.base import ModelSize
from vlm_unsloth.models.tiny import SEED, model_class, tiny_processor

REAL_ARCHITECTURES: dict[str, tuple[Family, ModelSize]] = {
    size.name: (family, size)
    for family in FAMILIES.values()
    for size in family.sizes
    if size.real is not None
}
"""The sizes random weights can be built of, by planner name (e.g. qwen2-vl-7b)."""


def real_config(arch: str):
    """The transformers config of `arch` (a REAL_ARCHITECTURES key) and its processor."""
    if arch not in REAL_ARCHITECTURES:
        raise ModelError(
            f"unknown architecture {arch!r}",
            where="--arch",
            fix=f"use one of: {', '.join(REAL_ARCHITECTURES)}",
        )
    family, size = REAL_ARCHITECTURES[arch]
    processor = tiny_processor(family.architecture, real_size=True)
    # Real sizes over the tiny config: token ids stay those of our tokenizer (the vocabulary is
    # larger than the tokenizer, as real checkpoints' embedding tables often are).
    config = family.architecture.config(
        processor.tokenizer,
        text=size.real.text_config,
        vision=size.real.vision_config,
        top=size.real.config or None,
    )
    return config, processor


def build_random_checkpoint(arch: str, folder: str | Path) -> Path:
    """Write a random-weight checkpoint of `arch` (a REAL_ARCHITECTURES key) to `folder`."""
    import torch

    folder = Path(folder)
    if arch in REAL_ARCHITECTURES and (folder / "config.json").is_file():
        return folder
    config, processor = real_config(arch)
    family, _ = REAL_ARCHITECTURES[arch]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(SEED)
    with torch.device(device):
        model = model_class(family.architecture)._from_config(config, dtype=torch.bfloat16)
    family.architecture.finish(model)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return folder
