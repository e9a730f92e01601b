"""Evaluate SAM 3 on labelled data: COCO AP, presence P/R/F1, SA-Co's cgF1, a threshold sweep, latency.

Pure functions over data; nothing here imports torch (a `Segmenter` is only needed by `predict`).

>>> from sam3studio.evaluation import load_gt, predict, evaluate          # doctest: +SKIP
>>> ds = load_gt("instances_val.json", images_dir="val/")                  # doctest: +SKIP
>>> report = evaluate(ds, predict(segmenter, ds))                          # doctest: +SKIP
>>> report.cgf1["cgF1"], report.recommended_threshold                      # doctest: +SKIP
"""

from __future__ import annotations

from sam3studio.evaluation.data import (
    EvalCategory,
    EvalDataError,
    EvalDataset,
    EvalImage,
    load_coco_gt,
    load_gt,
    load_mapping,
    load_saco_gt,
)
from sam3studio.evaluation.metrics import DEFAULT_SWEEP, IOU_THRESHOLDS, EvalReport, binary_stats, evaluate
from sam3studio.evaluation.plots import write_plots
from sam3studio.evaluation.predictions import Predictions, predict

__all__ = [
    "DEFAULT_SWEEP",
    "IOU_THRESHOLDS",
    "EvalCategory",
    "EvalDataError",
    "EvalDataset",
    "EvalImage",
    "EvalReport",
    "Predictions",
    "binary_stats",
    "evaluate",
    "load_coco_gt",
    "load_gt",
    "load_mapping",
    "load_saco_gt",
    "predict",
    "write_plots",
]
