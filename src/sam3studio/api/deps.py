"""What routes take through ``Depends``: the settings, the service, the job runner, the API-key check.

`create_app` keeps one `SegmentService` and one `JobRunner` on ``app.state``; routes ask for them here
instead of closing over them, so each router is a plain module.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from sam3studio.api.errors import ApiError, error_response
from sam3studio.jobs import JobRunner
from sam3studio.service import SegmentService
from sam3studio.settings import Settings

__all__ = ["api_key_checker", "get_runner", "get_service", "get_sessions", "get_settings", "require_api_key_asgi",
           "run_unless_gone"]

T = TypeVar("T")

_API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="The key given to `--api-key`")
_BEARER = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`, the same key")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_service(request: Request) -> SegmentService:
    return request.app.state.service


def get_jobs(request: Request) -> JobRunner:
    return request.app.state.jobs


def get_runner(request: Request) -> JobRunner:
    """The job runner, or 503 when it could not start (the image API still works then)."""
    jobs: JobRunner = request.app.state.jobs
    if not jobs.running:
        raise ApiError(503, "not_ready", "video jobs are unavailable: " + (getattr(jobs, "start_error", None)
                       or "the job runner is not running"), {"Retry-After": "10"})
    return jobs


def get_sessions(request: Request) -> Any:
    """The video session manager (`sam3studio.sessions.SessionManager`)."""
    return request.app.state.sessions


_UNAUTHORIZED = ("missing or wrong API key: send it as `X-API-Key: <key>` or `Authorization: Bearer <key>`",
                 {"WWW-Authenticate": "Bearer"})


def _key_matches(settings: Settings, given: str | None) -> bool:
    """Whether ``given`` is the configured key (constant-time compare)."""
    expected = settings.api_key.get_secret_value().encode() if settings.api_key is not None else b""
    return bool(given) and secrets.compare_digest(given.encode(), expected)


def api_key_checker(settings: Settings):
    """A dependency that accepts the configured key from X-API-Key or a Bearer token."""

    async def require_api_key(key: str | None = Security(_API_KEY_HEADER),
                              bearer: HTTPAuthorizationCredentials | None = Security(_BEARER)) -> None:
        if not _key_matches(settings, key or (bearer.credentials if bearer is not None else None)):
            raise ApiError(401, "unauthorized", *_UNAUTHORIZED)

    return require_api_key


class require_api_key_asgi:  # noqa: N801 - used like a function that wraps an app
    """``app`` behind the same key check, for an ASGI app routed beside the API (the MCP endpoint): an HTTP
    request without the key gets the API's 401 error body. (A class, so Starlette routes to it as an app.)"""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            scheme, _, token = headers.get("authorization", "").partition(" ")
            given = headers.get("x-api-key") or (token.strip() if scheme.lower() == "bearer" else None)
            if not _key_matches(self.settings, given):
                await error_response(401, "unauthorized", *_UNAUTHORIZED)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _watch_disconnect(request: Request, gone: threading.Event, every_s: float = 0.2) -> None:
    """Set ``gone`` when the client disconnects (polled; the request body has been read already)."""
    while not gone.is_set():
        if await request.is_disconnected():
            gone.set()
            return
        await asyncio.sleep(every_s)


async def run_unless_gone(request: Request, work: Callable[..., T], *args: Any) -> T:
    """``work(*args, cancelled)`` in the thread pool; ``cancelled()`` turns true once the client has gone,
    so a request still waiting for the model gives its place up."""
    gone = threading.Event()
    watcher = asyncio.create_task(_watch_disconnect(request, gone))
    try:
        return await run_in_threadpool(work, *args, gone.is_set)
    finally:
        watcher.cancel()
