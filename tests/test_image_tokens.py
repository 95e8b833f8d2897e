"""Image-token arithmetic checked against the REAL transformers image processors.

    python3 -m pytest tests/test_image_tokens.py -q

Qwen2-VL / Qwen2.5-VL (same image processor): tokens = prod(image_grid_thw) / merge_size^2.
Llama 3.2 Vision: tiles = the non-masked entries of aspect_ratio_mask (= num_tiles), and
aspect_ratio_ids names the (rows, columns) tile canvas.
"""

from __future__ import annotations

import pytest
import transformers
from PIL import Image
from transformers.models.mllama.image_processing_mllama import get_all_supported_aspect_ratios

from vlm_unsloth.data.image_tokens import count_image_tokens, mllama_image_tokens, qwen_image_tokens
from vlm_unsloth.data.images import cap_longest_side
from vlm_unsloth.families import FAMILIES

QWEN_MAX_PIXELS = 12845056  # Qwen2-VL-7B-Instruct's preprocessor_config.json
QWEN_MIN_PIXELS = 3136


@pytest.fixture(scope="module")
def qwen_processor():
    # size=..., never min_pixels=/max_pixels=: those kwargs write into the class-level `size`
    # dict and change the default of every Qwen2VLImageProcessor built later in the process.
    return transformers.Qwen2VLImageProcessor(
        size={"shortest_edge": QWEN_MIN_PIXELS, "longest_edge": QWEN_MAX_PIXELS},
        patch_size=14,
        merge_size=2,
        temporal_patch_size=2,
    )


def _mllama_processor(tile: int):
    return transformers.MllamaImageProcessor(
        size={"height": tile, "width": tile}, max_image_tiles=4
    )


def _qwen_real_tokens(processor, width: int, height: int) -> int:
    grid = processor(images=[Image.new("RGB", (width, height))], return_tensors="pt")
    return int(grid["image_grid_thw"].prod()) // processor.merge_size**2


QWEN_SIZES = [
    (4032, 3024),  # a 12 MP phone photo, uncapped: 108 x 144 blocks of 28 px
    (756, 1008),  # portrait
    (1024, 768),
    (768, 576),
    (768, 768),
    (640, 480),
    (480, 640),
    (500, 333),
    (1000, 10),  # 100:1 and 10 px tall: scaled up to the 3136-pixel minimum
    (28, 28),
    (56, 56),
    (57, 83),
    (1, 150),
    (2000, 11),
    (1920, 1080),
]


@pytest.mark.parametrize(("width", "height"), QWEN_SIZES)
def test_qwen_tokens_match_the_real_processor(qwen_processor, width, height):
    real = _qwen_real_tokens(qwen_processor, width, height)
    for key in ("qwen2-vl", "qwen2.5-vl"):
        counted = count_image_tokens(FAMILIES[key], width, height, qwen_processor)
        assert counted.text_tokens == counted.vision_tokens == real
    estimate = qwen_image_tokens(
        width, height, min_pixels=QWEN_MIN_PIXELS, max_pixels=QWEN_MAX_PIXELS
    )
    assert estimate.text_tokens == real
    assert estimate.resized[0] % 28 == 0 and estimate.resized[1] % 28 == 0


def test_qwen_phone_photo_numbers(qwen_processor):
    def count(width, height, processor):
        return count_image_tokens(FAMILIES["qwen2-vl"], width, height, processor)

    assert count(4032, 3024, qwen_processor).text_tokens == 15_552
    assert count(*cap_longest_side(4032, 3024, 1024), qwen_processor).text_tokens == 999
    assert count(*cap_longest_side(4032, 3024, 768), qwen_processor).text_tokens == 567
    assert count(*cap_longest_side(4032, 3024, 768), qwen_processor).resized == (756, 588)


def test_qwen_default_max_pixels_caps_the_tokens():
    # The processor's own default (1,003,520 px = 1280 blocks) when no size is given.
    processor = transformers.Qwen2VLImageProcessor()
    assert processor.size["longest_edge"] == 28 * 28 * 1280  # not changed by the fixture above
    real = _qwen_real_tokens(processor, 4032, 3024)
    assert real <= 1280
    assert count_image_tokens(FAMILIES["qwen2-vl"], 4032, 3024, processor).text_tokens == real


def test_qwen_refuses_over_200_to_1_like_the_processor(qwen_processor):
    with pytest.raises(ValueError, match="aspect ratio"):
        _qwen_real_tokens(qwen_processor, 3000, 10)
    with pytest.raises(ValueError, match="aspect ratio"):
        count_image_tokens(FAMILIES["qwen2-vl"], 3000, 10, qwen_processor)
    assert FAMILIES["qwen2-vl"].max_aspect_ratio == 200


def _mllama_real(processor, width: int, height: int) -> tuple[int, tuple[int, int]]:
    out = processor(images=[[Image.new("RGB", (width, height))]], return_tensors="pt")
    tiles = int(out["aspect_ratio_mask"][0][0].sum())
    assert tiles == out["num_tiles"][0][0]
    rows, columns = get_all_supported_aspect_ratios(processor.max_image_tiles)[
        int(out["aspect_ratio_ids"][0][0]) - 1
    ]
    return tiles, (rows, columns)


@pytest.mark.parametrize(
    ("width", "height", "tiles"),
    [
        (300, 200, 1),
        (560, 560, 1),
        (1200, 600, 2),
        (600, 1200, 2),
        (1120, 1120, 4),
        (2000, 500, 4),  # a 4:1 strip: one row of four tiles
        (4032, 3024, 4),
    ],
)
def test_mllama_tiles_match_the_real_processor_at_560(width, height, tiles):
    processor = _mllama_processor(560)
    real_tiles, (rows, columns) = _mllama_real(processor, width, height)
    counted = count_image_tokens(FAMILIES["llama-3.2-vision"], width, height, processor)
    assert counted.tiles == real_tiles == tiles
    assert counted.resized == (columns * 560, rows * 560)
    assert counted.vision_tokens == tiles * 1_601  # (560 / 14)^2 + 1 class token per tile
    assert counted.text_tokens == 1  # one <|image|> in input_ids, whatever the size


@pytest.mark.parametrize(
    ("width", "height"),
    [(50, 50), (112, 112), (300, 200), (200, 300), (1200, 600), (2000, 500), (500, 2000),
     (4032, 3024), (113, 112), (10, 3000)],
)  # fmt: skip
def test_mllama_tiles_match_the_real_processor_at_the_tiny_tile(width, height):
    processor = _mllama_processor(112)  # the tiny checkpoint's tile: same code, 65 tokens a tile
    real_tiles, (rows, columns) = _mllama_real(processor, width, height)
    counted = count_image_tokens(FAMILIES["llama-3.2-vision"], width, height, processor)
    assert counted.tiles == real_tiles
    assert counted.resized == (columns * 112, rows * 112)
    assert counted.vision_tokens == real_tiles * 65
    assert mllama_image_tokens(width, height, tile_size=112).tiles == real_tiles
