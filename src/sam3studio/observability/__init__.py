"""Observability: Prometheus metrics, request ids, structured logs, and a watch on result drift.

- `metrics`: the per-app registry, metric objects, and the collector of the service's state;
- `middleware`: the pure ASGI middleware (request ids, timing, bounded route labels);
- `logs`: text or JSON log lines (python-json-logger), the request id on every record;
- `drift`, `store`, `labels`: per-prompt score distributions, their SQLite store, PSI, bounded labels;
- `install`: `Observability` and `install_observability`, which `api.create_app` calls.

docs/operations.md has the metric names, labels, scrape config and alerts.
"""

from sam3studio.observability.context import REQUEST_ID_HEADER, current_request_id
from sam3studio.observability.install import Observability, install_observability

__all__ = ["REQUEST_ID_HEADER", "Observability", "current_request_id", "install_observability"]
