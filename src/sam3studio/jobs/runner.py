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
earlier partial outputs deleted first, so no accepted job is silently lost. A graceful stop (`stop`,
the server's SIGTERM) interrupts only the running job, before its next frame; queued jobs stay queued.

States move only forward, by compare-and-set in the store: a job cancelled while it finishes stays
cancelled. Finished, failed and cancelled jobs keep their row (and a done or failed job its files) for
``video_job_retention_h``; the sweep (at start-up and every `SWEEP_EVERY_S`) then removes the files and
leaves a tombstone row, so the id answers 410 Gone; tombstones are forgotten after `TOMBSTONE_DAYS`.
New jobs are refused (`InsufficientStorage`, 507) while the data dir has less than ``min_free_disk_mb`` free.
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

from sam3studio.errors import (
    InputError,
    InputTooLargeError,
    InsufficientStorage,
    JobGone,
    JobNotFound,
    Overloaded,
    Sam3StudioError,
)
from sam3studio.jobs.store import ACTIVE_STATES, DB_NAME, GONE_STATES, JobStore
from sam3studio.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["JobRunner", "SWEEP_EVERY_S", "TOMBSTONE_DAYS"]

INPUT_STEM = "input"
SWEEP_EVERY_S = 600.0  # how often finished jobs past their retention are swept while the server runs
TOMBSTONE_DAYS = 30.0  # a swept or deleted job's id answers 410 this long, then 404
ORPHAN_AGE_S = 3600.0  # a job folder with no row (a crash mid-upload) is removed once untouched this long


class _Stop:
    """Sentinel put on the queue to end the worker."""


def _newest_mtime(folder: Path) -> float:
    times = [folder.stat().st_mtime]
    for child in folder.rglob("*"):
        try:
            times.append(child.stat().st_mtime)
        except OSError:
            pass
    return max(times)


class JobRunner:
    """Accepts video jobs, runs them one at a time on its own worker thread, and answers their state.

    ``segmenter`` may be a loaded `VideoSegmenter`; otherwise ``settings.video_model`` (or
    ``settings.model``) is loaded on the first job, sharing the detector that ``detector()`` returns
    (the image segmenter's, when it comes from the same checkpoint). See the module docstring for why video jobs do not
    share the image requests' admission gate. ``sweep_every_s`` sets how often the retention sweep runs.
    """

    def __init__(self, settings: Settings, segmenter: Any | None = None, store: JobStore | None = None,
                 detector: Callable[[], Any] | None = None, sweep_every_s: float = SWEEP_EVERY_S) -> None:
        self.settings = settings
        self._detector = detector  # gives the image segmenter's Sam3Model to share, or None
        self.data_dir = Path(settings.data_dir).expanduser()
        self.jobs_dir = self.data_dir / "jobs"
        self._store = store
        self.segmenter = segmenter
        self.sweep_every_s = sweep_every_s
        self.load_error: str | None = None
        self._queue: queue.Queue[Any] = queue.Queue()
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.RLock()  # admission (count + insert), state changes and the cancel table
        self._stopping = threading.Event()  # a graceful stop: interrupt the running job, leave queued ones
        self._thread: threading.Thread | None = None
        self._sweeper: threading.Thread | None = None
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
        """Sweep, recover unfinished jobs from the store and start the worker and the sweeper (idempotent)."""
        if self.running:
            return
        self._stopping = threading.Event()
        self.start_error = None
        self._queue = queue.Queue()
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.sweep()
        self._recover()
        self._thread = threading.Thread(target=self._work, name="sam3studio-video-jobs", daemon=True)
        self._thread.start()
        self._sweeper = threading.Thread(target=self._sweep_loop, args=(self._stopping,),
                                         name="sam3studio-video-sweep", daemon=True)
        self._sweeper.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop gracefully: the running job is interrupted before its next frame and stays ``running`` in the
        store; queued jobs stay ``queued``. The next start runs them all."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        self._queue.put(_Stop)
        thread.join(timeout)
        if self._sweeper is not None:
            self._sweeper.join(timeout)
        self._thread = self._sweeper = None

    def _recover(self) -> None:
        for job in self.store.in_states(("cancelled",)):  # cancelled while running when the server stopped
            shutil.rmtree(self.job_dir(job["id"]), ignore_errors=True)
        for job in self.store.in_states(ACTIVE_STATES):
            if job["state"] == "running":
                log.warning("video job %s was running when the server stopped; running it again from the start",
                            job["id"])
            self._clear_outputs(job["id"])
            self.store.update(job["id"], only_from=ACTIVE_STATES, state="queued", progress_done=0, error=None,
                              deadline=None)
            self._cancel[job["id"]] = threading.Event()
            self._queue.put(job["id"])

    # ------------------------------------------------------------------ retention
    @property
    def retention_s(self) -> float:
        return self.settings.video_job_retention_h * 3600.0

    def sweep(self, now: float | None = None) -> int:
        """Remove the files of finished jobs past their retention (leaving tombstones), forget old tombstones
        and remove orphaned job folders. Returns how many jobs were swept."""
        now = time.time() if now is None else now
        hours = self.settings.video_job_retention_h
        swept = 0
        for job in self.store.finished_before(now - self.retention_s):
            with self._lock:
                if self.current == job["id"]:
                    continue
                shutil.rmtree(self.job_dir(job["id"]), ignore_errors=True)
                self.store.tombstone(job["id"], "expired", f"the job {job['state']} more than {hours:g} h ago and "
                                     "was removed (video_job_retention_h)")
                self._cancel.pop(job["id"], None)
            swept += 1
        self.store.forget_tombstones(now - TOMBSTONE_DAYS * 86400)
        if self.jobs_dir.is_dir():
            known = self.store.ids()
            for folder in self.jobs_dir.iterdir():
                if folder.is_dir() and folder.name not in known and now - _newest_mtime(folder) > ORPHAN_AGE_S:
                    shutil.rmtree(folder, ignore_errors=True)
        if swept:
            log.info("swept %d video job(s) older than %g h", swept, hours)
        return swept

    def _sweep_loop(self, stopping: threading.Event) -> None:
        while not stopping.wait(self.sweep_every_s):
            try:
                self.sweep()
            except Exception:  # the next round tries again
                log.exception("sweeping old video jobs failed")

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
    def free_disk_bytes(self) -> int:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(self.data_dir).free

    def check_disk(self) -> None:
        floor = int(self.settings.min_free_disk_mb * 1024 * 1024)
        free = self.free_disk_bytes()
        if free < floor:
            raise InsufficientStorage(f"the server's data dir has {free / 2**20:.0f} MB free, under the floor of "
                                      f"{floor / 2**20:.0f} MB (min_free_disk_mb): no new video job until space is freed")

    def check_capacity(self) -> None:
        if self.store.count() >= self.settings.max_video_jobs:
            raise Overloaded(f"{self.settings.max_video_jobs} video jobs are queued or running already; "
                             "try again later", retry_after=30)
        self.check_disk()

    def submit(self, write_input: Callable[[Path], None], suffix: str, params: dict[str, Any]) -> dict[str, Any]:
        """Accept a job: ``write_input(path)`` saves the video at ``path``; it is probed and checked
        against the limits (`InputError` / `InputTooLargeError`) before the job is queued.

        ``params``: ``prompts`` (str or list), ``threshold``, ``stride``, ``start``, ``end``, ``max_frames``.
        Raises `Overloaded` with a full queue and `InsufficientStorage` below the disk floor (checked before
        and after the upload is written).
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
            if info.rotation:
                params["video"]["rotation"] = info.rotation
            with self._lock:
                self.check_capacity()  # again, atomically with the insert (and with the upload on disk)
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
        """The job's row; `JobGone` for a deleted or swept job (a tombstone), `JobNotFound` for an unknown id."""
        self.job_dir(job_id)  # validates the id's form
        job = self.store.get(job_id)
        if job is None:
            raise JobNotFound(f"no video job {job_id!r}")
        if job["state"] in GONE_STATES:
            raise JobGone(f"video job {job_id} is gone: {job['error'] or job['state']}")
        return job

    def cancel(self, job_id: str) -> str:
        """Cancel a queued or running job, or delete a finished one; returns the state it ends in.

        A queued or running job becomes ``cancelled`` (its files are removed; the row stays for the retention
        period, then it is swept); a finished one is removed with its files at once, leaving a tombstone
        (``deleted``: its id answers 410). A job that finishes while this runs stays cancelled or is deleted,
        never shown as done.
        """
        job = self.get(job_id)
        with self._lock:
            if self.store.update(job_id, only_from=ACTIVE_STATES, state="cancelled", deadline=None):
                ended = "cancelled"
            else:
                self.store.tombstone(job_id, "deleted", "the job was deleted by a client")
                ended = "deleted"
            event = self._cancel.pop(job_id, None)
            if event is not None:
                event.set()
            running = self.current == job_id
        if not running:  # the worker cleans up after the job it is running once it has stopped
            shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        log.info("video job %s (%s) %s", job_id, job["state"], ended)
        return ended

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
                                                  max_prompts=s.max_prompts, max_prompt_chars=s.max_prompt_chars,
                                                  detector=detector)
        return self.segmenter

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is _Stop or self._stopping.is_set():  # what is still queued stays queued in the store
                return
            started = time.monotonic()
            try:
                self._run(job_id)
            except Exception:  # never let one job end the worker
                log.exception("video job %s: unexpected error", job_id)
                try:
                    self.store.update(job_id, only_from=("running",), state="failed",
                                      error="internal error; the server log has the details")
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

    def _claim(self, job_id: str) -> threading.Event | None:
        """Move a queued job to running (or skip it: cancelled, deleted, already taken)."""
        with self._lock:
            event = self._cancel.setdefault(job_id, threading.Event())
            if event.is_set() or self._stopping.is_set():
                return None
            deadline = time.time() + self.settings.video_job_timeout_s
            if not self.store.update(job_id, only_from=("queued",), state="running", deadline=deadline,
                                     progress_done=0, error=None):
                return None
            self.current = job_id
            return event

    def _run(self, job_id: str) -> None:
        event = self._claim(job_id)
        if event is None:
            return
        job = self.store.get(job_id)
        assert job is not None
        input_path = self.input_path(job_id)
        if input_path is None:
            self._finish(job_id, "failed", "the uploaded video is missing from the job folder")
            return
        self._clear_outputs(job_id)
        summary, error, interrupted = self._track(job_id, job, input_path, event)
        if interrupted:
            self._finish(job_id, None, None)
        elif error is not None:
            self._finish(job_id, "failed", error)
        else:
            self._finish(job_id, "done", None, int(summary["frames_processed"]) if summary else 0)

    def _track(self, job_id: str, job: dict[str, Any], input_path: Path,
               event: threading.Event) -> tuple[dict[str, Any] | None, str | None, bool]:
        """Run the tracking; returns (summary, error, interrupted by a cancel or a stop)."""
        from sam3studio.video.sinks import write_tracking

        params, deadline = job["params"], float(job["deadline"])
        stopping, timed_out = self._stopping, threading.Event()

        def should_stop() -> bool:
            if time.time() > deadline:
                timed_out.set()
            return event.is_set() or stopping.is_set() or timed_out.is_set()

        last = [0.0]

        def progress(done: int, total: int | None) -> None:
            now = time.monotonic()
            if now - last[0] >= 0.25 or (total is not None and done >= total):
                last[0] = now
                self.store.update(job_id, only_from=("running",), progress_done=done, progress_total=total)

        error: str | None = None
        summary: dict[str, Any] | None = None
        try:
            segmenter = self._segmenter()
            run = segmenter.track(input_path, params["prompts"], score_threshold=float(params["threshold"]),
                                  start=params.get("start"), end=params.get("end"), stride=int(params.get("stride") or 1),
                                  max_frames=params.get("max_frames"), limits=self.limits(),
                                  max_prompts=self.settings.max_prompts, max_prompt_chars=self.settings.max_prompt_chars)
            if run.expected_frames is not None:
                self.store.update(job_id, only_from=("running",), progress_total=run.expected_frames)
            summary = write_tracking(run, self.job_dir(job_id), formats=("jsonl", "summary", "mp4"),
                                     progress=progress, should_stop=should_stop)
        except Sam3StudioError as exc:
            error = str(exc)
        except Exception as exc:  # a failing job must say why, and the worker must go on
            log.exception("video job %s failed", job_id)
            error = f"{type(exc).__name__}: {exc}"
        if timed_out.is_set() and not (event.is_set() or stopping.is_set()):
            error = (f"the job ran past its time limit of {self.settings.video_job_timeout_s:g} s "
                     "(video_job_timeout_s); process a shorter part with start/end, stride or max_frames")
        interrupted = event.is_set() or (stopping.is_set() and summary is not None and not summary.get("completed"))
        return summary, error, interrupted

    def _finish(self, job_id: str, state: str | None, error: str | None, frames: int | None = None) -> None:
        """Record the end of a run that this worker holds: ``state`` None for an interrupted run.

        Under the lock and by compare-and-set: a job cancelled or deleted meanwhile keeps that state (and its
        files go); an interrupted one stays ``running`` for the next start when the server is stopping.
        """
        with self._lock:
            self.current = None
            if state is None:
                job = self.store.get(job_id)
                if job is not None and job["state"] == "running" and self._stopping.is_set():
                    log.info("video job %s interrupted by shutdown; it will re-run at the next start", job_id)
                    return
            elif state == "done":
                if self.store.update(job_id, only_from=("running",), state="done", progress_done=frames,
                                     progress_total=frames, error=None):
                    log.info("video job %s done: %d frame(s)", job_id, frames)
                    return
            elif self.store.update(job_id, only_from=("running",), state="failed", error=error):
                log.warning("video job %s failed: %s", job_id, error)
                return
            # Cancelled or deleted while it ran (or the row vanished): its files go.
            self.store.update(job_id, only_from=ACTIVE_STATES, state="cancelled")
            self._cancel.pop(job_id, None)
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

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
                "max_jobs": self.settings.max_video_jobs, "retention_h": self.settings.video_job_retention_h,
                "free_disk_mb": round(self.free_disk_bytes() / 2**20, 1),
                "min_free_disk_mb": self.settings.min_free_disk_mb}

