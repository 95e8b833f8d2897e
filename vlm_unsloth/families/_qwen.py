"""What the Qwen families share (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5): the chat markers, the
vocabulary's special tokens, the image-token schemes (`qwen`: 28 px merged patches; `qwen3`:
32 px), and the tiny processors' and configs' common parts.

- Qwen2-VL / Qwen2.5-VL resize to multiples of patch*merge (28 px) within [min_pixels,
  max_pixels]; each 28x28 block is one `<|image_pad|>` text token: tokens = (h/28)*(w/28).
  `--max-side S` caps the longest side at S itself (Qwen rounds each side to the nearest 28 px).
- Qwen3-VL and Qwen3.5 (`qwen3`) count as Qwen2-VL with 16 px patches merged 2 x 2: one
  `<|image_pad|>` per 32 x 32 block. The cap is the largest multiple of 32 px <= S (rounding to
  the nearest 32 px then stays <= S), with the processor's minimum area lowered to one 32 x 32
  block (`qwen3_processor_settings`): Qwen3-VL's hub minimum of 256 x 256 px would UPSCALE a
  capped 768 x 77 strip to 832 x 96. Small images are therefore seen at their own size, not
  blown up to 256 x 256 (as Qwen2-VL's 56 x 56 minimum already does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vlm_unsloth.families.base import (
    TINY_TEXT_SHAPE,
    VISION_HIDDEN,
    ImageScheme,
    ImageTokenCount,
    TinyTokenizer,
)

QWEN_CHAT = dict(
    instruction_part="<|im_start|>user\n",
    response_part="<|im_start|>assistant\n",
    end_of_turn="<|im_end|>",
    image_token="<|image_pad|>",
    other_image_tokens=("<|vision_start|>", "<|vision_end|>"),
    # smart_resize refuses > 200:1; below 28 px a side cannot make one 28x28 block without
    # an extreme upscale of the other side.
    max_aspect_ratio=200.0,
    min_image_side=28,
)
"""Qwen's prompt format and image limits, as `Family` keyword arguments."""

# Qwen's vocabulary order (ids 151643.. on the hub), the same for Qwen2-VL, Qwen2.5-VL and
# Qwen3-VL. Qwen3's <think>, <tool_call>, ... are added tokens that are NOT special on the hub
# (skip_special_tokens keeps them).
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)  # fmt: skip
QWEN2_TOKENIZER = TinyTokenizer(
    QWEN_SPECIAL_TOKENS, bos=None, eos="<|im_end|>", pad="<|endoftext|>"
)
QWEN3_TOKENIZER = TinyTokenizer(
    QWEN_SPECIAL_TOKENS,
    bos=None,
    eos="<|im_end|>",
    pad="<|endoftext|>",
    added_tokens=(
        "<tool_call>",
        "</tool_call>",
        "<|fim_prefix|>",
        "<|fim_middle|>",
        "<|fim_suffix|>",
        "<|fim_pad|>",
        "<|repo_name|>",
        "<|file_sep|>",
        "<tool_response>",
        "</tool_response>",
        "<think>",
        "</think>",
    ),  # fmt: skip
)

# The real processors' parameters (the planner counts tokens with them). min_pixels one 32 px
# block for Qwen3-VL: as the product sets every Qwen3-VL processor (`qwen3_processor_settings`).
QWEN2_IMAGE_SETTINGS = dict(
    patch_size=14, merge_size=2, min_pixels=56 * 56, max_pixels=28 * 28 * 16384
)
QWEN3_IMAGE_SETTINGS = dict(patch_size=16, merge_size=2, min_pixels=32 * 32, max_pixels=4096 * 4096)
QWEN2_ROPE = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}
"""The real Qwen2-VL-7B / Qwen2.5-VL-7B language models' M-RoPE."""


# --- Image tokens ------------------------------------------------------------------------------


