"""Tiny randomly initialised checkpoints of the REAL architectures, built offline in seconds.

    from vlm_unsloth.models.tiny import build_tiny_checkpoint
    folder = build_tiny_checkpoint("tiny-qwen2-vl")  # or pass --model tiny-qwen2-vl to a script

Each is an ordinary model folder (config, safetensors, a locally trained byte-level BPE tokenizer
with the family's special tokens, image/video processor configs, the family's chat template), so
the same `from_pretrained(folder)` code that loads a hub checkpoint loads it — transformers' and
Unsloth's. Tests, the CPU demo and GPU smoke runs use them; `--model tiny-qwen2-vl` etc. name them.

Each family module (vlm_unsloth/families/) says how its processor, config and model are made
(`Family.architecture`); the tokenizer is trained by `tiny_tokenizer.py`.

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

from vlm_unsloth.errors import ModelError
from vlm_unsloth.families import TINY_MODEL_NAMES, Family, tiny_names
from vlm_unsloth.families.base import Architecture
from vlm_unsloth.models import tiny_tokenizer

SEED = 1234


def cache_root() -> Path:
    """Where tiny checkpoints are built ($VLM_UNSLOTH_CACHE, else ~/.cache/vlm_unsloth)."""
    return (
        Path(os.environ.get("VLM_UNSLOTH_CACHE", Path.home() / ".cache" / "vlm_unsloth")) / "tiny"
    )


def builder_fingerprint() -> str:
    """Hash of the code that shapes a tiny checkpoint (this module, the tokenizer trainer, every
    family module and shipped chat template): change it and the cache rebuilds."""
    import transformers

    digest = hashlib.sha256(transformers.__version__.encode())
    for module in (sys.modules[__name__], tiny_tokenizer):
        digest.update(Path(module.__file__).read_bytes())
    package = resources.files("vlm_unsloth.families")
    sources = [*package.iterdir(), *package.joinpath("chat_templates").iterdir()]
    for source in sorted(sources, key=str):
        if source.name.endswith((".py", ".jinja")):
            digest.update(source.read_bytes())
    return digest.hexdigest()[:12]


def build_tiny_checkpoint(name: str, *, cache_dir: Path | None = None) -> Path:
    """Return the folder of tiny checkpoint `name`, building it (a few seconds) if not cached."""
    family = TINY_MODEL_NAMES.get(name)
    if family is None:
        raise ModelError(
            f"unknown tiny model {name!r}",
            where="--model",
            fix=f"use one of: {tiny_names()}",
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

    architecture = family.architecture
    processor = tiny_processor(architecture, real_size=False)
    config = architecture.config(processor.tokenizer)
    torch.manual_seed(SEED)
    model = model_class(architecture)(config)
    architecture.finish(model)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.eos_token_id = processor.tokenizer.convert_tokens_to_ids(
        family.end_of_turn
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def tiny_processor(architecture: Architecture, *, real_size: bool):
    """The family's processor with its tiny tokenizer (`real_size`: the real image geometry)."""
    return architecture.processor(tiny_tokenizer.train_tokenizer(architecture.tokenizer), real_size)


def model_class(architecture: Architecture):
    """The transformers model class of `architecture`."""
    import transformers

    return getattr(transformers, architecture.model_class)
