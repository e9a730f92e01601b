"""Metrics: COCO AP through pycocotools, presence P/R/F1, SA-Co's cgF1, a threshold sweep, latency.

Definitions (see docs/eval.md for the citations):

- **AP, AP50, AP75** (mask and box): pycocotools' ``COCOeval`` with its defaults (IoU 0.50:0.95,
  101 recall points, area "all", at most 100 detections per image and category). COCO ground truth
  is evaluated per category; SA-Co ground truth class-agnostically with each (image, noun phrase)
  pair as one COCOeval image, as SA-Co's own evaluator does.
- **Presence** of an (image, prompt) pair: *predicted* when at least one detection of that prompt
  on that image scores >= the threshold (what `Segmenter.segment` returns as ``count > 0``),
  *true* when the image has at least one non-crowd instance of it. Precision, recall and F1 per
  prompt and micro-averaged over all pairs. ``presence_head`` does the same with SAM 3's presence
  score >= 0.5 when the predictions carry it.
- **cgF1** (SAM 3 paper): ``pmF1 x IL_MCC``. Per pair, detections >= threshold are matched one to
  one to non-crowd ground truth by the Hungarian algorithm on IoU (scipy's ``linear_sum_assignment``,
  maximising total IoU); a match counts at IoU threshold t when its IoU >= t. pmF1 is the micro F1
  over pairs with ground truth; IL_MCC is the Matthews correlation of the image-level decision
  (predicted present vs has instances) over all pairs. Averaged over t in 0.50:0.05:0.95 and
  reported at 0.50 and 0.75.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sam3studio.evaluation.breakdown import failures, frequency_breakdown, hardest_prompts, size_breakdown
from sam3studio.evaluation.data import EvalDataError, EvalDataset
from sam3studio.evaluation.predictions import Predictions

__all__ = ["DEFAULT_SWEEP", "IOU_THRESHOLDS", "EvalReport", "binary_stats", "evaluate"]

IOU_THRESHOLDS = np.round(np.linspace(0.5, 0.95, 10), 2)  # COCO's and SA-Co's 0.50:0.05:0.95
DEFAULT_SWEEP = tuple(float(t) for t in np.round(np.arange(0.05, 0.951, 0.05), 2))
PRESENCE_HEAD_THRESHOLD = 0.5


# ---------------------------------------------------------------------------- report
@dataclass
class EvalReport:
    """Everything `evaluate` measured; ``to_dict()`` is the JSON report (None = not available)."""

    dataset: dict[str, Any]
    score_threshold: float
    iou_type: str  # what cgF1 and the sweep match on: "segm" or "bbox"
    ap: dict[str, dict[str, float | None] | None]
    per_category: list[dict[str, Any]]
    presence: dict[str, Any]
    presence_head: dict[str, Any] | None
    cgf1: dict[str, Any]
    sweep: list[dict[str, Any]]
    recommended_threshold: float | None
    latency: dict[str, float] | None
    pr_curves: dict[str, Any] = field(default_factory=dict)
    ignored_detections: int = 0
    # where it fails (see breakdown.py): by_size, by_frequency, hardest_prompts; failures: the gallery's
    # false_positives and misses (with their RLE masks); memory: the predicting process's peak
    breakdown: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    memory: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")
        return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return None if math.isnan(v) else round(v, 6)
    if isinstance(value, np.integer):
        return int(value)
    return value


# ---------------------------------------------------------------------------- small helpers
def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def binary_stats(tp: int, fp: int, fn: int, tn: int | None = None) -> dict[str, Any]:
    """Precision, recall, F1 (and MCC when ``tn`` is given) from counts.

    Undefined values (a zero denominator) are None, except MCC, which is 0 then (as in scikit-learn
    and SA-Co's evaluator). F1 is ``2 tp / (2 tp + fp + fn)``.
    """
    out: dict[str, Any] = {"tp": int(tp), "fp": int(fp), "fn": int(fn)}
    out["precision"] = _ratio(tp, tp + fp)
    out["recall"] = _ratio(tp, tp + fn)
    out["f1"] = _ratio(2 * tp, 2 * tp + fp + fn)
    if tn is not None:
        out["tn"] = int(tn)
        den = math.sqrt(float(tp + fp) * float(tp + fn) * float(tn + fp) * float(tn + fn))
        out["mcc"] = (float(tp) * tn - float(fp) * fn) / den if den else 0.0
    return out


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())


def _encoded(rle: dict[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    return {"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


# ---------------------------------------------------------------------------- COCO AP
def _coco_view(dataset: EvalDataset, dets: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Ground truth and detections as pycocotools sees them.

    COCO: unchanged. SA-Co: every (image, noun phrase) pair becomes one COCO image with a single
    category, so pycocotools never crosses noun phrases that were not asked together.
    """
    if dataset.format != "saco":
        return dataset.coco_dict(), dets
    pair_ids = {pair: k + 1 for k, pair in enumerate(dataset.pairs())}
    images = []
    for (image_id, _), k in pair_ids.items():
        im = dataset.image(image_id)
        images.append({"id": k, "file_name": im.file_name, "width": im.width, "height": im.height})
    anns = [dict(a, image_id=pair_ids[(a["image_id"], a["category_id"])], category_id=1)
            for a in dataset.annotations if (a["image_id"], a["category_id"]) in pair_ids]
    gt = {"images": images, "categories": [{"id": 1, "name": "noun phrase"}], "annotations": anns}
    return gt, [dict(d, image_id=pair_ids[(d["image_id"], d["category_id"])], category_id=1) for d in dets]


def _run_cocoeval(gt_dict: dict[str, Any], dets: list[dict[str, Any]], iou_type: str):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with _quiet():
        gt = COCO()
        gt.dataset = copy.deepcopy(gt_dict)
        gt.createIndex()
        if dets:
            dt = gt.loadRes(copy.deepcopy(dets))  # loadRes writes into the dicts it gets
        else:
            dt = COCO()
            dt.dataset = {"images": gt_dict["images"], "categories": gt_dict["categories"], "annotations": []}
            dt.createIndex()
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
    return ev


def _mean_valid(p: np.ndarray) -> float | None:
    valid = p[p > -1]
    return float(valid.mean()) if valid.size else None


def _ap_summary(prec: np.ndarray, iou_thrs: np.ndarray) -> dict[str, float | None]:
    """AP / AP50 / AP75 from a COCOeval precision slice ``(T, R, ...)`` (area all, maxDets 100)."""
    t50 = int(np.argmin(np.abs(iou_thrs - 0.5)))
    t75 = int(np.argmin(np.abs(iou_thrs - 0.75)))
    return {"AP": _mean_valid(prec), "AP50": _mean_valid(prec[t50]), "AP75": _mean_valid(prec[t75])}


def _coco_ap(dataset: EvalDataset, dets: list[dict[str, Any]], iou_type: str) -> tuple[dict, dict, dict, Any]:
    """(overall AP dict, per category id AP dicts, PR curves at IoU 0.5, the COCOeval) for one IoU type."""
    if iou_type == "segm":
        dets = [{k: v for k, v in d.items() if k not in ("bbox", "area")} for d in dets]
    else:
        dets = [{k: v for k, v in d.items() if k not in ("segmentation", "area")} for d in dets]
    gt_dict, dets = _coco_view(dataset, dets)
    ev = _run_cocoeval(gt_dict, dets, iou_type)
    p = ev.params
    a = p.areaRngLbl.index("all")
    m = p.maxDets.index(100) if 100 in p.maxDets else len(p.maxDets) - 1
    prec = ev.eval["precision"][:, :, :, a, m]  # (T, R, K)
    overall = _ap_summary(prec, np.asarray(p.iouThrs))
    per_cat: dict[int, dict[str, float | None]] = {}
    curves: dict[int, list[float]] = {}
    t50 = int(np.argmin(np.abs(np.asarray(p.iouThrs) - 0.5)))
    for k, cat_id in enumerate(p.catIds):
        per_cat[cat_id] = _ap_summary(prec[:, :, k], np.asarray(p.iouThrs))
        if (prec[t50, :, k] > -1).any():
            curves[cat_id] = [float(v) for v in prec[t50, :, k]]
    return overall, per_cat, {"recall": [float(r) for r in p.recThrs], "precision": curves}, ev


# ---------------------------------------------------------------------------- matching (cgF1, sweep)
@dataclass
class _Pair:
    category_id: int
    n_gt: int
    scores: np.ndarray  # descending
    ious: np.ndarray  # (n_dt, n_gt), rows in score order
    exhaustive: bool
    dets: list[dict[str, Any]] = field(default_factory=list)  # in score order, as the rows of ious
    gts: list[dict[str, Any]] = field(default_factory=list)  # as the columns of ious


def _build_pairs(dataset: EvalDataset, dets_by_pair: dict, iou_type: str) -> list[_Pair]:
    from pycocotools import mask as mask_utils

    gt_by_pair: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for a in dataset.annotations:
        if not a.get("iscrowd", 0):
            gt_by_pair[(a["image_id"], a["category_id"])].append(a)
    out = []
    for pair in dataset.pairs():
        gts = gt_by_pair.get(pair, [])
        dts = sorted(dets_by_pair.get(pair, []), key=lambda d: -d["score"])
        scores = np.array([d["score"] for d in dts], dtype=np.float64)
        if gts and dts:
            if iou_type == "segm":
                g = [_encoded(a["segmentation"]) for a in gts]
                d = [_encoded(x["segmentation"]) for x in dts]
            else:
                g = [a["bbox"] for a in gts]
                d = [x["bbox"] for x in dts]
            ious = np.asarray(mask_utils.iou(d, g, [0] * len(g)), dtype=np.float64).reshape(len(dts), len(gts))
        else:
            ious = np.zeros((len(dts), len(gts)))
        out.append(_Pair(pair[1], len(gts), scores, ious, pair not in dataset.non_exhaustive, dts, gts))
    return out


def _instance_counts(pairs: Sequence[_Pair], threshold: float) -> dict[str, Any]:
    """Counts at one detection threshold: per-IoU TP/FP/FN (all pairs and positive pairs only)
    and the image-level confusion matrix, over exhaustively annotated pairs."""
    from scipy.optimize import linear_sum_assignment

    n_t = len(IOU_THRESHOLDS)
    tp, fp, fn = np.zeros(n_t, np.int64), np.zeros(n_t, np.int64), np.zeros(n_t, np.int64)
    pos_fp = np.zeros(n_t, np.int64)
    il = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    for pair in pairs:
        if not pair.exhaustive:
            continue
        n_dt = int(np.count_nonzero(pair.scores >= threshold))
        if pair.n_gt and n_dt:
            sub = pair.ious[:n_dt]
            rows, cols = linear_sum_assignment(sub, maximize=True)
            matched = sub[rows, cols]
            hits = (matched[None, :] >= IOU_THRESHOLDS[:, None] - 1e-12).sum(axis=1)
        else:
            hits = np.zeros(n_t, np.int64)
        tp += hits
        fp += n_dt - hits
        fn += pair.n_gt - hits
        if pair.n_gt:
            pos_fp += n_dt - hits
        key = ("tp" if n_dt else "fn") if pair.n_gt else ("fp" if n_dt else "tn")
        il[key] += 1
    return {"tp": tp, "fp": fp, "fn": fn, "pos_fp": pos_fp, "il": il}


def _cgf1_at(pairs: Sequence[_Pair], threshold: float) -> dict[str, Any]:
    c = _instance_counts(pairs, threshold)
    il = binary_stats(c["il"]["tp"], c["il"]["fp"], c["il"]["fn"], c["il"]["tn"])
    pm = [_ratio(2 * t, 2 * t + f + n) for t, f, n in zip(c["tp"], c["pos_fp"], c["fn"], strict=True)]
    f1 = [_ratio(2 * t, 2 * t + f + n) for t, f, n in zip(c["tp"], c["fp"], c["fn"], strict=True)]
    has_pos = (il["tp"] + il["fn"]) > 0
    pm_arr = np.array([v if v is not None else 0.0 for v in pm]) if has_pos else None
    cg = pm_arr * il["mcc"] if pm_arr is not None else None
    i75 = int(np.argmin(np.abs(IOU_THRESHOLDS - 0.75)))
    at50 = binary_stats(int(c["tp"][0]), int(c["fp"][0]), int(c["fn"][0]))
    return {
        "threshold": threshold,
        "cgF1": float(cg.mean()) if cg is not None else None,
        "cgF1@50": float(cg[0]) if cg is not None else None,
        "cgF1@75": float(cg[i75]) if cg is not None else None,
        "pmF1": float(pm_arr.mean()) if pm_arr is not None else None,
        "pmF1@50": float(pm_arr[0]) if pm_arr is not None else None,
        "pmF1@75": float(pm_arr[i75]) if pm_arr is not None else None,
        "IL_MCC": il["mcc"],
        "IL_precision": il["precision"],
        "IL_recall": il["recall"],
        "IL_F1": il["f1"],
        "IL_counts": {k: il[k] for k in ("tp", "fp", "fn", "tn")},
        "F1@50": f1[0],
        "precision@50": at50["precision"],
        "recall@50": at50["recall"],
        "counts@50": {"tp": at50["tp"], "fp": at50["fp"], "fn": at50["fn"]},
    }


def _recommend(sweep: Sequence[dict[str, Any]]) -> float | None:
    """The threshold with the best cgF1 (F1@50 when cgF1 is undefined); ties go to the lower threshold."""
    for key in ("cgF1", "F1@50"):
        scored = [(row[key], row["threshold"]) for row in sweep if row[key] is not None]
        if scored:
            best = max(v for v, _ in scored)
            return min(t for v, t in scored if v >= best - 1e-12)
    return None


# ---------------------------------------------------------------------------- presence
def _presence(dataset: EvalDataset, score_of: dict[tuple[int, int], float], threshold: float) -> tuple[dict, dict]:
    """Micro stats over all pairs and per category id; ``score_of`` holds each pair's decision score."""
    positives = dataset.positive_pairs()
    per: dict[int, dict[str, int]] = defaultdict(lambda: {"tp": 0, "fp": 0, "fn": 0, "tn": 0})
    for pair in dataset.pairs():
        pred = score_of.get(pair, -1.0) >= threshold
        true = pair in positives
        per[pair[1]]["tp" if pred and true else "fp" if pred else "fn" if true else "tn"] += 1
    total = {k: sum(c[k] for c in per.values()) for k in ("tp", "fp", "fn", "tn")}
    overall = binary_stats(total["tp"], total["fp"], total["fn"], total["tn"])
    return overall, {cat: binary_stats(c["tp"], c["fp"], c["fn"], c["tn"]) for cat, c in per.items()}


def _latency(pred: Predictions, dataset: EvalDataset) -> dict[str, float] | None:
    values = [pred.latency_s[im.id] for im in dataset.images if im.id in pred.latency_s]
    if not values:
        return None
    arr = np.asarray(values, dtype=np.float64)
    return {"images": len(values), "mean_s": float(arr.mean()), "p50_s": float(np.percentile(arr, 50)),
            "p90_s": float(np.percentile(arr, 90)), "p99_s": float(np.percentile(arr, 99))}


# ---------------------------------------------------------------------------- evaluate
def _usable_detections(dataset: EvalDataset, pred: Predictions) -> tuple[list[dict[str, Any]], int]:
    """Detections on pairs that were asked; checks RLE sizes against the images."""
    asked = set(dataset.pairs())
    out, ignored = [], 0
    for i, d in enumerate(pred.detections):
        if (d["image_id"], d["category_id"]) not in asked:
            ignored += 1
            continue
        segm = d.get("segmentation")
        im = dataset.image(d["image_id"])
        if segm is not None and [int(v) for v in segm["size"]] != [im.height, im.width]:
            raise EvalDataError(f"detections[{i}]: mask size {segm['size'][1]}x{segm['size'][0]} (w x h) differs "
                                f"from image {d['image_id']} ({im.width}x{im.height})")
        out.append(d)
    return out, ignored


def _per_category(dataset: EvalDataset, per_cat_ap: dict, presence_per_cat: dict, iou_type: str,
                  counts: dict[int, dict[str, int]]) -> list[dict[str, Any]]:
    """One row per category: instances, images with instances, AP (COCO only), presence, and the
    instance TP/FP/FN, precision, recall and F1 at IoU 0.5 at the detection threshold."""
    n_gt: dict[int, int] = defaultdict(int)
    n_img: dict[int, set[int]] = defaultdict(set)
    for a in dataset.annotations:
        n_gt[a["category_id"]] += 1
        n_img[a["category_id"]].add(a["image_id"])
    rows = []
    for c in dataset.categories:
        row: dict[str, Any] = {"id": c.id, "name": c.name, "prompt": c.prompt, "instances": n_gt[c.id],
                               "images": len(n_img[c.id])}
        for kind in ("segm", "bbox"):
            vals = per_cat_ap[kind].get(c.id) if dataset.format == "coco" else None
            for metric in ("AP", "AP50", "AP75"):
                row[f"{metric}_{kind}"] = vals[metric] if vals else None
        row["AP"] = row[f"AP_{iou_type}"]
        row["presence"] = presence_per_cat.get(c.id)
        stats = binary_stats(**counts.get(c.id, {"tp": 0, "fp": 0, "fn": 0}))
        row.update({"tp": stats["tp"], "fp": stats["fp"], "fn": stats["fn"], "precision@50": stats["precision"],
                    "recall@50": stats["recall"], "F1@50": stats["f1"]})
        rows.append(row)
    return rows


def evaluate(
    dataset: EvalDataset,
    predictions: Predictions,
    *,
    score_threshold: float = 0.5,
    thresholds: Sequence[float] = DEFAULT_SWEEP,
) -> EvalReport:
    """Measure ``predictions`` against ``dataset``.

    ``score_threshold`` is the detection threshold for the headline presence and cgF1 numbers;
    ``thresholds`` are swept for F1@50 and cgF1 and the best cgF1 is recommended (ties: lower).
    AP uses every detection regardless of threshold. Detections on pairs that were not asked
    (other images, or noun phrases not listed for an image) are ignored and counted.
    The breakdown (size, frequency, hardest prompts) and the failures are described in breakdown.py.
    """
    if not 0 < score_threshold <= 1:
        raise EvalDataError(f"score threshold must be in (0, 1], got {score_threshold}")
    thresholds = sorted({round(float(t), 6) for t in thresholds})
    if not thresholds or not all(0 < t <= 1 for t in thresholds):
        raise EvalDataError("sweep thresholds must lie in (0, 1]")
    dets, ignored = _usable_detections(dataset, predictions)
    masks_available = dataset.has_masks and all("segmentation" in d for d in dets)
    iou_type = "segm" if masks_available else "bbox"

    ap: dict[str, dict[str, float | None] | None] = {"segm": None, "bbox": None}
    per_cat_ap: dict[str, dict[int, dict[str, float | None]]] = {"segm": {}, "bbox": {}}
    curves: dict[str, Any] = {}
    by_size: dict[str, Any] = {}
    for kind in ("segm", "bbox"):
        if kind == "segm" and not masks_available:
            continue
        ap[kind], per_cat_ap[kind], kind_curves, ev = _coco_ap(dataset, dets, kind)
        if kind == iou_type:
            curves, by_size = kind_curves, size_breakdown(ev)

    dets_by_pair: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    max_score: dict[tuple[int, int], float] = {}
    for d in dets:
        key = (d["image_id"], d["category_id"])
        dets_by_pair[key].append(d)
        max_score[key] = max(max_score.get(key, -1.0), float(d["score"]))
    pairs = _build_pairs(dataset, dets_by_pair, iou_type)
    headline = _cgf1_at(pairs, score_threshold)
    sweep = [_cgf1_at(pairs, t) for t in thresholds]

    presence, presence_per_cat = _presence(dataset, max_score, score_threshold)
    presence_head = None
    if predictions.presence:
        head_scores = {(p["image_id"], p["category_id"]): float(p["score"]) for p in predictions.presence}
        presence_head, _ = _presence(dataset, head_scores, PRESENCE_HEAD_THRESHOLD)
        presence_head["threshold"] = PRESENCE_HEAD_THRESHOLD

    counts, worst_fps, worst_misses = failures(pairs, score_threshold, {c.id: c.prompt for c in dataset.categories})
    per_category = _per_category(dataset, per_cat_ap, presence_per_cat, iou_type, counts)

    names = {c.id: c.name for c in dataset.categories}
    pr_curves: dict[str, Any] = {}
    if curves:
        label = (lambda cid: names[cid]) if dataset.format == "coco" else (lambda cid: "all noun phrases")
        pr_curves = {"iou_type": iou_type, "iou": 0.5, "recall": curves["recall"],
                     "precision": {label(cid): v for cid, v in curves["precision"].items()}}

    return EvalReport(
        dataset=dataset.summary(),
        score_threshold=score_threshold,
        iou_type=iou_type,
        ap=ap,
        per_category=per_category,
        presence=dict(presence, threshold=score_threshold),
        presence_head=presence_head,
        cgf1=headline,
        sweep=sweep,
        recommended_threshold=_recommend(sweep),
        latency=_latency(predictions, dataset),
        pr_curves=pr_curves,
        ignored_detections=ignored,
        breakdown={"by_size": by_size, "by_frequency": frequency_breakdown(per_category),
                   "hardest_prompts": hardest_prompts(per_category)},
        failures={"false_positives": worst_fps, "misses": worst_misses},
        memory=predictions.meta.get("memory") if isinstance(predictions.meta.get("memory"), dict) else None,
    )
