"""Per-family facts in one table: chat markers, image tokens, default checkpoints, tiny names.

Adding a model family is one `Family` entry here, plus its tiny checkpoint in `models/tiny.py`
(and, for a new way of turning images into tokens, its formula in `data/image_tokens.py`).
Code elsewhere asks `family_for_model_type(config.model_type)` instead of sniffing model names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlm_unsloth.errors import ModelError


@dataclass(frozen=True)
class Family:
    key: str
    """Short name used in messages and presets, e.g. "qwen2-vl"."""
    model_type: str
    """`config.model_type` of the checkpoint (how a folder is recognised)."""
    default_model: str
    """The hub checkpoint a user of this family starts from."""
    tiny_name: str
    """Name of the tiny random-weight checkpoint (`--model tiny-...`)."""
    instruction_part: str
    """Text that opens a user turn; the loss is masked from here to `response_part`."""
    response_part: str
    """Text that opens an assistant turn; tokens after it (to the turn's end) are supervised."""
    end_of_turn: str
    """Token that closes every turn (supervised after an answer so generation stops)."""
    image_token: str
    """The token that stands for image content in `input_ids` (never supervised)."""
    max_aspect_ratio: float | None
    """Longest/shortest side beyond which the processor refuses an image (None: no limit)."""
    min_image_side: int
    """Smallest side in pixels the processor can take."""
    image_tokens: str
    """How the processor turns an image into tokens: the scheme `data.image_tokens` counts with,
    which also says what `--max-side` means for the family ("qwen": merged patches; "mllama":
    tiles behind one <|image|> token; "idefics3": tiles plus a global view; "pixtral": 16 px
    patches with a break token per row; "qwen3": 32 px merged patches; "gemma3": one fixed
    square of soft tokens)."""
    other_image_tokens: tuple[str, ...] = ()
    """Tokens the processor writes around or between the image tokens (tile separators, row
    breaks, vision start/end): never supervised, even with --train-on-prompt (as Unsloth)."""
    nested_images: bool = False
    """The processor takes a batch's images as one list per row (else one flat list)."""
    mixes_text_only_rows: bool = True
    """The processor batches rows without an image with image rows (text-only examples mixed
    in to keep the model's text skills). Mllama's refuses: "either no images or at least one
    image per sample"."""
    vision_model_type: str | None = None
    """`config.vision_config.model_type`, where `model_type` alone does not name the family
    (a LLaVA checkpoint may have any vision tower; only Pixtral's is supported)."""
    unsloth_trains: bool = True
    """Whether the unsloth backend can train this family; if not, --backend auto picks hf (with
    a one-line notice) and --backend unsloth is refused."""
    unsloth_note: str = ""
    """Why Unsloth cannot train the family (the error seen), for that notice."""
    unsloth_block_compile: bool = True
    """Whether the unsloth backend keeps Unsloth's per-decoder-layer torch.compile on (it compiles
    each block as one region, unsloth/models/_block_compile.py). Off where the first step never
    finished with it (the reason is in the family's comment)."""
    template_thinks: bool = False
    """The chat template's generation prompt opens a <think> block unless it is rendered with
    enable_thinking=False (Qwen3.5): prompts for generation are rendered so, with the empty
    think block every trained answer follows."""
    fp16_unsafe: str = ""
    """Why the family must not compute in float16 (its activations overflow it), or "" when it
    may: then `--precision auto` picks float32 on GPUs without bf16 (T4) and `--precision fp16`
    is refused (models/device.py)."""

    @property
    def generation_template_kwargs(self) -> dict[str, Any]:
        """Extra chat-template variables for a prompt that ends in the generation prompt."""
        return {"enable_thinking": False} if self.template_thinks else {}

    @property
    def unsupervised_tokens(self) -> tuple[str, ...]:
        """Every token that stands for image content or its layout (labels are always -100)."""
        return (self.image_token, *self.other_image_tokens)

    @property
    def images_by_cross_attention(self) -> bool:
        """Images reach the language model through cross-attention layers (Mllama), not as
        tokens of the sequence: a forward over prompt + completion needs the aspect ratios and a
        cross-attention mask covering the whole sequence, which TRL's GRPO does not carry."""
        return self.image_tokens == "mllama"


_QWEN_CHAT = dict(
    instruction_part="<|im_start|>user\n",
    response_part="<|im_start|>assistant\n",
    end_of_turn="<|im_end|>",
    image_token="<|image_pad|>",
    other_image_tokens=("<|vision_start|>", "<|vision_end|>"),
    # smart_resize refuses > 200:1; below 28 px a side cannot make one 28x28 block without
    # an extreme upscale of the other side.
    max_aspect_ratio=200.0,
    min_image_side=28,
    image_tokens="qwen",
)

# Qwen3-VL: Qwen's prompt format (TRL's qwen3_vl.jinja, the hub's Instruct template: no default
# system prompt, no <think> block) and 16 px patches merged 2 x 2: one <|image_pad|> per 32 px
# block, so a side needs 32 px ("qwen3" scheme: --max-side is kept to a multiple of 32).
_QWEN3_VL_CHAT = dict(_QWEN_CHAT, min_image_side=32, image_tokens="qwen3")

# SmolVLM (idefics3) and SmolVLM2 (smolvlm): the Idefics3 prompt format ("User:<image>...
# <end_of_utterance>\nAssistant: answer<end_of_utterance>"; TRL's idefics3.jinja) and image
# layout: up to 6 x 6 tiles of `max_image_size` px plus one global view, each view
# `image_seq_len` <image> tokens, framed by <fake_token_around_image> and a <row_r_col_c> or
# <global-img> token. The role is followed by ":" before an image and ": " before text, so the
# answer starts with a space token: the markers have no trailing space.
_SMOLVLM_CHAT = dict(
    instruction_part="User:",
    response_part="Assistant:",
    end_of_turn="<end_of_utterance>",
    image_token="<image>",
    other_image_tokens=(
        "<fake_token_around_image>",
        "<global-img>",
        *(f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)),
    ),
    max_aspect_ratio=None,  # any shape: the tile grid follows it (the short side is stretched)
    min_image_side=1,
    image_tokens="idefics3",
    # The processor matches images to rows: a batch with a text-only row needs [[a], [], [b]].
    nested_images=True,
)

