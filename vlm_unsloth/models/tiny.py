"""Tiny randomly initialised checkpoints of the REAL architectures, built offline in seconds.

    from vlm_unsloth.models.tiny import build_tiny_checkpoint
    folder = build_tiny_checkpoint("tiny-qwen2-vl")  # or pass --model tiny-qwen2-vl to a script

Each is an ordinary model folder (config, safetensors, a locally trained byte-level BPE tokenizer
with the family's special tokens, image/video processor configs, the family's chat template), so
the same `from_pretrained(folder)` code that loads a hub checkpoint loads it — transformers' and
Unsloth's. Tests, the CPU demo and GPU smoke runs use them; `--model tiny-qwen2-vl` etc. name them.

Each architecture's parts (processor, config, model class) are in `tiny_architectures.py`, the
tokenizer and chat templates in `tiny_tokenizer.py`.

Folders are cached under $VLM_UNSLOTH_CACHE (default ~/.cache/vlm_unsloth/tiny) in a sub-folder
keyed by a hash of this builder's source, so a changed builder never serves a stale checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from vlm_unsloth import families
from vlm_unsloth.errors import ModelError
from vlm_unsloth.families import TINY_MODEL_NAMES, Family
from vlm_unsloth.models import tiny_architectures, tiny_qwen3_gemma3, tiny_tokenizer
from vlm_unsloth.models.tiny_architectures import ARCHITECTURES, model_class

SEED = 1234


def cache_root() -> Path:
    """Where tiny checkpoints are built ($VLM_UNSLOTH_CACHE, else ~/.cache/vlm_unsloth)."""
    return (
        Path(os.environ.get("VLM_UNSLOTH_CACHE", Path.home() / ".cache" / "vlm_unsloth")) / "tiny"
    )


def builder_fingerprint() -> str:
    """Hash of the code that shapes a tiny checkpoint: change it and the cache rebuilds."""
    import transformers

    digest = hashlib.sha256(transformers.__version__.encode())
    for module in (
        sys.modules[__name__], tiny_architectures, tiny_qwen3_gemma3, tiny_tokenizer, families,
    ):  # fmt: skip
        digest.update(Path(module.__file__).read_bytes())
    for template in sorted(
        resources.files("vlm_unsloth.models").joinpath("chat_templates").iterdir(), key=str
    ):
        digest.update(template.read_bytes())
    return digest.hexdigest()[:12]


def build_tiny_checkpoint(name: str, *, cache_dir: Path | None = None) -> Path:
    """Return the folder of tiny checkpoint `name`, building it (a few seconds) if not cached."""
    family = TINY_MODEL_NAMES.get(name)
    if family is None:
        raise ModelError(
            f"unknown tiny model {name!r}",
            where="--model",
            fix=f"use one of: {', '.join(TINY_MODEL_NAMES)}",
        )
    root = cache_dir or cache_root()
    folder = root / f"{name}-{builder_fingerprint()}"
    if (folder / "config.json").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    # Build in a temporary sibling and rename: a crash or a parallel test never leaves a half-made
    # folder that a later run would take for a checkpoint.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        _write_checkpoint(family, staging)
        if not (staging / "config.json").is_file() or not (staging / "model.safetensors").is_file():
            # transformers writes weights only on rank 0 of an initialised process group.
            raise ModelError(
                f"building {name} wrote no weights in this process",
                where="--model",
                fix="build tiny checkpoints in the main process first (distributed runs do)",
            )
        try:
            staging.rename(folder)
        except OSError:  # another process finished first: keep theirs
            if not (folder / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _write_checkpoint(family: Family, folder: Path) -> None:
    import torch

    parts = ARCHITECTURES[family.model_type]
    processor = parts.processor(real_size=False)
    config = parts.config(processor.tokenizer)
    torch.manual_seed(SEED)
    model = model_class(parts)(config)
    parts.finish(model)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.eos_token_id = processor.tokenizer.convert_tokens_to_ids(
        family.end_of_turn
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
