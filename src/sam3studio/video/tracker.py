"""Text-prompted video tracking on `Sam3VideoModel` (transformers), streamed frame by frame.

`VideoSegmenter.track(video, prompts)` returns a `TrackingRun`: iterate it for one `FrameResult` per
processed frame. Frames are decoded as they are needed, fed to a streaming inference session, and the
session's per-frame state is pruned behind a window as the run goes, so memory stays flat however
long the video is (`keep_window`; see `_prune`).
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sam3studio.errors import InputError
from sam3studio.prompts import Translator, parse_prompts
from sam3studio.results import PromptResult
from sam3studio.video.io import VideoInfo, VideoLimits, iter_frames, plan_video
from sam3studio.video.results import FrameInstance, FrameResult

log = logging.getLogger(__name__)

__all__ = ["TrackingRun", "VideoSegmenter", "load_video_segmenter"]


def mask_iou(pred_masks: Any, gt_masks: Any) -> Any:
    """Pairwise IoU of ``(N, H, W)`` and ``(M, H, W)`` boolean masks, as ``(N, M)`` float32.

    The same numbers as transformers' ``sam3_video.mask_iou``, which broadcasts to an ``(N, M, H*W)``
    tensor: 200 detections at 288x288 ask for 26 GB (seen at a low threshold). Here the intersections
    are one ``(N, H*W) @ (H*W, M)`` product: ``(N + M) * H * W`` floats.
    """
    import torch

    a = pred_masks.flatten(1).to(torch.float32)
    b = gt_masks.flatten(1).to(torch.float32)
    with torch.autocast(device_type=a.device.type, enabled=False):  # pixel counts must stay exact float32
        inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return inter / union.clamp(min=1)


def _use_bounded_mask_iou() -> None:
    """Make transformers' video model use `mask_iou` (detection NMS, track association, suppression)."""
    from transformers.models.sam3_video import modeling_sam3_video

    modeling_sam3_video.mask_iou = mask_iou


@dataclass
class LoadedVideoModel:
    model: Any  # Sam3VideoModel
    processor: Any  # Sam3VideoProcessor
    source: str
    device: Any
    dtype: Any


def _build_random_video(device, dtype) -> LoadedVideoModel:
    import torch
    from transformers import Sam3VideoConfig, Sam3VideoModel

    from sam3studio.testing import build_tokenizer, video_processor

    warnings.warn("model source 'random': full-size SAM 3 video model with UNTRAINED weights; masks are meaningless",
                  stacklevel=3)
    with torch.device(device):
        model = Sam3VideoModel(Sam3VideoConfig())
    return LoadedVideoModel(model.to(dtype=dtype).eval(), video_processor(build_tokenizer()), "random", device, dtype)


def load_video_model(source: str = "facebook/sam3", device: str = "auto", dtype: str = "auto") -> LoadedVideoModel:
    """Load `Sam3VideoModel` + `Sam3VideoProcessor` from a hub id, a local folder, ``modelscope:<id>`` or ``random``."""
    from sam3studio.model import RANDOM_SOURCE, load_error, resolve_checkpoint, resolve_device, resolve_dtype

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    source = (source or "facebook/sam3").strip()
    _use_bounded_mask_iou()
    if source == RANDOM_SOURCE:
        return _build_random_video(dev, dt)
    load_from, local = resolve_checkpoint(source)
    from transformers import Sam3VideoModel, Sam3VideoProcessor

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*bos_token_id.*|.*eos_token_id.*|.*pad_token_id.*")
            model = Sam3VideoModel.from_pretrained(load_from, dtype=dt)
        processor = Sam3VideoProcessor.from_pretrained(load_from)
    except Exception as exc:
        raise load_error(exc, source, local, what="a SAM 3 video model") from exc
    return LoadedVideoModel(model.to(device=dev, dtype=dt).eval(), processor, source, dev, dt)


def load_video_segmenter(source: str = "facebook/sam3", device: str = "auto", dtype: str = "auto",
                         translator: Any = "lexicon", **options: Any) -> VideoSegmenter:
    """Load SAM 3's video model from ``source`` and wrap it in a `VideoSegmenter`."""
    from sam3studio.translate import get_translator

    if translator is None or isinstance(translator, str):
        translator = get_translator(translator)
    return VideoSegmenter(load_video_model(source, device=device, dtype=dtype), translator=translator, **options)


