"""Random-weight checkpoints of the REAL model sizes, for memory and speed measurements.

    python scripts/make_random_checkpoint.py --arch qwen2-vl-7b --output-dir /tmp/q7

No machine here reaches the Hub, but memory and throughput depend only on the architecture and
the image tokens, not on trained values. These folders use the real configs (layer counts,
widths, vocabulary sizes) with the tiny checkpoints' processors, so the loading and training
code is exactly the product's. Weights are initialised on the GPU when there is one (seconds for
8B parameters instead of minutes on the CPU) and written as bf16 safetensors.
"""

from __future__ import annotations

from pathlib import Path

from vlm_unsloth.errors import ModelError
from vlm_unsloth.families import FAMILIES
from vlm_unsloth.models.tiny import SEED
from vlm_unsloth.models.tiny_architectures import ARCHITECTURES, model_class

_QWEN_ROPE = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}
_SIGLIP_SO400M_896 = dict(
    hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
    image_size=896, patch_size=14,
)  # fmt: skip
_SIGLIP_SO400M_384 = {**_SIGLIP_SO400M_896, "image_size": 384}
_SMOLLM2_1_7B = dict(
    vocab_size=49280, hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
    num_attention_heads=32, num_key_value_heads=32, rms_norm_eps=1e-5,
)  # fmt: skip
"""SmolVLM's 2.2B text model; the two SmolVLM generations differ in context and RoPE base."""
_QWEN3_TEXT = dict(
    vocab_size=151936, num_key_value_heads=8, head_dim=128, max_position_embeddings=262144,
    rms_norm_eps=1e-6,
    rope_parameters={
        "rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [24, 20, 20],
        "mrope_interleaved": True,
    },
)  # fmt: skip
"""What every Qwen3-VL size's language model shares."""
_QWEN3_VL_SMALL_VIT = dict(
    depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16,
    deepstack_visual_indexes=[5, 11, 17],
)  # fmt: skip

