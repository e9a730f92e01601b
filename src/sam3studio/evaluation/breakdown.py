"""Where the model fails: AP and recall by object size and by category frequency, per prompt, the hardest
prompts, and the worst false positives and misses (the failure gallery's material).

- **Size** buckets are COCO's (area in pixels: small < 32², medium < 96², large above; for video
  tracks the mean area over the frames where the object is present, as YouTube-VIS does). AP and
  recall per bucket are pycocotools' own numbers for its ``areaRng`` slices (recall = AR@100
  averaged over IoU 0.50:0.95; ``recall@50`` at IoU 0.5), read from a finished `COCOeval`.
- **Frequency** buckets follow LVIS: a category is *rare* when it has instances on 1-10 images of the
  evaluated set, *common* on 11-100, *frequent* on more. Per bucket: the mean of its categories' AP
  and the instance recall at IoU 0.5 at the detection threshold (micro over the bucket).
- **Failures** at the detection threshold, on the one-to-one matching of cgF1 (Hungarian on IoU, a
  match counting at IoU >= 0.5): a *false positive* is a detection >= threshold left unmatched
  (worst = highest score); a *miss* is a ground-truth instance left unmatched (worst = largest).

Nothing here imports the rest of the evaluation package at run time: callers hand in what they computed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "FREQUENCY_BUCKETS",
    "SIZE_BUCKETS",
    "failures",
    "frequency_breakdown",
    "hardest_prompts",
    "match_at",
    "size_breakdown",
]

SIZE_BUCKETS = ("small", "medium", "large")
FREQUENCY_BUCKETS = (("rare", 1, 10), ("common", 11, 100), ("frequent", 101, None))  # images with instances
MATCH_IOU = 0.5
GALLERY_SIZE = 12


def _mean_valid(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None


def size_breakdown(ev: Any) -> dict[str, dict[str, Any]]:
    """AP, AP50, recall (AR@100) and recall@50 per COCO size bucket from an evaluated, accumulated `COCOeval`."""
    p = ev.params
    m = p.maxDets.index(100) if 100 in p.maxDets else len(p.maxDets) - 1
    t50 = int(np.argmin(np.abs(np.asarray(p.iouThrs) - 0.5)))
    prec, rec = ev.eval["precision"], ev.eval["recall"]  # (T, R, K, A, M), (T, K, A, M)
    out: dict[str, dict[str, Any]] = {}
    for label in SIZE_BUCKETS:
        a = p.areaRngLbl.index(label)
        lo, hi = p.areaRng[a]
        n = sum(1 for gts in ev._gts.values() for g in gts if not g.get("iscrowd", 0) and lo <= g["area"] < hi)
        out[label] = {"instances": n, "area_range": [lo, hi if hi < 1e9 else None],
                      "AP": _mean_valid(prec[:, :, :, a, m]), "AP50": _mean_valid(prec[t50, :, :, a, m]),
                      "recall": _mean_valid(rec[:, :, a, m]), "recall@50": _mean_valid(rec[t50, :, a, m])}
    return out


def match_at(ious: np.ndarray, n_dt: int) -> tuple[list[int], list[int], dict[int, int]]:
    """One-to-one matching of the first ``n_dt`` detections (rows of ``ious``, score order) to ground truth.

    Returns (unmatched detection rows, unmatched ground-truth columns, matched row -> column); a pair
    counts as matched only at IoU >= 0.5.
    """
    from scipy.optimize import linear_sum_assignment

    n_gt = ious.shape[1]
    matched: dict[int, int] = {}
    if n_dt and n_gt:
        rows, cols = linear_sum_assignment(ious[:n_dt], maximize=True)
        matched = {int(r): int(c) for r, c in zip(rows, cols, strict=True) if ious[r, c] >= MATCH_IOU - 1e-12}
    hit_cols = set(matched.values())
    return ([r for r in range(n_dt) if r not in matched], [c for c in range(n_gt) if c not in hit_cols], matched)


def failures(pairs: Iterable[Any], threshold: float, prompt_of: dict[int, str],
             size: int = GALLERY_SIZE) -> tuple[dict[int, dict[str, int]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Per category TP/FP/FN at IoU 0.5 and ``threshold``, plus the worst false positives and misses.

    ``pairs`` are matching pairs with ``category_id``, ``scores`` (descending), ``ious`` (dt x gt),
    ``dets`` and ``gts`` (the detection and annotation dicts in the same orders) and ``exhaustive``.
    """
    counts: dict[int, dict[str, int]] = defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0})
    fps: list[dict[str, Any]] = []
    misses: list[dict[str, Any]] = []
    for pair in pairs:
        if not pair.exhaustive:
            continue
        n_dt = int(np.count_nonzero(pair.scores >= threshold))
        lone_dt, lone_gt, matched = match_at(pair.ious, n_dt)
        c = counts[pair.category_id]
        c["tp"] += len(matched)
        c["fp"] += len(lone_dt)
        c["fn"] += len(lone_gt)
        for r in lone_dt:
            d = pair.dets[r]
            best = float(pair.ious[r].max()) if pair.ious.shape[1] else 0.0
            fps.append({"kind": "false positive", "image_id": d["image_id"], "category_id": pair.category_id,
                        "prompt": prompt_of.get(pair.category_id, ""), "score": float(d["score"]),
                        "bbox": [float(v) for v in d["bbox"]], "best_iou": best,
                        "segmentation": d.get("segmentation")})
        for col in lone_gt:
            g = pair.gts[col]
            column = pair.ious[:, col] if pair.ious.shape[0] else np.zeros(0)
            near = [float(pair.scores[r]) for r in range(len(column)) if column[r] >= MATCH_IOU]
            misses.append({"kind": "miss", "image_id": g["image_id"], "category_id": pair.category_id,
                           "prompt": prompt_of.get(pair.category_id, ""), "area": float(g["area"]),
                           "bbox": [float(v) for v in g["bbox"]],
                           "best_iou": float(column[:n_dt].max()) if n_dt else 0.0,
                           # the best score of a detection that did find it, below the threshold
                           "score": max(near) if near else None, "segmentation": g.get("segmentation")})
    fps.sort(key=lambda f: -f["score"])
    misses.sort(key=lambda m: -m["area"])
    return dict(counts), fps[:size], misses[:size]


