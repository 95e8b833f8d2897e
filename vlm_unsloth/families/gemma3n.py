"""Gemma 3n (instruction-tuned -it checkpoints; E2B and E4B): Gemma 3's turns over a language
model with AltUp, LAuReL, per-layer inputs and KV sharing, a MobileNet v5 image tower (timm) and
an audio tower (never used here: rows with audio are refused, data/validation.py).

Prompt format (the hub's template, chat_templates/gemma3n.jinja): "<bos><start_of_turn>user\\n
...<end_of_turn>\\n<start_of_turn>model\\n...<end_of_turn>\\n", a system message folded into the
first user turn. The template writes one <image_soft_token> per image; the processor replaces it
with "\\n\\n<start_of_image>" + 256 <image_soft_token> + "<end_of_image>\\n\\n" (as Gemma 3: the
"\\n\\n" merge with neighbouring newlines, so the exact length comes from tokenizing the expanded
prompt, `ImageScheme.expand_prompt`).

`--max-side S`: min(S, the tower's square). The processor (SiglipImageProcessor) squashes every
image to one 768 px square, whatever its shape; the tower's multi-scale fusion adapter pools its
last two stages to a fixed 16 x 16 grid: 256 soft tokens per image whatever S. S only limits the
detail an image brings.

Token ids: Gemma 3n embeds ids >= its vision offset with the vision embedder's own table and ids
>= its audio offset with the audio one (262144 and 262272 on the hub: <end_of_image> and
<image_soft_token> are the vision table's first two, <end_of_audio> and <audio_soft_token> the
audio table's); every text token must lie below them. The tiny tokenizer adds those four after
training (`TinyTokenizer.tokens_above_vocab`) and the configs take the offsets from their ids.

The vision tower is timm's `mobilenetv5_300m_enc`, built from the config (`model_args`) with no
download: transformers' TimmWrapperModel needs the `timm` package. It has no linear layer (all
convolutions), so LoRA adapts the language model only, on both backends
(`vision_tower_has_linear_layers=False`).
"""

from __future__ import annotations

from typing import Any

from vlm_unsloth.families._gemma import square_cap, square_image_tokens, square_settings
from vlm_unsloth.families._templates import shipped_template
from vlm_unsloth.families.base import (
    TINY_TEXT_SHAPE,
    Architecture,
    Family,
    ImageScheme,
    ModelSize,
    RealConfig,
    TinyTokenizer,
)

# The real tower: 768 px in, its fusion adapter's output 16 x 16 = 256 soft tokens of width 2048
# (fixed in timm's MobileNetV5Encoder), average-pooled from the 48 x 48 stage. The tiny one: the
# same 84 blocks at 1/20 of the channels, 128 px in and a 4 x 4 = 16 token output pooled from
# 8 x 8 (the adapter's `msfa_output_resolution`; a size that does not divide takes another
# path, bilinear interpolation). 128 px, not 64: the square caps --max-side, and the tests'
# 84 px images must reach the processor (and GRPO's rewards) unshrunk.
TINY_IMAGE = 128
REAL_IMAGE = 768
TINY_GRID = 4
REAL_GRID = 16
TOWER_WIDTH = 2048


def expand_prompt(text: str, processor: Any) -> str:
    """What the processor writes for each image: it replaces the template's image token."""
    return text.replace(processor.image_token, processor.full_image_sequence)


