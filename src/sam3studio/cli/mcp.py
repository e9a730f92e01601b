"""`sam3studio mcp`: SAM 3 as tools for language models (Model Context Protocol), over stdio or streamable HTTP.

Over stdio stdout belongs to the protocol: this command prints nothing there, logs go to stderr, and
the model loads once the SDK has diverted stray writes to stdout onto stderr.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from sam3studio.cli.common import DebugOpt, DeviceOpt, DtypeOpt, ModelOpt, TranslatorOpt, err_console, fail, quiet_libraries


def _settings(overrides: dict, debug: bool):
    from pydantic import ValidationError

    from sam3studio.settings import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()), debug, code=2) from None


def mcp_command(
    http: Annotated[bool, typer.Option("--http", help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio.")]
    = False,
    host: Annotated[str, typer.Option("--host", help="Address to listen on with --http.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port with --http.")] = 7861,
    allow_path: Annotated[list[Path] | None, typer.Option(
        "--allow-path", help="A folder whose files the tools may read by path (repeatable). Over stdio any path is "
        "readable unless this is given; over HTTP only these.", show_default=False)] = None,
    data_dir: Annotated[Path | None, typer.Option(
        "--data-dir", help="Folder for video jobs (kept). Default: a fresh temporary folder, removed at exit. Never "
        "give the folder of a running `serve`.", show_default=False)] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="SAM3STUDIO_API_KEY", show_default=False,
                                                help="With --http: require this key (X-API-Key or Bearer).")] = None,
    model: ModelOpt = "facebook/sam3",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    translator: TranslatorOpt = "lexicon",
    debug: DebugOpt = False,
) -> None:
    """Serve SAM 3 to language models over MCP: tools segment, count, refine, track_video, job_status, job_result."""
    quiet_libraries(debug)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO if debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    jobs_dir = data_dir if data_dir is not None else Path(tempfile.mkdtemp(prefix="sam3studio-mcp-"))
    settings = _settings({"model": model, "device": device, "dtype": dtype, "translator": translator, "host": host,
                          "port": port, "data_dir": jobs_dir, "api_key": api_key if http else None, "ui": False}, debug)
    if api_key and not http:
        err_console.print("[yellow]warning:[/] --api-key applies to --http only; stdio needs none", highlight=False)

    from sam3studio.jobs import JobRunner
    from sam3studio.llm.inputs import PathPolicy
    from sam3studio.llm.mcp_server import build_server, standalone_lifespan
    from sam3studio.service import SegmentService

    service = SegmentService(settings)
    jobs = JobRunner(settings, detector=service.shared_detector)
    paths = PathPolicy.for_transport("HTTP" if http else "stdio", allow_path or ())
    server = build_server(service, jobs, settings, paths, lifespan=standalone_lifespan(service, jobs))
    try:
        if http:
            _serve_http(server, settings, debug)
        else:
            server.run("stdio")
    except KeyboardInterrupt:
        pass
    finally:
        if data_dir is None:
            shutil.rmtree(jobs_dir, ignore_errors=True)


def _serve_http(server, settings, debug: bool) -> None:
    import uvicorn

    from sam3studio.api.deps import require_api_key_asgi

    app = server.streamable_http_app(streamable_http_path="/mcp", host=settings.host)
    if settings.api_key is not None:
        app = require_api_key_asgi(app, settings)
    elif settings.host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"[yellow]warning:[/] listening on {settings.host} without an API key: anyone who can reach "
                          "this address can use the MCP server (set SAM3STUDIO_API_KEY).", highlight=False)
    err_console.print(f"MCP server at [bold]http://{settings.host}:{settings.port}/mcp[/] (streamable HTTP); "
                      f"loading SAM 3 from [bold]{settings.model}[/]", highlight=False)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info" if debug else "warning")
