"""Status routes: ``/api/v1/health`` (liveness), ``/api/v1/ready`` (the model is loaded) and ``/api/v1/info``."""

from __future__ import annotations

import os
import platform
from typing import Any

from fastapi import APIRouter, Depends, Request

from sam3studio import __version__
from sam3studio.api.deps import get_service, get_settings
from sam3studio.api.errors import allowed_methods, error_response, to_api_error
from sam3studio.api.schemas import ErrorResponse, Health, Info, ModelInfo, QueueState, Ready
from sam3studio.errors import NotReady
from sam3studio.service import SegmentService
from sam3studio.settings import Settings

__all__ = ["fallback", "protected", "public"]

public = APIRouter(tags=["status"])  # never behind the API key: probes must answer
protected = APIRouter(tags=["status"])
# Included last under /api/v1: an unknown path or a wrong method answers in the error envelope even with the UI
# mounted at /, whose catch-all would otherwise answer first.
fallback = APIRouter(include_in_schema=False)

INFO_LIMITS = ("max_upload_mb", "max_pixels", "max_prompts", "max_prompt_chars", "max_instances", "max_concurrent",
               "max_queue", "url_timeout_s")


def rss_mb() -> float | None:
    """Current resident set size from /proc (None where there is no /proc)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


@public.get("/health", response_model=Health)
async def health() -> Health:
    """Liveness: answers at once, even while the model is busy or loading."""
    return Health()


@public.get("/ready", response_model=Ready,
            responses={503: {"model": ErrorResponse, "description": "model loading or failed to load"}})
async def ready(service: SegmentService = Depends(get_service)) -> Any:
    """Readiness: 200 once the model is loaded."""
    if not service.ready:
        e = to_api_error(NotReady(service.load_error and f"the model could not be loaded: {service.load_error}"
                                  or "the model is still loading"))
        return error_response(e.status, e.code, e.message, e.headers)
    return Ready(ready=True, model=ModelInfo(**service.info()["model"]))


@protected.get("/info", response_model=Info)
async def info(service: SegmentService = Depends(get_service), settings: Settings = Depends(get_settings)) -> Info:
    """Versions, model, device, dtype and the input limits in force."""
    import torch  # already imported by the engine; deferred so that building the app stays light
    import transformers

    state = service.info()
    return Info(version=__version__, python=platform.python_version(), torch=torch.__version__,
                transformers=transformers.__version__, ready=state["ready"], loading=state["loading"],
                error=state["error"], model=ModelInfo(**state["model"]),
                limits={k: getattr(settings, k) for k in INFO_LIMITS},
                queue=QueueState(running=service.gate.active, waiting=service.gate.waiting,
                                 peak_waiting=service.gate.peak_waiting), rss_mb=rss_mb())


_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@fallback.api_route("", methods=_ALL_METHODS)
@fallback.api_route("/{path:path}", methods=_ALL_METHODS)
async def not_an_api_route(request: Request) -> Any:
    """405 with ``Allow`` for a known path asked with another method, else 404 (both in the envelope)."""
    methods = allowed_methods(request)
    if methods:
        return error_response(405, "method_not_allowed", "Method Not Allowed", {"Allow": ", ".join(sorted(methods))})
    return error_response(404, "not_found", "Not Found")
