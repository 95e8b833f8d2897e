"""Gemma 4, the small "E" sizes (E2B, E4B; instruction-tuned -it and base): a text, image, audio
and video model of which this project trains the image path.

Prompt format (TRL's gemma4.jinja = the hub's): "<bos><|turn>user\\n...<turn|>\\n<|turn>model\\n
...<turn|>\\n", a system message in its own "<|turn>system" turn. The template writes one
<|image|> per image; the processor replaces it with <|image> + N <|image|> + <image|> (no newlines
around it, so nothing merges with the text: the formula is exact).

N (the soft tokens) depends only on the image's aspect ratio: Gemma4ImageProcessor rescales
every image, up or down, keeping its aspect ratio, to the largest size whose 16 px patches fit a
budget of max_soft_tokens x 3 x 3 patches (280 tokens on the hub: 2,520 patches) with both sides
multiples of 48 px (3 x 3 patches are average-pooled into one soft token): any square becomes
768 x 768 px, 256 tokens; a 4:3 photo 912 x 672 px, 266 tokens; 16:9 1056 x 576 px, 264 tokens;
a 2000 x 11 strip one 48 px row 10,800 px long, 225 tokens.

`--max-side S`: S itself (images are shrunk so that no side exceeds S): the processor then
rescales to its token budget whatever S is, so S limits the detail an image brings, not its
tokens; a smaller S saves nothing (as for Gemma 3).

Audio and video: the tower for audio exists in the hub checkpoints (the planner counts it); no
row of this project carries audio or video, and the tiny checkpoint has no audio tower.
"""

from __future__ import annotations

from typing import Any

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

PATCH = 16
POOL = 3
REAL_SOFT_TOKENS = 280  # the hub's max_soft_tokens (image_seq_length)
TINY_SOFT_TOKENS = 70  # the smallest budget Gemma4ImageProcessor accepts (70/140/280/560/1120)


