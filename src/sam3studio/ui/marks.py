"""What the user drew on the image tab's canvas: exemplar boxes and refinement clicks (no Gradio here).

The image tab keeps one `Marks` per page (in its ``gr.State``); these functions change it, draw it over
the image, describe it in words, and put a refined object into the shown `Segmentation`. Kept apart from the tab modules so
they are tested without a browser.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from sam3studio.results import Instance, PromptResult, Segmentation
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


def canvas_image(rgb: np.ndarray | None, marks: Marks, mode: str, shown: Segmentation | None,
                 target: int) -> np.ndarray | None:
    """What the canvas shows in ``mode``: nothing in text mode; in click mode the ``target`` row of ``shown`` tinted."""
    if rgb is None or mode == "text":
        return None
    mask = shown.masks[target] if mode == "click" and shown is not None and 0 <= target < len(shown) else None
    return draw(rgb, marks, mode, mask)


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
    """``seg`` with row ``index`` replaced by ``inst`` (its prompt kept), or ``inst`` added as a new object."""
    if 0 <= index < len(seg):
        masks, boxes, scores = seg.masks.copy(), seg.boxes.copy(), seg.scores.copy()
        masks[index], boxes[index], scores[index] = inst.mask, inst.box, inst.score
        return replace(seg, masks=masks, boxes=boxes, scores=scores, prompts=list(seg.prompts),
                       prompt_ids=seg.prompt_ids.copy(), timings={})
    prompts = [*seg.prompts, PromptResult(text=label, presence_score=1.0, count=1)]
    return Segmentation(
        width=seg.width, height=seg.height, prompts=prompts,
        masks=np.concatenate([seg.masks, inst.mask[None]]),
        boxes=np.concatenate([seg.boxes, np.asarray([inst.box], np.float32)]),
        scores=np.concatenate([seg.scores, np.asarray([inst.score], np.float32)]),
        prompt_ids=np.concatenate([seg.prompt_ids, np.asarray([len(seg.prompts)], np.int64)]),
    )


def target_choices(seg: Segmentation | None, new_label: str) -> list[tuple[str, int]]:
    """The refinement target dropdown: each instance shown, and a new object."""
    rows = [(f"#{inst.id} {inst.prompt} · {inst.score:.2f}", inst.id) for inst in (seg or [])]
    return [*rows, (new_label, NEW_OBJECT)]
