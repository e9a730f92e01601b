"""What the user drew on the image tab's canvas: exemplar boxes and refinement clicks (no Gradio here).

The image tab keeps one `Marks` per page (in its ``gr.State``); these functions change it, draw it over
the image, describe it in words, and put a refined object into the shown `Segmentation`. Kept apart from the tab modules so
they are tested without a browser.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from sam3studio.render import render_overlay
from sam3studio.results import Instance, PromptResult, RLEMasks, Segmentation, mask_to_rle
from sam3studio.ui.i18n import text as t

POSITIVE, NEGATIVE = 1, 0
NEW_OBJECT = -1
_GREEN, _RED, _AMBER = (40, 200, 80), (230, 50, 50), (255, 190, 0)


@dataclass
class Marks:
    """Boxes (each finished by a second click), the pending first corner, and refinement clicks."""

    boxes: list[list[float]] = field(default_factory=list)
    box_labels: list[int] = field(default_factory=list)
    corner: tuple[float, float] | None = None
    points: list[list[float]] = field(default_factory=list)
    point_labels: list[int] = field(default_factory=list)

    def box_click(self, x: float, y: float, label: int) -> Marks:
        """First click: a corner. Second click: the opposite corner, which adds the box (unless it has no area)."""
        if self.corner is None:
            return replace(self, corner=(float(x), float(y)))
        (x0, y0), corner = self.corner, None
        x1, x2, y1, y2 = min(x0, x), max(x0, x), min(y0, y), max(y0, y)
        if x2 - x1 < 1 or y2 - y1 < 1:  # two clicks on one spot: start again from this one
            return replace(self, corner=(float(x), float(y)))
        return replace(self, boxes=[*self.boxes, [float(x1), float(y1), float(x2), float(y2)]],
                       box_labels=[*self.box_labels, int(label)], corner=corner)

    def point_click(self, x: float, y: float, label: int) -> Marks:
        return replace(self, points=[*self.points, [float(x), float(y)]], point_labels=[*self.point_labels, int(label)])

    def undo(self, mode: str) -> Marks:
        if mode == "box":
            if self.corner is not None:
                return replace(self, corner=None)
            return replace(self, boxes=self.boxes[:-1], box_labels=self.box_labels[:-1])
        return replace(self, points=self.points[:-1], point_labels=self.point_labels[:-1])

    def scaled(self, k: float) -> Marks:
        """The same marks on an image ``k`` times larger (how the canvas draws them)."""
        return replace(self, boxes=[[v * k for v in box] for box in self.boxes],
                       corner=(self.corner[0] * k, self.corner[1] * k) if self.corner is not None else None,
                       points=[[x * k, y * k] for x, y in self.points])

    def clear(self, mode: str) -> Marks:
        if mode == "box":
            return replace(self, boxes=[], box_labels=[], corner=None)
        return replace(self, points=[], point_labels=[])


def draw(rgb: np.ndarray, marks: Marks, mode: str, mask: np.ndarray | None = None) -> np.ndarray:
    """The canvas: the image, the object being refined tinted amber, boxes and clicks (green +, red -)."""
    from PIL import Image, ImageDraw

    base = rgb.copy()
    if mask is not None and mask.shape == base.shape[:2]:
        base[mask] = (0.55 * base[mask] + 0.45 * np.array(_AMBER)).astype(np.uint8)
    img = Image.fromarray(base)
    pen = ImageDraw.Draw(img)
    size = max(2, round(max(rgb.shape[:2]) / 150))
    if mode == "box":
        for box, label in zip(marks.boxes, marks.box_labels, strict=True):
            pen.rectangle(box, outline=_GREEN if label == POSITIVE else _RED, width=size)
        if marks.corner is not None:
            x, y = marks.corner
            pen.line([(x - 3 * size, y), (x + 3 * size, y)], fill=_AMBER, width=size)
            pen.line([(x, y - 3 * size), (x, y + 3 * size)], fill=_AMBER, width=size)
    elif mode == "click":
        for (x, y), label in zip(marks.points, marks.point_labels, strict=True):
            r = 2 * size
            pen.ellipse([x - r, y - r, x + r, y + r], fill=_GREEN if label == POSITIVE else _RED, outline=(255, 255, 255))
    return np.asarray(img)


CANVAS_LONG_SIDE = 1000  # px: a smaller image is drawn enlarged on the canvas, which Gradio never scales up


def canvas_scale(width: int, height: int) -> int:
    """The whole factor the canvas draws an image of this size at (1 for an image of `CANVAS_LONG_SIDE` or more).

    Gradio shows an image at most at its own size, so a small photo would sit small in the large canvas;
    drawn ``k`` times larger it fills it, and a click at canvas pixel (x, y) is image pixel (x / k, y / k).
    """
    return max(1, CANVAS_LONG_SIDE // max(1, width, height))


def _scaled(seg: Segmentation, k: int) -> Segmentation:
    """``seg`` drawn ``k`` times larger. Only a small image is enlarged (long side under half of
    `CANVAS_LONG_SIDE`), so its masks, decoded here when they are RLE, stay under a million pixels each."""
    masks = np.asarray(seg.masks, dtype=bool).repeat(k, axis=1).repeat(k, axis=2)
    return replace(seg, width=seg.width * k, height=seg.height * k, masks=masks, boxes=seg.boxes * k)


def canvas_image(rgb: np.ndarray | None, marks: Marks, mode: str, shown: Segmentation | None,
                 target: int) -> np.ndarray | None:
    """What the canvas shows in ``mode``: nothing in text mode; else the ``shown`` result drawn over the image
    (`render_overlay`, with labels) and the marks; in click mode its ``target`` row tinted amber instead.

    Drawn `canvas_scale` times the image's size (crisp labels and marks on an enlarged small photo).
    """
    if rgb is None or mode == "text":
        return None
    k = canvas_scale(rgb.shape[1], rgb.shape[0])
    if k > 1:
        from PIL import Image

        rgb = np.asarray(Image.fromarray(rgb).resize((rgb.shape[1] * k, rgb.shape[0] * k), Image.Resampling.BILINEAR))
        shown = _scaled(shown, k) if shown is not None else None
        marks = marks.scaled(k)
    refining = mode == "click" and shown is not None and 0 <= target < len(shown)
    mask = shown.masks[target] if refining else None
    base = rgb
    if shown is not None and len(shown):
        others = np.ones(len(shown), bool)
        if refining:
            others[target] = False
        base = render_overlay(rgb, shown[others], alpha=0.4) if others.any() else rgb
    return draw(base, marks, mode, mask)


def marks_text(marks: Marks, mode: str, lang: str) -> str:
    """The line under the canvas: a hint before the first mark, then the boxes or clicks made (image pixels)."""
    if mode == "box":
        if not marks.boxes and marks.corner is None:
            return t(lang, "box_hint")
        boxes = ", ".join(("+" if lab == POSITIVE else "−") + "[" + ", ".join(f"{v:.0f}" for v in box) + "]"
                          for box, lab in zip(marks.boxes, marks.box_labels, strict=True))
        pending = t(lang, "corner_pending", x=marks.corner[0], y=marks.corner[1]) if marks.corner else ""
        return t(lang, "boxes_drawn", n=len(marks.boxes), boxes=boxes or "–") + pending
    if mode == "click":
        if not marks.points:
            return t(lang, "click_hint")
        pts = ", ".join(("+" if lab == POSITIVE else "−") + f"({x:.0f}, {y:.0f})"
                        for (x, y), lab in zip(marks.points, marks.point_labels, strict=True))
        return t(lang, "clicks_made", n=len(marks.points), points=pts)
    return ""


def with_instance(seg: Segmentation, inst: Instance, index: int, label: str) -> Segmentation:
    """``seg`` with row ``index``'s mask and box replaced by ``inst``'s (its prompt and detection score kept), or
    ``inst`` added as a new object. ``inst.score`` is SAM's predicted IoU of the refined mask: it goes to
    ``predicted_iou``, never to ``scores`` (a detection score). A new object was not detected: its score is NaN
    (no detection score) and its prompt has no presence score."""
    iou = (np.full(len(seg), np.nan, np.float32) if seg.predicted_iou is None else seg.predicted_iou.copy())
    rle = isinstance(seg.masks, RLEMasks)
    if 0 <= index < len(seg):
        boxes = seg.boxes.copy()
        boxes[index], iou[index] = inst.box, inst.score
        if rle:
            rles = list(seg.masks.rles)
            rles[index] = mask_to_rle(inst.mask)
            masks: np.ndarray | RLEMasks = RLEMasks(rles, seg.height, seg.width)
        else:
            masks = seg.masks.copy()
            masks[index] = inst.mask
        return replace(seg, masks=masks, boxes=boxes, scores=seg.scores.copy(), prompts=list(seg.prompts),
                       prompt_ids=seg.prompt_ids.copy(), timings={}, predicted_iou=iou)
    prompts = [*seg.prompts, PromptResult(text=label, presence_score=None, count=1)]
    added = (RLEMasks([*seg.masks.rles, mask_to_rle(inst.mask)], seg.height, seg.width) if rle
             else np.concatenate([seg.masks, inst.mask[None]]))
    return Segmentation(
        width=seg.width, height=seg.height, prompts=prompts, masks=added,
        boxes=np.concatenate([seg.boxes, np.asarray([inst.box], np.float32)]),
        scores=np.concatenate([seg.scores, np.asarray([np.nan], np.float32)]),
        prompt_ids=np.concatenate([seg.prompt_ids, np.asarray([len(seg.prompts)], np.int64)]),
        predicted_iou=np.concatenate([iou, np.asarray([inst.score], np.float32)]),
    )


def score_text(seg: Segmentation, i: int, lang: str) -> str:
    """What row ``i`` has of the two scores, each named: the detection score and/or SAM's predicted IoU."""
    score, iou = float(seg.scores[i]), (np.nan if seg.predicted_iou is None else float(seg.predicted_iou[i]))
    parts = [] if np.isnan(score) else [t(lang, "score_value", score=score)]
    if not np.isnan(iou):
        parts.append(t(lang, "iou_value", iou=iou))
    return " · ".join(parts) or t(lang, "no_score")


def _label_parts(seg: Segmentation, i: int, lang: str) -> list[str]:
    parts = [seg.prompts[int(seg.prompt_ids[i])].text]
    if not np.isnan(seg.scores[i]):
        parts.append(f"{float(seg.scores[i]):.2f}")
    if seg.predicted_iou is not None and not np.isnan(seg.predicted_iou[i]):
        parts.append(t(lang, "iou_short", iou=float(seg.predicted_iou[i])))
    return parts


def annotation_label(seg: Segmentation, i: int, lang: str = "en") -> str:
    """The result image's label of row ``i``: ``"cat · 0.45 (#0)"``; a refined row adds ``IoU 0.93``; an object
    added by clicks has no detection score to show."""
    return f"{' · '.join(_label_parts(seg, i, lang))} (#{i})"


def target_choices(seg: Segmentation | None, new_label: str) -> list[tuple[str, int]]:
    """The refinement target dropdown: each instance shown, and a new object."""
    rows = [(f"#{i} " + " · ".join(_label_parts(seg, i, "en")), i) for i in range(len(seg) if seg is not None else 0)]
    return [*rows, (new_label, NEW_OBJECT)]
