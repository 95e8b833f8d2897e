"""Image-token arithmetic checked against the REAL transformers image processors.

    python3 -m pytest tests/test_image_tokens.py -q

Qwen2-VL / Qwen2.5-VL (same image processor): tokens = prod(image_grid_thw) / merge_size^2.
Llama 3.2 Vision: tiles = the non-masked entries of aspect_ratio_mask (= num_tiles), and
aspect_ratio_ids names the (rows, columns) tile canvas.
LFM2-VL: the tile grid from the <|img_row_r_col_c|> tokens, a single view's size from
spatial_shapes.
"""

from __future__ import annotations

import copy

import pytest
import transformers
from PIL import Image
from transformers.models.mllama.image_processing_mllama import get_all_supported_aspect_ratios

from vlm_unsloth.data.image_tokens import count_image_tokens, image_cap, prepare_processor
from vlm_unsloth.data.images import cap_longest_side, check_image_size
from vlm_unsloth.errors import ImageError
from vlm_unsloth.families import FAMILIES
from vlm_unsloth.families._pixtral import pixtral_cap, pixtral_settings
from vlm_unsloth.families._qwen import qwen_image_tokens
from vlm_unsloth.families.llama_3_2_vision import mllama_image_tokens

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


# --- SmolVLM / SmolVLM2 (idefics3 scheme) and Pixtral ------------------------------------------

EXTREME_SIZES = [
    (1, 1), (2, 3), (3, 700), (700, 3), (1, 2000), (60, 40), (127, 129), (128, 128), (300, 200),
    (384, 384), (385, 383), (500, 333), (640, 480), (767, 769), (768, 576), (1000, 1000),
    (1025, 1023), (1600, 1200), (2000, 11), (4500, 300), (300, 4500), (4032, 3024),
]  # fmt: skip


def _random_sizes(count: int, seed: int) -> list[tuple[int, int]]:
    import random

    rng = random.Random(seed)
    return [(rng.randint(1, 3000), rng.randint(1, 3000)) for _ in range(count)]


def _idefics3_processor(name: str, tiny_processor, geometry: str):
    """The tiny SmolVLM processor, or one with a real checkpoint's image parameters (the count
    depends on tile size, tokens a view and the resize target, not on trained weights)."""
    tiny = tiny_processor(name)
    tile, seq = {"tiny": (128, 16), "2.2B": (384, 81), "256M": (512, 64)}[geometry]
    # A new processor (the session's tiny one stays as it is). Nearest-neighbour resizing: the
    # counts do not depend on the filter, and the hub's LANCZOS is slow on these CPUs.
    image_processor = type(tiny.image_processor)(
        do_image_splitting=True, size={"longest_edge": 4 * tile},
        max_image_size={"longest_edge": tile}, resample=0,
    )  # fmt: skip
    processor = type(tiny)(
        image_processor=image_processor,
        tokenizer=tiny.tokenizer,
        image_seq_len=seq,
        chat_template=tiny.chat_template,
        **({"video_processor": tiny.video_processor} if name == "tiny-smolvlm2" else {}),
    )
    return prepare_processor(FAMILIES["smolvlm"], processor)


def _idefics3_real(processor, width: int, height: int, do_resize: bool):
    out = processor(
        text=["<image>"], images=[[Image.new("RGB", (width, height), "white")]],
        do_resize=do_resize, add_special_tokens=False,
    )  # fmt: skip
    ids = out["input_ids"][0]
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    # The tile grid, read from the <row_r_col_c> tokens in the prompt (none: a single view).
    grid = [
        tuple(map(int, token[len("<row_") : -1].split("_col_")))
        for token in processor.tokenizer.convert_ids_to_tokens(ids)
        if token.startswith("<row_")
    ]
    rows, cols = max(grid, default=(0, 0))
    return len(ids), sum(i == image_id for i in ids), len(out["pixel_values"][0]), (rows, cols)