FAMILIES: dict[str, Family] = {
    family.key: family
    for family in (
        Family(
            key="qwen2-vl",
            model_type="qwen2_vl",
            default_model="unsloth/Qwen2-VL-7B-Instruct",
            tiny_name="tiny-qwen2-vl",
            **_QWEN_CHAT,
        ),
        Family(
            key="qwen2.5-vl",
            model_type="qwen2_5_vl",
            default_model="unsloth/Qwen2.5-VL-7B-Instruct",
            tiny_name="tiny-qwen2.5-vl",
            **_QWEN_CHAT,
        ),
        Family(
            key="llama-3.2-vision",
            model_type="mllama",
            default_model="unsloth/Llama-3.2-11B-Vision-Instruct",
            tiny_name="tiny-llama-3.2-vision",
            instruction_part="<|start_header_id|>user<|end_header_id|>\n\n",
            response_part="<|start_header_id|>assistant<|end_header_id|>\n\n",
            end_of_turn="<|eot_id|>",
            image_token="<|image|>",
            max_aspect_ratio=None,  # tiles any aspect ratio onto a canvas of up to 4 tiles
            min_image_side=1,
            image_tokens="mllama",
            nested_images=True,
            mixes_text_only_rows=False,
        ),
        Family(
            key="smolvlm",
            model_type="idefics3",
            default_model="HuggingFaceTB/SmolVLM-Instruct",
            tiny_name="tiny-smolvlm",
            **_SMOLVLM_CHAT,
        ),
        Family(
            key="smolvlm2",
            model_type="smolvlm",
            default_model="HuggingFaceTB/SmolVLM2-2.2B-Instruct",
            tiny_name="tiny-smolvlm2",
            **_SMOLVLM_CHAT,
        ),
        Family(
            key="pixtral",
            model_type="llava",
            vision_model_type="pixtral",
            default_model="unsloth/Pixtral-12B-2409",
            tiny_name="tiny-pixtral",
            instruction_part="[INST]",
            response_part="[/INST]",
            end_of_turn="</s>",
            image_token="[IMG]",
            # Rows of 16 px patches: [IMG] per patch, [IMG_BREAK] after each row, the last one
            # [IMG_END]. Any aspect ratio; images are only ever shrunk (to 1024 px at most).
            other_image_tokens=("[IMG_BREAK]", "[IMG_END]"),
            max_aspect_ratio=None,
            min_image_side=1,
            image_tokens="pixtral",
        ),
        Family(
            key="qwen3-vl",
            model_type="qwen3_vl",
            default_model="unsloth/Qwen3-VL-8B-Instruct",
            tiny_name="tiny-qwen3-vl",
            **_QWEN3_VL_CHAT,
        ),
        # Qwen3.5 (natively multimodal; Gated DeltaNet linear-attention layers, 3 of every 4,
        # between full-attention ones): Qwen3-VL's processor and image tokens. The hub's chat
        # template (TRL's qwen3_5_think.jinja for 4B and up, qwen3_5_nothink.jinja below) writes
        # "<think>\n\n</think>\n\n" before the answer of the last assistant turn, so the
        # supervised answer starts with it; the 4B+ generation prompt opens a think block unless
        # enable_thinking=False, which generation passes (`template_thinks`).
        Family(
            key="qwen3.5",
            model_type="qwen3_5",
            default_model="unsloth/Qwen3.5-4B",
            tiny_name="tiny-qwen3.5",
            **_QWEN3_VL_CHAT,
            template_thinks=True,
            fp16_unsafe="Qwen3.5's Gated DeltaNet layers give NaN gradients in float16 (Unsloth "
            "computes it in float32 on GPUs without bf16 too)",
        ),
        # Gemma 3 (TRL's gemma3.jinja = the hub's): "<bos><start_of_turn>user\n...<end_of_turn>\n
        # <start_of_turn>model\n...<end_of_turn>\n", a system message folded into the first user
        # turn. The template writes one <start_of_image> per image; the processor replaces it
        # with "\n\n<start_of_image>" + 256 <image_soft_token> + "<end_of_image>\n\n" (every
        # image squashed to one 896 px square). Unsloth's loader lists gemma3 among the models
        # whose activations overflow float16 (unsloth_zoo/model_lists.py FORCE_FLOAT32).
        Family(
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
            image_tokens="gemma3",
            # The processor matches images to rows: [[a], [], [b]].
            nested_images=True,
            fp16_unsafe="Gemma 3's activations overflow float16 (Unsloth computes it in float32 "
            "on GPUs without bf16 too)",
            # Measured on an H200 (random weights, real sizes, --max-side 768, batch 2 x 4): with
            # Unsloth 2026.10.9's block compile the first step of Gemma-3-4B and -12B had not
            # finished after 200-400 s; with UNSLOTH_BLOCK_COMPILE=0, 5 steps of the 4B took
            # 138 s in all, at 4.6 GiB. UNSLOTH_ENABLE_FLEX_ATTENTION=0 alone did not help.
            unsloth_block_compile=False,
        ),
    )
}

