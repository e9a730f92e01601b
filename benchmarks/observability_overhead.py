"""Overhead of observability (metrics, request ids, JSON access log, drift) on a segment request (docs/benchmarks.md).

    .venv/bin/python benchmarks/observability_overhead.py                       # the tiny checkpoint
    .venv/bin/python benchmarks/observability_overhead.py --model random --requests 20 --size 640x480

In one process and one run, two apps over one loaded segmenter, both through FastAPI's TestClient (no
network): *observed*, as `sam3studio serve` builds it with ``SAM3STUDIO_LOG_FORMAT=json`` (metrics on,
drift recorded, an INFO access line per request formatted as JSON and written to a file), and *bare*, the
same app with `install_observability` left out (no middleware, no /metrics, no observers, no log line).
Requests go in pairs, one to each app, the order alternating from pair to pair, so that drift of the
machine and order effects hit both alike; the overhead is the median of the paired differences over the
median bare latency. Two cases: *cached* (one
image and prompt again and again: the engine only post-processes, the smallest request there is, so the
largest share for the overhead) and *uncached* (a new image each request: the whole model runs).
Also reported: the observability code's own cost per request, timed alone (middleware hooks, the
segment observer, the access line), and the time of one /metrics scrape.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import statistics
import tempfile
import time


def _png(rng, width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype="uint8")).save(buf, format="PNG")
    return buf.getvalue()


def _paired(observed: list[float], bare: list[float]) -> dict:
    diffs = [o - b for o, b in zip(observed, bare, strict=True)]
    base = statistics.median(bare)
    return {"requests": len(bare), "bare_median_ms": base * 1000, "observed_median_ms": statistics.median(observed) * 1000,
            "paired_median_diff_ms": statistics.median(diffs) * 1000,
            "overhead_pct": 100 * statistics.median(diffs) / base}


def _own_cost(app, seg, n: int = 2000) -> float:
    """Seconds per request of the observability code alone: hooks, observer, access line (JSON, to the file)."""
    from sam3studio.observability.context import RequestContext
    from sam3studio.service import SegmentOptions

    obs = app.state.observability
    scope = {"type": "http", "method": "POST", "path": "/api/v1/segment", "client": ("127.0.0.1", 1)}
    start = time.perf_counter()
    for i in range(n):
        ctx = RequestContext(f"bench-{i}")
        obs.request_started()
        obs.observe_segment(seg, SegmentOptions())
        obs.request_done(scope, obs.route_label(scope, 200), 200, 0.01, ctx)
    return (time.perf_counter() - start) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help="'tiny' (made here), 'random' or a checkpoint folder")
    ap.add_argument("--requests", type=int, default=300, help="per app and case (uncached: a third of it)")
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()

    import numpy as np
    from fastapi.testclient import TestClient
    from PIL import Image

    import sam3studio.api.app as api_app
    from sam3studio import load_segmenter
    from sam3studio.observability.logs import RequestIdFilter, json_formatter
    from sam3studio.settings import Settings

    tmp = tempfile.mkdtemp(prefix="obs-bench-")
    model = args.model
    if model == "tiny":
        from sam3studio.testing import make_tiny_checkpoint

        model = str(make_tiny_checkpoint(os.path.join(tmp, "tiny")))
    seg = load_segmenter(model, device="cpu", dtype="float32", translator="none")
    settings = Settings(model=model, ui=False, data_dir=os.path.join(tmp, "data"), log_format="json", max_queue=64)

    log_file = open(os.path.join(tmp, "access.jsonl"), "w")  # noqa: SIM115 - open for the whole run
    handler = logging.StreamHandler(log_file)
    handler.setFormatter(json_formatter())
    handler.addFilter(RequestIdFilter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)

    observed_app = api_app.create_app(settings, segmenter=seg)
    real_install = api_app.install_observability
    api_app.install_observability = lambda *a, **k: None
    try:
        bare_app = api_app.create_app(settings, segmenter=seg)
    finally:
        api_app.install_observability = real_install

    width, height = (int(v) for v in args.size.lower().split("x"))
    rng = np.random.default_rng(0)
    results: dict = {"model": args.model, "size": args.size, "python": platform.python_version(),
                     "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
    with TestClient(observed_app) as observed, TestClient(bare_app) as bare:
        def post(client, png: bytes) -> float:
            t = time.perf_counter()
            resp = client.post("/api/v1/segment", files={"image": ("a.png", png, "image/png")},
                               data={"prompt": "cat, dog", "threshold": "0.3"})
            elapsed = time.perf_counter() - t
            assert resp.status_code == 200, resp.text
            return elapsed

        one = _png(rng, width, height)
        for client in (observed, bare, observed, bare):  # warm-up: first-call allocations, caches
            post(client, one)
        for case, n, fresh in (("cached", args.requests, False), ("uncached", max(5, args.requests // 3), True)):
            times: dict[str, list[float]] = {"observed": [], "bare": []}
            for i in range(n):
                png = _png(rng, width, height) if fresh else one
                pair = (("observed", observed), ("bare", bare))
                for name, client in pair if i % 2 == 0 else pair[::-1]:  # who goes first alternates
                    if fresh:
                        seg.clear_cache()
                    times[name].append(post(client, png))
            results[case] = _paired(times["observed"], times["bare"])
        t = time.perf_counter()
        scrape = observed.get("/metrics")
        results["scrape_ms"] = (time.perf_counter() - t) * 1000
        results["scrape_bytes"] = len(scrape.content)
    result = seg.segment(np.asarray(Image.open(io.BytesIO(one))), "cat, dog", score_threshold=0.3)
    results["own_cost_us"] = _own_cost(observed_app, result) * 1e6
    log_file.flush()
    results["access_lines"] = sum(1 for _ in open(log_file.name))

    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
