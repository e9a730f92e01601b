"""Typed errors raised by the library; each edge (CLI, API, UI) maps them to its own form."""

from __future__ import annotations


class Sam3StudioError(Exception):
    """Base class for errors meant to reach a user as one sentence."""


class ModelSourceError(Sam3StudioError):
    """The model could not be found, downloaded or loaded from the given source."""


class TrackerUnavailable(ModelSourceError):
    """The loaded checkpoint has no SAM 3 tracker, so click refinement cannot run. Maps to HTTP 409."""


class InputError(Sam3StudioError, ValueError):
    """A user input (image, prompt, option) is invalid. Maps to HTTP 400."""


class InputTooLargeError(InputError):
    """An input exceeds a configured limit (bytes, pixels). Maps to HTTP 413."""
