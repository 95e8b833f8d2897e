"""Image preparation on real files made in each test: every mode, every broken file, offline URLs.

python3 -m pytest tests/test_images.py -q
"""

from __future__ import annotations

import functools
import http.server
import io
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlm_unsloth.data.images import (
    cap_longest_side,
    check_image_size,
    download,
    load_image,
    prepare_image,
    resize_to_max_side,
    to_rgb,
)
from vlm_unsloth.errors import ConfigError, ImageError
from vlm_unsloth.families import FAMILIES

QWEN = FAMILIES["qwen2-vl"]
MLLAMA = FAMILIES["llama-3.2-vision"]


def _png_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def _jpeg(path: Path, image: Image.Image, **options) -> Path:
    image.save(path, format="JPEG", quality=95, **options)
    return path


def _noise(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _reason(error: pytest.ExceptionInfo) -> str:
    return error.value.reason


# --- the pure size function -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "max_side", "expected"),
    [
        ((4032, 3024), 768, (768, 576)),
        ((4032, 3024), 1024, (1024, 768)),
        ((3024, 4032), 1024, (768, 1024)),  # portrait: height is the longest side
        ((1000, 1000), 768, (768, 768)),
        ((1001, 333), 768, (768, 255)),  # 333 * 768 / 1001 = 255.49: rounded
        ((300, 200), 768, (300, 200)),  # never upscaled
        ((768, 100), 768, (768, 100)),  # exactly at the cap: unchanged
        ((10, 3000), 768, (3, 768)),
        ((1, 5000), 768, (1, 768)),  # the short side never rounds to 0
    ],
)
def test_cap_longest_side(size, max_side, expected):
    assert cap_longest_side(*size, max_side) == expected


def test_cap_longest_side_keeps_the_aspect_ratio_within_a_pixel():
    for width, height in [(4032, 3024), (1920, 1080), (333, 1777), (5000, 17)]:
        new_w, new_h = cap_longest_side(width, height, 512)
        assert max(new_w, new_h) == 512
        assert abs(new_w * height / width - new_h) <= 1 or abs(new_h * width / height - new_w) <= 1


def test_cap_longest_side_refuses_a_non_positive_cap():
    with pytest.raises(ConfigError, match="--max-side"):
        cap_longest_side(100, 100, 0)


def test_resize_to_max_side_uses_the_pure_size_and_never_upscales():
    image = _noise(1000, 400)
    resized = resize_to_max_side(image, 256)
    assert resized.size == cap_longest_side(1000, 400, 256) == (256, 102)
    small = _noise(100, 50)
    assert resize_to_max_side(small, 256) is small


# --- every way to name an image ---------------------------------------------------------------


def test_load_from_path_bytes_pil_and_dataset_dicts_gives_the_same_pixels(tmp_path):
    image = Image.new("RGB", (40, 30), (10, 200, 30))
    data = _png_bytes(image)
    path = tmp_path / "green.png"
    path.write_bytes(data)
    sources = [
        path,
        str(path),
        data,
        image,
        {"bytes": data, "path": None},
        {"bytes": None, "path": str(path)},
        {"bytes": data, "path": "name-only.png"},  # bytes win over a path that does not exist
    ]
    for source in sources:
        loaded = load_image(source)
        assert loaded.mode == "RGB"
        assert loaded.size == (40, 30)
        assert loaded.getpixel((5, 5)) == (10, 200, 30)


def test_a_pil_image_passed_in_is_not_changed():
    image = Image.new("RGBA", (2000, 1000), (0, 0, 255, 0))
    loaded = load_image(image, max_side=100)
    assert loaded.size == (100, 50)
    assert image.mode == "RGBA" and image.size == (2000, 1000)


