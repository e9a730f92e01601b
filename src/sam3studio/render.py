"""Overlays and cutouts for a `Segmentation`, drawn with supervision's annotators.

Images are ``(H, W, 3)`` uint8 **RGB** arrays in and out (supervision draws on BGR arrays; the
conversion is done here). Colours are chosen per instance index from a fixed palette, so two
neighbouring instances of the same prompt still differ.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import supervision as sv

from sam3studio.results import Segmentation

__all__ = ["PALETTE", "palette_color", "render_cutout", "render_overlay"]

PALETTE: sv.ColorPalette = sv.ColorPalette.DEFAULT
"""The instance palette (supervision's default, 21 well-spread colours), cycled by index."""


def palette_color(i: int) -> tuple[int, int, int]:
    """RGB colour of instance ``i``; the palette cycles, so ``i`` may be any non-negative int."""
    if i < 0:
        raise ValueError(f"instance index must be non-negative, got {i}")
    return PALETTE.by_idx(int(i)).as_rgb()


def _check_image(image: np.ndarray, seg: Segmentation) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be an (H, W, 3) uint8 RGB array, got shape {image.shape} dtype {image.dtype}")
    if image.shape[:2] != (seg.height, seg.width):
        raise ValueError(
            f"image size {image.shape[1]}x{image.shape[0]} (WxH) does not match the segmentation's "
            f"{seg.width}x{seg.height}"
        )
    return image


def _label_text(seg: Segmentation, i: int) -> str:
    """``"prompt 0.87"``. OpenCV's fonts are ASCII-only, so a non-ASCII prompt falls back to the
    model query (the translated prompt) when that one is ASCII."""
    prompt = seg.prompts[int(seg.prompt_ids[i])]
    text = prompt.text
    if not text.isascii() and prompt.query and prompt.query.isascii():
        text = prompt.query
    return f"{text} {float(seg.scores[i]):.2f}"


def render_overlay(
    image: np.ndarray,
    seg: Segmentation,
    *,
    alpha: float = 0.5,
    labels: bool = True,
    boxes: bool = False,
    texts: Sequence[str] | None = None,
) -> np.ndarray:
    """Draw every instance of ``seg`` over ``image`` and return a new ``(H, W, 3)`` uint8 RGB array.

    Each mask is blended with its instance colour (`palette_color`) at opacity ``alpha``: a pixel
    inside mask ``i`` becomes ``round(alpha * colour_i + (1 - alpha) * pixel)``; pixels outside all
    masks (and away from labels/boxes) are unchanged. Where masks overlap, smaller masks are drawn
    on top. ``labels`` adds ``"<prompt> <score:.2f>"`` tags (or ``texts[i]`` when given, one per
    instance), ``boxes`` the XYXY boxes.
    ``image`` is not modified; an empty segmentation returns a copy of it.

    Raises:
        ValueError: if ``image`` is not ``(seg.height, seg.width, 3)`` uint8, ``alpha`` is not in [0, 1],
            or ``texts`` does not hold one text per instance.
    """
    image = _check_image(image, seg)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if texts is not None and len(texts) != len(seg):
        raise ValueError(f"texts must hold one label per instance ({len(seg)}), got {len(texts)}")
    if len(seg) == 0:
        return image.copy()
    detections = seg.to_detections()
    lookup = sv.ColorLookup.INDEX
    scene = np.ascontiguousarray(image[..., ::-1])  # RGB -> BGR copy for supervision/OpenCV
    scene = sv.MaskAnnotator(color=PALETTE, opacity=alpha, color_lookup=lookup).annotate(scene, detections)
    if boxes:
        scene = sv.BoxAnnotator(color=PALETTE, thickness=2, color_lookup=lookup).annotate(scene, detections)
    if labels:
        tags = list(texts) if texts is not None else [_label_text(seg, i) for i in range(len(seg))]
        annotator = sv.LabelAnnotator(color=PALETTE, color_lookup=lookup, smart_position=True)
        scene = annotator.annotate(scene, detections, labels=tags)
    return np.ascontiguousarray(scene[..., ::-1])


def render_cutout(image: np.ndarray, seg: Segmentation, index: int | None = None) -> np.ndarray:
    """Transparent cutout as an ``(H, W, 4)`` uint8 RGBA array.

    Alpha is 255 on the union of all masks (or on instance ``index`` alone; negative indices count
    from the end) and 0 elsewhere; RGB is the image inside and 0 outside.

    Raises:
        ValueError: if ``image`` does not match the segmentation's size.
        IndexError: if ``index`` is out of range.
    """
    image = _check_image(image, seg)
    if index is None:
        keep = seg.masks.any(axis=0)
    else:
        n = len(seg)
        if not -n <= index < n:
            raise IndexError(f"instance index {index} out of range for {n} instances")
        keep = seg.masks[index]
    out = np.zeros((seg.height, seg.width, 4), np.uint8)
    out[keep, :3] = image[keep]
    out[keep, 3] = 255
    return out
