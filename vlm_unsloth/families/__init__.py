"""The model families: one module each in this package, collected here into the registry that
every list a user or a test sees is derived from (help texts, error messages, the planner's
names, the tiny checkpoints, `vlm-unsloth models`, the tests).

    from vlm_unsloth.families import FAMILIES, family_for_config
    FAMILIES["qwen2-vl"].response_part      # "<|im_start|>assistant\\n"
    family_for_config(model.config).key     # the family of a loaded checkpoint

A family module (e.g. `qwen2_vl.py`, named after its key) defines `FAMILY`, a `base.Family`
holding everything particular to it; modules whose name starts with "_" hold what several
families share (Qwen's markers, the Idefics3 tiling). Adding a family is one new module (and its
calibration points, perf/calibration/), found here by its presence: removing one removes the
family, and its names become unknown models. docs/adding-a-family.md tells the steps.
Code elsewhere asks `family_for_config(config)` instead of sniffing model names.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from vlm_unsloth.errors import ModelError
from vlm_unsloth.families.base import Family, ModelSize

_NOT_FAMILIES = {"base"}
"""Modules of this package that are no family (besides the shared "_" ones)."""


def _collect() -> dict[str, Family]:
    """Every family module's FAMILY, by key, in key order."""
    found = []
    for module_info in pkgutil.iter_modules(__path__):
        name = module_info.name
        if name.startswith("_") or name in _NOT_FAMILIES:
            continue
        found.append(importlib.import_module(f"{__name__}.{name}").FAMILY)
    return {family.key: family for family in sorted(found, key=lambda f: f.key)}


FAMILIES: dict[str, Family] = _collect()
TINY_MODEL_NAMES: dict[str, Family] = {family.tiny_name: family for family in FAMILIES.values()}
PRODUCT_DEFAULT = "qwen2-vl"
"""The family whose default checkpoint the commands train when no --model is given (Qwen2-VL-7B:
the 12 GB recipe); the first family when that module is absent."""


def default_family() -> Family:
    """The family `--model` defaults to (PRODUCT_DEFAULT)."""
    return FAMILIES.get(PRODUCT_DEFAULT) or next(iter(FAMILIES.values()))


def tiny_names() -> str:
    """`tiny-qwen2-vl, tiny-qwen2.5-vl, ...`: every tiny checkpoint, for help texts."""
    return ", ".join(TINY_MODEL_NAMES)


TINY_PREFIX = "tiny-"


def tiny_family(name: str) -> Family | None:
    """The family of tiny checkpoint `name`, None for a name that is no tiny one; a `tiny-*`
    name no family has (a typo, or a family whose module is not installed) is a ModelError
    (callers ask after a local folder of that name)."""
    if not name.startswith(TINY_PREFIX):
        return None
    if name not in TINY_MODEL_NAMES:
        raise ModelError(
            f"unknown model {name!r}: no family has a tiny checkpoint of that name",
            where="--model",
            fix=f"use one of: {tiny_names()} (vlm-unsloth models lists the families)",
        )
    return TINY_MODEL_NAMES[name]


def family_for_config(config: Any, *, where: str = "--model") -> Family:
    """The family of a loaded `transformers` config (or a config.json dict)."""
    if isinstance(config, dict):
        vision = config.get("vision_config") or {}
        return family_for_model_type(
            config["model_type"], vision_model_type=vision.get("model_type"), where=where
        )
    vision = getattr(config, "vision_config", None)
    return family_for_model_type(
        config.model_type, vision_model_type=getattr(vision, "model_type", None), where=where
    )


def family_for_model_type(
    model_type: str, *, vision_model_type: str | None = None, where: str = "--model"
) -> Family:
    """The family of a checkpoint whose config says `model_type` (and, for families that need
    it, `vision_config.model_type`)."""
    for family in FAMILIES.values():
        if family.model_type == model_type and family.vision_model_type in (
            None,
            vision_model_type,
        ):
            return family
    supported = ", ".join(
        f"{f.key} ({f.model_type}"
        + (f" + {f.vision_model_type} vision" if f.vision_model_type else "")
        + ")"
        for f in FAMILIES.values()
    )
    what = repr(model_type) + (
        f" with a {vision_model_type!r} vision tower" if vision_model_type else ""
    )
    raise ModelError(
        f"model_type {what} is not a supported vision-language family",
        where=where,
        fix=f"use a checkpoint of: {supported}",
    )


_SIZES: dict[str, tuple[Family, ModelSize]] = {
    name.lower(): (family, size)
    for family in FAMILIES.values()
    for size in family.sizes
    for name in (size.name, *size.checkpoints)
}


def size_named(name: str) -> tuple[Family, ModelSize] | None:
    """The family and size of a planner name (qwen2-vl-7b) or a listed Hub id (case-insensitive),
    else None."""
    return _SIZES.get(name.lower())


def size_for_config(family: Family, config: Any) -> ModelSize | None:
    """The size of `family` whose language model has `config`'s width and depth (a transformers
    config or a config.json dict); None for any other size (e.g. tiny models)."""
    if isinstance(config, dict):
        text = config.get("text_config") or config
        shape = (text.get("hidden_size"), text.get("num_hidden_layers"))
    else:
        text = config.get_text_config()
        shape = (text.hidden_size, text.num_hidden_layers)
    return next((size for size in family.sizes if size.text_shape == shape), None)


def describe_sizes() -> str:
    """Every known size with its Hub ids, on one line (for error messages)."""
    return "; ".join(
        f"{size.name} ({', '.join(size.checkpoints)})"
        for family in FAMILIES.values()
        for size in family.sizes
    )
