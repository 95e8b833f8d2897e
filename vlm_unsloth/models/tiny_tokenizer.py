"""The tiny checkpoints' tokenizers and chat templates: a byte-level BPE trained in a fraction of a
second on a small corpus, holding each family's special tokens (models/tiny_architectures.py
lists them), and the templates the real checkpoints ship.

    tokenizer = train_tokenizer(["<|im_start|>", "<|im_end|>"], bos=None, eos="<|im_end|>",
                                pad="<|im_end|>")
"""

from __future__ import annotations

from importlib import resources

TOKENIZER_VOCAB = 1000

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
# SmolVLM's tokenizer also learns "\n\n" as one token, as in the real SmolLM2 (the Idefics3
# split-image prompt holds one), and its role names.
SMOLVLM_CORPUS = "User: Assistant: System:\n\nFirst line.\n\nSecond line.\n\n"


def train_tokenizer(
    special_tokens: list[str],
    *,
    bos: str | None,
    eos: str,
    pad: str,
    unk: str | None = None,
    last_token: str | None = None,
    extra_corpus: str = "",
    added_tokens: tuple[str, ...] = (),
    add_bos: bool = False,
    extra_special_tokens: dict[str, str] | None = None,
):
    """A byte-level BPE trained on the small corpus (+ `extra_corpus`), `special_tokens` first.

    added_tokens: whole tokens that are not special (Qwen3's <think>: kept by
    skip_special_tokens). add_bos: the tokenizer prepends `bos` itself, as Gemma's does (so the
    tiny checkpoint has the real "template BOS + tokenizer BOS" trap). extra_special_tokens:
    named special tokens the processor reads as tokenizer attributes (Gemma's boi_token...).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
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
    tokenizer.train_from_iterator([_CORPUS] * 4 + [extra_corpus] * 8, trainer=trainer)
    if last_token:
        tokenizer.add_special_tokens([last_token])
    if added_tokens:
        tokenizer.add_tokens(list(added_tokens))
    if add_bos:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, tokenizer.token_to_id(bos))],
        )
    named = {"unk_token": unk} if unk else {}
    if extra_special_tokens:
        named["extra_special_tokens"] = extra_special_tokens
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=bos, eos_token=eos, pad_token=pad, **named
    )


def chat_template(name: str) -> str:
    """A template shipped in vlm_unsloth/models/chat_templates/ (where TRL has none)."""
    folder = resources.files("vlm_unsloth.models").joinpath("chat_templates")
    return folder.joinpath(name).read_text(encoding="utf-8")


def trl_template(name: str) -> str:
    """A chat template TRL ships (copies of the hub's, in trl/chat_templates/)."""
    return resources.files("trl").joinpath(f"chat_templates/{name}").read_text("utf-8")