# Values from the hub checkpoints' config.json files. Keys are the memory planner's architecture
# names (models/checkpoints.py maps hub names to them). "config": top-level config overrides.
REAL_ARCHITECTURES: dict[str, dict] = {
    "qwen2-vl-7b": dict(
        family="qwen2-vl",
        text_config=dict(
            vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
            num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
            rms_norm_eps=1e-6,
            rope_parameters=_QWEN_ROPE,
        ),
        vision_config=dict(depth=32, embed_dim=1280, hidden_size=3584, num_heads=16, mlp_ratio=4),
    ),
    "qwen2.5-vl-7b": dict(
        family="qwen2.5-vl",
        text_config=dict(
            vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
            num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000,
            rms_norm_eps=1e-6,
            rope_parameters=_QWEN_ROPE,
        ),
        vision_config=dict(
            depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
            window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
        ),
    ),
    "llama-3.2-11b-vision": dict(
        family="llama-3.2-vision",
        text_config=dict(
            vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=40,
            num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
            cross_attention_layers=[3, 8, 13, 18, 23, 28, 33, 38], rms_norm_eps=1e-5,
            rope_parameters={
                "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
        ),
        vision_config=dict(
            hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_global_layers=8,
            attention_heads=16, image_size=560, patch_size=14, max_num_tiles=4,
            vision_output_dim=7680, intermediate_layers_indices=[3, 7, 15, 23, 30],
        ),
    ),
    # SmolVLM-Instruct (2.2B, idefics3): SigLIP so400m-patch14-384 tower, pixel shuffle 3 (81
    # tokens a 384 px view), SmolLM2-1.7B text. From memory of the hub's config.json (no Hub
    # here): vocab_size and tie_word_embeddings are the least certain (49,280 covers the added
    # tokens' ids up to <end_of_utterance> = 49279).
    "smolvlm-instruct": dict(
        family="smolvlm",
        text_config=dict(
            _SMOLLM2_1_7B, max_position_embeddings=16384,
            rope_parameters={"rope_type": "default", "rope_theta": 273768.0},
        ),  # fmt: skip
        vision_config=_SIGLIP_SO400M_384,
        config=dict(scale_factor=3),
    ),
    # SmolVLM2-2.2B-Instruct (model_type smolvlm): SmolVLM-Instruct's towers and shuffle, a
    # SmolLM2-1.7B text model trained for 8k context (rope_theta 130,000). From memory of the
    # hub's config.json (no Hub here).
    "smolvlm2-2.2b": dict(
        family="smolvlm2",
        text_config=dict(
            _SMOLLM2_1_7B, max_position_embeddings=8192,
            rope_parameters={"rope_type": "default", "rope_theta": 130000.0},
        ),  # fmt: skip
        vision_config=_SIGLIP_SO400M_384,
        config=dict(scale_factor=3),
    ),
    # Pixtral-12B (mistral-community/pixtral-12b = unsloth/Pixtral-12B-2409): Mistral-Nemo-sized
    # text model, 24-layer Pixtral-ViT (1024 px, 16 px patches, gated silu MLP), 2-layer gelu
    # projector with bias.
    "pixtral-12b": dict(
        family="pixtral",
        text_config=dict(
            vocab_size=131072, hidden_size=5120, intermediate_size=14336, num_hidden_layers=40,
            num_attention_heads=32, num_key_value_heads=8, head_dim=128,
            max_position_embeddings=1024000, rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 1e9},
        ),
        vision_config=dict(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
            num_attention_heads=16, image_size=1024, patch_size=16,
        ),
    ),
    # Qwen3-VL-8B-Instruct (= unsloth/Qwen3-VL-8B-Instruct): Qwen3-8B-sized text model with
    # interleaved M-RoPE, a 27-block ViT of 16 px patches merged 2 x 2, DeepStack features from
    # blocks 8, 16 and 24. From memory of the hub's config.json (no Hub here); the token ids and
    # the 2304-entry position grid match transformers' defaults for the architecture.
    "qwen3-vl-8b": dict(
        family="qwen3-vl",
        text_config=dict(
            _QWEN3_TEXT, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
            num_attention_heads=32,
        ),  # fmt: skip
        vision_config=dict(
            depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16,
            deepstack_visual_indexes=[8, 16, 24],
        ),
        config=dict(tie_word_embeddings=False),
    ),
    # Qwen3-VL-4B / -2B-Instruct: Qwen3-4B- and Qwen3-1.7B-sized text models with tied
    # embeddings, and one smaller 24-block ViT (DeepStack from blocks 5, 11 and 17) for both.
    # From copies of the hub's config.json seen in public code (no Hub here).
    "qwen3-vl-4b": dict(
        family="qwen3-vl",
        text_config=dict(
            _QWEN3_TEXT, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
            num_attention_heads=32,
        ),  # fmt: skip
        vision_config=dict(_QWEN3_VL_SMALL_VIT, out_hidden_size=2560),
        config=dict(tie_word_embeddings=True),
    ),
    "qwen3-vl-2b": dict(
        family="qwen3-vl",
        text_config=dict(
            _QWEN3_TEXT, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
            num_attention_heads=16,
        ),  # fmt: skip
        vision_config=dict(_QWEN3_VL_SMALL_VIT, out_hidden_size=2048),
        config=dict(tie_word_embeddings=True),
    ),
    # Qwen3.5-9B (= unsloth/Qwen3.5-9B): three Gated DeltaNet layers per gated full-attention
    # one, 256-wide heads with a quarter rotated, Qwen3-VL-8B's tower without DeepStack. From a
    # copy of the hub's config.json in public code (no Hub here). The multi-token-prediction
    # layer the hub's files also hold is not part of transformers' model, nor of this one.
    "qwen3.5-9b": dict(
        family="qwen3.5",
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
    ),
    # gemma-3-4b-it / -12b-it (= unsloth/gemma-3-*-it): 5 sliding-window (1,024) layers per
    # global one, 256-wide heads, embeddings tied; SigLIP so400m at 896 px (64 x 64 patches
    # pooled into 256 soft tokens). From memory of the hub's config.json; the image geometry and
    # the token indices are transformers' defaults for the architecture.
    "gemma-3-4b": dict(
        family="gemma3",
        text_config=dict(
            vocab_size=262208, hidden_size=2560, intermediate_size=10240, num_hidden_layers=34,
            num_attention_heads=8, num_key_value_heads=4, head_dim=256, query_pre_attn_scalar=256,
            sliding_window=1024, layer_types=None, max_position_embeddings=131072,
            rms_norm_eps=1e-6,
        ),
        vision_config=_SIGLIP_SO400M_896,
    ),
    "gemma-3-12b": dict(
        family="gemma3",
        text_config=dict(
            vocab_size=262208, hidden_size=3840, intermediate_size=15360, num_hidden_layers=48,
            num_attention_heads=16, num_key_value_heads=8, head_dim=256,
            query_pre_attn_scalar=256, sliding_window=1024, layer_types=None,
            max_position_embeddings=131072, rms_norm_eps=1e-6,
        ),
        vision_config=_SIGLIP_SO400M_896,
    ),
}  # fmt: skip


def build_random_checkpoint(arch: str, folder: str | Path) -> Path:
    """Write a random-weight checkpoint of `arch` (a REAL_ARCHITECTURES key) to `folder`."""
    import torch

    if arch not in REAL_ARCHITECTURES:
        raise ModelError(
            f"unknown architecture {arch!r}",
            where="--arch",
            fix=f"use one of: {', '.join(REAL_ARCHITECTURES)}",
        )
    spec = REAL_ARCHITECTURES[arch]
    family = FAMILIES[spec["family"]]
    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    parts = ARCHITECTURES[family.model_type]
    processor = parts.processor(real_size=True)
    # Real sizes over the tiny config: token ids stay those of our tokenizer (the vocabulary is
    # larger than the tokenizer, as real checkpoints' embedding tables often are).
    config = parts.config(
        processor.tokenizer,
        text=spec["text_config"],
        vision=spec["vision_config"],
        top=spec.get("config"),
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(SEED)
    with torch.device(device):
        model = model_class(parts)._from_config(config, dtype=torch.bfloat16)
    parts.finish(model)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return folder
