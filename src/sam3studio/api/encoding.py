"""Response bodies built and encoded off the event loop.

Encoding a segmentation (RLE, PNG, polygons) and ``json.dumps`` of a large body take long enough to stall
every other request if they ran on the event loop; `json_response` runs both in the thread pool.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

__all__ = ["json_response"]


def _encode(build: Callable[..., Any], args: tuple[Any, ...]) -> bytes:
    # As Starlette's JSONResponse renders: compact, UTF-8, no NaN.
    return json.dumps(build(*args), ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")


async def json_response(build: Callable[..., Any], *args: Any, status_code: int = 200,
                        headers: dict[str, str] | None = None) -> Response:
    """``build(*args)`` as a JSON response; building and encoding run in the thread pool."""
    body = await run_in_threadpool(_encode, build, args)
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")
