"""What every tab of the web UI shares: the context a tab builder gets, the relabel rows it hands back, and
small helpers (run folders, the error a handler raises, the concurrency group of model work).

A tab module imports this module, `ui.i18n` and the library; it never imports `ui.app` or another tab.
"""

from __future__ import annotations

import collections
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from sam3studio.jobs import JobRunner
from sam3studio.service import SegmentService
from sam3studio.sessions import SessionManager, server_sessions
from sam3studio.settings import Settings
from sam3studio.ui.i18n import text as t

KEEP_RUN_DIRS = 32


class RunDirs:
    """Per-run download folders; only the newest few are kept on disk."""

    def __init__(self, keep: int = KEEP_RUN_DIRS) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sam3studio-ui-"))
        self._dirs: collections.deque[Path] = collections.deque()
        self._keep = keep
        self._lock = threading.Lock()

    def new(self) -> Path:
        with self._lock:
            path = Path(tempfile.mkdtemp(dir=self.root))
            self._dirs.append(path)
            while len(self._dirs) > self._keep:
                shutil.rmtree(self._dirs.popleft(), ignore_errors=True)
            return path


@dataclass
class UiContext:
    """What a tab builder needs from the page: the service (every handler goes through it), the settings,
    the download folders, the language the page is built in, the language switch (an input of every handler
    that answers in words), the video job runner (`job_runner`) and the video sessions (`session_manager`)."""

    service: SegmentService
    language: gr.Radio
    first_lang: str
    jobs: JobRunner | None = None
    run_dirs: RunDirs = field(default_factory=RunDirs)
    sessions: SessionManager | None = None
    _runner_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def settings(self) -> Settings:
        return self.service.settings

    def job_runner(self) -> JobRunner:
        """The `JobRunner` the page was given (the same as ``POST /api/v1/videos``), or one on
        ``settings.data_dir`` made on first use; started if it is not running."""
        with self._runner_lock:
            if self.jobs is None:
                self.jobs = JobRunner(self.settings, detector=self.service.shared_detector)
            if not self.jobs.running:
                self.jobs.start()
            return self.jobs

    def session_manager(self) -> SessionManager:
        """The video session manager the page was given (the same as ``/api/v1/sessions``), or one made on
        first use on the job runner's model and the service's admission gate."""
        runner = self.job_runner()
        with self._runner_lock:
            if self.sessions is None:
                self.sessions = server_sessions(self.settings, self.service, runner)
                self.sessions.start()
            return self.sessions


@dataclass(frozen=True)
class Relabel:
    """One row of the page's relabel table: a component and what it becomes in a language.

    ``update(lang)`` returns the component's new value or a ``gr.update``. A row with ``keeps`` (a
    parameter name of the ``/language`` endpoint) also reads the component's current value, so that
    it can keep it (a table's rows under translated headers): ``update(lang, value)``, where value is
    None when the page loads.
    """

    component: Any
    update: Callable[..., Any]
    keeps: str | None = None


def texts(**props: str) -> Callable[[str], Any]:
    """A relabel row's ``update``: each property set to the text of its key, e.g.
    ``texts(label="threshold", info="threshold_info")``."""
    return lambda lang: gr.update(**{prop: t(lang, key) for prop, key in props.items()})


def plain(key: str) -> Callable[[str], str]:
    """A relabel row's ``update`` for a component whose value is the text itself (a Markdown block)."""
    return lambda lang: t(lang, key)


def failure(lang: str, exc: Exception) -> gr.Error:
    """The ``gr.Error`` a handler raises for a library error (its message, prefixed in the page's language)."""
    return gr.Error(t(lang, "error", detail=str(exc)))


def segment_events(settings: Settings) -> dict[str, Any]:
    """Event options of every handler that runs the image model. They share one concurrency group of at most
    ``max_concurrent`` at once (with the default of 1, a click and a slider release never race each other)."""
    return {"concurrency_id": "segment", "concurrency_limit": settings.max_concurrent}
