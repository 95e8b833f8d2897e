"""How many tokens an image of a given size becomes, per family: the number that decides memory.

Pure size arithmetic over the processors' own resize rules (imported from transformers, so the
estimate cannot drift from what the processor really does):

- Qwen2-VL / Qwen2.5-VL resize to multiples of patch*merge (28 px) within [min_pixels,
  max_pixels]; each 28x28 block is one `<|image_pad|>` text token: tokens = (h/28)*(w/28).
- Llama 3.2 Vision (Mllama) fits the image on a canvas of up to `max_image_tiles` tiles of
  `tile_size` px; the prompt holds ONE `<|image|>` token and the language model cross-attends to
  tiles * ((tile/patch)^2 + 1) vision tokens (1,601 per 560 px tile).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vlm_unsloth.families import Family


@dataclass(frozen=True)
class ImageTokenCount:
    """The cost of one image in a sample.

    text_tokens: positions the image occupies in `input_ids` (counts against max_seq_length).
    vision_tokens: tokens the vision encoder produces and the language model attends to.
    resized: (width, height) the processor resizes to (Qwen) or the tiled canvas (Mllama).
    tiles: Mllama tiles used (1 for Qwen).
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


def count_image_tokens(family: Family, width: int, height: int, image_processor: Any):
    """The ImageTokenCount of a width x height image for `family`, with the parameters of the
    model's own `image_processor`."""
    return _SCHEMES[family.image_tokens](width, height, image_processor)


def _qwen_from_processor(width: int, height: int, image_processor: Any) -> ImageTokenCount:
    return qwen_image_tokens(
        width,
        height,
        patch_size=image_processor.patch_size,
        merge_size=image_processor.merge_size,
        min_pixels=image_processor.size["shortest_edge"],
        max_pixels=image_processor.size["longest_edge"],
    )


def _mllama_from_processor(width: int, height: int, image_processor: Any) -> ImageTokenCount:
    return mllama_image_tokens(
        width,
        height,
        tile_size=image_processor.size["height"],
        max_image_tiles=image_processor.max_image_tiles,
    )


_SCHEMES = {"qwen": _qwen_from_processor, "mllama": _mllama_from_processor}
