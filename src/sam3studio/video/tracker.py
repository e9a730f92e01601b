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
from sam3studio.prompts import MAX_PROMPT_CHARS, Translator, parse_prompts
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


def _video_classes():
    from transformers import Sam3VideoModel

    class Sam3VideoModelWithoutDetector(Sam3VideoModel):
        """`Sam3VideoModel` whose detector is supplied afterwards (the image segmenter's `Sam3Model`).

        The checkpoint's ``detector_model.*`` keys are ignored, so those weights are never read.
        """

        _keys_to_ignore_on_load_unexpected = [r"^detector_model\."]

        def __init__(self, config):
            super().__init__(config)
            del self.detector_model

    # Counted as a transformers class, so it loads with Sam3VideoModel's own key handling (see interactive.py).
    Sam3VideoModelWithoutDetector.__module__ = Sam3VideoModel.__module__
    return Sam3VideoModel, Sam3VideoModelWithoutDetector


def _build_random_video(device, dtype, detector: Any = None) -> LoadedVideoModel:
    import torch
    from transformers import Sam3VideoConfig

    from sam3studio.random_model import build_tokenizer, video_processor

    warnings.warn("model source 'random': full-size SAM 3 video model with UNTRAINED weights; masks are meaningless",
                  stacklevel=3)
    full_cls, shared_cls = _video_classes()
    with torch.device(device):
        model = (shared_cls if detector is not None else full_cls)(Sam3VideoConfig())
    model = model.to(dtype=dtype).eval()
    if detector is not None:
        model.detector_model = detector
    return LoadedVideoModel(model, video_processor(build_tokenizer()), "random", device, dtype)


def _log_missing_kernels() -> None:
    """Say once, in the log, what transformers' optional `kernels` package would add (its own warning is filtered)."""
    from transformers.utils import is_kernels_available

    if not is_kernels_available():
        log.info("the optional `kernels` package is not installed: transformers' video post-processing skips NMS "
                 "between new detections, hole filling and speck removal (see the README's optional extras)")


def load_video_model(source: str = "facebook/sam3", device: str = "auto", dtype: str = "auto",
                     detector: Any = None) -> LoadedVideoModel:
    """Load `Sam3VideoModel` + `Sam3VideoProcessor` from a hub id, a local folder, ``modelscope:<id>`` or ``random``.

    ``detector``: a `Sam3Model` already loaded from the same checkpoint on the same device and dtype
    (the image segmenter's). The video model then uses it instead of loading a second copy of the
    detector (about 840 M parameters at full size).
    """
    from sam3studio.errors import ModelSourceError, VideoModelUnavailable
    from sam3studio.model import (
        RANDOM_SOURCE,
        load_error,
        resolve_checkpoint,
        resolve_device,
        resolve_dtype,
        silence_expected_warnings,
    )

    silence_expected_warnings()
    _log_missing_kernels()
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    source = (source or "facebook/sam3").strip()
    _use_bounded_mask_iou()
    if detector is not None:
        param = next(detector.parameters())
        if param.device.type != dev.type or param.dtype != dt:
            raise ModelSourceError(f"the detector to share is on {param.device} in {param.dtype}; the video model "
                                   f"needs {dev} in {dt}")
    if source == RANDOM_SOURCE:
        return _build_random_video(dev, dt, detector)
    load_from, local = resolve_checkpoint(source)
    from transformers import AutoConfig, Sam3VideoProcessor

    try:
        model_type = AutoConfig.from_pretrained(load_from).model_type
    except Exception as exc:
        raise load_error(exc, source, local, what="a SAM 3 video model") from exc
    if model_type != "sam3_video":  # transformers would build a video model with random weights from it
        raise VideoModelUnavailable(f"'{source}' is an image-only SAM 3 checkpoint (model_type {model_type!r}); tracking "
                               "needs a video checkpoint such as facebook/sam3 (model_type 'sam3_video')")
    full_cls, shared_cls = _video_classes()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*bos_token_id.*|.*eos_token_id.*|.*pad_token_id.*")
            model, info = (shared_cls if detector is not None else full_cls).from_pretrained(
                load_from, dtype=dt, output_loading_info=True)
        processor = Sam3VideoProcessor.from_pretrained(load_from)
    except Exception as exc:
        raise load_error(exc, source, local, what="a SAM 3 video model") from exc
    if detector is not None and info.get("missing_keys"):  # the shared-detector load must leave nothing out
        missing = sorted(info["missing_keys"])
        raise ModelSourceError(f"the SAM 3 video model in '{source}' is incomplete: {len(missing)} weights are missing "
                               f"(first: {missing[0]})")
    model = model.to(device=dev, dtype=dt).eval()
    if detector is not None:  # attached after the move: the image model is used as it is, never cast or moved
        model.detector_model = detector
    return LoadedVideoModel(model, processor, source, dev, dt)


def load_video_segmenter(source: str = "facebook/sam3", device: str = "auto", dtype: str = "auto",
                         translator: Any = "lexicon", detector: Any = None, **options: Any) -> VideoSegmenter:
    """Load SAM 3's video model from ``source`` and wrap it in a `VideoSegmenter`.

    ``detector``: share an already loaded `Sam3Model` of the same checkpoint (see `load_video_model`).
    """
    from sam3studio.translate import get_translator

    if translator is None or isinstance(translator, str):
        translator = get_translator(translator)
    loaded = load_video_model(source, device=device, dtype=dtype, detector=detector)
    return VideoSegmenter(loaded, translator=translator, **options)


class VideoSegmenter:
    """Tracks every object matching text prompts through a video, with ids stable across frames.

    One run at a time per segmenter (the model's detection thresholds are set per run); runs are
    serialised by a lock, so sharing one segmenter between threads is safe.
    """

    def __init__(self, loaded: LoadedVideoModel, translator: Translator | None = None, keep_window: int = 20,
                 max_prompts: int = 16, max_prompt_chars: int = MAX_PROMPT_CHARS) -> None:
        self.loaded = loaded
        self.model, self.processor = loaded.model, loaded.processor
        self.device, self.dtype = loaded.device, loaded.dtype
        self.translator = translator
        self.keep_window = keep_window
        self.max_prompts, self.max_prompt_chars = max_prompts, max_prompt_chars
        self._lock = threading.Lock()
        cfg = self.model.config
        self._default_det = float(getattr(cfg, "score_threshold_detection", 0.5))
        self._default_new = float(getattr(cfg, "new_det_thresh", 0.7))

    def info(self) -> dict[str, str]:
        return {"source": self.loaded.source, "architecture": "Sam3VideoModel", "device": str(self.device),
                "dtype": str(self.dtype).removeprefix("torch.")}

    def track(self, video: str | Path, prompts: str | Sequence[str], *, score_threshold: float = 0.5,
              start: float | None = None, end: float | None = None, stride: int = 1, max_frames: int | None = None,
              limits: VideoLimits | None = None, max_prompts: int | None = None,
              max_prompt_chars: int | None = None) -> TrackingRun:
        """Prepare a run: prompts are parsed and translated and the video probed (limits checked) now;
        frames are decoded and tracked as the returned `TrackingRun` is iterated.

        ``max_prompts`` / ``max_prompt_chars`` override the segmenter's prompt limits for this run (the
        server passes its settings, so the limits it reports are the ones enforced)."""
        if not 0.0 < score_threshold <= 1.0:
            raise InputError(f"score_threshold must be in (0, 1], got {score_threshold}")
        limits = limits or VideoLimits()
        texts = parse_prompts(prompts, max_prompts=max_prompts or self.max_prompts,
                              max_chars=max_prompt_chars or self.max_prompt_chars)
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
