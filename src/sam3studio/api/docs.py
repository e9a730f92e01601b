"""``/docs`` (Swagger UI) and ``/redoc`` served with their assets from this server: they work offline.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, which leaves them blank on an air-gapped host.
The assets come from the `fastapi-offline` package (a packaged copy of both bundles); two things in them
would still reach the internet and are switched off here: Swagger UI's validator badge (validator.swagger.io)
and ReDoc's "powered by" logo (cdn.redoc.ly), which is pointed at our favicon instead.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

__all__ = ["ASSETS_URL", "add_docs"]

ASSETS_URL = "/docs-assets"
_ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
_REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@lru_cache(maxsize=1)
def _redoc_js() -> bytes:
    return (_ASSETS / "redoc.standalone.js").read_bytes().replace(_REDOC_LOGO.encode(), f"{ASSETS_URL}/favicon.png".encode())


def add_docs(app: FastAPI) -> None:
    """Routes for /docs, /docs/oauth2-redirect and /redoc, and the assets they load (create the app with
    ``docs_url=None, redoc_url=None``)."""
    title, openapi_url = app.title, app.openapi_url or "/openapi.json"
    oauth2_redirect = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=openapi_url, title=f"{title} - Swagger UI",
                                   oauth2_redirect_url=oauth2_redirect,
                                   swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
                                   swagger_ui_parameters={"validatorUrl": None})  # the badge would call swagger.io

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url=openapi_url, title=f"{title} - ReDoc", redoc_js_url=f"{ASSETS_URL}/redoc.js",
                              redoc_favicon_url=f"{ASSETS_URL}/favicon.png", with_google_fonts=False)

    @app.get(f"{ASSETS_URL}/redoc.js", include_in_schema=False)
    async def redoc_js() -> Response:
        return Response(_redoc_js(), media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"})

    app.mount(ASSETS_URL, StaticFiles(directory=_ASSETS), name="docs-assets")
