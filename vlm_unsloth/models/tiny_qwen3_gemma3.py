"""The parts of the tiny Qwen3-VL, Qwen3.5 and Gemma 3 checkpoints (processor, config,
random-init fix), which `models/tiny_architectures.py` lists under their `config.model_type`.

    from vlm_unsloth.models.tiny_architectures import ARCHITECTURES
    processor = ARCHITECTURES["gemma3"].processor(real_size=False)

What differs from the hub checkpoints (everything else is the real architecture and processor):
widths and depths are tiny, the tokenizer is a small byte-level BPE with the family's special
tokens (ids differ: every code path looks tokens up by text), and Gemma 3's SigLIP tower runs at
224 px (16 x 16 patches, pooled 4 x 4 into 16 soft tokens) instead of 896 px (64 x 64 patches
into 256): the same pooling kernel, so the same code path with smaller counts.
"""

from __future__ import annotations

from vlm_unsloth.models.tiny_tokenizer import train_tokenizer, trl_template

# The tiny widths of every tiny checkpoint (tiny_architectures.py imports them): multiples of 64,
# since bitsandbytes' 4-bit CPU kernels fail for in_features < 64.
TEXT_HIDDEN = 64
TEXT_INTERMEDIATE = 128
VISION_HIDDEN = 64
TINY_TEXT_SHAPE = dict(
    hidden_size=TEXT_HIDDEN, intermediate_size=TEXT_INTERMEDIATE, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2,
)  # fmt: skip
"""Every tiny language model's shape (each config adds its family's own keys)."""

# --- Qwen3-VL ----------------------------------------------------------------------------------

# Qwen's vocabulary order (ids 151643.. on the hub), the same for Qwen2-VL, Qwen2.5-VL and
# Qwen3-VL. Qwen3's <think>, <tool_call>, ... are added tokens that are NOT special on the hub
# (skip_special_tokens keeps them).
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip
_QWEN3_ADDED_TOKENS = (
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
    "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
    "<think>", "</think>",
)  # fmt: skip
# Qwen3-VL-*-Instruct's preprocessor_config.json: 16 px patches merged 2 x 2, 256^2 .. 4096^2 px
# (the product lowers the minimum: data/image_tokens.py), mean/std 0.5; its video processor
# (required by Qwen3VLProcessor even for images) 64^2 .. 25,165,824 px. From memory of the hub
# files, except the patch geometry and normalisation, which the model code fixes.
QWEN3_VL_IMAGE_SIZE = {"shortest_edge": 65_536, "longest_edge": 16_777_216}
QWEN3_VL_VIDEO_SIZE = {"shortest_edge": 4_096, "longest_edge": 25_165_824}


