"""Video jobs: the single-worker runner shared by the REST API and the UI (the store is `jobs.store`).

A video job is accepted only once its upload is saved under ``data_dir/jobs/<id>/input.<ext>`` and
probed within the limits; it then waits in a bounded queue (``max_video_jobs`` queued plus running;
beyond that `Overloaded`, HTTP 503). One worker thread runs the jobs one after another and writes
``frames.jsonl``, ``summary.json`` and ``overlay.mp4`` next to the input (`write_tracking`).

Video jobs deliberately do **not** take a slot of the service's `AdmissionGate`: a video may keep the
model busy for minutes, and image requests must stay responsive meanwhile. Videos get their own
worker (and their own model instance, loaded lazily on the first job) instead; at most one video job
runs at a time.

The store (``data_dir/jobs.sqlite3``, WAL) survives restarts: jobs found ``queued`` or ``running`` at
start-up (the server crashed or was stopped mid-job) are queued again and re-run from scratch, their
earlier partial outputs deleted first, so no accepted job is silently lost.
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sam3studio.errors import InputError, InputTooLargeError, JobNotFound, Overloaded, Sam3StudioError
from sam3studio.jobs.store import ACTIVE_STATES, DB_NAME, JobStore
from sam3studio.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["JobRunner"]

INPUT_STEM = "input"


class _Stop:
    """Sentinel put on the queue to end the worker."""


class JobRunner:
    """Accepts video jobs, runs them one at a time on its own worker thread, and answers their state.

    ``segmenter`` may be a loaded `VideoSegmenter`; otherwise ``settings.video_model`` (or
    ``settings.model``) is loaded on the first job, sharing the detector that ``detector()`` returns
    (the image segmenter's, when it comes from the same checkpoint). See the module docstring for why video jobs do not
    share the image requests' admission gate.
    """

    def __init__(self, settings: Settings, segmenter: Any | None = None, store: JobStore | None = None,
                 detector: Callable[[], Any] | None = None) -> None:
        self.settings = settings
        self._detector = detector  # gives the image segmenter's Sam3Model to share, or None
        self.data_dir = Path(settings.data_dir).expanduser()
        self.jobs_dir = self.data_dir / "jobs"
        self._store = store
        self.segmenter = segmenter
        self.load_error: str | None = None
        self._queue: queue.Queue[Any] = queue.Queue()
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()  # admission (count + insert) and the cancel table
        self._thread: threading.Thread | None = None
        self.current: str | None = None
        self.start_error: str | None = None
        # Called with (job id, seconds the worker spent on it, its state after) once per job taken (metrics).
        self.observers: list[Callable[[str, float, str | None], None]] = []

    # ------------------------------------------------------------------ lifecycle
    @property
    def store(self) -> JobStore:
        if self._store is None:
            self._store = JobStore(self.data_dir / DB_NAME)
        return self._store

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Recover unfinished jobs from the store and start the worker (idempotent)."""
        if self.running:
            return
        self._shutdown = False
        self.start_error = None
        self._queue = queue.Queue()
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self._recover()
        self._thread = threading.Thread(target=self._work, name="sam3studio-video-jobs", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker: a running job is interrupted and stays ``running`` in the store, so the next
        start re-runs it."""
        thread = self._thread
        if thread is None:
            return
        self._shutdown = True
        for event in list(self._cancel.values()):
            event.set()
        self._queue.put(_Stop)
        thread.join(timeout)
        self._thread = None

    _shutdown = False

    def _recover(self) -> None:
        for job in self.store.in_states(("cancelled",)):  # cancelled but not yet cleaned up before a stop
            shutil.rmtree(self.job_dir(job["id"]), ignore_errors=True)
            self.store.delete(job["id"])
        for job in self.store.in_states(ACTIVE_STATES):
            log.warning("video job %s was %s when the server stopped; running it again from the start",
                        job["id"], job["state"])
            self._clear_outputs(job["id"])
            self.store.update(job["id"], state="queued", progress_done=0, error=None, deadline=None)
            self._cancel[job["id"]] = threading.Event()
            self._queue.put(job["id"])

    # ------------------------------------------------------------------ paths
    def job_dir(self, job_id: str) -> Path:
        if not (len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)):
            raise JobNotFound(f"no video job {job_id!r}")
        return self.jobs_dir / job_id

    def input_path(self, job_id: str) -> Path | None:
        found = sorted(self.job_dir(job_id).glob(f"{INPUT_STEM}.*"))
        return found[0] if found else None

    def _clear_outputs(self, job_id: str) -> None:
        folder = self.job_dir(job_id)
        if not folder.is_dir():
            return
        for child in folder.iterdir():
            if child.name.startswith(f"{INPUT_STEM}."):
                continue
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)

    def limits(self):
        from sam3studio.video.io import VideoLimits

        s = self.settings
        return VideoLimits(max_frames=s.max_video_frames, max_duration_s=s.max_video_duration_s, max_pixels=s.max_pixels,
                           max_bytes=s.max_video_bytes)

    # ------------------------------------------------------------------ submit / query / cancel
    def check_capacity(self) -> None:
        if self.store.count() >= self.settings.max_video_jobs:
            raise Overloaded(f"{self.settings.max_video_jobs} video jobs are queued or running already; "
                             "try again later", retry_after=30)

    def submit(self, write_input: Callable[[Path], None], suffix: str, params: dict[str, Any]) -> dict[str, Any]:
        """Accept a job: ``write_input(path)`` saves the video at ``path``; it is probed and checked
        against the limits (`InputError` / `InputTooLargeError`) before the job is queued.

        ``params``: ``prompts`` (str or list), ``threshold``, ``stride``, ``start``, ``end``, ``max_frames``.
        """
        from sam3studio.prompts import parse_prompts
        from sam3studio.video.io import VIDEO_SUFFIXES, check_options, plan_video

        params = dict(params)
        params["prompts"] = parse_prompts(params.get("prompts"), max_prompts=self.settings.max_prompts,
                                          max_chars=self.settings.max_prompt_chars)
        params.setdefault("threshold", 0.5)
        params.setdefault("stride", 1)
        for key in ("start", "end", "max_frames"):
            params.setdefault(key, None)
        if not 0.0 < float(params["threshold"]) <= 1.0:
            raise InputError(f"threshold must be in (0, 1], got {params['threshold']}")
        check_options(params["start"], params["end"], int(params["stride"]), params["max_frames"])
        self.check_capacity()  # before the upload is written: refuse cheaply
        suffix = suffix.lower() if suffix.lower() in VIDEO_SUFFIXES else ".video"
        job_id = uuid.uuid4().hex
        folder = self.job_dir(job_id)
        folder.mkdir(parents=True, exist_ok=False)
        try:
            path = folder / f"{INPUT_STEM}{suffix}"
            write_input(path)
            info, expected = plan_video(path, self.limits(), params["start"], params["end"], int(params["stride"]),
                                        params["max_frames"])
            if expected == 0:
                raise InputError("no frames to process with these start/end/stride options")
            params["video"] = {"width": info.width, "height": info.height, "fps": round(info.fps, 4),
                               "frame_count": info.frame_count, "duration_s": info.duration_s}
            with self._lock:
                self.check_capacity()  # again, atomically with the insert
                job = self.store.create(params, job_id=job_id, progress_total=expected)
                self._cancel[job_id] = threading.Event()
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._queue.put(job_id)
        return job

    def submit_file(self, source: str | Path, params: dict[str, Any]) -> dict[str, Any]:
        """Submit a video file already on disk (the UI's upload): it is copied into the job folder."""
        source = Path(source)
        if not source.is_file():
            raise InputError(f"{source.name}: no such video file")
        size = source.stat().st_size
        if size > self.settings.max_video_bytes:
            raise InputTooLargeError(f"the video is {size} bytes; the limit is {self.settings.max_video_bytes}")
        return self.submit(lambda dest: shutil.copyfile(source, dest), source.suffix, params)

    def get(self, job_id: str) -> dict[str, Any]:
        self.job_dir(job_id)  # validates the id's form
        job = self.store.get(job_id)
        if job is None or job["state"] == "cancelled":
            raise JobNotFound(f"no video job {job_id!r}")
        return job

    def cancel(self, job_id: str) -> None:
        """Cancel a queued or running job and delete it with its files; a finished job is just deleted."""
        job = self.get(job_id)
        with self._lock:
            self.store.update(job_id, state="cancelled")  # from here on the job is gone for readers and restarts
            event = self._cancel.get(job_id)
            if event is not None:
                event.set()
            running = self.current == job_id
        if not running:  # the worker cleans up after the job it is running once it has stopped
            self._remove(job_id)
        log.info("video job %s (%s) cancelled", job_id, job["state"])

    def _remove(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        self.store.delete(job_id)
        self._cancel.pop(job_id, None)

    def wait(self, job_id: str, timeout: float = 60.0, every: float = 0.2) -> dict[str, Any]:
        """Poll until the job is no longer queued or running (for tests and the UI)."""
        end = time.monotonic() + timeout
        while True:
            job = self.get(job_id)
            if job["state"] not in ACTIVE_STATES or time.monotonic() > end:
                return job
            time.sleep(every)

    # ------------------------------------------------------------------ worker
    def video_segmenter(self) -> Any:
        """The `VideoSegmenter` jobs run on (loaded now if need be); video sessions use the same model."""
        return self._segmenter()

    _segmenter_lock = threading.Lock()  # one load, whoever asks first (the worker or a session)

    def _segmenter(self) -> Any:
        with self._segmenter_lock:
            return self._load_segmenter()

    def _load_segmenter(self) -> Any:
        if self.segmenter is None:
            from sam3studio.video import load_video_segmenter

            s = self.settings
            source = s.video_model or s.model
            detector = self._detector() if self._detector is not None else None
            log.info("Loading the SAM 3 video model from %s%s …", source,
                     " (sharing the image model's detector)" if detector is not None else "")
            self.segmenter = load_video_segmenter(source, device=s.device, dtype=s.dtype, translator=s.translator,
                                                  max_prompts=s.max_prompts, detector=detector)
        return self.segmenter

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is _Stop:
                return
            started = time.monotonic()
            try:
                self._run(job_id)
            except Exception:  # never let one job end the worker
                log.exception("video job %s: unexpected error", job_id)
                try:
                    self.store.update(job_id, state="failed", error="internal error; the server log has the details")
                except Exception:
                    log.exception("could not record the failure of video job %s", job_id)
            finally:
                self.current = None
                self._observe(job_id, time.monotonic() - started)

    def _observe(self, job_id: str, seconds: float) -> None:
        if not self.observers:
            return
        try:
            job = self.store.get(job_id)
            for observe in self.observers:
                observe(job_id, seconds, job["state"] if job is not None else None)
        except Exception:  # watching must never stop the worker
            log.exception("a video job observer failed")

    def _run(self, job_id: str) -> None:
        from sam3studio.video.sinks import write_tracking

        with self._lock:
            job = self.store.get(job_id)
            if job is None or job["state"] != "queued":
                if job is not None and job["state"] == "cancelled":
                    self._remove(job_id)
                return
            event = self._cancel.setdefault(job_id, threading.Event())
            if event.is_set():
                self._remove(job_id)
                return
            self.current = job_id
            deadline = time.time() + self.settings.video_job_timeout_s
            self.store.update(job_id, state="running", deadline=deadline, progress_done=0, error=None)
        params = job["params"]
        input_path = self.input_path(job_id)
        if input_path is None:
            self.store.update(job_id, state="failed", error="the uploaded video is missing from the job folder")
            return
        self._clear_outputs(job_id)
        timed_out = threading.Event()

        def should_stop() -> bool:
            if time.time() > deadline:
                timed_out.set()
            return event.is_set() or timed_out.is_set()

        last = [0.0]

        def progress(done: int, total: int | None) -> None:
            now = time.monotonic()
            if now - last[0] >= 0.25 or (total is not None and done >= total):
                last[0] = now
                self.store.update(job_id, progress_done=done, progress_total=total)

        error: str | None = None
        summary: dict[str, Any] | None = None
        try:
            segmenter = self._segmenter()
            run = segmenter.track(input_path, params["prompts"], score_threshold=float(params["threshold"]),
                                  start=params.get("start"), end=params.get("end"), stride=int(params.get("stride") or 1),
                                  max_frames=params.get("max_frames"), limits=self.limits())
            if run.expected_frames is not None:
                self.store.update(job_id, progress_total=run.expected_frames)
            summary = write_tracking(run, self.job_dir(job_id), formats=("jsonl", "summary", "mp4"),
                                     progress=progress, should_stop=should_stop)
        except Sam3StudioError as exc:
            error = str(exc)
        except Exception as exc:  # a failing job must say why, and the worker must go on
            log.exception("video job %s failed", job_id)
            error = f"{type(exc).__name__}: {exc}"
        if event.is_set():
            if self._shutdown:  # stopping the server: leave it `running`, the next start re-runs it
                log.info("video job %s interrupted by shutdown; it will re-run at the next start", job_id)
                return
            self._remove(job_id)
            return
        if timed_out.is_set():
            error = (f"the job ran past its time limit of {self.settings.video_job_timeout_s:g} s "
                     "(video_job_timeout_s); process a shorter part with start/end, stride or max_frames")
        if error is not None:
            self.store.update(job_id, state="failed", error=error)
            log.warning("video job %s failed: %s", job_id, error)
            return
        done = int(summary["frames_processed"]) if summary else 0
        self.store.update(job_id, state="done", progress_done=done, progress_total=done)
        log.info("video job %s done: %d frame(s)", job_id, done)

    # ------------------------------------------------------------------ results
    def result(self, job_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The summary and the frames of a done job (`InputError` subclasses are not raised here)."""
        folder = self.job_dir(job_id)
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        if isinstance(summary.get("video"), dict) and summary["video"].get("path"):
            summary["video"]["path"] = Path(summary["video"]["path"]).name  # never leak server paths
        frames = []
        jsonl = folder / "frames.jsonl"
        if jsonl.is_file():
            with jsonl.open(encoding="utf-8") as f:
                frames = [json.loads(line) for line in f if line.strip()]
        return summary, frames

    def output_path(self, job_id: str, name: str) -> Path:
        return self.job_dir(job_id) / name

    def info(self) -> dict[str, Any]:
        return {"queued": self.store.count(("queued",)), "running": self.store.count(("running",)),
                "max_jobs": self.settings.max_video_jobs}