# The image processors of SmolVLM (Idefics3) and SmolVLM2 are copies; their processors (which
# write the prompt) differ: both with the tiny geometry, and each with a real one.
IDEFICS3_CASES = [
    ("tiny-smolvlm", "tiny"), ("tiny-smolvlm2", "tiny"), ("tiny-smolvlm", "2.2B"),
    ("tiny-smolvlm2", "256M"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "geometry"), IDEFICS3_CASES)
def test_idefics3_tokens_match_the_real_processor(name, geometry, tiny_processor):
    processor = _idefics3_processor(name, tiny_processor, geometry)
    family = FAMILIES["smolvlm" if name == "tiny-smolvlm" else "smolvlm2"]
    tile = processor.image_processor.max_image_size["longest_edge"]
    sizes = EXTREME_SIZES + _random_sizes(4, seed=len(geometry))
    # As shipped (do_resize on: every image resized TO size["longest_edge"], 4 tiles)...
    processor.image_processor.do_resize = True
    for width, height in sizes[::3]:
        expected = count_image_tokens(family, width, height, processor)
        real = _idefics3_real(processor, width, height, do_resize=True)
        assert real[:3] == (expected.text_tokens, expected.vision_tokens, expected.tiles), (
            width, height
        )  # fmt: skip
    # ...and as the product sets it, on images capped for --max-side.
    processor.image_processor.do_resize = False
    for width, height in sizes:
        for max_side in (512, 768, 1000):
            cap = image_cap(family, max_side, processor)
            capped = cap_longest_side(width, height, cap)
            expected = count_image_tokens(family, *capped, processor)
            length, images, views, (rows, cols) = _idefics3_real(processor, *capped, False)
            assert (length, images, views) == (
                expected.text_tokens, expected.vision_tokens, expected.tiles,
            ), (width, height, max_side)  # fmt: skip
            # What the encoder sees: a tile grid no longer than --max-side (one tile at least).
            assert max(rows, cols, 1) * tile <= max(max_side, tile)
            assert max(expected.resized) <= max(max_side, tile)


def test_smolvlm_max_side_means_whole_tiles_and_never_upscales(tiny_processor):
    processor = _idefics3_processor("tiny-smolvlm", tiny_processor, "2.2B")
    family = FAMILIES["smolvlm"]
    assert [image_cap(family, s, processor) for s in (300, 768, 1000, 1024, 4000)] == [
        384, 768, 768, 768, 2304,
    ]  # fmt: skip
    # Left to itself the processor resizes a 60x40 image to 1536 px: 13 views, 1083 tokens.
    processor.image_processor.do_resize = True
    assert count_image_tokens(family, 60, 40, processor).text_tokens == 1083
    processor.image_processor.do_resize = False
    assert count_image_tokens(family, 60, 40, processor).text_tokens == 81 + 3  # one view
    # --max-side 768: a 4:3 photo is a 2 x 2 grid + global view: 4 x 83 + 1 + 1 + 84 = 418.
    photo = count_image_tokens(family, *cap_longest_side(4032, 3024, 768), processor)
    assert (photo.text_tokens, photo.tiles, photo.resized) == (418, 5, (768, 768))
    small = _idefics3_processor("tiny-smolvlm", tiny_processor, "256M")
    assert image_cap(family, 768, small) == 512 and image_cap(family, 1024, small) == 1024


PIXTRAL_REAL = dict(patch_size=16, spatial_merge_size=1, longest_edge=1024)
# Every family of the Pixtral tower's rule (Pixtral-12B; Ministral 3's 14 px patches merged 2 x 2
# up to 1540 px), with the real processor's settings its sizes declare.
PIXTRAL_SCHEME_FAMILIES = [k for k, f in FAMILIES.items() if f.image_scheme.name == "pixtral"]


