"""The REST API (FastAPI) under ``/api/v1``, and the one app that also mounts the UI at ``/``.

Click refinement: ``POST /api/v1/refine`` (the image as in /segment, with ``points`` + ``point_labels``,
a ``box``, and optionally the object's current ``mask`` as COCO RLE) answers one ``instance``.

Video jobs: ``POST /api/v1/videos`` (multipart ``video`` file, or JSON ``video_url``, with ``prompt`` or
``prompts``, ``threshold``, ``stride``, ``start``, ``end``, ``max_frames``) answers 202 ``{id, state}``;
``GET /api/v1/videos/{id}`` gives state and progress, ``.../result`` the summary and frames and
``.../overlay.mp4`` the overlay once done (409 before), and ``DELETE`` cancels and deletes (204).

Every error is JSON ``{"error": {"code": "...", "message": "..."}}``: 400 undecodable image or bad
value, 409 a feature the loaded checkpoint lacks (refinement without a tracker), 413 too large, 415
unsupported content type, 422 invalid fields, 503 busy (with Retry-After) or model not ready.
A 500 means a bug of ours, and is logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import io
import json
import logging
import os
import platform
import secrets
import threading
from contextlib import asynccontextmanager
from typing import Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from sam3studio import __version__
from sam3studio.errors import InputError, InputTooLargeError, ModelSourceError, Sam3StudioError, TrackerUnavailable
from sam3studio.jobs import JobNotFound, JobRunner
from sam3studio.results import Segmentation, rle_to_mask
from sam3studio.schemas import RLE, InstanceOut, SegmentationOut
from sam3studio.service import Cancelled, NotReady, OutOfMemory, Overloaded, SegmentOptions, SegmentService
from sam3studio.settings import Settings

log = logging.getLogger(__name__)

MaskFormat = Literal["rle", "polygon", "png_base64", "none"]
MAX_RLE_CHARS = 2_000_000  # a mask to refine; real masks of 40 MP images take a few hundred KB


# ---------------------------------------------------------------------------- schemas
class PromptParams(BaseModel):
    """The prompt fields every request has: `prompt` or `prompts`, and the detection threshold."""

    model_config = ConfigDict(extra="forbid")
    prompt: str | None = Field(None, description="One prompt, or several separated by commas: 'dog, red car'")
    prompts: list[str] | None = Field(None, description="Prompts as a list (alternative to `prompt`)")
    threshold: float = Field(0.5, ge=0.01, le=1.0, description="Detection score threshold")

    @model_validator(mode="after")
    def _one_prompt_field(self) -> PromptParams:
        if self.prompt is None and self.prompts is None and getattr(self, "boxes", None) is None:
            raise ValueError("give `prompt` (e.g. 'dog, red car') or `prompts` (a list)"
                             + (" or exemplar `boxes`" if "boxes" in type(self).model_fields else ""))
        if self.prompt is not None and self.prompts is not None:
            raise ValueError("give either `prompt` or `prompts`, not both")
        return self

    def prompt_value(self) -> str | list[str] | None:
        return self.prompts if self.prompts is not None else self.prompt


class SegmentParams(PromptParams):
    """Options shared by the JSON and the multipart forms of POST /api/v1/segment."""

    mask_threshold: float = Field(0.5, gt=0.0, lt=1.0, description="Mask probability threshold")
    fill_holes: float = Field(0.0, ge=0.0, le=1.0, description="Fill holes smaller than this fraction of a mask")
    min_island: float = Field(0.0, ge=0.0, le=1.0, description="Drop islands smaller than this fraction of a mask")
    smooth: int = Field(0, ge=0, le=50, description="Edge smoothing radius in pixels")
    max_instances: int | None = Field(None, ge=1, description="Return at most this many instances")
    mask_format: MaskFormat = Field("rle", description="rle (COCO RLE), polygon, png_base64 or none")
    boxes: list[list[float]] | None = Field(
        None, max_length=16, description="Exemplar boxes [[x1, y1, x2, y2], ...] in image pixels: find objects like "
                                         "these (with or without a prompt). Multipart: a JSON list.")
    box_labels: list[int] | None = Field(None, description="One per box: 1 positive (default), 0 negative")

    def options(self) -> SegmentOptions:
        return SegmentOptions(score_threshold=self.threshold, mask_threshold=self.mask_threshold,
                              fill_holes=self.fill_holes, min_island=self.min_island, smooth=self.smooth,
                              max_instances=self.max_instances, boxes=self.boxes, box_labels=self.box_labels)


class JSONImage(BaseModel):
    """The image of a JSON body: `image_url` or `image_base64`, exactly one."""

    image_url: str | None = Field(None, description="http(s) URL of the image; private addresses are refused")
    image_base64: str | None = Field(None, description="The image file, base64-encoded (data: URLs accepted)")

    @model_validator(mode="after")
    def _one_image_field(self) -> JSONImage:
        if (self.image_url is None) == (self.image_base64 is None):
            raise ValueError("give exactly one of `image_url` or `image_base64`")
        return self


class SegmentJSONRequest(SegmentParams, JSONImage):
    """JSON body: the image as `image_url` or `image_base64`."""


class RefineParams(BaseModel):
    """Options shared by the JSON and the multipart forms of POST /api/v1/refine."""

    model_config = ConfigDict(extra="forbid")
    points: list[list[float]] | None = Field(
        None, max_length=64, description="Clicks [[x, y], ...] in image pixels. Multipart: a JSON list.")
    point_labels: list[int] | None = Field(
        None, max_length=64, description="One per point: 1 part of the object, 0 not part of it")
    box: list[float] | None = Field(None, description="[x1, y1, x2, y2] around the object, in image pixels")
    mask: RLE | None = Field(None, description="The object's current mask as COCO RLE (an instance's `mask` from "
                                               "/segment or /refine), to correct it with clicks")
    mask_threshold: float = Field(0.5, gt=0.0, lt=1.0, description="Mask probability threshold")
    mask_format: MaskFormat = Field("rle", description="rle (COCO RLE), polygon, png_base64 or none")
    label: str = Field("object", max_length=200, description="The `prompt` the returned instance carries")


class RefineJSONRequest(RefineParams, JSONImage):
    """JSON body: the image as `image_url` or `image_base64`."""


class VideoJobParams(PromptParams):
    """Options of POST /api/v1/videos (multipart fields or JSON)."""

    stride: int = Field(1, ge=1, le=10_000, description="Process every n-th frame")
    start: float | None = Field(None, ge=0, description="Start at this second (inclusive)")
    end: float | None = Field(None, gt=0, description="Stop at this second (exclusive)")
    max_frames: int | None = Field(None, ge=1, description="Process at most this many frames")

    def job_params(self) -> dict[str, Any]:
        return {"prompts": self.prompt_value(), "threshold": self.threshold,
                "stride": self.stride, "start": self.start, "end": self.end, "max_frames": self.max_frames}


class VideoJobJSONRequest(VideoJobParams):
    """JSON body: the video as `video_url`."""

    video_url: str = Field(description="http(s) URL of the video; private addresses are refused")


class VideoProgress(BaseModel):
    done: int
    total: int | None = Field(None, description="frames to process (null when the container does not say)")


class VideoJob(BaseModel):
    id: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    progress: VideoProgress
    error: str | None = None
    created: float = Field(description="Unix time")
    updated: float = Field(description="Unix time")
    params: dict[str, Any] = Field(default_factory=dict)


class VideoJobAccepted(BaseModel):
    id: str
    state: Literal["queued"] = "queued"


class VideoResult(BaseModel):
    id: str
    summary: dict[str, Any] = Field(description="summary.json: video, prompts, tracks, timings")
    frames: list[dict[str, Any]] = Field(description="frames.jsonl: one entry per processed frame, masks as COCO RLE")


class ModelInfo(BaseModel):
    source: str
    architecture: str | None = None
    device: str | None = None
    dtype: str | None = None
    compiled: str | None = Field(None, description="'eager', or how the model was compiled")


class InstanceResponse(InstanceOut):
    mask: RLE | list[list[float]] | str | None = Field(
        None, description="COCO RLE (mask_format rle), polygons as flat [x0, y0, x1, y1, ...] lists (polygon), "
                          "a base64 PNG (png_base64), or null (none)")


class SegmentResponse(SegmentationOut):
    instances: list[InstanceResponse]
    model: ModelInfo


class RefineResponse(BaseModel):
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    instance: InstanceResponse = Field(description="The object; `score` is SAM's predicted IoU of its mask")
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
    if isinstance(exc, JobNotFound):
        return ApiError(404, "not_found", str(exc))
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
    if isinstance(exc, TrackerUnavailable):  # refinement asked of a checkpoint without a tracker
        return ApiError(409, "not_available", str(exc))
    if isinstance(exc, ModelSourceError):  # the tracker could not be loaded now (e.g. the hub is unreachable)
        return ApiError(503, "not_ready", str(exc), {"Retry-After": "30"})
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
    for inst, mask in zip(data["instances"], seg.masks, strict=True):
        _set_mask(inst, mask, fmt)
    data["model"] = model
    return data


def _set_mask(body: dict[str, Any], mask: np.ndarray, fmt: MaskFormat) -> None:
    """Give an instance body (from ``to_dict``, with its RLE when ``fmt`` is rle) its mask in the asked format."""
    if fmt != "rle":
        body["mask"] = _mask_payload(mask, fmt)


_MULTIPART_FIELDS = {"prompt", "prompts", "threshold", "mask_threshold", "fill_holes", "min_island", "smooth",
                     "max_instances", "mask_format", "boxes", "box_labels"}
_REFINE_FIELDS = {"points", "point_labels", "box", "mask", "mask_threshold", "mask_format", "label"}
# Nested values travel as JSON text in a form.
_MULTIPART_JSON_FIELDS = {"boxes", "box_labels", "points", "point_labels", "box", "mask"}


def _form_prompts(values: list[Any]) -> list[Any]:
    """A form's `prompts`: repeated fields, or one field holding a JSON list."""
    items: list[Any] = []
    for v in values:
        if isinstance(v, str) and v.strip().startswith("["):
            try:
                items.extend(json.loads(v))
            except (ValueError, RecursionError):
                raise ApiError(422, "invalid_fields", "prompts: not a JSON list of strings") from None
        else:
            items.append(v)
    return items


