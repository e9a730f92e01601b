"""Video metrics: HOTA (DetA, AssA), IDF1, MOTA and ID switches through trackeval, and video mask AP.

- **Sequences.** Each (video, prompt) pair asked is one trackeval sequence: its ground-truth tracks
  (non-crowd) against the predicted tracks of that prompt whose score is >= the detection threshold,
  compared frame by frame by mask IoU (pycocotools' ``mask.iou``). trackeval's `HOTA`, `Identity`
  (IDF1) and `CLEAR` (MOTA, IDSW) run ``eval_sequence`` on each; per prompt the sequences are combined
  with ``combine_sequences``, overall with ``combine_classes_det_averaged`` (every detection weighs
  the same; the class-averaged values are reported too). HOTA, DetA and AssA are the means over
  trackeval's localisation thresholds alpha = 0.05 ... 0.95; IDF1 and MOTA match at IoU 0.5.
- **Video mask AP** (YouTube-VIS style): pycocotools' `COCOeval` with each video as an image and each
  track as one detection, its IoU replaced by the spatio-temporal mask IoU (the pixels both tracks
  cover over all frames over the pixels either covers); every predicted track counts, scored by its
  score. Our own code only computes that IoU matrix; matching, interpolation and averaging are
  pycocotools'. A track's area (for the size buckets) is its mean area over the frames it is present in.

trackeval prints its configuration when its metrics are built; that is silenced here.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sam3studio.evaluation.breakdown import size_breakdown
from sam3studio.evaluation.data import EvalDataError
from sam3studio.evaluation.metrics import _jsonable
from sam3studio.evaluation.video_data import VideoDataset, VideoPredictions

# --no-deps: trackeval requires opencv-python, which would overwrite our opencv-python-headless (docs/eval.md).
TRACKEVAL_INSTALL = "pip install --no-deps 'trackeval>=1.3,<2' (make install does this)"

__all__ = ["VideoReport", "evaluate_video", "spatio_temporal_iou", "track_metrics", "trackeval_sequence"]

_HOTA_KEYS = {"hota": "HOTA", "deta": "DetA", "assa": "AssA", "detre": "DetRe", "detpr": "DetPr",
              "assre": "AssRe", "asspr": "AssPr", "loca": "LocA"}


@dataclass
class VideoReport:
    """What `evaluate_video` measured; ``to_dict()`` is report.json (None = not available)."""

    dataset: dict[str, Any]
    score_threshold: float
    video: dict[str, Any]
    latency: dict[str, Any] | None = None
    memory: dict[str, Any] | None = None
    ignored_tracks: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    def save_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
        return path


# ---------------------------------------------------------------------------- trackeval
def _metrics() -> tuple[Any, Any, Any]:
    try:
        import trackeval
    except ImportError:  # an optional extra: say how to get it
        raise EvalDataError(f"video metrics need trackeval: {TRACKEVAL_INSTALL}") from None
    with contextlib.redirect_stdout(io.StringIO()):  # each metric prints its config when built
        return (trackeval.metrics.HOTA(), trackeval.metrics.Identity({"PRINT_CONFIG": False}),
                trackeval.metrics.CLEAR({"PRINT_CONFIG": False}))


def _encoded(rle: dict[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    return {"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def trackeval_sequence(gt_tracks: Sequence[Sequence[Any]], pred_tracks: Sequence[Sequence[Any]], length: int) -> dict:
    """trackeval's per-sequence input from per-frame RLE lists (None where a track is absent).

    Ids are the positions in ``gt_tracks`` / ``pred_tracks``; ``similarity_scores[t]`` is the mask IoU
    of the ground truth present at frame t (rows) against the predictions present (columns).
    """
    from pycocotools import mask as mask_utils

    data: dict[str, Any] = {"num_timesteps": length, "num_gt_ids": len(gt_tracks), "num_tracker_ids": len(pred_tracks),
                            "gt_ids": [], "tracker_ids": [], "similarity_scores": []}
    n_gt = n_dt = 0
    for t in range(length):
        g = [i for i, tr in enumerate(gt_tracks) if tr[t] is not None]
        d = [j for j, tr in enumerate(pred_tracks) if tr[t] is not None]
        if g and d:
            ious = mask_utils.iou([_encoded(pred_tracks[j][t]) for j in d], [_encoded(gt_tracks[i][t]) for i in g],
                                  [0] * len(g))
            sim = np.asarray(ious, dtype=float).reshape(len(d), len(g)).T
        else:
            sim = np.zeros((len(g), len(d)))
        data["gt_ids"].append(np.array(g, dtype=int))
        data["tracker_ids"].append(np.array(d, dtype=int))
        data["similarity_scores"].append(sim)
        n_gt += len(g)
        n_dt += len(d)
    data["num_gt_dets"], data["num_tracker_dets"] = n_gt, n_dt
    return data


def _summary(hota: dict, ident: dict, clear: dict) -> dict[str, Any]:
    out: dict[str, Any] = {k: float(np.mean(hota[v])) for k, v in _HOTA_KEYS.items()}
    out.update({"idf1": float(ident["IDF1"]), "idp": float(ident["IDP"]), "idr": float(ident["IDR"]),
                "mota": float(clear["MOTA"]), "motp": float(clear["MOTP"]), "id_switches": int(clear["IDSW"]),
                "fragmentations": int(clear["Frag"]), "mostly_tracked": int(clear["MT"]), "mostly_lost": int(clear["ML"]),
                "gt_dets": int(clear["CLR_TP"] + clear["CLR_FN"]), "pred_dets": int(clear["CLR_TP"] + clear["CLR_FP"])})
    return out


def track_metrics(sequences: dict[Any, dict[str, dict]], metrics: tuple | None = None) -> dict[str, Any] | None:
    """HOTA, IDF1, MOTA, ... over ``{category: {sequence: trackeval data}}``: per category and overall.

    Returns None when there is nothing to measure (no ground truth and no prediction anywhere).
    """
    hota_m, id_m, clear_m = metrics or _metrics()
    per_cat: dict[Any, tuple[dict, dict, dict]] = {}
    for cat, seqs in sequences.items():
        if not seqs or not any(d["num_gt_dets"] or d["num_tracker_dets"] for d in seqs.values()):
            continue
        res = [{k: m.eval_sequence(d) for k, d in seqs.items()} for m in (hota_m, id_m, clear_m)]
        per_cat[cat] = (hota_m.combine_sequences(res[0]), id_m.combine_sequences(res[1]), clear_m.combine_sequences(res[2]))
    if not per_cat:
        return None
    by_metric = [{c: r[i] for c, r in per_cat.items()} for i in range(3)]
    overall = _summary(*(m.combine_classes_det_averaged(by_metric[i]) for i, m in enumerate((hota_m, id_m, clear_m))))
    cls_av = [m.combine_classes_class_averaged(by_metric[i], ignore_empty_classes=True)
              for i, m in enumerate((hota_m, id_m, clear_m))]
    overall["class_averaged"] = {"hota": float(np.mean(cls_av[0]["HOTA"])), "deta": float(np.mean(cls_av[0]["DetA"])),
                                 "assa": float(np.mean(cls_av[0]["AssA"])), "idf1": float(cls_av[1]["IDF1"]),
                                 "mota": float(cls_av[2]["MOTA"])}
    overall["per_category"] = {c: _summary(*r) for c, r in per_cat.items()}
    return overall


# ---------------------------------------------------------------------------- video mask AP
def _frame_areas(tracks: Sequence[Sequence[Any]], length: int) -> np.ndarray:
    from pycocotools import mask as mask_utils

    areas = np.zeros((len(tracks), length))
    for i, tr in enumerate(tracks):
        present = [t for t in range(length) if tr[t] is not None]
        if present:
            areas[i, present] = mask_utils.area([_encoded(tr[t]) for t in present])
    return areas


def spatio_temporal_iou(pred_tracks: Sequence[Sequence[Any]], gt_tracks: Sequence[Sequence[Any]], length: int,
                        iscrowd: Sequence[int] | None = None) -> np.ndarray:
    """(n_pred, n_gt): pixels both tracks cover summed over frames / pixels either covers summed over frames.

    Against a crowd track (``iscrowd``) the denominator is the prediction's own pixels, as COCO does.
    """
    from pycocotools import mask as mask_utils

    n_d, n_g = len(pred_tracks), len(gt_tracks)
    if not n_d or not n_g:
        return np.zeros((n_d, n_g))
    a_d, a_g = _frame_areas(pred_tracks, length), _frame_areas(gt_tracks, length)
    inter = np.zeros((n_d, n_g))
    for t in range(length):
        d = [j for j in range(n_d) if pred_tracks[j][t] is not None]
        g = [i for i in range(n_g) if gt_tracks[i][t] is not None]
        if not d or not g:
            continue
        iou = np.asarray(mask_utils.iou([_encoded(pred_tracks[j][t]) for j in d],
                                        [_encoded(gt_tracks[i][t]) for i in g], [0] * len(g))).reshape(len(d), len(g))
        sums = a_d[d, t][:, None] + a_g[g, t][None, :]
        inter[np.ix_(d, g)] += iou * sums / (1.0 + iou)  # |A∩B| from IoU and the two areas
    union = a_d.sum(1)[:, None] + a_g.sum(1)[None, :] - inter
    if iscrowd is not None and any(iscrowd):
        crowd = np.asarray(iscrowd, dtype=bool)
        union[:, crowd] = a_d.sum(1)[:, None].repeat(int(crowd.sum()), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(union > 0, inter / union, 0.0)
    return np.clip(out, 0.0, 1.0)


def _mean_area(segs: Sequence[Any]) -> float:
    from pycocotools import mask as mask_utils

    present = [_encoded(s) for s in segs if s is not None]
    return float(np.mean(mask_utils.area(present))) if present else 0.0


def video_ap(dataset: VideoDataset, tracks: Sequence[dict[str, Any]]) -> tuple[dict, dict, dict]:
    """(overall AP/AP50/AP75, per category id AP dicts, size buckets) with pycocotools' COCOeval."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    length = {v.id: v.length for v in dataset.videos}

    class _VideoEval(COCOeval):
        def computeIoU(self, imgId, catId):  # noqa: N802, N803 - pycocotools' names
            gts, dts = self._gts[imgId, catId], self._dts[imgId, catId]
            if not gts or not dts:
                return []
            order = np.argsort([-d["score"] for d in dts], kind="mergesort")[: self.params.maxDets[-1]]
            dts = [dts[i] for i in order]  # the order COCOeval.evaluateImg reads the rows in
            return spatio_temporal_iou([d["segmentations"] for d in dts], [g["segmentations"] for g in gts],
                                       length[imgId], [g["iscrowd"] for g in gts])

    def coco(anns: list[dict[str, Any]]) -> Any:
        c = COCO()
        c.dataset = {"images": [{"id": v.id, "width": v.width, "height": v.height} for v in dataset.videos],
                     "categories": [{"id": k.id, "name": k.name} for k in dataset.categories], "annotations": anns}
        c.createIndex()
        return c

    gt = [{"id": k + 1, "image_id": t["video_id"], "category_id": t["category_id"], "iscrowd": t["iscrowd"],
           "area": _mean_area(t["segmentations"]), "bbox": [0, 0, 0, 0], "segmentations": t["segmentations"]}
          for k, t in enumerate(dataset.tracks)]
    dt = [{"id": k + 1, "image_id": t["video_id"], "category_id": t["category_id"], "iscrowd": 0, "score": t["score"],
           "area": _mean_area(t["segmentations"]), "bbox": [0, 0, 0, 0], "segmentations": t["segmentations"]}
          for k, t in enumerate(tracks)]
    with contextlib.redirect_stdout(io.StringIO()):
        ev = _VideoEval(coco(gt), coco(dt), "bbox")  # "bbox" only so that pycocotools converts no masks itself
        ev.evaluate()
        ev.accumulate()
    p = ev.params
    a, m = p.areaRngLbl.index("all"), len(p.maxDets) - 1
    prec = ev.eval["precision"][:, :, :, a, m]
    thr = np.asarray(p.iouThrs)
    t50, t75 = int(np.argmin(np.abs(thr - 0.5))), int(np.argmin(np.abs(thr - 0.75)))

    def summary(x: np.ndarray) -> dict[str, float | None]:
        vals = {"AP": x, "AP50": x[t50], "AP75": x[t75]}
        return {k: (float(v[v > -1].mean()) if (v > -1).any() else None) for k, v in vals.items()}

    return summary(prec), {cid: summary(prec[:, :, k]) for k, cid in enumerate(p.catIds)}, size_breakdown(ev)


