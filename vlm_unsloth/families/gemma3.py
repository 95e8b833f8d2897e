"""Gemma 3 (instruction-tuned -it checkpoints; the -pt ones have no chat template).

Prompt format (TRL's gemma3.jinja = the hub's): "<bos><start_of_turn>user\\n...<end_of_turn>\\n
<start_of_turn>model\\n...<end_of_turn>\\n", a system message folded into the first user turn. The
template writes one <start_of_image> per image; the processor replaces it with
"\\n\\n<start_of_image>" + 256 <image_soft_token> + "<end_of_image>\\n\\n" (every image squashed
to one 896 px square). How many tokens the newlines make depends on the text around them (a BPE
merges "\\n" runs), so the exact length comes from tokenizing the expanded prompt
(`ImageScheme.expand_prompt`), as the processor itself does.

`--max-side S`: min(S, the tower's square): the processor squashes every image to that one square
(896 px, 256 tokens) whatever S; S only limits the detail an image brings. Pan-and-scan crops
never happen: Gemma3Processor passes do_pan_and_scan=False on every call (its kwargs defaults
override the image processor's own setting) and the product never asks for them.
"""

from __future__ import annotations

from typing import Any

from vlm_unsloth.families._gemma import square_cap, square_image_tokens, square_settings
from vlm_unsloth.families.base import (
    SIGLIP_SO400M_896,
    TINY_TEXT_SHAPE,
    VISION_HIDDEN,
    Architecture,
    Family,
    ImageScheme,
    ModelSize,
    RealConfig,
    TinyTokenizer,
    mirrors,
)

# The real tower: 896 px, 14 px patches (64 x 64), average-pooled 4 x 4 into 16 x 16 = 256 soft
# tokens. The tiny one: 224 px (16 x 16 patches) pooled 4 x 4 into 4 x 4 = 16: the same pooling
# kernel, so the same code path with smaller counts.
TINY_IMAGE = 224
REAL_IMAGE = 896
PATCH = 14
POOL = 4


def tokens_per_image(image_size: int) -> int:
    """Soft tokens of one image: (image_size / patch / pool)^2 (256 at 896 px)."""
    return (image_size // PATCH // POOL) ** 2


def expand_prompt(text: str, processor: Any) -> str:
    """What the processor writes for each image (pan-and-scan is never on, see above)."""
    return text.replace(processor.boi_token, processor.full_image_sequence)


def tiny_processor(tokenizer, real_size: bool = False):
    """gemma-3-*-it's processor with the tiny tokenizer; real_size: 896 px and 256 tokens."""
    from transformers import Gemma3ImageProcessor, Gemma3Processor

    from vlm_unsloth.families._templates import trl_template

    side = REAL_IMAGE if real_size else TINY_IMAGE
    # The hub's preprocessor_config.json leaves pan-and-scan unset (off: see above).
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
        image_seq_length=tokens_per_image(side),  # must equal mm_tokens_per_image
    )


def tiny_config(tokenizer, text=None, vision=None, top=None):
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
        image_size=TINY_IMAGE,
        patch_size=PATCH,
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
        mm_tokens_per_image=tokens_per_image(vision_config["image_size"]),
        boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"),
        image_token_index=ids("<image_soft_token>"),
        **(top or {}),
    )


def fill_projector(model) -> None:
    """A random init leaves Gemma 3's projector matrix (a bare parameter) at zero: every image
    feature would be 0, the image could not change the output and no gradient would reach the
    tower. Trained checkpoints have a real matrix; so does ours."""
    import torch

    with torch.no_grad():
        weight = model.model.multi_modal_projector.mm_input_projection_weight
        if torch.count_nonzero(weight) == 0:
            weight.normal_(0.0, 0.02)


# gemma-3-4b-it / -12b-it (= unsloth/gemma-3-*-it): 5 sliding-window (1,024) layers per global
# one, 256-wide heads, embeddings tied; SigLIP so400m at 896 px (64 x 64 patches pooled into 256
# soft tokens). From memory of the hub's config.json; the image geometry and the token indices
# are transformers' defaults for the architecture.
_IMAGE_SETTINGS = dict(image_size=896, image_seq_length=256, double_newline_tokens=1)
_TEXT = dict(
    vocab_size=262208, num_attention_heads=8, head_dim=256, query_pre_attn_scalar=256,
    sliding_window=1024, layer_types=None, max_position_embeddings=131072, rms_norm_eps=1e-6,
)  # fmt: skip

