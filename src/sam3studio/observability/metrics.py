"""The Prometheus metrics of one app: a registry of its own, the metric objects, and a collector that reads
the service's state (admission gate, caches, model, video jobs, CUDA memory) when /metrics is scraped.

One registry per app, not prometheus-client's global one, so that tests and several apps in one process
each count their own. Counters that the library already keeps (cache hits, gate refusals) are read at scrape
time rather than mirrored, so they never disagree with `/api/v1/info`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from sam3studio import __version__
from sam3studio.observability.drift import BINS

if TYPE_CHECKING:
    from sam3studio.jobs import JobRunner
    from sam3studio.service import SegmentService

log = logging.getLogger(__name__)

__all__ = ["HTTP_BUCKETS", "MODEL_BUCKETS", "MODEL_STAGES", "Metrics", "StateCollector", "render"]

# Seconds. A tiny checkpoint answers in milliseconds, SAM 3 on a CPU in tens of seconds.
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
MODEL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
JOB_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
# `Segmentation.timings` keys; image_encoding and prompts are observed only when that work ran (not on a cache hit).
MODEL_STAGES = ("decode", "image_encoding", "prompts", "postprocess", "total")
SKIPPED_WHEN_ZERO = ("image_encoding", "prompts")
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")


class Metrics:
    """The metric objects of one app, in ``registry``."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total, open fds, ...
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        Info("sam3studio_build", "The sam3studio version serving", registry=r).info({"version": __version__})
        labels = ("route", "method", "status")
        self.requests = Counter("sam3studio_http_requests", "HTTP requests answered, by route template, method "
                                "and status code", labels, registry=r)
        self.duration = Histogram("sam3studio_http_request_duration_seconds", "Time from request to the end of "
                                  "the response, by route template, method and status code", labels,
                                  buckets=HTTP_BUCKETS, registry=r)
        self.in_flight = Gauge("sam3studio_http_requests_in_flight", "HTTP requests being answered", registry=r)
        self.model_seconds = Histogram("sam3studio_model_seconds", "Engine time of one segment call by stage: decode "
                                       "(pixels and hashing), image_encoding (vision encoder, on a cache miss), "
                                       "prompts (text encoder and heads, for prompts not cached), postprocess, total",
                                       ("stage",), buckets=MODEL_BUCKETS, registry=r)
        self.job_seconds = Histogram("sam3studio_video_job_duration_seconds", "Time the worker spent on a video "
                                     "job, by its state after (done, failed)", ("state",), buckets=JOB_BUCKETS,
                                     registry=r)
        score_buckets = (*BINS["presence"], 1.0)
        self.drift = {
            "presence": Histogram("sam3studio_drift_presence_score", "SAM 3's presence score per prompt and image "
                                  "(the most frequent prompts; the rest as __other__)", ("prompt",),
                                  buckets=score_buckets, registry=r),
            "top_score": Histogram("sam3studio_drift_top_score", "Highest kept instance score per prompt and image "
                                   "(0 when none passed the threshold)", ("prompt",), buckets=score_buckets,
                                   registry=r),
            "instances": Histogram("sam3studio_drift_instances", "Instances kept per prompt and image", ("prompt",),
                                   buckets=tuple(float(b) for b in BINS["instances"]), registry=r),
        }

        # Children by label values, so the per-request path is a dict lookup, not `labels()`' checks and lock.
        self._stages = {stage: self.model_seconds.labels(stage) for stage in MODEL_STAGES}
        self._http: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._drift: dict[str, tuple[Any, Any, Any]] = {}

    def observe_request(self, route: str, method: str, status: str, seconds: float) -> None:
        children = self._http.get((route, method, status))
        if children is None:
            children = self._http[(route, method, status)] = (self.requests.labels(route, method, status),
                                                              self.duration.labels(route, method, status))
        children[0].inc()
        children[1].observe(seconds)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self._stages[stage].observe(seconds)

    def observe_drift(self, label: str, presence: float, top_score: float, instances: int) -> None:
        children = self._drift.get(label)
        if children is None:
            children = self._drift[label] = tuple(self.drift[m].labels(label)  # type: ignore[assignment]
                                                  for m in ("presence", "top_score", "instances"))
        for child, value in zip(children, (presence, top_score, instances), strict=True):
            child.observe(value)

    def forget_prompt(self, prompt: str) -> None:
        """Drop a prompt's drift series (it lost its label to a more frequent one)."""
        self._drift.pop(prompt, None)
        for histogram in self.drift.values():
            try:
                histogram.remove(prompt)
            except KeyError:
                pass


def _gauge(name: str, doc: str, value: float | None, labels: dict[str, str] | None = None) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=list(labels or ()))
    if value is not None:
        family.add_metric(list((labels or {}).values()), value)
    return family


