"""Image preparation: load any image reference as an upright RGB picture capped at `max_side`.

    python3 -c "from vlm_unsloth.images import load_image; print(load_image('photo.jpg').size)"

A reference is a path, an http(s) URL, bytes, a PIL image or a `datasets` Image dict
({"bytes", "path"}). Every unusable image raises `ImageError` with a stable `reason` key
(missing_file, unreadable_image, decompression_bomb, download_failed, image_too_small,
bad_aspect_ratio) so a validation pass can group rejected rows. A path that is not a regular file
(a device, a pipe) is refused without being opened. A multi-frame file (animated GIF, multi-page
TIFF) gives its first frame; `PreparedImage.frames` says how many it has.

Resizing is a pure size computation (`cap_longest_side`) plus a thin Pillow wrapper, so the
size a sample will have (and its token count) is known without decoding the image twice.
"""

from __future__ import annotations

import io
import os
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from vlm_unsloth.errors import ConfigError, ImageError
from vlm_unsloth.families import Family

DEFAULT_MAX_SIDE = 768
"""Longest side an image is shrunk to (1024 is the other common choice)."""
DOWNLOAD_TIMEOUT_S = 20.0
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024

_TRANSPARENT_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_EXIF_ORIENTATION = 0x0112
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # rotated by 90 or 270 degrees: width and height swap

ImageSource = str | os.PathLike | bytes | Image.Image | dict


@dataclass(frozen=True)
class PreparedImage:
    """An image ready for the processor and the size it had before capping."""

    image: Image.Image
    """Upright RGB image, longest side at most `max_side`."""
    original_size: tuple[int, int]
    """(width, height) after EXIF orientation, before capping."""
    frames: int = 1
    """Frames in the file (animated GIF/WebP/PNG, multi-page TIFF); only the first is used."""

    @property
    def resized(self) -> bool:
        return self.image.size != self.original_size