def _pixtral_real(processor, width: int, height: int):
    out = processor(
        text=["[IMG]"], images=[Image.new("RGB", (width, height), "white")],
        add_special_tokens=False, return_tensors="pt",
    )  # fmt: skip
    ids = out["input_ids"][0].tolist()
    image_id = processor.tokenizer.convert_tokens_to_ids("[IMG]")
    height_seen, width_seen = out["image_sizes"][0].tolist()
    return len(ids), ids.count(image_id), (width_seen, height_seen)


@pytest.mark.parametrize("key", PIXTRAL_SCHEME_FAMILIES)
def test_pixtral_tokens_match_the_real_processor(key, tiny_processor):
    family = FAMILIES[key]
    processor = copy.deepcopy(tiny_processor(family.tiny_name))  # the real geometry
    processor.image_processor.resample = 0  # fast; counts do not depend on the filter
    real = pixtral_settings(processor)
    assert all(size.image_settings == real for size in family.sizes)
    longest = real["longest_edge"]
    sizes = [s for s in EXTREME_SIZES + _random_sizes(6, seed=3) if s != (1, 2000)]
    for width, height in sizes:
        expected = count_image_tokens(family, width, height, processor)
        assert _pixtral_real(processor, width, height) == (
            expected.text_tokens, expected.vision_tokens, expected.resized,
        ), (width, height)  # fmt: skip
        for max_side in (512, 768, 1000, 2000):
            cap = image_cap(family, max_side, processor)
            capped = cap_longest_side(width, height, cap)
            expected = count_image_tokens(family, *capped, processor)
            seen = _pixtral_real(processor, *capped)
            assert seen == (expected.text_tokens, expected.vision_tokens, expected.resized)
            assert max(seen[2]) <= min(max_side, longest), (width, height, max_side)
    # 1 x 2000 shrinks to 0 px wide at 1024 (and at 1540): the processor fails, the count says so.
    with pytest.raises(ValueError, match="0 px"):
        count_image_tokens(family, 1, 2000, processor)


def test_pixtral_max_side_means_16_px_patches_up_to_1024(tiny_processor):
    processor = tiny_processor("tiny-pixtral")
    family = FAMILIES["pixtral"]
    assert [image_cap(family, s, processor) for s in (768, 1000, 1024, 2048)] == [
        768, 992, 1024, 1024,
    ]  # fmt: skip
    square = count_image_tokens(family, 768, 768, processor)
    assert (square.text_tokens, square.vision_tokens) == (48 * 49, 48 * 48)  # 2,352 and 2,304
    photo = count_image_tokens(family, *cap_longest_side(4032, 3024, 768), processor)
    assert photo.text_tokens == 36 * 49 and photo.resized == (768, 576)
    assert pixtral_cap(768, **PIXTRAL_REAL) == 768


def test_merged_pixtral_patches_mean_28_px_tokens_up_to_1540(tiny_processor):
    """Ministral 3: 14 px patches merged 2 x 2, so --max-side 768 means 756 px (27 x 28)."""
    merged = [f for f in FAMILIES.values() if f.image_scheme.name == "pixtral" and any(
        s.image_settings["spatial_merge_size"] == 2 for s in f.sizes)]  # fmt: skip
    assert merged, "no family of merged Pixtral patches"
    for family in merged:
        processor = tiny_processor(family.tiny_name)
        assert [image_cap(family, s, processor) for s in (768, 1000, 1540, 2048)] == [
            756, 980, 1540, 1540,
        ]  # fmt: skip
        cap = image_cap(family, 768, processor)
        square = count_image_tokens(family, cap, cap, processor)  # 27 x 27 tokens + 27 breaks
        assert (square.text_tokens, square.vision_tokens) == (27 * 28, 27 * 27)
        photo = count_image_tokens(family, *cap_longest_side(4032, 3024, cap), processor)
        assert (photo.text_tokens, photo.resized) == (21 * 28, (756, 588))  # 756 x 567 px
        assert _pixtral_real(processor, 756, 567)[0] == 21 * 28


# --- Qwen3-VL (qwen3 scheme) and Gemma 3 -------------------------------------------------------

