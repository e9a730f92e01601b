"""Reading a request body that may be JSON or multipart, once, for every route that takes both.

The routes that take an image (`/segment`, `/refine`) or a video (`/videos`) accept either form on one
path (that is the contract), so FastAPI cannot describe or parse them from a signature: the routes read
the body here, and `openapi_body` / `add_body_schemas` describe both kinds in the OpenAPI document,
in this one place.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ValidationError

from sam3studio.api.errors import ApiError, validation_message
from sam3studio.api.schemas import (
    RefineJSONRequest,
    SegmentJSONRequest,
    SessionJSONRequest,
    VideoJobJSONRequest,
    VideoJobParams,
)
from sam3studio.errors import InputError, InputTooLargeError
from sam3studio.io.urls import FetchPolicy, fetch_url
from sam3studio.jobs import JobRunner
from sam3studio.service import SegmentService
from sam3studio.settings import Settings

__all__ = ["SEGMENT_FIELDS", "REFINE_FIELDS", "VIDEO_FIELDS", "add_body_schemas", "openapi_body", "read_image_request",
           "read_session_request", "read_video_request"]

SEGMENT_FIELDS = {"prompt", "prompts", "threshold", "mask_threshold", "fill_holes", "min_island", "smooth",
                  "max_instances", "mask_format", "boxes", "box_labels"}
REFINE_FIELDS = {"points", "point_labels", "box", "mask", "mask_threshold", "mask_format", "label"}
VIDEO_FIELDS = {"prompt", "prompts", "threshold", "stride", "start", "end", "max_frames"}
# Nested values travel as JSON text in a form.
JSON_TEXT_FIELDS = {"boxes", "box_labels", "points", "point_labels", "box", "mask"}
# The JSON models that routes read by hand, added to the OpenAPI components.
JSON_BODIES = (SegmentJSONRequest, RefineJSONRequest, VideoJobJSONRequest, SessionJSONRequest)

WriteInput = Callable[[Any], None]


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _unsupported(ctype: str) -> ApiError:
    return ApiError(415, "unsupported_media_type", f"content type {ctype or '(none)'} is not supported; send "
                    "multipart/form-data or application/json")


async def _json_body(request: Request) -> Any:
    try:
        return await request.json()
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, huge ints, deep nesting
        raise ApiError(400, "bad_json", "request body is not valid JSON") from None


def decode_base64(text: str) -> bytes:
    """``image_base64``: plain base64 or a ``data:`` URL."""
    if text.startswith("data:"):
        text = text.split(",", 1)[-1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("image_base64 is not valid base64") from None


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


def _check_form_fields(form: Any, fields: set[str], file_field: str) -> None:
    unknown = set(form.keys()) - fields - {file_field}
    if unknown:
        raise ApiError(422, "invalid_fields", f"unknown form field(s): {', '.join(sorted(unknown))}")


def _image_form_params(form: Any, fields: set[str]) -> dict[str, Any]:
    _check_form_fields(form, fields, "image")
    out: dict[str, Any] = {}
    for key in fields & set(form.keys()):
        values = form.getlist(key)
        if key == "prompts":
            out[key] = _form_prompts(values)
        elif key in JSON_TEXT_FIELDS:
            try:
                out[key] = json.loads(values[-1]) if isinstance(values[-1], str) else values[-1]
            except (ValueError, RecursionError):
                raise ApiError(422, "invalid_fields", f"{key}: not valid JSON (e.g. [[10, 20, 110, 220]])") from None
        else:
            out[key] = values[-1]
    return out


def _video_form_params(form: Any) -> dict[str, Any]:
    _check_form_fields(form, VIDEO_FIELDS, "video")
    out: dict[str, Any] = {}
    for key in VIDEO_FIELDS & set(form.keys()):
        values = [v for v in form.getlist(key) if isinstance(v, str)]
        if key == "prompts":
            out[key] = _form_prompts(values)
        elif values:
            out[key] = None if key in ("start", "end", "max_frames") and values[-1] == "" else values[-1]
    return out


async def read_image_request(request: Request, settings: Settings, service: SegmentService,
                             form_model: type[BaseModel], json_model: type[BaseModel],
                             form_fields: set[str]) -> tuple[Any, np.ndarray]:
    """An image request's options and decoded image: multipart (`image` file + fields) or JSON."""
    ctype = _content_type(request)
    # The whole body is bounded by `api.limits.BodyLimitMiddleware` (upload limit plus base64 and form overhead).
    try:
        if ctype == "multipart/form-data":
            form = await request.form(max_files=1, max_fields=32, max_part_size=1024 * 1024)
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise ApiError(422, "invalid_fields", "multipart request needs an `image` file field")
            data = await upload.read(settings.max_upload_bytes + 1)
            if len(data) > settings.max_upload_bytes:
                raise ApiError(413, "too_large", f"image is over the limit of {settings.max_upload_bytes} bytes")
            params = form_model.model_validate(_image_form_params(form, form_fields))
            image = await run_in_threadpool(service.decode_image, data)
        elif ctype == "application/json":
            params = json_model.model_validate(await _json_body(request))
            if params.image_base64 is not None:
                image = await run_in_threadpool(service.decode_image, decode_base64(params.image_base64))
            else:
                image = await run_in_threadpool(service.fetch_image, params.image_url)
        else:
            raise _unsupported(ctype)
    except ValidationError as exc:
        raise ApiError(422, "invalid_fields", validation_message(exc)) from None
    return params, image