def test_large_jpeg_is_capped_exactly_and_reports_its_original_size(tmp_path):
    # JPEG draft mode decodes at 1/4 here; the result must still be the exact capped size.
    path = _jpeg(tmp_path / "photo.jpg", Image.new("RGB", (2000, 1500), (200, 30, 30)))
    prepared = prepare_image(path, max_side=256)
    assert prepared.image.size == (256, 192)
    assert prepared.original_size == (2000, 1500)
    assert prepared.resized
    red, green, blue = prepared.image.getpixel((128, 96))
    assert red > 180 and green < 60 and blue < 60
    small = prepare_image(_jpeg(tmp_path / "small.jpg", _noise(100, 80)), max_side=256)
    assert small.image.size == small.original_size == (100, 80)
    assert not small.resized


# --- orientation and colour modes -------------------------------------------------------------


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    # Stored 60x20, left third red, the rest blue; orientation 6 = "rotate 90 degrees clockwise
    # to display": upright it is 20x60 with red at the top.
    stored = Image.new("RGB", (60, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _jpeg(tmp_path / "rotated.jpg", stored, exif=exif)
    prepared = prepare_image(path)
    assert prepared.original_size == (20, 60)
    assert prepared.image.size == (20, 60)
    top, bottom = prepared.image.getpixel((10, 5)), prepared.image.getpixel((10, 55))
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom
    # The cap is applied to the upright size: 60 tall -> 30 tall, 10 wide.
    assert load_image(path, max_side=30).size == (10, 30)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = _jpeg(tmp_path / "cmyk.jpg", Image.new("CMYK", (32, 32), (0, 255, 255, 0)))
    assert Image.open(path).mode == "CMYK"
    loaded = load_image(path)
    assert loaded.mode == "RGB"
    red, green, blue = loaded.getpixel((16, 16))
    assert red > 230 and green < 30 and blue < 30


def test_16_bit_png_is_scaled_to_8_bit_not_clipped(tmp_path):
    # Pillow's own convert("L") clips at 255: 1000 and 32896 would both come out white.
    values = np.array([[0, 1000, 32896, 65535]], dtype=np.uint16)
    path = tmp_path / "scan16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    loaded = load_image(path)
    assert loaded.mode == "RGB"
    assert [loaded.getpixel((x, 0)) for x in range(4)] == [
        (0, 0, 0),
        (4, 4, 4),  # 1000 * 255 / 65535 = 3.9
        (128, 128, 128),  # 32896 = 128 * 257
        (255, 255, 255),
    ]


def test_32_bit_integer_grey_is_treated_as_16_bit():
    image = Image.fromarray(np.array([[0, 32896, 65535, 70000]], dtype=np.int32))
    assert image.mode == "I"
    rgb = to_rgb(image)
    assert [rgb.getpixel((x, 0))[0] for x in range(4)] == [0, 128, 255, 255]


def test_rgba_png_is_composited_on_white(tmp_path):
    image = Image.new("RGBA", (3, 1))
    image.putpixel((0, 0), (255, 0, 0, 0))  # fully transparent red: must show white
    image.putpixel((1, 0), (0, 0, 0, 128))  # half-transparent black: mid grey
    image.putpixel((2, 0), (0, 0, 255, 255))  # opaque blue
    path = tmp_path / "alpha.png"
    image.save(path)
    loaded = load_image(path)
    assert loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((1, 0)) in {(127, 127, 127), (126, 126, 126)}
    assert loaded.getpixel((2, 0)) == (0, 0, 255)


def test_palette_png_with_transparency_shows_white_where_transparent(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)  # index 0 red, index 1 green
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    path = tmp_path / "palette.png"
    image.save(path, transparency=0)
    assert Image.open(path).mode == "P"
    loaded = load_image(path)
    assert loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((1, 0)) == (0, 255, 0)


def test_palette_png_without_transparency_keeps_its_colours(tmp_path):
    image = Image.new("P", (1, 1))
    image.putpalette([12, 34, 56] + [0] * 765)
    path = tmp_path / "palette.png"
    image.save(path)
    assert load_image(path).getpixel((0, 0)) == (12, 34, 56)


@pytest.mark.parametrize(
    ("mode", "colour", "expected"),
    [
        ("L", 77, (77, 77, 77)),
        ("LA", (77, 0), (255, 255, 255)),  # transparent grey: white
        ("LA", (77, 255), (77, 77, 77)),
        ("1", 1, (255, 255, 255)),
        ("1", 0, (0, 0, 0)),
    ],
)
def test_grey_and_bilevel_modes(tmp_path, mode, colour, expected):
    path = tmp_path / f"{mode}.png"
    Image.new(mode, (4, 4), colour).save(path)
    loaded = load_image(path)
    assert loaded.mode == "RGB"
    assert loaded.getpixel((1, 1)) == expected


# --- broken files -----------------------------------------------------------------------------


def test_truncated_jpeg_is_unreadable(tmp_path):
    whole = _jpeg(tmp_path / "whole.jpg", _noise(300, 300)).read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImageError) as error:
        load_image(path, where="train.jsonl:7")
    assert _reason(error) == "unreadable_image"
    assert str(error.value).startswith("train.jsonl:7: cannot read image")
    assert "truncated" in str(error.value)


def test_truncated_large_jpeg_is_caught_in_draft_mode_too(tmp_path):
    whole = _jpeg(tmp_path / "whole.jpg", _noise(1600, 1200)).read_bytes()
    path = tmp_path / "truncated.jpg"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImageError) as error:
        load_image(path, max_side=200)
    assert _reason(error) == "unreadable_image"


