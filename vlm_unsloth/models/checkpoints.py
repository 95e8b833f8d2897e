"""The checkpoints users name: hub ids mapped to their family and to the memory planner's
architecture, and the family of any `--model` found without loading anything (so `--backend
auto` can decide before Unsloth is imported, which must come before transformers).

    known_architecture("unsloth/Qwen2-VL-7B-Instruct").name   # "qwen2-vl-7b"
    peek_family("tiny-smolvlm").key                           # "smolvlm"

An architecture is a family at one size (the language model's width and depth decide the
weights' memory); `image_settings` are the real processor's image parameters, as the product
sets them, for counting tokens without the processor (the planner's default sample).
Offline: the table answers for the names it lists; other hub ids are read from the local
Hugging Face cache when their config.json is there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_unsloth.errors import ModelError
from vlm_unsloth.families import FAMILIES, TINY_MODEL_NAMES, Family, family_for_config


@dataclass(frozen=True)
class KnownArchitecture:
    name: str
    """The planner's name, e.g. qwen2-vl-7b (also `random_weights.REAL_ARCHITECTURES` keys)."""
    family: str
    """A `FAMILIES` key."""
    text_shape: tuple[int, int]
    """The language model's (hidden_size, num_hidden_layers): how a config is recognised."""
    image_settings: dict
    """The real processor's parameters for `data.image_tokens` (scheme keyword arguments)."""
    checkpoints: tuple[str, ...]
    """Hub ids of this architecture (instruct, base and Unsloth's 4-bit uploads)."""


_QWEN = dict(patch_size=14, merge_size=2, min_pixels=56 * 56, max_pixels=28 * 28 * 16384)
_MLLAMA = dict(tile_size=560, max_image_tiles=4)
# do_resize off: as the product sets every Idefics3 processor (data.image_tokens).
_SMOLVLM_384 = dict(
    tile=384, image_seq_len=81, longest_edge=1536, do_resize=False, do_image_splitting=True,
    double_newline_tokens=1,
)  # fmt: skip
_SMOLVLM_512 = dict(_SMOLVLM_384, tile=512, image_seq_len=64, longest_edge=2048)
_PIXTRAL = dict(patch_size=16, spatial_merge_size=1, longest_edge=1024)
# min_pixels one 32 px block: as the product sets every Qwen3-VL processor (data.image_tokens).
_QWEN3_VL = dict(patch_size=16, merge_size=2, min_pixels=32 * 32, max_pixels=4096 * 4096)
_GEMMA3 = dict(image_size=896, image_seq_length=256, double_newline_tokens=1)


def _mirrors(org: str, name: str) -> tuple[str, ...]:
    """The original and Unsloth's copies (16-bit, bnb 4-bit, dynamic 4-bit)."""
    return (f"{org}/{name}", f"unsloth/{name}", f"unsloth/{name}-bnb-4bit",
            f"unsloth/{name}-unsloth-bnb-4bit")  # fmt: skip


