"""The family of any `--model` found without loading anything, so that `--backend auto` can
decide before Unsloth is imported (which must come before transformers).

    peek_family("unsloth/Qwen2-VL-7B-Instruct").key        # "qwen2-vl" (a listed Hub id)
    peek_family(family.tiny_name) is family                # each tiny checkpoint's own family

Offline: the family modules' tables answer for the names they list (tiny checkpoints, Hub ids);
other hub ids are read from the local Hugging Face cache when their config.json is there.
"""

from __future__ import annotations

import json
from pathlib import Path

from vlm_unsloth.errors import ModelError
from vlm_unsloth.families import (
    TINY_MODEL_NAMES,
    Family,
    family_for_config,
    size_named,
    tiny_family,
)


def folder_config(folder: Path, *, where: str = "--model") -> dict:
    """config.json of a model folder; for an adapter folder (or a training run's folder, which
    holds adapter/), the config of the base model it names (local or cached)."""
    for adapter in (folder / "adapter_config.json", folder / "adapter" / "adapter_config.json"):
        if not (folder / "config.json").is_file() and adapter.is_file():
            base = json.loads(adapter.read_text())["base_model_name_or_path"]
            config = local_config(base)
            if config is None:
                raise ModelError(
                    f"{folder}'s base model {base} is not on this machine",
                    where=where,
                    fix="download it (or connect to the Hub) first",
                )
            return config
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"{folder} has no config.json", where=where, fix="pass a model folder or a hub id"
        )
    return json.loads((folder / "config.json").read_text())


def local_config(name: str) -> dict | None:
    """The config.json of a model folder (or adapter), or of a hub id in the local Hugging Face
    cache; None when neither is on this machine. Never touches the network."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder_config(folder)
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a valid repo id
        return None
    if isinstance(cached, str):
        return json.loads(Path(cached).read_text())
    return None


def peek_family(name: str) -> Family | None:
    """The family of `--model name` without loading it: tiny names, model and adapter folders,
    listed hub ids and cached ones; None when it cannot be known offline. A `tiny-*` name no
    family has is a ModelError (one line, before anything loads)."""
    if name in TINY_MODEL_NAMES:
        return TINY_MODEL_NAMES[name]
    if not Path(name).expanduser().exists():
        tiny_family(name)  # a tiny-* name no family has: the one-line error
    known = size_named(name)
    if known is not None:
        return known[0]
    try:
        config = local_config(name)
        return None if config is None else family_for_config(config)
    except ModelError:  # not readable, or not a supported family: loading will say which
        return None