def gemma4_image_tokens(
    width: int,
    height: int,
    *,
    patch_size: int = PATCH,
    max_soft_tokens: int = REAL_SOFT_TOKENS,
    pooling_kernel_size: int = POOL,
) -> ImageTokenCount:
    """The processor's aspect-preserving size for the patch budget (its own function), then one
    soft token per pooled 3 x 3 patches, framed by <|image> and <image|>."""
    from transformers.models.gemma4.image_processing_gemma4 import (
        get_aspect_ratio_preserving_size,
    )

    target_height, target_width = get_aspect_ratio_preserving_size(
        height=height,
        width=width,
        patch_size=patch_size,
        max_patches=max_soft_tokens * pooling_kernel_size**2,
        pooling_kernel_size=pooling_kernel_size,
    )
    patches = (target_height // patch_size) * (target_width // patch_size)
    soft_tokens = patches // pooling_kernel_size**2
    return ImageTokenCount(
        text_tokens=soft_tokens + 2,
        vision_tokens=soft_tokens,
        resized=(target_width, target_height),
    )


def gemma4_settings(processor: Any) -> dict:
    """The scheme's parameters of a loaded processor."""
    image_processor = processor.image_processor
    return dict(
        patch_size=image_processor.patch_size,
        max_soft_tokens=image_processor.max_soft_tokens,
        pooling_kernel_size=image_processor.pooling_kernel_size,
    )


def tiny_processor(tokenizer, real_size: bool = False):
    """gemma-4-E*-it's processor with the tiny tokenizer; real_size: the hub's 280-token budget
    (the tiny one takes the smallest, 70)."""
    from transformers import (
        Gemma4AudioFeatureExtractor,
        Gemma4ImageProcessor,
        Gemma4Processor,
        Gemma4VideoProcessor,
    )

    from vlm_unsloth.families._templates import trl_template

    soft_tokens = REAL_SOFT_TOKENS if real_size else TINY_SOFT_TOKENS
    # The hub's preprocessor_config.json: the class defaults (bicubic, rescale to [0, 1], no
    # normalisation: the patch embedder maps pixels to [-1, 1] itself).
    image_processor = Gemma4ImageProcessor(
        patch_size=PATCH, max_soft_tokens=soft_tokens, pooling_kernel_size=POOL
    )
    return Gemma4Processor(
        feature_extractor=Gemma4AudioFeatureExtractor(),
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=Gemma4VideoProcessor(),
        chat_template=trl_template("gemma4.jinja"),
        image_seq_length=soft_tokens,
    )


def tiny_config(tokenizer, text=None, vision=None, top=None):
    """Tiny Gemma 4: one sliding-window and one global layer (the real 4:1 / 5:1 pattern's two
    kinds, global heads twice as wide, proportional RoPE on a quarter of them) with per-layer
    input embeddings (PLE) as E2B/E4B have; no KV sharing (two layers have none to share); a
    2-layer vision tower of clipped linears; no audio tower."""
    from transformers import Gemma4Config

    ids = tokenizer.convert_tokens_to_ids
    vision_config = dict(
        hidden_size=VISION_HIDDEN,
        intermediate_size=2 * VISION_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=VISION_HIDDEN // 2,
        patch_size=PATCH,
        pooling_kernel_size=POOL,
        # Positions index rows and columns of patches: at most 70 x 3 = 210 on the tiny budget.
        position_embedding_size=256,
        use_clipped_linears=True,
    ) | (vision or {})
    text_config = dict(
        TINY_TEXT_SHAPE,
        vocab_size=len(tokenizer),
        vocab_size_per_layer_input=len(tokenizer),
        hidden_size_per_layer_input=16,
        head_dim=16,
        global_head_dim=32,
        layer_types=["sliding_attention", "full_attention"],
        # The window holds one image's soft tokens (at most 70), as the hub's 512 holds 280, and
        # still bites on longer prompts. With 32 (Gemma 3's tiny window) the colour task stayed
        # at chance: 25% after 150 steps, 52.5% with 128.
        sliding_window=128,
        max_position_embeddings=4096,
        final_logit_softcapping=30.0,
        num_kv_shared_layers=0,
        bos_token_id=ids("<bos>"),
        eos_token_id=ids("<eos>"),
        pad_token_id=ids("<pad>"),
    ) | (text or {})
    return Gemma4Config(
        text_config=text_config,
        vision_config=vision_config,
        boi_token_id=ids("<|image>"),
        eoi_token_id=ids("<image|>"),
        image_token_id=ids("<|image|>"),
        video_token_id=ids("<|video|>"),
        boa_token_id=ids("<|audio>"),
        eoa_token_index=ids("<audio|>"),
        audio_token_id=ids("<|audio|>"),
        **(top or {}),
    )


# gemma-4-E2B-it / -E4B-it: from memory of the hub's config.json, checked against public
# re-implementations that quote it (not against the hub, unreachable here): the sliding layers
# (512 tokens) 4:1 (E2B) or 5:1 (E4B) with global ones, 256-wide heads (512 on global layers),
# the last 20 (E2B) / 18 (E4B) layers reuse earlier layers' keys and values (E2B's have double
# wide MLPs), 256-wide per-layer input embeddings; the 16-layer, 768-wide vision tower of 16 px
# patches, and the 12-layer conformer for audio (its weights count in memory).
_IMAGE_SETTINGS = dict(patch_size=PATCH, max_soft_tokens=REAL_SOFT_TOKENS, pooling_kernel_size=POOL)
_TEXT = dict(
    vocab_size=262144, vocab_size_per_layer_input=262144, hidden_size_per_layer_input=256,
    num_attention_heads=8, head_dim=256, global_head_dim=512, sliding_window=512,
    max_position_embeddings=131072, final_logit_softcapping=30.0, rms_norm_eps=1e-6,
)  # fmt: skip
_VISION = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=16, num_attention_heads=12,
    num_key_value_heads=12, head_dim=64, patch_size=PATCH, pooling_kernel_size=POOL,
    position_embedding_size=10240, use_clipped_linears=True,
)  # fmt: skip
_AUDIO = dict(
    hidden_size=1024, num_hidden_layers=12, num_attention_heads=8,
    subsampling_conv_channels=[128, 32], conv_kernel_size=5, attention_chunk_size=12,
    attention_context_left=13, attention_context_right=0, residual_weight=0.5,
    use_clipped_linears=True,
)  # fmt: skip


# <pad> <eos> <bos> <unk> <mask> first (ids 0-4, as on the hub); the hub has <|turn> = 105,
# <turn|> = 106, <|image> = 255999, <|audio> = 256000, <|image|> = 258880, <|audio|> = 258881,
# <image|> = 258882, <audio|> = 258883, <|video|> = 258884; the template's thinking and tool
# markers too.
_SPECIAL_TOKENS = (
    "<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<|turn>", "<turn|>",
    "<|image>", "<image|>", "<|image|>", "<|audio>", "<audio|>", "<|audio|>",
    "<|video|>", "<|think|>", "<|channel>", "<channel|>", "<|tool>", "<tool|>",
    "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>", '<|"|>',
)  # fmt: skip


def _layer_types(layers: int, every: int) -> list[str]:
    """`every`-th layer global, the rest sliding-window."""
    kinds = ("sliding_attention", "full_attention")
    return [kinds[(i + 1) % every == 0] for i in range(layers)]


def _checkpoints(size: str) -> tuple[str, ...]:
    """The -it checkpoint and its Unsloth copies, then the base (pretrained) one."""
    return (*mirrors("google", f"gemma-4-{size}-it"), f"google/gemma-4-{size}")