def qwen3_vl_processor(real_size: bool = False, *, chat_template: str = "qwen3_vl.jinja"):
    """The hub's Qwen3-VL processor (the same at every size) with the tiny tokenizer."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    tokenizer = train_tokenizer(
        QWEN_SPECIAL_TOKENS,
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        added_tokens=_QWEN3_ADDED_TOKENS,
    )
    geometry = dict(patch_size=16, temporal_patch_size=2, merge_size=2)
    normalise = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    # `size`, never min_pixels=/max_pixels=: those rewrite the CLASS default of every later
    # Qwen2VLImageProcessor in the process.
    image_processor = Qwen2VLImageProcessor(size=dict(QWEN3_VL_IMAGE_SIZE), **geometry, **normalise)
    video_processor = Qwen3VLVideoProcessor(size=dict(QWEN3_VL_VIDEO_SIZE), **geometry, **normalise)
    return Qwen3VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=trl_template(chat_template),  # the hub's template
    )


def qwen3_vl_config(tokenizer, text=None, vision=None, top=None):
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
    vision_config = _qwen3_tower(
        text_config["hidden_size"],
        depth=3,
        # DeepStack: the features after these vision blocks (each through its own merger) are
        # added to the hidden states of the first text layers. Real 8B: [8, 16, 24].
        deepstack_visual_indexes=[0, 1],
    ) | (vision or {})
    return Qwen3VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        **_qwen_media_token_ids(tokenizer),
        **({"tie_word_embeddings": False} | (top or {})),
    )


def _qwen3_tower(out_hidden_size: int, **settings) -> dict:
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


def _qwen_media_token_ids(tokenizer) -> dict:
    """The config's ids of Qwen's image, video and vision start/end tokens."""
    ids = tokenizer.convert_tokens_to_ids
    return dict(
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )


# --- Qwen3.5 -----------------------------------------------------------------------------------


def qwen3_5_processor(real_size: bool = False):
    """Qwen3.5's processor: Qwen3-VL's (its preprocessor_config.json is the same), with the chat
    template Qwen3.5-4B and larger ship (a think block opens the generation prompt by default)."""
    return qwen3_vl_processor(real_size, chat_template="qwen3_5_think.jinja")


def qwen3_5_config(tokenizer, text=None, vision=None, top=None):
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
    vision_config = _qwen3_tower(text_config["hidden_size"], depth=2) | (vision or {})
    return Qwen3_5Config(
        text_config=text_config,
        vision_config=vision_config,
        **_qwen_media_token_ids(tokenizer),
        **({"tie_word_embeddings": False} | (top or {})),
    )


# --- Gemma 3 -----------------------------------------------------------------------------------

# <pad> <eos> <bos> <unk> <mask> first (ids 0-4, as on the hub); the hub has <start_of_turn> =
# 105, <end_of_turn> = 106, <start_of_image> = 255999, <end_of_image> = 256000,
# <image_soft_token> = 262144.
_GEMMA3_SPECIAL_TOKENS = [
    "<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>",
    "<start_of_image>", "<end_of_image>", "<image_soft_token>",
]  # fmt: skip
# Gemma's vocabulary has newline runs as single tokens ("\n\n" is one): the processor's
# "\n\n" around each image then merges with the template's newlines, as on the hub.
_GEMMA3_CORPUS = "user\nmodel\n\nFirst line.\n\nSecond line.\n\n\nThird.\n\n\n\n"
# The real tower: 896 px, 14 px patches (64 x 64), average-pooled 4 x 4 into 16 x 16 = 256 soft
# tokens. The tiny one: 224 px (16 x 16 patches) pooled 4 x 4 into 4 x 4 = 16.
TINY_GEMMA3_IMAGE = 224
REAL_GEMMA3_IMAGE = 896
GEMMA3_PATCH = 14
GEMMA3_POOL = 4


def gemma3_tokens_per_image(image_size: int) -> int:
    """Soft tokens of one image: (image_size / patch / pool)^2 (256 at 896 px)."""
    return (image_size // GEMMA3_PATCH // GEMMA3_POOL) ** 2


def gemma3_processor(real_size: bool = False):
    """gemma-3-*-it's processor with the tiny tokenizer; real_size: 896 px and 256 tokens."""
    from transformers import Gemma3ImageProcessor, Gemma3Processor

    tokenizer = train_tokenizer(
        _GEMMA3_SPECIAL_TOKENS,
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        unk="<unk>",
        extra_corpus=_GEMMA3_CORPUS,
        add_bos=True,  # like the hub's tokenizer, although the template writes <bos> too
        # Gemma3Processor reads these as tokenizer attributes (tokenizer_config.json on the hub).
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    )
    side = REAL_GEMMA3_IMAGE if real_size else TINY_GEMMA3_IMAGE
    # The hub's preprocessor_config.json leaves pan-and-scan unset (off: data/image_tokens.py).
    image_processor = Gemma3ImageProcessor(
        size={"height": side, "width": side},
        resample=2,  # BILINEAR
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=trl_template("gemma3.jinja"),
        image_seq_length=gemma3_tokens_per_image(side),  # must equal mm_tokens_per_image
    )


def gemma3_config(tokenizer, text=None, vision=None, top=None):
    """Tiny Gemma 3: one sliding-window and one global layer (the real 5:1 pattern's two kinds),
    a 2-layer SigLIP tower at 224 px."""
    from transformers import Gemma3Config

    ids = tokenizer.convert_tokens_to_ids
    vision_config = dict(
        model_type="siglip_vision_model",
        hidden_size=VISION_HIDDEN,
        intermediate_size=2 * VISION_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=TINY_GEMMA3_IMAGE,
        patch_size=GEMMA3_PATCH,
        layer_norm_eps=1e-6,
        vision_use_head=False,
        hidden_act="gelu_pytorch_tanh",
    ) | (vision or {})
    text_config = dict(
        TINY_TEXT_SHAPE,
        vocab_size=len(tokenizer),
        head_dim=16,
        query_pre_attn_scalar=16,
        layer_types=["sliding_attention", "full_attention"],
        sliding_window=32,  # short enough to bite in the tests' prompts
        max_position_embeddings=4096,
        rope_parameters={  # as the hub: global RoPE scaled x8, local RoPE at 10k
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
        bos_token_id=ids("<bos>"),
        eos_token_id=ids("<eos>"),
        pad_token_id=ids("<pad>"),
    ) | (text or {})
    return Gemma3Config(
        text_config=text_config,
        vision_config=vision_config,
        mm_tokens_per_image=gemma3_tokens_per_image(vision_config["image_size"]),
        boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
        **(top or {}),
    )


def fill_gemma3_projector(model) -> None:
    """A random init leaves Gemma 3's projector matrix (a bare parameter) at zero: every image
    feature would be 0, the image could not change the output and no gradient would reach the
    tower. Trained checkpoints have a real matrix; so does ours."""
    import torch

    with torch.no_grad():
        weight = model.model.multi_modal_projector.mm_input_projection_weight
        if torch.count_nonzero(weight) == 0:
            weight.normal_(0.0, 0.02)