QWEN3_HUB_SIZE = {"shortest_edge": 65_536, "longest_edge": 16_777_216}  # 256^2 .. 4096^2 px


# Qwen3.5 ships Qwen3-VL's preprocessor_config.json: the same scheme, checked for both.
QWEN3_SCHEME_FAMILIES = ["qwen3-vl", "qwen3.5"]


def _qwen3_image_processor(tiny_processor, *, as_the_product_sets_it: bool, key="qwen3-vl"):
    """A Qwen3-VL image processor with the hub's parameters (16 px patches merged 2 x 2), as
    shipped or with the product's settings applied (for the family `key`)."""
    tiny = tiny_processor(FAMILIES[key].tiny_name).image_processor
    processor = transformers.Qwen2VLImageProcessor(
        size=dict(QWEN3_HUB_SIZE), patch_size=16, merge_size=2, temporal_patch_size=2,
        image_mean=tiny.image_mean, image_std=tiny.image_std, resample=0,
    )  # fmt: skip
    if as_the_product_sets_it:
        holder = type("Processor", (), {"image_processor": processor})()
        prepare_processor(FAMILIES[key], holder)
    return processor


def _qwen3_real(processor, width: int, height: int) -> tuple[int, tuple[int, int]]:
    grid = processor(images=[Image.new("RGB", (width, height))], return_tensors="pt")
    _, rows, cols = grid["image_grid_thw"][0].tolist()
    return rows * cols // 4, (cols * 16, rows * 16)


QWEN3_SIZES = [s for s in EXTREME_SIZES if max(s) / min(s) <= 200] + [(768, 77), (768, 4)]


@pytest.mark.parametrize("key", QWEN3_SCHEME_FAMILIES)
def test_qwen3_vl_tokens_match_the_real_processor(key, tiny_processor):
    family = FAMILIES[key]
    for product in (False, True):
        processor = _qwen3_image_processor(tiny_processor, as_the_product_sets_it=product, key=key)
        for width, height in QWEN3_SIZES + _random_sizes(4, seed=5):
            tokens, seen = _qwen3_real(processor, width, height)
            counted = count_image_tokens(family, width, height, processor)
            assert (counted.text_tokens, counted.vision_tokens, counted.resized) == (
                tokens, tokens, seen,
            ), (product, width, height)  # fmt: skip
    assert family.max_aspect_ratio == 200
    with pytest.raises(ValueError, match="aspect ratio"):
        count_image_tokens(family, 3000, 10, processor)


@pytest.mark.parametrize("key", QWEN3_SCHEME_FAMILIES)
def test_qwen3_vl_max_side_means_32_px_blocks_never_upscaled(key, tiny_processor):
    """--max-side S: the tower sees at most S px a side. The hub's 256 x 256 px minimum would
    blow a capped strip up past S; the product lowers it to one 32 px block."""
    family = FAMILIES[key]
    shipped = _qwen3_image_processor(tiny_processor, as_the_product_sets_it=False, key=key)
    assert _qwen3_real(shipped, 768, 77)[1] == (832, 96)  # over a 768 cap
    processor = _qwen3_image_processor(tiny_processor, as_the_product_sets_it=True, key=key)
    assert processor.size["shortest_edge"] == 32 * 32
    assert processor.size["longest_edge"] == QWEN3_HUB_SIZE["longest_edge"]
    assert transformers.Qwen2VLImageProcessor().size["shortest_edge"] == 56 * 56  # class default
    assert [image_cap(family, s, processor) for s in (512, 768, 1000, 1024, 20)] == [
        512, 768, 992, 1024, 32,
    ]  # fmt: skip
    for width, height in QWEN3_SIZES + _random_sizes(6, seed=7):
        for max_side in (300, 512, 768, 1000):
            capped = cap_longest_side(width, height, image_cap(family, max_side, processor))
            try:
                check_image_size(*capped, family)
            except ImageError:
                continue  # refused by validation (a side under 32 px, or over 200:1)
            tokens, seen = _qwen3_real(processor, *capped)
            assert max(seen) <= max_side, (width, height, max_side, seen)
            assert count_image_tokens(family, *capped, processor).text_tokens == tokens
    photo = count_image_tokens(family, *cap_longest_side(4032, 3024, 768), processor)
    assert (photo.text_tokens, photo.resized) == (24 * 18, (768, 576))  # 432 tokens


