"""The parts of each tiny checkpoint, per architecture (`config.model_type`): processor (with a
locally trained byte-level BPE holding the family's special tokens, and its chat template),
config, model class, and any fix a random initialisation needs.

    from vlm_unsloth.models.tiny_architectures import ARCHITECTURES
    parts = ARCHITECTURES["idefics3"]
    processor = parts.processor(real_size=False)

`models/tiny.py` builds and caches the folders; `models/random_weights.py` reuses the same parts
with the real sizes. Qwen3-VL's and Gemma 3's parts are in `models/tiny_qwen3_gemma3.py`.
Token ids differ from the hub's: every code path looks tokens up by text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vlm_unsloth.models.tiny_qwen3_gemma3 import (
    QWEN_SPECIAL_TOKENS,
    TEXT_HIDDEN,
    TINY_TEXT_SHAPE,
    VISION_HIDDEN,
    fill_gemma3_projector,
    gemma3_config,
    gemma3_processor,
    qwen3_5_config,
    qwen3_5_processor,
    qwen3_vl_config,
    qwen3_vl_processor,
)
from vlm_unsloth.models.tiny_tokenizer import (
    SMOLVLM_CORPUS,
    chat_template,
    train_tokenizer,
    trl_template,
)

# Mllama tiles are 560 px in the real model (1,601 vision tokens each); a 112 px tile keeps the
# same code path at 65 tokens a tile, so CPU tests stay fast.
TINY_MLLAMA_TILE = 112
# Idefics3/SmolVLM: SmolVLM-Instruct has 384 px tiles of 14 px patches, pixel-shuffled by 3
# (81 tokens a view) and resizes to 4 tiles (1536 px); the tiny keeps the code path with 128 px
# tiles, 16 px patches and a shuffle of 2 (16 tokens a view), resizing to 512 px.
TINY_IDEFICS3 = dict(tile=128, patch=16, scale=2)
REAL_IDEFICS3 = dict(tile=384, patch=14, scale=3)
# Pixtral: the real 16 px patches and 1024 px longest edge (its token count depends only on the
# image size, so tests keep their images small instead).
PIXTRAL_PATCH = 16
PIXTRAL_LONGEST_EDGE = 1024

# Mllama: `<|image|>` must be the LAST id, equal to the text vocab_size (the real checkpoint has
# image_token_index 128256 == vocab_size): the embedding keeps extra rows beyond it.
_MLLAMA_SPECIAL_TOKENS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eot_id|>", "<|eom_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>",
]  # fmt: skip
# SmolVLM: SmolLM2's tokens plus Idefics3's image layout tokens (<row_r_col_c> up to 6 x 6).
_SMOLVLM_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<global-img>",
    *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
    "<fake_token_around_image>", "<image>", "<end_of_utterance>",
]  # fmt: skip
# Pixtral (Tekken vocabulary as converted for transformers): the first 20 ids are control tokens
# in this order, so [IMG] = 10, [IMG_BREAK] = 12, [IMG_END] = 13 as on the hub.
_PIXTRAL_SPECIAL_TOKENS = [
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]",
    "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
]  # fmt: skip


@dataclass(frozen=True)
class TinyArchitecture:
    """How to make one architecture's processor, config and model."""

    processor: Callable[..., Any]
    """(real_size: bool) -> processor; real_size: the real checkpoint's image parameters."""
    config: Callable[..., Any]
    """(tokenizer, text=None, vision=None, top=None) -> config; the dicts override the tiny
    sizes of the text/vision sub-configs and the top-level config (real sizes)."""
    model_class: str
    """The transformers class, by name."""
    finish: Callable[[Any], None] = lambda model: None
    """A fix after random initialisation (Mllama's closed cross-attention gates)."""


# --- Qwen2-VL / Qwen2.5-VL ---------------------------------------------------------------------


