"""Ministral 3 (Mistral3ForConditionalGeneration: a Ministral 3 text model, Pixtral's vision
tower, a patch merger): Mistral's [INST] prompt format, rows of 14 px patches merged 2 x 2.

The PixtralProcessor only ever shrinks (to 1540 px), then rounds each side up to 28 px (14 px
patches, 2 x 2 merged into one token): rows x cols [IMG], one [IMG_BREAK] a row (the last one
[IMG_END]): tokens = rows * (cols + 1), the rule of families/_pixtral.py. `--max-side S`: the
largest multiple of 28 px <= S, at most 1540.
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

# The real geometry (the token count depends only on the image size, so tests keep their images
# small instead): 14 px patches, merged 2 x 2, images up to 1540 px.
PATCH = 14
MERGE = 2
LONGEST_EDGE = 1540
_IMAGE_SETTINGS = dict(patch_size=PATCH, spatial_merge_size=MERGE, longest_edge=LONGEST_EDGE)

# Every size's RoPE, as on the hub: YaRN x16 over a 16k original context (262,144 positions),
# and Llama 4's attention temperature (queries scaled up beyond 16k positions).
_ROPE = {
    "rope_type": "yarn", "rope_theta": 1_000_000.0, "factor": 16.0,
    "original_max_position_embeddings": 16384, "beta_fast": 32.0, "beta_slow": 1.0,
    "mscale": 1.0, "mscale_all_dim": 1.0, "llama_4_scaling_beta": 0.1,
}  # fmt: skip


def tiny_processor(tokenizer, real_size: bool = False):
    """The hub's processor (PixtralProcessor) with the tiny tokenizer: the real image geometry."""
    return pixtral_processor(tokenizer, **_IMAGE_SETTINGS, template="ministral3.jinja")


def tiny_config(tokenizer, text=None, vision=None, top=None):
    """Tiny Ministral 3: a 2-layer Ministral 3 text model (the real YaRN RoPE), a 2-layer
    Pixtral-ViT of 14 px patches, the real projector (RMSNorm, 2 x 2 patch merger, 2-layer gelu
    MLP without bias)."""
    from transformers import Mistral3Config

    ids = tokenizer.convert_tokens_to_ids
    vision_config = dict(
        model_type="pixtral",
        hidden_size=VISION_HIDDEN,
        intermediate_size=2 * VISION_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=LONGEST_EDGE,
        patch_size=PATCH,
        hidden_act="silu",
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    ) | (vision or {})
    text_config = dict(
        TINY_TEXT_SHAPE,
        model_type="ministral3",
        vocab_size=len(tokenizer),
        head_dim=TEXT_HIDDEN // 4,
        max_position_embeddings=262144,
        sliding_window=None,
        rope_parameters=_ROPE,
        bos_token_id=ids("<s>"),
        eos_token_id=ids("</s>"),
        pad_token_id=ids("<pad>"),
        tie_word_embeddings=False,
    ) | (text or {})
    return Mistral3Config(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=ids(IMAGE_TOKEN),
        spatial_merge_size=MERGE,
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        multimodal_projector_bias=False,
        tie_word_embeddings=text_config["tie_word_embeddings"],
        **(top or {}),
    )


def fill_projector(model) -> None:
    """Give the tiny projector (patch merger and MLP, no biases) variance-keeping weights. At the
    random init's std 0.02 each of its three matrices shrinks what passes by 0.02 * sqrt(fan_in)
    (0.32, 0.16, 0.16 at the tiny widths): image features left it at std 0.004 (0.78 with these),
    the gradient back to the tower as weak, and the colour task (tests/test_every_family.py)
    reached 77.5% after 60 steps (final loss 0.34) instead of 100% (0.22; blank images 25%).
    Only the tiny checkpoint's weights change; the code path is the real one."""
    import math

    import torch

    projector = model.model.multi_modal_projector
    with torch.no_grad():
        for layer in (projector.patch_merger.merging_layer, projector.linear_1, projector.linear_2):
            layer.weight.normal_(0.0, 1.0 / math.sqrt(layer.in_features))


# The three sizes, from memory of the hub's config.json (not checked offline): Ministral 3
# text models (32 heads of 128, 8 KV heads, vocabulary 131,072), one vision tower for all
# (Pixtral-ViT: 24 layers of 1,024, 16 heads, 14 px patches, gated silu MLP, 1540 px) and a
# projector of RMSNorm, 2 x 2 patch merger and gelu MLP. The 3B ties its embeddings.
# mistralai's Instruct-2512 repositories hold FP8 weights; unsloth's copies of the same names
# are 16-bit (Unsloth's mapper), the Base-2512 ones are 16-bit everywhere.
_TEXT = dict(
    vocab_size=131072, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
    max_position_embeddings=262144, rms_norm_eps=1e-5, rope_parameters=_ROPE,
)  # fmt: skip
_VISION = dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
    image_size=LONGEST_EDGE, patch_size=PATCH,
)  # fmt: skip


def _size(billions: int, hidden: int, intermediate: int, layers: int, tied: bool) -> ModelSize:
    name = f"Ministral-3-{billions}B"
    return ModelSize(
        f"ministral-3-{billions}b",
        (hidden, layers),
        _IMAGE_SETTINGS,
        mirrors("mistralai", f"{name}-Instruct-2512") + mirrors("mistralai", f"{name}-Base-2512"),
        real=RealConfig(
            text_config=dict(
                _TEXT,
                hidden_size=hidden,
                intermediate_size=intermediate,
                num_hidden_layers=layers,
                tie_word_embeddings=tied,
            ),
            vision_config=_VISION,  # the top-level tie follows the text config's
        ),
    )


FAMILY = Family(
    key="ministral3",
    model_type="mistral3",
    default_model="unsloth/Ministral-3-8B-Instruct-2512",  # 16-bit (mistralai's is FP8)
    tiny_name="tiny-ministral3",
    instruction_part="[INST]",
    response_part="[/INST]",
    end_of_turn="</s>",
    image_token=IMAGE_TOKEN,
    # Rows of 28 px (2 x 2 merged 14 px patches): [IMG] per merged patch, [IMG_BREAK] after each
    # row, the last one [IMG_END]. Any aspect ratio; images only ever shrink (to 1540 px).
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
        "Mistral3ForConditionalGeneration",
        finish=fill_projector,
    ),
    sizes=(
        _size(3, 3072, 9216, 26, tied=True),
        _size(8, 4096, 14336, 34, tied=False),
        _size(14, 5120, 16384, 40, tied=False),
    ),
)
