"""What the review UI and the REST API share: the datasets a server serves, an image's view, drawing it, and
which model results a reviewer's prompt adds.

A server is started with dataset folders (``serve --dataset DIR``, ``dataset review DIR``); `DatasetRegistry`
opens each once and gives it an id made from its folder name. Requests name a dataset by that id, never by
a path, so a client can reach only the datasets the server was started with.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from cachetools import LRUCache

from sam3studio.dataset.store import DatasetNotFound, DatasetStore, ImageFilter, StoredImage, StoredInstance
from sam3studio.errors import InputError
from sam3studio.io.images import load_image
from sam3studio.render import palette_color

__all__ = ["MAX_VIEW_SIDE", "DatasetRegistry", "ImageView", "ReviewImages", "draw_review", "new_results", "view_of",
           "view_scale"]

MAX_VIEW_SIDE = 1600  # the review canvas shows larger images scaled down to this (clicks are scaled back) ...
MIN_VIEW_SIDE = 640  # ... and smaller ones scaled up to this, so that small objects can be clicked


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "dataset"


class DatasetRegistry:
    """The datasets one server serves, by id (the folder's name made URL-safe; ``-2``, ``-3`` for repeats)."""

    def __init__(self, folders: Sequence[str | Path] = ()) -> None:
        self._stores: dict[str, DatasetStore] = {}
        try:
            for folder in folders:
                store = DatasetStore.open(folder)
                if any(s.root == store.root for s in self._stores.values()):
                    store.close()
                    continue
                base = _slug(store.root.name)
                key, n = base, 1
                while key in self._stores:
                    n += 1
                    key = f"{base}-{n}"
                self._stores[key] = store
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self._stores)

    def ids(self) -> list[str]:
        return list(self._stores)

    def get(self, dataset_id: str) -> DatasetStore:
        try:
            return self._stores[dataset_id]
        except KeyError:
            known = ", ".join(self._stores) or "none"
            raise DatasetNotFound(f"no dataset {dataset_id!r} on this server (served: {known})") from None

    def info(self, dataset_id: str) -> dict[str, Any]:
        store = self.get(dataset_id)
        return {"id": dataset_id, "name": store.root.name, "classes": store.classes, "progress": store.progress(),
                "schema_version": store.schema_version}

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()


@dataclass(frozen=True)
class ImageView:
    """An image as the review shows it: the stored image, where it sits among the filtered images, progress."""

    image: StoredImage
    position: int | None  # 1-based among the images matching the filter; 0: it does not match; None: not counted
    matching: int | None  # images matching the filter; None: not counted (a filter on instances)
    progress: dict[str, int]


def view_of(store: DatasetStore, image_id: int, flt: ImageFilter | None = None) -> ImageView:
    """The image and the review's counts. Position and matching images are counted for filters on the review state
    only (index counts: milliseconds at 100 000 images); a filter on classes or scores would read every instance
    on every step, so there they are left out (None) and the page says which filter is on instead."""
    image = store.image(image_id)
    flt = flt or ImageFilter()
    if flt.on_instances:
        return ImageView(image, None if _matches(store, image_id, flt) else 0, None, store.progress())
    position = store.position(image_id, flt) if _matches(store, image_id, flt) else 0
    return ImageView(image, position, store.count(flt), store.progress())


def _matches(store: DatasetStore, image_id: int, flt: ImageFilter) -> bool:
    return store.step(image_id - 1, 1, flt) == image_id


class ReviewImages:
    """Decoded images by path (a few, LRU), so a click or a redraw does not decode the file again.

    A file that is gone or unreadable gives None: the review shows it as missing instead of failing.
    """

    def __init__(self, size: int = 8) -> None:
        self._cache: LRUCache = LRUCache(maxsize=size)
        self._lock = threading.Lock()

    def get(self, image: StoredImage) -> np.ndarray | None:
        path = Path(image.path)
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            return None
        key = (str(path), stamp)
        with self._lock:
            rgb = self._cache.get(key)
        if rgb is None:
            try:
                rgb = load_image(path)
            except (InputError, OSError):
                return None
            if image.width is not None and rgb.shape[:2] != (image.height, image.width):
                return None  # replaced by another picture: its masks no longer fit
            with self._lock:
                self._cache[key] = rgb
        return rgb


def _colour(inst: StoredInstance) -> tuple[int, int, int]:
    return palette_color(inst.class_id)