TINY_MODEL_NAMES: dict[str, Family] = {family.tiny_name: family for family in FAMILIES.values()}


def family_for_config(config: Any, *, where: str = "--model") -> Family:
    """The family of a loaded `transformers` config (or a config.json dict)."""
    if isinstance(config, dict):
        vision = config.get("vision_config") or {}
        return family_for_model_type(
            config["model_type"], vision_model_type=vision.get("model_type"), where=where
        )
    vision = getattr(config, "vision_config", None)
    return family_for_model_type(
        config.model_type, vision_model_type=getattr(vision, "model_type", None), where=where
    )


def family_for_model_type(
    model_type: str, *, vision_model_type: str | None = None, where: str = "--model"
) -> Family:
    """The family of a checkpoint whose config says `model_type` (and, for families that need
    it, `vision_config.model_type`)."""
    for family in FAMILIES.values():
        if family.model_type == model_type and family.vision_model_type in (
            None,
            vision_model_type,
        ):
            return family
    supported = ", ".join(
        f"{f.key} ({f.model_type}"
        + (f" + {f.vision_model_type} vision" if f.vision_model_type else "")
        + ")"
        for f in FAMILIES.values()
    )
    what = repr(model_type) + (
        f" with a {vision_model_type!r} vision tower" if vision_model_type else ""
    )
    raise ModelError(
        f"model_type {what} is not a supported vision-language family",
        where=where,
        fix=f"use a checkpoint of: {supported}",
    )