FAMILY = Family(
    key="gemma3",
    model_type="gemma3",
    default_model="unsloth/gemma-3-4b-it",
    tiny_name="tiny-gemma3",
    instruction_part="<start_of_turn>user\n",
    response_part="<start_of_turn>model\n",
    end_of_turn="<end_of_turn>",
    image_token="<image_soft_token>",
    other_image_tokens=("<start_of_image>", "<end_of_image>"),
    max_aspect_ratio=None,  # any shape: squashed to the square
    min_image_side=1,
    vision_tower="model.vision_tower",
    language_model="model.language_model",
    connector="multi_modal_projector",
    image_scheme=ImageScheme(
        "gemma3", square_settings, square_image_tokens, square_cap, expand_prompt=expand_prompt
    ),
    architecture=Architecture(
        # <pad> <eos> <bos> <unk> <mask> first (ids 0-4, as on the hub); the hub has
        # <start_of_turn> = 105, <end_of_turn> = 106, <start_of_image> = 255999,
        # <end_of_image> = 256000, <image_soft_token> = 262144.
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
                "<end_of_image>",
                "<image_soft_token>",
            ),
            bos="<bos>",
            eos="<eos>",
            pad="<pad>",
            unk="<unk>",
            # Gemma's vocabulary has newline runs as single tokens ("\n\n" is one): the
            # processor's "\n\n" around each image then merges with the template's newlines.
            extra_corpus="user\nmodel\n\nFirst line.\n\nSecond line.\n\n\nThird.\n\n\n\n",
            add_bos=True,  # like the hub's tokenizer, although the template writes <bos> too
            # Gemma3Processor reads these as tokenizer attributes (tokenizer_config.json).
            extra_special_tokens={
                "boi_token": "<start_of_image>",
                "eoi_token": "<end_of_image>",
                "image_token": "<image_soft_token>",
            },
        ),  # fmt: skip
        tiny_processor,
        tiny_config,
        "Gemma3ForConditionalGeneration",
        finish=fill_projector,
    ),
    sizes=(
        ModelSize(
            "gemma-3-4b",
            (2560, 34),
            _IMAGE_SETTINGS,
            mirrors("google", "gemma-3-4b-it"),
            real=RealConfig(
                text_config=dict(
                    _TEXT,
                    hidden_size=2560,
                    intermediate_size=10240,
                    num_hidden_layers=34,
                    num_key_value_heads=4,
                ),
                vision_config=SIGLIP_SO400M_896,
            ),
        ),
        ModelSize(
            "gemma-3-12b",
            (3840, 48),
            _IMAGE_SETTINGS,
            mirrors("google", "gemma-3-12b-it"),
            real=RealConfig(
                text_config=dict(
                    _TEXT,
                    hidden_size=3840,
                    intermediate_size=15360,
                    num_hidden_layers=48,
                    num_attention_heads=16,
                    num_key_value_heads=8,
                ),
                vision_config=SIGLIP_SO400M_896,
            ),
        ),
    ),  # fmt: skip
    # The processor matches images to rows: [[a], [], [b]].
    nested_images=True,
    # Unsloth's loader lists gemma3 among the models whose activations overflow float16
    # (unsloth_zoo/model_lists.py FORCE_FLOAT32).
    fp16_unsafe="Gemma 3's activations overflow float16 (Unsloth computes it in float32 "
    "on GPUs without bf16 too)",
    # Measured on an H200 (random weights, real sizes, --max-side 768, batch 2 x 4): with
    # Unsloth 2026.10.9's block compile the first step of Gemma-3-4B and -12B had not finished
    # after 200-400 s; with UNSLOTH_BLOCK_COMPILE=0, 5 steps of the 4B took 138 s in all, at
    # 4.6 GiB. UNSLOTH_ENABLE_FLEX_ATTENTION=0 alone did not help.
    unsloth_block_compile=False,
)
