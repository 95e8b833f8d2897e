"""Qwen2.5-VL: Qwen2-VL's prompt format, processor and image tokens, with a windowed-attention
vision tower (full attention in a few blocks)."""

from __future__ import annotations

from vlm_unsloth.families._qwen import (
    QWEN2_IMAGE_SETTINGS,
    QWEN2_ROPE,
    QWEN2_TOKENIZER,
    QWEN_CHAT,
    QWEN_SCHEME,
    media_token_ids,
    qwen2_processor,
    qwen2_text_config,
)
from vlm_unsloth.families.base import (
    TEXT_HIDDEN,
    VISION_HIDDEN,
    Architecture,
    Family,
    ModelSize,
    RealConfig,
    mirrors,
)


def tiny_config(tokenizer, text=None, vision=None, top=None):
    """Tiny Qwen2.5-VL: 2 text layers, a 2-block vision tower with one full-attention block."""
    from transformers import Qwen2_5_VLConfig

    vision_config = dict(
        depth=2,
        hidden_size=VISION_HIDDEN,
        intermediate_size=2 * VISION_HIDDEN,
        num_heads=2,
        out_hidden_size=TEXT_HIDDEN,
        window_size=112,
        fullatt_block_indexes=[1],
    ) | (vision or {})
    return Qwen2_5_VLConfig(
        text_config=qwen2_text_config(tokenizer, text),
        vision_config=vision_config,
        **(media_token_ids(tokenizer) | (top or {})),
    )


FAMILY = Family(
    key="qwen2.5-vl",
    model_type="qwen2_5_vl",
    default_model="unsloth/Qwen2.5-VL-7B-Instruct",
    tiny_name="tiny-qwen2.5-vl",
    **QWEN_CHAT,
    vision_tower="model.visual",
    language_model="model.language_model",
    connector="merger",
    image_scheme=QWEN_SCHEME,
    architecture=Architecture(
        QWEN2_TOKENIZER,
        qwen2_processor("Qwen2_5_VLProcessor"),
        tiny_config,
        "Qwen2_5_VLForConditionalGeneration",
    ),
    sizes=(
        ModelSize(
            "qwen2.5-vl-3b",
            (2048, 36),
            QWEN2_IMAGE_SETTINGS,
            mirrors("Qwen", "Qwen2.5-VL-3B-Instruct"),
        ),
        ModelSize(
            "qwen2.5-vl-7b",
            (3584, 28),
            QWEN2_IMAGE_SETTINGS,
            mirrors("Qwen", "Qwen2.5-VL-7B-Instruct"),
            real=RealConfig(
                text_config=dict(
                    vocab_size=152064,
                    hidden_size=3584,
                    intermediate_size=18944,
                    num_hidden_layers=28,
                    num_attention_heads=28,
                    num_key_value_heads=4,
                    max_position_embeddings=128000,
                    rms_norm_eps=1e-6,
                    rope_parameters=QWEN2_ROPE,
                ),
                vision_config=dict(
                    depth=32,
                    hidden_size=1280,
                    intermediate_size=3420,
                    num_heads=16,
                    out_hidden_size=3584,
                    window_size=112,
                    fullatt_block_indexes=[7, 15, 23, 31],
                ),
            ),
        ),
    ),  # fmt: skip
)
