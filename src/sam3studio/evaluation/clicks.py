"""Clicks to quality: the standard simulated user over every ground-truth object, NoC@85/90, mIoU after k clicks.

The simulated user (the protocol of interactive segmentation benchmarks since Xu et al., 2016):

1. The first click is positive, at the point of the object farthest from its boundary.
2. After each refinement, the errors are the missed pixels (ground truth not predicted) and the
   false pixels (predicted, not ground truth). The next click goes into the *largest error region*
   (the largest 8-connected component of either kind; a tie goes to the missed one), at its point
   farthest from the region's boundary (Euclidean distance transform, the image border counting as
   boundary): positive in a missed region, negative in a false one.
3. Every click so far, with the previous mask, goes to the refiner, for ``max_clicks`` clicks or until
   the mask is exact (then the IoU stays 1 for the remaining clicks).

Clicks are given at the pixel's centre, ``(col + 0.5, row + 0.5)``, in image pixels.

- **NoC@85 / NoC@90**: the mean over objects of the number of clicks until the IoU first reaches
  0.85 / 0.90; an object that never does counts ``max_clicks``.
- **failed85 / failed90**: the share of objects that never reach it within ``max_clicks``.
- **miou_at_clicks[k-1]**: the mean IoU after k clicks (k = 1 ... ``max_clicks``).

A refiner is any ``refine(image, points, labels, mask) -> (H, W) bool`` callable; `segmenter_refiner`
wraps `Segmenter.refine` (SAM 3's tracker head). scipy's ``ndimage`` does the labelling and distances.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sam3studio.evaluation.data import EvalDataError, EvalDataset

if TYPE_CHECKING:
    from sam3studio.core import Segmenter

__all__ = ["DEFAULT_MAX_CLICKS", "Click", "click_metrics", "evaluate_clicks", "next_click", "segmenter_refiner",
           "simulate_object"]

DEFAULT_MAX_CLICKS = 20
MAX_CLICKS = 64  # what Segmenter.refine accepts (sam3studio.validation.MAX_POINTS)
Click = tuple[float, float, bool]  # (x, y, positive)
Refiner = Callable[[np.ndarray, np.ndarray, np.ndarray, "np.ndarray | None"], np.ndarray]


def _interior_point(region: np.ndarray) -> tuple[int, int]:
    """(row, col) of the region's pixel farthest from its boundary (the image border included); first in raster order on ties."""
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(row), int(col)


def next_click(gt: np.ndarray, pred: np.ndarray | None) -> Click | None:
    """The simulated user's next click for ground truth ``gt`` given the current ``pred`` (both (H, W) bool).

    None when there is no error left.
    """
    from scipy import ndimage

    gt = np.asarray(gt, dtype=bool)
    pred = np.zeros_like(gt) if pred is None else np.asarray(pred, dtype=bool)
    best: tuple[int, bool, np.ndarray] | None = None
    eight = np.ones((3, 3), dtype=bool)
    for positive, error in ((True, gt & ~pred), (False, pred & ~gt)):
        if not error.any():
            continue
        labels, n = ndimage.label(error, structure=eight)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        k = int(np.argmax(sizes))
        if best is None or sizes[k] > best[0]:
            best = (int(sizes[k]), positive, labels == k + 1)
    if best is None:
        return None
    row, col = _interior_point(best[2])
    return (col + 0.5, row + 0.5, best[1])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 1.0


def simulate_object(refine: Refiner, image: np.ndarray, gt: np.ndarray, max_clicks: int = DEFAULT_MAX_CLICKS
                    ) -> tuple[list[float], list[Click]]:
    """IoU after each of ``max_clicks`` clicks on one object, and the clicks given."""
    gt = np.asarray(gt, dtype=bool)
    if not gt.any():
        raise EvalDataError("an object with an empty mask cannot be clicked on")
    clicks: list[Click] = []
    ious: list[float] = []
    pred: np.ndarray | None = None
    for _ in range(max_clicks):
        click = next_click(gt, pred)
        if click is None:  # exact: nothing left to correct
            ious.append(ious[-1] if ious else 1.0)
            continue
        clicks.append(click)
        points = np.array([[x, y] for x, y, _ in clicks], dtype=np.float64)
        labels = np.array([int(p) for _, _, p in clicks], dtype=np.int64)
        out = np.asarray(refine(image, points, labels, pred), dtype=bool)
        if out.shape != gt.shape:
            raise EvalDataError(f"the refiner returned a {out.shape} mask for a {gt.shape} object")
        pred = out
        ious.append(_iou(pred, gt))
    return ious, clicks