def _write_upload(upload: Any, limit: int) -> WriteInput:
    def write_input(path: Any) -> None:
        upload.file.seek(0)
        written = 0
        with open(path, "wb") as out:
            while chunk := upload.file.read(1024 * 1024):
                written += len(chunk)
                if written > limit:
                    raise InputTooLargeError(f"the video is over the limit of {limit} bytes")
                out.write(chunk)

    return write_input


def _write_bytes(data: bytes) -> WriteInput:
    def write_input(path: Any) -> None:
        with open(path, "wb") as out:
            out.write(data)

    return write_input


async def _fetch_video(url: str, settings: Settings) -> bytes:
    policy = FetchPolicy(max_bytes=settings.max_video_bytes, timeout=max(settings.url_timeout_s, 60.0),
                         allow_private=settings.allow_private_urls)
    try:
        return await run_in_threadpool(fetch_url, url, policy)
    except InputError as exc:  # the fetcher speaks of images; this is a video
        message = str(exc).replace("image_url", "video_url").replace("image", "video")
        raise (InputTooLargeError if isinstance(exc, InputTooLargeError) else InputError)(message) from None


async def read_video_request(request: Request, settings: Settings,
                             runner: JobRunner) -> tuple[VideoJobParams, WriteInput, str]:
    """A video job request: its options, a function that writes the video to a path, and the file suffix.

    Capacity is checked before the upload is read (multipart) or fetched (JSON), so a full queue costs nothing.
    """
    limit = settings.max_video_bytes
    ctype = _content_type(request)
    try:
        if ctype == "multipart/form-data":
            await run_in_threadpool(runner.check_capacity)
            form = await request.form(max_files=1, max_fields=32, max_part_size=1024 * 1024)
            upload = form.get("video")
            if upload is None or isinstance(upload, str):
                raise ApiError(422, "invalid_fields", "multipart request needs a `video` file field")
            params = VideoJobParams.model_validate(_video_form_params(form))
            return params, _write_upload(upload, limit), os.path.splitext(upload.filename or "")[1]
        if ctype == "application/json":
            params = VideoJobJSONRequest.model_validate(await _json_body(request))
            await run_in_threadpool(runner.check_capacity)
            data = await _fetch_video(params.video_url, settings)
            return params, _write_bytes(data), os.path.splitext(urlsplit(params.video_url).path)[1]
        raise _unsupported(ctype)
    except ValidationError as exc:
        raise ApiError(422, "invalid_fields", validation_message(exc)) from None


async def read_session_request(request: Request, settings: Settings,
                               check_capacity: Callable[[], None]) -> tuple[WriteInput | None, str, str | None]:
    """A new video session's source: (function writing the upload to a path, suffix, None) or (None, "", job_id).

    Multipart: a `video` file field. JSON: `video_url` (fetched) or `job_id`. Capacity is checked first.
    """
    limit = settings.max_video_bytes
    ctype = _content_type(request)
    try:
        if ctype == "multipart/form-data":
            await run_in_threadpool(check_capacity)
            form = await request.form(max_files=1, max_fields=4, max_part_size=1024 * 1024)
            _check_form_fields(form, set(), "video")
            upload = form.get("video")
            if upload is None or isinstance(upload, str):
                raise ApiError(422, "invalid_fields", "multipart request needs a `video` file field")
            return _write_upload(upload, limit), os.path.splitext(upload.filename or "")[1], None
        if ctype == "application/json":
            params = SessionJSONRequest.model_validate(await _json_body(request))
            await run_in_threadpool(check_capacity)
            if params.job_id is not None:
                return None, "", params.job_id
            data = await _fetch_video(params.video_url or "", settings)
            return _write_bytes(data), os.path.splitext(urlsplit(params.video_url or "").path)[1], None
        raise _unsupported(ctype)
    except ValidationError as exc:
        raise ApiError(422, "invalid_fields", validation_message(exc)) from None


# ---------------------------------------------------------------------------- OpenAPI
def _form_schema(file_field: str, file_doc: str, fields: set[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [file_field],
        "additionalProperties": False,
        "properties": {
            file_field: {"type": "string", "format": "binary", "description": file_doc},
            **{k: {"type": "string", "description": f"as `{k}` in the JSON body"
                   + (" (JSON text)" if k in JSON_TEXT_FIELDS else "")}
               for k in sorted(fields)},
        },
    }


def openapi_body(json_model: type[BaseModel], file_field: str, file_doc: str, fields: set[str]) -> dict[str, Any]:
    """``openapi_extra`` of a route that reads a JSON-or-multipart body by hand: both body kinds."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{json_model.__name__}"}},
                "multipart/form-data": {"schema": _form_schema(file_field, file_doc, fields)},
            },
        }
    }


SEGMENT_BODY = openapi_body(SegmentJSONRequest, "image", "JPEG, PNG, WebP, BMP, TIFF or GIF", SEGMENT_FIELDS)
REFINE_BODY = openapi_body(RefineJSONRequest, "image", "JPEG, PNG, WebP, BMP, TIFF or GIF", REFINE_FIELDS)
VIDEO_BODY = openapi_body(VideoJobJSONRequest, "video", "MP4, MOV, MKV, WebM, AVI or GIF", VIDEO_FIELDS)
SESSION_BODY = openapi_body(SessionJSONRequest, "video", "MP4, MOV, MKV, WebM, AVI or GIF", set())


def add_body_schemas(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the JSON request models that routes read by hand (and their sub-models) to ``components``."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in JSON_BODIES:
        doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in doc.pop("$defs", {}).items():
            components.setdefault(name, sub)
        components[model.__name__] = doc
    return schema
