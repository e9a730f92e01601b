"""SAM 3 as tools for language models: a Model Context Protocol server on the official MCP Python SDK.

`build_server` returns an `mcp.server.mcpserver.MCPServer` with six tools (`segment`, `count`, `refine`,
`track_video`, `job_status`, `job_result`; their work is in `sam3studio.llm.tools`). The SDK derives each
tool's input schema from its signature and its output schema from the models of
`sam3studio.llm.contract`; every answer carries structured content, a short text summary, and for
image tools a marked picture (MCP image content). `sam3studio mcp` runs it over stdio or streamable
HTTP; `sam3studio serve` mounts it at ``/mcp`` (`sam3studio.api.app`).

Rules every tool keeps (the contract in docs/llm.md):

- a time budget: ``timeout_s`` (default 60 s, at most 600 s); past it the call answers a tool error
  while the server goes on (a request still queued for the model gives its place up);
- bounded output: instances, polygon points, picture size, tracks;
- bad input is a tool error (``isError``) holding one sentence that says what to change, never a
  traceback; an unexpected failure is logged (stderr) and answered as a generic tool error.

This module is written without ``from __future__ import annotations``: the tools are closures whose
parameter annotations use the server's limits, and the SDK reads them at registration.
"""

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import Field, ValidationError
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from sam3studio import __version__
from sam3studio.errors import JobNotFound, NotReady, Overloaded, Sam3StudioError
from sam3studio.jobs import JobRunner
from sam3studio.llm.contract import (
    LIMITS,
    CountOutput,
    JobResultOutput,
    JobStatusOutput,
    RefineOutput,
    SegmentOutput,
    TrackSubmitted,
)
from sam3studio.llm.inputs import PathPolicy
from sam3studio.llm.tools import Answer, Sam3Tools
from sam3studio.schemas import RLE
from sam3studio.service import SegmentService
from sam3studio.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["INSTRUCTIONS", "HttpEndpoint", "build_server", "error_result", "standalone_lifespan"]

INSTRUCTIONS = (
    "SAM 3 segmentation tools. Give short noun phrases as prompts ('person', 'red car', 'helmet'), not questions "
    "or sentences; split a complex query into phrases and reason over the instances yourself. Boxes are "
    "[x1, y1, x2, y2] in image pixels, origin top-left (box_normalized divides by width and height). "
    "A prompt with no_match true found nothing: that is an answer, not an error. Masks are omitted unless "
    "mask_format asks for rle or polygon. Videos run as jobs: track_video, then job_status, then job_result."
)

IMAGE_DOC = ("The image: an http(s) URL (public addresses only), a data: URL or base64 of the file, or a local "
             "file path (accepted over stdio, or under a folder the server allows)")
PROMPTS_DOC = "Noun phrases to find, e.g. [\"person\", \"red car\"]; a comma-separated string also works"
TIMEOUT_DOC = "Seconds this call may take before it answers an error (the model may be busy or loading)"

Timeout = Annotated[float, Field(gt=0, le=LIMITS.max_timeout_s, description=TIMEOUT_DOC)]
Threshold = Annotated[float, Field(ge=0.01, le=1.0, description="Detection score threshold; lower finds more")]
MaskFormatIn = Annotated[Literal["rle", "polygon", "none"], Field(
    description="none (default: boxes and areas only, the smallest answer), polygon (simplified outlines) or rle "
                "(COCO RLE, exact, as the REST API)")]
PolygonPoints = Annotated[int, Field(ge=3, le=LIMITS.polygon_points_cap,
                                     description="Most polygon points per instance (mask_format=polygon)")]
Annotate = Annotated[bool, Field(description="Attach the image with each instance's id drawn on it")]

_READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)


def error_result(message: str) -> CallToolResult:
    """A tool error: one sentence for the LLM."""
    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else err.get("msg", "invalid"))
    return "; ".join(parts) or "invalid arguments"