def test_zero_byte_file_is_unreadable(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError) as error:
        load_image(path)
    assert _reason(error) == "unreadable_image"
    assert "empty.png" in str(error.value)


def test_html_saved_as_jpg_is_unreadable(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_text("<!DOCTYPE html><html><body>403 Forbidden</body></html>")
    with pytest.raises(ImageError) as error:
        load_image(path)
    assert _reason(error) == "unreadable_image"
    assert "photo.jpg" in str(error.value) and "cannot identify image file" in str(error.value)


def test_missing_path_names_the_file_and_the_row(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(ImageError) as error:
        load_image(missing, where="train.jsonl:3")
    assert _reason(error) == "missing_file"
    assert str(error.value).startswith(f"train.jsonl:3: image file {missing} does not exist")


def test_a_folder_is_not_an_image(tmp_path):
    with pytest.raises(ImageError) as error:
        load_image(tmp_path)
    assert _reason(error) == "missing_file"
    assert "it is a folder" in str(error.value)


@pytest.mark.parametrize("kind", ["symlink to /dev/zero", "fifo"])
def test_a_path_that_is_not_a_regular_file_is_refused_unread(tmp_path, kind):
    # Reading /dev/zero never ends and a FIFO blocks: the file must not even be opened.
    path = tmp_path / "chart.png"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    with pytest.raises(ImageError) as error:
        load_image(path, where="train.jsonl:2")
    assert _reason(error) == "unreadable_image"
    assert str(error.value).startswith(f"train.jsonl:2: image file {path} is not a regular file")
    assert "does not exist" not in str(error.value)


def test_an_empty_image_reference_is_missing():
    with pytest.raises(ImageError) as error:
        load_image({"bytes": None, "path": None})
    assert _reason(error) == "missing_file"


def test_a_multi_frame_gif_gives_its_first_frame_and_says_how_many_it_has(tmp_path):
    path = tmp_path / "blink.gif"
    red, blue, green = (Image.new("RGB", (40, 30), colour) for colour in ("red", "blue", "green"))
    red.save(path, save_all=True, append_images=[blue, green], duration=100, loop=0)
    with Image.open(path) as written:
        assert written.n_frames == 3
    prepared = prepare_image(path)
    assert prepared.frames == 3
    assert prepared.image.mode == "RGB" and prepared.image.getpixel((5, 5)) == (255, 0, 0)
    assert prepare_image(tmp_path / "blink.gif", max_side=20).image.size == (20, 15)
    Image.new("RGB", (40, 30), "red").save(tmp_path / "still.gif")
    assert prepare_image(tmp_path / "still.gif").frames == 1


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (100, 100)).save(path)  # 10,000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # over 2x: Pillow's error
    with pytest.raises(ImageError) as error:
        load_image(path)
    assert _reason(error) == "decompression_bomb"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # between 1x and 2x: Pillow's warning
    with pytest.raises(ImageError) as error:
        load_image(path)
    assert _reason(error) == "decompression_bomb"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20000)
    assert load_image(path).size == (100, 100)


