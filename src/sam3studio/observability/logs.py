"""Server logging: readable text (the default) or one JSON object per line (``SAM3STUDIO_LOG_FORMAT=json``).

JSON lines come from python-json-logger: ``time``, ``level``, ``logger``, ``message``, plus whatever a
record carries as ``extra`` (the access log's ``request_id``, ``route``, ``status``, ``duration_ms``,
``prompts``, ``instances``, ``timings_ms``). `RequestIdFilter` stamps the id of the request being served on
every record made while serving it, also in the thread pool. What goes into a record is chosen where it is
logged: no image bytes, no headers, no keys; prompt texts only with ``SAM3STUDIO_LOG_PROMPTS=true``.
"""

from __future__ import annotations

import logging
import sys
from typing import IO

from pythonjsonlogger.json import JsonFormatter

from sam3studio.observability.context import current_request_id

__all__ = ["ACCESS_LOGGER", "TEXT_FORMAT", "RequestIdFilter", "configure_logging", "json_formatter"]

ACCESS_LOGGER = "sam3studio.access"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to a record made while a request is served (leaves records outside one alone)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = current_request_id()
            if request_id is not None:
                record.request_id = request_id
        return True


def json_formatter() -> logging.Formatter:
    return JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                         rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                         json_ensure_ascii=False)


def configure_logging(log_format: str = "text", level: int = logging.INFO, stream: IO[str] | None = None) -> logging.Handler:
    """Send every log record (ours, uvicorn's, the libraries') to one stderr handler in ``log_format``."""
    if log_format not in ("text", "json"):
        raise ValueError(f"log_format must be 'text' or 'json', got {log_format!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(json_formatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RequestIdFilter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    return handler