class VideoSegmenter:
    """Tracks every object matching text prompts through a video, with ids stable across frames.

    One run at a time per segmenter (the model's detection thresholds are set per run); runs are
    serialised by a lock, so sharing one segmenter between threads is safe.
    """

    def __init__(self, loaded: LoadedVideoModel, translator: Translator | None = None, keep_window: int = 20,
                 max_prompts: int = 16) -> None:
        self.loaded = loaded
        self.model, self.processor = loaded.model, loaded.processor
        self.device, self.dtype = loaded.device, loaded.dtype
        self.translator = translator
        self.keep_window = keep_window
        self.max_prompts = max_prompts
        self._lock = threading.Lock()
        cfg = self.model.config
        self._default_det = float(getattr(cfg, "score_threshold_detection", 0.5))
        self._default_new = float(getattr(cfg, "new_det_thresh", 0.7))

    def info(self) -> dict[str, str]:
        return {"source": self.loaded.source, "architecture": "Sam3VideoModel", "device": str(self.device),
                "dtype": str(self.dtype).removeprefix("torch.")}

    def track(self, video: str | Path, prompts: str | Sequence[str], *, score_threshold: float = 0.5,
              start: float | None = None, end: float | None = None, stride: int = 1, max_frames: int | None = None,
              limits: VideoLimits | None = None) -> TrackingRun:
        """Prepare a run: prompts are parsed and translated and the video probed (limits checked) now;
        frames are decoded and tracked as the returned `TrackingRun` is iterated."""
        if not 0.0 < score_threshold <= 1.0:
            raise InputError(f"score_threshold must be in (0, 1], got {score_threshold}")
        limits = limits or VideoLimits()
        texts = parse_prompts(prompts, max_prompts=self.max_prompts)
        results = []
        for text in texts:
            tr = self.translator(text) if self.translator is not None else None
            results.append(PromptResult(text=text, presence_score=0.0, count=0, query=tr.query if tr else text,
                                        unknown_words=tuple(tr.unknown) if tr else ()))
        info, expected = plan_video(video, limits, start, end, stride, max_frames)
        return TrackingRun(self, info, results, score_threshold=score_threshold, start=start, end=end, stride=stride,
                           max_frames=max_frames, limits=limits, expected_frames=expected)