FAMILY = Family(
    key="gemma4",
    model_type="gemma4",
    default_model="google/gemma-4-E4B-it",
    tiny_name="tiny-gemma4",
    instruction_part="<|turn>user\n",
    response_part="<|turn>model\n",
    end_of_turn="<turn|>",
    image_token="<|image|>",
    other_image_tokens=("<|image>", "<image|>"),
    max_aspect_ratio=None,  # a very thin image keeps one 48 px row, up to the budget's length
    min_image_side=1,  # every image is rescaled to the budget, small ones up
    vision_tower="model.vision_tower",
    language_model="model.language_model",
    # Gemma4MultimodalEmbedder: a norm and the projection into the language model's width.
    connector="embed_vision",
    # Each decoder layer's PLE gate and projection (outside self_attn and mlp): Unsloth's
    # selection (unsloth_zoo get_peft_regex) leaves them out, and so do we.
    unadapted_layer_linears=("per_layer_input_gate", "per_layer_projection"),
    # Unsloth 2026.10.9 adapts these two flat Linears too (vision and MLP switches on): the
    # connector's projection is LoRA-adapted, unlike every other family's connector.
    flat_vision_linears=(
        "vision_tower.patch_embedder.input_proj",
        "embed_vision.embedding_projection",
    ),
    image_scheme=ImageScheme("patch-budget", gemma4_settings, gemma4_image_tokens),
    architecture=Architecture(
        TinyTokenizer(
            _SPECIAL_TOKENS,
            bos="<bos>",
            eos="<eos>",
            pad="<pad>",
            unk="<unk>",
            extra_corpus="user\nmodel\nsystem\n",
            add_bos=True,  # like the hub's tokenizer, although the template writes <bos> too
            # Gemma4Processor reads these as tokenizer attributes (tokenizer_config.json); it
            # refuses every call, images included, where boa_token or eoa_token is missing.
            extra_special_tokens={
                "boi_token": "<|image>",
                "eoi_token": "<image|>",
                "image_token": "<|image|>",
                "boa_token": "<|audio>",
                "eoa_token": "<audio|>",
                "audio_token": "<|audio|>",
            },
        ),  # fmt: skip
        tiny_processor,
        tiny_config,
        "Gemma4ForConditionalGeneration",
    ),
    sizes=(
        ModelSize(
            "gemma-4-e2b",
            (1536, 35),
            _IMAGE_SETTINGS,
            _checkpoints("E2B"),
            real=RealConfig(
                text_config=dict(
                    _TEXT,
                    hidden_size=1536,
                    intermediate_size=6144,
                    num_hidden_layers=35,
                    num_key_value_heads=1,
                    layer_types=_layer_types(35, 5),
                    num_kv_shared_layers=20,
                    use_double_wide_mlp=True,
                ),
                vision_config=_VISION,
                config=dict(audio_config=dict(_AUDIO, output_proj_dims=1536)),
            ),
        ),
        ModelSize(
            "gemma-4-e4b",
            (2560, 42),
            _IMAGE_SETTINGS,
            _checkpoints("E4B"),
            real=RealConfig(
                text_config=dict(
                    _TEXT,
                    hidden_size=2560,
                    intermediate_size=10240,
                    num_hidden_layers=42,
                    num_key_value_heads=2,
                    layer_types=_layer_types(42, 6),
                    num_kv_shared_layers=18,
                ),
                vision_config=_VISION,
                config=dict(audio_config=dict(_AUDIO, output_proj_dims=1536)),
            ),
        ),
    ),  # fmt: skip
    # The processor matches images to rows: [[a], [], [b]].
    nested_images=True,
    # Unsloth 2026.10.9 lists gemma4 in unsloth_zoo/model_lists.py FORCE_FLOAT32 ("fp16 NaNs the
    # grad_norm in the backward"): asked for float16 it keeps the residual stream, norms and
    # attention in float32 (unsloth_zoo/temporary_patches/gemma4_float32.py).
    # PEFT's k-bit preparation would cast this table to float32: 10.5 GiB asked for on an H100
    # under a 12 GiB cap (E4B, 2026-12-05), out of memory.
    # Its 262k-token embedding (tied to lm_head, so both go aside together) would add another
    # ~1-1.3 GiB in float32 at E4B; frozen, it needs no float32 either.
    hf_keeps_16bit=("embed_tokens_per_layer", "embed_tokens", "lm_head"),
    fp16_unsafe="Gemma 4's gradients overflow float16 (Unsloth computes it in float32 on GPUs "
    "without bf16 too)",
    # Measured on an H100 (random weights, real size): with Unsloth 2026.10.9's per-block
    # compile no first step had finished after 200-300 s; with UNSLOTH_BLOCK_COMPILE=0 it
    # trains.
    unsloth_block_compile=False,
)
