"""Per-family facts in one table: chat markers, image tokens, default checkpoints, tiny names.

Adding a model family is one `Family` entry here, plus its tiny checkpoint in `models/tiny.py`
(and, for a new way of turning images into tokens, its formula in `data/image_tokens.py`).
Code elsewhere asks `family_for_model_type(config.model_type)` instead of sniffing model names.
"""

from __future__ import annotations

from dataclasses import dataclass

from vlm_unsloth.errors import ModelError


@dataclass(frozen=True)
class Family:
    key: str
    """Short name used in messages and presets, e.g. "qwen2-vl"."""
    model_type: str
    """`config.model_type` of the checkpoint (how a folder is recognised)."""
    default_model: str
    """The hub checkpoint a user of this family starts from."""
    tiny_name: str
    """Name of the tiny random-weight checkpoint (`--model tiny-...`)."""
    instruction_part: str
    """Text that opens a user turn; the loss is masked from here to `response_part`."""
    response_part: str
    """Text that opens an assistant turn; tokens after it (to the turn's end) are supervised."""
    end_of_turn: str
    """Token that closes every turn (supervised after an answer so generation stops)."""
    image_token: str
    """The token that stands for image content in `input_ids` (never supervised)."""
    max_aspect_ratio: float | None
    """Longest/shortest side beyond which the processor refuses an image (None: no limit)."""
    min_image_side: int
    """Smallest side in pixels the processor can take."""
    image_tokens: str
    """How the processor turns an image into tokens: the scheme `data.image_tokens` counts with
    ("qwen": merged patches; "mllama": tiles behind one <|image|> token)."""

    @property
    def images_by_cross_attention(self) -> bool:
        """Images reach the language model through cross-attention layers (Mllama), not as
        tokens of the sequence: a forward over prompt + completion needs the aspect ratios and a
        cross-attention mask covering the whole sequence, which TRL's GRPO does not carry."""
        return self.image_tokens == "mllama"


_QWEN_CHAT = dict(
    instruction_part="<|im_start|>user\n",
    response_part="<|im_start|>assistant\n",
    end_of_turn="<|im_end|>",
    image_token="<|image_pad|>",
    # smart_resize refuses > 200:1; below 28 px a side cannot make one 28x28 block without
    # an extreme upscale of the other side.
    max_aspect_ratio=200.0,
    min_image_side=28,
    image_tokens="qwen",
)

FAMILIES: dict[str, Family] = {
    family.key: family
    for family in (
        Family(
            key="qwen2-vl",
            model_type="qwen2_vl",
            default_model="unsloth/Qwen2-VL-7B-Instruct",
            tiny_name="tiny-qwen2-vl",
            **_QWEN_CHAT,
        ),
        Family(
            key="qwen2.5-vl",
            model_type="qwen2_5_vl",
            default_model="unsloth/Qwen2.5-VL-7B-Instruct",
            tiny_name="tiny-qwen2.5-vl",
            **_QWEN_CHAT,
        ),
        Family(
            key="llama-3.2-vision",
            model_type="mllama",
            default_model="unsloth/Llama-3.2-11B-Vision-Instruct",
            tiny_name="tiny-llama-3.2-vision",
            instruction_part="<|start_header_id|>user<|end_header_id|>\n\n",
            response_part="<|start_header_id|>assistant<|end_header_id|>\n\n",
            end_of_turn="<|eot_id|>",
            image_token="<|image|>",
            max_aspect_ratio=None,  # tiles any aspect ratio onto a canvas of up to 4 tiles
            min_image_side=1,
            image_tokens="mllama",
        ),
    )
}

TINY_MODEL_NAMES: dict[str, Family] = {family.tiny_name: family for family in FAMILIES.values()}


def family_for_model_type(model_type: str, *, where: str = "--model") -> Family:
    """The family of a checkpoint whose config says `model_type`."""
    for family in FAMILIES.values():
        if family.model_type == model_type:
            return family
    supported = ", ".join(f"{f.key} ({f.model_type})" for f in FAMILIES.values())
    raise ModelError(
        f"model_type {model_type!r} is not a supported vision-language family",
        where=where,
        fix=f"use a checkpoint of: {supported}",
    )
