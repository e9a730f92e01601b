"""The operator's check, end to end: scrape /metrics from a real `sam3studio serve` (tiny checkpoint, UI
mounted at /, JSON logs) before and after a few segment requests and a bad one."""

from __future__ import annotations

import io
import json

import httpx
import numpy as np
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from _server import LOGS, running_server

SEGMENT = "/api/v1/segment"


def _scrape(url: str) -> dict[tuple[str, frozenset], float]:
    resp = httpx.get(f"{url}/metrics", timeout=30)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(resp.text) for s in family.samples}


def _sum(samples, name, **labels) -> float:
    """The sum over every series of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def test_scrape_before_and_after_requests_to_a_real_server(tiny_checkpoint):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(buf, format="PNG")
    with running_server(tiny_checkpoint, extra_env={"SAM3STUDIO_LOG_FORMAT": "json"}) as url:
        assert httpx.get(f"{url}/", timeout=30).status_code == 200  # the UI is mounted
        before = _scrape(url)
        sent = 3
        ids = []
        for i in range(sent):
            resp = httpx.post(f"{url}{SEGMENT}", files={"image": ("a.png", buf.getvalue(), "image/png")},
                              data={"prompt": "cat, dog"}, headers={"X-Request-ID": f"check-{i}"}, timeout=60)
            assert resp.status_code == 200, resp.text
            ids.append(resp.headers.get("x-request-id"))
        bad = httpx.post(f"{url}{SEGMENT}", json={"prompt": "cat"}, timeout=30)  # no image: 422
        after = _scrape(url)
        log = LOGS[url]
        log.flush()
        log.seek(0)
        lines = [line for line in log.read().decode("utf-8").splitlines() if line.strip()]

    records = [json.loads(line) for line in lines]  # every line of the server's output is one JSON object
    access = [r for r in records if r["logger"] == "sam3studio.access"]
    assert [(r["request_id"], r["status"]) for r in access] == [*((f"check-{i}", 200) for i in range(sent)),
                                                               (bad.headers["x-request-id"], 422)]
    assert all(r["prompts"] == 2 for r in access[:sent])

    assert ids == [f"check-{i}" for i in range(sent)]
    assert bad.status_code == 422 and bad.json()["error"]["request_id"] == bad.headers["x-request-id"]
    total = "sam3studio_http_requests_total"
    assert (_sum(after, total, route=SEGMENT, status="200") - _sum(before, total, route=SEGMENT, status="200")) == sent
    assert _sum(after, total, route=SEGMENT, status="422") - _sum(before, total, route=SEGMENT, status="422") == 1
    four_xx = sum(v for (n, ls), v in after.items() if n == total and dict(ls)["status"].startswith("4"))
    four_xx_before = sum(v for (n, ls), v in before.items() if n == total and dict(ls)["status"].startswith("4"))
    assert four_xx - four_xx_before == 1
    latency = "sam3studio_http_request_duration_seconds_count"
    assert _sum(after, latency, route=SEGMENT) - _sum(before, latency, route=SEGMENT) == sent + 1
    assert _sum(after, "sam3studio_model_seconds_count", stage="total") == sent
    assert _sum(after, total, route="/") >= 1  # the UI's page, under its own bounded label
