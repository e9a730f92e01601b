"""A pure ASGI middleware: a request id and a timer around every HTTP request, and a bounded route label.

Pure ASGI rather than Starlette's ``BaseHTTPMiddleware``: it does not buffer or re-wrap streaming responses
(the UI's event streams), and it sees the exceptions that become 500s. For each HTTP request it

- takes the client's ``X-Request-ID`` when it is valid (`context.valid_request_id`), else makes one, puts it
  in a `RequestContext` for the work and the logs, and adds it to the response headers;
- notes the status the response starts with (500 when the app raised before answering, 499 when the client
  left first) and the time until the app returned;
- hands both to ``observer.request_done`` (metrics and the access log).

It also hears the ASGI lifespan: at shutdown it lets ``observer.close`` write what is still in memory
(drift counts) before the server is told shutdown is complete.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.routing import compile_path

from sam3studio.observability import context
from sam3studio.observability.context import REQUEST_ID_HEADER, RequestContext

log = logging.getLogger(__name__)

__all__ = ["UNMATCHED", "ObservabilityMiddleware", "RouteLabels"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

UNMATCHED = "unmatched"  # the route label of every path no route answered (404s), so clients cannot add labels
_HEADER = REQUEST_ID_HEADER.lower().encode("latin-1")


class Observer(Protocol):
    def request_started(self) -> None: ...

    def route_label(self, scope: Scope, status: int) -> str: ...

    def request_done(self, scope: Scope, route: str, status: int, seconds: float, ctx: RequestContext) -> None: ...

    def close(self) -> None: ...


class RouteLabels:
    """The route template a path belongs to, from the app's own table, so that labels stay bounded.

    The table is read from the app on first use (when every route has been added): the OpenAPI document's
    paths (full templates such as ``/api/v1/videos/{job_id}``, prefixes included), the app's own routes
    and mounts (``/docs``, ``/metrics``, ``/docs-assets/{path}``), and ``extra`` templates. A path outside it
    keeps the template of the route that answered it below a mount (the Gradio UI's own routes, a bounded
    set), and any 404 outside it is `UNMATCHED`.
    """

    def __init__(self, app: Any, extra: tuple[str, ...] = ()) -> None:
        self._app, self._extra = app, extra
        self._exact: dict[str, str] | None = None
        self._patterns: list[tuple[re.Pattern[str], str]] = []

    def _build(self) -> None:
        templates: list[tuple[re.Pattern[str], str]] = [(compile_path(t)[0], t) for t in self._extra]
        try:
            paths = self._app.openapi().get("paths", {}) if getattr(self._app, "openapi_url", None) else {}
        except Exception:  # a broken schema must not break the metrics; the app's own routes still label
            paths = {}
        templates += [(compile_path(t)[0], t) for t in paths]
        for route in getattr(self._app.router, "routes", ()):
            path_format, regex = getattr(route, "path_format", None), getattr(route, "path_regex", None)
            if path_format and regex is not None and path_format not in ("/{path}", ""):  # a mount at / is not a label
                templates.append((regex, path_format))
        self._exact = {t: t for _, t in templates if "{" not in t}
        self._patterns = [(regex, t) for regex, t in templates if "{" in t]

    def label(self, scope: Scope, status: int) -> str:
        if self._exact is None:
            self._build()
        path = scope.get("path", "")
        hit = self._exact.get(path)  # type: ignore[union-attr]
        if hit is not None:
            return hit
        for regex, template in self._patterns:
            if regex.match(path):
                return template
        if status == 404:
            return UNMATCHED
        inner = getattr(scope.get("route"), "path_format", None)  # a route below a mount (the UI) answered
        return inner if isinstance(inner, str) and inner else UNMATCHED


class ObservabilityMiddleware:
    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], observer: Observer) -> None:
        self.app, self.observer = app, observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        given = _header(scope, _HEADER)
        request_id = given if context.valid_request_id(given) else context.new_request_id()
        ctx = RequestContext(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        token = context.enter(ctx)
        status = 0
        self.observer.request_started()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = MutableHeaders(scope=message)
                if REQUEST_ID_HEADER not in headers:
                    headers.append(REQUEST_ID_HEADER, request_id)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            status = status or 499
            raise
        except BaseException:
            # Not reset: the 500 handler, which runs outside this middleware, puts the id in its body.
            status = status or 500
            raise
        else:
            context.leave(token)
        finally:
            seconds = time.perf_counter() - start
            status = status or 500  # the app returned without answering
            try:
                self.observer.request_done(scope, self.observer.route_label(scope, status), status, seconds, ctx)
            except Exception:  # watching must never fail the request
                log.exception("recording a request failed")

    def _lifespan_send(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await run_in_threadpool(self.observer.close)
            await send(message)

        return lifespan_send


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            try:
                return value.decode("latin-1")
            except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
                return None
    return None
