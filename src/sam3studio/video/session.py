"""Video sessions: text, clicks and boxes on any frame, objects removed, propagation forward, backward or both.

`VideoSession` is the editing counterpart of `VideoSegmenter.track` (one text prompt, tracked to the
end). It follows SAM 2's video predictor, on SAM 3's two heads that share one vision backbone:

- **One backbone.** The session runs on the loaded `Sam3VideoModel`: its detector (`Sam3Model`, the
  image segmenter's own when shared) and its tracker (`Sam3TrackerVideoModel`, loaded without a
  vision encoder). A frame's ViT backbone runs once; the detector's neck (for text) and the
  tracker's neck (`Sam3VideoModel.get_vision_features_for_tracker`) both read that output.
- **One id space.** Every object is tracked by the tracker, whatever made it: ``add_text`` runs the
  detector on that frame and adds each instance as a mask prompt (as `Sam3VideoModel` seeds its
  tracker from detections), ``add_clicks`` / ``add_box`` add point or box prompts
  (`Sam3TrackerVideoProcessor.add_inputs_to_inference_session`). Ids are the session's own, from
  1, and `FrameInstance.track_id` is that id (the REST API's ``object_id``).
- **One tracker state per object.** transformers' tracker runs every object of its inference
  session on every frame; with a state per object, a correction re-tracks only the objects whose
  inputs changed (`propagate` runs the *dirty* objects unless told which), and removing an object
  is dropping its state. Each state is transformers' own `Sam3TrackerVideoInferenceSession`,
  propagated frame by frame with ``Sam3TrackerVideoModel.forward(inference_session, frame_idx,
  reverse)``, so results equal transformers' documented path for the same inputs (a test checks).
- **Corrections as SAM 2 does them.** A click on a frame the object was tracked on corrects it with
  its memory (the tracker's ``is_init_cond_frame`` is false there) and the frame becomes a
  conditioning frame (SAM 2's ``add_all_frames_to_correct_as_cond``; transformers would keep it an
  ordinary tracked frame and drop the click the next time a propagation passes it). A click on a
  frame where the object's input is a mask (its text detection) or where only a stored mask exists
  (a job's result) refines that mask with SAM's head (mask prompt + clicks) into a new mask prompt.

Memory: frames are decoded on demand (`FrameReader`), never all held; results go to disk as COCO RLE
(`ResultStore`) at once; the tracker's per-frame state is bounded: pixels are never stored (the
features of the frame being processed are handed to the tracker), the high-resolution and
low-resolution masks of past frames are dropped (the tracker never reads them again), the memory
position encodings (the same for every frame) are shared, and memories are kept only within
``keep_window`` frames of the frame being processed and of each conditioning frame. Further away,
a later correction runs on the conditioning frames and what is still held rather than on every past
frame. `close` drops all of it.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sam3studio.errors import FrameOutOfRange, InputError, InputTooLargeError, SessionBusy, SessionGone, UnknownObject
from sam3studio.prompts import parse_prompts
from sam3studio.validation import validate_clicks
from sam3studio.video.frames import FrameReader, open_frames
from sam3studio.video.io import VideoLimits
from sam3studio.video.results import FrameInstance, FrameResult
from sam3studio.video.store import ResultStore, StoredInstance

log = logging.getLogger(__name__)

__all__ = ["DIRECTIONS", "Propagation", "SessionObject", "VideoSession", "trim_memory"]

DIRECTIONS = ("forward", "backward", "both")
CLICK_LABEL = "object"
DUPLICATE_IOU = 0.5  # a detection overlapping an existing object this much on the frame is that object


def trim_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system (glibc's ``malloc_trim``; elsewhere a no-op)."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to trim
            pass


@dataclass
class SessionObject:
    """One object of a session. ``inputs`` maps each frame with a prompt to its kind (mask, points, box)."""

    object_id: int
    label: str
    kind: str  # what made it: "text", "clicks", "box" or "job"
    state: Any = field(repr=False)  # its Sam3TrackerVideoInferenceSession
    inputs: dict[int, str] = field(default_factory=dict)
    dirty: bool = True  # inputs changed since it was last propagated
    seed: tuple[int, np.ndarray] | None = field(default=None, repr=False)  # a job's object: its first mask, not yet run

    def to_dict(self) -> dict[str, Any]:
        return {"object_id": self.object_id, "label": self.label, "kind": self.kind,
                "input_frames": sorted(self.inputs), "dirty": self.dirty}


@dataclass
class _Encoded:
    """One frame's backbone output and the tracker's features made from it."""

    frame: int
    hidden: Any  # (1, h*w, C) backbone output
    feats: list  # tracker features (HW, 1, C) per level, as Sam3TrackerVideoModel caches them
    pos: list
    vision: Any = None  # the detector's neck output, made when text needs it


class _NoPixels:
    """Stands in for a tracker state's ``processed_frames``: the frame count, and no pixels (features are handed in)."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __contains__(self, index: object) -> bool:
        return isinstance(index, int) and 0 <= index < self.count

    def __getitem__(self, index: int) -> Any:
        raise RuntimeError("a session's tracker state keeps no pixels; its features are cached before each step")


