"""Pictures for language models: the image with each instance's id drawn on it, and close-ups of instances.

A vision LLM reads the ids off the picture and refers to instances by them, so the tag of each
instance is its id (``"3"``), drawn with its mask and box (`sam3studio.render.render_overlay`). Pictures
are scaled down to a bounded size before they are encoded (JPEG), to keep an LLM's context small.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from sam3studio.render import render_overlay
from sam3studio.results import Segmentation

__all__ = ["close_up", "encode_jpeg", "marked_image", "shrink"]


def shrink(image: np.ndarray, seg: Segmentation, max_side: int) -> tuple[np.ndarray, Segmentation]:
    """``image`` and ``seg`` scaled so that the longer side is at most ``max_side`` (unchanged if smaller)."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return image, seg
    import cv2

    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.LANCZOS))
    masks = np.stack([cv2.resize(m.astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST).astype(bool)
                      for m in seg.masks]) if len(seg) else np.zeros((0, nh, nw), bool)
    boxes = seg.boxes * np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
    return small, Segmentation(width=nw, height=nh, prompts=seg.prompts, masks=masks, boxes=boxes, scores=seg.scores,
                               prompt_ids=seg.prompt_ids)


def marked_image(image: np.ndarray, seg: Segmentation, ids: Sequence[int], max_side: int = 1024) -> np.ndarray:
    """``image`` with instance ``i`` of ``seg`` drawn (mask, box) and tagged ``ids[i]``, at most ``max_side`` px."""
    small, small_seg = shrink(image, seg, max_side)
    return render_overlay(small, small_seg, alpha=0.45, boxes=True, texts=[str(i) for i in ids])


def close_up(image: np.ndarray, seg: Segmentation, index: int, tag: str, side: int = 384, pad: float = 0.2) -> np.ndarray:
    """A crop around instance ``index`` of ``seg`` (its box plus ``pad`` of its size each way), the instance
    drawn and tagged ``tag``, scaled so its longer side is ``side`` pixels."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in seg.boxes[index])
    px, py = max(8.0, (x2 - x1) * pad), max(8.0, (y2 - y1) * pad)
    left, top = int(max(0, x1 - px)), int(max(0, y1 - py))
    right, bottom = int(min(w, np.ceil(x2 + px))), int(min(h, np.ceil(y2 + py)))
    if right - left < 2 or bottom - top < 2:
        left, top, right, bottom = 0, 0, w, h
    crop = np.ascontiguousarray(image[top:bottom, left:right])
    one = seg[[index]]
    local = Segmentation(width=right - left, height=bottom - top, prompts=one.prompts,
                         masks=one.masks[:, top:bottom, left:right],
                         boxes=one.boxes - np.array([left, top, left, top], np.float32), scores=one.scores,
                         prompt_ids=one.prompt_ids)
    drawn = render_overlay(crop, local, alpha=0.4, boxes=False, texts=[tag])
    ch, cw = drawn.shape[:2]
    scale = side / max(ch, cw)
    size = (max(1, round(cw * scale)), max(1, round(ch * scale)))
    return np.asarray(Image.fromarray(drawn).resize(size, Image.Resampling.LANCZOS))


def encode_jpeg(rgb: np.ndarray, quality: int = 85) -> str:
    """``rgb`` as base64 JPEG text."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return base64.b64encode(buf.getvalue()).decode("ascii")