def click_metrics(ious: Sequence[Sequence[float]], max_clicks: int) -> dict[str, Any]:
    """NoC@85, NoC@90, failed85/90 and mIoU after each click from per-object IoU curves."""
    if not ious:
        return {"objects": 0, "max_clicks": max_clicks, "noc85": None, "noc90": None, "failed85": None,
                "failed90": None, "miou_at_clicks": []}
    arr = np.asarray(ious, dtype=float)  # (objects, max_clicks)
    out: dict[str, Any] = {"objects": int(arr.shape[0]), "max_clicks": max_clicks}
    for level in (85, 90):
        reached = arr >= level / 100.0 - 1e-9
        first = np.where(reached.any(axis=1), reached.argmax(axis=1) + 1, max_clicks)
        out[f"noc{level}"] = float(first.mean())
        out[f"failed{level}"] = float((~reached.any(axis=1)).mean())
    out["miou_at_clicks"] = [float(v) for v in arr.mean(axis=0)]
    return out


def segmenter_refiner(segmenter: Segmenter, mask_threshold: float = 0.5) -> Refiner:
    """`Segmenter.refine` as a refiner (raises `TrackerUnavailable` on a checkpoint without SAM 3's tracker)."""
    def refine(image: np.ndarray, points: np.ndarray, labels: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        return segmenter.refine(image, points=points, point_labels=labels, mask=mask, mask_threshold=mask_threshold).mask

    return refine


def evaluate_clicks(refine: Refiner, dataset: EvalDataset, *, max_clicks: int = DEFAULT_MAX_CLICKS,
                    on_object: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Click on every non-crowd ground-truth object of ``dataset`` (its images must be on disk).

    Returns `click_metrics` plus ``per_category`` (the same per prompt) and ``latency`` per refinement.
    """
    import time

    from pycocotools import mask as mask_utils

    from sam3studio.io.images import load_image

    if not 1 <= max_clicks <= MAX_CLICKS:
        raise EvalDataError(f"--max-clicks must be between 1 and {MAX_CLICKS}, got {max_clicks}")
    objects = [a for a in dataset.annotations if not a.get("iscrowd", 0)]
    if any(not a.get("segmentation") for a in objects):
        raise EvalDataError("--clicks needs ground-truth masks (polygons or RLE); some annotations have only boxes")
    by_image: dict[int, list[dict[str, Any]]] = {}
    for a in objects:
        by_image.setdefault(a["image_id"], []).append(a)
    curves: list[list[float]] = []
    per_cat: dict[int, list[list[float]]] = {}
    timings: list[float] = []

    def timed(image, points, labels, mask):
        t0 = time.perf_counter()
        out = refine(image, points, labels, mask)
        timings.append(time.perf_counter() - t0)
        return out

    for im in dataset.images:
        if im.id not in by_image:
            continue
        path = dataset.image_path(im)
        if not path.is_file():
            raise EvalDataError(f"image {path}: no such file (set the images folder with --images)")
        rgb = load_image(path)
        for a in by_image[im.id]:
            segm = a["segmentation"]
            gt = mask_utils.decode({"size": segm["size"], "counts": segm["counts"].encode("ascii")}).astype(bool)
            if not gt.any():
                continue
            ious, _ = simulate_object(timed, rgb, gt, max_clicks)
            curves.append(ious)
            per_cat.setdefault(a["category_id"], []).append(ious)
            if on_object is not None:
                on_object(len(curves))
    out = click_metrics(curves, max_clicks)
    out["per_category"] = [dict(click_metrics(v, max_clicks), id=cid, name=dataset.category(cid).name)
                           for cid, v in per_cat.items()]
    if timings:
        arr = np.asarray(timings)
        out["latency"] = {"refinements": len(arr), "p50_s": float(np.percentile(arr, 50)),
                          "p99_s": float(np.percentile(arr, 99))}
    return out