def _gemma3_processor(tiny_processor, geometry: str):
    if geometry == "tiny":
        return tiny_processor("tiny-gemma3")
    from vlm_unsloth.models.tiny import tiny_processor as build_processor

    family = FAMILIES["gemma3"]
    return prepare_processor(family, build_processor(family.architecture, real_size=True))


GEMMA3_PROMPTS = [
    "<bos><start_of_turn>user\n<start_of_image>What colour is it?<end_of_turn>\n",
    "<bos><start_of_turn>user\nLook:\n<start_of_image><end_of_turn>\n<start_of_turn>model\n",
    "<bos><start_of_turn>user\n<start_of_image><start_of_image>\n\nCompare.<end_of_turn>\n",
]


@pytest.mark.parametrize(("geometry", "side", "tokens"), [("tiny", 224, 16), ("real", 896, 256)])
def test_gemma3_tokens_match_the_real_processor(geometry, side, tokens, tiny_processor):
    """One square of soft tokens per image, whatever its size; the exact prompt length counts
    the newlines around each image as the tokenizer merges them with their neighbours."""
    from vlm_unsloth.data.image_tokens import prompt_length

    processor = _gemma3_processor(tiny_processor, geometry)
    family = FAMILIES["gemma3"]
    soft = processor.tokenizer.convert_tokens_to_ids("<image_soft_token>")
    for text in GEMMA3_PROMPTS:
        images = text.count("<start_of_image>")
        for width, height in EXTREME_SIZES[:: 4 if geometry == "real" else 1]:
            sizes = [(width, height), (height, width)][:images]
            out = processor(
                text=[text], images=[[Image.new("RGB", s, "white") for s in sizes]],
                add_special_tokens=False, return_tensors="pt",
            )  # fmt: skip
            ids = out["input_ids"][0].tolist()
            assert len(ids) == prompt_length(family, text, sizes, processor), (text, sizes)
            assert ids.count(soft) == images * tokens == int(out["token_type_ids"].sum())
            assert tuple(out["pixel_values"].shape) == (images, 3, side, side)
            counted = count_image_tokens(family, width, height, processor)
            assert (counted.vision_tokens, counted.resized, counted.tiles) == (
                tokens, (side, side), 1,
            )  # fmt: skip


def test_gemma3_max_side_and_no_pan_and_scan(tiny_processor):
    """--max-side S caps what the processor gets at min(S, the tower's square); pan-and-scan
    never adds crops (the processor's call defaults switch it off, even where the image
    processor's own setting says on)."""
    processor = copy.deepcopy(_gemma3_processor(tiny_processor, "real"))
    family = FAMILIES["gemma3"]
    assert [image_cap(family, s, processor) for s in (512, 768, 896, 1024, 2048)] == [
        512, 768, 896, 896, 896,
    ]  # fmt: skip
    processor.image_processor.do_pan_and_scan = True
    wide = Image.new("RGB", (1800, 600), "white")  # 3:1: three crops if pan-and-scan were on
    out = processor(text=["<start_of_image>"], images=[[wide]], add_special_tokens=False)
    assert len(out["pixel_values"]) == 1
    crops = processor(
        text=["<start_of_image>"], images=[[wide]], add_special_tokens=False,
        do_pan_and_scan=True,
    )  # fmt: skip
    assert len(crops["pixel_values"]) > 1  # (what asking for it per call would do)


# --- LFM2-VL (lfm2-tiles scheme) ----------------------------------------------------------------

