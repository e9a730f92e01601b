"""In-process service shared by the REST API and the UI: model lifecycle, input decoding, admission.

Both edges call `SegmentService.segment`, so they share one admission gate and never compete for
the model without bound: at most ``max_concurrent`` requests run model work, ``max_queue`` more
wait, and anything beyond is refused at once with `Overloaded` (HTTP 503 + Retry-After).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from sam3studio.cleanup import CleanupOptions
from sam3studio.errors import Cancelled, InputError, NotReady, OutOfMemory, Overloaded, Sam3StudioError
from sam3studio.io.images import load_image
from sam3studio.prompts import parse_prompts
from sam3studio.results import Segmentation
from sam3studio.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["AdmissionGate", "Cancelled", "NotReady", "OutOfMemory", "Overloaded", "SegmentOptions", "SegmentService",
           "VisionBatcher"]


def _free_memory(segmenter: Any) -> None:
    """After an out-of-memory error: drop the engine's caches and give freed blocks back."""
    if hasattr(segmenter, "clear_cache"):
        segmenter.clear_cache()
    _release_memory()


def _release_memory() -> None:
    """Collect garbage and give the CUDA allocator's free blocks back."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover - best effort
        log.debug("could not empty the CUDA cache", exc_info=True)


def _oom_errors() -> tuple[type[BaseException], ...]:
    import torch

    return (MemoryError, torch.OutOfMemoryError)


class AdmissionGate:
    """At most ``max_concurrent`` holders at once and ``max_queue`` waiters; the rest are refused."""

    def __init__(self, max_concurrent: int = 1, max_queue: int = 8, timeout: float = 120.0) -> None:
        self.max_concurrent, self.max_queue, self.timeout = max_concurrent, max_queue, timeout
        self._cond = threading.Condition()
        self.active = 0
        self.waiting = 0
        self.peak_waiting = 0
        self.rejected = {"queue_full": 0, "timeout": 0}  # requests refused with `Overloaded`, by why

    @contextmanager
    def admit(self, cancelled: Callable[[], bool] | None = None) -> Iterator[None]:
        """Wait for a slot. ``cancelled`` (polled while waiting) lets a request whose client left give up its place."""
        with self._cond:
            # Queue when a slot is taken or others already wait (a freed slot may not have been claimed
            # by its woken waiter yet); the queue itself never grows past max_queue.
            if (self.active >= self.max_concurrent or self.waiting) and self.waiting >= self.max_queue:
                self.rejected["queue_full"] += 1
                raise Overloaded(
                    f"server busy: {self.active} request(s) running and {self.waiting} waiting; try again shortly",
                    retry_after=max(1, int(self.waiting + 1)),
                )
            self.waiting += 1
            self.peak_waiting = max(self.peak_waiting, self.waiting)
            try:
                deadline = time.monotonic() + self.timeout
                while self.active >= self.max_concurrent:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self.rejected["timeout"] += 1
                        raise Overloaded(f"server busy: waited {self.timeout:.0f} s for the model; try again later")
                    if cancelled is not None and cancelled():
                        raise Cancelled("the client disconnected while waiting for the model")
                    self._cond.wait(timeout=min(left, 0.2) if cancelled is not None else left)
            finally:
                self.waiting -= 1
            self.active += 1
        try:
            yield
        finally:
            with self._cond:
                self.active -= 1
                self._cond.notify()


@dataclass(eq=False)
class _Slot:
    rgb: np.ndarray
    done: bool = False
    error: BaseException | None = None


class VisionBatcher:
    """Vision batching: the images of requests that run together go through the vision encoder in one pass.

    The first request to arrive leads: it waits up to ``max_wait_s`` for others (less when ``max_batch``
    images are pending), encodes them all with `Segmenter.encode_images`, and wakes the others, which
    then find their image in the engine's cache. One batch is encoded at a time; a request left out
    of a full batch joins the next one. If a batch runs out of memory, its requests encode their images
    one by one instead; any other error reaches every request of the batch.
    """

    def __init__(self, segmenter: Any, max_batch: int, max_wait_s: float) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_s >= 0")
        self.segmenter, self.max_batch, self.max_wait_s = segmenter, max_batch, max_wait_s
        self._cond = threading.Condition()
        self._pending: list[_Slot] = []
        self._leading = False
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=1000)  # recent batches, for stats

    def encode(self, rgb: np.ndarray) -> None:
        """Return once ``rgb``'s vision features are in the segmenter's cache (encoded with whoever else came)."""
        slot = _Slot(rgb)
        with self._cond:
            self._pending.append(slot)
            self._cond.notify_all()
        while True:
            with self._cond:
                while not slot.done and self._leading:
                    self._cond.wait()
                if slot.done:
                    if slot.error is not None:
                        raise slot.error
                    return
                self._leading = True
                deadline = time.monotonic() + self.max_wait_s
                while len(self._pending) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
                batch = self._pending[: self.max_batch]
                del self._pending[: len(batch)]
            error: BaseException | None = None
            out_of_memory = False
            try:
                self.segmenter.encode_images([s.rgb for s in batch])
            except _oom_errors() as exc:
                if len(batch) == 1:  # alone already: trying again alone would fail the same way
                    error = exc
                else:  # too big together: each request encodes its own image instead
                    log.warning("out of memory encoding a batch of %d images; encoding them one by one: %s",
                                len(batch), exc)
                    out_of_memory = True
            except BaseException as exc:  # handed to every request of the batch, which raises it
                error = exc
            if out_of_memory:  # outside the `except`: the failed pass's frames and tensors are gone now
                _release_memory()  # the caches stay: waiting requests may still need their features
            with self._cond:
                for s in batch:
                    s.done, s.error = True, error
                self._leading = False
                self.batch_sizes.append(len(batch))
                self._cond.notify_all()


@dataclass(frozen=True)
class SegmentOptions:
    score_threshold: float = 0.5
    mask_threshold: float = 0.5
    fill_holes: float = 0.0
    min_island: float = 0.0
    smooth: int = 0
    max_instances: int | None = None
    boxes: Any = None  # exemplar boxes, XYXY pixels (see `Segmenter.segment`)
    box_labels: Any = None

    def cleanup(self) -> CleanupOptions:
        try:
            return CleanupOptions(fill_holes=self.fill_holes, min_island=self.min_island, smooth=self.smooth)
        except ValueError as exc:
            raise InputError(str(exc)) from None


class SegmentService:
    """Owns the segmenter (loaded once, in the background or up front) and the admission gate."""

    def __init__(self, settings: Settings, segmenter: Any | None = None) -> None:
        self.settings = settings
        self.segmenter = segmenter
        self.load_error: str | None = None
        self.loading = False
        self.load_seconds: float | None = None  # how long the last successful load took
        # Called with (segmentation, options) after each successful `segment` (metrics, drift, the access log).
        self.observers: list[Callable[[Segmentation, SegmentOptions], None]] = []
        self.gate = AdmissionGate(settings.max_concurrent, settings.max_queue, settings.queue_timeout_s)
        self._load_lock = threading.Lock()
        self._load_started = False
        self._load_done = threading.Event()  # set when a background load ended, loaded or failed
        self._batcher: VisionBatcher | None = None
        batch = min(settings.vision_batch, settings.max_concurrent)
        if settings.vision_batch > settings.max_concurrent:
            log.warning("vision_batch=%d is capped by max_concurrent=%d (a batch holds requests that run together)",
                        settings.vision_batch, settings.max_concurrent)
        self._batch = batch

    @property
    def batcher(self) -> VisionBatcher | None:
        """The dynamic batcher, when ``vision_batch`` > 1 and the model is loaded."""
        if self._batch > 1 and self._batcher is None and self.segmenter is not None \
                and hasattr(self.segmenter, "encode_images"):
            with self._load_lock:
                if self._batcher is None:
                    # Room for every request that may run at once plus a batch, so no batch evicts
                    # features that admitted requests have yet to use.
                    self.segmenter.reserve_image_cache(self.settings.max_concurrent + self._batch)
                    self._batcher = VisionBatcher(self.segmenter, self._batch,
                                                  self.settings.vision_batch_wait_ms / 1000)
        return self._batcher

    # ------------------------------------------------------------------ lifecycle
    def load(self) -> None:
        """Load the model named in the settings (blocking). Errors are kept for /ready and the UI."""
        from sam3studio.loading import load_segmenter

        with self._load_lock:
            if self.segmenter is not None:
                return
            self.loading = True
            t0 = time.perf_counter()
            log.info("Loading SAM 3 from %s …", self.settings.model)
            try:
                self.segmenter = load_segmenter(self.settings.model, device=self.settings.device,
                                                dtype=self.settings.dtype, translator=self.settings.translator,
                                                compile=self.settings.compile)
                self.load_error = None
                self.load_seconds = time.perf_counter() - t0
                log.info("Model ready in %.1f s: %s", self.load_seconds, self.segmenter.info())
            except Exception as exc:  # kept and shown: the server stays up to say what went wrong
                self.load_error = str(exc)
                log.error("Model failed to load: %s", exc)
            finally:
                self.loading = False
                self._load_done.set()

    def load_in_background(self) -> threading.Thread:
        self._load_started = True
        thread = threading.Thread(target=self.load, name="sam3studio-model-load", daemon=True)
        thread.start()
        return thread

    @property
    def ready(self) -> bool:
        return self.segmenter is not None

    def require_ready(self) -> Any:
        if self.segmenter is not None:
            return self.segmenter
        if self.load_error:
            raise NotReady(f"the model could not be loaded: {self.load_error}")
        raise NotReady("the model is still loading; try again in a moment")

    def shared_detector(self, wait_s: float = 600.0) -> Any | None:
        """The image model, for the video model to use as its detector, or None to let it load its own.

        Only a `Sam3Model` (eager, not compiled) loaded from the video model's checkpoint on the device
        and in the dtype the settings resolve to. While the image model is still loading, waits for it
        (up to ``wait_s``), so a video job at start-up does not load a second detector.
        """
        from sam3studio.model import resolve_device, resolve_dtype

        if self.segmenter is None and self._load_started and not self._load_done.wait(wait_s):
            return None
        seg, s = self.segmenter, self.settings
        if seg is None or getattr(seg, "architecture", "") != "Sam3Model" or getattr(seg, "compiled", False):
            return None
        if getattr(seg, "source", None) != (s.video_model or s.model):
            return None
        try:
            device = resolve_device(s.device)
            same_place = str(seg.device) == str(device) and seg.dtype == resolve_dtype(s.dtype, device)
        except Sam3StudioError:
            return None
        return seg.model if same_place else None

    def info(self) -> dict[str, Any]:
        model = self.segmenter.info() if self.segmenter is not None else {"source": self.settings.model}
        return {"ready": self.ready, "loading": self.loading, "error": self.load_error, "model": model}

    # ------------------------------------------------------------------ inputs
    def decode_image(self, data: bytes | np.ndarray | Any) -> np.ndarray:
        return load_image(data, max_pixels=self.settings.max_pixels, max_bytes=self.settings.max_upload_bytes)

    def fetch_image(self, url: str) -> np.ndarray:
        from sam3studio.io.urls import FetchPolicy, fetch_url

        policy = FetchPolicy(max_bytes=self.settings.max_upload_bytes, timeout=self.settings.url_timeout_s,
                             allow_private=self.settings.allow_private_urls)
        return self.decode_image(fetch_url(url, policy))

    def parse_prompts(self, prompts: str | Sequence[str] | None) -> list[str]:
        return parse_prompts(prompts, max_prompts=self.settings.max_prompts, max_chars=self.settings.max_prompt_chars)

    # ------------------------------------------------------------------ work
    def segment(self, image: np.ndarray, prompts: str | Sequence[str] | None,
                options: SegmentOptions = SegmentOptions(), cancelled: Callable[[], bool] | None = None) -> Segmentation:
        """Validate, wait for admission, run the model. Raises only `Sam3StudioError` for bad input or load.

        ``cancelled`` says whether the caller has gone away: checked while queued and once more before
        model work starts (a running forward pass is not interrupted). An out-of-memory error fails this
        request with `OutOfMemory` after freeing the caches, so the next request starts clean.
        """
        no_prompt = prompts is None or (isinstance(prompts, (list, tuple)) and not prompts)
        queries = None if no_prompt and options.boxes is not None else self.parse_prompts(prompts)
        cleanup = options.cleanup()
        limit = min(options.max_instances or self.settings.max_instances, self.settings.max_instances)
        segmenter = self.require_ready()
        batcher = self.batcher

        def work() -> Segmentation:
            if batcher is not None and not segmenter.has_image(image):
                batcher.encode(image)
            return segmenter.segment(image, queries, score_threshold=options.score_threshold,
                                     mask_threshold=options.mask_threshold, cleanup=cleanup, max_instances=limit,
                                     boxes=options.boxes, box_labels=options.box_labels)

        seg = self._run(cancelled, work,
            f"a {image.shape[1]}x{image.shape[0]} image with {len(queries or ())} prompt(s)",
            "out of memory while segmenting this image; memory was freed: try again, "
            "or send a smaller image or fewer prompts")
        for observe in self.observers:
            try:
                observe(seg, options)
            except Exception:  # watching must never fail the request
                log.exception("a segment observer failed")
        return seg

    def refine(self, image: np.ndarray, points: Any = None, point_labels: Any = None, box: Any = None,
               mask: np.ndarray | None = None, mask_threshold: float = 0.5,
               cancelled: Callable[[], bool] | None = None) -> Any:
        """One object from clicks and/or a box (`Segmenter.refine`), through the same admission gate."""
        segmenter = self.require_ready()
        return self._run(cancelled, lambda: segmenter.refine(image, points=points, point_labels=point_labels, box=box,
                                                             mask=mask, mask_threshold=mask_threshold),
                         f"refining an object on a {image.shape[1]}x{image.shape[0]} image",
                         "out of memory while refining this object; memory was freed: try again")

    def _run(self, cancelled: Callable[[], bool] | None, work: Callable[[], Any], what: str, oom_message: str) -> Any:
        segmenter = self.segmenter
        with self.gate.admit(cancelled):
            if cancelled is not None and cancelled():
                raise Cancelled("the client disconnected before its turn")
            try:
                return work()
            except _oom_errors() as exc:
                log.error("out of memory on %s: %s", what, exc)
            # Outside the `except`: the error's traceback (frames holding the failed pass's tensors) is gone now.
            _free_memory(segmenter)
            raise OutOfMemory(oom_message)
