"""What the Pixtral-tower families share (Pixtral-12B, a LLaVA checkpoint; Ministral 3, Mistral 3's
own class): Mistral's Tekken control tokens, the PixtralProcessor, and its image-token rule.

    from vlm_unsloth.families._pixtral import pixtral_scheme, tekken_tokenizer

The processor only ever shrinks (to size["longest_edge"]), then rounds each side up to whole
patches of patch_size * spatial_merge_size px (16 px for Pixtral-12B; 14 px merged 2 x 2 = 28 px
for Ministral 3): rows x cols [IMG], one [IMG_BREAK] a row (the last one [IMG_END]):
tokens = rows * (cols + 1). `--max-side S`: the largest multiple of the patch <= S, at most the
checkpoint's longest edge.
"""

from __future__ import annotations

import math
from typing import Any

from vlm_unsloth.families._templates import shipped_template
from vlm_unsloth.families.base import ImageScheme, ImageTokenCount, TinyTokenizer

# Tekken vocabulary as converted for transformers: the first 20 ids are control tokens in this
# order, so [IMG] = 10, [IMG_BREAK] = 12, [IMG_END] = 13 as on the hub (Mistral3Config's default
# image_token_index is 10).
TEKKEN_CONTROL_TOKENS = (
    "<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[TOOL_CALLS]", "[IMG]", "<pad>", "[IMG_BREAK]",
    "[IMG_END]", "[PREFIX]", "[MIDDLE]", "[SUFFIX]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
    "[TOOL_CONTENT]",
)  # fmt: skip
IMAGE_TOKEN = "[IMG]"
LAYOUT_TOKENS = ("[IMG_BREAK]", "[IMG_END]")
"""[IMG_BREAK] after each row of [IMG], the last one [IMG_END]."""
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def tekken_tokenizer(special_tokens: tuple[str, ...] = TEKKEN_CONTROL_TOKENS) -> TinyTokenizer:
    """The tiny tokenizer of a Tekken checkpoint: its control tokens first, at the hub's ids."""
    return TinyTokenizer(special_tokens, bos="<s>", eos="</s>", pad="<pad>", unk="<unk>")


def pixtral_image_tokens(
    width: int,
    height: int,
    *,
    patch_size: int = 16,
    spatial_merge_size: int = 1,
    longest_edge: int = 1024,
) -> ImageTokenCount:
    """Pixtral (spatial_merge_size 1; Mistral 3 merges 2): rows x (cols + 1) text tokens,
    rows x cols of them [IMG]. Raises ValueError where a side would shrink to 0 px (the processor
    fails there too)."""
    from transformers.models.pixtral.image_processing_pixtral import _num_image_tokens

    patch = patch_size * spatial_merge_size
    ratio = max(height, width) / longest_edge
    if ratio > 1:  # downscale only, with floor (the processor's own comment says why)
        height, width = int(math.floor(height / ratio)), int(math.floor(width / ratio))
    if height < 1 or width < 1:
        raise ValueError(f"a side shrinks to 0 px at a {longest_edge} px longest edge")
    rows, cols = _num_image_tokens((height, width), (patch, patch))
    return ImageTokenCount(
        text_tokens=rows * (cols + 1),
        vision_tokens=rows * cols,
        resized=(cols * patch, rows * patch),
    )


def pixtral_cap(
    max_side: int, *, patch_size: int, spatial_merge_size: int, longest_edge: int, **_: Any
) -> int:
    """The largest multiple of the patch that fits in `max_side`, at most `longest_edge`."""
    patch = patch_size * spatial_merge_size
    return max(patch, min(longest_edge // patch, max_side // patch) * patch)


def pixtral_settings(processor: Any) -> dict:
    """The scheme's parameters of a loaded processor."""
    return dict(
        patch_size=processor.patch_size,
        spatial_merge_size=processor.spatial_merge_size,
        longest_edge=processor.image_processor.size["longest_edge"],
    )


PIXTRAL_SCHEME = ImageScheme("pixtral", pixtral_settings, pixtral_image_tokens, pixtral_cap)


def pixtral_processor(
    tokenizer, *, patch_size: int, spatial_merge_size: int, longest_edge: int, template: str
):
    """A PixtralProcessor of the hub's image geometry with `tokenizer` and the shipped chat
    template `template`."""
    from transformers import PixtralImageProcessor, PixtralProcessor

    image_processor = PixtralImageProcessor(
        size={"longest_edge": longest_edge},
        patch_size={"height": patch_size, "width": patch_size},
        resample=3,  # BICUBIC
        image_mean=CLIP_MEAN,
        image_std=CLIP_STD,
    )
    return PixtralProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        spatial_merge_size=spatial_merge_size,
        chat_template=shipped_template(template),
        image_token=IMAGE_TOKEN,
        image_break_token=LAYOUT_TOKENS[0],
        image_end_token=LAYOUT_TOKENS[1],
    )
