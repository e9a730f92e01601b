"""Safe image decoding: any accepted input becomes an ``(H, W, 3)`` uint8 RGB array.

Accepts a path, raw bytes, a binary file object, a PIL image or an array. Decoding is guarded:
a format allow-list, a pixel limit (width x height from the header, before decoding), truncated or
corrupt files rejected (while Pillow's process-wide ``LOAD_TRUNCATED_IMAGES`` stays off, its default),
EXIF orientation applied so masks line up with what a viewer shows, and every colour mode (CMYK,
palette, LA, RGBA, 16-bit) converted to 8-bit RGB. Pillow's global settings are never changed here
(not thread-safe), only read.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from sam3studio.errors import InputError, InputTooLargeError

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 50_000_000  # about 8k x 6k
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "MPO"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})

ImageInput = str | os.PathLike | bytes | IO[bytes] | Image.Image | np.ndarray

__all__ = ["ImageInput", "load_image", "is_image_path", "IMAGE_SUFFIXES"]


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without washing out 16-bit data."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr8 = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr8 = np.zeros(arr.shape, np.uint8) if hi <= lo else ((arr - lo) / (hi - lo) * 255 + 0.5).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on white: a transparent background reads as background, not black.
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def _warn_if_truncated_images_allowed() -> None:
    global _warned_truncated
    if ImageFile.LOAD_TRUNCATED_IMAGES and not _warned_truncated:
        _warned_truncated = True
        log.warning("Pillow's LOAD_TRUNCATED_IMAGES is on in this process (another library set it): truncated "
                    "images are padded by Pillow instead of refused")


_warned_truncated = False


def _open(data: bytes | IO[bytes], max_pixels: int, name: str) -> Image.Image:
    """Open and decode, checking the format and width x height from the header before any pixel is decoded.

    Pillow's process-wide settings (``Image.MAX_IMAGE_PIXELS``, ``ImageFile.LOAD_TRUNCATED_IMAGES``) and the
    warning filters are read, never changed: changing them per call is not thread-safe. The explicit pixel
    check is the limit; Pillow's own bomb check (on by default) only adds a second, higher one.
    """
    _warn_if_truncated_images_allowed()
    try:
        img = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        if img.format not in ALLOWED_FORMATS:
            raise InputError(
                f"{name}: unsupported image format {img.format!r}; "
                f"use one of {', '.join(sorted(ALLOWED_FORMATS - {'MPO'}))}"
            )
        w, h = img.size
        if w * h > max_pixels:
            raise InputTooLargeError(f"{name}: image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}")
        img.seek(0)  # first frame of GIF/TIFF stacks
        img.load()
    except Image.DecompressionBombError as exc:
        raise InputTooLargeError(f"{name}: image has too many pixels (limit {max_pixels}): {exc}") from None
    except UnidentifiedImageError:
        raise InputError(f"{name}: not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{name}: corrupt or truncated image ({exc})") from None
    return img


def _load_pil(img: Image.Image) -> Image.Image:
    """Decode a (possibly lazy, e.g. from ``Image.open``) PIL image, refusing truncated data."""
    _warn_if_truncated_images_allowed()
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"corrupt or truncated image ({exc})") from None
    return img


def load_image(
    source: ImageInput | Any,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> np.ndarray:
    """Decode ``source`` to an ``(H, W, 3)`` uint8 RGB array with EXIF orientation applied.

    Raises `InputError` for unreadable input and `InputTooLargeError` beyond ``max_bytes`` or
    ``max_pixels``.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, max_pixels)
    if isinstance(source, Image.Image):
        w, h = source.size
        if w * h > max_pixels:
            raise InputTooLargeError(f"image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}")
        return np.array(_to_rgb(ImageOps.exif_transpose(_load_pil(source))))
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        size = path.stat().st_size
        if size > max_bytes:
            raise InputTooLargeError(f"{path}: file is {size} bytes, over the limit of {max_bytes}")
        name, data = str(path), path.read_bytes()
    elif isinstance(source, (bytes, bytearray, memoryview)):
        name, data = "image", bytes(source)
    elif hasattr(source, "read"):
        name, data = getattr(source, "name", "image"), source.read(max_bytes + 1)
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        if not isinstance(data, bytes):  # a text-mode file would otherwise be taken as a file name
            raise InputError(f"{name}: unsupported image input: open the file in binary mode ('rb')")
    else:
        raise InputError(f"unsupported image input of type {type(source).__name__}; pass a path, bytes, PIL image or array")
    if len(data) > max_bytes:
        raise InputTooLargeError(f"{name}: image is over the limit of {max_bytes} bytes")
    if not data:
        raise InputError(f"{name}: empty file")
    img = _open(data, max_pixels, name)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block should not lose an otherwise good image
        pass
    return np.array(_to_rgb(img))  # writable: torch warns on read-only arrays


def _array_to_rgb(arr: np.ndarray, max_pixels: int) -> np.ndarray:
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InputError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    if arr.shape[0] * arr.shape[1] > max_pixels:
        raise InputTooLargeError(f"image has {arr.shape[0] * arr.shape[1]} pixels, over the limit of {max_pixels}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"image array is empty: shape {arr.shape}")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0:
            arr = arr * 255.0
        elif arr.dtype == np.uint16:  # 16-bit data, scaled like a 16-bit PNG rather than clipped
            arr = np.rint(arr / 257.0)
        arr = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
    if arr.shape[2] == 4:  # composite on white, like an RGBA file
        alpha = arr[..., 3:].astype(np.float32) / 255.0
        rgb = arr[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr[..., :3])
