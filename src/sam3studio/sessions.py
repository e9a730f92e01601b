"""Video sessions for the server: a bounded set of `VideoSession`s shared by the REST API and the UI.

`SessionManager` owns what a server adds to the library's session:

- **Bounds.** At most ``max_sessions`` open (beyond: `Overloaded`, HTTP 503); a video within the
  video jobs' limits (bytes, duration, frames, pixels); at most ``max_session_objects`` objects; a
  session unused for ``session_idle_timeout_s`` ends (a reaper thread checks; the clock is injectable).
- **Fair model work.** Every input (text, clicks, box) takes one turn of the service's `AdmissionGate`,
  the gate of image requests; a propagation runs in its own thread and takes the gate
  ``session_slice_frames`` frames at a time, so image requests interleave with a long propagation.
- **State on disk.** ``data_dir/sessions/<id>/`` holds the uploaded video, the results (SQLite, RLE)
  and ``export/`` (frames.jsonl, summary.json, ytvis.json after every propagation; overlay.mp4 when
  asked for). Sessions are working state: when one ends (idle, or the server stopped), its model
  state and results go, ``export/`` stays, and its id answers `SessionGone` (HTTP 410) with the
  reason; ``GET .../result`` still serves the last export. A deleted session is gone entirely (404).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sam3studio.errors import (
    InputError,
    NotPropagated,
    Overloaded,
    Sam3StudioError,
    SessionBusy,
    SessionGone,
    SessionNotFound,
)
from sam3studio.io.files import atomic_write_json
from sam3studio.settings import Settings
from sam3studio.video.session import VideoSession, trim_memory

log = logging.getLogger(__name__)

__all__ = ["SessionHandle", "SessionManager", "server_sessions"]

INPUT_STEM = "input"
EXPORT_DIR = "export"
ENDED_NAME = "ended.json"
JSON_FORMATS = ("jsonl", "summary", "ytvis")


@dataclass
class SessionHandle:
    """One open session and what the server tracks about it."""

    id: str
    session: VideoSession
    folder: Path
    created: float
    last_used: float
    state: str = "idle"  # idle | propagating | failed
    done: int = 0
    total: int = 0
    error: str | None = None
    exported_version: int = -1  # session.version of the JSON export on disk
    overlay_version: int = -1
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)  # export and state changes


class SessionManager:
    """See the module docstring. ``gate`` is the service's admission gate; ``segmenter`` returns the
    loaded `VideoSegmenter` (the video jobs' own, loaded on first use)."""

    def __init__(self, settings: Settings, gate: Any, segmenter: Callable[[], Any], *,
                 limits: Callable[[], Any] | None = None, job_folder: Callable[[str], tuple[Path, Path]] | None = None,
                 clock: Callable[[], float] = time.monotonic, reap_every_s: float | None = None) -> None:
        self.settings = settings
        self.gate = gate
        self._segmenter = segmenter
        self._limits = limits
        self._job_folder = job_folder
        self.clock = clock
        self.root = Path(settings.data_dir).expanduser() / "sessions"
        self._sessions: dict[str, SessionHandle] = {}
        self._lock = threading.Lock()
        self._reaper: threading.Thread | None = None
        self._stopping = threading.Event()
        self.reap_every_s = reap_every_s or min(5.0, max(0.05, settings.session_idle_timeout_s / 4))
        self.expired = threading.Event()  # set whenever the reaper ends a session (tests wait on it)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """End the sessions a previous process left (keeping their exports) and start the idle reaper."""
        self.root.mkdir(parents=True, exist_ok=True)
        for folder in sorted(self.root.iterdir()):
            if folder.is_dir() and _valid_id(folder.name) and not (folder / ENDED_NAME).exists():
                self._end_folder(folder, "the server restarted; sessions are working state and end with the server")
        if self._reaper is None or not self._reaper.is_alive():
            self._stopping.clear()
            self._reaper = threading.Thread(target=self._reap_loop, name="sam3studio-session-reaper", daemon=True)
            self._reaper.start()

    def stop(self) -> None:
        """End every open session (as a restart would) and stop the reaper."""
        self._stopping.set()
        for sid in list(self._sessions):
            self.end(sid, "the server stopped; sessions are working state and end with the server")
        if self._reaper is not None:
            self._reaper.join(timeout=10)
            self._reaper = None

    def _reap_loop(self) -> None:
        while not self._stopping.wait(self.reap_every_s):
            try:
                self.expire_idle()
            except Exception:  # the reaper must go on
                log.exception("video sessions: the idle check failed")

    def expire_idle(self) -> list[str]:
        """End the sessions unused for longer than the idle timeout (never one that is propagating)."""
        now = self.clock()
        limit = self.settings.session_idle_timeout_s
        with self._lock:
            idle = [h.id for h in self._sessions.values() if h.state != "propagating" and now - h.last_used > limit]
        for sid in idle:
            self.end(sid, f"the session was unused for more than {limit:g} s (session_idle_timeout_s) and ended")
        if idle:
            self.expired.set()
        return idle

    # ------------------------------------------------------------------ create / find / end
    def folder(self, sid: str) -> Path:
        if not _valid_id(sid):
            raise SessionNotFound(f"no video session {sid!r}")
        return self.root / sid

    def check_capacity(self) -> None:
        with self._lock:
            if len(self._sessions) >= self.settings.max_sessions:
                raise Overloaded(f"{self.settings.max_sessions} video sessions are open already (max_sessions); "
                                 "close one or try again later", retry_after=30)

    def create(self, write_input: Callable[[Path], None] | None = None, suffix: str = ".mp4", *,
               job_id: str | None = None) -> SessionHandle:
        """Open a session on an uploaded video (``write_input(path)`` saves it) or on a finished job."""
        self.check_capacity()
        sid = uuid.uuid4().hex
        folder = self.root / sid
        folder.mkdir(parents=True, exist_ok=False)
        try:
            segmenter = self._segmenter()
            options = {"score_threshold": 0.5, "max_objects": self.settings.max_session_objects}
            limits = self._limits() if self._limits is not None else None
            if job_id is not None:
                if self._job_folder is None:
                    raise InputError("this server has no video jobs to open a session on")
                job_dir, video = self._job_folder(job_id)
                path = folder / f"{INPUT_STEM}{video.suffix}"
                _link_or_copy(video, path)
                session = VideoSession.from_job(segmenter, job_dir, path, limits=limits, work_dir=folder / "work",
                                                **options)
            else:
                if write_input is None:
                    raise InputError("give a video or a job_id")
                path = folder / f"{INPUT_STEM}{suffix.lower() if suffix else '.video'}"
                write_input(path)
                session = VideoSession.open(segmenter, path, limits=limits, work_dir=folder / "work", **options)
            now = self.clock()
            handle = SessionHandle(sid, session, folder, now, now)
            with self._lock:
                if len(self._sessions) >= self.settings.max_sessions:  # again, atomically with the insert
                    session.close()
                    raise Overloaded(f"{self.settings.max_sessions} video sessions are open already", retry_after=30)
                self._sessions[sid] = handle
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        log.info("video session %s opened: %d frames, %dx%d", sid, session.frame_count, session.width, session.height)
        return handle

    def get(self, sid: str, touch: bool = True) -> SessionHandle:
        folder = self.folder(sid)
        with self._lock:
            handle = self._sessions.get(sid)
        if handle is None:
            ended = folder / ENDED_NAME
            if ended.is_file():
                reason = json.loads(ended.read_text(encoding="utf-8")).get("reason", "it ended")
                raise SessionGone(f"video session {sid} has ended: {reason}. Its last export, if any, stays at "
                                  f"GET /api/v1/sessions/{sid}/result; open a new session to edit again")
            raise SessionNotFound(f"no video session {sid!r}")
        if touch:
            handle.last_used = self.clock()
        return handle

    def end(self, sid: str, reason: str) -> None:
        """Close the session and free its memory; keep its export and answer 410 from now on."""
        with self._lock:
            handle = self._sessions.pop(sid, None)
        if handle is None:
            return
        self._stop_propagation(handle)
        handle.session.close()
        self._end_folder(handle.folder, reason)
        trim_memory()
        log.info("video session %s ended: %s", sid, reason)

    def delete(self, sid: str) -> None:
        """Close the session and delete everything it had (its id answers 404 from now on)."""
        folder = self.folder(sid)
        with self._lock:
            handle = self._sessions.pop(sid, None)
        if handle is None and not folder.is_dir():
            raise SessionNotFound(f"no video session {sid!r}")
        if handle is not None:
            self._stop_propagation(handle)
            handle.session.close()
        shutil.rmtree(folder, ignore_errors=True)
        trim_memory()

    def _end_folder(self, folder: Path, reason: str) -> None:
        for child in folder.iterdir():
            if child.name in (EXPORT_DIR, ENDED_NAME):
                continue
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
        atomic_write_json(folder / ENDED_NAME, {"reason": reason, "ended": time.time()})

    def _stop_propagation(self, handle: SessionHandle) -> None:
        handle.stop.set()
        thread = handle.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=60)

    def open_count(self) -> int:
        with self._lock:
            return len(self._sessions)

    # ------------------------------------------------------------------ model work
    def _turn(self, handle: SessionHandle, work: Callable[[], Any], cancelled: Callable[[], bool] | None = None) -> Any:
        """One unit of model work on a session, through the admission gate."""
        if handle.state == "propagating":
            raise SessionBusy("the session is propagating; wait until GET shows it idle")
        with self.gate.admit(cancelled):
            result = work()
        handle.last_used = self.clock()
        return result

    def add_text(self, sid: str, frame: int, prompts: Sequence[str], threshold: float | None = None,
                 cancelled: Callable[[], bool] | None = None) -> list[Any]:
        handle = self.get(sid)
        return self._turn(handle, lambda: handle.session.add_text(frame, prompts, score_threshold=threshold), cancelled)

    def add_clicks(self, sid: str, frame: int, points: Any, labels: Any, object_id: int | None = None,
                   label: str = "object", cancelled: Callable[[], bool] | None = None) -> Any:
        handle = self.get(sid)
        return self._turn(handle, lambda: handle.session.add_clicks(frame, points, labels, object_id, label=label),
                          cancelled)

    def add_box(self, sid: str, frame: int, box: Any, object_id: int | None = None, label: str = "object",
                cancelled: Callable[[], bool] | None = None) -> Any:
        handle = self.get(sid)
        return self._turn(handle, lambda: handle.session.add_box(frame, box, object_id, label=label), cancelled)

    def remove_object(self, sid: str, object_id: int) -> int:
        handle = self.get(sid)
        if handle.state == "propagating":
            raise SessionBusy("the session is propagating; wait until GET shows it idle")
        return handle.session.remove_object(object_id)

    def propagate(self, sid: str, direction: str = "forward", start_frame: int | None = None,
                  object_ids: Sequence[int] | None = None) -> SessionHandle:
        """Start a propagation in the background; follow it with `status` (``done`` / ``total``)."""
        handle = self.get(sid)
        with handle.lock:
            if handle.state == "propagating":
                raise SessionBusy("the session is propagating already")
            run = handle.session.propagate(direction, start_frame, object_ids)
            handle.state, handle.done, handle.total, handle.error = "propagating", 0, run.total, None
            handle.stop.clear()
            handle.thread = threading.Thread(target=self._propagate, args=(handle, run),
                                             name=f"sam3studio-session-{sid[:8]}", daemon=True)
            handle.thread.start()
        return handle

    def _propagate(self, handle: SessionHandle, run: Any) -> None:
        slice_frames = self.settings.session_slice_frames
        error: str | None = None
        try:
            finished = False
            while not finished and not handle.stop.is_set():
                try:
                    with self.gate.admit(handle.stop.is_set):
                        for _ in range(slice_frames):
                            try:
                                next(run)
                            except StopIteration:
                                finished = True
                                break
                            handle.done = run.done
                            handle.last_used = self.clock()
                except Overloaded:  # the queue is full of image requests: let them pass, then go on
                    handle.stop.wait(0.5)
            if finished:
                self._export_json(handle)
        except Sam3StudioError as exc:
            if not handle.stop.is_set():
                error = str(exc)
        except Exception as exc:  # a failed propagation says why; the server goes on
            log.exception("video session %s: propagation failed", handle.id)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            run.close()
            with handle.lock:
                handle.state = "failed" if error else "idle"
                handle.error = error
                handle.last_used = self.clock()

    def wait(self, sid: str, timeout: float = 300.0) -> SessionHandle:
        """Block until the session's propagation (if any) has ended (for tests, the UI and the CLI)."""
        handle = self.get(sid)
        thread = handle.thread
        if thread is not None:
            thread.join(timeout)
        return handle

    # ------------------------------------------------------------------ results
    def status(self, sid: str) -> dict[str, Any]:
        handle = self.get(sid, touch=False)
        s = handle.session
        return {"id": handle.id, "state": handle.state, "progress": {"done": handle.done, "total": handle.total},
                "objects": s.object_list(), "frames": s.frame_count, "fps": round(s.fps, 4), "width": s.width,
                "height": s.height, "error": handle.error, "propagations": s.propagations,
                "idle_timeout_s": self.settings.session_idle_timeout_s}

    def export_dir(self, sid: str) -> Path:
        return self.folder(sid) / EXPORT_DIR

    def _export_json(self, handle: SessionHandle, overlay: bool = False) -> None:
        """Bring ``export/`` up to the session's results: the JSON files, and with ``overlay`` the MP4 too.

        One `write_tracking` pass writes what is asked and removes an earlier overlay, so an overlay is
        either current or absent.
        """
        with handle.lock:
            version = handle.session.version
            if handle.exported_version == version and (not overlay or handle.overlay_version == version):
                return
            formats = (*JSON_FORMATS, "mp4") if overlay else JSON_FORMATS
            if overlay:  # decoding and drawing every frame: a turn like model work
                with self.gate.admit():
                    handle.session.export(handle.folder / EXPORT_DIR, formats=formats)
            else:
                handle.session.export(handle.folder / EXPORT_DIR, formats=formats)
            handle.exported_version = version
            handle.overlay_version = version if overlay else -1

    def result_folder(self, sid: str, overlay: bool = False) -> Path:
        """The export folder, brought up to date with the session's results (an ended session's last export).

        `InputError` before the first completed propagation (nothing to export yet).
        """
        try:
            handle = self.get(sid)
        except SessionGone:
            folder = self.export_dir(sid)
            if (folder / "summary.json").is_file():
                return folder
            raise
        if handle.session.propagations == 0:
            raise NotPropagated("nothing to export yet: propagate the session first (POST .../propagate)")
        if handle.state == "propagating":
            raise SessionBusy("the session is propagating; its result is ready when GET shows it idle")
        self._export_json(handle, overlay=overlay)
        return handle.folder / EXPORT_DIR


def _valid_id(sid: str) -> bool:
    return len(sid) == 32 and all(c in "0123456789abcdef" for c in sid)


def _link_or_copy(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


def server_sessions(settings: Settings, service: Any, jobs: Any) -> SessionManager:
    """The manager `create_app` keeps: the service's admission gate, the video jobs' model, limits and done jobs."""

    def job_folder(job_id: str) -> tuple[Path, Path]:
        job = jobs.get(job_id)  # JobNotFound (404) for an unknown id
        if job["state"] != "done":
            raise InputError(f"video job {job_id} is {job['state']}; a session opens on a done job")
        video = jobs.input_path(job_id)
        if video is None:
            raise InputError(f"video job {job_id} has no video left to open")
        return jobs.job_dir(job_id), video

    return SessionManager(settings, service.gate, jobs.video_segmenter, limits=jobs.limits, job_folder=job_folder)