def draw_review(rgb: np.ndarray | None, image: StoredImage, selected: int | None = None,
                pending: Sequence[tuple[float, float, int]] = ()) -> np.ndarray:
    """The review canvas: the image with each instance tinted in its class colour, outlined, labelled
    ``#id class``; the ``selected`` instance outlined in white; ``pending`` clicks as dots (green +, red −).
    A missing image becomes a grey card of its size, crossed out (the page says why in words). Larger images
    are scaled down to `MAX_VIEW_SIDE`, smaller ones up to `MIN_VIEW_SIDE` (`view_scale`)."""
    width, height = image.width or 320, image.height or 240
    if rgb is None:
        canvas = _resize(np.full((height, width, 3), 90, np.uint8), _scale(width, height))
        h, w = canvas.shape[:2]
        cv2.line(canvas, (0, 0), (w - 1, h - 1), (160, 160, 160), 2, cv2.LINE_AA)
        cv2.line(canvas, (0, h - 1), (w - 1, 0), (160, 160, 160), 2, cv2.LINE_AA)
        return canvas
    canvas = np.array(rgb, dtype=np.uint8, copy=True)
    shapes = []  # (instance, contours in image pixels or None for a box)
    for inst in sorted(image.instances, key=lambda i: -i.area):  # small instances painted last, on top
        mask = inst.mask()
        if mask is None:
            shapes.append((inst, None))
            continue
        # Only the instance's box is touched: tint 45 % of its class colour (integer blend), trace its outline.
        x1, y1 = max(int(inst.box[0]), 0), max(int(inst.box[1]), 0)
        x2, y2 = min(int(np.ceil(inst.box[2])), width), min(int(np.ceil(inst.box[3])), height)
        crop = np.ascontiguousarray(mask[y1:y2, x1:x2])
        region = canvas[y1:y2, x1:x2]
        colour = np.asarray(_colour(inst), np.uint16) * 115
        region[crop] = ((region[crop].astype(np.uint16) * 141 + colour) >> 8).astype(np.uint8)
        contours, _ = cv2.findContours(crop.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x1, y1))
        shapes.append((inst, contours))
    scale = _scale(width, height)
    canvas = _resize(canvas, scale)
    thick = max(1, round(max(canvas.shape[:2]) / 400))
    for inst, contours in shapes:
        colour = (255, 255, 255) if inst.id == selected else _colour(inst)
        width_px = thick * 2 if inst.id == selected else thick
        if contours is not None:
            scaled = [np.round((c.astype(np.float32) + 0.5) * scale).astype(np.int32) for c in contours]
            cv2.drawContours(canvas, scaled, -1, colour, width_px, cv2.LINE_AA)
        else:
            x1, y1, x2, y2 = (int(round(v * scale)) for v in inst.box)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, width_px, cv2.LINE_AA)
    for inst, _ in shapes:
        _label(canvas, f"#{inst.id} {inst.class_name}", inst.box, scale, _colour(inst))
    for x, y, label in pending:
        cx, cy = int(round(x * scale)), int(round(y * scale))
        cv2.circle(canvas, (cx, cy), 3 + thick, (40, 200, 80) if label else (230, 50, 50), -1, cv2.LINE_AA)
        cv2.circle(canvas, (cx, cy), 3 + thick, (255, 255, 255), 1, cv2.LINE_AA)
    return canvas


def _scale(width: int, height: int) -> float:
    side = max(width, height)
    if side > MAX_VIEW_SIDE:
        return MAX_VIEW_SIDE / side
    return MIN_VIEW_SIDE / side if side < MIN_VIEW_SIDE else 1.0


def _resize(arr: np.ndarray, scale: float, nearest: bool = False) -> np.ndarray:
    if scale == 1:
        return arr
    h, w = arr.shape[:2]
    interpolation = cv2.INTER_NEAREST if nearest or scale > 1 else cv2.INTER_AREA
    return cv2.resize(arr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interpolation)


_FONT, _FONT_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.4


@functools.lru_cache(maxsize=512)
def _char_size(char: str) -> tuple[int, int, int]:
    (w, h), base = cv2.getTextSize(char, _FONT, _FONT_SCALE, 1)
    return w, h, base


def _text_size(text: str) -> tuple[int, int, int]:
    """(width, height, baseline) of a label, from cached per-character sizes (``getTextSize`` is slow per call)."""
    sizes = [_char_size(c) for c in text] or [(0, 0, 0)]
    return sum(w for w, _, _ in sizes), max(h for _, h, _ in sizes), max(b for _, _, b in sizes)


def _label(canvas: np.ndarray, text: str, box: Sequence[float], scale: float, colour: tuple[int, int, int]) -> None:
    font, size = _FONT, _FONT_SCALE
    tw, th, base = _text_size(text)
    x = int(min(max(box[0] * scale, 0), max(canvas.shape[1] - tw - 2, 0)))
    y = int(min(max(box[1] * scale, th + 2), canvas.shape[0] - 1))
    cv2.rectangle(canvas, (x, y - th - 3), (x + tw + 2, y + base - 2), colour, -1)
    cv2.putText(canvas, text, (x + 1, y - 2), font, size, (255, 255, 255), 1, cv2.LINE_AA)


def view_scale(image: StoredImage) -> float:
    """Canvas pixels per image pixel (clicks on the canvas divide by it)."""
    return _scale(image.width or 320, image.height or 240)


def new_results(existing: Sequence[StoredInstance], masks: np.ndarray, iou: float = 0.5) -> list[int]:
    """Indices of ``masks`` (``(n, H, W)`` bool) that overlap no existing instance (or an earlier kept one)
    with an IoU of ``iou`` or more: what a reviewer's text prompt or example box adds, without duplicates."""
    kept: list[int] = []
    others = [m for m in (inst.mask() for inst in existing) if m is not None]
    for k, mask in enumerate(masks):
        if not mask.any():
            continue
        area = mask.sum()
        if all((mask & o).sum() / float(area + o.sum() - (mask & o).sum()) < iou for o in others):
            kept.append(k)
            others.append(mask)
    return kept