def cap_longest_side(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) scaled so the longest side is at most `max_side`, aspect ratio kept.

    Never upscales; the short side is rounded to the nearest pixel and is at least 1.
    """
    if max_side < 1:
        raise ConfigError(
            f"max_side must be a positive number of pixels, got {max_side}",
            where="--max-side",
            fix="use e.g. --max-side 768 (or 1024)",
        )
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    if width >= height:
        return max_side, max(1, round(height * max_side / width))
    return max(1, round(width * max_side / height)), max_side


def check_image_size(
    width: int,
    height: int,
    family: Family,
    *,
    where: str | None = None,
    capped_from: tuple[int, int] | None = None,
) -> None:
    """Raise ImageError when `family`'s processor cannot take an image of this size.

    Check the size the processor will see (after capping); `capped_from` is the size before
    capping, named in the message.
    """
    shortest, longest = min(width, height), max(width, height)
    size = f"{width}x{height}"
    if capped_from is not None and capped_from != (width, height):
        size += f" (capped from {capped_from[0]}x{capped_from[1]})"
    if family.max_aspect_ratio is not None and longest / shortest > family.max_aspect_ratio:
        raise ImageError(
            f"image of {size} has an aspect ratio of {longest / shortest:.0f}:1, "
            f"over the {family.max_aspect_ratio:.0f}:1 that {family.key} can take",
            reason="bad_aspect_ratio",
            where=where,
            fix="crop or pad the image to a less extreme shape, or drop the row",
        )
    if shortest < family.min_image_side:
        raise ImageError(
            f"image of {size} has a side under the {family.min_image_side} px {family.key} needs",
            reason="image_too_small",
            where=where,
            fix=f"upscale or pad it to at least {family.min_image_side} px a side, or drop the row",
        )


def resize_to_max_side(image: Image.Image, max_side: int) -> Image.Image:
    """`image` shrunk (LANCZOS) so its longest side is at most `max_side`; never upscaled."""
    size = cap_longest_side(*image.size, max_side)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` as 8-bit RGB: alpha composited on white, 16-bit grey scaled, palettes expanded."""
    if image.mode == "RGB":
        return image
    if image.mode in _TRANSPARENT_MODES or "transparency" in image.info:
        # convert("RGB") would drop alpha and show whatever colour the transparent pixels hold
        # (often black); a white page is what a person sees in a viewer.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in _SIXTEEN_BIT_MODES:
        # Pillow's convert("L") clips 16-bit values at 255 instead of scaling: a 16-bit scan
        # would come out almost all white. 65535 -> 255 is the right mapping.
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.rint(values * 255.0 / 65535.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    return image.convert("RGB")  # L, 1, P without transparency, CMYK, YCbCr, F, ...


def load_image(
    source: ImageSource,
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    family: Family | None = None,
    where: str | None = None,
) -> Image.Image:
    """The upright RGB image of `source`, longest side capped at `max_side`.

    With `family`, images its processor cannot take are refused (ImageError).
    """
    return prepare_image(source, max_side=max_side, family=family, where=where).image


def prepare_image(
    source: ImageSource,
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    family: Family | None = None,
    where: str | None = None,
) -> PreparedImage:
    """Like `load_image`, also returning the size before capping (for validation reports)."""
    label = describe_source(source)
    # warnings.catch_warnings (below and in _open) swaps a process-wide filter list: call this
    # from one thread per process (DataLoader workers and datasets.map(num_proc) are processes).
    image = _open(source, label=label, where=where)
    # Pillow opens a multi-frame file at its first frame; the others are never decoded.
    frames = getattr(image, "n_frames", 1)  # only multi-frame formats have n_frames
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            original_size = _upright_size(image)
            target = cap_longest_side(*original_size, max_side)
            if family is not None:
                check_image_size(*target, family, where=where, capped_from=original_size)
            # JPEG decodes straight to a 1/2, 1/4 or 1/8 scale that is still >= the target:
            # a 12 MP photo capped at 768 px decodes 16x fewer pixels. The whole file is still
            # read, so truncated files are caught. draft() works in stored orientation.
            stored_target = target if image.size == original_size else target[::-1]
            image.draft(None, stored_target)
            image.load()  # decode everything now: truncated files fail here, not in a collator
            image = ImageOps.exif_transpose(image)
            image = to_rgb(image)
            if image.size != target:
                image = image.resize(target, Image.Resampling.LANCZOS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise _bomb_error(label, error, where) from error
    except (OSError, SyntaxError, ValueError) as error:
        raise _unreadable_error(label, error, where) from error
    return PreparedImage(image=image, original_size=original_size, frames=frames)


def describe_source(source: ImageSource) -> str:
    """A short human name for an image reference, for error messages."""
    if isinstance(source, dict):
        if source.get("path"):
            return str(source["path"])
        if source.get("bytes") is not None:
            return f"<{len(source['bytes'])} bytes>"
        return "<no image>"
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    if isinstance(source, Image.Image):
        return f"<PIL image {source.width}x{source.height}>"
    return str(source)


def download(
    url: str,
    *,
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
    limit: int = MAX_DOWNLOAD_BYTES,
    where: str | None = None,
) -> bytes:
    """The bytes at an http(s) URL, at most `limit` of them; ImageError("download_failed")."""
    request = urllib.request.Request(url, headers={"User-Agent": "vlm-unsloth"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            data = response.read(limit + 1)
    except urllib.error.HTTPError as error:
        raise _download_error(url, f"HTTP {error.code} {error.reason}", where) from error
    except urllib.error.URLError as error:
        raise _download_error(url, f"{error.reason} (offline?)", where) from error
    except (TimeoutError, OSError, ValueError) as error:
        raise _download_error(url, str(error) or type(error).__name__, where) from error
    if len(data) > limit:
        raise _download_error(url, f"larger than the {limit // (1024 * 1024)} MB limit", where)
    return data


def _open(source: ImageSource, *, label: str, where: str | None) -> Image.Image:
    """Pillow's lazy handle on `source` (header read, pixels not decoded yet)."""
    if isinstance(source, Image.Image):
        return source.copy()  # never change the caller's image in place
    if isinstance(source, dict):
        if source.get("bytes") is not None:
            source = source["bytes"]
        elif source.get("path"):
            source = source["path"]
        else:
            raise ImageError(
                "row has no image (neither bytes nor a path)",
                reason="missing_file",
                where=where,
                fix="fill in the image column for this row, or drop it (or pass "
                "--text-only-rows if rows without an image are meant as text-only examples)",
            )
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        source = download(source, where=where)
    data: Any
    if isinstance(source, bytes):
        data = io.BytesIO(source)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise _not_a_file_error(path, label, where)
        data = path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(data)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise _bomb_error(label, error, where) from error
    except (OSError, SyntaxError, ValueError) as error:
        raise _unreadable_error(label, error, where) from error


def _not_a_file_error(path: Path, label: str, where: str | None) -> ImageError:
    if path.exists() and not path.is_dir():
        # A device (a link to /dev/zero), a FIFO or a socket: reading it may never end.
        return ImageError(
            f"image file {label} is not a regular file (a device, pipe or socket), so it is "
            "not read",
            reason="unreadable_image",
            where=where,
            fix="point the row at an image file",
        )
    return ImageError(
        f"image file {label} does not exist" + (" (it is a folder)" if path.is_dir() else ""),
        reason="missing_file",
        where=where,
        fix="check the path; relative paths are resolved from the data file's folder",
    )


def _upright_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) the image will have once its EXIF orientation is applied."""
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    width, height = image.size
    return (height, width) if orientation in _SWAPPING_ORIENTATIONS else (width, height)


def _unreadable_error(label: str, error: BaseException, where: str | None) -> ImageError:
    return ImageError(
        f"cannot read image {label}: {error}",
        reason="unreadable_image",
        where=where,
        fix="re-download or re-export the file (it may be truncated, empty or not an image)",
    )


def _bomb_error(label: str, error: BaseException, where: str | None) -> ImageError:
    return ImageError(
        f"image {label} is too large to decode safely: {error}",
        reason="decompression_bomb",
        where=where,
        fix="downscale the file before training (Pillow refuses images over "
        f"{Image.MAX_IMAGE_PIXELS} pixels)",
    )


def _download_error(url: str, why: str, where: str | None) -> ImageError:
    return ImageError(
        f"cannot download image {url}: {why}",
        reason="download_failed",
        where=where,
        fix="check the network, or download the images and point the dataset at local files",
    )