def tiny_processor(tokenizer, real_size: bool = False):
    """gemma-3n-*-it's processor with the tiny tokenizer; real_size: 768 px and 256 tokens."""
    from transformers import Gemma3nAudioFeatureExtractor, Gemma3nProcessor, SiglipImageProcessor

    side = REAL_IMAGE if real_size else TINY_IMAGE
    grid = REAL_GRID if real_size else TINY_GRID
    # The hub's preprocessor_config.json (from memory): rescale to [0, 1], no normalisation
    # (timm's mobilenetv5_300m_enc takes mean 0, std 1), bilinear.
    image_processor = SiglipImageProcessor(
        size={"height": side, "width": side},
        resample=2,  # BILINEAR
        do_normalize=False,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return Gemma3nProcessor(
        feature_extractor=Gemma3nAudioFeatureExtractor(),
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=shipped_template("gemma3n.jinja"),
        image_seq_length=grid**2,  # must equal vision_soft_tokens_per_image
    )


def tiny_config(tokenizer, text=None, vision=None, top=None):
    """Tiny Gemma 3n: four layers (sliding, full, then two sharing their KV: the real 4:1
    pattern's two kinds and its KV sharing), AltUp over 4 streams, LAuReL, per-layer inputs and
    one activation-sparse layer as on the hub; the real MobileNet v5 tower at 1/20 width; a
    one-block audio tower (built, never fed)."""
    from transformers import Gemma3nConfig

    ids = tokenizer.convert_tokens_to_ids
    top = dict(top or {})
    vision_offset, audio_offset = ids("<end_of_image>"), ids("<end_of_audio>")
    text_config = dict(
        TINY_TEXT_SHAPE,
        num_hidden_layers=4,
        vocab_size=len(tokenizer),
        vocab_size_per_layer_input=vision_offset,  # the text tokens (262144 on the hub)
        hidden_size_per_layer_input=16,
        head_dim=16,
        layer_types=["sliding_attention", "full_attention"] * 2,
        num_kv_shared_layers=2,
        sliding_window=32,  # short enough to bite in the tests' prompts
        laurel_rank=8,
        altup_num_inputs=4,
        activation_sparsity_pattern=[0.95, 0.0, 0.0, 0.0],
        max_position_embeddings=4096,
        bos_token_id=ids("<bos>"),
        eos_token_id=ids("<eos>"),
        pad_token_id=ids("<pad>"),
    ) | (text or {})
    vision_config = dict(
        architecture="mobilenetv5_300m_enc",
        model_args=dict(channel_multiplier=0.05, stem_size=16, msfa_output_resolution=TINY_GRID),
        hidden_size=TOWER_WIDTH,
        vocab_offset=vision_offset,
        vocab_size=audio_offset - vision_offset,
    ) | (vision or {})
    audio_config = dict(
        vocab_offset=audio_offset,
        vocab_size=len(tokenizer) - audio_offset,
        hidden_size=64,
        conf_num_hidden_layers=1,
        conf_num_attention_heads=2,
        sscp_conv_channel_size=[8, 8],
    ) | top.pop("audio_config", {})
    grid = (vision_config["model_args"] or {}).get("msfa_output_resolution", REAL_GRID)
    return Gemma3nConfig(
        text_config=text_config,
        vision_config=vision_config,
        audio_config=audio_config,
        vision_soft_tokens_per_image=grid**2,
        boi_token_id=ids("<start_of_image>"),
        eoi_token_id=vision_offset,
        image_token_id=ids("<image_soft_token>"),
        boa_token_id=ids("<start_of_audio>"),
        eoa_token_id=audio_offset,
        audio_token_id=ids("<audio_soft_token>"),
        **top,
    )


# gemma-3n-E4B-it: transformers' Gemma3nTextConfig / Gemma3nVisionConfig defaults (E4B's);
# gemma-3n-E2B-it: the same with 30 layers, 8192-wide MLPs and 10 KV-shared layers (from memory
# of the hub's config.json). Both: 2048 wide, 8 heads of 256 (2 KV), 512-token sliding windows,
# the first 10 layers' MLPs 95% sparse, 262144 x 256 per-layer input embeddings per layer.
_IMAGE_SETTINGS = dict(
    image_size=REAL_IMAGE, image_seq_length=REAL_GRID**2, double_newline_tokens=1
)
_TEXT = dict(
    vocab_size=262400, vocab_size_per_layer_input=262144, hidden_size_per_layer_input=256,
    hidden_size=2048, num_attention_heads=8, num_key_value_heads=2, head_dim=256,
    sliding_window=512, layer_types=None, activation_sparsity_pattern=None, laurel_rank=64,
    max_position_embeddings=32768,
)  # fmt: skip
_VISION = dict(model_args=None, vocab_size=128)  # the full mobilenetv5_300m_enc at 768 px
# The audio tower (built by the model though never fed here): Gemma3nAudioConfig's defaults.
_AUDIO = dict(
    audio_config=dict(
        vocab_size=128, hidden_size=1536, conf_num_hidden_layers=12, conf_num_attention_heads=8,
        sscp_conv_channel_size=[128, 32],
    )
)  # fmt: skip


def _checkpoints(name: str) -> tuple[str, ...]:
    """Google's checkpoint and Unsloth's copies (16-bit, dynamic 4-bit: unsloth's mapper)."""
    return (f"google/{name}", f"unsloth/{name}", f"unsloth/{name}-unsloth-bnb-4bit")


FAMILY = Family(
    key="gemma3n",
    model_type="gemma3n",
    default_model="unsloth/gemma-3n-E4B-it",
    tiny_name="tiny-gemma3n",
    instruction_part="<start_of_turn>user\n",
    response_part="<start_of_turn>model\n",
    end_of_turn="<end_of_turn>",
    image_token="<image_soft_token>",
    other_image_tokens=("<start_of_image>", "<end_of_image>"),
    max_aspect_ratio=None,  # any shape: squashed to the square
    min_image_side=1,
    vision_tower="model.vision_tower",
    vision_tower_has_linear_layers=False,
    # Unsloth's vision + MLP switches adapt the vision embedder's projection (the only linear
    # layer on the image path); its fused RMS norms and table stay whole.
    flat_vision_linears=("embed_vision.embedding_projection",),
    # AltUp clamps prediction_coefs in place every training step (packed 4-bit weights cannot
    # take it): kept in 16-bit, as Unsloth's loader does (unsloth/models/vision.py).
    unquantized_modules=(
        "lm_head",
        "correction_coefs",
        "prediction_coefs",
        "modality_router",
        *(
            f"{name}.{i}"
            for name in ("altup_projections", "altup_unembed_projections")
            for i in range(3)
        ),
    ),  # fmt: skip
    language_model="model.language_model",
    connector="embed_vision",
    image_scheme=ImageScheme(
        "gemma3n", square_settings, square_image_tokens, square_cap, expand_prompt=expand_prompt
    ),
    architecture=Architecture(
        # <pad> <eos> <bos> <unk> <mask> first (ids 0-4, as on the hub); the hub has
        # <start_of_turn> = 105, <end_of_turn> = 106, <start_of_image> = 255999,
        # <start_of_audio> = 256000 (text tokens), then above the text vocabulary
        # <end_of_image> = 262144, <image_soft_token> = 262145 (the vision table's),
        # <end_of_audio> = 262272, <audio_soft_token> = 262273 (the audio table's).
        TinyTokenizer(
            (
                "<pad>",
                "<eos>",
                "<bos>",
                "<unk>",
                "<mask>",
                "<start_of_turn>",
                "<end_of_turn>",
                "<start_of_image>",
                "<start_of_audio>",
            ),
            bos="<bos>",
            eos="<eos>",
            pad="<pad>",
            unk="<unk>",
            tokens_above_vocab=(
                "<end_of_image>",
                "<image_soft_token>",
                "<end_of_audio>",
                "<audio_soft_token>",
            ),
            # Gemma's vocabulary has newline runs as single tokens ("\n\n" is one): the
            # processor's "\n\n" around each image then merges with the template's newlines.
            extra_corpus="user\nmodel\n\nFirst line.\n\nSecond line.\n\n\nThird.\n\n\n\n",
            add_bos=True,  # like the hub's tokenizer, although the template writes <bos> too
            # Gemma3nProcessor reads these as tokenizer attributes (tokenizer_config.json).
            extra_special_tokens={
                "boi_token": "<start_of_image>",
                "eoi_token": "<end_of_image>",
                "image_token": "<image_soft_token>",
                "boa_token": "<start_of_audio>",
                "eoa_token": "<end_of_audio>",
                "audio_token": "<audio_soft_token>",
            },
        ),  # fmt: skip
        tiny_processor,
        tiny_config,
        "Gemma3nForConditionalGeneration",
    ),
    sizes=(
        ModelSize(
            "gemma-3n-e2b",
            (2048, 30),
            _IMAGE_SETTINGS,
            _checkpoints("gemma-3n-E2B-it"),
            real=RealConfig(
                text_config=dict(
                    _TEXT, intermediate_size=8192, num_hidden_layers=30, num_kv_shared_layers=10
                ),
                vision_config=_VISION,
                config=_AUDIO,
            ),
        ),
        ModelSize(
            "gemma-3n-e4b",
            (2048, 35),
            _IMAGE_SETTINGS,
            _checkpoints("gemma-3n-E4B-it"),
            real=RealConfig(
                text_config=dict(
                    _TEXT, intermediate_size=16384, num_hidden_layers=35, num_kv_shared_layers=15
                ),
                vision_config=_VISION,
                config=_AUDIO,
            ),
        ),
    ),  # fmt: skip
    # The processor matches images to rows: [[a], [], [b]].
    nested_images=True,
    # Unsloth's loader lists gemma3n among the models whose activations overflow float16
    # (unsloth_zoo/model_lists.py FORCE_FLOAT32).
    # PEFT's k-bit preparation would cast this 262k x (layers x 256) table to float32: 8.75 GiB
    # asked for on an H100 under a 12 GiB cap (E4B, 2026-12-05), out of memory.
    # Its 262k-token embedding (tied to lm_head, so both go aside together) would add another
    # ~1-1.3 GiB in float32 at E4B; frozen, it needs no float32 either.
    hf_keeps_16bit=("embed_tokens_per_layer", "embed_tokens", "lm_head"),
    fp16_unsafe="Gemma 3n's activations overflow float16 (Unsloth computes it in float32 "
    "on GPUs without bf16 too)",
)