# --- sizes the model cannot take ----------------------------------------------------------------


def test_strip_of_300_to_1_is_refused_for_qwen_but_not_mllama(tmp_path):
    path = tmp_path / "strip.png"
    Image.new("RGB", (10, 3000), "white").save(path)
    with pytest.raises(ImageError) as error:
        load_image(path, family=QWEN, where="rows.csv:2")
    assert _reason(error) == "bad_aspect_ratio"
    message = str(error.value)
    assert "rows.csv:2" in message and "capped from 10x3000" in message and "200:1" in message
    assert load_image(path, family=MLLAMA).size == (3, 768)  # Mllama tiles any shape
    assert load_image(path).size == (3, 768)  # no family: no check


def test_image_too_small_for_qwen(tmp_path):
    path = tmp_path / "tiny.png"
    Image.new("RGB", (20, 40)).save(path)
    with pytest.raises(ImageError) as error:
        load_image(path, family=QWEN)
    assert _reason(error) == "image_too_small"
    assert "28 px" in str(error.value)
    assert load_image(path, family=MLLAMA).size == (20, 40)


def test_size_checks_apply_to_the_capped_size():
    check_image_size(28, 5600, QWEN)  # exactly 200:1 and 28 px: accepted
    with pytest.raises(ImageError) as error:
        check_image_size(30, 6100, QWEN)  # 203:1
    assert _reason(error) == "bad_aspect_ratio"
    # 40x4000 is fine as is (100:1) but capped at 768 its short side is 8 px.
    with pytest.raises(ImageError) as error:
        load_image(Image.new("RGB", (40, 4000)), max_side=768, family=QWEN)
    assert _reason(error) == "image_too_small"
    assert "capped from 40x4000" in str(error.value)


# --- URLs (never the internet: a local server, and a port nothing listens on) ---------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def image_server(tmp_path):
    Image.new("RGB", (50, 20), (0, 128, 0)).save(tmp_path / "served.png")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_is_downloaded(image_server):
    loaded = load_image(f"{image_server}/served.png")
    assert loaded.size == (50, 20)
    assert loaded.getpixel((3, 3)) == (0, 128, 0)
    assert load_image({"bytes": None, "path": f"{image_server}/served.png"}).size == (50, 20)


def test_url_errors_are_download_failed(image_server):
    with pytest.raises(ImageError) as error:
        load_image(f"{image_server}/missing.png", where="rows.jsonl:9")
    assert _reason(error) == "download_failed"
    assert "rows.jsonl:9" in str(error.value) and "HTTP 404" in str(error.value)
    with pytest.raises(ImageError) as error:
        download(f"{image_server}/served.png", limit=10)
    assert _reason(error) == "download_failed"
    assert "larger than" in str(error.value)


def test_url_offline_gives_a_clear_error():
    url = f"http://127.0.0.1:{_free_port()}/photo.jpg"
    with pytest.raises(ImageError) as error:
        load_image(url, where="train.jsonl:1")
    assert _reason(error) == "download_failed"
    message = str(error.value)
    assert message.startswith(f"train.jsonl:1: cannot download image {url}")
    assert "offline" in message and "download the images" in message
