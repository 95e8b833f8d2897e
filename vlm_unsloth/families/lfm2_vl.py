"""LFM2-VL and LFM2.5-VL (Liquid AI): a SigLIP2 NaFlex vision tower, a pixel-unshuffle projector
and an LFM2 language model whose layers are short gated convolutions with a few attention layers
between them.

Prompt format (TRL's lfm2_2_5_vl.jinja, the hub's LFM2.5-VL template; LFM2-VL's, from memory,
renders these prompts the same): "<|startoftext|><|im_start|>user\\n<image>question<|im_end|>\\n
<|im_start|>assistant\\nanswer<|im_end|>\\n", ChatML as Qwen's (markers written out here, not
shared: Qwen's dict also holds its image tokens).

Image layout (Lfm2VlImageProcessor): sizes are rounded to multiples of 32 px (16 px patches,
unshuffled 2 x 2 into one token) within min_image_tokens .. max_image_tokens (hub: 64 .. 256,
i.e. 256^2 .. 512^2 px of area). An image whose area (rounded to 32 px) is over
max_pixels_tolerance (2) times the 512^2 limit is TILED: stretched onto the grid of 512 px tiles
(2 to 10 of them) whose shape is nearest its aspect ratio, 256 tokens a tile, plus a thumbnail
(the image smart-resized as a single view). Text per image: "<|image_start|>" +
per tile "<|img_row_r_col_c|>" + T x "<image>", then "<|img_thumbnail|>" + N x "<image>" +
"<|image_end|>"; a single view is "<|image_start|>" + N x "<image>" + "<|image_end|>".

`--max-side S`: images are shrunk to the largest multiple of 32 px <= S (rounding to the nearest
32 px then never passes S), and, below S = 2 tiles (1024 px), to at most the largest square that
stays one view (704 px): every tile grid is at least 2 tiles long, so tiling an image capped
under 1024 px would only upsample it onto the grid (the single view sees at most 512^2 px of
area anyway). From S = 1024 px, images over the tiling threshold are tiled as the hub's
processor does; the grid follows the aspect ratio, so its canvas may be longer than S (the
processor upsamples onto whole tiles, as Mllama's canvas). The product lowers min_image_tokens to
1 (`lfm2_processor_settings`): the hub's 64 would upscale a small image or a thin strip (a
300 x 3 strip to 2560 x 32 px); small images are seen at their own size, rounded to
32 px, as Qwen3-VL's minimum is lowered.
"""

from __future__ import annotations

import math
from typing import Any

from vlm_unsloth.families._templates import trl_template
from vlm_unsloth.families.base import (
    TEXT_HIDDEN,
    TINY_TEXT_SHAPE,
    VISION_HIDDEN,
    Architecture,
    Family,
    ImageScheme,
    ImageTokenCount,
    ModelSize,
    RealConfig,
    TinyTokenizer,
)

MAX_GRID = 10
"""Tiles per side at most (max_tiles 10: a 10 x 1 grid): <|img_row_10_col_1|> is a token."""
TILE_TOKENS = tuple(
    f"<|img_row_{r}_col_{c}|>" for r in range(1, MAX_GRID + 1) for c in range(1, MAX_GRID + 1)
)

# The hub's preprocessor_config.json (LFM2-VL-450M, -1.6B and LFM2.5-VL-1.6B, from memory of the
# hub files: no Hub here), with min_image_tokens as the product sets it.
REAL_IMAGE_SETTINGS = dict(
    tile_size=512, encoder_patch_size=16, downsample_factor=2, min_image_tokens=1,
    max_image_tokens=256, min_tiles=2, max_tiles=10, use_thumbnail=True,
    do_image_splitting=True, max_pixels_tolerance=2.0,
)  # fmt: skip
# The tiny checkpoint: 256 px tiles of 64 tokens (the same code path with smaller counts).
TINY_TILE = 256
TINY_IMAGE_TOKENS = dict(min_image_tokens=16, max_image_tokens=64)  # hub: 64 .. 256


# --- Image tokens ------------------------------------------------------------------------------


