"""The tiny checkpoints' tokenizers: a byte-level BPE trained in a fraction of a second on a
small corpus, holding a family's special tokens (its `Architecture.tokenizer` lists them).

    tokenizer = train_tokenizer(FAMILIES["qwen2-vl"].architecture.tokenizer)
"""

from __future__ import annotations

from vlm_unsloth.families.base import TinyTokenizer

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


def train_tokenizer(spec: TinyTokenizer):
    """A byte-level BPE trained on the small corpus (+ the spec's `extra_corpus`), the spec's
    special tokens first (ids in that order). With `add_bos` the tokenizer prepends `bos` itself,
    as Gemma's does (so the tiny checkpoint has the real "template BOS + tokenizer BOS" trap)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=list(spec.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([_CORPUS] * 4 + [spec.extra_corpus] * 8, trainer=trainer)
    if spec.last_token:
        tokenizer.add_special_tokens([spec.last_token])
    if spec.tokens_above_vocab:
        tokenizer.add_special_tokens(list(spec.tokens_above_vocab))
    if spec.added_tokens:
        tokenizer.add_tokens(list(spec.added_tokens))
    bos = spec.bos
    if spec.add_bos:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, tokenizer.token_to_id(bos))],
        )
    named = {"unk_token": spec.unk} if spec.unk else {}
    if spec.extra_special_tokens:
        named["extra_special_tokens"] = dict(spec.extra_special_tokens)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=bos, eos_token=spec.eos, pad_token=spec.pad, **named
    )
