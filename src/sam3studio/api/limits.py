"""Request-body limits at the ASGI layer, for every route of the app (REST API, Gradio UI, anything mounted later).

A `BodyLimitMiddleware` counts each request body as it arrives. A body over its route's limit is answered
413 ``too_large`` as soon as byte ``limit + 1`` arrives, whether or not the client sent ``Content-Length``
(a declared length over the limit is refused before any byte is read). The rest of the body is never read:
nothing past the limit is held in memory or spooled to disk, and the connection is closed after the answer.

Limits come from one table (`body_limits`): the image routes take the upload limit plus base64 and form
overhead, ``/videos`` and ``/sessions`` (multipart) the video limit, Gradio's upload route the largest file
a tab accepts, and every other path, including routes added later, `DEFAULT_LIMIT`. ``/api/v1/info``
reports the table.


Written by hand (about 100 lines): Starlette and uvicorn have no body-size limit (uvicorn's
``h11_max_incomplete_event_size`` bounds headers only), and a limit in a route comes too late for
multipart, which Starlette parses and spools before the route runs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sam3studio.observability.context import current_request_id
from sam3studio.settings import Settings

__all__ = ["BodyLimitMiddleware", "BodyLimits", "BodyRule", "BodyTooLarge", "DEFAULT_LIMIT", "GRADIO_UPLOAD",
           "body_limits"]

DEFAULT_LIMIT = 1024 * 1024  # every path without a rule of its own: status, jobs, Gradio's queue, /mcp, ...
FORM_OVERHEAD = 3 * 1024 * 1024  # other fields beside the file: a refine mask's RLE may take 2 M characters
GRADIO_UPLOAD = "/gradio_api/upload"


class BodyTooLarge(MultiPartException):
    """Raised to the app when it reads past its body limit.

    A `MultiPartException` on purpose: the multipart parsers of Starlette and Gradio then close and delete
    the parts they were spooling (they do so only for that type), and Starlette turns it into a 400 that
    the middleware replaces with its 413.
    """

    def __init__(self, limit: int, what: str) -> None:
        message = f"the request body is over the limit of {limit} bytes for {what}"
        super().__init__(message)
        self.args = (message,)
        self.limit, self.what = limit, what


@dataclass(frozen=True)
class BodyRule:
    """``limit`` bytes for requests to ``path`` (exact), or only those of ``content_type`` when given."""

    path: str
    limit: int
    what: str
    content_type: str | None = None

    def matches(self, path: str, content_type: str) -> bool:
        return path == self.path and (self.content_type is None or content_type == self.content_type)


@dataclass(frozen=True)
class BodyLimits:
    rules: tuple[BodyRule, ...]
    default: int = DEFAULT_LIMIT

    def limit_for(self, path: str, content_type: str) -> tuple[int, str]:
        for rule in self.rules:
            if rule.matches(path, content_type):
                return rule.limit, rule.what
        return self.default, "this route"

    def table(self) -> dict[str, Any]:
        """For /api/v1/info: each rule's path, content type and limit in bytes, and the default."""
        return {"default": self.default,
                "routes": [{"path": r.path, "content_type": r.content_type, "limit": r.limit} for r in self.rules]}


def body_limits(settings: Settings, api_prefix: str = "/api/v1") -> BodyLimits:
    """The table for ``settings``: what each route needs for its largest accepted input, and no more."""
    image, video = settings.max_upload_bytes, settings.max_video_bytes
    json_image = -(-image * 4 // 3) + FORM_OVERHEAD  # base64 inflates by 4/3
    rules: list[BodyRule] = []
    for route in ("segment", "refine"):
        path = f"{api_prefix}/{route}"
        rules += [BodyRule(path, image + FORM_OVERHEAD, f"an image upload to {path}", "multipart/form-data"),
                  BodyRule(path, json_image, f"a JSON image request to {path}", "application/json")]
    videos = f"{api_prefix}/videos"
    sessions = f"{api_prefix}/sessions"
    for path in (videos, sessions):
        rules.append(BodyRule(path, video + FORM_OVERHEAD, f"a video upload to {path}", "multipart/form-data"))
    rules.append(BodyRule(GRADIO_UPLOAD, max(image, video) + FORM_OVERHEAD, "an upload to the web UI"))
    # /mcp (MCP tool calls, when mounted) carries images as base64 in JSON, like /segment.
    rules.append(BodyRule("/mcp", json_image, "an MCP request"))
    return BodyLimits(tuple(rules))


def _content_type(headers: Headers) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


class BodyLimitMiddleware:
    """Pure ASGI middleware enforcing `BodyLimits` on every HTTP request (see the module docstring)."""

    def __init__(self, app: ASGIApp, limits: BodyLimits | Sequence[BodyRule]) -> None:
        self.app = app
        self.limits = limits if isinstance(limits, BodyLimits) else BodyLimits(tuple(limits))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit, what = self.limits.limit_for(scope["path"], _content_type(headers))
        declared = headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > limit:
            await _refuse(send, BodyTooLarge(limit, what), f"; the request declares {int(declared)}")
            return
        received = 0
        over: BodyTooLarge | None = None
        started = refused = False

        async def counting_receive() -> Message:
            nonlocal received, over
            if over is not None:
                raise over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    over = BodyTooLarge(limit, what)
                    raise over
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started, refused
            if over is not None:  # whatever the app answers after the refusal, the client gets the 413
                if not started and not refused:
                    refused = True
                    await _refuse(send, over)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if over is None:
                raise
        if over is not None and not started and not refused:
            await _refuse(send, over)


async def _refuse(send: Send, error: BodyTooLarge, detail: str = "") -> None:
    """The 413 in the API's error envelope (`api.errors.error_response`'s shape, request id included)."""
    envelope: dict[str, Any] = {"code": "too_large", "message": f"{error}{detail}"}
    if (request_id := current_request_id()) is not None:
        envelope["request_id"] = request_id
    body = json.dumps({"error": envelope}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
