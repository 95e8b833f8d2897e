"""What a family module declares: the `Family` facts, how its processor turns an image into
tokens (`ImageScheme`), the Hub checkpoints users pass by size (`ModelSize`), and how its tiny
offline checkpoint and its real sizes are built (`Architecture`).

    from vlm_unsloth.families.base import Family
    FAMILY = Family(key="qwen2-vl", model_type="qwen2_vl", ...)   # families/qwen2_vl.py

Every family module defines `FAMILY`; `families/__init__.py` collects them into the registry.
Nothing here imports transformers at import time: Unsloth must be imported before it, so the
builders and formulas import it inside their functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# The tiny widths of every tiny checkpoint: multiples of 64, since bitsandbytes' 4-bit CPU
# kernels fail for in_features < 64.
TEXT_HIDDEN = 64
TEXT_INTERMEDIATE = 128
VISION_HIDDEN = 64
TINY_TEXT_SHAPE = dict(
    hidden_size=TEXT_HIDDEN, intermediate_size=TEXT_INTERMEDIATE, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2,
)  # fmt: skip
"""Every tiny language model's shape (each config adds its family's own keys)."""


@dataclass(frozen=True)
class ImageTokenCount:
    """The cost of one image in a sample.

    text_tokens: positions the image occupies in `input_ids` (counts against max_seq_length).
    vision_tokens: tokens the vision encoder produces and the language model attends to.
    resized: (width, height) the processor resizes to (Qwen, Pixtral), the tiled canvas
        (Mllama, Idefics3 before the global view).
    tiles: Mllama tiles; Idefics3 views (rows*cols + 1 global, or 1); 1 otherwise.
    """

    text_tokens: int
    vision_tokens: int
    resized: tuple[int, int]
    tiles: int = 1


def no_cap(max_side: int, **_: Any) -> int:
    """`--max-side` itself: the processor never enlarges an image past it (Qwen, Mllama)."""
    return max_side


def no_processor_settings(image_processor: Any) -> dict:
    """No attribute to set on the loaded image processor."""
    return {}


@dataclass(frozen=True)
class ImageScheme:
    """One way of turning images into tokens, which also says what `--max-side` means for the
    families that use it (`data/image_tokens.py` calls these)."""

    name: str
    """Short name in messages and tests: qwen, qwen3, mllama, idefics3, pixtral, gemma3."""
    settings: Callable[[Any], dict]
    """(processor) -> the processor's parameters that `count` and `cap` take (keywords)."""
    count: Callable[..., ImageTokenCount]
    """(width, height, **settings) -> ImageTokenCount."""
    cap: Callable[..., int] = no_cap
    """(max_side, **settings) -> the longest side images are shrunk to for --max-side."""
    processor_settings: Callable[[Any], dict] = no_processor_settings
    """(image processor) -> the attributes the product sets once on every loaded processor."""
    expand_prompt: Callable[[str, Any], str] | None = None
    """(rendered prompt, processor) -> the text the processor tokenizes, for schemes whose image
    text merges with its neighbours when tokenized (Gemma 3's newlines). None: the template's
    tokens plus text_tokens - 1 per image is exact."""


@dataclass(frozen=True)
class RealConfig:
    """A real size's configuration over the tiny one, from the hub's config.json: what
    `models/random_weights.py` builds random-weight checkpoints of."""

    text_config: dict
    vision_config: dict
    config: dict = field(default_factory=dict)
    """Top-level config overrides."""


@dataclass(frozen=True)
class ModelSize:
    """The family at one size: the Hub checkpoints users pass for it and what the memory planner
    and the random-weight benchmarks know of it."""

    name: str
    """The planner's name, e.g. qwen2-vl-7b (`scripts/plan.py --model`, `bench.py --model`)."""
    text_shape: tuple[int, int]
    """The language model's (hidden_size, num_hidden_layers): how a config is recognised."""
    image_settings: dict
    """The real processor's parameters for the family's `ImageScheme` (keyword arguments)."""
    checkpoints: tuple[str, ...]
    """Hub ids of this size (instruct, base and Unsloth's 4-bit uploads)."""
    real: RealConfig | None = None
    """How to build random weights of this size (None: not built; the planner still knows it)."""


@dataclass(frozen=True)
class TinyTokenizer:
    """The tiny checkpoint's byte-level BPE (`models/tiny_tokenizer.train_tokenizer` arguments):
    the family's special tokens first, in the hub's order where ids matter."""

    special_tokens: tuple[str, ...]
    bos: str | None
    eos: str
    pad: str
    unk: str | None = None
    last_token: str | None = None
    """A token added after training, so that its id is the last (Mllama's <|image|>)."""
    tokens_above_vocab: tuple[str, ...] = ()
    """Special tokens added after training, in this order, so that their ids lie above every
    trained token (Gemma 3n embeds the ids from its vision and audio offsets on with their own
    tables: its image and audio tokens must sit above the text vocabulary)."""
    extra_corpus: str = ""
    """More training text, for merges the real vocabulary has ("\\n\\n" as one token)."""
    added_tokens: tuple[str, ...] = ()
    """Whole tokens that are not special (Qwen3's <think>: kept by skip_special_tokens)."""
    add_bos: bool = False
    """The tokenizer prepends `bos` itself, as Gemma's does."""
    extra_special_tokens: dict[str, str] | None = None
    """Named special tokens the processor reads as tokenizer attributes (Gemma's boi_token)."""


