"""What Gemma 3 and Gemma 3n share: every image squashed to the tower's one square, framed by
<start_of_image>/<end_of_image> and "\\n\\n" on each side (their processors' full_image_sequence).
How many tokens the newlines make depends on the text around them (a BPE merges "\\n" runs), so
the exact length comes from tokenizing the expanded prompt (`ImageScheme.expand_prompt`)."""

from __future__ import annotations

from typing import Any

from vlm_unsloth.families.base import ImageTokenCount


def square_image_tokens(
    width: int,
    height: int,
    *,
    image_size: int,
    image_seq_length: int,
    double_newline_tokens: int,
) -> ImageTokenCount:
    """Every image becomes one `image_size` square of `image_seq_length` soft tokens, framed by
    <start_of_image>/<end_of_image> and "\\n\\n" on each side (counted here as
    `double_newline_tokens` each; in context they may merge with neighbouring newlines: the
    expanded prompt is exact)."""
    return ImageTokenCount(
        text_tokens=image_seq_length + 2 + 2 * double_newline_tokens,
        vision_tokens=image_seq_length,
        resized=(image_size, image_size),
    )


def square_cap(max_side: int, *, image_size: int, **_: Any) -> int:
    """`max_side`, at most the tower's square (the processor squashes every image to it)."""
    return min(max_side, image_size)


def square_settings(processor: Any) -> dict:
    """The scheme's parameters of a loaded processor."""
    newline = processor.tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    return dict(
        image_size=processor.image_processor.size["height"],
        image_seq_length=processor.image_seq_length,  # lives on the processor
        double_newline_tokens=len(newline),
    )