def _qwen_processor(model_type: str) -> Callable[..., Any]:
    def build(real_size: bool = False):
        from transformers import (
            Qwen2_5_VLProcessor,
            Qwen2VLImageProcessor,
            Qwen2VLProcessor,
            Qwen2VLVideoProcessor,
        )

        tokenizer = train_tokenizer(
            QWEN_SPECIAL_TOKENS, bos=None, eos="<|im_end|>", pad="<|endoftext|>"
        )
        # The real checkpoints' pixel bounds. Passed as `size`, never as min_pixels/max_pixels:
        # those kwargs rewrite the CLASS default and leak into every processor made later.
        size = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16384}
        image_processor = Qwen2VLImageProcessor(size=size, patch_size=14, merge_size=2)
        video_processor = Qwen2VLVideoProcessor(size=size, patch_size=14, merge_size=2)
        processor_class = Qwen2_5_VLProcessor if model_type == "qwen2_5_vl" else Qwen2VLProcessor
        return processor_class(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=video_processor,
            # The hub's exact Qwen2-VL / Qwen2.5-VL template (byte-identical for both).
            chat_template=trl_template("qwen2_5_vl.jinja"),
        )

    return build


def _qwen_config(model_type: str) -> Callable[..., Any]:
    def build(tokenizer, text=None, vision=None, top=None):
        from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

        ids = tokenizer.convert_tokens_to_ids
        text_config = dict(
            TINY_TEXT_SHAPE,
            vocab_size=len(tokenizer),
            max_position_embeddings=4096,
            # M-RoPE splits head_dim/2 frequencies over (time, height, width), as [16, 24, 24]
            # does for the real 128-wide heads.
            rope_parameters={
                "rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3],
            },
            bos_token_id=ids("<|endoftext|>"),
            eos_token_id=ids("<|im_end|>"),
            pad_token_id=ids("<|endoftext|>"),
        ) | (text or {})  # fmt: skip
        head_dim = text_config["hidden_size"] // text_config["num_attention_heads"]
        assert sum(text_config["rope_parameters"]["mrope_section"]) == head_dim // 2
        special_ids = dict(
            image_token_id=ids("<|image_pad|>"),
            video_token_id=ids("<|video_pad|>"),
            vision_start_token_id=ids("<|vision_start|>"),
            vision_end_token_id=ids("<|vision_end|>"),
        ) | (top or {})
        if model_type == "qwen2_5_vl":
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
                text_config=text_config, vision_config=vision_config, **special_ids
            )
        vision_config = dict(
            depth=2, embed_dim=VISION_HIDDEN, hidden_size=TEXT_HIDDEN, num_heads=2, mlp_ratio=2
        ) | (vision or {})
        return Qwen2VLConfig(text_config=text_config, vision_config=vision_config, **special_ids)

    return build


# --- Llama 3.2 Vision (Mllama) -----------------------------------------------------------------


def _mllama_processor(real_size: bool = False):
    from transformers import MllamaImageProcessor, MllamaProcessor

    tokenizer = train_tokenizer(
        _MLLAMA_SPECIAL_TOKENS,
        bos="<|begin_of_text|>",
        eos="<|eot_id|>",
        pad="<|finetune_right_pad_id|>",
        last_token="<|image|>",
    )
    tile = 560 if real_size else TINY_MLLAMA_TILE
    image_processor = MllamaImageProcessor(size={"height": tile, "width": tile}, max_image_tiles=4)
    return MllamaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=chat_template("llama3_2_vision.jinja"),
    )


def _mllama_config(tokenizer, text=None, vision=None, top=None):
    from transformers import MllamaConfig

    ids = tokenizer.convert_tokens_to_ids
    image_id = ids("<|image|>")
    assert image_id == len(tokenizer) - 1, "<|image|> must be the last token id"
    vision_config = dict(
        hidden_size=VISION_HIDDEN,
        intermediate_size=2 * VISION_HIDDEN,
        num_hidden_layers=2,
        num_global_layers=1,
        attention_heads=2,
        intermediate_layers_indices=[0, 1],
        vision_output_dim=VISION_HIDDEN * 3,  # hidden x (len(intermediate indices) + 1)
        image_size=TINY_MLLAMA_TILE,
        patch_size=14,
        max_num_tiles=4,
    ) | (vision or {})
    text_config = dict(
        TINY_TEXT_SHAPE,
        vocab_size=image_id,
        num_hidden_layers=3,
        cross_attention_layers=[1],
        max_position_embeddings=4096,
        bos_token_id=ids("<|begin_of_text|>"),
        eos_token_id=ids("<|eot_id|>"),
        pad_token_id=ids("<|finetune_right_pad_id|>"),
    ) | (text or {})
    return MllamaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=image_id,
        **(top or {}),
    )


