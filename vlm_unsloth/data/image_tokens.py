"""How many tokens an image of a given size becomes, per family, and what `--max-side` means for
it: the numbers that decide memory, and the guarantee that the model never sees more pixels than
the user allowed.

Pure size arithmetic over the processors' own resize rules (imported from transformers where it
is a function, so the estimate cannot drift from what the processor really does):

- Qwen2-VL / Qwen2.5-VL resize to multiples of patch*merge (28 px) within [min_pixels,
  max_pixels]; each 28x28 block is one `<|image_pad|>` text token: tokens = (h/28)*(w/28).
- Llama 3.2 Vision (Mllama) fits the image on a canvas of up to `max_image_tiles` tiles of
  `tile_size` px; the prompt holds ONE `<|image|>` token and the language model cross-attends to
  tiles * ((tile/patch)^2 + 1) vision tokens (1,601 per 560 px tile).
- Idefics3 / SmolVLM / SmolVLM2 (`idefics3` scheme) resize the longest side TO
  size["longest_edge"] (up or down) unless do_resize is off, round both sides up to whole tiles
  of max_image_size px (the short side is stretched), and split an image over one tile into
  rows x cols tiles plus a global view squashed to one tile; a view is `image_seq_len` <image>
  tokens. Text per image: one view = <fake><global-img><image>*S<fake> (S + 3 tokens); rows x
  cols = per row cols x (<fake><row_r_col_c><image>*S) + "\\n", then
  "\\n<fake><global-img><image>*S<fake>" (rows*cols*(S+2) + rows-1 + T("\\n\\n") + S + 3).
- Pixtral (`pixtral` scheme) only ever shrinks (to size["longest_edge"]), then rounds each side
  up to 16 px patches: rows x cols [IMG], one [IMG_BREAK] a row (the last one [IMG_END]):
  tokens = rows * (cols + 1).
- Qwen3-VL (`qwen3` scheme) counts as Qwen2-VL with 16 px patches merged 2 x 2: one
  `<|image_pad|>` per 32 x 32 block.
- Gemma 3 (`gemma3`) squashes every image to one square (896 px: 256 <image_soft_token>s); the
  processor writes "\\n\\n<start_of_image>" + 256 soft tokens + "<end_of_image>\\n\\n". How
  many tokens the newlines make depends on the text around them (a BPE merges "\\n" runs), so
  the exact length comes from tokenizing the expanded prompt (`prompt_length`), as the
  processor itself does.

`--max-side S` (`image_cap`): images are shrunk so their longest side is at most the family's
cap, which the processor then never enlarges past S:
- qwen, mllama: the cap is S itself (Qwen rounds each side to the nearest 28 px).
- idefics3: the largest whole number of tiles <= S (1 to 6 tiles: <row_6_col_6> is the last
  row/column token), with the processor's own resize switched off (`processor_settings`): it
  would UPSCALE every image to 1536 px (SmolVLM-Instruct). Tile rounding then stays <= the cap.
  An image under one tile still becomes one tile-sized view (the encoder's input size).
- pixtral: the largest multiple of 16 px <= S, at most the checkpoint's 1024.
- qwen3: the largest multiple of 32 px <= S (rounding to the nearest 32 px then stays <= S), with
  the processor's minimum area lowered to one 32 x 32 block (`processor_settings`): Qwen3-VL's
  hub minimum of 256 x 256 px would UPSCALE a capped 768 x 77 strip to 832 x 96. Small images
  are therefore seen at their own size, not blown up to 256 x 256 (as Qwen2-VL's 56 x 56
  minimum already does).
- gemma3: min(S, the tower's square): the processor squashes every image to that one square
  (896 px, 256 tokens) whatever S; S only limits the detail an image brings. Pan-and-scan crops
  never happen: Gemma3Processor passes do_pan_and_scan=False on every call (its kwargs
  defaults override the image processor's own setting) and the product never asks for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vlm_unsloth.families import Family

IDEFICS3_MAX_GRID = 6
"""Tiles per side: only <row_1_col_1> .. <row_6_col_6> exist as tokens."""


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


def qwen_image_tokens(
    width: int,
    height: int,
    *,
    patch_size: int = 14,
    merge_size: int = 2,
    min_pixels: int = 56 * 56,
    max_pixels: int = 28 * 28 * 1280,
) -> ImageTokenCount:
    """Qwen2-VL/Qwen2.5-VL: tokens = (h'/28)*(w'/28) after the processor's smart resize.

    Raises ValueError for an aspect ratio over 200:1, as the processor does.
    """
    # Imported here: importing this module must not import transformers before Unsloth.
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    factor = patch_size * merge_size
    new_h, new_w = smart_resize(
        height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels
    )
    tokens = (new_h // factor) * (new_w // factor)
    return ImageTokenCount(text_tokens=tokens, vision_tokens=tokens, resized=(new_w, new_h))


def mllama_image_tokens(
    width: int,
    height: int,
    *,
    tile_size: int = 560,
    max_image_tiles: int = 4,
    patch_size: int = 14,
) -> ImageTokenCount:
    """Llama 3.2 Vision: one `<|image|>` text token; tiles x ((tile/patch)^2 + 1) vision tokens."""
    from transformers.models.mllama.image_processing_mllama import get_optimal_tiled_canvas

    canvas = get_optimal_tiled_canvas(height, width, max_image_tiles, tile_size)
    canvas_h, canvas_w = int(canvas[0]), int(canvas[1])  # numpy ints -> plain ints
    tiles = (canvas_h // tile_size) * (canvas_w // tile_size)
    per_tile = (tile_size // patch_size) ** 2 + 1  # +1: the class token of each tile
    return ImageTokenCount(
        text_tokens=1, vision_tokens=tiles * per_tile, resized=(canvas_w, canvas_h), tiles=tiles
    )


def idefics3_image_tokens(
    width: int,
    height: int,
    *,
    tile: int = 384,
    image_seq_len: int = 81,
    longest_edge: int = 1536,
    do_resize: bool = True,
    do_image_splitting: bool = True,
    double_newline_tokens: int = 1,
) -> ImageTokenCount:
    """Idefics3 / SmolVLM / SmolVLM2; defaults are SmolVLM-Instruct's (384 px tiles, 81 tokens a
    view, resized to 1536 px). `double_newline_tokens`: len(tokenizer("\\n\\n")), 1 in SmolLM2.

    Raises ValueError past 6 x 6 tiles: no <row_7_col_1> token exists, so the prompt would be
    tokenized into an unpredictable number of pieces (`image_cap` keeps images under it).
    """
    # Imported here: importing this module must not import transformers before Unsloth.
    from transformers.models.idefics3.image_processing_idefics3 import (
        MAX_IMAGE_SIZE,
        _resize_output_size_rescale_to_max_len,
        _resize_output_size_scale_below_upper_bound,
    )

    h, w = height, width
    if do_resize:
        h, w = _resize_output_size_rescale_to_max_len(h, w, max_len=longest_edge)
        h, w = _resize_output_size_scale_below_upper_bound(h, w, max_len=MAX_IMAGE_SIZE)
    if not do_image_splitting:  # the image is squashed to one tile
        return ImageTokenCount(image_seq_len + 3, image_seq_len, resized=(tile, tile))
    # resize_for_vision_encoder: the long side up to whole tiles, the short side from the ratio.
    ratio = w / h
    if w >= h:
        w = math.ceil(w / tile) * tile
        h = math.ceil(int(w / ratio) / tile) * tile
    else:
        h = math.ceil(h / tile) * tile
        w = math.ceil(int(h * ratio) / tile) * tile
    if h <= tile and w <= tile:
        return ImageTokenCount(image_seq_len + 3, image_seq_len, resized=(w, h))
    rows, cols = h // tile, w // tile
    if rows > IDEFICS3_MAX_GRID or cols > IDEFICS3_MAX_GRID:
        raise ValueError(
            f"{width}x{height} becomes {rows}x{cols} tiles of {tile} px: over the 6x6 grid that "
            "has <row_r_col_c> tokens"
        )
    text = rows * cols * (image_seq_len + 2) + (rows - 1) + double_newline_tokens
    views = rows * cols + 1
    return ImageTokenCount(
        text_tokens=text + image_seq_len + 3,
        vision_tokens=views * image_seq_len,
        resized=(w, h),
        tiles=views,
    )


def pixtral_image_tokens(
    width: int,
    height: int,
    *,
    patch_size: int = 16,
    spatial_merge_size: int = 1,
    longest_edge: int = 1024,
) -> ImageTokenCount:
    """Pixtral (spatial_merge_size 1; Mistral-Small-3.1 merges 2): rows x (cols + 1) text tokens,
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