def _multipart_params(form: Any, fields: set[str] = _MULTIPART_FIELDS) -> dict[str, Any]:
    unknown = set(form.keys()) - fields - {"image"}
    if unknown:
        raise ApiError(422, "invalid_fields", f"unknown form field(s): {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for key in fields & set(form.keys()):
        values = form.getlist(key)
        if key == "prompts":
            out[key] = _form_prompts(values)
        elif key in _MULTIPART_JSON_FIELDS:
            try:
                out[key] = json.loads(values[-1]) if isinstance(values[-1], str) else values[-1]
            except (ValueError, RecursionError):
                raise ApiError(422, "invalid_fields", f"{key}: not valid JSON (e.g. [[10, 20, 110, 220]])") from None
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
def _image_request_openapi(json_model: str, fields: set[str]) -> dict[str, Any]:
    """The request body of a route that reads an image request by hand: JSON model or multipart form."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{json_model}"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["image"],
                        "additionalProperties": False,
                        "properties": {
                            "image": {"type": "string", "format": "binary",
                                      "description": "JPEG, PNG, WebP, BMP, TIFF or GIF"},
                            **{k: {"type": "string", "description": f"as `{k}` in the JSON body"
                                   + (" (JSON text)" if k in _MULTIPART_JSON_FIELDS else "")}
                               for k in sorted(fields)},
                        },
                    }
                },
            },
        }
    }


_SEGMENT_OPENAPI = _image_request_openapi("SegmentJSONRequest", _MULTIPART_FIELDS)
_REFINE_OPENAPI = _image_request_openapi("RefineJSONRequest", _REFINE_FIELDS)


_VIDEO_FIELDS = {"prompt", "prompts", "threshold", "stride", "start", "end", "max_frames"}

_VIDEO_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["video"],
                    "additionalProperties": False,
                    "properties": {
                        "video": {"type": "string", "format": "binary", "description": "MP4, MOV, MKV, WebM, AVI or GIF"},
                        **{k: {"type": "string", "description": f"as `{k}` in the JSON body"} for k in sorted(_VIDEO_FIELDS)},
                    },
                }
            },
            "application/json": {"schema": {"$ref": "#/components/schemas/VideoJobJSONRequest"}},
        },
    }
}


def _video_form_params(form: Any) -> dict[str, Any]:
    unknown = set(form.keys()) - _VIDEO_FIELDS - {"video"}
    if unknown:
        raise ApiError(422, "invalid_fields", f"unknown form field(s): {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for key in _VIDEO_FIELDS & set(form.keys()):
        values = [v for v in form.getlist(key) if isinstance(v, str)]
        if key == "prompts":
            out[key] = _form_prompts(values)
        elif values:
            out[key] = None if key in ("start", "end", "max_frames") and values[-1] == "" else values[-1]
    return out


def _job_body(job: dict[str, Any]) -> dict[str, Any]:
    params = {k: v for k, v in job["params"].items() if k != "video"}
    return VideoJob(id=job["id"], state=job["state"], progress=VideoProgress(done=job["progress_done"],
                    total=job["progress_total"]), error=job["error"], created=job["created"], updated=job["updated"],
                    params=params).model_dump()


def create_app(settings: Settings | None = None, *, service: SegmentService | None = None,
               segmenter: Any | None = None, jobs: JobRunner | None = None) -> FastAPI:
    """Build the app: REST API under /api/v1 and (when ``settings.ui``) the Gradio UI at /.

    Pass ``segmenter`` (or a ``service``) to use a model already loaded; otherwise the model named in
    the settings loads in the background at start-up while /api/v1/health already answers.
    """
    settings = settings or Settings()
    service = service or SegmentService(settings, segmenter=segmenter)
    jobs = jobs or JobRunner(settings, detector=service.shared_detector)
    protected = [Depends(_key_checker(settings))] if settings.api_key is not None else []
    auth_responses: dict[int | str, dict[str, Any]] = (
        {401: {"model": ErrorResponse, "description": "missing or wrong API key"}} if protected else {})

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not service.ready and not service.loading:
            service.load_in_background()
        try:
            await run_in_threadpool(jobs.start)
        except Exception as exc:  # the image API still works; video routes answer 503
            jobs.start_error = str(exc)
            log.error("video jobs are unavailable: could not open %s: %s", jobs.data_dir, exc)
        try:
            yield
        finally:
            await run_in_threadpool(jobs.stop)

    app = FastAPI(
        title="sam3studio",
        version=__version__,
        description="Segment anything by text with SAM 3. Errors are JSON `{error: {code, message}}`.",
        lifespan=lifespan,
        responses={413: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
    )
    app.state.service = service
    app.state.jobs = jobs

    def openapi() -> dict[str, Any]:
        """The generated document, plus the JSON request model that the segment route reads by hand."""
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (SegmentJSONRequest, RefineJSONRequest, VideoJobJSONRequest):
                doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, sub in doc.pop("$defs", {}).items():
                    components.setdefault(name, sub)
                components[model.__name__] = doc
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
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:  # Starlette lists the first matching route's methods only; list every route's
            from starlette.routing import Match

            methods: set[str] = set()
            for route in app.router.routes:
                if getattr(route, "methods", None) and route.matches(request.scope)[0] != Match.NONE:
                    methods |= set(route.methods)
            if methods:
                headers = {**(headers or {}), "Allow": ", ".join(sorted(methods))}
        return _error(exc.status_code, code, str(exc.detail), headers)

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

    async def _read_image_request(request: Request, form_model: type[BaseModel], json_model: type[BaseModel],
                                  form_fields: set[str]) -> tuple[Any, np.ndarray]:
        """An image request's options and decoded image: multipart (`image` file + fields) or JSON."""
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
                params = form_model.model_validate(_multipart_params(form, form_fields))
                image = await run_in_threadpool(service.decode_image, data)
            elif ctype == "application/json":
                try:
                    body = await request.json()
                except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, huge ints, deep nesting
                    raise ApiError(400, "bad_json", "request body is not valid JSON") from None
                params = json_model.model_validate(body)
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
        return params, image

    @app.post("/api/v1/segment", response_model=SegmentResponse, tags=["segment"], openapi_extra=_SEGMENT_OPENAPI,
              dependencies=protected,
              responses={400: {"model": ErrorResponse}, 415: {"model": ErrorResponse}, 422: {"model": ErrorResponse},
                         **auth_responses})
    async def segment(request: Request) -> Any:
        """Segment one image by text prompts.

        Send either `multipart/form-data` with an `image` file and the option fields, or JSON with
        `image_url` or `image_base64`. Masks come as COCO RLE unless `mask_format` says otherwise.
        """
        params, image = await _read_image_request(request, SegmentParams, SegmentJSONRequest, _MULTIPART_FIELDS)
        prompts = params.prompt_value()
        # A client that disconnects while its request waits for the model gives its place up.
        gone = threading.Event()
        watcher = asyncio.create_task(_watch_disconnect(request, gone))
        try:
            seg = await run_in_threadpool(service.segment, image, prompts, params.options(), gone.is_set)
        finally:
            watcher.cancel()
        body = segmentation_response(seg, params.mask_format, service.info()["model"])
        return JSONResponse(body)

    @app.post("/api/v1/refine", response_model=RefineResponse, tags=["segment"], openapi_extra=_REFINE_OPENAPI,
              dependencies=protected,
              responses={400: {"model": ErrorResponse}, 409: {"model": ErrorResponse, "description":
                                                               "the loaded checkpoint has no SAM 3 tracker"},
                         415: {"model": ErrorResponse}, 422: {"model": ErrorResponse}, **auth_responses})
    async def refine(request: Request) -> Any:
        """One object from clicks and/or a box, as in SAM 1 and 2 (SAM 3's tracker head).

        Give `points` with `point_labels` (1 on the object, 0 off it), a `box`, or both, and
        optionally the object's current `mask` (COCO RLE, as /segment returns it) to correct it.
        One click alone returns the best of three candidate masks. The image is sent as in /segment;
        an image just segmented is not encoded again.
        """
        params, image = await _read_image_request(request, RefineParams, RefineJSONRequest, _REFINE_FIELDS)
        mask = None
        if params.mask is not None:
            if len(params.mask.counts) > MAX_RLE_CHARS:
                raise ApiError(400, "bad_input", f"mask: the RLE counts string is over {MAX_RLE_CHARS} characters")
            try:  # off the event loop: a long hostile string costs up to one step per pixel
                mask = await run_in_threadpool(rle_to_mask, params.mask.model_dump(), image.shape[:2])
            except ValueError as exc:
                raise ApiError(400, "bad_input", f"mask: {exc}") from None
        gone = threading.Event()
        watcher = asyncio.create_task(_watch_disconnect(request, gone))
        try:
            inst = await run_in_threadpool(service.refine, image, params.points, params.point_labels, params.box, mask,
                                           params.mask_threshold, gone.is_set)
        finally:
            watcher.cancel()
        inst = dataclasses.replace(inst, prompt=params.label)
        body = inst.to_dict(include_mask=params.mask_format == "rle")
        _set_mask(body, inst.mask, params.mask_format)
        return JSONResponse({"width": int(image.shape[1]), "height": int(image.shape[0]), "instance": body,
                             "model": service.info()["model"]})

    video_errors: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "no such job"},
                                                     **auth_responses}

    def _runner() -> JobRunner:
        if not jobs.running:
            raise ApiError(503, "not_ready", "video jobs are unavailable: " + (getattr(jobs, "start_error", None)
                           or "the job runner is not running"), {"Retry-After": "10"})
        return jobs

    @app.post("/api/v1/videos", status_code=202, response_model=VideoJobAccepted, tags=["video"],
              openapi_extra=_VIDEO_OPENAPI, dependencies=protected,
              responses={400: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 415: {"model": ErrorResponse},
                         422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}, **auth_responses})
    async def submit_video(request: Request) -> Any:
        """Start a video tracking job; answers 202 with the job id at once (poll `GET /api/v1/videos/{id}`).

        Send `multipart/form-data` with a `video` file and the option fields, or JSON with `video_url`.
        The video is saved and probed before the job is accepted: an unreadable video is a 400 and one
        over the limits (size, duration, frames, pixels) a 413, at once. At most `max_video_jobs` jobs
        may be queued or running; beyond that, 503.
        """
        runner = _runner()
        limit = settings.max_video_bytes
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit + 1024 * 1024:
            raise ApiError(413, "too_large", f"request body is {int(length)} bytes; the video limit is {limit}")
        try:
            if ctype == "multipart/form-data":
                await run_in_threadpool(runner.check_capacity)
                form = await request.form(max_files=1, max_fields=32, max_part_size=1024 * 1024)
                upload = form.get("video")
                if upload is None or isinstance(upload, str):
                    raise ApiError(422, "invalid_fields", "multipart request needs a `video` file field")
                params = VideoJobParams.model_validate(_video_form_params(form))

                def write_input(path: Any) -> None:
                    upload.file.seek(0)
                    written = 0
                    with open(path, "wb") as out:
                        while chunk := upload.file.read(1024 * 1024):
                            written += len(chunk)
                            if written > limit:
                                raise InputTooLargeError(f"the video is over the limit of {limit} bytes")
                            out.write(chunk)

                suffix = os.path.splitext(upload.filename or "")[1]
            elif ctype == "application/json":
                try:
                    body = await request.json()
                except (ValueError, RecursionError):
                    raise ApiError(400, "bad_json", "request body is not valid JSON") from None
                params = VideoJobJSONRequest.model_validate(body)
                await run_in_threadpool(runner.check_capacity)
                from urllib.parse import urlsplit

                from sam3studio.io.urls import FetchPolicy, fetch_url

                policy = FetchPolicy(max_bytes=limit, timeout=max(settings.url_timeout_s, 60.0),
                                     allow_private=settings.allow_private_urls)
                try:
                    data = await run_in_threadpool(fetch_url, params.video_url, policy)
                except InputError as exc:  # the fetcher speaks of images; this is a video
                    message = str(exc).replace("image_url", "video_url").replace("image", "video")
                    raise (InputTooLargeError if isinstance(exc, InputTooLargeError) else InputError)(message) from None

                def write_input(path: Any) -> None:
                    with open(path, "wb") as out:
                        out.write(data)

                suffix = os.path.splitext(urlsplit(params.video_url).path)[1]
            else:
                raise ApiError(415, "unsupported_media_type",
                               f"content type {ctype or '(none)'} is not supported; send multipart/form-data or "
                               "application/json")
        except ValidationError as exc:
            raise ApiError(422, "invalid_fields", _validation_message(exc)) from None
        job = await run_in_threadpool(runner.submit, write_input, suffix, params.job_params())
        return JSONResponse(status_code=202, content={"id": job["id"], "state": job["state"]},
                            headers={"Location": f"/api/v1/videos/{job['id']}"})

    @app.get("/api/v1/videos/{job_id}", response_model=VideoJob, tags=["video"], dependencies=protected,
             responses=video_errors)
    async def video_job(job_id: str) -> Any:
        """A job's state (queued, running, done, failed), progress in frames, and error if it failed."""
        return _job_body(await run_in_threadpool(_runner().get, job_id))

    def _done(job_id: str) -> dict[str, Any]:
        job = _runner().get(job_id)
        if job["state"] == "failed":
            raise ApiError(409, "job_failed", f"the job failed: {job['error']}")
        if job["state"] != "done":
            raise ApiError(409, "not_ready", f"the job is {job['state']}; poll GET /api/v1/videos/{job_id} until done",
                           {"Retry-After": "2"})
        return job

    @app.get("/api/v1/videos/{job_id}/result", response_model=VideoResult, tags=["video"], dependencies=protected,
             responses={409: {"model": ErrorResponse, "description": "not done yet, or failed"}, **video_errors})
    async def video_result(job_id: str) -> Any:
        """The tracking result of a done job: summary.json plus every frame of frames.jsonl (masks as COCO RLE)."""
        await run_in_threadpool(_done, job_id)
        summary, frames = await run_in_threadpool(jobs.result, job_id)
        return JSONResponse({"id": job_id, "summary": summary, "frames": frames})

    @app.get("/api/v1/videos/{job_id}/overlay.mp4", tags=["video"], dependencies=protected, response_class=FileResponse,
             responses={200: {"content": {"video/mp4": {}}}, 409: {"model": ErrorResponse}, **video_errors})
    async def video_overlay(job_id: str) -> Any:
        """The overlay video (H.264 MP4) of a done job: frames with coloured masks and track labels."""
        await run_in_threadpool(_done, job_id)
        path = jobs.output_path(job_id, "overlay.mp4")
        if not path.is_file():
            raise ApiError(404, "not_found", "this job has no overlay video (no frame was processed)")
        return FileResponse(path, media_type="video/mp4", filename=f"{job_id}.overlay.mp4")

    @app.delete("/api/v1/videos/{job_id}", status_code=204, tags=["video"], dependencies=protected,
                responses=video_errors)
    async def delete_video(job_id: str) -> Response:
        """Cancel a queued or running job (it stops before its next frame) and delete it with its files."""
        await run_in_threadpool(_runner().cancel, job_id)
        return Response(status_code=204)

    if settings.ui:
        import gradio as gr

        from sam3studio.ui import build_ui

        app = gr.mount_gradio_app(app, build_ui(service, jobs=jobs), path="/", max_file_size=settings.max_upload_bytes,
                                  footer_links=["api"], show_error=False, auth=settings.ui_credentials(),
                                  auth_message="sam3studio: sign in with the credentials given to `--ui-auth`.")
    return app