# ---------------------------------------------------------------------------- evaluate
def _usable_tracks(dataset: VideoDataset, preds: VideoPredictions) -> tuple[list[dict[str, Any]], int]:
    asked = set(dataset.pairs())
    kept = [t for t in preds.tracks if (t["video_id"], t["category_id"]) in asked]
    return kept, len(preds.tracks) - len(kept)


def _latency(values: Sequence[float]) -> dict[str, Any] | None:
    if not values:
        return None
    arr = np.asarray(values, dtype=float)
    return {"frames": len(arr), "mean_s": float(arr.mean()), "p50_s": float(np.percentile(arr, 50)),
            "p90_s": float(np.percentile(arr, 90)), "p99_s": float(np.percentile(arr, 99))}


def _sequences(dataset: VideoDataset, tracks: Sequence[dict[str, Any]], threshold: float) -> dict[int, dict]:
    gt_by: dict[tuple[int, int], list] = defaultdict(list)
    pred_by: dict[tuple[int, int], list] = defaultdict(list)
    for t in dataset.tracks:
        if not t["iscrowd"]:
            gt_by[(t["video_id"], t["category_id"])].append(t["segmentations"])
    for t in tracks:
        if t["score"] >= threshold:
            pred_by[(t["video_id"], t["category_id"])].append(t["segmentations"])
    seqs: dict[int, dict] = defaultdict(dict)
    for vid, cid in dataset.pairs():
        seqs[cid][vid] = trackeval_sequence(gt_by[(vid, cid)], pred_by[(vid, cid)], dataset.video(vid).length)
    return seqs