def gemma3_image_tokens(
    width: int,
    height: int,
    *,
    image_size: int = 896,
    image_seq_length: int = 256,
    double_newline_tokens: int = 1,
) -> ImageTokenCount:
    """Gemma 3: every image becomes one `image_size` square of `image_seq_length` soft tokens,
    framed by <start_of_image>/<end_of_image> and "\\n\\n" on each side (counted here as
    `double_newline_tokens` each; in context they may merge with neighbouring newlines:
    `prompt_length` is exact)."""
    return ImageTokenCount(
        text_tokens=image_seq_length + 2 + 2 * double_newline_tokens,
        vision_tokens=image_seq_length,
        resized=(image_size, image_size),
    )


def qwen3_cap(max_side: int, *, patch_size: int, merge_size: int, **_: Any) -> int:
    """The largest multiple of the merged patch (32 px) that fits in `max_side`."""
    factor = patch_size * merge_size
    return max(factor, max_side // factor * factor)


def gemma3_cap(max_side: int, *, image_size: int, **_: Any) -> int:
    """`max_side`, at most the tower's square (the processor squashes every image to it)."""
    return min(max_side, image_size)


def idefics3_cap(max_side: int, *, tile: int, **_: Any) -> int:
    """The largest whole number of tiles (1 to 6) that fits in `max_side`."""
    return tile * max(1, min(IDEFICS3_MAX_GRID, max_side // tile))


def pixtral_cap(
    max_side: int, *, patch_size: int, spatial_merge_size: int, longest_edge: int, **_: Any
) -> int:
    """The largest multiple of the patch that fits in `max_side`, at most `longest_edge`."""
    patch = patch_size * spatial_merge_size
    return max(patch, min(longest_edge // patch, max_side // patch) * patch)


def _no_cap(max_side: int, **_: Any) -> int:
    return max_side


@dataclass(frozen=True)
class ImageScheme:
    """One way of turning images into tokens (`Family.image_tokens` names it)."""

    settings: Callable[[Any], dict]
    """The processor's parameters that `count` and `cap` take (keyword arguments)."""
    count: Callable[..., ImageTokenCount]
    """(width, height, **settings) -> ImageTokenCount."""
    cap: Callable[..., int]
    """(max_side, **settings) -> the longest side images are shrunk to for --max-side."""
    processor_settings: Callable[[Any], dict]
    """(image processor) -> the attributes the product sets once on every loaded processor."""
    expand_prompt: Callable[[str, Any], str] | None = None
    """(rendered prompt, processor) -> the text the processor tokenizes, for schemes whose image
    text merges with its neighbours when tokenized (Gemma 3's newlines). None: the template's
    tokens plus text_tokens - 1 per image is exact."""


def _image_processor(processor: Any) -> Any:
    # A whole processor, or (for the schemes that need nothing else) its image processor.
    return getattr(processor, "image_processor", processor)


def _qwen_settings(processor: Any) -> dict:
    image_processor = _image_processor(processor)
    return dict(
        patch_size=image_processor.patch_size,
        merge_size=image_processor.merge_size,
        min_pixels=image_processor.size["shortest_edge"],
        max_pixels=image_processor.size["longest_edge"],
    )


def _mllama_settings(processor: Any) -> dict:
    image_processor = _image_processor(processor)
    return dict(
        tile_size=image_processor.size["height"], max_image_tiles=image_processor.max_image_tiles
    )


def _idefics3_settings(processor: Any) -> dict:
    image_processor = processor.image_processor  # image_seq_len lives on the processor
    newline = processor.tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    return dict(
        tile=image_processor.max_image_size["longest_edge"],
        image_seq_len=processor.image_seq_len,
        longest_edge=image_processor.size["longest_edge"],
        do_resize=image_processor.do_resize,
        do_image_splitting=image_processor.do_image_splitting,
        double_newline_tokens=len(newline),
    )


def _gemma3_settings(processor: Any) -> dict:
    newline = processor.tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    return dict(
        image_size=processor.image_processor.size["height"],
        image_seq_length=processor.image_seq_length,  # lives on the processor
        double_newline_tokens=len(newline),
    )


def _qwen3_processor_settings(image_processor: Any) -> dict:
    # One 32 x 32 block as the minimum area (see the module docstring); the maximum stays the
    # checkpoint's (a capped image is far below it). Set as `size`, the attribute the processor
    # reads: min_pixels=/max_pixels= at construction rewrite the CLASS default instead.
    factor = image_processor.patch_size * image_processor.merge_size
    return {
        "size": {
            "shortest_edge": factor * factor,
            "longest_edge": image_processor.size["longest_edge"],
        }
    }


def _gemma3_expand_prompt(text: str, processor: Any) -> str:
    # What the processor writes for each image (pan-and-scan is never on, see above).
    return text.replace(processor.boi_token, processor.full_image_sequence)


def _no_settings(image_processor: Any) -> dict:
    return {}


def _pixtral_settings(processor: Any) -> dict:
    return dict(
        patch_size=processor.patch_size,
        spatial_merge_size=processor.spatial_merge_size,
        longest_edge=processor.image_processor.size["longest_edge"],
    )


SCHEMES: dict[str, ImageScheme] = {
    "qwen": ImageScheme(_qwen_settings, qwen_image_tokens, _no_cap, _no_settings),
    "mllama": ImageScheme(_mllama_settings, mllama_image_tokens, _no_cap, _no_settings),
    # do_resize off: the processor would set every image's longest side TO size["longest_edge"]
    # (1536 px for SmolVLM-Instruct), upscaling a capped image far past --max-side.
    "idefics3": ImageScheme(
        _idefics3_settings, idefics3_image_tokens, idefics3_cap, lambda _: {"do_resize": False}
    ),
    "pixtral": ImageScheme(_pixtral_settings, pixtral_image_tokens, pixtral_cap, _no_settings),
    "qwen3": ImageScheme(_qwen_settings, qwen_image_tokens, qwen3_cap, _qwen3_processor_settings),
    "gemma3": ImageScheme(
        _gemma3_settings, gemma3_image_tokens, gemma3_cap, _no_settings, _gemma3_expand_prompt
    ),
}


def count_image_tokens(family: Family, width: int, height: int, processor: Any) -> ImageTokenCount:
    """The ImageTokenCount of a width x height image for `family`, with the parameters of the
    model's own `processor` (for Qwen and Mllama, its image processor is enough)."""
    scheme = SCHEMES[family.image_tokens]
    return scheme.count(width, height, **scheme.settings(processor))


def image_cap(family: Family, max_side: int, processor: Any) -> int:
    """The longest side `family`'s images are shrunk to under `--max-side max_side`, so that the
    model sees at most `max_side` px (see the module docstring)."""
    scheme = SCHEMES[family.image_tokens]
    return scheme.cap(max_side, **scheme.settings(processor))


def prompt_length(
    family: Family, text: str, image_sizes: list[tuple[int, int]], processor: Any
) -> int:
    """The exact `input_ids` length the processor makes of `text` (a rendered chat template with
    one placeholder per image) and images of these (capped) sizes, tokenized without special
    tokens as every collator calls it (the template writes BOS)."""
    scheme = SCHEMES[family.image_tokens]
    if scheme.expand_prompt is not None:
        return _token_count(scheme.expand_prompt(text, processor), processor)
    return prompt_lengths(family, text, image_sizes, processor)[1]


def prompt_lengths(
    family: Family, text: str, image_sizes: list[tuple[int, int]], processor: Any
) -> tuple[int, int]:
    """(tokens of `text` itself, `prompt_length`), tokenizing `text` once where the family's
    image tokens are counted by formula."""
    text_tokens = _token_count(text, processor)
    scheme = SCHEMES[family.image_tokens]
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
    for name, value in SCHEMES[family.image_tokens].processor_settings(image_processor).items():
        setattr(image_processor, name, value)
    return processor
