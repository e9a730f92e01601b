"""Write a `Segmentation` to disk in one or more formats.

Formats and the files they write (``stem`` is usually the image file's stem):

=========  ==========================  =============================================================
json       ``{stem}.json``             ``seg.to_dict()`` (+ ``"source"``), masks as COCO RLE
overlay    ``{stem}.overlay.png``      coloured masks and labels over the image (`render_overlay`)
masks      ``{stem}.masks/``           one ``{id:03d}_{prompt}.png`` per instance, L mode, 0/255
cutout     ``{stem}.cutout.png``       RGBA cutout of the union of all masks (`render_cutout`)
labelmap   ``{stem}.labels.png``       0 = background, instance ``i`` = ``i + 1``; 8-bit L, or 16-bit
                                       (``I;16``) when there are more than 255 instances
=========  ==========================  =============================================================

Every file is written atomically (temporary file in the same directory, then ``os.replace``), and
the JSON is written last, so its presence marks the image as complete (the CLI resumes on it).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from sam3studio.io.files import atomic_write as _atomic_write
from sam3studio.render import render_cutout, render_overlay
from sam3studio.results import Segmentation

__all__ = [
    "DEFAULT_FORMATS",
    "FORMATS",
    "is_complete",
    "output_paths",
    "parse_formats",
    "safe_name",
    "write_outputs",
]

FORMATS: tuple[str, ...] = ("json", "overlay", "masks", "cutout", "labelmap")
DEFAULT_FORMATS: tuple[str, ...] = ("json", "overlay")

_SUFFIXES = {
    "json": ".json",
    "overlay": ".overlay.png",
    "masks": ".masks",
    "cutout": ".cutout.png",
    "labelmap": ".labels.png",
}
_RENDERERS = {"overlay": render_overlay, "cutout": render_cutout}  # the formats drawn from the image
_MASK_FILE = re.compile(r"\d{3,}_.*\.png")
_SAFE_NAME_MAX = 40


def parse_formats(spec: str | Sequence[str]) -> tuple[str, ...]:
    """Parse ``"json,overlay"`` (or a sequence of names, each may itself be comma-separated).

    Names are case-insensitive and stripped; duplicates are dropped, first occurrence order kept.

    Raises:
        ValueError: on an unknown name (the message lists the valid ones) or when no name is given.
    """
    items = [spec] if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"output formats must be strings, got {item!r}")
        names.extend(part.strip().lower() for part in item.split(",") if part.strip())
    valid = ", ".join(FORMATS)
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise ValueError(f"unknown output format(s): {', '.join(unknown)}; valid formats: {valid}")
    if not names:
        raise ValueError(f"no output format given; valid formats: {valid}")
    return tuple(dict.fromkeys(names))


def safe_name(text: str) -> str:
    """A filesystem-safe slug of ``text``: Unicode letters, digits (and combining marks) are kept,
    every other run of characters becomes one ``_``; leading/trailing ``_`` stripped, at most 40
    characters, never empty (``"unnamed"``). ``"red car/../x"`` -> ``"red_car_x"``.
    """
    text = unicodedata.normalize("NFC", str(text))
    kept = "".join(c if c.isalnum() or unicodedata.category(c).startswith("M") else "_" for c in text)
    slug = re.sub(r"_+", "_", kept).strip("_")[:_SAFE_NAME_MAX].rstrip("_")
    return slug or "unnamed"


def _check_stem(stem: str) -> str:
    if not stem or stem in (".", "..") or "/" in stem or "\\" in stem or "\0" in stem:
        raise ValueError(f"stem must be a plain file name without path separators, got {stem!r}")
    return stem


def output_paths(out_dir: Path, stem: str, formats: str | Sequence[str]) -> dict[str, Path]:
    """The path each format writes under ``out_dir``, in ``formats`` order (``masks`` is a directory)."""
    out_dir, stem = Path(out_dir), _check_stem(stem)
    return {fmt: out_dir / f"{stem}{_SUFFIXES[fmt]}" for fmt in parse_formats(formats)}


def is_complete(out_dir: Path, stem: str, formats: str | Sequence[str]) -> bool:
    """True when every path of `output_paths` exists."""
    return all(p.exists() for p in output_paths(out_dir, stem, formats).values())


def _save_png(path: Path, array: np.ndarray) -> None:
    image = Image.fromarray(array)  # uint8 (H, W) -> L, (H, W, 3) -> RGB, (H, W, 4) -> RGBA, uint16 -> I;16
    _atomic_write(path, lambda fh: image.save(fh, format="PNG"))


def _label_map_array(seg: Segmentation) -> np.ndarray:
    labels = seg.label_map()
    return labels if len(seg) > 255 else labels.astype(np.uint8)


def _write_masks(seg: Segmentation, directory: Path) -> None:
    """One 0/255 PNG per instance; stale ``NNN_*.png`` files from an earlier run are removed."""
    directory.mkdir(parents=True, exist_ok=True)
    written = set()
    for i in range(len(seg)):
        prompt = seg.prompts[int(seg.prompt_ids[i])].text
        path = directory / f"{i:03d}_{safe_name(prompt)}.png"
        _save_png(path, seg.masks[i].astype(np.uint8) * 255)
        written.add(path.name)
    for old in directory.iterdir():
        if old.is_file() and _MASK_FILE.fullmatch(old.name) and old.name not in written:
            old.unlink()


def write_outputs(
    seg: Segmentation,
    image: np.ndarray | None,
    out_dir: Path,
    stem: str,
    formats: str | Sequence[str] = DEFAULT_FORMATS,
    *,
    source: str | None = None,
) -> dict[str, Path]:
    """Write ``seg`` in each of ``formats`` under ``out_dir`` (created if missing).

    ``image`` is the ``(H, W, 3)`` uint8 RGB image the segmentation belongs to; it may be ``None``
    only when no image-based format (overlay, cutout) is requested. ``source`` (e.g. the input
    path) is stored in the JSON. Every file is written atomically and the JSON last.

    Returns:
        `output_paths` for ``formats``: format name -> path written.

    Raises:
        ValueError: on an unknown format, a bad ``stem``, or a missing / mismatched ``image``.
    """
    paths = output_paths(out_dir, stem, formats)
    needs_image = sorted(_RENDERERS.keys() & paths.keys())
    if image is None and needs_image:
        raise ValueError(f"an image is required for format(s): {', '.join(needs_image)}")
    # Build every in-memory result first, so a bad input raises before any file is touched.
    arrays = {fmt: render(image, seg) for fmt, render in _RENDERERS.items() if fmt in paths}
    if "labelmap" in paths:
        arrays["labelmap"] = _label_map_array(seg)
    json_bytes = None
    if "json" in paths:
        payload = seg.to_dict()
        if source is not None:
            payload["source"] = source
        json_bytes = json.dumps(payload, ensure_ascii=False, indent=2).encode("utf-8")

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for fmt, path in paths.items():
        if fmt in arrays:
            _save_png(path, arrays[fmt])
        elif fmt == "masks":
            _write_masks(seg, path)
    if json_bytes is not None:  # last: its presence marks the image as complete
        _atomic_write(paths["json"], lambda fh: fh.write(json_bytes))
    return paths
