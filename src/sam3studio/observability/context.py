"""The request being served: its id and what the work on it found, for the access log and error bodies.

The middleware puts a `RequestContext` in a context variable at the start of each HTTP request. Code that
runs for the request, also in FastAPI's thread pool (which copies the context), reads it with `current()`:
the error envelope adds the id, the service hook adds the prompt and instance counts and the model timings,
and the log filter stamps the id on every record.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

__all__ = ["REQUEST_ID_HEADER", "RequestContext", "current", "current_request_id", "new_request_id",
           "valid_request_id"]

REQUEST_ID_HEADER = "X-Request-ID"
# What a client may send as its own id: up to 128 characters that are safe in a header and in a log line
# (letters, digits and . _ : - ; UUIDs, hex trace ids and ULIDs fit). Anything else is replaced by our own.
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

_current: ContextVar[RequestContext | None] = ContextVar("sam3studio_request", default=None)


@dataclass
class RequestContext:
    """One request: its id, and fields the work on it adds for the access log (counts, timings)."""

    request_id: str
    fields: dict[str, Any] = field(default_factory=dict)


def new_request_id() -> str:
    return uuid.uuid4().hex


def valid_request_id(value: str | None) -> bool:
    return value is not None and _VALID_ID.fullmatch(value) is not None


def current() -> RequestContext | None:
    """The request being served by this task or thread, or None outside a request (UI queue workers, CLI)."""
    return _current.get()


def current_request_id() -> str | None:
    ctx = _current.get()
    return ctx.request_id if ctx is not None else None


def enter(ctx: RequestContext):
    """Make ``ctx`` current; returns the token to pass to `leave`."""
    return _current.set(ctx)


def leave(token) -> None:
    _current.reset(token)
