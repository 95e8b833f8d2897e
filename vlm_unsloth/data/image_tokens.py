"""How many tokens an image of a given size becomes, and what `--max-side` means, for any family:
the numbers that decide memory, and the guarantee that the model never sees more pixels than the
user allowed.

    count_image_tokens(family, 768, 576, processor).text_tokens
    image_cap(family, 768, processor)     # the longest side images are shrunk to

Each family's `ImageScheme` (families/: the Qwen, Idefics3, Mllama, Pixtral and Gemma 3 rules,
written as pure size arithmetic over the processors' own resize functions, imported from
transformers where they are functions, so the estimate cannot drift from what the processor
really does) is read with the parameters of the model's own processor.
"""

from __future__ import annotations

from typing import Any

from vlm_unsloth.families.base import Family, ImageTokenCount


def count_image_tokens(family: Family, width: int, height: int, processor: Any) -> ImageTokenCount:
    """The ImageTokenCount of a width x height image for `family`, with the parameters of the
    model's own `processor` (for Qwen and Mllama, its image processor is enough)."""
    scheme = family.image_scheme
    return scheme.count(width, height, **scheme.settings(processor))


def image_cap(family: Family, max_side: int, processor: Any) -> int:
    """The longest side `family`'s images are shrunk to under `--max-side max_side`, so that the
    model sees at most `max_side` px (the family's scheme says how)."""
    scheme = family.image_scheme
    return scheme.cap(max_side, **scheme.settings(processor))


def prompt_length(
    family: Family, text: str, image_sizes: list[tuple[int, int]], processor: Any
) -> int:
    """The exact `input_ids` length the processor makes of `text` (a rendered chat template with
    one placeholder per image) and images of these (capped) sizes, tokenized without special
    tokens as every collator calls it (the template writes BOS)."""
    scheme = family.image_scheme
    if scheme.expand_prompt is not None:
        return _token_count(scheme.expand_prompt(text, processor), processor)
    return prompt_lengths(family, text, image_sizes, processor)[1]


def prompt_lengths(
    family: Family, text: str, image_sizes: list[tuple[int, int]], processor: Any
) -> tuple[int, int]:
    """(tokens of `text` itself, `prompt_length`), tokenizing `text` once where the family's
    image tokens are counted by formula."""
    text_tokens = _token_count(text, processor)
    scheme = family.image_scheme
    if scheme.expand_prompt is not None:
        return text_tokens, _token_count(scheme.expand_prompt(text, processor), processor)
    # The rendered text already holds one placeholder token per image.
    settings = scheme.settings(processor)
    images = sum(scheme.count(w, h, **settings).text_tokens - 1 for w, h in image_sizes)
    return text_tokens, text_tokens + images


def _token_count(text: str, processor: Any) -> int:
    return len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])


def prepare_processor(family: Family, processor: Any) -> Any:
    """Set the family's image-processor settings on a loaded processor (once, on the instance:
    Unsloth's collator passes no image options per call); returns it."""
    image_processor = processor.image_processor
    for name, value in family.image_scheme.processor_settings(image_processor).items():
        setattr(image_processor, name, value)
    return processor
