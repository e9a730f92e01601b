"""What one app watches (`Observability`), and `install_observability`, which wires it into a FastAPI app.

`create_app` calls `install_observability` once, after the API routers and before the UI is mounted at ``/``:
it adds ``GET /metrics`` (unless ``settings.metrics`` is off; behind the API key when one is set), the
request-id middleware, and observers on the service (each segmentation: model-time histograms, drift,
the access log's counts) and on the job runner (job durations).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response

from sam3studio.observability import context
from sam3studio.observability.context import RequestContext
from sam3studio.observability.drift import normalize_prompt, outcome
from sam3studio.observability.labels import TopPrompts
from sam3studio.observability.logs import ACCESS_LOGGER
from sam3studio.observability.metrics import MODEL_STAGES, SKIPPED_WHEN_ZERO, Metrics, StateCollector, render
from sam3studio.observability.middleware import ObservabilityMiddleware, RouteLabels, Scope
from sam3studio.observability.store import DB_NAME, DriftStore

if TYPE_CHECKING:
    from sam3studio.jobs import JobRunner
    from sam3studio.results import Segmentation
    from sam3studio.service import SegmentOptions, SegmentService
    from sam3studio.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["METRICS_PATH", "Observability", "install_observability"]

METRICS_PATH = "/metrics"
# Methods outside this set share one label: the method is the client's to choose, labels must stay bounded.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Observability:
    """The metrics, the drift store and the access log of one app.

    ``quiet_routes`` (probes, the scrape itself) are logged at DEBUG whatever they answer; other requests
    at WARNING for a 5xx, else INFO under ``loud_prefix`` (the API) and DEBUG outside (the UI's assets and
    event streams).
    """

    def __init__(self, settings: Settings, service: SegmentService | None = None, jobs: JobRunner | None = None,
                 *, app: Any = None, quiet_routes: Iterable[str] = (), loud_prefix: str = "/api/") -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.routes = RouteLabels(app, extra=(METRICS_PATH,)) if app is not None else None
        self.top_prompts = TopPrompts(settings.drift_top_prompts, on_demote=self.metrics.forget_prompt)
        self.quiet_routes, self.loud_prefix = frozenset(quiet_routes) | {METRICS_PATH}, loud_prefix
        self.access = logging.getLogger(ACCESS_LOGGER)
        self._store: DriftStore | None = None
        self._store_failed = False
        self._store_lock = threading.Lock()
        if service is not None:
            self.metrics.registry.register(StateCollector(service, jobs))

    # ------------------------------------------------------------------ drift store
    @property
    def store(self) -> DriftStore | None:
        """The drift store, opened on first use (None when drift is off or the data dir cannot be written)."""
        if self._store is None and self.settings.drift and not self._store_failed:
            with self._store_lock:
                if self._store is None and not self._store_failed:
                    path = self.settings.data_dir / DB_NAME
                    try:
                        self._store = DriftStore(path, retention_hours=self.settings.drift_retention_days * 24)
                    except Exception as exc:  # the server goes on; drift metrics still count
                        self._store_failed = True
                        log.error("result drift is not recorded: could not open %s: %s", path, exc)
        return self._store

    def close(self) -> None:
        """Write the drift counts still in memory (the app is shutting down)."""
        with self._store_lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()

    # ------------------------------------------------------------------ requests
    def route_label(self, scope: Scope, status: int) -> str:
        return self.routes.label(scope, status) if self.routes is not None else scope.get("path", "")

    def request_started(self) -> None:
        if self.settings.metrics:
            self.metrics.in_flight.inc()

    def request_done(self, scope: Scope, route: str, status: int, seconds: float, ctx: RequestContext) -> None:
        method = str(scope.get("method", ""))
        if self.settings.metrics:
            self.metrics.in_flight.dec()
            self.metrics.observe_request(route, method if method in _METHODS else "other", str(status), seconds)
        self._log_access(scope, method, route, status, seconds, ctx)

    def _log_access(self, scope: Scope, method: str, route: str, status: int, seconds: float,
                    ctx: RequestContext) -> None:
        if route in self.quiet_routes:  # probes and scrapes: their answers (even 503 while loading) are routine
            level = logging.DEBUG
        elif status >= 500:
            level = logging.WARNING
        elif route.startswith(self.loud_prefix):
            level = logging.INFO
        else:
            level = logging.DEBUG
        if not self.access.isEnabledFor(level):
            return
        path = scope.get("path", "")
        fields: dict[str, Any] = {"request_id": ctx.request_id, "method": method, "route": route, "path": path,
                                  "status": status, "duration_ms": round(seconds * 1000, 2)}
        client = scope.get("client")
        if client:
            fields["client"] = client[0]
        fields.update(ctx.fields)
        counts = "".join(f" {k}={ctx.fields[k]}" for k in ("prompts", "instances") if k in ctx.fields)
        # makeRecord + handle is Logger.log without its stack walk for the caller (always this line here)
        self.access.handle(self.access.makeRecord(
            self.access.name, level, __file__, 0, "%s %s %d %.1f ms%s id=%s",
            (method, path, status, seconds * 1000, counts, ctx.request_id), None, extra=fields))

    # ------------------------------------------------------------------ work
    def observe_segment(self, seg: Segmentation, options: SegmentOptions) -> None:
        """After one successful `SegmentService.segment`: model-time split, drift, the access log's counts."""
        if self.settings.metrics:
            for stage in MODEL_STAGES:
                value = seg.timings.get(stage)
                if value is not None and not (stage in SKIPPED_WHEN_ZERO and value <= 0):
                    self.metrics.observe_stage(stage, value)
        if getattr(options, "boxes", None) is None:  # exemplar boxes change what the scores mean: not watched
            self._observe_drift(seg)
        ctx = context.current()
        if ctx is not None:
            ctx.fields.update(prompts=len(seg.prompts), instances=len(seg),
                              timings_ms={k: round(v * 1000, 2) for k, v in seg.timings.items()})
            if self.settings.log_prompts:
                ctx.fields["prompt_texts"] = [p.text for p in seg.prompts]

    def _observe_drift(self, seg: Segmentation) -> None:
        store = self.store
        if not self.settings.metrics and store is None:
            return
        scores: list[list[float]] = [[] for _ in seg.prompts]
        for score, i in zip(seg.scores.tolist(), seg.prompt_ids.tolist(), strict=True):  # one pass, no masks
            scores[i].append(score)
        for i, prompt in enumerate(seg.prompts):
            presence, top, count = outcome(prompt.presence_score, scores[i])
            key = normalize_prompt(prompt.query or prompt.text)
            if self.settings.metrics:
                self.metrics.observe_drift(self.top_prompts.label(key), presence, top, count)
            if store is not None:
                store.add(key, presence, top, count)

    def observe_job(self, job_id: str, seconds: float, state: str | None) -> None:
        if self.settings.metrics and state in ("done", "failed"):
            self.metrics.job_seconds.labels(state).observe(seconds)

    def exposition(self, accept: str | None) -> Response:
        body, content_type = render(self.metrics.registry, accept)
        return Response(body, media_type=content_type)


def install_observability(app: FastAPI, settings: Settings, service: SegmentService, jobs: JobRunner | None = None,
                          *, auth: Callable[..., Any] | None = None, quiet_routes: Iterable[str] = ()) -> Observability:
    """Wire metrics, request ids, the access log and drift into ``app`` (call before mounting the UI at /).

    ``auth`` is the API-key dependency when a key is set (it then guards /metrics too).
    """
    obs = Observability(settings, service, jobs, app=app, quiet_routes=quiet_routes)
    app.state.observability = obs
    if settings.metrics:
        def metrics(request: Request) -> Response:  # sync: FastAPI runs it in the thread pool (it reads SQLite)
            """Prometheus metrics (text format; OpenMetrics when asked for)."""
            return obs.exposition(request.headers.get("accept"))

        app.add_api_route(METRICS_PATH, metrics, methods=["GET"], include_in_schema=False,
                          dependencies=[Depends(auth)] if auth is not None else None)
    app.add_middleware(ObservabilityMiddleware, observer=obs)
    service.observers.append(obs.observe_segment)
    if jobs is not None:
        jobs.observers.append(obs.observe_job)
    return obs
