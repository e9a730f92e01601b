"""Mask clean-up: fill small holes, drop small islands, smooth edges.

Pure numpy + scipy/scikit-image; no torch. Every operation works on one mask at a time and only
on that mask's bounding-box crop (plus a small margin), so a large image with small masks stays
fast. The defaults change nothing.

Connectivity follows the usual digital-topology pairing: the mask (foreground) is
8-connected, background holes are 4-connected. A hole is a background region fully enclosed by
the mask, i.e. one that does not touch the image border.

Steps run in this order, all thresholds relative to the mask's *original* area ``A``:

1. ``min_island``: connected components smaller than ``min_island * A`` are removed; the largest
   component is always kept.
2. ``fill_holes``: holes smaller than ``fill_holes * A`` are filled.
3. ``smooth``: binary opening then closing with a disk of radius ``smooth`` pixels (removes spurs
   and notches narrower than about ``2 * smooth`` pixels). Pixels beyond the image border are
   treated as replicating the edge, so a mask touching the border is not eroded there. If
   opening would erase the mask entirely, the mask is left unsmoothed.

Clean-up changes masks only: callers that keep boxes or areas must recompute them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from scipy import ndimage
from skimage.morphology import disk

__all__ = ["MAX_SMOOTH", "CleanupOptions", "cleanup_masks"]

MAX_SMOOTH = 50
"""Largest accepted smoothing radius, in pixels."""

_FOREGROUND = np.ones((3, 3), dtype=bool)  # 8-connectivity
_BACKGROUND = ndimage.generate_binary_structure(2, 1)  # 4-connectivity


def _check_fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_smooth(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"smooth must be an integer radius in pixels in [0, {MAX_SMOOTH}], got {value!r}")
    if not 0 <= int(value) <= MAX_SMOOTH:
        raise ValueError(f"smooth must be an integer radius in pixels in [0, {MAX_SMOOTH}], got {value!r}")
    return int(value)


def _check_masks(masks: object) -> np.ndarray:
    arr = np.asarray(masks)
    if arr.ndim != 3:
        raise ValueError(f"masks must be 3-D (n, H, W), got shape {arr.shape}")
    if arr.dtype.kind not in "biu":
        raise ValueError(
            f"masks must be boolean or integer 0/1, got dtype {arr.dtype} (threshold probability maps first)"
        )
    return arr.astype(bool)  # always a copy


@dataclass(frozen=True)
class CleanupOptions:
    """Validated clean-up settings; see `cleanup_masks` for what each one does.

    Raises ``ValueError`` on construction if a value is out of range.
    """

    fill_holes: float = 0.0
    min_island: float = 0.0
    smooth: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "fill_holes", _check_fraction("fill_holes", self.fill_holes))
        object.__setattr__(self, "min_island", _check_fraction("min_island", self.min_island))
        object.__setattr__(self, "smooth", _check_smooth(self.smooth))

    @property
    def is_noop(self) -> bool:
        """True when these options leave every mask unchanged."""
        return self.fill_holes == 0.0 and self.min_island == 0.0 and self.smooth == 0

    def apply(self, masks: np.ndarray) -> np.ndarray:
        """``cleanup_masks(masks, **options)``."""
        return cleanup_masks(masks, fill_holes=self.fill_holes, min_island=self.min_island, smooth=self.smooth)


def cleanup_masks(
    masks: np.ndarray,
    *,
    fill_holes: float = 0.0,
    min_island: float = 0.0,
    smooth: int = 0,
) -> np.ndarray:
    """Clean up ``(n, H, W)`` masks and return a new ``(n, H, W)`` bool array.

    Args:
        masks: ``(n, H, W)`` boolean (or integer 0/1; nonzero is foreground) masks. Not modified.
        fill_holes: fill holes (background regions enclosed by the mask) whose area is smaller than
            ``fill_holes * mask_area``; in [0, 1], 0 = off, 1 fills every hole smaller than the mask.
        min_island: drop connected components smaller than ``min_island * mask_area``; in [0, 1],
            0 = off. The largest component is never dropped.
        smooth: edge smoothing radius in pixels (opening then closing with a disk), in
            [0, 50]; 0 = off.

    With the defaults the result equals the input (as a bool copy). Empty masks stay empty.

    Raises:
        ValueError: on a non-3-D or non-integer ``masks`` array or an out-of-range option.
    """
    opts = CleanupOptions(fill_holes=fill_holes, min_island=min_island, smooth=smooth)
    out = _check_masks(masks)
    if opts.is_noop:
        return out
    height, width = out.shape[1:]
    margin = opts.smooth + 1
    for mask in out:  # each `mask` is a view into `out`, cleaned in place
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            continue
        y0, y1 = max(rows[0] - margin, 0), min(rows[-1] + 1 + margin, height)
        x0, x1 = max(cols[0] - margin, 0), min(cols[-1] + 1 + margin, width)
        crop = mask[y0:y1, x0:x1]
        crop[...] = _cleanup_crop(crop, opts)
    return out


def _cleanup_crop(crop: np.ndarray, opts: CleanupOptions) -> np.ndarray:
    """Clean up one mask crop. The crop has a background margin on every side not at the image border."""
    area = int(crop.sum())
    if opts.min_island > 0:
        crop = _drop_islands(crop, opts.min_island * area)
    if opts.fill_holes > 0:
        crop = _fill_holes(crop, opts.fill_holes * area)
    if opts.smooth > 0:
        crop = _smooth(crop, opts.smooth)
    return crop


def _drop_islands(mask: np.ndarray, min_area: float) -> np.ndarray:
    labels, count = ndimage.label(mask, structure=_FOREGROUND)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_area
    keep[0] = False  # background
    keep[int(np.argmax(sizes[1:])) + 1] = True  # never drop the largest component
    return keep[labels]


def _fill_holes(mask: np.ndarray, max_area: float) -> np.ndarray:
    labels, count = ndimage.label(~mask, structure=_BACKGROUND)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    fill = sizes < max_area
    fill[0] = False  # the mask itself
    # Background touching the crop border is outside: the crop border is either the image border
    # or a background margin that surrounds the mask.
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    fill[np.unique(border)] = False
    return mask | fill[labels]


def _smooth(mask: np.ndarray, radius: int) -> np.ndarray:
    footprint = disk(radius).astype(bool)
    # Edge-replicating padding: at the image border the mask continues; elsewhere the crop border
    # is background, so replication only adds background.
    padded = np.pad(mask, radius, mode="edge")
    opened = ndimage.binary_opening(padded, structure=footprint)
    if not opened.any():
        return mask
    closed = ndimage.binary_closing(opened, structure=footprint)
    return closed[radius:-radius, radius:-radius]
