"""Qwen3.5 (natively multimodal; Gated DeltaNet linear-attention layers, 3 of every 4, between
full-attention ones): Qwen3-VL's processor and image tokens.

The hub's chat template (TRL's qwen3_5_think.jinja for 4B and up, qwen3_5_nothink.jinja below)
writes "<think>\\n\\n</think>\\n\\n" before the answer of the last assistant turn, so the supervised
answer starts with it; the 4B+ generation prompt opens a think block unless
enable_thinking=False, which generation passes (`template_thinks`).
"""

from __future__ import annotations

from vlm_unsloth.families._qwen import (
    QWEN3_IMAGE_SETTINGS,
    QWEN3_SCHEME,
    QWEN3_TOKENIZER,
    QWEN_CHAT,
    media_token_ids,
    qwen3_processor,
    qwen3_tower,
)
from vlm_unsloth.families.base import (
    TINY_TEXT_SHAPE,
    Architecture,
    Family,
    ModelSize,
    RealConfig,
)


def tiny_config(tokenizer, text=None, vision=None, top=None):
    """Tiny Qwen3.5: one Gated DeltaNet (linear attention) layer and one gated full-attention
    layer (the real 3:1 pattern's two kinds), a 2-block vision tower without DeepStack."""
    from transformers import Qwen3_5Config

    ids = tokenizer.convert_tokens_to_ids
    text_config = dict(
        TINY_TEXT_SHAPE,
        vocab_size=len(tokenizer),
        layer_types=["linear_attention", "full_attention"],
        head_dim=32,  # RoPE turns a quarter of it (as the real 256): 8 dims, 4 frequencies
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        linear_key_head_dim=16,
        linear_value_head_dim=16,
        linear_conv_kernel_dim=4,
        max_position_embeddings=4096,
        # Interleaved M-RoPE over the rotated quarter of each head, as the real [11, 11, 10]
        # splits its 32 frequencies.
        rope_parameters={
            "rope_type": "default", "rope_theta": 10_000_000.0, "partial_rotary_factor": 0.25,
            "mrope_section": [2, 1, 1], "mrope_interleaved": True,
        },
        bos_token_id=None,
        eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"),
    ) | (text or {})  # fmt: skip
    rope = text_config["rope_parameters"]
    rotated = int(text_config["head_dim"] * rope["partial_rotary_factor"])
    if sum(rope["mrope_section"]) != rotated // 2:
        raise ValueError("mrope_section must split the rotated head dims / 2 frequencies")
    vision_config = qwen3_tower(text_config["hidden_size"], depth=2) | (vision or {})
    return Qwen3_5Config(
        text_config=text_config,
        vision_config=vision_config,
        **media_token_ids(tokenizer),
        **({"tie_word_embeddings": False} | (top or {})),
    )


# Qwen3.5-9B (= unsloth/Qwen3.5-9B): three Gated DeltaNet layers per gated full-attention one,
# 256-wide heads with a quarter rotated, Qwen3-VL-8B's tower without DeepStack. From a copy of
# the hub's config.json in public code (no Hub here). The multi-token-prediction layer the hub's
# files also hold is not part of transformers' model, nor of this one.
_REAL_9B = RealConfig(
    text_config=dict(
        vocab_size=248320, hidden_size=4096, intermediate_size=12288, num_hidden_layers=32,
        layer_types=(["linear_attention"] * 3 + ["full_attention"]) * 8,
        num_attention_heads=16, num_key_value_heads=4, head_dim=256,
        linear_num_key_heads=16, linear_num_value_heads=32, linear_key_head_dim=128,
        linear_value_head_dim=128, linear_conv_kernel_dim=4, max_position_embeddings=262144,
        rms_norm_eps=1e-6,
        rope_parameters={
            "rope_type": "default", "rope_theta": 10_000_000.0, "partial_rotary_factor": 0.25,
            "mrope_section": [11, 11, 10], "mrope_interleaved": True,
        },
    ),
    vision_config=dict(
        depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16,
        out_hidden_size=4096, deepstack_visual_indexes=[],
    ),
    config=dict(tie_word_embeddings=False),
)  # fmt: skip

FAMILY = Family(
    key="qwen3.5",
    model_type="qwen3_5",
    default_model="unsloth/Qwen3.5-4B",
    tiny_name="tiny-qwen3.5",
    **dict(QWEN_CHAT, min_image_side=32),
    vision_tower="model.visual",
    language_model="model.language_model",
    connector="merger",
    image_scheme=QWEN3_SCHEME,
    architecture=Architecture(
        QWEN3_TOKENIZER,
        qwen3_processor("qwen3_5_think.jinja"),
        tiny_config,
        "Qwen3_5ForConditionalGeneration",
    ),
    # The dense chat checkpoints (no "-Instruct"; the -Base ones are not listed): the language
    # model's shape, read from copies of their config.json (the official files could not be
    # reached from here).
    sizes=tuple(
        ModelSize(
            f"qwen3.5-{size.lower()}",
            shape,
            QWEN3_IMAGE_SETTINGS,
            (f"Qwen/Qwen3.5-{size}", f"unsloth/Qwen3.5-{size}"),
            real=_REAL_9B if size == "9B" else None,
        )
        for size, shape in (
            ("0.8B", (1024, 24)),
            ("2B", (2048, 24)),
            ("4B", (2560, 32)),
            ("9B", (4096, 32)),
        )
    ),  # fmt: skip
    template_thinks=True,
    fp16_unsafe="Qwen3.5's Gated DeltaNet layers give NaN gradients in float16 (Unsloth "
    "computes it in float32 on GPUs without bf16 too)",
)