class Propagation:
    """One propagation: iterate it for a `FrameResult` per processed frame; ``close()`` stops it early.

    ``frames`` is the processing order, ``total`` its length, ``done`` the frames finished so far.
    """

    def __init__(self, session: VideoSession, plan: list[tuple[int, bool, list[SessionObject]]],
                 targets: list[SessionObject]) -> None:
        self.session = session
        self.frames = [i for i, _, _ in plan]
        self.total = len(plan)
        self.done = 0
        self.completed = False
        self._gen = session._run_plan(plan, targets, self)
        self._closed = False

    def __iter__(self) -> Propagation:
        return self

    def __next__(self) -> FrameResult:
        if self._closed:
            raise StopIteration
        return next(self._gen)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._gen.close()
            self.session._busy = False  # also when the generator never started

    def __enter__(self) -> Propagation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a dropped, unfinished propagation must not leave the session busy
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


class VideoSession:
    """An editable video: see the module docstring. Thread-safe; model work is serialised by one lock.

    Open one with `VideoSession.open` (a video file or frame folder) or `VideoSession.from_job` (a
    finished tracking run's folder). Coordinates are original frame pixels; boxes are XYXY.
    """

    def __init__(self, segmenter: Any, frames: FrameReader, work_dir: str | Path | None = None, *,
                 score_threshold: float = 0.5, keep_window: int | None = -1, max_objects: int = 64) -> None:
        import torch
        from transformers import Sam3TrackerVideoProcessor

        if not 0.0 < score_threshold <= 1.0:
            raise InputError(f"score_threshold must be in (0, 1], got {score_threshold}")
        self.segmenter = segmenter
        self.model = segmenter.model
        self.tracker = self.model.tracker_model
        self.detector = self.model.detector_model
        self.processor = segmenter.processor
        self.tracker_processor = Sam3TrackerVideoProcessor(image_processor=self.processor.image_processor,
                                                           video_processor=self.processor.video_processor)
        self.device, self.dtype = segmenter.device, segmenter.dtype
        self.frames = frames
        self.score_threshold = score_threshold
        self.max_objects = max_objects
        cfg = self.tracker.config
        # The tracker reads memories of num_maskmem - 1 frames back and object pointers of up to 16 frames.
        self.keep_window = (max(cfg.num_maskmem, cfg.max_object_pointers_in_encoder) if keep_window == -1
                            else keep_window)
        self._owns_dir = work_dir is None
        self.work_dir = Path(tempfile.mkdtemp(prefix="sam3studio-session-")) if work_dir is None else Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.store = ResultStore(self.work_dir / "results.sqlite3", frames.width, frames.height)
        self.objects: dict[int, SessionObject] = {}
        self.last_input_frame: int | None = None
        self.version = 0  # bumped whenever stored results change
        self.propagations = 0  # completed propagations
        self._next_id = 1
        self._lock = threading.RLock()
        self._busy = False
        self.closed = False
        self._encoded: _Encoded | None = None
        self._pos_enc: Any = None
        self._text: dict[str, tuple[Any, Any]] = {}
        self._torch = torch

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, segmenter: Any, source: str | Path, *, limits: VideoLimits | None = None,
             work_dir: str | Path | None = None, **options: Any) -> VideoSession:
        """A session on a video file or a folder of frames (probed and indexed now, decoded on demand)."""
        return cls(segmenter, open_frames(source, limits), work_dir, **options)

    @classmethod
    def from_job(cls, segmenter: Any, job_dir: str | Path, video: str | Path, *, limits: VideoLimits | None = None,
                 work_dir: str | Path | None = None, **options: Any) -> VideoSession:
        """A session on a finished tracking run: ``video`` is its source, ``job_dir`` holds its ``frames.jsonl``.

        Every track becomes an object with the run's masks as its stored results (ids kept); its
        first mask is its prompt, run when the object is first corrected or propagated.
        """
        import json

        from sam3studio.results import rle_to_mask

        session = cls.open(segmenter, video, limits=limits, work_dir=work_dir, **options)
        seeds: dict[int, tuple[int, np.ndarray, str]] = {}
        h, w = session.frames.height, session.frames.width
        with (Path(job_dir) / "frames.jsonl").open(encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                data = json.loads(line)
                index = int(data["frame"])
                if not 0 <= index < session.frame_count:
                    continue
                rows = []
                for inst in data.get("instances", ()):
                    mask = rle_to_mask(inst["mask"], (h, w))
                    tid = int(inst["track_id"])
                    seeds.setdefault(tid, (index, mask, str(inst.get("prompt") or CLICK_LABEL)))
                    rows.append((tid, float(inst.get("score", 0.0)), tuple(inst["box_xyxy"]), mask))
                session.store.put(index, rows)
        for tid, (index, mask, label) in sorted(seeds.items()):
            obj = session._new_object(label, "job", object_id=tid)
            obj.seed, obj.dirty = (index, mask), False
        session.version += 1
        return session

    # ------------------------------------------------------------------ facts
    @property
    def frame_count(self) -> int:
        return self.frames.count

    @property
    def width(self) -> int:
        return self.frames.width

    @property
    def height(self) -> int:
        return self.frames.height

    @property
    def fps(self) -> float:
        return self.frames.info.fps

    @property
    def busy(self) -> bool:
        return self._busy

    def object_list(self) -> list[dict[str, Any]]:
        counts = self.store.counts()
        return [{**obj.to_dict(), "frames_present": counts.get(oid, 0)} for oid, obj in sorted(self.objects.items())]

    # ------------------------------------------------------------------ inputs
    def add_text(self, frame: int, prompts: str | Sequence[str], *, score_threshold: float | None = None,
                 ) -> list[FrameInstance]:
        """Detect every instance of ``prompts`` on ``frame``; each becomes a new object (its mask, its prompt).

        A detection overlapping an object already on that frame (mask IoU >= 0.5) is that object and is
        skipped. Returns the new objects' instances on ``frame`` (the tracker's output for each detection).
        """
        self._check_frame(frame)
        threshold = self.score_threshold if score_threshold is None else score_threshold
        if not 0.0 < threshold <= 1.0:
            raise InputError(f"score_threshold must be in (0, 1], got {threshold}")
        texts = parse_prompts(prompts, max_prompts=getattr(self.segmenter, "max_prompts", 16))
        translator = getattr(self.segmenter, "translator", None)
        queries = [translator(t).query if translator is not None else t for t in texts]
        with self._work():
            enc = self._encode(frame, detector=True)
            existing = [s.mask() for s in self.store.frame(frame)]
            out: list[FrameInstance] = []
            for text, query in zip(texts, queries, strict=True):
                for mask in self._detect(enc, query, threshold):
                    if any(_iou(mask, other) >= DUPLICATE_IOU for other in existing):
                        continue
                    obj = self._new_object(text, "text")
                    self.tracker_processor.add_inputs_to_inference_session(
                        obj.state, frame_idx=frame, obj_ids=obj.object_id, input_masks=mask)
                    obj.inputs[frame] = "mask"
                    inst = self._input_step(obj, frame, enc)
                    existing.append(mask)
                    out.append(inst)
            self.last_input_frame = frame
            return out

    def add_clicks(self, frame: int, points: Any, labels: Any, object_id: int | None = None, *,
                   label: str = CLICK_LABEL) -> FrameInstance:
        """Clicks ``[[x, y], ...]`` with labels (1 on the object, 0 not on it) on ``frame``.

        ``object_id`` None starts a new object; else the clicks correct that object on ``frame``.
        Returns the object's instance on ``frame`` (its ``track_id`` is the object's id; the mask is
        empty, ``area`` 0, when the tracker finds nothing there).
        """
        self._check_frame(frame)
        clicks = validate_clicks(points, labels, None, None, self.width, self.height)
        with self._work():
            obj = self._new_object(label, "clicks") if object_id is None else self._object(object_id)
            enc = self._encode(frame)
            self._ensure_seeded(obj)
            state = obj.state
            pts, labs = clicks.points.tolist(), clicks.labels.tolist()
            refine_from = None
            if obj.inputs.get(frame) in ("mask",):
                refine_from = self._cond_logits(obj, frame)
            elif obj.inputs.get(frame) is None and frame not in state.frames_tracked_per_obj[0]:
                stored = self.store.get(frame, obj.object_id)
                if stored is not None:  # only a stored mask (a job's result): refine it
                    refine_from = _mask_logits(stored.mask(), self.tracker.prompt_encoder.mask_input_size)
            if refine_from is not None:
                mask = self._refine(enc, refine_from, pts, labs)
                self.tracker_processor.add_inputs_to_inference_session(
                    state, frame_idx=frame, obj_ids=obj.object_id, input_masks=mask)
                obj.inputs[frame] = "mask"
            else:
                append = obj.inputs.get(frame) == "points"
                self.tracker_processor.add_inputs_to_inference_session(
                    state, frame_idx=frame, obj_ids=obj.object_id, input_points=[[pts]], input_labels=[[labs]],
                    clear_old_inputs=not append)
                obj.inputs[frame] = "points"
            inst = self._input_step(obj, frame, enc)
            self.last_input_frame = frame
            return inst

    def add_box(self, frame: int, box: Sequence[float], object_id: int | None = None, *,
                label: str = CLICK_LABEL) -> FrameInstance:
        """A box ``[x1, y1, x2, y2]`` around an object on ``frame`` (a new one, or ``object_id`` redrawn there).

        Returns the object's instance on ``frame``, as `add_clicks` does."""
        self._check_frame(frame)
        clicks = validate_clicks(None, None, box, None, self.width, self.height)
        with self._work():
            obj = self._new_object(label, "box") if object_id is None else self._object(object_id)
            enc = self._encode(frame)
            self._ensure_seeded(obj)
            self.tracker_processor.add_inputs_to_inference_session(
                obj.state, frame_idx=frame, obj_ids=obj.object_id, input_boxes=[[clicks.box.tolist()]])
            obj.inputs[frame] = "box"
            inst = self._input_step(obj, frame, enc)
            self.last_input_frame = frame
            return inst

    def remove_object(self, object_id: int) -> int:
        """Remove the object from the session and from every stored frame; returns the frames it left."""
        with self._work():
            obj = self._object(object_id)
            del self.objects[obj.object_id]
            removed = self.store.delete_object(obj.object_id)
            obj.state = None
            self.version += 1
            return removed

    # ------------------------------------------------------------------ propagation
    def propagate(self, direction: str = "forward", start_frame: int | None = None,
                  object_ids: Sequence[int] | None = None) -> Propagation:
        """Track objects from ``start_frame`` (default: each object's latest input frame) and yield frames.

        ``direction``: ``"forward"`` (to the last frame), ``"backward"`` (to frame 0) or ``"both"``
        (forward, then backward from the frame before the start). ``object_ids``: which objects to
        track; by default those whose inputs changed since their last propagation, or every object
        when none did. Each yielded `FrameResult` holds every object on that frame (re-tracked or not),
        with the decoded frame as ``image``. The session is busy (inputs refused) until the
        propagation ends or is closed.
        """
        if direction not in DIRECTIONS:
            raise InputError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        if start_frame is not None:
            self._check_frame(start_frame)
        with self._work():
            if object_ids is not None:
                targets = [self._object(o) for o in object_ids]
            else:
                targets = [o for o in self.objects.values() if o.dirty] or list(self.objects.values())
            if not targets:
                raise InputError("the session has no objects yet: add a text prompt, clicks or a box first")
            for obj in targets:
                self._ensure_seeded(obj)
            starts = {o.object_id: start_frame if start_frame is not None else max(o.inputs) for o in targets}
            plan = self._plan(direction, targets, starts)
            self._busy = True
            return Propagation(self, plan, targets)

    def _plan(self, direction: str, targets: list[SessionObject],
              starts: dict[int, int]) -> list[tuple[int, bool, list[SessionObject]]]:
        n = self.frame_count
        plan: list[tuple[int, bool, list[SessionObject]]] = []
        if direction in ("forward", "both"):
            for i in range(min(starts.values()), n):
                plan.append((i, False, [o for o in targets if i >= starts[o.object_id]]))
        if direction == "backward":
            for i in range(max(starts.values()), -1, -1):
                plan.append((i, True, [o for o in targets if i <= starts[o.object_id]]))
        if direction == "both":
            for i in range(max(starts.values()) - 1, -1, -1):
                plan.append((i, True, [o for o in targets if i < starts[o.object_id]]))
        return [step for step in plan if step[2]]

    def _run_plan(self, plan: list[tuple[int, bool, list[SessionObject]]], targets: list[SessionObject],
                  progress: Propagation) -> Iterator[FrameResult]:
        try:
            for frame, reverse, objs in plan:
                with self._lock:
                    if self.closed:
                        raise SessionGone("the session was closed during propagation")
                    enc = self._encode(frame)
                    rows = []
                    for obj in objs:
                        if obj.object_id not in self.objects:
                            continue
                        out = self._track(obj, frame, enc, reverse)
                        rows.append((obj.object_id, *self._result(out)))
                    self.store.put(frame, rows)
                    self.version += 1
                    result = self.frame(frame)
                result.image = self.frames.get(frame)
                progress.done += 1
                yield result
            for obj in targets:
                obj.dirty = False
            self.propagations += 1
            progress.completed = True
        finally:
            self._busy = False
            self._encoded = None

    # ------------------------------------------------------------------ reading
    def frame(self, index: int, with_image: bool = False) -> FrameResult:
        """Every object stored on frame ``index`` (masks decoded), optionally with the decoded frame."""
        self._check_frame(index)
        instances = [self._to_instance(s) for s in self.store.frame(index) if s.object_id in self.objects]
        image = self.frames.get(index) if with_image else None
        return FrameResult(index=index, timestamp=self.frames.timestamps[index], width=self.width, height=self.height,
                           instances=instances, image=image)

    def stored(self, index: int) -> list[StoredInstance]:
        """Frame ``index`` as stored (masks left as RLE): what the REST API answers."""
        self._check_frame(index)
        return [s for s in self.store.frame(index) if s.object_id in self.objects]

    def label_of(self, object_id: int) -> str:
        return self._object(object_id).label

    def _to_instance(self, s: StoredInstance) -> FrameInstance:
        return FrameInstance(track_id=s.object_id, prompt=self.objects[s.object_id].label, score=s.score,
                             box=s.box, mask=s.mask())

    # ------------------------------------------------------------------ export
    def export(self, out_dir: str | Path, formats: Sequence[str] = ("jsonl", "summary", "mp4", "ytvis"),
               masks: bool = False) -> dict[str, Any]:
        """Write the stored results as `VideoSegmenter.track` does (`write_tracking`'s sinks) plus ytvis.json.

        Frames are decoded again only for the overlay; returns the summary dict.
        """
        from sam3studio.video.sinks import write_tracking

        with self._lock:
            self._check_open()
            run = _StoredRun(self, with_images="mp4" in formats)
            return write_tracking(run, out_dir, formats=formats, masks=masks)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Drop every object's tracker state, the cached frames and features, the results (a temporary
        work folder is deleted) and give the memory back. Safe to call twice."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            for obj in self.objects.values():
                obj.state = None
            self.objects.clear()
            self._encoded = None
            self._pos_enc = None
            self._text.clear()
            self.frames.close()
            self.store.close()
            if self._owns_dir:
                shutil.rmtree(self.work_dir, ignore_errors=True)
        trim_memory()

    def __enter__(self) -> VideoSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals: bookkeeping
    def _check_open(self) -> None:
        if self.closed:
            raise SessionGone("the session is closed")

    def _check_frame(self, frame: Any) -> None:
        if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or not 0 <= frame < self.frame_count:
            raise FrameOutOfRange(f"frame {frame!r} is outside the video: frames are 0 to {self.frame_count - 1}")

    @contextmanager
    def _work(self) -> Iterator[None]:
        """Model work or a change of inputs: the session's lock, refused when closed or propagating."""
        with self._lock:
            self._check_open()
            if self._busy:
                raise SessionBusy("the session is propagating; wait until it is done (or stop it)")
            yield

    def _object(self, object_id: Any) -> SessionObject:
        try:
            return self.objects[int(object_id)]
        except (KeyError, TypeError, ValueError):
            known = ", ".join(str(o) for o in sorted(self.objects)) or "none"
            raise UnknownObject(f"no object {object_id!r} in this session (objects: {known})") from None

    def _new_object(self, label: str, kind: str, object_id: int | None = None) -> SessionObject:
        from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import Sam3TrackerVideoInferenceSession

        if len(self.objects) >= self.max_objects:
            raise InputTooLargeError(f"the session has {len(self.objects)} objects, the most it may hold; "
                                     "remove one first")
        oid = self._next_id if object_id is None else int(object_id)
        self._next_id = max(self._next_id, oid + 1)
        state = Sam3TrackerVideoInferenceSession(
            video_height=self.height, video_width=self.width, inference_device=self.device,
            inference_state_device=self.device, video_storage_device=self.device, dtype=self.dtype,
            max_vision_features_cache_size=1)
        state.processed_frames = _NoPixels(self.frame_count)
        state.obj_id_to_idx(oid)
        obj = SessionObject(oid, label, kind, state)
        self.objects[oid] = obj
        return obj

    def _ensure_seeded(self, obj: SessionObject) -> None:
        """A job's object gets its first mask as its prompt the first time model work needs it."""
        if obj.seed is None:
            return
        frame, mask = obj.seed
        obj.seed = None
        self.tracker_processor.add_inputs_to_inference_session(obj.state, frame_idx=frame, obj_ids=obj.object_id,
                                                               input_masks=mask)
        obj.inputs[frame] = "mask"
        self._input_step(obj, frame, self._encode(frame))

    # ------------------------------------------------------------------ internals: model work
    def _encode(self, frame: int, detector: bool = False) -> _Encoded:
        """The frame's backbone output and tracker features (one backbone pass; the last frame is kept)."""
        torch = self._torch
        enc = self._encoded
        if enc is None or enc.frame != frame:
            rgb = self.frames.get(frame)
            pixels = self.processor.video_processor(videos=[rgb], return_tensors="pt").pixel_values_videos[0]
            with torch.inference_mode():
                hidden = self.detector.vision_encoder.backbone(pixels.to(self.device, self.dtype)).last_hidden_state
                feats, pos = self.model.get_vision_features_for_tracker(_Hidden(hidden))
            enc = self._encoded = _Encoded(frame, hidden, feats, pos)
        if detector and enc.vision is None:
            from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

            size = self.tracker.prompt_encoder.image_embedding_size
            with torch.inference_mode():
                spatial = enc.hidden.view(1, size[0], size[1], -1).permute(0, 3, 1, 2)
                fpn, fpn_pos = self.detector.vision_encoder.neck(spatial)
            enc.vision = Sam3VisionEncoderOutput(last_hidden_state=enc.hidden, fpn_hidden_states=fpn,
                                                 fpn_position_encoding=fpn_pos)
        return enc

    def _track(self, obj: SessionObject, frame: int, enc: _Encoded, reverse: bool, prompted: bool = False) -> Any:
        state = obj.state
        state.cache.cache_vision_features(frame, {"vision_feats": enc.feats, "vision_pos_embeds": enc.pos})
        with self._torch.inference_mode():
            out = self.tracker(inference_session=state, frame_idx=frame, reverse=reverse)
        outputs = state.output_dict_per_obj[0]
        if prompted and frame in outputs["non_cond_frame_outputs"]:
            # Corrected on a frame it was tracked on: SAM 2 keeps such a frame as a prompt (conditioning) frame.
            outputs["cond_frame_outputs"][frame] = outputs["non_cond_frame_outputs"].pop(frame)
        self._compact(state, frame)
        return out

    def _input_step(self, obj: SessionObject, frame: int, enc: _Encoded) -> FrameInstance:
        """Run the frame that just got an input, keep it as a conditioning frame, store its result."""
        tracked = obj.state.frames_tracked_per_obj[0].get(frame)
        out = self._track(obj, frame, enc, bool(tracked and tracked.get("reverse")), prompted=True)
        obj.dirty = True
        score, box, mask = self._result(out)
        self.store.put(frame, [(obj.object_id, score, box, mask)])
        self.version += 1
        return FrameInstance(track_id=obj.object_id, prompt=obj.label, score=score, box=box, mask=mask)

    def _result(self, out: Any) -> tuple[float, tuple[float, float, float, float], np.ndarray]:
        torch = self._torch
        masks = self.tracker_processor.post_process_masks([out.pred_masks.float().cpu()], [[self.height, self.width]],
                                                          binarize=False)[0]
        mask = (masks[0, 0] > 0).numpy()
        score = float(torch.sigmoid(out.object_score_logits.float()).reshape(-1)[0])
        return score, _bbox(mask), mask

    def _compact(self, state: Any, frame: int) -> None:
        """Keep only what the tracker reads again (see the module docstring)."""
        outputs = state.output_dict_per_obj[0]
        cond, non_cond = outputs["cond_frame_outputs"], outputs["non_cond_frame_outputs"]
        for table, drop in ((cond, ("high_res_masks",)), (non_cond, ("high_res_masks", "pred_masks"))):
            entry = table.get(frame)
            if entry is None:
                continue
            for key in drop:
                entry.pop(key, None)
            pos = entry.get("maskmem_pos_enc")
            if pos is not None:  # the memory position encoding depends on the frame size only: share one
                if self._pos_enc is not None and self._pos_enc.shape == pos.shape and self._torch.equal(self._pos_enc, pos):
                    entry["maskmem_pos_enc"] = self._pos_enc
                elif self._pos_enc is None:
                    self._pos_enc = pos
        window = self.keep_window
        if window is None:
            return
        keep_near = [frame, *cond]
        for k in [k for k in non_cond if all(abs(k - c) > window for c in keep_near)]:
            del non_cond[k]

    def _cond_logits(self, obj: SessionObject, frame: int) -> Any:
        entry = obj.state.output_dict_per_obj[0]["cond_frame_outputs"].get(frame)
        if entry is None or entry.get("pred_masks") is None:
            stored = self.store.get(frame, obj.object_id)
            mask = stored.mask() if stored is not None else np.zeros((self.height, self.width), bool)
            return _mask_logits(mask, self.tracker.prompt_encoder.mask_input_size)
        return entry["pred_masks"]

    def _refine(self, enc: _Encoded, prior_logits: Any, points: list, labels: list) -> np.ndarray:
        """SAM's head on one frame: the object's current mask (low-resolution logits) plus clicks -> a new mask.

        The step the tracker runs on a prompted frame without memory (its ``_single_frame_forward`` on the
        frame's features plus the no-memory embedding), with the mask as the dense prompt, as SAM 2
        refines a mask with further clicks.
        """
        torch = self._torch
        tracker = self.tracker
        enc_points = self.tracker_processor(input_points=[[points]], input_labels=[[labels]],
                                            original_sizes=[[self.height, self.width]], return_tensors="pt")
        sizes = tracker.backbone_feature_sizes
        with torch.inference_mode():
            high_res = [x.permute(1, 2, 0).view(x.size(1), x.size(2), *s) for x, s in zip(enc.feats[:-1], sizes[:-1],
                                                                                          strict=True)]
            top = (enc.feats[-1] + tracker.no_memory_embedding).permute(1, 2, 0).view(1, tracker.hidden_dim, *sizes[-1])
            out = tracker._single_frame_forward(
                input_points=enc_points["input_points"].to(self.device, self.dtype),
                input_labels=enc_points["input_labels"].to(self.device),
                input_masks=prior_logits.to(self.device, self.dtype).reshape(1, 1, *prior_logits.shape[-2:]),
                image_embeddings=[*high_res, top], multimask_output=False)
        masks = self.tracker_processor.post_process_masks([out.pred_masks.float().cpu()], [[self.height, self.width]],
                                                          binarize=False)[0]
        return (masks[0, 0] > 0).numpy()

    def _text_features(self, query: str) -> tuple[Any, Any]:
        if query not in self._text:
            enc = self.processor.tokenizer(query, return_tensors="pt", padding="max_length", max_length=32)
            ids, attention = enc.input_ids.to(self.device), enc.attention_mask.to(self.device)
            with self._torch.inference_mode():
                embeds = self.detector.get_text_features(input_ids=ids, attention_mask=attention, return_dict=True)
            self._text[query] = (embeds, attention)
        return self._text[query]

    def _detect(self, enc: _Encoded, query: str, threshold: float) -> list[np.ndarray]:
        """The detector's instances of ``query`` on the encoded frame, as full-size masks (best first).

        As `Sam3VideoModel` detects: score = query probability x presence, mask NMS at the checkpoint's
        ``det_nms_thresh``; then transformers' instance post-processing at the frame's size.
        """
        from transformers.models.sam3_video.modeling_sam3_video import nms_masks

        torch = self._torch
        text, attention = self._text_features(query)
        with torch.inference_mode():
            out = self.detector(vision_embeds=enc.vision, text_embeds=text, attention_mask=attention)
            probs = out.pred_logits.sigmoid() * out.presence_logits.sigmoid()
            nms = float(getattr(self.model, "det_nms_thresh", 0.0) or 0.0)
            if nms > 0:
                keep = nms_masks(pred_probs=probs[0], pred_masks=out.pred_masks[0], prob_threshold=threshold,
                                 iou_threshold=nms)
                out.pred_logits[0][~keep] = -1e4  # suppressed: below any threshold
            post = self.processor.image_processor.post_process_instance_segmentation(
                out, threshold=threshold, mask_threshold=0.5, target_sizes=[(self.height, self.width)])[0]
        order = torch.argsort(post["scores"].float(), descending=True, stable=True)
        masks = [post["masks"][int(k)].bool().cpu().numpy() for k in order]
        return [m for m in masks if m.any()][: self.max_objects]


