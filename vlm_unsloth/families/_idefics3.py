"""What SmolVLM (model_type idefics3) and SmolVLM2 (smolvlm) share: the Idefics3 prompt format,
its image tiling (`idefics3` scheme) and the tiny checkpoints' common parts.

Prompt format: "User:<image>...<end_of_utterance>\\nAssistant: answer<end_of_utterance>" (TRL's
idefics3.jinja). The role is followed by ":" before an image and ": " before text, so the answer
starts with a space token: the markers have no trailing space.

Image layout: the processor resizes the longest side TO size["longest_edge"] (up or down) unless
do_resize is off, rounds both sides up to whole tiles of max_image_size px (the short side is
stretched), and splits an image over one tile into rows x cols tiles plus a global view squashed
to one tile; a view is `image_seq_len` <image> tokens. Text per image: one view =
<fake><global-img><image>*S<fake> (S + 3 tokens); rows x cols = per row cols x
(<fake><row_r_col_c><image>*S) + "\\n", then "\\n<fake><global-img><image>*S<fake>"
(rows*cols*(S+2) + rows-1 + T("\\n\\n") + S + 3).

`--max-side S`: the largest whole number of tiles <= S (1 to 6 tiles: <row_6_col_6> is the last
row/column token), with the processor's own resize switched off: it would UPSCALE every image
to 1536 px (SmolVLM-Instruct). Tile rounding then stays <= the cap. An image under one tile
still becomes one tile-sized view (the encoder's input size).
"""

from __future__ import annotations

import math
from typing import Any

from vlm_unsloth.families.base import (
    SIGLIP_SO400M_896,
    TINY_TEXT_SHAPE,
    VISION_HIDDEN,
    ImageScheme,
    ImageTokenCount,
    TinyTokenizer,
)

MAX_GRID = 6
"""Tiles per side: only <row_1_col_1> .. <row_6_col_6> exist as tokens."""

SMOLVLM_CHAT = dict(
    instruction_part="User:",
    response_part="Assistant:",
    end_of_turn="<end_of_utterance>",
    image_token="<image>",
    other_image_tokens=(
        "<fake_token_around_image>",
        "<global-img>",
        *(f"<row_{r}_col_{c}>" for r in range(1, MAX_GRID + 1) for c in range(1, MAX_GRID + 1)),
    ),
    max_aspect_ratio=None,  # any shape: the tile grid follows it (the short side is stretched)
    min_image_side=1,
    # The processor matches images to rows: a batch with a text-only row needs [[a], [], [b]].
    nested_images=True,
)
"""The Idefics3 prompt format and image limits, as `Family` keyword arguments."""

# SmolLM2's tokens plus Idefics3's image layout tokens (<row_r_col_c> up to 6 x 6).
_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<global-img>",
    *(f"<row_{r}_col_{c}>" for r in range(1, MAX_GRID + 1) for c in range(1, MAX_GRID + 1)),
    "<fake_token_around_image>", "<image>", "<end_of_utterance>",
)  # fmt: skip


def tokenizer(*more_special_tokens: str) -> TinyTokenizer:
    """The tiny SmolLM2 tokenizer; it also learns "\\n\\n" as one token, as in the real SmolLM2
    (the split-image prompt holds one), and its role names."""
    return TinyTokenizer(
        (*_SPECIAL_TOKENS, *more_special_tokens),
        bos="<|im_start|>",
        eos="<end_of_utterance>",
        pad="<|im_end|>",
        unk="<|endoftext|>",
        extra_corpus="User: Assistant: System:\n\nFirst line.\n\nSecond line.\n\n",
    )


# The real processors' parameters (do_resize off, as the product sets every Idefics3 processor).
SMOLVLM_384 = dict(
    tile=384, image_seq_len=81, longest_edge=1536, do_resize=False, do_image_splitting=True,
    double_newline_tokens=1,
)  # fmt: skip
SMOLVLM_512 = dict(SMOLVLM_384, tile=512, image_seq_len=64, longest_edge=2048)
SIGLIP_SO400M_384 = {**SIGLIP_SO400M_896, "image_size": 384}
SMOLLM2_1_7B = dict(
    vocab_size=49280, hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
    num_attention_heads=32, num_key_value_heads=32, rms_norm_eps=1e-5,
)  # fmt: skip
"""SmolVLM's 2.2B text model; the two SmolVLM generations differ in context and RoPE base."""


# --- Image tokens ------------------------------------------------------------------------------


