"""Tiny randomly initialised checkpoints of the REAL architectures, built offline in seconds.

    from vlm_unsloth.models.tiny import build_tiny_checkpoint
    folder = build_tiny_checkpoint("tiny-qwen2-vl")  # or pass --model tiny-qwen2-vl to a script

Each is an ordinary model folder (config, safetensors, a locally trained byte-level BPE tokenizer
with the family's special tokens, image/video processor configs, the family's chat template), so
the same `from_pretrained(folder)` code that loads a hub checkpoint loads it — transformers' and
Unsloth's. Tests, the CPU demo and GPU smoke runs use them; `--model tiny-qwen2-vl` etc. name them.

Folders are cached under $VLM_UNSLOTH_CACHE (default ~/.cache/vlm_unsloth/tiny) in a sub-folder
keyed by a hash of this builder's source, so a changed builder never serves a stale checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from vlm_unsloth import families
from vlm_unsloth.errors import ModelError
from vlm_unsloth.families import TINY_MODEL_NAMES, Family

# Widths are multiples of 64: bitsandbytes' 4-bit CPU kernels fail for in_features < 64.
TEXT_HIDDEN = 64
TEXT_INTERMEDIATE = 128
VISION_HIDDEN = 64
TOKENIZER_VOCAB = 1000
# Mllama tiles are 560 px in the real model (1,601 vision tokens each); a 112 px tile keeps the
# same code path at 65 tokens a tile, so CPU tests stay fast.
TINY_MLLAMA_TILE = 112
SEED = 1234

# Words the byte-level BPE is trained on: enough for prompts, numbers, colours and chart labels
# to tokenise into a handful of pieces each.
_CORPUS = """
You are a helpful assistant. What is the value of the bar labelled A? How many bars are there?
Which label has the highest value? Which label has the lowest value? What colour is the bar?
What colour is the square? Where is the circle? Describe the chart. Write the LaTeX
representation for this image. The answer is red green blue yellow orange purple black white
grey pink brown cyan left right top bottom center line bar chart point value label title
0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 25 30 40 50 60 70 80 90 100
A B C D E F G H I J K L M N O P Q R S T U V W X Y Z a b c d e f g h i j k l m n o p q r s t u
v w x y z yes no true false , . ? ! : ; ( ) [ ] { } + - * / = ^ _ \\ $ % # @ & ' "
The image shows a table setup with families. The image does not provide any information.
"""

_QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
]  # fmt: skip
# Mllama: `<|image|>` must be the LAST id, equal to the text vocab_size (the real checkpoint has
# image_token_index 128256 == vocab_size): the embedding keeps extra rows beyond it.
_MLLAMA_SPECIAL_TOKENS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eot_id|>", "<|eom_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>",
]  # fmt: skip


def cache_root() -> Path:
    """Where tiny checkpoints are built ($VLM_UNSLOTH_CACHE, else ~/.cache/vlm_unsloth)."""
    return (
        Path(os.environ.get("VLM_UNSLOTH_CACHE", Path.home() / ".cache" / "vlm_unsloth")) / "tiny"
    )


def builder_fingerprint() -> str:
    """Hash of the code that shapes a tiny checkpoint: change it and the cache rebuilds."""
    import transformers

    digest = hashlib.sha256(transformers.__version__.encode())
    for module in (sys.modules[__name__], families):
        digest.update(Path(module.__file__).read_bytes())
    digest.update(_mllama_chat_template().encode())
    return digest.hexdigest()[:12]


def build_tiny_checkpoint(name: str, *, cache_dir: Path | None = None) -> Path:
    """Return the folder of tiny checkpoint `name`, building it (a few seconds) if not cached."""
    family = TINY_MODEL_NAMES.get(name)
    if family is None:
        raise ModelError(
            f"unknown tiny model {name!r}",
            where="--model",
            fix=f"use one of: {', '.join(TINY_MODEL_NAMES)}",
        )
    root = cache_dir or cache_root()
    folder = root / f"{name}-{builder_fingerprint()}"
    if (folder / "config.json").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    # Build in a temporary sibling and rename: a crash or a parallel test never leaves a half-made
    # folder that a later run would take for a checkpoint.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        _write_checkpoint(family, staging)
        if not (staging / "config.json").is_file() or not (staging / "model.safetensors").is_file():
            # transformers writes weights only on rank 0 of an initialised process group.
            raise ModelError(
                f"building {name} wrote no weights in this process",
                where="--model",
                fix="build tiny checkpoints in the main process first (distributed runs do)",
            )
        try:
            staging.rename(folder)
        except OSError:  # another process finished first: keep theirs
            if not (folder / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _write_checkpoint(family: Family, folder: Path) -> None:
    import torch

    processor = _build_processor(family)
    config = _build_config(family, processor.tokenizer)
    model_class = _model_class(family)
    torch.manual_seed(SEED)
    model = model_class(config)
    if family.model_type == "mllama":
        _open_cross_attention_gates(model)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.eos_token_id = processor.tokenizer.convert_tokens_to_ids(
        family.end_of_turn
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def _model_class(family: Family):
    from transformers import (
        MllamaForConditionalGeneration,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLForConditionalGeneration,
    )

    return {
        "qwen2_vl": Qwen2VLForConditionalGeneration,
        "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
        "mllama": MllamaForConditionalGeneration,
    }[family.model_type]


def _train_tokenizer(
    special_tokens: list[str], *, bos: str | None, eos: str, pad: str, last_token: str | None = None
):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    if last_token:
        tokenizer.add_special_tokens([last_token])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=bos, eos_token=eos, pad_token=pad
    )


def _mllama_chat_template() -> str:
    return (
        resources.files("vlm_unsloth.models")
        .joinpath("chat_templates/llama3_2_vision.jinja")
        .read_text(encoding="utf-8")
    )


def _qwen_chat_template() -> str:
    # The hub's exact Qwen2-VL / Qwen2.5-VL template (byte-identical for both) ships with TRL.
    return resources.files("trl").joinpath("chat_templates/qwen2_5_vl.jinja").read_text("utf-8")


def _build_processor(family: Family, *, real_size: bool = False):
    if family.model_type == "mllama":
        from transformers import MllamaImageProcessor, MllamaProcessor

        tokenizer = _train_tokenizer(
            _MLLAMA_SPECIAL_TOKENS,
            bos="<|begin_of_text|>",
            eos="<|eot_id|>",
            pad="<|finetune_right_pad_id|>",
            last_token="<|image|>",
        )
        tile = 560 if real_size else TINY_MLLAMA_TILE
        image_processor = MllamaImageProcessor(
            size={"height": tile, "width": tile}, max_image_tiles=4
        )
        return MllamaProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            chat_template=_mllama_chat_template(),
        )

    from transformers import (
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = _train_tokenizer(
        _QWEN_SPECIAL_TOKENS, bos=None, eos="<|im_end|>", pad="<|endoftext|>"
    )
    # The real checkpoints' pixel bounds. Passed as `size`, never as min_pixels/max_pixels: those
    # kwargs rewrite the CLASS default and leak into every processor made later in the process.
    size = {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16384}
    image_processor = Qwen2VLImageProcessor(size=size, patch_size=14, merge_size=2)
    video_processor = Qwen2VLVideoProcessor(size=size, patch_size=14, merge_size=2)
    processor_class = Qwen2_5_VLProcessor if family.model_type == "qwen2_5_vl" else Qwen2VLProcessor
    return processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=_qwen_chat_template(),
    )


def _build_config(
    family: Family, tokenizer, *, text: dict | None = None, vision: dict | None = None
):
    """The tiny config of `family`; `text`/`vision` override sub-config values (real sizes)."""
    from transformers import MllamaConfig, Qwen2_5_VLConfig, Qwen2VLConfig

    ids = tokenizer.convert_tokens_to_ids
    if family.model_type == "mllama":
        image_id = ids("<|image|>")
        assert image_id == len(tokenizer) - 1, "<|image|> must be the last token id"
        return MllamaConfig(
            vision_config=dict(
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
            )
            | (vision or {}),
            text_config=dict(
                vocab_size=image_id,
                hidden_size=TEXT_HIDDEN,
                intermediate_size=TEXT_INTERMEDIATE,
                num_hidden_layers=3,
                cross_attention_layers=[1],
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=4096,
                bos_token_id=ids("<|begin_of_text|>"),
                eos_token_id=ids("<|eot_id|>"),
                pad_token_id=ids("<|finetune_right_pad_id|>"),
            )
            | (text or {}),
            image_token_index=image_id,
        )

    text_config = dict(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_HIDDEN,
        intermediate_size=TEXT_INTERMEDIATE,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        # M-RoPE splits head_dim/2 frequencies over (time, height, width), as [16, 24, 24] does
        # for the real 128-wide heads.
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"),
    )
    text_config |= text or {}
    head_dim = text_config["hidden_size"] // text_config["num_attention_heads"]
    assert sum(text_config["rope_parameters"]["mrope_section"]) == head_dim // 2
    special_ids = dict(
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    if family.model_type == "qwen2_5_vl":
        vision_config = dict(
            depth=2,
            hidden_size=VISION_HIDDEN,
            intermediate_size=2 * VISION_HIDDEN,
            num_heads=2,
            out_hidden_size=TEXT_HIDDEN,
            window_size=112,
            fullatt_block_indexes=[1],
        ) | (vision or {})
        return Qwen2_5_VLConfig(text_config=text_config, vision_config=vision_config, **special_ids)
    vision_config = dict(
        depth=2, embed_dim=VISION_HIDDEN, hidden_size=TEXT_HIDDEN, num_heads=2, mlp_ratio=2
    ) | (vision or {})
    return Qwen2VLConfig(text_config=text_config, vision_config=vision_config, **special_ids)


def _open_cross_attention_gates(model) -> None:
    """Random-init Mllama has zero cross-attention gates, so no gradient reaches the vision tower
    and the image cannot influence the output. Trained checkpoints have open gates; so do ours."""
    import torch

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")):
                parameter.fill_(1.0)