@dataclass(frozen=True)
class Architecture:
    """How to make the family's processor, config and model, tiny or at a real size."""

    tokenizer: TinyTokenizer
    processor: Callable[..., Any]
    """(tokenizer, real_size: bool) -> processor; real_size: the real checkpoint's image
    parameters."""
    config: Callable[..., Any]
    """(tokenizer, text=None, vision=None, top=None) -> config; the dicts override the tiny
    sizes of the text/vision sub-configs and the top-level config (real sizes)."""
    model_class: str
    """The transformers class, by name."""
    finish: Callable[[Any], None] = lambda model: None
    """A fix after random initialisation (Mllama's closed cross-attention gates)."""


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
    image_scheme: ImageScheme
    """How the processor turns an image into tokens and what `--max-side` means for it."""
    architecture: Architecture
    """How the tiny checkpoint (and random weights of `sizes`) are built."""
    sizes: tuple[ModelSize, ...] = ()
    """The Hub checkpoints users pass, by size (the planner's names)."""
    other_image_tokens: tuple[str, ...] = ()
    """Tokens the processor writes around or between the image tokens (tile separators, row
    breaks, vision start/end): never supervised, even with --train-on-prompt (as Unsloth)."""
    nested_images: bool = False
    """The processor takes a batch's images as one list per row (else one flat list)."""
    mixes_text_only_rows: bool = True
    """The processor batches rows without an image with image rows (text-only examples mixed
    in to keep the model's text skills). Mllama's refuses: "either no images or at least one
    image per sample"."""
    images_by_cross_attention: bool = False
    """Images reach the language model through cross-attention layers (Mllama), not as tokens
    of the sequence: a forward over prompt + completion needs the aspect ratios and a
    cross-attention mask covering the whole sequence, which TRL's GRPO does not carry."""
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
    vision_tower: str = ""
    """Module path of the vision encoder in the loaded model (e.g. "model.visual"): LoRA's
    vision switch adapts the layer stacks under it."""
    flat_vision_linears: tuple[str, ...] = ()
    """Module paths (as suffixes) of Linears on the vision path outside any layer stack that
    Unsloth's rule adapts when the vision and MLP switches are on (unsloth_zoo get_peft_regex's
    Gemma branch: Gemma 3n's vision embedder projection; Gemma 4's patch embedder input
    projection and connector embedding projection); LoRA's selection adds them as Unsloth does."""
    vision_tower_has_linear_layers: bool = True
    """Whether the vision tower has linear layers for LoRA. False where it is all convolutions
    (Gemma 3n's MobileNet v5): LoRA (Unsloth's rule and ours take only nn.Linear) then adapts the
    language model alone, --no-finetune-language-layers is refused, and --modules-to-save
    <vision tower> trains the tower fully."""
    language_model: str = ""
    """Module path of the language model's decoder in the loaded model (e.g.
    "model.language_model"): LoRA's language switch adapts its layer stack."""
    connector: str = ""
    """The module between the vision tower and the language model, by the name a user passes to
    --modules-to-save to train it fully (e.g. "multi_modal_projector"): LoRA never adapts it, as
    Unsloth does not."""
    hf_keeps_16bit: tuple[str, ...] = ()
    """Modules (by the last part of their name) that the hf backend keeps in 16 bit when it
    prepares a 4/8-bit model for training: PEFT's preparation casts every other 16-bit
    parameter to float32, which for a large frozen table (Gemma 3n's and Gemma 4's per-layer
    embeddings) takes gigabytes and runs out of memory under a 12 GiB cap."""
    unadapted_blocks: tuple[str, ...] = ()
    """Blocks of the towers' layer stacks that LoRA never adapts on either backend: their paths
    carry none of the attention/MLP tags Unsloth's target rule looks for (models/lora.py), e.g.
    LFM2's short convolutions ("conv": in_proj, out_proj)."""
    unquantized_modules: tuple[str, ...] = ()
    """Modules bitsandbytes must leave in float under --quantization 4bit/8bit on the hf backend
    (by name, as `llm_int8_skip_modules` matches them), besides those transformers keeps
    (lm_head): a Linear whose weight dtype the model casts its inputs to (SigLIP2's NaFlex patch
    embedding), or weights the model changes in place (Gemma 3n's AltUp clamps its coefficients
    every step; Unsloth keeps the same ones in 16-bit)."""
    unadapted_layer_linears: tuple[str, ...] = ()
    """Leaf names of the Linears in the towers' layer stacks that are neither attention nor MLP,
    which LoRA leaves out as Unsloth's rule does (Gemma 4's per-layer-input gate and
    projection): train them with --modules-to-save if ever needed."""
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
    def checkpoints(self) -> tuple[str, ...]:
        """Every Hub id the family answers to, its default first."""
        listed = [name for size in self.sizes for name in size.checkpoints]
        return tuple(dict.fromkeys([self.default_model, *listed]))


def mirrors(org: str, name: str) -> tuple[str, ...]:
    """A checkpoint's Hub ids: the original and Unsloth's copies (16-bit, bnb 4-bit, dynamic
    4-bit)."""
    return (f"{org}/{name}", f"unsloth/{name}", f"unsloth/{name}-bnb-4bit",
            f"unsloth/{name}-unsloth-bnb-4bit")  # fmt: skip


SIGLIP_SO400M_896 = dict(
    hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
    image_size=896, patch_size=14,
)  # fmt: skip
"""The real SigLIP so400m vision tower at 896 px (Gemma 3); SmolVLM's runs it at 384 px."""
