"""The API's one error envelope, ``{"error": {"code": "...", "message": "..."}}``, and the handlers that produce it.

Library errors map to statuses here, in one table (`to_api_error`): 400 bad input, 404 unknown job,
409 a feature the checkpoint lacks or a busy session, 410 a deleted or swept job or an ended session, 413 too
large, 503 busy / not ready / out of memory (with Retry-After), 507 too little disk for a new video job. Any other
exception is a bug of ours: logged, answered 500 without details.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, compile_path

from sam3studio.api.limits import BodyTooLarge
from sam3studio.errors import (
    Cancelled,
    FrameOutOfRange,
    InputError,
    InputTooLargeError,
    InsufficientStorage,
    JobGone,
    JobNotFound,
    ModelSourceError,
    NotPropagated,
    NotReady,
    OutOfMemory,
    Overloaded,
    Sam3StudioError,
    SessionBusy,
    SessionGone,
    SessionNotFound,
    TrackerUnavailable,
    UnknownObject,
    VideoModelUnavailable,
)
from sam3studio.observability.context import REQUEST_ID_HEADER, current_request_id

log = logging.getLogger(__name__)

__all__ = ["ApiError", "allowed_methods", "error_response", "install_handlers", "route_methods", "to_api_error",
           "validation_message"]


class ApiError(Exception):
    """An error answer decided by a route: status, machine-readable code, one sentence, optional headers."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The envelope; inside a request it also carries the request id (body and ``X-Request-ID``)."""
    error = {"code": code, "message": message}
    request_id = current_request_id()
    if request_id is not None:
        error["request_id"] = request_id
        headers = {**(headers or {}), REQUEST_ID_HEADER: request_id}
    return JSONResponse(status_code=status, content={"error": error}, headers=headers)


def to_api_error(exc: Exception) -> ApiError:
    """The answer for a library error (re-raises anything that is not one)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, JobGone):  # a tombstone: the job existed and was deleted or swept
        return ApiError(410, "gone", str(exc))
    if isinstance(exc, JobNotFound):
        return ApiError(404, "not_found", str(exc))
    if isinstance(exc, InsufficientStorage):
        return ApiError(507, "insufficient_storage", str(exc), {"Retry-After": "600"})
    session_error = _session_error(exc)
    if session_error is not None:
        return session_error
    if isinstance(exc, Overloaded):
        return ApiError(503, "overloaded", str(exc), {"Retry-After": str(exc.retry_after)})
    if isinstance(exc, NotReady):
        return ApiError(503, "not_ready", str(exc), {"Retry-After": "10"})
    if isinstance(exc, OutOfMemory):
        return ApiError(503, "out_of_memory", str(exc), {"Retry-After": str(exc.retry_after)})
    if isinstance(exc, Cancelled):  # nobody reads this answer; 499 as in nginx's "client closed request"
        return ApiError(499, "client_closed", str(exc))
    if isinstance(exc, InputTooLargeError):
        return ApiError(413, "too_large", str(exc))
    if isinstance(exc, InputError):
        return ApiError(400, "bad_input", str(exc))
    if isinstance(exc, TrackerUnavailable | VideoModelUnavailable):  # a feature this checkpoint does not have
        return ApiError(409, "not_available", str(exc))
    if isinstance(exc, ModelSourceError):  # the tracker could not be loaded now (e.g. the hub is unreachable)
        return ApiError(503, "not_ready", str(exc), {"Retry-After": "30"})
    if isinstance(exc, Sam3StudioError):
        return ApiError(400, "bad_request", str(exc))
    raise exc


def _session_error(exc: Exception) -> ApiError | None:
    """Video sessions' errors: 404 unknown session or object, 410 ended, 409 busy or not propagated, 400 frame."""
    if isinstance(exc, SessionNotFound):
        return ApiError(404, "not_found", str(exc))
    if isinstance(exc, UnknownObject):
        return ApiError(404, "unknown_object", str(exc))
    if isinstance(exc, SessionGone):
        return ApiError(410, "gone", str(exc))
    if isinstance(exc, NotPropagated):
        return ApiError(409, "not_ready", str(exc), {"Retry-After": "2"})
    if isinstance(exc, SessionBusy):
        return ApiError(409, "busy", str(exc), {"Retry-After": "2"})
    if isinstance(exc, FrameOutOfRange):
        return ApiError(400, "frame_out_of_range", str(exc))
    return None


def validation_message(exc: ValidationError | RequestValidationError) -> str:
    """Pydantic's errors as one sentence: ``field: what is wrong; other: ...``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body",))
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


def route_methods(prefix: str, routers: Sequence[APIRouter]) -> list[tuple[re.Pattern[str], set[str]]]:
    """(path pattern, methods) of every route of ``routers`` mounted under ``prefix``, for the Allow header."""
    return [(compile_path(prefix + route.path)[0], set(route.methods))
            for router in routers for route in router.routes if getattr(route, "methods", None)]


def allowed_methods(request: Request) -> set[str]:
    """Every method some route on this path answers (Starlette lists the first matching route's only)."""
    methods: set[str] = set()
    for route in request.app.router.routes:  # the app's own routes (/openapi.json, /docs)
        if getattr(route, "methods", None) and route.matches(request.scope)[0] != Match.NONE:
            methods |= set(route.methods)
    for pattern, allowed in getattr(request.app.state, "route_methods", ()):  # routes of included routers
        if pattern.match(request.url.path):
            methods |= allowed
    return methods


async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def _library_error(_: Request, exc: Sam3StudioError) -> JSONResponse:
    e = to_api_error(exc)
    return error_response(e.status, e.code, e.message, e.headers)


async def _too_large(_: Request, exc: BodyTooLarge) -> JSONResponse:
    return error_response(413, "too_large", str(exc))  # what BodyLimitMiddleware answers anyway


async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(422, "invalid_fields", validation_message(exc))


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405 and (methods := allowed_methods(request)):
        headers = {**(headers or {}), "Allow": ", ".join(sorted(methods))}
    return error_response(exc.status_code, code, str(exc.detail), headers)


async def _bug(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error (a bug in sam3studio)")
    return error_response(500, "internal_error", "internal error; the server log has the details")


def install_handlers(app: FastAPI) -> None:
    """Make every error of ``app`` answer in the envelope."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(BodyTooLarge, _too_large)
    app.add_exception_handler(Sam3StudioError, _library_error)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _bug)
