"""Typed errors raised by the library; each edge (CLI, API, UI) maps them to its own form."""

from __future__ import annotations


def install_hint(extra: str) -> str:
    """How to install one of our optional extras, from PyPI and from a clone."""
    return f"pip install 'sam3studio[{extra}]' (from a clone: .venv/bin/pip install -e '.[{extra}]')"


class Sam3StudioError(Exception):
    """Base class for errors meant to reach a user as one sentence."""


class ModelSourceError(Sam3StudioError):
    """The model could not be found, downloaded or loaded from the given source."""


class TrackerUnavailable(ModelSourceError):
    """The loaded checkpoint has no SAM 3 tracker, so click refinement cannot run. Maps to HTTP 409."""


class VideoModelUnavailable(ModelSourceError):
    """The checkpoint is image-only (no SAM 3 video model): tracking and video sessions cannot run. Maps to
    HTTP 409."""


class InputError(Sam3StudioError, ValueError):
    """A user input (image, prompt, option) is invalid. Maps to HTTP 400."""


class InputTooLargeError(InputError):
    """An input exceeds a configured limit (bytes, pixels). Maps to HTTP 413."""


class Overloaded(Sam3StudioError):
    """Too many requests are waiting for the model (or too many jobs are queued). Maps to HTTP 503 with Retry-After."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotReady(Sam3StudioError):
    """The model is still loading, or failed to load. Maps to HTTP 503."""


class OutOfMemory(Sam3StudioError):
    """One request ran out of memory; caches were freed and the server goes on. Maps to HTTP 503."""

    retry_after = 5


class Cancelled(Sam3StudioError):
    """The client went away while its request waited for the model; the request was dropped unrun."""


class JobNotFound(Sam3StudioError):
    """No job with this id (never created). Maps to HTTP 404."""


class JobGone(JobNotFound):
    """The job existed, but it was deleted or swept after its retention period (a tombstone). Maps to HTTP 410."""


class InsufficientStorage(Sam3StudioError):
    """The data dir's free space is below the configured floor: no new video job. Maps to HTTP 507."""


class SessionNotFound(Sam3StudioError):
    """No video session with this id (never created, or closed). Maps to HTTP 404."""


class SessionGone(Sam3StudioError):
    """The video session ended (idle timeout or a server restart); its last export may remain. Maps to HTTP 410."""


class SessionBusy(Sam3StudioError):
    """The video session is propagating; inputs wait until it is done. Maps to HTTP 409."""


class UnknownObject(Sam3StudioError):
    """No object with this id in the video session. Maps to HTTP 404."""


class FrameOutOfRange(InputError):
    """A frame index outside the video. Maps to HTTP 400 (code ``frame_out_of_range``)."""


class NotPropagated(SessionBusy):
    """A session's result asked for before any propagation ended. Maps to HTTP 409 (code ``not_ready``)."""
