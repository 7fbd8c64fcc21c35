"""Reading and writing images and blur masks: the one place m2ae touches image files.

Images come back as float32 RGB arrays ``[H, W, 3]`` in ``[0, 1]`` whatever their mode
on disk; masks as bool ``[H, W]``. Any problem with a file (missing, not an image,
truncated, too large) is a :class:`~m2ae.errors.UserError` whose one-line message
names the file. Writes are 8-bit PNGs, made atomically through :mod:`m2ae.atomic`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from m2ae.atomic import write_with
from m2ae.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

# Pillow modes holding integers wider than 8 bits. 16-bit PNGs open as one of these;
# "I" (32-bit) is assumed to carry 16-bit data too, the only way PNGs produce it.
_WIDE_INT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _open(path: Path) -> Image.Image:
    """Open and fully decode ``path``, turning every failure into a one-line UserError."""
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected an image file")
    try:
        with Image.open(path) as img:
            img.load()
            return ImageOps.exif_transpose(img)
    except UnidentifiedImageError as exc:
        raise UserError(f"{path}: not a readable image file") from exc
    except Image.DecompressionBombError as exc:
        raise UserError(f"{path}: image too large to decode safely ({exc})") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError(f"{path}: truncated or corrupt image ({detail})") from exc


def read_image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(H, W)`` of an image from its header alone (no decode), for cheap validation.

    EXIF orientation is not applied here; :func:`read_image` applies it.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected an image file")
    try:
        with Image.open(path) as img:
            width, height = img.size
    except UnidentifiedImageError as exc:
        raise UserError(f"{path}: not a readable image file") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError(f"{path}: truncated or corrupt image ({detail})") from exc
    return height, width


def _to_float(img: Image.Image) -> np.ndarray:
    """Pixel values of ``img`` as float32 in [0, 1], shape [H, W] or [H, W, C]."""
    if img.mode == "1":
        return np.asarray(img, dtype=np.float32)
    if img.mode in _WIDE_INT_MODES:
        return np.clip(np.asarray(img, dtype=np.float32) / 65535.0, 0.0, 1.0)
    if img.mode == "F":
        return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
    if img.mode in ("L", "RGB"):
        return np.asarray(img, dtype=np.float32) / 255.0
    if img.mode in ("LA", "La"):
        return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    # RGBA, palette, CMYK, YCbCr, ...: Pillow's own conversion to RGB. Alpha is dropped,
    # not composited over a colour: a deblurring pair has no meaningful transparency.
    return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as float32 RGB ``[H, W, 3]`` in ``[0, 1]``.

    Grayscale (1-bit, 8-bit, 16-bit) is replicated to three channels; 16-bit data is
    scaled by 1/65535; alpha channels are dropped; palettes are expanded; EXIF
    orientation is applied. Pillow reads 48-bit RGB PNGs at 8-bit precision.
    """
    path = Path(path)
    values = _to_float(_open(path))
    if values.ndim == 2:
        values = np.repeat(values[:, :, None], 3, axis=2)
    return np.ascontiguousarray(values, dtype=np.float32)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a blur mask as bool ``[H, W]``: a pixel is blurred where any colour
    channel is nonzero (alpha is ignored). Accepts 1-bit, 8/16-bit grayscale, RGB(A)
    and palette files. Lossy formats (JPEG) add noise that this reads as blurred.
    """
    path = Path(path)
    img = _open(path)
    if img.mode in ("1", "L", "F", *_WIDE_INT_MODES):
        return np.asarray(img) != 0
    if img.mode in ("LA", "La"):
        return np.asarray(img.convert("L")) != 0
    return np.any(np.asarray(img.convert("RGB")) != 0, axis=2)


def rgb_panel(chw: Any) -> np.ndarray:
    """A CHW image (C = 1 or 3) as float32 HWC RGB, grey repeated: one panel of a strip."""
    hwc = np.asarray(chw, dtype=np.float32).transpose(1, 2, 0)
    return np.repeat(hwc, 3, axis=2) if hwc.shape[2] == 1 else hwc


def _as_hwc(array: Any) -> np.ndarray:
    """Accept [H,W], [H,W,C] or [C,H,W] with C in (1, 3); return [H,W] or [H,W,3]."""
    values = np.asarray(array, dtype=np.float32)
    if values.ndim == 2:
        return values
    if values.ndim == 3:
        if values.shape[2] in (1, 3):
            hwc = values
        elif values.shape[0] in (1, 3):
            hwc = values.transpose(1, 2, 0)
        else:
            raise ValueError(f"write_image: cannot tell channels in shape {values.shape}")
        return hwc[:, :, 0] if hwc.shape[2] == 1 else hwc
    raise ValueError(f"write_image: expected a 2-D or 3-D array, got shape {values.shape}")


_BAND_ROWS = 256


def write_image(path: str | os.PathLike, array: Any) -> Path:
    """Write float values in ``[0, 1]`` (HWC, CHW or HW; anything ``np.asarray``
    accepts, e.g. a CPU tensor) as an 8-bit PNG, atomically. Values are clipped,
    NaN becomes 0, and rounding is to the nearest of the 256 levels.
    """
    values = _as_hwc(array)
    levels = np.empty(values.shape, dtype=np.uint8)
    # In bands of rows: whole-image float temporaries of a 48-megapixel result would
    # cost more memory than the tiled inference that made it.
    for top in range(0, values.shape[0], _BAND_ROWS):
        band = np.nan_to_num(values[top:top + _BAND_ROWS], nan=0.0)
        np.clip(band, 0.0, 1.0, out=band)
        levels[top:top + _BAND_ROWS] = np.round(band * 255.0)
    img = Image.fromarray(levels)
    return write_with(path, lambda tmp: img.save(tmp, format="PNG"))


def is_image_file(path: Path) -> bool:
    """True for a visible file with one of :data:`IMAGE_SUFFIXES` (any case)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (or its whole tree with ``recursive``), sorted.

    Hidden files (names starting with ".", e.g. macOS "._x.png" forks or m2ae's own
    temporary files) are skipped.
    """
    folder = Path(folder)
    if not folder.exists():
        raise UserError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise UserError(f"{folder}: is a file, expected a folder of images")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if is_image_file(p))