LFM2 = next(f for f in FAMILIES.values() if f.image_scheme.name == "lfm2-tiles")


def _lfm2_processor(tiny_processor, geometry: str):
    """The tiny processor (256 px tiles) or the hub's geometry (512 px tiles), as the product
    sets it; nearest-neighbour resizing (the counts do not depend on the filter)."""
    from vlm_unsloth.models.tiny import tiny_processor as build_processor

    if geometry == "tiny":
        processor = copy.deepcopy(tiny_processor(LFM2.tiny_name))
    else:
        processor = prepare_processor(LFM2, build_processor(LFM2.architecture, real_size=True))
    processor.image_processor.resample = 0
    return processor


def _lfm2_real(processor, width: int, height: int):
    """(input length, <image> tokens, crops, the size seen): the tile canvas from the
    <|img_row_r_col_c|> tokens, else the one view's patches."""
    out = processor(
        text=["<image>"], images=[[Image.new("RGB", (width, height), "white")]],
        add_special_tokens=False, return_tensors="pt",
    )  # fmt: skip
    ids = out["input_ids"][0].tolist()
    tokens = processor.tokenizer.convert_ids_to_tokens(ids)
    grid = [
        tuple(map(int, t[len("<|img_row_") : -2].split("_col_")))
        for t in tokens
        if t.startswith("<|img_row_")
    ]
    if grid:
        rows, cols = max(grid)
        tile = processor.image_processor.tile_size
        seen = (cols * tile, rows * tile)
    else:
        patch = processor.image_processor.encoder_patch_size
        height_patches, width_patches = out["spatial_shapes"][0].tolist()
        seen = (width_patches * patch, height_patches * patch)
    return len(ids), tokens.count("<image>"), len(out["pixel_values"]), seen