def evaluate_video(dataset: VideoDataset, predictions: VideoPredictions, *, score_threshold: float = 0.5) -> VideoReport:
    """Measure predicted tracks against ``dataset``: the tracking metrics on tracks scoring >= ``score_threshold``,
    video mask AP on all of them, per prompt and overall. Tracks on pairs not asked are ignored and counted."""
    if not 0 < score_threshold <= 1:
        raise EvalDataError(f"score threshold must be in (0, 1], got {score_threshold}")
    tracks, ignored = _usable_tracks(dataset, predictions)
    tm = track_metrics(_sequences(dataset, tracks, score_threshold))
    ap, ap_per_cat, by_size = video_ap(dataset, tracks)
    keys = ("hota", "deta", "assa", "idf1", "mota", "id_switches")
    video: dict[str, Any] = {k: (tm[k] if tm else None) for k in keys}
    video.update({"mask_ap": ap["AP"], "mask_ap50": ap["AP50"], "mask_ap75": ap["AP75"]})
    if tm:
        video.update({k: v for k, v in tm.items() if k not in keys and k != "per_category"})
    gt_count: dict[int, int] = defaultdict(int)
    videos_of: dict[int, set[int]] = defaultdict(set)
    for t in dataset.tracks:
        gt_count[t["category_id"]] += 1
        videos_of[t["category_id"]].add(t["video_id"])
    pred_count: dict[int, int] = defaultdict(int)
    for t in tracks:
        pred_count[t["category_id"]] += int(t["score"] >= score_threshold)
    per_prompt = []
    for c in dataset.categories:
        row = {"id": c.id, "name": c.name, "prompt": c.prompt, "gt_tracks": gt_count[c.id],
               "videos": len(videos_of[c.id]), "pred_tracks": pred_count[c.id]}
        row.update({k: v for k, v in ((tm or {}).get("per_category", {}).get(c.id) or dict.fromkeys(keys)).items()})
        cat_ap = ap_per_cat.get(c.id) or {}
        row.update({"mask_ap": cat_ap.get("AP"), "mask_ap50": cat_ap.get("AP50")})
        per_prompt.append(row)
    video["per_prompt"] = per_prompt
    video["by_size"] = by_size
    video["hardest_prompts"] = [r["prompt"] for r in sorted(
        (r for r in per_prompt if r["gt_tracks"]), key=lambda r: (r["hota"] if r["hota"] is not None else 2.0, r["name"]))][:10]
    mem = predictions.meta.get("memory")
    return VideoReport(dataset=dataset.summary(), score_threshold=score_threshold, video=video,
                       latency=_latency(predictions.frame_latency_s), memory=mem if isinstance(mem, dict) else None,
                       ignored_tracks=ignored)
