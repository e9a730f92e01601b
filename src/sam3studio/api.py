"""The REST API (FastAPI) under ``/api/v1``, and the one app that also mounts the UI at ``/``.

Every error is JSON ``{"error": {"code": "...", "message": "..."}}``: 400 undecodable image or bad
value, 413 too large, 415 unsupported content type, 422 invalid fields, 503 busy (with
Retry-After) or model not ready. A 500 means a bug of ours, and is logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import logging
import platform
import secrets
import threading
from contextlib import asynccontextmanager
from typing import Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from sam3studio import __version__
from sam3studio.errors import InputError, InputTooLargeError, Sam3StudioError
from sam3studio.results import Segmentation
from sam3studio.schemas import RLE, InstanceOut, SegmentationOut
from sam3studio.service import Cancelled, NotReady, OutOfMemory, Overloaded, SegmentOptions, SegmentService
from sam3studio.settings import Settings

log = logging.getLogger(__name__)

MaskFormat = Literal["rle", "polygon", "png_base64", "none"]


# ---------------------------------------------------------------------------- schemas
class SegmentParams(BaseModel):
    """Options shared by the JSON and the multipart forms of POST /api/v1/segment."""

    model_config = ConfigDict(extra="forbid")
    prompt: str | None = Field(None, description="One prompt, or several separated by commas: 'dog, red car'")
    prompts: list[str] | None = Field(None, description="Prompts as a list (alternative to `prompt`)")
    threshold: float = Field(0.5, ge=0.01, le=1.0, description="Detection score threshold")
    mask_threshold: float = Field(0.5, gt=0.0, lt=1.0, description="Mask probability threshold")
    fill_holes: float = Field(0.0, ge=0.0, le=1.0, description="Fill holes smaller than this fraction of a mask")
    min_island: float = Field(0.0, ge=0.0, le=1.0, description="Drop islands smaller than this fraction of a mask")
    smooth: int = Field(0, ge=0, le=50, description="Edge smoothing radius in pixels")
    max_instances: int | None = Field(None, ge=1, description="Return at most this many instances")
    mask_format: MaskFormat = Field("rle", description="rle (COCO RLE), polygon, png_base64 or none")

    @model_validator(mode="after")
    def _one_prompt_field(self) -> SegmentParams:
        if self.prompt is None and self.prompts is None:
            raise ValueError("give `prompt` (e.g. 'dog, red car') or `prompts` (a list)")
        if self.prompt is not None and self.prompts is not None:
            raise ValueError("give either `prompt` or `prompts`, not both")
        return self

    def options(self) -> SegmentOptions:
        return SegmentOptions(score_threshold=self.threshold, mask_threshold=self.mask_threshold,
                              fill_holes=self.fill_holes, min_island=self.min_island, smooth=self.smooth,
                              max_instances=self.max_instances)


class SegmentJSONRequest(SegmentParams):
    """JSON body: the image as `image_url` or `image_base64`."""

    image_url: str | None = Field(None, description="http(s) URL of the image; private addresses are refused")
    image_base64: str | None = Field(None, description="The image file, base64-encoded (data: URLs accepted)")

    @model_validator(mode="after")
    def _one_image_field(self) -> SegmentJSONRequest:
        if (self.image_url is None) == (self.image_base64 is None):
            raise ValueError("give exactly one of `image_url` or `image_base64`")
        return self


class ModelInfo(BaseModel):
    source: str
    architecture: str | None = None
    device: str | None = None
    dtype: str | None = None


class InstanceResponse(InstanceOut):
    mask: RLE | list[list[float]] | str | None = Field(
        None, description="COCO RLE (mask_format rle), polygons as flat [x0, y0, x1, y1, ...] lists (polygon), "
                          "a base64 PNG (png_base64), or null (none)")


class SegmentResponse(SegmentationOut):
    instances: list[InstanceResponse]
    model: ModelInfo


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    ready: bool
    model: ModelInfo


class QueueState(BaseModel):
    running: int = Field(description="requests doing model work now")
    waiting: int = Field(description="requests queued for the model now")
    peak_waiting: int = Field(description="most requests ever queued at once (bounded by limits.max_queue)")


class Info(BaseModel):
    version: str
    python: str
    torch: str
    transformers: str
    ready: bool
    loading: bool
    error: str | None
    model: ModelInfo
    limits: dict[str, float | int]
    queue: QueueState
    rss_mb: float | None = Field(None, description="resident memory of the server process (Linux)")


# ---------------------------------------------------------------------------- helpers
class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}}, headers=headers)


def _to_api_error(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
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
    if isinstance(exc, Sam3StudioError):
        return ApiError(400, "bad_request", str(exc))
    raise exc


def _decode_base64(text: str) -> bytes:
    if text.startswith("data:"):
        text = text.split(",", 1)[-1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("image_base64 is not valid base64") from None


def _mask_payload(mask: np.ndarray, fmt: MaskFormat) -> Any:
    if fmt == "polygon":
        import supervision as sv

        return [poly.astype(float).ravel().tolist() for poly in sv.mask_to_polygons(mask)]
    if fmt == "png_base64":
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buf, format="PNG", optimize=False)
        return base64.b64encode(buf.getvalue()).decode("ascii")
    return None


def segmentation_response(seg: Segmentation, fmt: MaskFormat, model: dict[str, Any]) -> dict[str, Any]:
    """The response body: `Segmentation.to_dict()` with masks in the asked format, plus model info."""
    data = seg.to_dict(include_masks=fmt == "rle")
    if fmt not in ("rle", "none"):
        for inst, mask in zip(data["instances"], seg.masks, strict=True):
            inst["mask"] = _mask_payload(mask, fmt)
    elif fmt == "none":
        for inst in data["instances"]:
            inst["mask"] = None
    data["model"] = model
    return data


_MULTIPART_FIELDS = {"prompt", "prompts", "threshold", "mask_threshold", "fill_holes", "min_island", "smooth",
                     "max_instances", "mask_format"}


def _multipart_params(form: Any) -> dict[str, Any]:
    unknown = set(form.keys()) - _MULTIPART_FIELDS - {"image"}
    if unknown:
        raise ApiError(422, "invalid_fields", f"unknown form field(s): {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for key in _MULTIPART_FIELDS & set(form.keys()):
        values = form.getlist(key)
        if key == "prompts":
            items: list[str] = []
            for v in values:  # repeated fields, or one JSON list
                if isinstance(v, str) and v.strip().startswith("["):
                    try:
                        items.extend(json.loads(v))
                    except (ValueError, RecursionError):
                        raise ApiError(422, "invalid_fields", "prompts: not a JSON list of strings") from None
                else:
                    items.append(v)
            out[key] = items
        else:
            out[key] = values[-1]
    return out


def _validation_message(exc: ValidationError | RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body",))
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) or "invalid request"


def _rss_mb() -> float | None:
    """Current resident set size from /proc (None where there is no /proc)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    import os

    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


