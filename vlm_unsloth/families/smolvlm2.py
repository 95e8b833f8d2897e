"""SmolVLM2 (model_type smolvlm): SmolVLM's prompt format and tiling (`families/_idefics3.py`),
trained on video too (this project trains its image path)."""

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
    """SmolVLM2's processor (images and videos) with the tiny tokenizer."""
    from transformers import SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

    tile = _idefics3.geometry(real_size)["tile"]
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
        image_processor=SmolVLMImageProcessor(**_idefics3.image_options(real_size)),
        tokenizer=tokenizer,
        video_processor=video_processor,
        image_seq_len=_idefics3.geometry(real_size)["image_seq_len"],
        chat_template=DEFAULT_CHAT_TEMPLATE,  # SmolVLM2's (images and videos)
    )


FAMILY = Family(
    key="smolvlm2",
    model_type="smolvlm",
    default_model="HuggingFaceTB/SmolVLM2-2.2B-Instruct",
    tiny_name="tiny-smolvlm2",
    **SMOLVLM_CHAT,
    vision_tower="model.vision_model",
    language_model="model.text_model",
    connector="connector",
    image_scheme=IDEFICS3_SCHEME,
    architecture=Architecture(
        _idefics3.tokenizer("<video>"),
        tiny_processor,
        _idefics3.tiny_config("SmolVLMConfig"),
        "SmolVLMForConditionalGeneration",
    ),
    sizes=(
        # SmolVLM2-2.2B-Instruct: SmolVLM-Instruct's towers and shuffle, a SmolLM2-1.7B text
        # model trained for 8k context (rope_theta 130,000). From memory of the hub's
        # config.json (no Hub here).
        ModelSize(
            "smolvlm2-2.2b",
            (2048, 24),
            SMOLVLM_384,
            ("HuggingFaceTB/SmolVLM2-2.2B-Instruct", "HuggingFaceTB/SmolVLM2-2.2B-Base"),
            real=RealConfig(
                text_config=dict(
                    SMOLLM2_1_7B,
                    max_position_embeddings=8192,
                    rope_parameters={"rope_type": "default", "rope_theta": 130000.0},
                ),
                vision_config=SIGLIP_SO400M_384,
                config=dict(scale_factor=3),
            ),
        ),
        ModelSize(
            "smolvlm2-500m",
            (960, 32),
            SMOLVLM_512,
            ("HuggingFaceTB/SmolVLM2-500M-Video-Instruct",),
        ),
        ModelSize(
            "smolvlm2-256m",
            (576, 30),
            SMOLVLM_512,
            ("HuggingFaceTB/SmolVLM2-256M-Video-Instruct",),
        ),
    ),  # fmt: skip
)