def idefics3_image_tokens(
    width: int,
    height: int,
    *,
    tile: int = 384,
    image_seq_len: int = 81,
    longest_edge: int = 1536,
    do_resize: bool = True,
    do_image_splitting: bool = True,
    double_newline_tokens: int = 1,
) -> ImageTokenCount:
    """Defaults are SmolVLM-Instruct's (384 px tiles, 81 tokens a view, resized to 1536 px).
    `double_newline_tokens`: len(tokenizer("\\n\\n")), 1 in SmolLM2.

    Raises ValueError past 6 x 6 tiles: no <row_7_col_1> token exists, so the prompt would be
    tokenized into an unpredictable number of pieces (`idefics3_cap` keeps images under it).
    """
    # Imported here: importing a family must not import transformers before Unsloth.
    from transformers.models.idefics3.image_processing_idefics3 import (
        MAX_IMAGE_SIZE,
        _resize_output_size_rescale_to_max_len,
        _resize_output_size_scale_below_upper_bound,
    )

    h, w = height, width
    if do_resize:
        h, w = _resize_output_size_rescale_to_max_len(h, w, max_len=longest_edge)
        h, w = _resize_output_size_scale_below_upper_bound(h, w, max_len=MAX_IMAGE_SIZE)
    if not do_image_splitting:  # the image is squashed to one tile
        return ImageTokenCount(image_seq_len + 3, image_seq_len, resized=(tile, tile))
    # resize_for_vision_encoder: the long side up to whole tiles, the short side from the ratio.
    ratio = w / h
    if w >= h:
        w = math.ceil(w / tile) * tile
        h = math.ceil(int(w / ratio) / tile) * tile
    else:
        h = math.ceil(h / tile) * tile
        w = math.ceil(int(h * ratio) / tile) * tile
    if h <= tile and w <= tile:
        return ImageTokenCount(image_seq_len + 3, image_seq_len, resized=(w, h))
    rows, cols = h // tile, w // tile
    if rows > MAX_GRID or cols > MAX_GRID:
        raise ValueError(
            f"{width}x{height} becomes {rows}x{cols} tiles of {tile} px: over the 6x6 grid that "
            "has <row_r_col_c> tokens"
        )
    text = rows * cols * (image_seq_len + 2) + (rows - 1) + double_newline_tokens
    views = rows * cols + 1
    return ImageTokenCount(
        text_tokens=text + image_seq_len + 3,
        vision_tokens=views * image_seq_len,
        resized=(w, h),
        tiles=views,
    )


def idefics3_cap(max_side: int, *, tile: int, **_: Any) -> int:
    """The largest whole number of tiles (1 to 6) that fits in `max_side`."""
    return tile * max(1, min(MAX_GRID, max_side // tile))


def idefics3_settings(processor: Any) -> dict:
    """The scheme's parameters of a loaded processor."""
    image_processor = processor.image_processor  # image_seq_len lives on the processor
    newline = processor.tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    return dict(
        tile=image_processor.max_image_size["longest_edge"],
        image_seq_len=processor.image_seq_len,
        longest_edge=image_processor.size["longest_edge"],
        do_resize=image_processor.do_resize,
        do_image_splitting=image_processor.do_image_splitting,
        double_newline_tokens=len(newline),
    )


def _resize_off(image_processor: Any) -> dict:
    # do_resize off: the processor would set every image's longest side TO
    # size["longest_edge"] (1536 px for SmolVLM-Instruct), upscaling a capped image far past
    # --max-side.
    return {"do_resize": False}


IDEFICS3_SCHEME = ImageScheme(
    "idefics3", idefics3_settings, idefics3_image_tokens, idefics3_cap, _resize_off
)


# --- Tiny checkpoints --------------------------------------------------------------------------

# SmolVLM-Instruct has 384 px tiles of 14 px patches, pixel-shuffled by 3 (81 tokens a view) and
# resizes to 4 tiles (1536 px); the tiny keeps the code path with 128 px tiles, 16 px patches
# and a shuffle of 2 (16 tokens a view), resizing to 512 px.
TINY_GEOMETRY = dict(tile=128, patch=16, scale=2)
REAL_GEOMETRY = dict(tile=384, patch=14, scale=3)


def geometry(real_size: bool) -> dict:
    """Tile, patch, pixel-shuffle scale and tokens a view, tiny or real."""
    chosen = REAL_GEOMETRY if real_size else TINY_GEOMETRY
    tile, patch, scale = chosen["tile"], chosen["patch"], chosen["scale"]
    return dict(chosen, image_seq_len=(tile // patch) ** 2 // scale**2)


def image_options(real_size: bool) -> dict:
    """The image (and video) processors' options, as the hub's preprocessor_config.json."""
    tile = geometry(real_size)["tile"]
    return dict(
        do_image_splitting=True,
        size={"longest_edge": 4 * tile},  # the hub's 1536 = 4 x 384 (SmolVLM-Instruct)
        max_image_size={"longest_edge": tile},
        resample=1,  # LANCZOS, as the hub's preprocessor_config.json
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def tiny_config(config_class: str):
    """The config builder (`Architecture.config`) of Idefics3Config or SmolVLMConfig."""

    def build(tokenizer, text=None, vision=None, top=None):
        import transformers

        ids = tokenizer.convert_tokens_to_ids
        tiny = geometry(real_size=False)
        vision_config = dict(
            hidden_size=VISION_HIDDEN,
            intermediate_size=2 * VISION_HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=tiny["tile"],
            patch_size=tiny["patch"],
        ) | (vision or {})
        text_config = dict(
            TINY_TEXT_SHAPE,
            model_type="llama",
            vocab_size=len(tokenizer),
            max_position_embeddings=8192,
            rms_norm_eps=1e-5,
            bos_token_id=ids("<|im_start|>"),
            eos_token_id=ids("<end_of_utterance>"),
            pad_token_id=ids("<|im_end|>"),
            tie_word_embeddings=False,
        ) | (text or {})
        return getattr(transformers, config_class)(
            vision_config=vision_config,
            text_config=text_config,
            image_token_id=ids("<image>"),
            pad_token_id=ids("<|im_end|>"),
            tie_word_embeddings=False,
            **({"scale_factor": tiny["scale"]} | (top or {})),
        )

    return build