class _Hidden:
    """What `Sam3VideoModel.get_vision_features_for_tracker` reads of a vision output: ``last_hidden_state``."""

    def __init__(self, hidden: Any) -> None:
        self.last_hidden_state = hidden


class _StoredRun:
    """The stored results as a `TrackingRun`-like iterable, for `write_tracking`."""

    def __init__(self, session: VideoSession, with_images: bool) -> None:
        self.session = session
        self.with_images = with_images
        self.video = session.frames.info
        self.expected_frames = session.frame_count
        labels = dict.fromkeys(o.label for o in session.objects.values())
        self.prompts = [_Label(label) for label in labels]
        self.file_names = ([f"{Path(self.video.path).name}/{p.name}" for p in session.frames._paths]
                           if self.video.kind == "folder" else None)

    def __iter__(self) -> Iterator[FrameResult]:
        for i in range(self.session.frame_count):
            yield self.session.frame(i, with_image=self.with_images)

    def close(self) -> None:
        """Nothing held between frames."""


@dataclass(frozen=True)
class _Label:
    text: str

    @property
    def query(self) -> str:
        return self.text


def _bbox(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return (0.0, 0.0, 0.0, 0.0)
    return (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.logical_and(a, b).sum()
    union = np.logical_or(a, b).sum()
    return float(inter / union) if union else 0.0


def _mask_logits(mask: np.ndarray, size: tuple[int, int]) -> Any:
    """A binary mask as the tracker's low-resolution mask prompt (``±10`` logits, SAM 2's scale)."""
    from sam3studio.interactive import mask_to_logits

    return mask_to_logits(mask, tuple(size))