class StateCollector(Collector):
    """What the service and the job runner hold right now, read at each scrape."""

    def __init__(self, service: SegmentService, jobs: JobRunner | None = None) -> None:
        self.service, self.jobs = service, jobs

    def collect(self) -> Iterator[Metric]:
        yield from self._gate()
        yield from self._model()
        yield from self._caches()
        yield from self._jobs()
        yield from self._cuda()

    def _gate(self) -> Iterator[Metric]:
        gate = self.service.gate
        yield _gauge("sam3studio_admission_running", "Requests running model work", gate.active)
        yield _gauge("sam3studio_admission_waiting", "Requests waiting for the model", gate.waiting)
        yield _gauge("sam3studio_admission_peak_waiting", "Most requests ever waiting at once", gate.peak_waiting)
        yield _gauge("sam3studio_admission_max_concurrent", "Requests allowed to run model work at once",
                     gate.max_concurrent)
        yield _gauge("sam3studio_admission_max_queue", "Requests allowed to wait", gate.max_queue)
        rejected = CounterMetricFamily("sam3studio_admission_rejected", "Requests refused as overloaded (503): "
                                       "queue_full at once, timeout after waiting", labels=["reason"])
        for reason, n in sorted(getattr(gate, "rejected", {}).items()):
            rejected.add_metric([reason], n)
        yield rejected

    def _model(self) -> Iterator[Metric]:
        service = self.service
        yield _gauge("sam3studio_model_ready", "1 once the model is loaded", int(service.ready))
        yield _gauge("sam3studio_model_loading", "1 while the model is loading", int(service.loading))
        yield _gauge("sam3studio_model_load_failed", "1 when the last load failed (the reason is in /api/v1/ready)",
                     int(bool(service.load_error)))
        yield _gauge("sam3studio_model_load_seconds", "How long loading the model took (no sample before a load, "
                     "or when the app was given a loaded model)", getattr(service, "load_seconds", None))
        seg = service.segmenter
        if seg is not None and hasattr(seg, "info"):
            info = InfoMetricFamily("sam3studio_model", "The loaded model")
            data = seg.info()
            info.add_metric([], {k: str(data.get(k, "")) for k in ("source", "architecture", "device", "dtype")})
            yield info

    def _caches(self) -> Iterator[Metric]:
        seg = self.service.segmenter
        stats = getattr(seg, "stats", None)
        if stats is None:
            return
        hits = CounterMetricFamily("sam3studio_cache_hits", "Engine cache hits", labels=["cache"])
        misses = CounterMetricFamily("sam3studio_cache_misses", "Engine cache misses (work done)", labels=["cache"])
        for cache in ("image", "text", "prediction"):
            if hasattr(stats, f"{cache}_cache_hits"):
                hits.add_metric([cache], getattr(stats, f"{cache}_cache_hits"))
            if hasattr(stats, f"{cache}_cache_misses"):
                misses.add_metric([cache], getattr(stats, f"{cache}_cache_misses"))
        yield hits
        yield misses
        info: dict[str, dict[str, int]] = seg.cache_info() if hasattr(seg, "cache_info") else {}
        entries = GaugeMetricFamily("sam3studio_cache_entries", "Entries held per engine cache", labels=["cache"])
        capacity = GaugeMetricFamily("sam3studio_cache_capacity", "Bound of each engine cache (entries; bytes for "
                                     "the prediction cache)", labels=["cache"])
        size = GaugeMetricFamily("sam3studio_cache_bytes", "Bytes held by the prediction cache", labels=["cache"])
        for cache, row in sorted(info.items()):
            entries.add_metric([cache], row["entries"])
            capacity.add_metric([cache], row["capacity"])
            if "bytes" in row:
                size.add_metric([cache], row["bytes"])
        yield from (entries, capacity, size)

    def _jobs(self) -> Iterator[Metric]:
        jobs = self.jobs
        running = jobs is not None and jobs.running
        yield _gauge("sam3studio_video_jobs_available", "1 when the video job runner is running", int(running))
        if not running:
            return
        family = GaugeMetricFamily("sam3studio_video_jobs", "Video jobs in the store by state", labels=["state"])
        try:
            for state in JOB_STATES:
                family.add_metric([state], jobs.store.count((state,)))
        except Exception:  # a locked or broken store must not break the scrape
            log.warning("could not count video jobs for /metrics", exc_info=True)
            return
        yield family

    def _cuda(self) -> Iterator[Metric]:
        torch = sys.modules.get("torch")  # never import torch (or start CUDA) for a scrape
        if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return
        names = (("allocated", torch.cuda.memory_allocated, "Bytes held by tensors"),
                 ("reserved", torch.cuda.memory_reserved, "Bytes reserved by the caching allocator"),
                 ("max_allocated", torch.cuda.max_memory_allocated, "Peak bytes held by tensors"))
        for name, read, doc in names:
            family = GaugeMetricFamily(f"sam3studio_cuda_memory_{name}_bytes", f"{doc}, per CUDA device",
                                       labels=["device"])
            for i in range(torch.cuda.device_count()):
                family.add_metric([str(i)], read(i))
            yield family


def render(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The exposition the scraper asked for (Prometheus text, or OpenMetrics when its Accept says so)."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