@pytest.mark.parametrize("geometry", ["tiny", "real"])
def test_lfm2_tokens_match_the_real_processor(geometry, tiny_processor):
    """Single views and tile grids (+ thumbnail), as the hub ships the processor (small images
    grown to 64 tokens) and as the product sets it (min_image_tokens 1), raw and capped for
    --max-side."""
    processor = _lfm2_processor(tiny_processor, geometry)
    image_processor = processor.image_processor
    assert image_processor.min_image_tokens == 1
    sizes = EXTREME_SIZES + _random_sizes(4, seed=11)
    tiled = single = 0
    for min_tokens in (1, image_processor.max_image_tokens // 4):  # product's, hub's
        image_processor.min_image_tokens = min_tokens
        for width, height in sizes:
            expected = count_image_tokens(LFM2, width, height, processor)
            assert _lfm2_real(processor, width, height) == (
                expected.text_tokens, expected.vision_tokens, expected.tiles, expected.resized,
            ), (width, height, min_tokens)  # fmt: skip
            tiled, single = tiled + (expected.tiles > 1), single + (expected.tiles == 1)
    assert tiled >= 10 and single >= 10  # both layouts were compared
    image_processor.min_image_tokens = 1
    for width, height in sizes[::2]:
        for max_side in (300, 768, 1024):
            capped = cap_longest_side(width, height, image_cap(LFM2, max_side, processor))
            expected = count_image_tokens(LFM2, *capped, processor)
            assert _lfm2_real(processor, *capped) == (
                expected.text_tokens, expected.vision_tokens, expected.tiles, expected.resized,
            ), (width, height, max_side)  # fmt: skip


def test_lfm2_max_side_means_32_px_and_one_view_under_two_tiles(tiny_processor):
    processor = _lfm2_processor(tiny_processor, "real")
    # Multiples of 32 px; under 1024 px (every grid is at least 2 tiles long) at most 704 px, the
    # largest square that stays one view (704^2 <= 2 x 512^2 < 736^2).
    assert [image_cap(LFM2, s, processor) for s in (300, 512, 768, 1000, 1024, 2048)] == [
        288, 512, 704, 704, 1024, 2048,
    ]  # fmt: skip
    for side in (300, 768, 1000):
        for size in EXTREME_SIZES:
            capped = cap_longest_side(*size, image_cap(LFM2, side, processor))
            counted = count_image_tokens(LFM2, *capped, processor)
            assert counted.tiles == 1 and max(counted.resized) <= side, (size, side)
            assert counted.vision_tokens <= 256
    # --max-side 768: a 4:3 photo is one 576 x 416 view (18 x 13 tokens); at 1024 it is tiled
    # onto 3 x 2 tiles of 512 px (a canvas longer than 1024: the grid follows the aspect ratio)
    # plus the 234-token thumbnail: 6 x (1 + 256) + 1 + 234 + 2.
    photo = count_image_tokens(LFM2, *cap_longest_side(4032, 3024, 768), processor)
    assert (photo.text_tokens, photo.vision_tokens, photo.resized) == (236, 234, (576, 416))
    photo = count_image_tokens(LFM2, *cap_longest_side(4032, 3024, 1024), processor)
    assert (photo.text_tokens, photo.vision_tokens, photo.tiles) == (1779, 1770, 7)
    assert photo.resized == (1536, 1024)
    # A 3 x 700 strip capped to 1 x 288 px: the product's minimum (1 token) sees it at its own
    # size rounded to 32 px; the hub's 64 tokens would stretch it to 32 x 4352 px.
    strip = cap_longest_side(3, 700, image_cap(LFM2, 300, processor))
    assert count_image_tokens(LFM2, *strip, processor).resized == (32, 288)
    processor.image_processor.min_image_tokens = 64
    assert count_image_tokens(LFM2, *strip, processor).resized == (32, 4352)


def _gemma3n_processor(tiny_processor, geometry: str):
    if geometry == "tiny":
        return tiny_processor("tiny-gemma3n")
    from vlm_unsloth.models.tiny import tiny_processor as build_processor

    family = FAMILIES["gemma3n"]
    return prepare_processor(family, build_processor(family.architecture, real_size=True))


GEMMA3N_PROMPTS = [
    "<bos><start_of_turn>user\n<image_soft_token>What colour is it?<end_of_turn>\n",
    "<bos><start_of_turn>user\nLook:\n<image_soft_token><end_of_turn>\n<start_of_turn>model\n",
    "<bos><start_of_turn>user\n<image_soft_token><image_soft_token>\n\nCompare.<end_of_turn>\n",
]


@pytest.mark.parametrize(("geometry", "side", "tokens"), [("tiny", 128, 16), ("real", 768, 256)])
def test_gemma3n_tokens_match_the_real_processor(geometry, side, tokens, tiny_processor):
    """Gemma 3n's template writes <image_soft_token> per image; the processor makes one square
    (768 px on the hub) and 256 soft tokens of it whatever its size, framed as Gemma 3's."""
    from vlm_unsloth.data.image_tokens import prompt_length

    processor = _gemma3n_processor(tiny_processor, geometry)
    family = FAMILIES["gemma3n"]
    soft = processor.tokenizer.convert_tokens_to_ids("<image_soft_token>")
    for text in GEMMA3N_PROMPTS:
        images = text.count("<image_soft_token>")
        for width, height in EXTREME_SIZES[:: 4 if geometry == "real" else 1]:
            sizes = [(width, height), (height, width)][:images]
            out = processor(
                text=[text], images=[[Image.new("RGB", s, "white") for s in sizes]],
                add_special_tokens=False, return_tensors="pt",
            )  # fmt: skip
            ids = out["input_ids"][0].tolist()
            assert len(ids) == prompt_length(family, text, sizes, processor), (text, sizes)
            assert ids.count(soft) == images * tokens == int(out["token_type_ids"].sum())
            assert tuple(out["pixel_values"].shape) == (images, 3, side, side)
            counted = count_image_tokens(family, width, height, processor)
            assert (counted.vision_tokens, counted.resized, counted.tiles) == (
                tokens, (side, side), 1,
            )  # fmt: skip
    # --max-side S caps what is decoded at min(S, the square); the count never changes.
    assert [image_cap(family, s, processor) for s in (32, 512, 768, 2048)] == [
        32, min(512, side), min(768, side), side,
    ]  # fmt: skip


@pytest.mark.parametrize(("geometry", "budget"), [("tiny", 70), ("real", 280)])
def test_gemma4_tokens_match_the_real_processor(geometry, budget, tiny_processor):
    """Every image rescaled, up or down and keeping its aspect ratio, to the patch budget
    (max_soft_tokens x 3 x 3 patches of 16 px): the formula's tokens and size are the
    processor's, one or two images a prompt."""
    from vlm_unsloth.data.image_tokens import prompt_length
    from vlm_unsloth.models.tiny import tiny_processor as build_processor

    family = FAMILIES["gemma4"]
    processor = (
        tiny_processor(family.tiny_name)
        if geometry == "tiny"
        else prepare_processor(family, build_processor(family.architecture, real_size=True))
    )
    assert processor.image_processor.max_soft_tokens == budget
    soft = processor.tokenizer.convert_tokens_to_ids(family.image_token)
    prompts = ["<bos><|turn>user\n<|image|>What colour is it?<turn|>\n",
               "<bos><|turn>user\nLook:<|image|><|image|><turn|>\n<|turn>model\n"]  # fmt: skip
    for text in prompts:
        images = text.count(family.image_token)
        for width, height in EXTREME_SIZES[:: 2 if geometry == "real" else 1]:
            sizes = [(width, height), (height, width)][:images]
            out = processor(
                text=[text], images=[[Image.new("RGB", s, "white") for s in sizes]],
                add_special_tokens=False, return_tensors="pt",
            )  # fmt: skip
            counts = [count_image_tokens(family, w, h, processor) for w, h in sizes]
            ids = out["input_ids"][0].tolist()
            assert len(ids) == prompt_length(family, text, sizes, processor), (text, sizes)
            assert ids.count(soft) == sum(c.vision_tokens for c in counts), sizes
            patches = (out["image_position_ids"] != -1).all(dim=-1).sum(dim=-1).tolist()
            assert [p // 9 for p in patches] == [c.vision_tokens for c in counts]
            for count, row in zip(counts, out["image_position_ids"], strict=True):
                real = row[(row != -1).all(dim=-1)]  # (x, y) of each patch: the resized grid
                grid = (int(real[:, 0].max()) + 1, int(real[:, 1].max()) + 1)
                assert grid == (count.resized[0] // 16, count.resized[1] // 16), sizes
                assert count.vision_tokens <= budget
    square = count_image_tokens(family, 640, 640, processor)
    # 640 px squares: 8 x 8 (384 px) or 16 x 16 (768 px) soft tokens, framed by <|image>, <image|>
    assert square.vision_tokens == {70: 64, 280: 256}[budget] == square.text_tokens - 2


def test_gemma4_max_side_limits_detail_not_tokens():
    """--max-side S caps images at S itself; the processor then rescales to its budget, so the
    tokens of an image do not depend on S (a 4:3 photo: 266 tokens, 912 x 672 px at the hub's
    budget, whether capped at 300 or 1024 px)."""
    from vlm_unsloth.models.tiny import tiny_processor as build_processor

    family = FAMILIES["gemma4"]
    processor = prepare_processor(family, build_processor(family.architecture, real_size=True))
    assert [image_cap(family, s, processor) for s in (300, 768, 1024, 4096)] == [
        300, 768, 1024, 4096,
    ]  # fmt: skip
    for max_side in (300, 768, 1024):
        capped = cap_longest_side(4032, 3024, image_cap(family, max_side, processor))
        photo = count_image_tokens(family, *capped, processor)
        assert (photo.vision_tokens, photo.resized) == (266, (912, 672)), max_side
