"""Pixtral (a LLaVA checkpoint with a Pixtral vision tower): Mistral's [INST] prompt format, rows
of 16 px patches with a break token per row.

The processor only ever shrinks (to size["longest_edge"], 1024 px), then rounds each side up to
16 px patches: rows x cols [IMG], one [IMG_BREAK] a row (the last one [IMG_END]): tokens =
rows * (cols + 1). `--max-side S`: the largest multiple of 16 px <= S, at most the checkpoint's
1024.
"""

from __future__ import annotations

from vlm_unsloth.families._pixtral import (
    IMAGE_TOKEN,
    LAYOUT_TOKENS,
    PIXTRAL_SCHEME,
    pixtral_processor,
    tekken_tokenizer,
)
from vlm_unsloth.families.base import (
    TEXT_HIDDEN,
    TINY_TEXT_SHAPE,
    VISION_HIDDEN,
    Architecture,
    Family,
    ModelSize,
    RealConfig,
    mirrors,
)

# The real 16 px patches and 1024 px longest edge (its token count depends only on the image
# size, so tests keep their images small instead).
PATCH = 16
LONGEST_EDGE = 1024


def tiny_processor(tokenizer, real_size: bool = False):
    """The hub's Pixtral processor with the tiny tokenizer (its image geometry is the real one)."""
    return pixtral_processor(
        tokenizer, patch_size=PATCH, spatial_merge_size=1, longest_edge=LONGEST_EDGE,
        template="pixtral.jinja",
    )  # fmt: skip


def tiny_config(tokenizer, text=None, vision=None, top=None):
    """Tiny Pixtral: a 2-layer Mistral text model, a 2-layer Pixtral-ViT, LLaVA's projector."""
    from transformers import LlavaConfig

    ids = tokenizer.convert_tokens_to_ids
    vision_config = dict(
        model_type="pixtral",
        hidden_size=VISION_HIDDEN,
        intermediate_size=2 * VISION_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=LONGEST_EDGE,
        patch_size=PATCH,
        hidden_act="silu",  # pixtral-12b's vision MLP is gated (silu)
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    ) | (vision or {})
    text_config = dict(
        TINY_TEXT_SHAPE,
        model_type="mistral",
        vocab_size=len(tokenizer),
        head_dim=TEXT_HIDDEN // 4,
        max_position_embeddings=8192,
        sliding_window=None,
        rope_parameters={"rope_type": "default", "rope_theta": 1e9},
        bos_token_id=ids("<s>"),
        eos_token_id=ids("</s>"),
        pad_token_id=ids("<pad>"),
        tie_word_embeddings=False,
    ) | (text or {})
    # LlavaConfig's defaults (image token 32000, feature layer -2, "default" selection that drops
    # a CLS token) are LLaVA-1.5's; Pixtral's are these.
    return LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=ids("[IMG]"),
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        multimodal_projector_bias=True,
        image_seq_length=1,
        tie_word_embeddings=False,
        **(top or {}),
    )


FAMILY = Family(
    key="pixtral",
    model_type="llava",
    vision_model_type="pixtral",
    default_model="unsloth/Pixtral-12B-2409",
    tiny_name="tiny-pixtral",
    instruction_part="[INST]",
    response_part="[/INST]",
    end_of_turn="</s>",
    image_token=IMAGE_TOKEN,
    # Rows of 16 px patches: [IMG] per patch, [IMG_BREAK] after each row, the last one
    # [IMG_END]. Any aspect ratio; images are only ever shrunk (to 1024 px at most).
    other_image_tokens=LAYOUT_TOKENS,
    max_aspect_ratio=None,
    min_image_side=1,
    vision_tower="model.vision_tower",
    language_model="model.language_model",
    connector="multi_modal_projector",
    image_scheme=PIXTRAL_SCHEME,
    architecture=Architecture(
        tekken_tokenizer(),  # [IMG] = 10, [IMG_BREAK] = 12, [IMG_END] = 13 as on the hub
        tiny_processor,
        tiny_config,
        "LlavaForConditionalGeneration",
    ),
    sizes=(
        # mistralai/Pixtral-12B-2409 itself is in Mistral's own format, not loadable by
        # transformers. Pixtral-12B (mistral-community/pixtral-12b = unsloth/Pixtral-12B-2409):
        # Mistral-Nemo-sized text model, 24-layer Pixtral-ViT (1024 px, 16 px patches, gated
        # silu MLP), 2-layer gelu projector with bias.
        ModelSize(
            "pixtral-12b",
            (5120, 40),
            dict(patch_size=16, spatial_merge_size=1, longest_edge=1024),
            ("mistral-community/pixtral-12b",)
            + mirrors("unsloth", "Pixtral-12B-2409")[1:]
            + ("unsloth/Pixtral-12B-Base-2409", "unsloth/Pixtral-12B-2409-Base-bnb-4bit"),
            real=RealConfig(
                text_config=dict(
                    vocab_size=131072,
                    hidden_size=5120,
                    intermediate_size=14336,
                    num_hidden_layers=40,
                    num_attention_heads=32,
                    num_key_value_heads=8,
                    head_dim=128,
                    max_position_embeddings=1024000,
                    rms_norm_eps=1e-5,
                    rope_parameters={"rope_type": "default", "rope_theta": 1e9},
                ),
                vision_config=dict(
                    hidden_size=1024,
                    intermediate_size=4096,
                    num_hidden_layers=24,
                    num_attention_heads=16,
                    image_size=1024,
                    patch_size=16,
                ),
            ),
        ),
    ),  # fmt: skip
)
