"""The one app of ``sam3studio serve``: the REST API under ``/api/v1``, the MCP server at ``/mcp`` and the
Gradio UI at ``/``.

Routes live in one router per area (`system`, `images`, `videos`, `sessions`); request and response models in
`schemas`; the error envelope in `errors`; JSON-or-multipart body reading in `bodies`; what routes take
through ``Depends`` in `deps`. To add a route: put it in its area's router (or a new module with its own
``APIRouter``, included below), read its input with a pydantic model from `schemas`, call the service,
and raise library errors or `ApiError`: the handlers turn every error into the envelope.

Every error is JSON ``{"error": {"code": "...", "message": "..."}}``: 400 undecodable image or bad
value, 409 a feature the loaded checkpoint lacks (refinement without a tracker), 413 too large, 415
unsupported content type, 422 invalid fields, 503 busy (with Retry-After) or model not ready.
A 500 means a bug of ours, and is logged.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager, nullcontext
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from starlette.routing import Route

from sam3studio import __version__
from sam3studio.api import datasets, docs, images, sessions, system, videos
from sam3studio.api.bodies import add_body_schemas
from sam3studio.api.deps import api_key_checker, require_api_key_asgi
from sam3studio.api.errors import install_handlers, route_methods
from sam3studio.api.limits import BodyLimitMiddleware, body_limits
from sam3studio.api.schemas import ErrorResponse
from sam3studio.dataset.review import DatasetRegistry
from sam3studio.jobs import JobRunner
from sam3studio.llm.inputs import PathPolicy
from sam3studio.llm.mcp_server import HttpEndpoint, build_server
from sam3studio.observability import install_observability
from sam3studio.service import SegmentService
from sam3studio.sessions import SessionManager, server_sessions
from sam3studio.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["API_PREFIX", "create_app"]

API_PREFIX = "/api/v1"


def _lifespan(service: SegmentService, jobs: JobRunner, video_sessions: SessionManager):
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not service.ready and not service.loading:
            service.load_in_background()
        try:
            await run_in_threadpool(jobs.start)
        except Exception as exc:  # the image API still works; video routes answer 503
            jobs.start_error = str(exc)
            log.error("video jobs are unavailable: could not open %s: %s", jobs.data_dir, exc)
        mcp: HttpEndpoint | None = getattr(app.state, "mcp", None)
        try:
            await run_in_threadpool(video_sessions.start)  # ends the sessions a previous process left
        except Exception as exc:
            log.error("video sessions: could not open %s: %s", video_sessions.root, exc)
        try:
            async with mcp.running() if mcp is not None else nullcontext():
                yield
        finally:
            await run_in_threadpool(video_sessions.stop)
            await run_in_threadpool(jobs.stop)

    return lifespan


def _openapi(app: FastAPI):
    def openapi() -> dict[str, Any]:
        """The generated document, plus the JSON request models that routes read by hand."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            app.openapi_schema = add_body_schemas(schema)
        return app.openapi_schema

    return openapi


def _include_routers(app: FastAPI, settings: Settings) -> None:
    protected = [Depends(api_key_checker(settings))] if settings.api_key is not None else []
    auth: dict[int | str, dict[str, Any]] = (
        {401: {"model": ErrorResponse, "description": "missing or wrong API key"}} if protected else {})
    app.include_router(system.public, prefix=API_PREFIX)
    routers = (system.protected, images.router, videos.router, datasets.router, sessions.router)
    for router in routers:
        app.include_router(router, prefix=API_PREFIX, dependencies=protected, responses=auth)
    app.state.route_methods = route_methods(API_PREFIX, (system.public, *routers))
    app.include_router(system.fallback, prefix=API_PREFIX)  # last: whatever no route above answered


def _mount_mcp(app: FastAPI, service: SegmentService, jobs: JobRunner, settings: Settings) -> None:
    """The MCP server at /mcp (streamable HTTP): serve's service and jobs, the API key, no local paths."""
    endpoint = HttpEndpoint(build_server(service, jobs, settings, PathPolicy(transport="HTTP")), host=settings.host)
    app.state.mcp = endpoint
    app.router.routes.append(Route("/mcp", require_api_key_asgi(endpoint, settings) if settings.api_key else endpoint))


def create_app(settings: Settings | None = None, *, service: SegmentService | None = None,
               segmenter: Any | None = None, jobs: JobRunner | None = None) -> FastAPI:
    """Build the app: REST API under /api/v1 and (when ``settings.ui``) the Gradio UI at /.

    Pass ``segmenter`` (or a ``service``) to use a model already loaded; otherwise the model named in
    the settings loads in the background at start-up while /api/v1/health already answers.
    """
    settings = settings or Settings()
    service = service or SegmentService(settings, segmenter=segmenter)
    jobs = jobs or JobRunner(settings, detector=service.shared_detector)
    video_sessions = server_sessions(settings, service, jobs)
    app = FastAPI(
        title="sam3studio",
        version=__version__,
        description="Segment anything by text with SAM 3. Errors are JSON `{error: {code, message}}`.",
        lifespan=_lifespan(service, jobs, video_sessions),
        responses={413: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
        docs_url=None, redoc_url=None,  # served by `docs.add_docs`, with their assets from this server
    )
    app.state.settings, app.state.service, app.state.jobs = settings, service, jobs
    app.state.body_limits = body_limits(settings, API_PREFIX)
    app.state.datasets = DatasetRegistry(settings.datasets)  # the folders of `serve --dataset`, by id
    app.state.sessions = video_sessions
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    install_handlers(app)
    docs.add_docs(app)
    _include_routers(app, settings)
    if settings.mcp:
        _mount_mcp(app, service, jobs, settings)
    # Every body of every route (the API, /mcp, the UI mounted below, whatever comes later) is counted; only the
    # observability middleware is outside it, so refused bodies are logged and counted too.
    app.add_middleware(BodyLimitMiddleware, limits=app.state.body_limits)
    install_observability(app, settings, service, jobs,  # before the UI: /metrics must not fall to its catch-all
                          auth=api_key_checker(settings) if settings.api_key is not None else None,
                          quiet_routes=(f"{API_PREFIX}/health", f"{API_PREFIX}/ready"))
    if settings.ui:
        import gradio as gr  # deferred: the UI is optional (--no-ui) and gradio is slow to import

        from sam3studio.ui import build_ui
        from sam3studio.ui.page import FONTS_DIR, FONTS_URL, page_options

        app.mount(FONTS_URL, StaticFiles(directory=FONTS_DIR), name="ui-fonts")  # before the UI takes "/"
        # Gradio's file limit is one for the whole page: the largest a tab accepts (the Video tab's videos);
        # the image tab's handlers refuse images over max_upload_mb when they decode them.
        app = gr.mount_gradio_app(app, build_ui(service, jobs=jobs, datasets=app.state.datasets,
                                                    sessions=video_sessions), path="/",
                                  max_file_size=max(settings.max_upload_bytes, settings.max_video_bytes),
                                  footer_links=["api"], show_error=False, auth=settings.ui_credentials(),
                                  auth_message="sam3studio: sign in with the credentials given to `--ui-auth`.",
                                  **page_options())
    return app
