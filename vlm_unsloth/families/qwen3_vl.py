"""Qwen3-VL (Instruct): Qwen's prompt format (TRL's qwen3_vl.jinja, the hub's Instruct template:
no default system prompt, no <think> block), 16 px patches merged 2 x 2 (one <|image_pad|> per
32 px block: --max-side is kept to a multiple of 32), DeepStack features from early vision blocks
into the first text layers, interleaved M-RoPE."""

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
    mirrors,
)


def tiny_config(tokenizer, text=None, vision=None, top=None):
    """Tiny Qwen3-VL: 2 text layers, 3 vision blocks, DeepStack features from blocks 0 and 1."""
    from transformers import Qwen3VLConfig

    ids = tokenizer.convert_tokens_to_ids
    text_config = dict(
        TINY_TEXT_SHAPE,
        vocab_size=len(tokenizer),
        head_dim=16,  # the config's default is 128 (q_proj would be 64 -> 512 wide)
        max_position_embeddings=4096,
        # Interleaved M-RoPE over head_dim/2 = 8 frequencies, as [24, 20, 20] splits the real
        # heads' 64.
        rope_parameters={
            "rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [4, 2, 2],
            "mrope_interleaved": True,
        },
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"),
    ) | (text or {})  # fmt: skip
    if sum(text_config["rope_parameters"]["mrope_section"]) != text_config["head_dim"] // 2:
        raise ValueError("mrope_section must split head_dim / 2 frequencies")
    vision_config = qwen3_tower(
        text_config["hidden_size"],
        depth=3,
        # DeepStack: the features after these vision blocks (each through its own merger) are
        # added to the hidden states of the first text layers. Real 8B: [8, 16, 24].
        deepstack_visual_indexes=[0, 1],
    ) | (vision or {})
    return Qwen3VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        **media_token_ids(tokenizer),
        **({"tie_word_embeddings": False} | (top or {})),
    )


_TEXT = dict(
    vocab_size=151936, num_key_value_heads=8, head_dim=128, max_position_embeddings=262144,
    rms_norm_eps=1e-6,
    rope_parameters={
        "rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [24, 20, 20],
        "mrope_interleaved": True,
    },
)  # fmt: skip
"""What every Qwen3-VL size's language model shares."""
_SMALL_VIT = dict(
    depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16,
    deepstack_visual_indexes=[5, 11, 17],
)  # fmt: skip
"""The 4B's and 2B's vision tower (DeepStack from blocks 5, 11 and 17)."""

FAMILY = Family(
    key="qwen3-vl",
    model_type="qwen3_vl",
    default_model="unsloth/Qwen3-VL-8B-Instruct",
    tiny_name="tiny-qwen3-vl",
    **dict(QWEN_CHAT, min_image_side=32),
    vision_tower="model.visual",
    language_model="model.language_model",
    connector="merger",
    image_scheme=QWEN3_SCHEME,
    architecture=Architecture(
        QWEN3_TOKENIZER,
        qwen3_processor("qwen3_vl.jinja"),
        tiny_config,
        "Qwen3VLForConditionalGeneration",
    ),
    # The Thinking checkpoints ship another chat template: not supported.
    sizes=(
        # Qwen3-VL-8B-Instruct: Qwen3-8B-sized text model with interleaved M-RoPE, a 27-block
        # ViT of 16 px patches merged 2 x 2, DeepStack features from blocks 8, 16 and 24. From
        # memory of the hub's config.json (no Hub here); the token ids and the 2304-entry
        # position grid match transformers' defaults for the architecture.
        ModelSize(
            "qwen3-vl-8b",
            (4096, 36),
            QWEN3_IMAGE_SETTINGS,
            mirrors("Qwen", "Qwen3-VL-8B-Instruct"),
            real=RealConfig(
                text_config=dict(
                    _TEXT,
                    hidden_size=4096,
                    intermediate_size=12288,
                    num_hidden_layers=36,
                    num_attention_heads=32,
                ),
                vision_config=dict(
                    depth=27,
                    hidden_size=1152,
                    intermediate_size=4304,
                    num_heads=16,
                    deepstack_visual_indexes=[8, 16, 24],
                ),
                config=dict(tie_word_embeddings=False),
            ),
        ),
        # Qwen3-VL-4B / -2B-Instruct: Qwen3-4B- and Qwen3-1.7B-sized text models with tied
        # embeddings, and one smaller ViT for both. From copies of the hub's config.json seen in
        # public code (no Hub here).
        ModelSize(
            "qwen3-vl-4b",
            (2560, 36),
            QWEN3_IMAGE_SETTINGS,
            mirrors("Qwen", "Qwen3-VL-4B-Instruct"),
            real=RealConfig(
                text_config=dict(
                    _TEXT,
                    hidden_size=2560,
                    intermediate_size=9728,
                    num_hidden_layers=36,
                    num_attention_heads=32,
                ),
                vision_config=dict(_SMALL_VIT, out_hidden_size=2560),
                config=dict(tie_word_embeddings=True),
            ),
        ),
        ModelSize(
            "qwen3-vl-2b",
            (2048, 28),
            QWEN3_IMAGE_SETTINGS,
            mirrors("Qwen", "Qwen3-VL-2B-Instruct"),
            real=RealConfig(
                text_config=dict(
                    _TEXT,
                    hidden_size=2048,
                    intermediate_size=6144,
                    num_hidden_layers=28,
                    num_attention_heads=16,
                ),
                vision_config=dict(_SMALL_VIT, out_hidden_size=2048),
                config=dict(tie_word_embeddings=True),
            ),
        ),
    ),  # fmt: skip
)