class TrackingRun:
    """One tracking run: iterate it for `FrameResult`s. ``prompts[i].count`` holds the number of tracks
    found for prompt i once the iteration has ended; ``close()`` stops early."""

    def __init__(self, segmenter: VideoSegmenter, video: VideoInfo, prompts: list[PromptResult], *,
                 score_threshold: float, start, end, stride: int, max_frames, limits: VideoLimits,
                 expected_frames: int | None) -> None:
        self.segmenter, self.video, self.prompts = segmenter, video, prompts
        self.score_threshold = score_threshold
        self.options = {"start": start, "end": end, "stride": stride, "max_frames": max_frames}
        self.limits = limits
        self.expected_frames = expected_frames
        self.frames_done = 0
        self._iter: Iterator[FrameResult] | None = None

    def __iter__(self) -> Iterator[FrameResult]:
        if self._iter is not None:
            raise RuntimeError("a TrackingRun can be iterated once")
        self._iter = self._run()
        return self._iter

    def close(self) -> None:
        if self._iter is not None:
            self._iter.close()

    def __enter__(self) -> TrackingRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the loop
    def _run(self) -> Iterator[FrameResult]:
        import torch

        seg = self.segmenter
        model, processor = seg.model, seg.processor
        queries = [p.query for p in self.prompts]
        query_to_texts: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            query_to_texts.setdefault(q, []).append(i)
        tracks_per_prompt: list[set[int]] = [set() for _ in self.prompts]
        with seg._lock:
            saved = (model.score_threshold_detection, model.new_det_thresh)
            model.score_threshold_detection = self.score_threshold
            # New objects need more confidence than kept ones, by the checkpoint's own margin.
            model.new_det_thresh = min(0.99, self.score_threshold + max(0.0, seg._default_new - seg._default_det))
            session = processor.init_video_session(inference_device=seg.device, inference_state_device=seg.device,
                                                   video_storage_device=seg.device, dtype=seg.dtype,
                                                   max_vision_features_cache_size=1)
            processor.add_text_prompt(session, list(query_to_texts))
            step = 0
            try:
                for index, timestamp, rgb in iter_frames(self.video, limits=self.limits, **self.options):
                    t0 = time.perf_counter()
                    with torch.inference_mode():
                        inputs = processor(images=rgb, device=seg.device, return_tensors="pt")
                        out = model(inference_session=session, frame=inputs.pixel_values[0].to(seg.dtype), frame_idx=step)
                        post = processor.postprocess_outputs(session, out, original_sizes=inputs.original_sizes)
                    t1 = time.perf_counter()
                    frame = self._frame(index, timestamp, rgb, post, query_to_texts, tracks_per_prompt)
                    frame.timings = {"model": t1 - t0, "postprocess": time.perf_counter() - t1}
                    _prune(session, step, seg.keep_window)
                    step += 1
                    self.frames_done = step
                    yield frame
            finally:
                model.score_threshold_detection, model.new_det_thresh = saved
                for p, tracks in zip(self.prompts, tracks_per_prompt, strict=True):
                    object.__setattr__(p, "count", len(tracks))
                del session

    def _frame(self, index: int, timestamp: float, rgb: np.ndarray, post: dict, query_to_texts: dict[str, list[int]],
               tracks_per_prompt: list[set[int]]) -> FrameResult:
        h, w = rgb.shape[:2]
        ids = [int(i) for i in post["object_ids"].tolist()]
        obj_to_query = {int(o): q for q, objs in post.get("prompt_to_obj_ids", {}).items() for o in objs}
        scores = post["scores"].float().cpu().numpy()
        boxes = post["boxes"].float().cpu().numpy()
        masks = post["masks"].cpu().numpy().astype(bool)
        instances = []
        for k, obj in enumerate(ids):
            if float(scores[k]) < self.score_threshold or not masks[k].any():
                continue
            prompt_index = query_to_texts.get(obj_to_query.get(obj, ""), [0])[0]
            tracks_per_prompt[prompt_index].add(obj)
            box = tuple(float(v) for v in np.clip(boxes[k], 0, [w, h, w, h]))
            instances.append(FrameInstance(track_id=obj, prompt=self.prompts[prompt_index].text, score=float(scores[k]),
                                           box=box, mask=masks[k]))  # type: ignore[arg-type]
        return FrameResult(index=index, timestamp=timestamp, width=w, height=h, instances=instances, image=rgb)


def _prune(session: Any, step: int, window: int) -> None:
    """Drop per-frame session state older than ``window`` frames, so memory does not grow with the video.

    The tracker reads memories of the last ``num_maskmem`` (7) frames and object pointers of at most 16
    past frames; hot-start bookkeeping looks 15 frames back. Anything older is never read again in
    forward streaming. Conditioning frames (where an object was added or re-conditioned, about one in
    16 per object) are all kept: the tracker reads the object pointers of every one of them. Tests
    check that pruned and unpruned runs give the same masks.
    """
    import torch

    old = step - window
    if old < 0:
        return
    frames = session.processed_frames
    if frames is not None:
        # Keep the keys: the session counts frames with len(processed_frames), which steers the tracker.
        empty = torch.empty(0)  # stands in for the pixels of a pruned frame
        for k in [k for k in frames if k < old and frames[k].numel()]:
            frames[k] = empty
    for per_obj in session.output_dict_per_obj.values():
        non_cond = per_obj.get("non_cond_frame_outputs", {})
        for k in [k for k in non_cond if k < old]:
            del non_cond[k]
    for per_obj in session.frames_tracked_per_obj.values():
        if isinstance(per_obj, dict):
            for k in [k for k in per_obj if k < old]:
                del per_obj[k]
    for key in ("obj_id_to_tracker_score_frame_wise", "suppressed_obj_ids"):
        table = getattr(session, key, None)
        if isinstance(table, dict):
            for k in [k for k in table if isinstance(k, int) and k < old]:
                del table[k]