async def _watch_disconnect(request: Request, gone: threading.Event, every_s: float = 0.2) -> None:
    """Set ``gone`` when the client disconnects (polled; the request body has been read already)."""
    while not gone.is_set():
        if await request.is_disconnected():
            gone.set()
            return
        await asyncio.sleep(every_s)


_API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="The key given to `--api-key`")
_BEARER = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`, the same key")


def _key_checker(settings: Settings):
    """A dependency that accepts the configured key from X-API-Key or a Bearer token (constant-time compare)."""
    expected = settings.api_key.get_secret_value().encode() if settings.api_key is not None else b""

    async def require_api_key(key: str | None = Security(_API_KEY_HEADER),
                              bearer: HTTPAuthorizationCredentials | None = Security(_BEARER)) -> None:
        given = key or (bearer.credentials if bearer is not None else None)
        if not given or not secrets.compare_digest(given.encode(), expected):
            raise ApiError(401, "unauthorized", "missing or wrong API key: send it as `X-API-Key: <key>` or "
                           "`Authorization: Bearer <key>`", {"WWW-Authenticate": "Bearer"})

    return require_api_key


# ---------------------------------------------------------------------------- app
_SEGMENT_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/SegmentJSONRequest"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "additionalProperties": False,
                    "properties": {
                        "image": {"type": "string", "format": "binary", "description": "JPEG, PNG, WebP, BMP, TIFF or GIF"},
                        **{k: {"type": "string", "description": f"as `{k}` in the JSON body"}
                           for k in sorted(_MULTIPART_FIELDS)},
                    },
                }
            },
        },
    }
}


def create_app(settings: Settings | None = None, *, service: SegmentService | None = None,
               segmenter: Any | None = None) -> FastAPI:
    """Build the app: REST API under /api/v1 and (when ``settings.ui``) the Gradio UI at /.

    Pass ``segmenter`` (or a ``service``) to use a model already loaded; otherwise the model named in
    the settings loads in the background at start-up while /api/v1/health already answers.
    """
    settings = settings or Settings()
    service = service or SegmentService(settings, segmenter=segmenter)
    protected = [Depends(_key_checker(settings))] if settings.api_key is not None else []
    auth_responses: dict[int | str, dict[str, Any]] = (
        {401: {"model": ErrorResponse, "description": "missing or wrong API key"}} if protected else {})

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not service.ready and not service.loading:
            service.load_in_background()
        yield

    app = FastAPI(
        title="sam3studio",
        version=__version__,
        description="Segment anything by text with SAM 3. Errors are JSON `{error: {code, message}}`.",
        lifespan=lifespan,
        responses={413: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
    )
    app.state.service = service

    def openapi() -> dict[str, Any]:
        """The generated document, plus the JSON request model that the segment route reads by hand."""
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {})["SegmentJSONRequest"] = (
                SegmentJSONRequest.model_json_schema(ref_template="#/components/schemas/{model}"))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(Sam3StudioError)
    async def _lib_error(_: Request, exc: Sam3StudioError) -> JSONResponse:
        e = _to_api_error(exc)
        return _error(e.status, e.code, e.message, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid_fields", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error (a bug in sam3studio)")
        return _error(500, "internal_error", "internal error; the server log has the details")

    @app.get("/api/v1/health", response_model=Health, tags=["status"])
    async def health() -> Health:
        """Liveness: answers at once, even while the model is busy or loading."""
        return Health()

    @app.get("/api/v1/ready", response_model=Ready, tags=["status"],
             responses={503: {"model": ErrorResponse, "description": "model loading or failed to load"}})
    async def ready() -> Any:
        """Readiness: 200 once the model is loaded."""
        if not service.ready:
            e = _to_api_error(NotReady(service.load_error and f"the model could not be loaded: {service.load_error}"
                                       or "the model is still loading"))
            return _error(e.status, e.code, e.message, e.headers)
        return Ready(ready=True, model=ModelInfo(**service.info()["model"]))

    @app.get("/api/v1/info", response_model=Info, tags=["status"], dependencies=protected, responses=auth_responses)
    async def info() -> Info:
        """Versions, model, device, dtype and the input limits in force."""
        import torch
        import transformers

        state = service.info()
        limits = {k: getattr(settings, k) for k in ("max_upload_mb", "max_pixels", "max_prompts", "max_prompt_chars",
                                                     "max_instances", "max_concurrent", "max_queue", "url_timeout_s")}
        return Info(version=__version__, python=platform.python_version(), torch=torch.__version__,
                    transformers=transformers.__version__, ready=state["ready"], loading=state["loading"],
                    error=state["error"], model=ModelInfo(**state["model"]), limits=limits,
                    queue=QueueState(running=service.gate.active, waiting=service.gate.waiting,
                                     peak_waiting=service.gate.peak_waiting), rss_mb=_rss_mb())

    @app.post("/api/v1/segment", response_model=SegmentResponse, tags=["segment"], openapi_extra=_SEGMENT_OPENAPI,
              dependencies=protected,
              responses={400: {"model": ErrorResponse}, 415: {"model": ErrorResponse}, 422: {"model": ErrorResponse},
                         **auth_responses})
    async def segment(request: Request) -> Any:
        """Segment one image by text prompts.

        Send either `multipart/form-data` with an `image` file and the option fields, or JSON with
        `image_url` or `image_base64`. Masks come as COCO RLE unless `mask_format` says otherwise.
        """
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        length = request.headers.get("content-length")
        # Base64 inflates by 4/3; leave room for the other fields.
        limit = int(settings.max_upload_bytes * 4 / 3) + 64 * 1024
        if length and length.isdigit() and int(length) > limit:
            raise ApiError(413, "too_large", f"request body is {int(length)} bytes; the limit is {limit}")
        try:
            if ctype == "multipart/form-data":
                form = await request.form(max_files=1, max_fields=32, max_part_size=1024 * 1024)
                upload = form.get("image")
                if upload is None or isinstance(upload, str):
                    raise ApiError(422, "invalid_fields", "multipart request needs an `image` file field")
                data = await upload.read(settings.max_upload_bytes + 1)
                if len(data) > settings.max_upload_bytes:
                    raise ApiError(413, "too_large", f"image is over the limit of {settings.max_upload_bytes} bytes")
                params = SegmentParams.model_validate(_multipart_params(form))
                image = await run_in_threadpool(service.decode_image, data)
            elif ctype == "application/json":
                try:
                    body = await request.json()
                except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, huge ints, deep nesting
                    raise ApiError(400, "bad_json", "request body is not valid JSON") from None
                params = SegmentJSONRequest.model_validate(body)
                if params.image_base64 is not None:
                    image = await run_in_threadpool(service.decode_image, _decode_base64(params.image_base64))
                else:
                    image = await run_in_threadpool(service.fetch_image, params.image_url)
            else:
                raise ApiError(415, "unsupported_media_type",
                               f"content type {ctype or '(none)'} is not supported; send multipart/form-data or "
                               "application/json")
        except ValidationError as exc:
            raise ApiError(422, "invalid_fields", _validation_message(exc)) from None
        prompts = params.prompts if params.prompts is not None else params.prompt
        # A client that disconnects while its request waits for the model gives its place up.
        gone = threading.Event()
        watcher = asyncio.create_task(_watch_disconnect(request, gone))
        try:
            seg = await run_in_threadpool(service.segment, image, prompts, params.options(), gone.is_set)
        finally:
            watcher.cancel()
        body = segmentation_response(seg, params.mask_format, service.info()["model"])
        return JSONResponse(body)

    if settings.ui:
        import gradio as gr

        from sam3studio.ui import build_ui

        app = gr.mount_gradio_app(app, build_ui(service), path="/", max_file_size=settings.max_upload_bytes,
                                  footer_links=["api"], show_error=False, auth=settings.ui_credentials(),
                                  auth_message="sam3studio: sign in with the credentials given to `--ui-auth`.")
    return app
