"""What every tab of the web UI shares: the context a tab builder gets, the relabel rows it hands back, and
small helpers (run folders, the error a handler raises, the concurrency group of model work).

A tab module imports this module, `ui.i18n` and the library; it never imports `ui.app` or another tab.
"""

from __future__ import annotations

import collections
import html
import logging
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from sam3studio.dataset.review import DatasetRegistry
from sam3studio.errors import NotReady
from sam3studio.jobs import JobRunner
from sam3studio.service import SegmentService
from sam3studio.sessions import SessionManager, server_sessions
from sam3studio.settings import Settings
from sam3studio.ui.i18n import text as t

KEEP_RUN_DIRS = 32
log = logging.getLogger("sam3studio.ui")


class RunDirs:
    """Per-run download folders, grouped by browser session: a session keeps its newest few, and all of a
    session's folders are removed when the session ends (`drop`, from the page's ``unload`` event)."""

    def __init__(self, keep: int = KEEP_RUN_DIRS) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sam3studio-ui-"))
        self._dirs: dict[str, collections.deque[Path]] = {}
        self._keep = keep
        self._lock = threading.Lock()

    @staticmethod
    def _name(session: str | None) -> str:
        """A folder name for ``session`` (Gradio's session hash; anything else is reduced to safe characters)."""
        return "".join(c for c in (session or "") if c.isalnum() or c in "-_")[:64] or "no-session"

    def new(self, session: str | None = None) -> Path:
        with self._lock:
            name = self._name(session)
            folder = self.root / name
            folder.mkdir(exist_ok=True)
            path = Path(tempfile.mkdtemp(dir=folder))
            dirs = self._dirs.setdefault(name, collections.deque())
            dirs.append(path)
            while len(dirs) > self._keep:
                shutil.rmtree(dirs.popleft(), ignore_errors=True)
            return path

    def drop(self, session: str | None) -> None:
        """Remove every folder of ``session`` (its browser tab was closed or reloaded)."""
        with self._lock:
            name = self._name(session)
            self._dirs.pop(name, None)
            shutil.rmtree(self.root / name, ignore_errors=True)


def session_of(request: gr.Request | None) -> str | None:
    """The browser session a handler runs for (None when called without Gradio, as tests do)."""
    return getattr(request, "session_hash", None) if request is not None else None


@dataclass
class UiContext:
    """What a tab builder needs from the page: the service (every handler goes through it), the settings,
    the download folders, the language the page is built in, the language switch (an input of every handler
    that answers in words), the video job runner (`job_runner`), the video sessions (`session_manager`) and the
    datasets to review (`serve --dataset`)."""

    service: SegmentService
    language: gr.Radio
    first_lang: str
    jobs: JobRunner | None = None
    datasets: DatasetRegistry | None = None
    run_dirs: RunDirs = field(default_factory=RunDirs)
    sessions: SessionManager | None = None
    _runner_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def settings(self) -> Settings:
        return self.service.settings

    def end_session(self, request: gr.Request) -> None:
        """The page's ``unload`` handler: the session's download folders go with it."""
        self.run_dirs.drop(session_of(request))

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
    parameter name of the ``/language`` endpoint) also reads a current value, so that it can keep it
    (a table's rows under translated headers): ``update(lang, value)``, where value is None when the
    page loads. The value read is the component's own, or that of ``reads`` (say, the tab's
    ``gr.State``, from which a result's summary is written again in the new language).
    """

    component: Any
    update: Callable[..., Any]
    keeps: str | None = None
    reads: Any = None

    @property
    def source(self) -> Any:
        """The component whose value a ``keeps`` row reads."""
        return self.component if self.reads is None else self.reads


def texts(**props: str) -> Callable[[str], Any]:
    """A relabel row's ``update``: each property set to the text of its key, e.g.
    ``texts(label="threshold", info="threshold_info")``."""
    return lambda lang: gr.update(**{prop: t(lang, key) for prop, key in props.items()})


def plain(key: str) -> Callable[[str], str]:
    """A relabel row's ``update`` for a component whose value is the text itself (a Markdown block)."""
    return lambda lang: t(lang, key)


def readable(message: str) -> str:
    """A message as the HTML a Gradio toast shows: escaped, with Markdown's `code` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(message, quote=False))


def failure(lang: str, exc: Exception) -> gr.Error:
    """The ``gr.Error`` a handler raises for a library error (its message, prefixed in the page's language).

    The error is the user's to read, not a bug of ours: logged as one line, without Gradio's traceback.
    """
    log.info("UI request refused: %s", exc)
    return gr.Error(readable(t(lang, "error", detail=str(exc))), print_exception=False)


def refuse_not_ready(lang: str, exc: NotReady, failed: bool) -> dict[Any, Any]:
    """What a handler returns when the model is not loaded: one short warning toast (the page's banner says why
    at length: ``failed``) or "still loading", one log line, and no change to the panels (a `gr.Error` would
    mark every output panel "Error" and repeat the long reason)."""
    log.warning("UI request not run: %s", exc)
    gr.Warning(t(lang, "not_ready_failed" if failed else "not_ready_loading"), title=t(lang, "not_ready_title"))
    return gr.skip()


def in_range(lang: str, slider: gr.Slider, value: Any, label_key: str) -> float:
    """``value`` clamped to ``slider``'s range; a value outside it gets a warning toast naming what was used.

    For an event registered with ``preprocess=False`` (`RAW_SLIDERS`): Gradio's own slider check would refuse
    a typed out-of-range value before any handler ran, with a raw English message and an "Error" badge on
    the outputs. (The slider's number box shows the clamped value too once it loses focus: Gradio clamps it.)
    """
    low, high = slider.minimum, slider.maximum
    number = float(slider.value if value is None else value)
    used = min(max(number, low), high)
    if used != number:
        gr.Warning(t(lang, "out_of_range", label=t(lang, label_key), value=number, low=low, high=high, used=used),
                   title=t(lang, "out_of_range_title"))
    return used


RAW_SLIDERS = {"preprocess": False}
"""Event option of a handler that takes slider values: its inputs arrive as sent (a slider's number unchecked,
a radio's or dropdown's value, a textbox's text, the state itself, an image as its uploaded-file payload, which
the handler turns into a path with ``Image.preprocess``)."""


def display_source(source: str) -> str:
    """How the page names a model source: a local checkpoint by its folder's name (a browser user need not see
    the server's paths; the server log and ``/api/v1/ready`` have the full one), anything else as given."""
    try:
        path = Path(source).expanduser()
        return path.name if path.is_dir() else source
    except (OSError, ValueError):
        return source


def segment_events(settings: Settings) -> dict[str, Any]:
    """Event options of every handler that runs the image model. They share one concurrency group of at most
    ``max_concurrent`` at once (with the default of 1, a click and a slider release never race each other)."""
    return {"concurrency_id": "segment", "concurrency_limit": settings.max_concurrent}
