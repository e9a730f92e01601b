"""/metrics, request ids and the access log, through FastAPI's TestClient on the tiny checkpoint."""

from __future__ import annotations

import base64
import io
import json
import logging
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from sam3studio.api import create_app
from sam3studio.observability.context import RequestContext, valid_request_id
from sam3studio.observability.logs import ACCESS_LOGGER, RequestIdFilter, configure_logging, json_formatter
from sam3studio.service import SegmentService
from sam3studio.settings import Settings

API_KEY = "k" * 24
SEGMENT = "/api/v1/segment"


def _png(seed: int = 0, size=(48, 64)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def scrape(client, **headers) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics, parsed by prometheus-client's own parser: (name, labels) -> value."""
    resp = client.get("/metrics", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(resp.text) for s in family.samples}


def value(samples, name, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests_total(samples, route, status, method="POST") -> float:
    return value(samples, "sam3studio_http_requests_total", route=route, method=method, status=str(status))


@pytest.fixture
def settings(tiny_checkpoint, tmp_path):
    return Settings(model=str(tiny_checkpoint), device="cpu", dtype="float32", ui=False, data_dir=tmp_path / "data",
                    max_queue=0)


@pytest.fixture
def client(settings, segmenter):
    with TestClient(create_app(settings, segmenter=segmenter)) as c:
        yield c


def _segment(client, png, prompt="cat, dog", headers=None):
    return client.post(SEGMENT, files={"image": ("a.png", png, "image/png")}, data={"prompt": prompt, "threshold": "0.05"},
                       headers=headers or {})


# ---------------------------------------------------------------------------- counters and histograms
def test_counters_move_by_exactly_one_per_request_and_status(client):
    before = scrape(client)
    assert _segment(client, _png()).status_code == 200
    bad = client.post(SEGMENT, json={"image_base64": "not base64!", "prompt": "cat"})
    assert bad.status_code == 400
    assert client.get("/api/v1/videos/no-such-job").status_code == 404
    assert client.get("/api/v1/no/such/route").status_code == 404
    assert client.get("/no-such-page-7f3a").status_code == 404
    after = scrape(client)

    assert requests_total(after, SEGMENT, 200) - requests_total(before, SEGMENT, 200) == 1
    assert requests_total(after, SEGMENT, 400) - requests_total(before, SEGMENT, 400) == 1
    assert requests_total(after, "/api/v1/videos/{job_id}", 404, "GET") == 1  # the template, not the id
    assert requests_total(after, "unmatched", 404, "GET") == 2  # unknown paths share one label
    assert requests_total(after, "/metrics", 200, "GET") == 1  # the first scrape, counted once it answered
    routes = {dict(k[1]).get("route") for k in after if k[0] == "sam3studio_http_requests_total"}
    assert routes == {SEGMENT, "/api/v1/videos/{job_id}", "unmatched", "/metrics"}
    duration = "sam3studio_http_request_duration_seconds_count"
    assert value(after, duration, route=SEGMENT, method="POST", status="200") == 1
    assert value(after, "sam3studio_http_request_duration_seconds_sum", route=SEGMENT, method="POST", status="200") > 0
    assert value(after, "sam3studio_http_requests_in_flight") == 1  # the scrape itself


def test_histograms_record_the_model_time_split_and_caches_count(client):
    png = _png(1)
    assert _segment(client, png).status_code == 200
    assert _segment(client, png).status_code == 200  # same image and prompts: every cache hits
    s = scrape(client)
    count = "sam3studio_model_seconds_count"
    assert value(s, count, stage="total") == 2 and value(s, count, stage="decode") == 2
    assert value(s, count, stage="postprocess") == 2
    assert value(s, count, stage="image_encoding") == 1  # the second request found the image cached
    assert value(s, count, stage="prompts") == 1  # ... and both predictions
    assert value(s, "sam3studio_model_seconds_sum", stage="image_encoding") > 0
    assert value(s, "sam3studio_cache_misses_total", cache="image") == 1
    assert value(s, "sam3studio_cache_hits_total", cache="prediction") == 2
    assert value(s, "sam3studio_cache_entries", cache="image") == 1
    assert value(s, "sam3studio_model_ready") == 1 and value(s, "sam3studio_video_jobs_available") == 1
    assert value(s, "sam3studio_video_jobs", state="done") == 0
    assert value(s, "process_resident_memory_bytes") > 10 * 2**20
    assert value(s, "sam3studio_build_info", version=__import__("sam3studio").__version__) == 1


def test_the_gate_shows_running_and_counts_503s(client, settings):
    service: SegmentService = client.app.state.service
    with service.gate.admit():  # hold the only slot; max_queue=0 refuses the next request at once
        held = scrape(client)
        resp = _segment(client, _png())
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "overloaded"
    s = scrape(client)
    assert value(held, "sam3studio_admission_running") == 1 and value(s, "sam3studio_admission_running") == 0
    assert value(s, "sam3studio_admission_rejected_total", reason="queue_full") == 1
    assert requests_total(s, SEGMENT, 503) == 1


def test_video_job_durations_are_observed_by_state(client):
    jobs = client.app.state.jobs
    job = jobs.store.create({"prompts": ["cat"]}, state="done")
    jobs._observe(job["id"], 12.5)  # what the worker calls after each job
    jobs._observe("gone", 1.0)  # a cancelled job, removed already: not a duration
    s = scrape(client)
    assert value(s, "sam3studio_video_job_duration_seconds_count", state="done") == 1
    assert value(s, "sam3studio_video_job_duration_seconds_sum", state="done") == 12.5
    assert value(s, "sam3studio_video_jobs", state="done") == 1


def test_model_load_time_and_readiness(settings):
    app = create_app(settings)  # loads the tiny checkpoint in the background
    with TestClient(app) as c:
        service = app.state.service
        service._load_done.wait(60)
        s = scrape(c)
    assert service.ready and value(s, "sam3studio_model_ready") == 1
    assert 0 < value(s, "sam3studio_model_load_seconds") == pytest.approx(service.load_seconds)
    assert value(s, "sam3studio_model_info", source=str(settings.model), architecture="Sam3Model", device="cpu",
                 dtype="float32") == 1


def test_metrics_are_behind_the_api_key_and_can_be_switched_off(settings, segmenter):
    keyed = settings.model_copy(update={"api_key": __import__("pydantic").SecretStr(API_KEY)})
    with TestClient(create_app(keyed, segmenter=segmenter)) as c:
        denied = c.get("/metrics")
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "unauthorized"
        assert "sam3studio_http_requests_total" in c.get("/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).text
        s = scrape(c, **{"X-API-Key": API_KEY})
        assert requests_total(s, "/metrics", 401, "GET") == 1
    off = settings.model_copy(update={"metrics": False})
    with TestClient(create_app(off, segmenter=segmenter)) as c:
        resp = c.get("/metrics")
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
        assert valid_request_id(resp.headers["x-request-id"])  # ids and logs stay on


def test_two_apps_in_one_process_count_apart(settings, segmenter):
    with TestClient(create_app(settings, segmenter=segmenter)) as a, \
            TestClient(create_app(settings, segmenter=segmenter)) as b:
        assert _segment(a, _png()).status_code == 200
        assert requests_total(scrape(a), SEGMENT, 200) == 1 and requests_total(scrape(b), SEGMENT, 200) == 0


def test_methods_and_statuses_stay_bounded_labels(client):
    assert client.request("BREW", "/api/v1/health").status_code == 405
    s = scrape(client)
    assert value(s, "sam3studio_http_requests_total", route="/api/v1/health", method="other", status="405") == 1


def test_openmetrics_when_the_scraper_asks_for_it(client):
    resp = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert resp.headers["content-type"].startswith("application/openmetrics-text")
    assert resp.text.rstrip().endswith("# EOF")


# ---------------------------------------------------------------------------- request ids
def test_request_ids_round_trip_and_reach_error_bodies(client):
    sent = "client-trace.42:abc_DEF"
    ok = _segment(client, _png(), headers={"X-Request-ID": sent})
    assert ok.status_code == 200 and ok.headers["x-request-id"] == sent
    made = client.get("/api/v1/health")
    assert valid_request_id(made.headers["x-request-id"]) and len(made.headers["x-request-id"]) == 32
    assert client.get("/api/v1/health").headers["x-request-id"] != made.headers["x-request-id"]
    for bad in ("x" * 129, "has space", "new\\nline", "ünï", ""):
        got = client.get("/api/v1/health", headers={"X-Request-ID": bad.encode("utf-8")})
        assert got.headers["x-request-id"] != bad and valid_request_id(got.headers["x-request-id"])
    err = client.post(SEGMENT, json={"prompt": "cat"}, headers={"X-Request-ID": "err-1"})
    assert err.status_code == 422 and err.headers["x-request-id"] == "err-1"
    assert err.json()["error"]["request_id"] == "err-1"
    assert list(err.headers.keys()).count("x-request-id") == 1


def test_a_500_carries_the_request_id_too(settings, segmenter, monkeypatch):
    app = create_app(settings, segmenter=segmenter)
    monkeypatch.setattr(app.state.service, "segment", lambda *a, **k: 1 / 0)
    with TestClient(app, raise_server_exceptions=False) as c:
        resp = _segment(c, _png(), headers={"X-Request-ID": "boom-1"})
        assert resp.status_code == 500 and resp.headers["x-request-id"] == "boom-1"
        assert resp.json()["error"] == {"code": "internal_error", "request_id": "boom-1",
                                        "message": "internal error; the server log has the details"}
        assert requests_total(scrape(c), SEGMENT, 500) == 1


# ---------------------------------------------------------------------------- logs
@pytest.fixture
def json_log():
    """JSON lines of the sam3studio loggers (the access log among them), as a list of parsed objects."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("sam3studio")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def test_json_access_log_has_the_fields_and_no_image_or_secret(settings, segmenter, json_log):
    keyed = settings.model_copy(update={"api_key": __import__("pydantic").SecretStr(API_KEY)})
    png = _png(3)
    b64 = base64.b64encode(png).decode()
    with TestClient(create_app(keyed, segmenter=segmenter)) as c:
        resp = c.post(SEGMENT, json={"image_base64": b64, "prompt": "secret zebra"},
                      headers={"X-API-Key": API_KEY, "X-Request-ID": "log-1"})
        assert resp.status_code == 200
        c.get("/api/v1/health")  # a probe: DEBUG, not in this INFO log
        assert c.get("/api/v1/info").status_code == 401
    lines = json_log()
    access = [r for r in lines if r["logger"] == ACCESS_LOGGER]
    assert [(r["route"], r["status"]) for r in access] == [(SEGMENT, 200), ("/api/v1/info", 401)]
    seg = access[0]
    assert seg["request_id"] == "log-1" and seg["method"] == "POST" and seg["level"] == "INFO"
    assert seg["prompts"] == 1 and seg["instances"] == len(resp.json()["instances"])
    assert set(seg["timings_ms"]) == {"decode", "image_encoding", "prompts", "postprocess", "total"}
    assert seg["duration_ms"] > 0 and seg["time"] and "POST /api/v1/segment 200" in seg["message"]
    text = "\n".join(json.dumps(r) for r in lines)
    assert b64[:40] not in text and API_KEY not in text and "zebra" not in text  # prompts only when asked


def test_prompts_are_logged_only_when_asked(settings, segmenter, json_log):
    with TestClient(create_app(settings.model_copy(update={"log_prompts": True}), segmenter=segmenter)) as c:
        assert _segment(c, _png(), prompt="red car, zebra").status_code == 200
    access = [r for r in json_log() if r["logger"] == ACCESS_LOGGER]
    assert access[0]["prompt_texts"] == ["red car", "zebra"]


def test_records_made_during_a_request_carry_its_id(json_log):
    from sam3studio.observability import context

    log = logging.getLogger("sam3studio.test")
    token = context.enter(RequestContext("inside-1"))
    try:
        thread = threading.Thread(target=lambda: log.info("in a thread of its own"))  # no context: no id
        thread.start()
        thread.join()
        log.info("while serving")
    finally:
        context.leave(token)
    log.info("after")
    lines = json_log()
    assert [r.get("request_id") for r in lines] == [None, "inside-1", None]


def test_configure_logging_writes_json_lines_or_text():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        for fmt in ("json", "text"):
            stream = io.StringIO()
            configure_logging(fmt, stream=stream)
            logging.getLogger("uvicorn.error").warning("port %d busy", 7860)
            line = stream.getvalue().strip()
            if fmt == "json":
                assert json.loads(line) | {"time": None} == {"time": None, "level": "WARNING", "logger": "uvicorn.error",
                                                            "message": "port 7860 busy"}
            else:
                assert line.endswith("WARNING uvicorn.error: port 7860 busy")
        with pytest.raises(ValueError, match="log_format"):
            configure_logging("xml")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


# ---------------------------------------------------------------------------- docs
def test_docs_and_dashboard_name_only_metrics_that_exist(client):
    import re
    from pathlib import Path

    assert _segment(client, _png()).status_code == 200
    families = {f.name for f in text_string_to_metric_families(client.get("/metrics").text)}
    docs = Path(__file__).resolve().parents[1] / "docs"
    dashboard = json.loads((docs / "grafana" / "sam3studio.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    text = re.sub(r"[a-z0-9_]+_\*", "", (docs / "operations.md").read_text() + exprs)  # `sam3studio_drift_*`
    named = set(re.findall(r"\b((?:sam3studio|process|python)_[a-z0-9_]*[a-z0-9])\b", text))
    named = {n for n in named if not n.startswith("sam3studio_cuda_")}  # CUDA ones appear on CUDA only
    suffix = re.compile(r"_(total|bucket|count|sum|created|info)$")
    missing = sorted(n for n in named if n not in families and suffix.sub("", n) not in families)
    assert not missing, f"named in docs/operations.md or the dashboard but not served: {missing}"


def test_cuda_memory_is_reported_once_cuda_is_in_use(monkeypatch, settings, segmenter):
    """No GPU here: torch.cuda's answers are stubbed, to check what the collector makes of them."""
    import torch

    from sam3studio.observability.metrics import StateCollector

    service = SegmentService(settings, segmenter=segmenter)
    names = lambda: {f.name for f in StateCollector(service).collect()}  # noqa: E731
    assert not any(n.startswith("sam3studio_cuda_") for n in names())  # no CUDA: nothing, and CUDA is not started
    for attr, fake in (("is_available", lambda: True), ("is_initialized", lambda: True), ("device_count", lambda: 2),
                       ("memory_allocated", lambda i: 100 + i), ("memory_reserved", lambda i: 200 + i),
                       ("max_memory_allocated", lambda i: 300 + i)):
        monkeypatch.setattr(torch.cuda, attr, fake)
    families = {f.name: f for f in StateCollector(service).collect()}
    allocated = families["sam3studio_cuda_memory_allocated_bytes"]
    assert [(s.labels, s.value) for s in allocated.samples] == [({"device": "0"}, 100), ({"device": "1"}, 101)]
    assert families["sam3studio_cuda_memory_max_allocated_bytes"].samples[1].value == 301
