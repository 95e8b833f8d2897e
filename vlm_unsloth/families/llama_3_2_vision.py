"""Llama 3.2 Vision (Mllama): the image enters the language model through cross-attention layers,
not as tokens of the sequence; the prompt holds ONE `<|image|>` token per image.

Its processor fits the image on a canvas of up to `max_image_tiles` tiles of `tile_size` px, and
the language model cross-attends to tiles * ((tile/patch)^2 + 1) vision tokens (1,601 per 560 px
tile). `--max-side S` caps the longest side at S itself.
"""

from __future__ import annotations

from typing import Any

from vlm_unsloth.families._templates import shipped_template
from vlm_unsloth.families.base import (
    TINY_TEXT_SHAPE,
    VISION_HIDDEN,
    Architecture,
    Family,
    ImageScheme,
    ImageTokenCount,
    ModelSize,
    RealConfig,
    TinyTokenizer,
    mirrors,
)

# Mllama tiles are 560 px in the real model (1,601 vision tokens each); a 112 px tile keeps the
# same code path at 65 tokens a tile, so CPU tests stay fast.
TINY_TILE = 112


def mllama_image_tokens(
    width: int,
    height: int,
    *,
    tile_size: int = 560,
    max_image_tiles: int = 4,
    patch_size: int = 14,
) -> ImageTokenCount:
    """One `<|image|>` text token; tiles x ((tile/patch)^2 + 1) vision tokens."""
    from transformers.models.mllama.image_processing_mllama import get_optimal_tiled_canvas

    canvas = get_optimal_tiled_canvas(height, width, max_image_tiles, tile_size)
    canvas_h, canvas_w = int(canvas[0]), int(canvas[1])  # numpy ints -> plain ints
    tiles = (canvas_h // tile_size) * (canvas_w // tile_size)
    per_tile = (tile_size // patch_size) ** 2 + 1  # +1: the class token of each tile
    return ImageTokenCount(
        text_tokens=1, vision_tokens=tiles * per_tile, resized=(canvas_w, canvas_h), tiles=tiles
    )


def mllama_settings(processor: Any) -> dict:
    """The scheme's parameters of a loaded processor (or its image processor)."""
    image_processor = getattr(processor, "image_processor", processor)
    return dict(
        tile_size=image_processor.size["height"], max_image_tiles=image_processor.max_image_tiles
    )


def tiny_processor(tokenizer, real_size: bool = False):
    """The hub's Mllama processor with the tiny tokenizer; tiles of 112 px (real: 560)."""
    from transformers import MllamaImageProcessor, MllamaProcessor

    tile = 560 if real_size else TINY_TILE
    image_processor = MllamaImageProcessor(size={"height": tile, "width": tile}, max_image_tiles=4)
    return MllamaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=shipped_template("llama3_2_vision.jinja"),
    )


def tiny_config(tokenizer, text=None, vision=None, top=None):
    """Tiny Mllama: 3 text layers with cross-attention in the middle one, a 2-layer tower."""
    from transformers import MllamaConfig

    ids = tokenizer.convert_tokens_to_ids
    image_id = ids("<|image|>")
    if image_id != len(tokenizer) - 1:
        raise ValueError("<|image|> must be the last token id")
    vision_config = dict(
        hidden_size=VISION_HIDDEN,
        intermediate_size=2 * VISION_HIDDEN,
        num_hidden_layers=2,
        num_global_layers=1,
        attention_heads=2,
        intermediate_layers_indices=[0, 1],
        vision_output_dim=VISION_HIDDEN * 3,  # hidden x (len(intermediate indices) + 1)
        image_size=TINY_TILE,
        patch_size=14,
        max_num_tiles=4,
    ) | (vision or {})
    text_config = dict(
        TINY_TEXT_SHAPE,
        vocab_size=image_id,
        num_hidden_layers=3,
        cross_attention_layers=[1],
        max_position_embeddings=4096,
        bos_token_id=ids("<|begin_of_text|>"),
        eos_token_id=ids("<|eot_id|>"),
        pad_token_id=ids("<|finetune_right_pad_id|>"),
    ) | (text or {})
    return MllamaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=image_id,
        **(top or {}),
    )


def open_cross_attention_gates(model) -> None:
    """Random-init Mllama has zero cross-attention gates, so no gradient reaches the vision tower
    and the image cannot influence the output. Trained checkpoints have open gates; so do ours."""
    import torch

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")):
                parameter.fill_(1.0)


FAMILY = Family(
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
    vision_tower="model.vision_model",
    language_model="model.language_model",
    connector="multi_modal_projector",
    image_scheme=ImageScheme("mllama", mllama_settings, mllama_image_tokens),
    architecture=Architecture(
        # <|image|> must be the LAST id, equal to the text vocab_size (the real checkpoint has
        # image_token_index 128256 == vocab_size): the embedding keeps extra rows beyond it.
        TinyTokenizer(
            (
                "<|begin_of_text|>",
                "<|end_of_text|>",
                "<|start_header_id|>",
                "<|end_header_id|>",
                "<|eot_id|>",
                "<|eom_id|>",
                "<|python_tag|>",
                "<|finetune_right_pad_id|>",
            ),
            bos="<|begin_of_text|>",
            eos="<|eot_id|>",
            pad="<|finetune_right_pad_id|>",
            last_token="<|image|>",
        ),  # fmt: skip
        tiny_processor,
        tiny_config,
        "MllamaForConditionalGeneration",
        finish=open_cross_attention_gates,
    ),
    sizes=(
        ModelSize(
            "llama-3.2-11b-vision",
            (4096, 40),
            dict(tile_size=560, max_image_tiles=4),
            mirrors("meta-llama", "Llama-3.2-11B-Vision-Instruct")
            + mirrors("meta-llama", "Llama-3.2-11B-Vision"),
            real=RealConfig(
                text_config=dict(
                    vocab_size=128256,
                    hidden_size=4096,
                    intermediate_size=14336,
                    num_hidden_layers=40,
                    num_attention_heads=32,
                    num_key_value_heads=8,
                    max_position_embeddings=131072,
                    cross_attention_layers=[3, 8, 13, 18, 23, 28, 33, 38],
                    rms_norm_eps=1e-5,
                    rope_parameters={
                        "rope_type": "llama3",
                        "rope_theta": 500000.0,
                        "factor": 8.0,
                        "low_freq_factor": 1.0,
                        "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 8192,
                    },
                ),
                vision_config=dict(
                    hidden_size=1280,
                    intermediate_size=5120,
                    num_hidden_layers=32,
                    num_global_layers=8,
                    attention_heads=16,
                    image_size=560,
                    patch_size=14,
                    max_num_tiles=4,
                    vision_output_dim=7680,
                    intermediate_layers_indices=[3, 7, 15, 23, 30],
                ),
            ),
        ),
    ),  # fmt: skip
    nested_images=True,
    mixes_text_only_rows=False,
    images_by_cross_attention=True,
)
