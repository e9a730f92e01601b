"""`sam3studio serve`: the web UI and the REST API on one port."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from sam3studio.cli.common import (
    DebugOpt,
    console,
    err_console,
    fail,
    quiet_libraries,
    setting_option,
)


def serve(
    model: Annotated[str | None, setting_option("model", "--model", "-m", help="Hub id, local directory, "
                                                "modelscope:<id>, or 'random' (untrained weights).")] = None,
    host: Annotated[str | None, setting_option("host", "--host", help="Address to listen on.")] = None,
    port: Annotated[int | None, setting_option("port", "--port", help="Port.")] = None,
    device: Annotated[str | None, setting_option("device", "--device", help="auto, cpu, cuda, cuda:N or mps.")] = None,
    dtype: Annotated[str | None, setting_option("dtype", "--dtype", help="auto, float32, bfloat16 or float16.")] = None,
    translator: Annotated[str | None, setting_option("translator", "--translator",
                                                     help="lexicon, none, or a MarianMT folder.")] = None,
    lang: Annotated[str | None, setting_option("lang", "--lang", help="UI language: auto (the browser's), en or zh.")] = None,
    api_key: Annotated[str | None, setting_option("api_key", "--api-key", help="Require this key on the REST API "
                                                  "(X-API-Key or Bearer). Prefer the environment variable: argv is "
                                                  "visible to other users.")] = None,
    ui_auth: Annotated[str | None, setting_option("ui_auth", "--ui-auth", help="user:password the web UI asks for.")] = None,
    no_ui: Annotated[bool, typer.Option("--no-ui", help="Serve the REST API only (env: SAM3STUDIO_UI=false).")] = False,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile the vision encoder (faster per image "
                                                "after a slow first one; needs a C/C++ compiler on the CPU; env: "
                                                "SAM3STUDIO_COMPILE=true).")] = False,
    debug: DebugOpt = False,
) -> None:
    """Serve the web UI at / and the REST API at /api/v1 on one port.

    Every setting (limits, data dir, video jobs, ...) also reads a SAM3STUDIO_* environment variable (docs/api.md).
    """
    quiet_libraries(debug)
    from pydantic import ValidationError

    from sam3studio.settings import Settings

    overrides = {k: v for k, v in {"model": model, "host": host, "port": port, "device": device, "dtype": dtype,
                                                   "translator": translator, "lang": lang,
                                                   "api_key": api_key, "ui_auth": ui_auth}.items()
                 if v is not None}
    if no_ui:
        overrides["ui"] = False
    if compile_model:
        overrides["compile"] = True
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()), debug, code=2) from None
    import uvicorn

    from sam3studio.api import create_app
    from sam3studio.observability.logs import configure_logging

    configure_logging(settings.log_format)
    if settings.log_format == "json":  # every line a JSON object: the banner and warnings become log records
        log = logging.getLogger("sam3studio.serve")
        for warning in access_warnings(settings):
            log.warning(warning)
        log.info("serving on http://%s:%d/ (UI at /, API docs at /docs); loading SAM 3 from %s in the background",
                 settings.host, settings.port, settings.model)
    else:
        for warning in access_warnings(settings):
            err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
        console.print(f"Loading SAM 3 from [bold]{settings.model}[/] in the background; "
                      f"UI at [bold]http://{settings.host}:{settings.port}/[/], API docs at /docs", highlight=False)
    # JSON lines: uvicorn's own records go through our handler too (no log config of its own).
    log_config = {"log_config": None} if settings.log_format == "json" else {}
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info" if debug else "warning",
                **log_config)


def access_warnings(settings) -> list[str]:
    """What is open to anyone who can reach the server (nothing to say on loopback)."""
    if settings.host in ("127.0.0.1", "localhost", "::1"):
        return []
    out = []
    if settings.api_key is None:
        out.append(f"listening on {settings.host} without an API key: anyone who can reach this address can use "
                   "the REST API (set SAM3STUDIO_API_KEY).")
    if settings.ui and settings.ui_auth is None:
        out.append(f"listening on {settings.host} without UI credentials: anyone who can reach this address can use "
                   "the web UI and its Gradio API (set SAM3STUDIO_UI_AUTH=user:password, or --no-ui).")
    return out
