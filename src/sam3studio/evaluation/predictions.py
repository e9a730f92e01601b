"""Predictions for evaluation: run a `Segmenter` over a dataset, or read/write a predictions file.

A predictions file is one JSON object::

    {"format": "sam3studio-eval-predictions", "version": 1, "meta": {...},
     "detections": [COCO results: image_id, category_id, segmentation (RLE), bbox (XYWH), score, area],
     "presence":   [{"image_id", "category_id", "score"}],   # SAM 3's presence score per pair asked
     "latency_s":  {"<image_id>": seconds}}

A plain COCO results list (``[{"image_id", "category_id", "segmentation"|"bbox", "score"}, ...]``) is
also accepted; it has no presence scores and no latencies. Image and category ids are those of the
`EvalDataset` (for SA-Co: the dataset's image and noun-phrase ids, not the SA-Co pair ids).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam3studio.evaluation.data import EvalDataError, EvalDataset, EvalImage, _read_json
from sam3studio.evaluation.resources import peak_memory
from sam3studio.io.files import atomic_write_json

if TYPE_CHECKING:
    from sam3studio.core import Segmenter

__all__ = ["PREDICTIONS_FORMAT", "Predictions", "pair_outcomes", "predict"]

PREDICTIONS_FORMAT = "sam3studio-eval-predictions"
DEFAULT_PREDICT_THRESHOLD = 0.05  # low, so that the threshold sweep has material
MAX_PER_PROMPT = 100  # COCO's maxDets


@dataclass
class Predictions:
    """COCO-results detections, per-pair presence scores and per-image latencies."""

    detections: list[dict[str, Any]]
    presence: list[dict[str, Any]] = field(default_factory=list)
    latency_s: dict[int, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PREDICTIONS_FORMAT,
            "version": 1,
            "meta": self.meta,
            "detections": self.detections,
            "presence": self.presence,
            "latency_s": {str(k): v for k, v in self.latency_s.items()},
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, self.to_dict(), indent=None)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Predictions:
        return cls.from_data(_read_json(path, "predictions file"), str(path))

    @classmethod
    def from_data(cls, data: Any, src: str = "predictions") -> Predictions:
        """Parse `to_dict` output or a plain COCO results list; raises `EvalDataError` when malformed."""
        if isinstance(data, list):
            data = {"detections": data}
        if not isinstance(data, dict) or not isinstance(data.get("detections"), list):
            raise EvalDataError(f"{src}: expected a COCO results list or an object with 'detections'")
        detections = [_check_detection(d, f"{src}: detections[{i}]") for i, d in enumerate(data["detections"])]
        presence = data.get("presence") or []
        if not isinstance(presence, list):
            raise EvalDataError(f"{src}: 'presence' must be a list")
        for i, p in enumerate(presence):
            where = f"{src}: presence[{i}]"
            if not isinstance(p, dict) or not {"image_id", "category_id", "score"} <= set(p):
                raise EvalDataError(f"{where} needs image_id, category_id and score")
            _check_score(p["score"], where)
        latency = data.get("latency_s") or {}
        try:
            latency_s = {int(k): float(v) for k, v in latency.items()}
        except (AttributeError, TypeError, ValueError):
            raise EvalDataError(f"{src}: 'latency_s' must map image ids to seconds") from None
        return cls(detections, list(presence), latency_s, dict(data.get("meta") or {}))


def _check_score(score: Any, where: str) -> None:
    if not isinstance(score, (int, float)) or isinstance(score, bool) or not 0 <= score <= 1:
        raise EvalDataError(f"{where}: 'score' must be a number in [0, 1], got {score!r}")


def _check_detection(d: Any, where: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise EvalDataError(f"{where} must be an object")
    for key in ("image_id", "category_id"):
        if not isinstance(d.get(key), int) or isinstance(d.get(key), bool):
            raise EvalDataError(f"{where}: '{key}' must be an integer")
    _check_score(d.get("score"), where)
    segm, bbox = d.get("segmentation"), d.get("bbox")
    if segm is not None and not (isinstance(segm, dict) and isinstance(segm.get("counts"), str)
                                 and isinstance(segm.get("size"), list) and len(segm["size"]) == 2):
        raise EvalDataError(f"{where}: 'segmentation' must be a compressed RLE {{'size': [h, w], 'counts': str}}")
    if bbox is not None and not (isinstance(bbox, list) and len(bbox) == 4
                                 and all(isinstance(v, (int, float)) for v in bbox)):
        raise EvalDataError(f"{where}: 'bbox' must be [x, y, w, h]")
    if segm is None and bbox is None:
        raise EvalDataError(f"{where} needs a 'segmentation' or a 'bbox'")
    if bbox is None:  # boxes are always available to the box metrics
        from pycocotools import mask as mask_utils

        coded = {"size": segm["size"], "counts": segm["counts"].encode("ascii")}
        d = dict(d, bbox=[float(v) for v in mask_utils.toBbox(coded)])
    return d


def predict(
    segmenter: Segmenter,
    dataset: EvalDataset,
    *,
    score_threshold: float = DEFAULT_PREDICT_THRESHOLD,
    mask_threshold: float = 0.5,
    max_per_prompt: int = MAX_PER_PROMPT,
    prompt_chunk: int = 8,
    on_image: Callable[[EvalImage], None] | None = None,
) -> Predictions:
    """Run ``segmenter`` on every image of ``dataset`` with the prompts asked on it.

    Each image gets its prompts in chunks of ``prompt_chunk`` (one `Segmenter.segment` call each,
    sharing the cached vision features); at most ``max_per_prompt`` instances are kept per prompt,
    highest scores first. Categories sharing a prompt share its instances. ``latency_s`` is the sum
    of the segmenter's own ``timings["total"]`` over an image's calls (model and post-processing,
    not reading the file). Raises `EvalDataError` for a missing image or one whose size differs from
    the annotations, and `InputError` for a prompt the model cannot read.
    """
    from sam3studio.io.images import load_image

    detections: list[dict[str, Any]] = []
    presence: list[dict[str, Any]] = []
    latency: dict[int, float] = {}
    for image in dataset.images:
        path = dataset.image_path(image)
        if not path.is_file():
            raise EvalDataError(f"image {path}: no such file (set the images folder with --images)")
        rgb = load_image(path)
        if rgb.shape[:2] != (image.height, image.width):
            raise EvalDataError(f"image {path} is {rgb.shape[1]}x{rgb.shape[0]} but the annotations say "
                                f"{image.width}x{image.height}")
        cats_of_prompt: dict[str, list[int]] = {}
        for cat_id in dataset.asked.get(image.id, []):
            cats_of_prompt.setdefault(dataset.category(cat_id).prompt, []).append(cat_id)
        prompts = list(cats_of_prompt)
        total = 0.0
        for start in range(0, len(prompts), prompt_chunk):
            chunk = prompts[start : start + prompt_chunk]
            seg = segmenter.segment(rgb, chunk, score_threshold=score_threshold, mask_threshold=mask_threshold,
                                    max_instances=max_per_prompt * len(chunk))
            total += float(seg.timings.get("total", 0.0))
            texts = [p.text for p in seg.prompts]
            if texts != chunk:  # pragma: no cover - prompts are normalised when the dataset loads
                raise EvalDataError(f"the model read prompts {texts} for {chunk}")
            kept = [0] * len(chunk)
            for rec in seg.to_coco(image.id, category_ids=list(range(len(chunk)))):
                k = rec["category_id"]
                if kept[k] >= max_per_prompt:
                    continue
                kept[k] += 1
                rec["bbox"] = [float(v) for v in rec["bbox"]]
                detections.extend(dict(rec, category_id=cat_id) for cat_id in cats_of_prompt[chunk[k]])
            for k, pr in enumerate(seg.prompts):
                presence.extend({"image_id": image.id, "category_id": cat_id, "score": float(pr.presence_score)}
                                for cat_id in cats_of_prompt[chunk[k]])
        latency[image.id] = total
        if on_image is not None:
            on_image(image)
    meta = {"segmenter": segmenter.info(), "score_threshold": score_threshold, "mask_threshold": mask_threshold,
            "max_per_prompt": max_per_prompt, "ground_truth": dataset.source, "images": len(dataset.images),
            "memory": peak_memory(getattr(segmenter, "device", None))}
    return Predictions(detections, presence, latency, meta)



def pair_outcomes(dataset: EvalDataset, predictions: Predictions, score_threshold: float) -> list[tuple[str, float, list[float]]]:
    """Per image and distinct prompt asked on it: (prompt, SAM 3's presence score, the scores of the detections
    above ``score_threshold``), as a server answering with that threshold would have kept them.

    This is what `sam3studio eval --save-baseline` counts into a drift baseline. Raises `EvalDataError`
    when the predictions carry no presence scores (a plain COCO results file).
    """
    presence = {(p["image_id"], p["category_id"]): float(p["score"]) for p in predictions.presence}
    if not presence:
        raise EvalDataError("these predictions have no presence scores (a plain COCO results list?); "
                            "a drift baseline needs predictions made by `sam3studio eval`")
    scores: dict[tuple[int, int], list[float]] = {}
    for d in predictions.detections:
        if d["score"] > score_threshold:
            scores.setdefault((d["image_id"], d["category_id"]), []).append(float(d["score"]))
    out = []
    for image in dataset.images:
        seen: set[str] = set()
        for cat_id in dataset.asked.get(image.id, []):
            prompt = dataset.category(cat_id).prompt
            if prompt in seen or (image.id, cat_id) not in presence:
                continue
            seen.add(prompt)
            out.append((prompt, presence[(image.id, cat_id)], scores.get((image.id, cat_id), [])))
    return out
