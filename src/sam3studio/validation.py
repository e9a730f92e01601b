"""Checks of visual prompts, shared by concept segmentation (exemplar boxes) and click refinement.

Everything here is numpy: coordinates are XYXY (boxes) or XY (points) in original-image pixels, and
each check raises `InputError` with a sentence that names the first bad value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sam3studio.errors import InputError

__all__ = ["MAX_BOXES", "MAX_POINTS", "ClickPrompt", "validate_boxes", "validate_clicks"]

MAX_BOXES = 16
MAX_POINTS = 64


def validate_boxes(boxes: Any, box_labels: Any, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Check exemplar boxes (XYXY in original pixels) and labels (1 positive, 0 negative; default all 1).

    Raises `InputError` naming the first bad box: wrong shape, x1 >= x2 or y1 >= y2, outside the
    image, labels of the wrong length or not 0/1, more than `MAX_BOXES`.
    """
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("boxes must be a list of [x1, y1, x2, y2] number lists") from None
    if arr.ndim == 1 and arr.size == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4 or len(arr) == 0:
        raise InputError(f"boxes must be a list of [x1, y1, x2, y2] boxes, got shape {list(arr.shape)}")
    if len(arr) > MAX_BOXES:
        raise InputError(f"{len(arr)} boxes given; the limit is {MAX_BOXES}")
    if not np.isfinite(arr).all():
        raise InputError("box coordinates must be finite numbers")
    for i, (x1, y1, x2, y2) in enumerate(arr):
        if x1 >= x2 or y1 >= y2:
            raise InputError(f"box {i + 1} {[float(v) for v in (x1, y1, x2, y2)]}: needs x1 < x2 and y1 < y2 (XYXY pixels)")
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            raise InputError(f"box {i + 1} {[float(v) for v in (x1, y1, x2, y2)]} is outside the {width}x{height} image")
    if box_labels is None:
        labels = np.ones(len(arr), dtype=np.int64)
    else:
        try:
            labels = np.asarray(box_labels, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            raise InputError("box_labels must be a list of 1 (positive) and 0 (negative)") from None
        if len(labels) != len(arr):
            raise InputError(f"{len(labels)} box labels for {len(arr)} boxes: give one label per box")
        if not np.isin(labels, (0, 1)).all():
            raise InputError("box_labels must be 1 (positive: find objects like this) or 0 (negative: not like this)")
    return arr, labels


@dataclass(frozen=True)
class ClickPrompt:
    """Validated refinement inputs, in original pixels."""

    points: np.ndarray | None  # (n, 2) float64
    labels: np.ndarray | None  # (n,) int64, 1 positive / 0 negative
    box: np.ndarray | None  # (4,) float64 XYXY
    mask: np.ndarray | None  # (H, W) bool

    @property
    def multimask(self) -> bool:
        """SAM's rule: one click alone is ambiguous, so predict 3 masks and keep the best."""
        return self.points is not None and len(self.points) == 1 and self.box is None and self.mask is None


def _finite_array(value: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numbers, got {value!r}"[:300]) from None
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} must be finite numbers")
    return arr


def validate_clicks(points: Any, point_labels: Any, box: Any, mask: Any, width: int, height: int) -> ClickPrompt:
    """Check refinement inputs against an image of ``width`` x ``height``; raise `InputError` with the reason."""
    pts = labels = box_arr = mask_arr = None
    if points is not None and len(points) > 0:
        if point_labels is None:
            raise InputError("points were given without point_labels (one label per point: 1 positive, 0 negative)")
        pts = _finite_array(points, "points")
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise InputError(f"points must be a list of [x, y] pairs, got shape {tuple(pts.shape)}")
        if len(pts) > MAX_POINTS:
            raise InputError(f"at most {MAX_POINTS} points per refinement, got {len(pts)}")
        lab = np.asarray(point_labels, dtype=object).reshape(-1) if not isinstance(point_labels, (str, bytes)) else None
        if lab is None or len(lab) != len(pts):
            n = "a string" if lab is None else len(lab)
            raise InputError(f"point_labels must have one label per point: {len(pts)} points, {n} labels")
        if any(isinstance(v, bool) or v not in (0, 1) for v in lab.tolist()):
            raise InputError(f"point_labels must be 1 (positive) or 0 (negative), got {lab.tolist()!r}"[:300])
        labels = lab.astype(np.int64)
        for x, y in pts:
            if not (0 <= x <= width and 0 <= y <= height):
                raise InputError(f"point ({x:g}, {y:g}) is outside the {width}x{height} image")
    elif point_labels is not None and len(point_labels) > 0:
        raise InputError("point_labels were given without points")
    if box is not None:
        arr = _finite_array(box, "box")
        if arr.shape != (4,):
            raise InputError(f"box must be [x1, y1, x2, y2], got shape {tuple(arr.shape)}")
        box_arr = validate_boxes([arr.tolist()], None, width, height)[0][0].astype(np.float64)
    if mask is not None:
        mask_arr = np.asarray(mask)
        if mask_arr.dtype != bool:
            if mask_arr.dtype.kind not in "uif" or not np.isin(mask_arr, (0, 1)).all():
                raise InputError("mask must be boolean (or 0/1)")
            mask_arr = mask_arr.astype(bool)
        if mask_arr.shape != (height, width):
            raise InputError(f"mask is {mask_arr.shape[1] if mask_arr.ndim == 2 else '?'}x"
                             f"{mask_arr.shape[0] if mask_arr.ndim == 2 else '?'}, the image is {width}x{height}")
    if pts is None and box_arr is None:
        raise InputError("refinement needs at least one point (with its label) or a box")
    return ClickPrompt(pts, labels, box_arr, mask_arr)
