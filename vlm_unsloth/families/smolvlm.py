"""SmolVLM (model_type idefics3): the Idefics3 prompt format and tiling (`families/_idefics3.py`),
SmolLM2 language models from 135M to 1.7B."""

from __future__ import annotations

from vlm_unsloth.families import _idefics3
from vlm_unsloth.families._idefics3 import (
    IDEFICS3_SCHEME,
    SIGLIP_SO400M_384,
    SMOLLM2_1_7B,
    SMOLVLM_384,
    SMOLVLM_512,
    SMOLVLM_CHAT,
)
from vlm_unsloth.families.base import Architecture, Family, ModelSize, RealConfig


def tiny_processor(tokenizer, real_size: bool = False):
    """SmolVLM-Instruct's processor with the tiny tokenizer (tiny or real tile geometry)."""
    from transformers import Idefics3ImageProcessor, Idefics3Processor

    from vlm_unsloth.families._templates import trl_template

    return Idefics3Processor(
        image_processor=Idefics3ImageProcessor(**_idefics3.image_options(real_size)),
        tokenizer=tokenizer,
        image_seq_len=_idefics3.geometry(real_size)["image_seq_len"],
        # SmolVLM-Instruct's hub template: TRL's Idefics3 one (Idefics3-8B-Llama3's) with
        # SmolLM2's <|im_start|> for Llama 3's <|begin_of_text|>.
        chat_template=trl_template("idefics3.jinja").replace("<|begin_of_text|>", "<|im_start|>"),
    )


FAMILY = Family(
    key="smolvlm",
    model_type="idefics3",
    default_model="HuggingFaceTB/SmolVLM-Instruct",
    tiny_name="tiny-smolvlm",
    **SMOLVLM_CHAT,
    vision_tower="model.vision_model",
    language_model="model.text_model",
    connector="connector",
    image_scheme=IDEFICS3_SCHEME,
    architecture=Architecture(
        _idefics3.tokenizer(),
        tiny_processor,
        _idefics3.tiny_config("Idefics3Config"),
        "Idefics3ForConditionalGeneration",
    ),
    # SmolLM2-1.7B / -360M / -135M language models.
    sizes=(
        # SmolVLM-Instruct (2.2B): SigLIP so400m-patch14-384 tower, pixel shuffle 3 (81 tokens a
        # 384 px view), SmolLM2-1.7B text. From memory of the hub's config.json (no Hub here):
        # vocab_size and tie_word_embeddings are the least certain (49,280 covers the added
        # tokens' ids up to <end_of_utterance> = 49279).
        ModelSize(
            "smolvlm-instruct",
            (2048, 24),
            SMOLVLM_384,
            ("HuggingFaceTB/SmolVLM-Instruct", "HuggingFaceTB/SmolVLM-Base"),
            real=RealConfig(
                text_config=dict(
                    SMOLLM2_1_7B,
                    max_position_embeddings=16384,
                    rope_parameters={"rope_type": "default", "rope_theta": 273768.0},
                ),
                vision_config=SIGLIP_SO400M_384,
                config=dict(scale_factor=3),
            ),
        ),
        ModelSize(
            "smolvlm-500m",
            (960, 32),
            SMOLVLM_512,
            ("HuggingFaceTB/SmolVLM-500M-Instruct", "HuggingFaceTB/SmolVLM-500M-Base"),
        ),
        ModelSize(
            "smolvlm-256m",
            (576, 30),
            SMOLVLM_512,
            ("HuggingFaceTB/SmolVLM-256M-Instruct", "HuggingFaceTB/SmolVLM-256M-Base"),
        ),
    ),  # fmt: skip
)