def smart_resize(
    height: int, width: int, *, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """(height, width) as Lfm2VlImageProcessor.smart_resize (a method there, not a function):
    the nearest multiples of `factor`, shrunk (floor) above `max_pixels`, grown (ceil) below
    `min_pixels`."""
    from transformers.models.lfm2_vl.image_processing_lfm2_vl import round_by_factor

    h_bar = max(factor, round_by_factor(height, factor))
    w_bar = max(factor, round_by_factor(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def tile_threshold(
    *, encoder_patch_size: int, downsample_factor: int, max_image_tokens: int,
    max_pixels_tolerance: float,
) -> float:  # fmt: skip
    """The area (of the sides rounded to 32 px) over which an image is tiled."""
    pixels_per_token = (encoder_patch_size * downsample_factor) ** 2
    return max_image_tokens * pixels_per_token * max_pixels_tolerance


def _grids(min_tiles: int, max_tiles: int) -> list[tuple[int, int]]:
    # The processor's _target_ratios, in its order (ties go by this order).
    ratios = [
        (w, h)
        for n in range(min_tiles, max_tiles + 1)
        for w in range(1, n + 1)
        for h in range(1, n + 1)
        if min_tiles <= w * h <= max_tiles
    ]
    return sorted(set(ratios), key=lambda x: x[0] * x[1])


def lfm2_image_tokens(
    width: int,
    height: int,
    *,
    tile_size: int = 512,
    encoder_patch_size: int = 16,
    downsample_factor: int = 2,
    min_image_tokens: int = 64,
    max_image_tokens: int = 256,
    min_tiles: int = 2,
    max_tiles: int = 10,
    use_thumbnail: bool = True,
    do_image_splitting: bool = True,
    max_pixels_tolerance: float = 2.0,
) -> ImageTokenCount:
    """Defaults are the hub's. One view: N = (h/32)*(w/32) tokens of the smart-resized image;
    tiled: rows x cols tiles of (tile/32)^2 tokens plus the thumbnail's N."""
    from transformers.models.lfm2_vl.image_processing_lfm2_vl import (
        find_closest_aspect_ratio,
        round_by_factor,
    )

    factor = encoder_patch_size * downsample_factor
    per_token = factor * factor
    new_h, new_w = smart_resize(
        height, width, factor=factor, min_pixels=min_image_tokens * per_token,
        max_pixels=max_image_tokens * per_token,
    )  # fmt: skip
    view = math.ceil((new_h // encoder_patch_size) / downsample_factor) * math.ceil(
        (new_w // encoder_patch_size) / downsample_factor
    )
    splitting = do_image_splitting and not min_tiles == max_tiles == 1
    rounded = max(encoder_patch_size, round_by_factor(height, factor)) * max(
        encoder_patch_size, round_by_factor(width, factor)
    )
    threshold = tile_threshold(
        encoder_patch_size=encoder_patch_size, downsample_factor=downsample_factor,
        max_image_tokens=max_image_tokens, max_pixels_tolerance=max_pixels_tolerance,
    )  # fmt: skip
    if not splitting or rounded <= threshold:
        return ImageTokenCount(view + 2, view, resized=(new_w, new_h))
    cols, rows = find_closest_aspect_ratio(
        width / height, _grids(min_tiles, max_tiles), width, height, tile_size
    )
    if rows == cols == 1:  # (only with min_tiles 1)
        return ImageTokenCount(view + 2, view, resized=(new_w, new_h))
    per_tile = math.ceil((tile_size // encoder_patch_size) / downsample_factor) ** 2
    thumbnail = view if use_thumbnail else 0
    text = 2 + rows * cols * (1 + per_tile) + (1 + thumbnail if use_thumbnail else 0)
    return ImageTokenCount(
        text_tokens=text,
        vision_tokens=rows * cols * per_tile + thumbnail,
        resized=(cols * tile_size, rows * tile_size),
        tiles=rows * cols + int(use_thumbnail),
    )


def lfm2_cap(
    max_side: int, *, tile_size: int, encoder_patch_size: int, downsample_factor: int,
    max_image_tokens: int, max_pixels_tolerance: float, do_image_splitting: bool,
    max_tiles: int, **_: Any,
) -> int:  # fmt: skip
    """The largest multiple of 32 px <= `max_side`; under 2 tiles, at most the largest square
    that stays one view (see the module docstring)."""
    factor = encoder_patch_size * downsample_factor
    cap = max(factor, max_side // factor * factor)
    if do_image_splitting and max_tiles > 1 and max_side < 2 * tile_size:
        threshold = tile_threshold(
            encoder_patch_size=encoder_patch_size, downsample_factor=downsample_factor,
            max_image_tokens=max_image_tokens, max_pixels_tolerance=max_pixels_tolerance,
        )  # fmt: skip
        one_view = math.isqrt(int(threshold)) // factor * factor
        cap = min(cap, one_view)
    return cap


def lfm2_settings(processor: Any) -> dict:
    """The scheme's parameters of a loaded processor (or its image processor)."""
    image_processor = getattr(processor, "image_processor", processor)
    return {name: getattr(image_processor, name) for name in REAL_IMAGE_SETTINGS}


def lfm2_processor_settings(image_processor: Any) -> dict:
    """min_image_tokens 1: small images are not blown up to 64 tokens (module docstring)."""
    return {"min_image_tokens": 1}


LFM2_SCHEME = ImageScheme(
    "lfm2-tiles", lfm2_settings, lfm2_image_tokens, lfm2_cap, lfm2_processor_settings
)


# --- Tiny checkpoint ---------------------------------------------------------------------------


def tiny_processor(tokenizer, real_size: bool = False):
    """The hub's processor with the tiny tokenizer: 512 px tiles (real) or 256 px (tiny)."""
    from transformers import Lfm2VlImageProcessor, Lfm2VlProcessor

    geometry = (
        dict(tile_size=512, min_image_tokens=64, max_image_tokens=256)
        if real_size
        else dict(tile_size=TINY_TILE, **TINY_IMAGE_TOKENS)
    )
    image_processor = Lfm2VlImageProcessor(
        **geometry,
        encoder_patch_size=16,
        downsample_factor=2,
        min_tiles=2,
        max_tiles=MAX_GRID,
        use_thumbnail=True,
        do_image_splitting=True,
        max_pixels_tolerance=2.0,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return Lfm2VlProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=trl_template("lfm2_2_5_vl.jinja"),  # the hub's LFM2.5-VL template
    )


def tiny_config(tokenizer, text=None, vision=None, top=None):
    """Tiny LFM2-VL: a 2-layer LFM2 (one short-conv layer, one attention layer), a 2-layer
    SigLIP2 NaFlex tower without its pooling head, the pixel-unshuffle projector."""
    from transformers import Lfm2VlConfig

    ids = tokenizer.convert_tokens_to_ids
    vision_config = dict(
        model_type="siglip2_vision_model",
        hidden_size=VISION_HIDDEN,
        intermediate_size=2 * VISION_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        patch_size=16,
        num_patches=256,  # the position grid (16 x 16), resampled to each image's patches
        vision_use_head=False,  # LFM2-VL reads the last hidden state: no pooling head
    ) | (vision or {})
    text_config = dict(
        TINY_TEXT_SHAPE,
        model_type="lfm2",
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
        # Both kinds of LFM2 layer (the real 1.2B: attention at 2, 5, 8, 10, 12, 14).
        layer_types=["conv", "full_attention"],
        block_auto_adjust_ff_dim=False,  # the MLP is intermediate_size wide as written
        conv_L_cache=3,
        norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        bos_token_id=ids("<|startoftext|>"),
        eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|pad|>"),
        # Untied, unlike the hub's (the real sizes tie them): with random tied embeddings the
        # greedy answer repeats the prompt's last token ("\n") forever, an empty answer.
        tie_word_embeddings=False,
    ) | (text or {})
    return Lfm2VlConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_id=ids("<image>"),
        downsample_factor=2,
        **(dict(projector_hidden_size=2 * TEXT_HIDDEN, tie_word_embeddings=False) | (top or {})),
    )


LFM2_1_2B = dict(
    vocab_size=65536, hidden_size=2048, intermediate_size=12288, num_hidden_layers=16,
    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=128000,
    block_auto_adjust_ff_dim=True, block_multiple_of=256, block_ffn_dim_multiplier=1.0,
    layer_types=["full_attention" if i in (2, 5, 8, 10, 12, 14) else "conv" for i in range(16)],
    tie_word_embeddings=True,
)  # fmt: skip
"""LFM2-1.2B / LFM2.5-1.2B (MLP 2/3 of 12288 = 8192 wide): transformers' Lfm2Config defaults
are another size; these are from memory of the hub's config.json."""


FAMILY = Family(
    key="lfm2-vl",
    model_type="lfm2_vl",
    default_model="LiquidAI/LFM2.5-VL-1.6B",
    tiny_name="tiny-lfm2-vl",
    instruction_part="<|im_start|>user\n",
    response_part="<|im_start|>assistant\n",
    end_of_turn="<|im_end|>",
    image_token="<image>",
    other_image_tokens=("<|image_start|>", "<|image_end|>", "<|img_thumbnail|>", *TILE_TOKENS),
    max_aspect_ratio=None,  # any shape: a strip is one 32 px row of tokens
    min_image_side=1,
    # The processor matches images to rows: a batch with a text-only row needs [[a], [], [b]].
    nested_images=True,
    vision_tower="model.vision_tower",
    language_model="model.language_model",
    connector="multi_modal_projector",
    # LFM2's short-conv layers: "layers.N.conv.in_proj" has no attention/MLP tag, so Unsloth's
    # LoRA rule (and ours, equal to it) adapts only their feed_forward; the attention layers'
    # self_attn and feed_forward are adapted.
    unadapted_blocks=("conv",),
    # SigLIP2's NaFlex patch embedding is a Linear whose weight dtype the tower casts the pixels
    # to: packed into 4-bit (uint8) it turns the pixels into integers, and training fails with
    # "only Tensors of floating point dtype can require gradients".
    unquantized_modules=("patch_embedding",),
    image_scheme=LFM2_SCHEME,
    architecture=Architecture(
        # LFM2's control tokens first (ids 0-13 as on the hub), then the image tokens (<image>
        # is 396 on the hub, the layout tokens after it).
        TinyTokenizer(
            (
                "<|pad|>",
                "<|startoftext|>",
                "<|endoftext|>",
                "<|fim_pre|>",
                "<|fim_mid|>",
                "<|fim_suf|>",
                "<|im_start|>",
                "<|im_end|>",
                "<|tool_list_start|>",
                "<|tool_list_end|>",
                "<|tool_call_start|>",
                "<|tool_call_end|>",
                "<|tool_response_start|>",
                "<|tool_response_end|>",
                "<image>",
                "<|image_start|>",
                "<|image_end|>",
                "<|img_thumbnail|>",
                *TILE_TOKENS,
            ),
            bos="<|startoftext|>",
            eos="<|im_end|>",
            pad="<|pad|>",
        ),  # fmt: skip
        tiny_processor,
        tiny_config,
        "Lfm2VlForConditionalGeneration",
    ),
    # From memory of the hub's config.json files (no Hub here): the text models' shapes are the
    # surest; the towers' depth (the hub drops SigLIP2's last layer) and the projector width
    # least. LFM2-VL-1.6B and LFM2.5-VL-1.6B share the architecture (LFM2.5 is more training of
    # the same 1.2B text model): one size, recognised by its (2048, 16) text model.
    sizes=(
        ModelSize(
            "lfm2.5-vl-1.6b",
            (2048, 16),
            REAL_IMAGE_SETTINGS,
            ("LiquidAI/LFM2.5-VL-1.6B", "LiquidAI/LFM2-VL-1.6B"),
            real=RealConfig(
                text_config=LFM2_1_2B,
                # SigLIP2 so400m NaFlex (shape-optimised 400M), 16 px patches.
                vision_config=dict(
                    hidden_size=1152,
                    intermediate_size=4304,
                    num_hidden_layers=26,
                    num_attention_heads=16,
                    patch_size=16,
                    num_patches=256,
                ),
                config=dict(projector_hidden_size=2560, tie_word_embeddings=True),
            ),
        ),
        ModelSize(
            "lfm2-vl-450m",
            (1024, 16),
            REAL_IMAGE_SETTINGS,
            ("LiquidAI/LFM2-VL-450M",),
            real=RealConfig(
                # LFM2-350M: MLP 2/3 of 6656 rounded up to 256 = 4608 wide.
                text_config=dict(
                    LFM2_1_2B,
                    hidden_size=1024,
                    intermediate_size=6656,
                    num_attention_heads=16,
                ),
                # SigLIP2 base NaFlex (86M).
                vision_config=dict(
                    hidden_size=768,
                    intermediate_size=3072,
                    num_hidden_layers=12,
                    num_attention_heads=12,
                    patch_size=16,
                    num_patches=256,
                ),
                config=dict(projector_hidden_size=2048, tie_word_embeddings=True),
            ),
        ),
    ),  # fmt: skip
)