def _open_cross_attention_gates(model) -> None:
    """Random-init Mllama has zero cross-attention gates, so no gradient reaches the vision tower
    and the image cannot influence the output. Trained checkpoints have open gates; so do ours."""
    import torch

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")):
                parameter.fill_(1.0)


# --- SmolVLM (idefics3) / SmolVLM2 (smolvlm) ---------------------------------------------------


def _idefics3_geometry(real_size: bool) -> dict:
    geometry = REAL_IDEFICS3 if real_size else TINY_IDEFICS3
    tile, patch, scale = geometry["tile"], geometry["patch"], geometry["scale"]
    return dict(geometry, image_seq_len=(tile // patch) ** 2 // scale**2)


def _smolvlm_processor(model_type: str) -> Callable[..., Any]:
    def build(real_size: bool = False):
        geometry = _idefics3_geometry(real_size)
        tile = geometry["tile"]
        image_options = dict(
            do_image_splitting=True,
            size={"longest_edge": 4 * tile},  # the hub's 1536 = 4 x 384 (SmolVLM-Instruct)
            max_image_size={"longest_edge": tile},
            resample=1,  # LANCZOS, as the hub's preprocessor_config.json
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        )
        special_tokens = list(_SMOLVLM_SPECIAL_TOKENS)
        if model_type == "smolvlm":
            special_tokens.append("<video>")
        tokenizer = train_tokenizer(
            special_tokens,
            bos="<|im_start|>",
            eos="<end_of_utterance>",
            pad="<|im_end|>",
            unk="<|endoftext|>",
            extra_corpus=SMOLVLM_CORPUS,
        )
        if model_type == "idefics3":
            from transformers import Idefics3ImageProcessor, Idefics3Processor

            return Idefics3Processor(
                image_processor=Idefics3ImageProcessor(**image_options),
                tokenizer=tokenizer,
                image_seq_len=geometry["image_seq_len"],
                # SmolVLM-Instruct's hub template: TRL's Idefics3 one (Idefics3-8B-Llama3's)
                # with SmolLM2's <|im_start|> for Llama 3's <|begin_of_text|>.
                chat_template=trl_template("idefics3.jinja").replace(
                    "<|begin_of_text|>", "<|im_start|>"
                ),
            )
        from transformers import SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor
        from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

        # The processor requires a video processor; SmolVLM2's: <= 64 frames at 1 fps.
        video_processor = SmolVLMVideoProcessor(
            size={"longest_edge": tile},
            max_image_size={"longest_edge": tile},
            video_sampling={"fps": 1, "max_frames": 64, "video_size": {"longest_edge": tile}},
            resample=1,
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        )
        return SmolVLMProcessor(
            image_processor=SmolVLMImageProcessor(**image_options),
            tokenizer=tokenizer,
            video_processor=video_processor,
            image_seq_len=geometry["image_seq_len"],
            chat_template=DEFAULT_CHAT_TEMPLATE,  # SmolVLM2's (images and videos)
        )

    return build


def _smolvlm_config(model_type: str) -> Callable[..., Any]:
    def build(tokenizer, text=None, vision=None, top=None):
        from transformers import Idefics3Config, SmolVLMConfig

        ids = tokenizer.convert_tokens_to_ids
        geometry = _idefics3_geometry(real_size=False)
        vision_config = dict(
            hidden_size=VISION_HIDDEN,
            intermediate_size=2 * VISION_HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=geometry["tile"],
            patch_size=geometry["patch"],
        ) | (vision or {})
        text_config = dict(
            TINY_TEXT_SHAPE,
            model_type="llama",
            vocab_size=len(tokenizer),
            max_position_embeddings=8192,
            rms_norm_eps=1e-5,
            bos_token_id=ids("<|im_start|>"),
            eos_token_id=ids("<end_of_utterance>"),
            pad_token_id=ids("<|im_end|>"),
            tie_word_embeddings=False,
        ) | (text or {})
        config_class = Idefics3Config if model_type == "idefics3" else SmolVLMConfig
        return config_class(
            vision_config=vision_config,
            text_config=text_config,
            image_token_id=ids("<image>"),
            pad_token_id=ids("<|im_end|>"),
            tie_word_embeddings=False,
            **({"scale_factor": geometry["scale"]} | (top or {})),
        )

    return build


# --- Pixtral (llava with a pixtral vision tower) ------------------------------------------------


def _pixtral_processor(real_size: bool = False):
    from transformers import PixtralImageProcessor, PixtralProcessor

    tokenizer = train_tokenizer(
        _PIXTRAL_SPECIAL_TOKENS, bos="<s>", eos="</s>", pad="<pad>", unk="<unk>"
    )
    image_processor = PixtralImageProcessor(
        size={"longest_edge": PIXTRAL_LONGEST_EDGE},
        patch_size={"height": PIXTRAL_PATCH, "width": PIXTRAL_PATCH},
        resample=3,  # BICUBIC
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    return PixtralProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PIXTRAL_PATCH,
        spatial_merge_size=1,
        chat_template=chat_template("pixtral.jinja"),
        image_token="[IMG]",
        image_break_token="[IMG_BREAK]",
        image_end_token="[IMG_END]",
    )


def _pixtral_config(tokenizer, text=None, vision=None, top=None):
    from transformers import LlavaConfig

    ids = tokenizer.convert_tokens_to_ids
    vision_config = dict(
        model_type="pixtral",
        hidden_size=VISION_HIDDEN,
        intermediate_size=2 * VISION_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=PIXTRAL_LONGEST_EDGE,
        patch_size=PIXTRAL_PATCH,
        hidden_act="silu",  # pixtral-12b's vision MLP is gated (silu)
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    ) | (vision or {})
    text_config = dict(
        TINY_TEXT_SHAPE,
        model_type="mistral",
        vocab_size=len(tokenizer),
        head_dim=TEXT_HIDDEN // 4,
        max_position_embeddings=8192,
        sliding_window=None,
        rope_parameters={"rope_type": "default", "rope_theta": 1e9},
        bos_token_id=ids("<s>"),
        eos_token_id=ids("</s>"),
        pad_token_id=ids("<pad>"),
        tie_word_embeddings=False,
    ) | (text or {})
    # LlavaConfig's defaults (image token 32000, feature layer -2, "default" selection that drops
    # a CLS token) are LLaVA-1.5's; Pixtral's are these.
    return LlavaConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=ids("[IMG]"),
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        multimodal_projector_bias=True,
        image_seq_length=1,
        tie_word_embeddings=False,
        **(top or {}),
    )


ARCHITECTURES: dict[str, TinyArchitecture] = {
    "qwen2_vl": TinyArchitecture(
        _qwen_processor("qwen2_vl"), _qwen_config("qwen2_vl"), "Qwen2VLForConditionalGeneration"
    ),
    "qwen2_5_vl": TinyArchitecture(
        _qwen_processor("qwen2_5_vl"),
        _qwen_config("qwen2_5_vl"),
        "Qwen2_5_VLForConditionalGeneration",
    ),
    "mllama": TinyArchitecture(
        _mllama_processor,
        _mllama_config,
        "MllamaForConditionalGeneration",
        finish=_open_cross_attention_gates,
    ),
    "idefics3": TinyArchitecture(
        _smolvlm_processor("idefics3"),
        _smolvlm_config("idefics3"),
        "Idefics3ForConditionalGeneration",
    ),
    "smolvlm": TinyArchitecture(
        _smolvlm_processor("smolvlm"), _smolvlm_config("smolvlm"), "SmolVLMForConditionalGeneration"
    ),
    "llava": TinyArchitecture(_pixtral_processor, _pixtral_config, "LlavaForConditionalGeneration"),
    "qwen3_vl": TinyArchitecture(
        qwen3_vl_processor, qwen3_vl_config, "Qwen3VLForConditionalGeneration"
    ),
    "qwen3_5": TinyArchitecture(
        qwen3_5_processor, qwen3_5_config, "Qwen3_5ForConditionalGeneration"
    ),
    "gemma3": TinyArchitecture(
        gemma3_processor,
        gemma3_config,
        "Gemma3ForConditionalGeneration",
        finish=fill_gemma3_projector,
    ),
}
"""Keyed by `Family.model_type`."""


def model_class(architecture: TinyArchitecture):
    """The transformers model class of `architecture`."""
    import transformers

    return getattr(transformers, architecture.model_class)