def qwen_image_tokens(
    width: int,
    height: int,
    *,
    patch_size: int = 14,
    merge_size: int = 2,
    min_pixels: int = 56 * 56,
    max_pixels: int = 28 * 28 * 1280,
) -> ImageTokenCount:
    """Qwen2-VL/Qwen2.5-VL: tokens = (h'/28)*(w'/28) after the processor's smart resize.

    Raises ValueError for an aspect ratio over 200:1, as the processor does.
    """
    # Imported here: importing a family must not import transformers before Unsloth.
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    factor = patch_size * merge_size
    new_h, new_w = smart_resize(
        height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels
    )
    tokens = (new_h // factor) * (new_w // factor)
    return ImageTokenCount(text_tokens=tokens, vision_tokens=tokens, resized=(new_w, new_h))


def qwen_settings(processor: Any) -> dict:
    """The scheme's parameters of a loaded processor (or its image processor)."""
    image_processor = getattr(processor, "image_processor", processor)
    return dict(
        patch_size=image_processor.patch_size,
        merge_size=image_processor.merge_size,
        min_pixels=image_processor.size["shortest_edge"],
        max_pixels=image_processor.size["longest_edge"],
    )


def qwen3_cap(max_side: int, *, patch_size: int, merge_size: int, **_: Any) -> int:
    """The largest multiple of the merged patch (32 px) that fits in `max_side`."""
    factor = patch_size * merge_size
    return max(factor, max_side // factor * factor)


def qwen3_processor_settings(image_processor: Any) -> dict:
    """One 32 x 32 block as the minimum area (see the module docstring); the maximum stays the
    checkpoint's (a capped image is far below it)."""
    # Set as `size`, the attribute the processor reads: min_pixels=/max_pixels= at construction
    # rewrite the CLASS default instead.
    factor = image_processor.patch_size * image_processor.merge_size
    return {
        "size": {
            "shortest_edge": factor * factor,
            "longest_edge": image_processor.size["longest_edge"],
        }
    }


QWEN_SCHEME = ImageScheme("qwen", qwen_settings, qwen_image_tokens)
QWEN3_SCHEME = ImageScheme(
    "qwen3", qwen_settings, qwen_image_tokens, qwen3_cap, qwen3_processor_settings
)


# --- Tiny checkpoints --------------------------------------------------------------------------


def qwen2_processor(processor_class: str) -> Callable[..., Any]:
    """The Qwen2-VL / Qwen2.5-VL processor builder (`Architecture.processor`) of that class."""

    def build(tokenizer, real_size: bool = False):
        import transformers
        from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

        from vlm_unsloth.families._templates import trl_template

        # The real checkpoints' pixel bounds. Passed as `size`, never as min_pixels/max_pixels:
        # those kwargs rewrite the CLASS default and leak into every processor made later.
        size = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16384}
        image_processor = Qwen2VLImageProcessor(size=size, patch_size=14, merge_size=2)
        video_processor = Qwen2VLVideoProcessor(size=size, patch_size=14, merge_size=2)
        return getattr(transformers, processor_class)(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=video_processor,
            # The hub's exact Qwen2-VL / Qwen2.5-VL template (byte-identical for both).
            chat_template=trl_template("qwen2_5_vl.jinja"),
        )

    return build


def qwen2_text_config(tokenizer, text: dict | None) -> dict:
    """The tiny Qwen2-VL / Qwen2.5-VL language model (`text` overrides it: real sizes)."""
    ids = tokenizer.convert_tokens_to_ids
    text_config = dict(
        TINY_TEXT_SHAPE,
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
        # M-RoPE splits head_dim/2 frequencies over (time, height, width), as [16, 24, 24]
        # does for the real 128-wide heads.
        rope_parameters={
            "rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3],
        },
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"),
    ) | (text or {})  # fmt: skip
    head_dim = text_config["hidden_size"] // text_config["num_attention_heads"]
    if sum(text_config["rope_parameters"]["mrope_section"]) != head_dim // 2:
        raise ValueError("mrope_section must split head_dim / 2 frequencies")
    return text_config


def media_token_ids(tokenizer) -> dict:
    """The config's ids of Qwen's image, video and vision start/end tokens."""
    ids = tokenizer.convert_tokens_to_ids
    return dict(
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )


# Qwen3-VL-*-Instruct's preprocessor_config.json: 16 px patches merged 2 x 2, 256^2 .. 4096^2 px
# (the product lowers the minimum: `qwen3_processor_settings`), mean/std 0.5; its video processor
# (required by Qwen3VLProcessor even for images) 64^2 .. 25,165,824 px. From memory of the hub
# files, except the patch geometry and normalisation, which the model code fixes.
QWEN3_VL_IMAGE_SIZE = {"shortest_edge": 65_536, "longest_edge": 16_777_216}
QWEN3_VL_VIDEO_SIZE = {"shortest_edge": 4_096, "longest_edge": 25_165_824}


def qwen3_processor(chat_template: str) -> Callable[..., Any]:
    """The hub's Qwen3-VL processor builder (the same at every size, and Qwen3.5's) with the
    chat template TRL ships under `chat_template`."""

    def build(tokenizer, real_size: bool = False):
        from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

        from vlm_unsloth.families._templates import trl_template

        geometry = dict(patch_size=16, temporal_patch_size=2, merge_size=2)
        normalise = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
        # `size`, never min_pixels=/max_pixels=: those rewrite the CLASS default of every later
        # Qwen2VLImageProcessor in the process.
        image_processor = Qwen2VLImageProcessor(
            size=dict(QWEN3_VL_IMAGE_SIZE), **geometry, **normalise
        )
        video_processor = Qwen3VLVideoProcessor(
            size=dict(QWEN3_VL_VIDEO_SIZE), **geometry, **normalise
        )
        return Qwen3VLProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=video_processor,
            chat_template=trl_template(chat_template),  # the hub's template
        )

    return build


def qwen3_tower(out_hidden_size: int, **settings) -> dict:
    """The tiny Qwen3-VL / Qwen3.5 vision tower: 16 px patches merged 2 x 2 into the text
    width, the hub's learned 48 x 48 position grid (resampled per image)."""
    return dict(
        hidden_size=VISION_HIDDEN,
        intermediate_size=2 * VISION_HIDDEN,
        num_heads=2,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=out_hidden_size,
        num_position_embeddings=2304,
        hidden_act="gelu_pytorch_tanh",
        **settings,
    )
