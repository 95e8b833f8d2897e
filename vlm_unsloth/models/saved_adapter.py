"""A saved LoRA adapter folder, checked before any weights load: both of its files are there and
readable, and it was trained on a model of the family it is about to be put on.

    config = check_adapter_folder(Path("outputs/sft/adapter"))   # adapter_config.json, parsed
    check_same_family("tiny-smolvlm", "tiny-qwen2-vl", Path("outputs/sft/adapter"))   # refused

Without these checks PEFT meets a cut-short adapter_model.safetensors (a copy that stopped
half-way) as a safetensors header error deep in a traceback, after the base model has loaded;
and an adapter put on a model of another family either fails in a processor method that family
lacks or, worse, loads with its layers silently unused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlm_unsloth.errors import ModelError
from vlm_unsloth.models.checkpoints import peek_family

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
"""The weights file PEFT writes (safetensors), or the one older PEFT versions wrote."""


def adapter_weights(folder: Path) -> Path | None:
    """The adapter's weights file in `folder`, or None when it has none."""
    return next((folder / n for n in ADAPTER_WEIGHTS if (folder / n).is_file()), None)


def check_adapter_folder(
    folder: Path, *, where: str = "--adapter", spare: Path | None = None
) -> dict[str, Any]:
    """adapter_config.json of the adapter in `folder`, parsed, once both files are found readable
    (the weights' header and size checked, nothing loaded); else one ModelError line naming the
    file and the fix. `spare`: another adapter folder of the same training (a run's last
    checkpoint), offered as a way out."""
    config_path = folder / ADAPTER_CONFIG
    weights = adapter_weights(folder)
    use_spare = f", or use {spare.name} as it is: {where} {spare}" if spare else ""
    copy_again = "copy the adapter folder again from where it was trained" + use_spare
    if not config_path.is_file():
        backup = spare / ADAPTER_CONFIG if spare else None
        found = ": the weights are there, not the file that says how to load them"
        raise ModelError(
            f"{config_path} is missing" + (found if weights else ""),
            where=where,
            fix=f"copy it back from {backup} (the same run's checkpoint: the same LoRA settings)"
            if backup and backup.is_file()
            else copy_again,
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelError(
            f"{config_path} cannot be read ({error})", where=where, fix=copy_again
        ) from error
    if not isinstance(config, dict):
        raise ModelError(f"{config_path} is not a JSON object", where=where, fix=copy_again)
    if weights is None:
        raise ModelError(f"{folder / ADAPTER_WEIGHTS[0]} is missing", where=where, fix=copy_again)
    if weights.suffix == ".safetensors":
        _check_safetensors(weights, where=where, fix=copy_again)
    return config


def _check_safetensors(path: Path, *, where: str, fix: str) -> None:
    """Open the file's header: safetensors checks that it parses and that the tensors it lists
    fill the file exactly, so a cut-short copy is found without loading a tensor."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass
    except (SafetensorError, OSError) as error:
        detail = str(error).removeprefix("Error while deserializing header: ")
        raise ModelError(
            f"{path} is damaged or cut short ({detail})", where=where, fix=fix
        ) from error


def check_same_family(model: str, trained_on: str, adapter: Path) -> None:
    """A ModelError line when `--model model` is of another family than `trained_on`, the model
    the adapter in `adapter` was trained on (families found without loading: `peek_family`; a
    model whose family cannot be known offline is left to loading)."""
    family, trained_family = peek_family(model), peek_family(trained_on)
    if family is None or trained_family is None or family.key == trained_family.key:
        return
    raise ModelError(
        f"{model} is a {family.key} model, but the adapter {adapter} was trained on {trained_on} "
        f"({trained_family.key}), and an adapter fits only the family it was trained on",
        where="--model",
        fix=f"drop --model (the adapter's own base model is used), or pass a {trained_family.key} "
        "model",
    )