def frequency_breakdown(per_category: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Rare / common / frequent (LVIS) from per-category rows with ``images``, ``AP_segm``/``AP_bbox`` and ``tp``/``fn``."""
    out: dict[str, dict[str, Any]] = {}
    for label, lo, hi in FREQUENCY_BUCKETS:
        rows = [r for r in per_category if r["images"] >= lo and (hi is None or r["images"] <= hi)]
        aps = [r["AP"] for r in rows if r.get("AP") is not None]
        tp, fn = sum(r.get("tp", 0) for r in rows), sum(r.get("fn", 0) for r in rows)
        out[label] = {"images_with_instances": [lo, hi], "categories": len(rows),
                      "instances": sum(r["instances"] for r in rows), "AP": float(np.mean(aps)) if aps else None,
                      "recall@50": tp / (tp + fn) if tp + fn else None}
    return out


def hardest_prompts(per_category: Sequence[dict[str, Any]], n: int = 10) -> list[dict[str, Any]]:
    """The ``n`` prompts with instances that score worst: by AP, else by F1@50 at the threshold (lowest first)."""
    def key(r: dict[str, Any]) -> tuple[float, float, str]:
        ap = r.get("AP")
        f1 = r.get("F1@50")
        return (ap if ap is not None else 2.0, f1 if f1 is not None else 2.0, r["name"])

    rows = [r for r in per_category if r["instances"] > 0]
    return [{k: r.get(k) for k in ("id", "name", "prompt", "instances", "AP", "recall@50", "precision@50", "F1@50",
                                  "tp", "fp", "fn")} for r in sorted(rows, key=key)[:n]]