KNOWN_ARCHITECTURES: tuple[KnownArchitecture, ...] = (
    KnownArchitecture(
        "qwen2-vl-2b", "qwen2-vl", (1536, 28), _QWEN,
        _mirrors("Qwen", "Qwen2-VL-2B-Instruct") + _mirrors("Qwen", "Qwen2-VL-2B"),
    ),
    KnownArchitecture(
        "qwen2-vl-7b", "qwen2-vl", (3584, 28), _QWEN,
        _mirrors("Qwen", "Qwen2-VL-7B-Instruct") + _mirrors("Qwen", "Qwen2-VL-7B"),
    ),
    KnownArchitecture(
        "qwen2.5-vl-3b", "qwen2.5-vl", (2048, 36), _QWEN,
        _mirrors("Qwen", "Qwen2.5-VL-3B-Instruct"),
    ),
    KnownArchitecture(
        "qwen2.5-vl-7b", "qwen2.5-vl", (3584, 28), _QWEN,
        _mirrors("Qwen", "Qwen2.5-VL-7B-Instruct"),
    ),
    KnownArchitecture(
        "llama-3.2-11b-vision", "llama-3.2-vision", (4096, 40), _MLLAMA,
        _mirrors("meta-llama", "Llama-3.2-11B-Vision-Instruct")
        + _mirrors("meta-llama", "Llama-3.2-11B-Vision"),
    ),
    # SmolVLM: SmolLM2-1.7B / -360M / -135M language models.
    KnownArchitecture(
        "smolvlm-instruct", "smolvlm", (2048, 24), _SMOLVLM_384,
        ("HuggingFaceTB/SmolVLM-Instruct", "HuggingFaceTB/SmolVLM-Base"),
    ),
    KnownArchitecture(
        "smolvlm-500m", "smolvlm", (960, 32), _SMOLVLM_512,
        ("HuggingFaceTB/SmolVLM-500M-Instruct", "HuggingFaceTB/SmolVLM-500M-Base"),
    ),
    KnownArchitecture(
        "smolvlm-256m", "smolvlm", (576, 30), _SMOLVLM_512,
        ("HuggingFaceTB/SmolVLM-256M-Instruct", "HuggingFaceTB/SmolVLM-256M-Base"),
    ),
    KnownArchitecture(
        "smolvlm2-2.2b", "smolvlm2", (2048, 24), _SMOLVLM_384,
        ("HuggingFaceTB/SmolVLM2-2.2B-Instruct", "HuggingFaceTB/SmolVLM2-2.2B-Base"),
    ),
    KnownArchitecture(
        "smolvlm2-500m", "smolvlm2", (960, 32), _SMOLVLM_512,
        ("HuggingFaceTB/SmolVLM2-500M-Video-Instruct",),
    ),
    KnownArchitecture(
        "smolvlm2-256m", "smolvlm2", (576, 30), _SMOLVLM_512,
        ("HuggingFaceTB/SmolVLM2-256M-Video-Instruct",),
    ),
    # mistralai/Pixtral-12B-2409 itself is in Mistral's own format, not loadable by transformers.
    KnownArchitecture(
        "pixtral-12b", "pixtral", (5120, 40), _PIXTRAL,
        ("mistral-community/pixtral-12b",) + _mirrors("unsloth", "Pixtral-12B-2409")[1:]
        + ("unsloth/Pixtral-12B-Base-2409", "unsloth/Pixtral-12B-2409-Base-bnb-4bit"),
    ),
    # Qwen3-VL Instruct (the Thinking checkpoints ship another chat template: not supported).
    KnownArchitecture(
        "qwen3-vl-8b", "qwen3-vl", (4096, 36), _QWEN3_VL, _mirrors("Qwen", "Qwen3-VL-8B-Instruct"),
    ),
    KnownArchitecture(
        "qwen3-vl-4b", "qwen3-vl", (2560, 36), _QWEN3_VL, _mirrors("Qwen", "Qwen3-VL-4B-Instruct"),
    ),
    KnownArchitecture(
        "qwen3-vl-2b", "qwen3-vl", (2048, 28), _QWEN3_VL, _mirrors("Qwen", "Qwen3-VL-2B-Instruct"),
    ),
    # Qwen3.5's dense chat checkpoints (no "-Instruct"; the -Base ones are not listed): the
    # language model's shape, read from copies of their config.json (the official files could
    # not be reached from here); Qwen3-VL's image processor.
    *(
        KnownArchitecture(
            f"qwen3.5-{size.lower()}", "qwen3.5", shape, _QWEN3_VL,
            (f"Qwen/Qwen3.5-{size}", f"unsloth/Qwen3.5-{size}"),
        )
        for size, shape in (
            ("0.8B", (1024, 24)), ("2B", (2048, 24)), ("4B", (2560, 32)), ("9B", (4096, 32)),
        )
    ),  # fmt: skip
    # Gemma 3 instruction-tuned (-it) checkpoints; the -pt ones have no chat template.
    KnownArchitecture(
        "gemma-3-4b", "gemma3", (2560, 34), _GEMMA3, _mirrors("google", "gemma-3-4b-it"),
    ),
    KnownArchitecture(
        "gemma-3-12b", "gemma3", (3840, 48), _GEMMA3, _mirrors("google", "gemma-3-12b-it"),
    ),
)  # fmt: skip

_BY_NAME = {
    name.lower(): arch for arch in KNOWN_ARCHITECTURES for name in (arch.name, *arch.checkpoints)
}


def known_architecture(name: str) -> KnownArchitecture | None:
    """The architecture of a planner name or a listed hub id (case-insensitive), else None."""
    return _BY_NAME.get(name.lower())


def architecture_for_config(family: Family, config: Any) -> KnownArchitecture | None:
    """The known architecture of `family` whose language model has `config`'s width and depth
    (a transformers config or a config.json dict); None for any other size (e.g. tiny models)."""
    if isinstance(config, dict):
        text = config.get("text_config") or config
        shape = (text.get("hidden_size"), text.get("num_hidden_layers"))
    else:
        text = config.get_text_config()
        shape = (text.hidden_size, text.num_hidden_layers)
    for arch in KNOWN_ARCHITECTURES:
        if arch.family == family.key and arch.text_shape == shape:
            return arch
    return None


def describe_known() -> str:
    """Every known architecture with its hub ids, on one line (for error messages)."""
    return "; ".join(f"{a.name} ({', '.join(a.checkpoints)})" for a in KNOWN_ARCHITECTURES)


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
    listed hub ids and cached ones; None when it cannot be known offline."""
    if name in TINY_MODEL_NAMES:
        return TINY_MODEL_NAMES[name]
    arch = known_architecture(name)
    if arch is not None:
        return FAMILIES[arch.family]
    try:
        config = local_config(name)
        return None if config is None else family_for_config(config)
    except ModelError:  # not readable, or not a supported family: loading will say which
        return None