def _result(answer: Answer) -> CallToolResult:
    content: list[Any] = [TextContent(type="text", text=answer.text)]
    if answer.image_jpeg is not None:
        content.append(ImageContent(type="image", data=answer.image_jpeg, mime_type="image/jpeg"))
    return CallToolResult(content=content, structured_content=answer.data)


def _message(exc: Sam3StudioError) -> str:
    if isinstance(exc, Overloaded):
        return f"{exc} (about {exc.retry_after} s)"
    if isinstance(exc, JobNotFound):
        return f"{exc}: use the job_id that track_video answered"
    return str(exc)


class _Server(MCPServer):
    """`MCPServer` whose argument errors read as one sentence (``field: problem``) instead of pydantic's report."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                return error_result(f"{name}: invalid arguments: {_validation_message(exc.__cause__)}")
            raise


class _Runner:
    """Runs a tool's work in a worker thread under its time budget, turning errors into tool errors."""

    def __init__(self, service: SegmentService) -> None:
        self.service = service

    async def _model_ready(self) -> None:
        while not self.service.ready:
            if self.service.load_error:
                raise NotReady(f"the model could not be loaded: {self.service.load_error}")
            await anyio.sleep(0.1)

    async def __call__(self, tool: str, timeout_s: float, work: Callable[[Callable[[], bool]], Answer],
                       needs_model: bool = True) -> CallToolResult:
        gone = threading.Event()
        stage = "waiting for the model to load"
        t0 = time.monotonic()
        try:
            with anyio.fail_after(timeout_s):
                if needs_model:
                    await self._model_ready()
                stage = "running"
                answer = await anyio.to_thread.run_sync(lambda: work(gone.is_set), abandon_on_cancel=True)
        except anyio.get_cancelled_exc_class():
            gone.set()  # the client cancelled the call: a request still queued for the model leaves the queue
            raise
        except TimeoutError:
            gone.set()
            hint = ("the model is still loading" if stage.startswith("waiting") else
                    "the server is busy or the input is large")
            return error_result(f"{tool} did not finish within timeout_s={timeout_s:g} s ({hint}); "
                                "call again, with a larger timeout_s or a smaller input")
        except Sam3StudioError as exc:
            log.info("tool %s refused: %s", tool, exc)
            return error_result(f"{tool}: {_message(exc)}")
        except Exception:
            log.exception("tool %s failed unexpectedly (a bug in sam3studio)", tool)
            return error_result(f"{tool}: internal error; the server log has the details (the server keeps running)")
        log.info("tool %s answered in %.2f s", tool, time.monotonic() - t0)
        return _result(answer)


