"""Masks on the wire, in the format a caller asks for: shared by the REST API and the MCP server.

Formats (``MaskFormat``):

- ``rle``: COCO RLE ``{"size": [h, w], "counts": "<compressed string>"}`` (`sam3studio.results.mask_to_rle`)
- ``polygon``: the mask's outer contours as flat ``[x0, y0, x1, y1, ...]`` lists in image pixels
  (supervision's ``mask_to_polygons``); with ``max_points`` they are simplified (OpenCV's
  Douglas-Peucker, ``approxPolyDP``) until all of an instance's polygons hold at most that many points
- ``png_base64``: a 0/255 8-bit PNG of the mask, base64-encoded
- ``none``: no mask at all (boxes and areas only)

No torch here.
"""

from __future__ import annotations

import base64
import io
from typing import Any, Literal, get_args

import numpy as np

from sam3studio.results import Segmentation

__all__ = ["MASK_FORMATS", "MaskFormat", "mask_payload", "polygons", "segmentation_dict", "set_mask"]

MaskFormat = Literal["rle", "polygon", "png_base64", "none"]
MASK_FORMATS: tuple[str, ...] = get_args(MaskFormat)


def _simplify(contours: list[np.ndarray], max_points: int) -> list[np.ndarray]:
    """At most ``max_points`` points over all ``contours`` (each ``(n, 2)``): a coarser tolerance each round
    (a polygon that would fall below 3 points keeps its last shape), then the smallest polygons dropped
    while they do not fit; the largest one is thinned to fit if it alone is too long."""
    import cv2

    current = sorted((c.reshape(-1, 2) for c in contours), key=lambda c: -abs(cv2.contourArea(c.astype(np.float32))))
    epsilon, limit = 0.5, max((int(np.ptp(c, axis=0).max()) for c in current), default=0) + 1
    while sum(len(c) for c in current) > max_points and epsilon <= limit:
        coarser = [cv2.approxPolyDP(c.reshape(-1, 1, 2).astype(np.int32), epsilon, True).reshape(-1, 2) for c in current]
        current = [new if len(new) >= 3 else old for new, old in zip(coarser, current, strict=True)]
        epsilon *= 2
    kept, used = [], 0
    for c in current:  # largest first: what does not fit is the smallest parts
        if used + len(c) <= max_points:
            kept.append(c)
            used += len(c)
    if not kept and current:
        largest = current[0]
        kept = [largest[np.linspace(0, len(largest) - 1, max_points).round().astype(int)]]
    return kept


def polygons(mask: np.ndarray, max_points: int | None = None) -> list[list[float]]:
    """The contours of an ``(H, W)`` bool mask as flat ``[x0, y0, x1, y1, ...]`` lists (image pixels)."""
    import supervision as sv

    contours = sv.mask_to_polygons(np.asarray(mask, dtype=bool))
    if max_points is not None:
        contours = _simplify(contours, max_points)
    return [c.astype(float).ravel().tolist() for c in contours]


def mask_payload(mask: np.ndarray, fmt: MaskFormat, *, max_points: int | None = None) -> Any:
    """One mask in ``fmt`` (``max_points`` bounds polygons only); None for ``none``."""
    if fmt == "rle":
        from sam3studio.results import mask_to_rle

        return mask_to_rle(mask)
    if fmt == "polygon":
        return polygons(mask, max_points)
    if fmt == "png_base64":
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buf, format="PNG", optimize=False)
        return base64.b64encode(buf.getvalue()).decode("ascii")
    return None


def set_mask(body: dict[str, Any], mask: np.ndarray, fmt: MaskFormat, *, max_points: int | None = None) -> None:
    """Give an instance body (from ``to_dict``, holding its RLE already when ``fmt`` is rle) its mask in ``fmt``."""
    if fmt != "rle":
        body["mask"] = mask_payload(mask, fmt, max_points=max_points)


def segmentation_dict(seg: Segmentation, fmt: MaskFormat, *, max_points: int | None = None) -> dict[str, Any]:
    """`Segmentation.to_dict()` with each instance's mask in ``fmt`` (RLE in one pycocotools call)."""
    data = seg.to_dict(include_masks=fmt == "rle")
    for inst, mask in zip(data["instances"], seg.masks, strict=True):
        set_mask(inst, mask, fmt, max_points=max_points)
    return data
