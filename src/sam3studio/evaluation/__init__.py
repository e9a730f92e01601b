"""Evaluate SAM 3 on labelled data: COCO AP, presence P/R/F1, SA-Co's cgF1, a threshold sweep, latency, where
it fails (breakdown.py); video tracking metrics (video.py, video_data.py, video_predict.py); clicks to quality
(clicks.py); the self-contained report.html (html.py).

Pure functions over data; nothing here imports torch (a `Segmenter` is only needed by `predict`).

>>> from sam3studio.evaluation import load_gt, predict, evaluate          # doctest: +SKIP
>>> ds = load_gt("instances_val.json", images_dir="val/")                  # doctest: +SKIP
>>> report = evaluate(ds, predict(segmenter, ds))                          # doctest: +SKIP
>>> report.cgf1["cgF1"], report.recommended_threshold                      # doctest: +SKIP
"""

from __future__ import annotations

from sam3studio.evaluation.clicks import click_metrics, evaluate_clicks, next_click, segmenter_refiner
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
from sam3studio.evaluation.html import write_html
from sam3studio.evaluation.metrics import DEFAULT_SWEEP, IOU_THRESHOLDS, EvalReport, binary_stats, evaluate
from sam3studio.evaluation.plots import plot_click_curve, write_plots
from sam3studio.evaluation.predictions import Predictions, predict
from sam3studio.evaluation.video import VideoReport, evaluate_video
from sam3studio.evaluation.video_data import EvalVideo, VideoDataset, VideoPredictions, load_ground_truth, load_video_gt
from sam3studio.evaluation.video_predict import predict_video

__all__ = [
    "DEFAULT_SWEEP",
    "IOU_THRESHOLDS",
    "EvalCategory",
    "EvalDataError",
    "EvalDataset",
    "EvalImage",
    "EvalReport",
    "EvalVideo",
    "Predictions",
    "VideoDataset",
    "VideoPredictions",
    "VideoReport",
    "binary_stats",
    "click_metrics",
    "evaluate",
    "evaluate_clicks",
    "evaluate_video",
    "load_coco_gt",
    "load_ground_truth",
    "load_gt",
    "load_mapping",
    "load_saco_gt",
    "load_video_gt",
    "next_click",
    "plot_click_curve",
    "predict",
    "predict_video",
    "segmenter_refiner",
    "write_html",
    "write_plots",
]