def _register_image_tools(server: MCPServer, tools: Sam3Tools, run: _Runner, settings: Settings) -> None:
    max_inst = settings.max_instances
    Prompts = Annotated[list[str] | str, Field(description=PROMPTS_DOC + f" (at most {settings.max_prompts})")]
    MaxInstances = Annotated[int, Field(ge=1, le=max_inst, description=f"Most instances returned (at most {max_inst})")]

    @server.tool(annotations=_READ_ONLY, description=(
        "Find every object matching short noun phrases in an image (SAM 3, open vocabulary). Answers per prompt a "
        "presence score and count (no_match true when nothing matched) and per instance an id, score, box "
        "[x1, y1, x2, y2] in pixels and normalized to [0, 1], area and area_fraction, and the mask if mask_format "
        "asks for one. The attached image shows each instance's id. Chinese prompts are accepted."))
    async def segment(image: Annotated[str, Field(description=IMAGE_DOC)], prompts: Prompts, threshold: Threshold = 0.5,
                      mask_format: MaskFormatIn = "none", max_instances: MaxInstances = LIMITS.default_max_instances,
                      max_polygon_points: PolygonPoints = LIMITS.max_polygon_points, annotate: Annotate = True,
                      timeout_s: Timeout = LIMITS.default_timeout_s) -> Annotated[CallToolResult, SegmentOutput]:
        return await run("segment", timeout_s, lambda gone: tools.segment(
            image, prompts, threshold, mask_format, max_instances, max_polygon_points, annotate, gone))

    @server.tool(annotations=_READ_ONLY, description=(
        "Count the objects matching noun phrases in an image: numbers only (per prompt count, presence score, "
        "no_match), the cheapest answer for 'how many'."))
    async def count(image: Annotated[str, Field(description=IMAGE_DOC)], prompts: Prompts, threshold: Threshold = 0.5,
                    timeout_s: Timeout = LIMITS.default_timeout_s) -> Annotated[CallToolResult, CountOutput]:
        return await run("count", timeout_s, lambda gone: tools.count(image, prompts, threshold, gone))

    @server.tool(annotations=_READ_ONLY, description=(
        "Segment one object from clicks and/or a box (SAM 3's interactive head): points [[x, y], ...] in pixels "
        "with point_labels (1 on the object, 0 background; all 1 when left out) and/or box [x1, y1, x2, y2]; "
        "optionally the object's current mask (COCO RLE, from segment with mask_format=rle) to correct it."))
    async def refine(image: Annotated[str, Field(description=IMAGE_DOC)],
                     points: Annotated[list[Annotated[list[float], Field(min_length=2, max_length=2)]] | None,
                                       Field(max_length=64, description="Clicks [[x, y], ...] in image pixels")] = None,
                     point_labels: Annotated[list[Literal[0, 1]] | None,
                                             Field(max_length=64, description="One per point: 1 object, 0 not")] = None,
                     box: Annotated[list[float] | None, Field(min_length=4, max_length=4,
                                                              description="[x1, y1, x2, y2] in image pixels")] = None,
                     mask: Annotated[RLE | None, Field(description="The object's current mask, COCO RLE")] = None,
                     label: Annotated[str, Field(max_length=200, description="Name the instance carries")] = "object",
                     mask_format: MaskFormatIn = "none", max_polygon_points: PolygonPoints = LIMITS.max_polygon_points,
                     annotate: Annotate = True,
                     timeout_s: Timeout = LIMITS.default_timeout_s) -> Annotated[CallToolResult, RefineOutput]:
        rle = mask.model_dump() if mask is not None else None
        return await run("refine", timeout_s, lambda gone: tools.refine(
            image, points, point_labels, box, rle, mask_format, max_polygon_points, label, annotate, gone))


def _register_video_tools(server: MCPServer, tools: Sam3Tools, run: _Runner, settings: Settings) -> None:
    JobId = Annotated[str, Field(description="The job_id that track_video answered")]

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False),
                 description=(
        "Start tracking the objects matching noun phrases through a video. Tracking takes longer than a tool call, "
        "so this answers a job_id at once: poll job_status (wait_s waits), then call job_result."))
    async def track_video(video: Annotated[str, Field(description=IMAGE_DOC.replace("image", "video"))],
                          prompts: Annotated[list[str] | str, Field(description=PROMPTS_DOC)], threshold: Threshold = 0.5,
                          stride: Annotated[int, Field(ge=1, le=10_000, description="Process every n-th frame")] = 1,
                          start: Annotated[float | None, Field(ge=0, description="Start at this second")] = None,
                          end: Annotated[float | None, Field(gt=0, description="Stop at this second")] = None,
                          max_frames: Annotated[int | None, Field(ge=1, le=settings.max_video_frames,
                                                                  description="Process at most this many frames")] = None,
                          timeout_s: Timeout = 120.0) -> Annotated[CallToolResult, TrackSubmitted]:
        return await run("track_video", timeout_s, lambda gone: tools.track_video(
            video, prompts, threshold, stride, start, end, max_frames), needs_model=False)

    @server.tool(annotations=_READ_ONLY, description=(
        "State (queued, running, done, failed) and progress in frames of a video job; wait_s > 0 waits up to that "
        "many seconds for it to end."))
    async def job_status(job_id: JobId,
                         wait_s: Annotated[float, Field(ge=0, le=LIMITS.max_wait_s,
                                                        description="Wait up to this long for the job to end")] = 0.0,
                         ) -> Annotated[CallToolResult, JobStatusOutput]:
        deadline = time.monotonic() + wait_s
        while True:
            answer = await run("job_status", 10.0, lambda gone: tools.job_status(job_id), needs_model=False)
            if answer.is_error or answer.structured_content["state"] not in ("queued", "running") \
                    or time.monotonic() >= deadline:
                return answer
            await anyio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    @server.tool(annotations=_READ_ONLY, description=(
        "The result of a done video job: per prompt how many objects were tracked (no_match when none), and per "
        "track its id, prompt, first and last frame, frames present and mean score."))
    async def job_result(job_id: JobId,
                         max_tracks: Annotated[int, Field(ge=1, le=LIMITS.max_tracks_cap,
                                                          description="Most tracks listed")] = LIMITS.default_max_tracks,
                         ) -> Annotated[CallToolResult, JobResultOutput]:
        return await run("job_result", 30.0, lambda gone: tools.job_result(job_id, max_tracks), needs_model=False)


