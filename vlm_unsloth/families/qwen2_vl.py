"""Qwen2-VL: Qwen's prompt format, 14 px patches merged 2 x 2 (one <|image_pad|> per 28 px
block), M-RoPE; the product's default family (Qwen2-VL-7B on a 12 GB card)."""

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
    """Tiny Qwen2-VL: 2 text layers, a 2-block vision tower (real sizes override them)."""
    from transformers import Qwen2VLConfig

    vision_config = dict(
        depth=2, embed_dim=VISION_HIDDEN, hidden_size=TEXT_HIDDEN, num_heads=2, mlp_ratio=2
    ) | (vision or {})
    return Qwen2VLConfig(
        text_config=qwen2_text_config(tokenizer, text),
        vision_config=vision_config,
        **(media_token_ids(tokenizer) | (top or {})),
    )


FAMILY = Family(
    key="qwen2-vl",
    model_type="qwen2_vl",
    default_model="unsloth/Qwen2-VL-7B-Instruct",
    tiny_name="tiny-qwen2-vl",
    **QWEN_CHAT,
    vision_tower="model.visual",
    language_model="model.language_model",
    connector="merger",
    image_scheme=QWEN_SCHEME,
    architecture=Architecture(
        QWEN2_TOKENIZER,
        qwen2_processor("Qwen2VLProcessor"),
        tiny_config,
        "Qwen2VLForConditionalGeneration",
    ),
    sizes=(
        ModelSize(
            "qwen2-vl-2b",
            (1536, 28),
            QWEN2_IMAGE_SETTINGS,
            mirrors("Qwen", "Qwen2-VL-2B-Instruct") + mirrors("Qwen", "Qwen2-VL-2B"),
        ),
        ModelSize(
            "qwen2-vl-7b",
            (3584, 28),
            QWEN2_IMAGE_SETTINGS,
            mirrors("Qwen", "Qwen2-VL-7B-Instruct") + mirrors("Qwen", "Qwen2-VL-7B"),
            real=RealConfig(
                text_config=dict(
                    vocab_size=152064,
                    hidden_size=3584,
                    intermediate_size=18944,
                    num_hidden_layers=28,
                    num_attention_heads=28,
                    num_key_value_heads=4,
                    max_position_embeddings=32768,
                    rms_norm_eps=1e-6,
                    rope_parameters=QWEN2_ROPE,
                ),
                vision_config=dict(
                    depth=32, embed_dim=1280, hidden_size=3584, num_heads=16, mlp_ratio=4
                ),
            ),
        ),
    ),  # fmt: skip
)