def build_server(service: SegmentService, jobs: JobRunner | None, settings: Settings, paths: PathPolicy,
                 lifespan: Callable[[MCPServer], AbstractAsyncContextManager[Any]] | None = None) -> MCPServer:
    """The MCP server over ``service`` and ``jobs`` (video tools answer an error while ``jobs`` is None or stopped).

    ``paths`` says which local paths ``image``/``video`` may name. ``lifespan`` runs once when the server
    starts serving (stdio, or the HTTP app's lifespan); `sam3studio mcp` loads the model there.
    """
    server = _Server(name="sam3studio", version=__version__, instructions=INSTRUCTIONS, lifespan=lifespan,
                     log_level="WARNING")
    tools = Sam3Tools(service, jobs, settings, paths)
    run = _Runner(service)
    _register_image_tools(server, tools, run, settings)
    _register_video_tools(server, tools, run, settings)
    return server



def standalone_lifespan(service: SegmentService, jobs: JobRunner) -> Callable[[MCPServer], AbstractAsyncContextManager[None]]:
    """For `sam3studio mcp`: load the model in the background and run the job worker while the server serves.

    Over stdio this runs once the SDK holds stdout for the protocol, so nothing the loading prints can
    reach the wire; tools wait for the model within their time budget.
    """

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[None]:
        if not service.ready and not service.loading:
            service.load_in_background()
        try:
            await anyio.to_thread.run_sync(jobs.start)
        except Exception as exc:  # image tools still work; video tools answer why not
            jobs.start_error = str(exc)
            log.error("video jobs are unavailable: could not open %s: %s", jobs.data_dir, exc)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(jobs.stop)

    return lifespan


class HttpEndpoint:
    """The server's streamable-HTTP endpoint as one ASGI app, for a route of another app (``/mcp`` on serve).

    `running()` must wrap the host app's lifespan: it starts the SDK's session manager, a fresh one
    each time (the SDK runs a manager once). ``host`` is the address served: on loopback the SDK's
    DNS-rebinding protection accepts only loopback Host and Origin headers.
    """

    def __init__(self, server: MCPServer, path: str = "/mcp", host: str = "127.0.0.1") -> None:
        self.server, self.path, self.host = server, path, host
        self._manager: Any = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self.server.streamable_http_app(streamable_http_path=self.path, host=self.host)  # makes the session manager
        manager = self.server.session_manager
        async with manager.run():
            self._manager = manager
            try:
                yield
            finally:
                self._manager = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._manager is None:
            response = JSONResponse({"error": {"code": "not_ready", "message": "the MCP endpoint is not running"}},
                                    status_code=503)
            await response(scope, receive, send)
            return
        await self._manager.handle_request(scope, receive, send)
