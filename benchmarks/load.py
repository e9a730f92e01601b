"""Load and soak run against `sam3studio serve` on loopback (the figures in docs/reliability.md).

    .venv/bin/python benchmarks/load.py --clients 16 --seconds 60 --soak 300

Starts its own server on the tiny random checkpoint unless ``--url`` points at a running one, then:
1. load: ``--clients`` concurrent clients (asyncio + httpx), each posting the example cat photo
   with 1-2 prompts back to back for ``--seconds``; a watcher polls /api/v1/info every 0.1 s for
   queue depth and RSS and checks that /api/v1/health answers within a second the whole time;
2. soak: ``--soak`` sequential requests with varying prompts and thresholds; RSS before and after.
Prints a Markdown table and, with ``--json FILE``, writes the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

PROMPTS = ["cat", "dog", "cat, dog", "eyes", "猫", "red car", "whiskers, nose", "person"]


def _cat_png(variant: int = 0) -> bytes:
    """The example cat photo; ``variant`` > 0 changes one pixel so the image (and its cache key) is new."""
    from PIL import Image
    from skimage import data

    rgb = data.chelsea().copy()
    if variant:
        rgb[variant % rgb.shape[0], (variant // rgb.shape[0]) % rgb.shape[1]] ^= 0xFF
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _start_server(port: int, max_concurrent: int, max_queue: int) -> tuple[subprocess.Popen, Path]:
    from sam3studio.testing import make_tiny_checkpoint

    folder = Path(tempfile.mkdtemp(prefix="sam3studio-load-"))
    make_tiny_checkpoint(folder / "tiny", seed=0)
    env_args = ["--model", str(folder / "tiny"), "--port", str(port), "--device", "cpu"]
    import os

    env = {**os.environ, "SAM3STUDIO_MAX_CONCURRENT": str(max_concurrent), "SAM3STUDIO_MAX_QUEUE": str(max_queue),
           "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    exe = Path(sys.executable).with_name("sam3studio")
    log = open(folder / "server.log", "w")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([str(exe), "serve", *env_args], stdout=log, stderr=subprocess.STDOUT, env=env)
    return proc, folder


async def _wait_ready(client: httpx.AsyncClient, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (await client.get("/api/v1/ready")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.5)
    raise SystemExit("server did not become ready")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


async def load(url: str, clients: int, seconds: float, png: bytes) -> dict:
    stop = time.monotonic() + seconds
    latencies: list[float] = []
    codes: dict[int, int] = {}
    errors: list[str] = []
    depth: list[int] = []
    rss: list[float] = []
    health_worst = 0.0

    async def one_client(i: int) -> None:
        rng = random.Random(i)
        async with httpx.AsyncClient(base_url=url, timeout=300) as c:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                try:
                    r = await c.post("/api/v1/segment", files={"image": ("cat.png", png, "image/png")},
                                     data={"prompt": rng.choice(PROMPTS), "threshold": str(rng.choice([0.1, 0.3, 0.5]))})
                except httpx.HTTPError as exc:
                    errors.append(type(exc).__name__)
                    continue
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                elif r.status_code == 503:
                    await asyncio.sleep(float(r.headers.get("Retry-After", "1")) * 0.1)  # a polite client backs off

    async def watcher() -> None:
        nonlocal health_worst
        async with httpx.AsyncClient(base_url=url, timeout=5) as c:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                await c.get("/api/v1/health")
                health_worst = max(health_worst, time.perf_counter() - t0)
                info = (await c.get("/api/v1/info")).json()
                depth.append(info["queue"]["waiting"])
                if info.get("rss_mb"):
                    rss.append(info["rss_mb"])
                await asyncio.sleep(0.1)

    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        before = (await c.get("/api/v1/info")).json()
    t0 = time.perf_counter()
    await asyncio.gather(watcher(), *(one_client(i) for i in range(clients)))
    wall = time.perf_counter() - t0
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        after = (await c.get("/api/v1/info")).json()
    return {
        "clients": clients, "seconds": round(wall, 1), "served": codes.get(200, 0),
        "status_counts": {str(k): v for k, v in sorted(codes.items())},
        "5xx_other_than_503": sum(v for k, v in codes.items() if k >= 500 and k != 503),
        "client_errors": len(errors),
        "throughput_rps": round(codes.get(200, 0) / wall, 2),
        "p50_s": round(_pct(latencies, 50), 3), "p99_s": round(_pct(latencies, 99), 3),
        "max_queue_seen": max(depth, default=0), "peak_waiting": after["queue"]["peak_waiting"],
        "max_queue_limit": before["limits"]["max_queue"],
        "health_worst_s": round(health_worst, 3),
        "rss_start_mb": before.get("rss_mb"), "rss_peak_mb": max(rss, default=None), "rss_end_mb": after.get("rss_mb"),
    }


async def soak(url: str, n: int, png: bytes) -> dict:
    rng = random.Random(0)
    codes: dict[int, int] = {}
    async with httpx.AsyncClient(base_url=url, timeout=300) as c:
        for _ in range(min(20, n)):  # warm-up: caches and allocator reach their steady size
            await c.post("/api/v1/segment", files={"image": ("cat.png", png, "image/png")}, data={"prompt": "cat"})
        start = (await c.get("/api/v1/info")).json()["rss_mb"]
        marks = []
        for i in range(n):
            # A new image every request (a noise pixel changes its hash) so the caches churn.
            r = await c.post("/api/v1/segment", files={"image": (f"cat{i}.png", _cat_png(i + 1), "image/png")},
                             data={"prompt": rng.choice(PROMPTS), "threshold": str(rng.choice([0.1, 0.5]))})
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
            if (i + 1) % max(1, n // 5) == 0:
                marks.append((await c.get("/api/v1/info")).json()["rss_mb"])
        end = (await c.get("/api/v1/info")).json()["rss_mb"]
    return {"requests": n, "status_counts": {str(k): v for k, v in sorted(codes.items())}, "rss_after_warmup_mb": start,
            "rss_marks_mb": marks, "rss_end_mb": end,
            "growth_mb": round(end - start, 1) if start and end else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running server (default: start one on the tiny checkpoint)")
    ap.add_argument("--port", type=int, default=7871)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--soak", type=int, default=300)
    ap.add_argument("--max-concurrent", type=int, default=1)
    ap.add_argument("--max-queue", type=int, default=8)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    proc = None
    url = args.url
    if url is None:
        proc, folder = _start_server(args.port, args.max_concurrent, args.max_queue)
        url = f"http://127.0.0.1:{args.port}"
        print(f"server log: {folder / 'server.log'}", file=sys.stderr)
    png = _cat_png()
    try:
        async def run() -> dict:
            async with httpx.AsyncClient(base_url=url) as c:
                await _wait_ready(c)
            runs = [await load(url, n, args.seconds, png) for n in args.clients]
            return {"load": runs, "soak": await soak(url, args.soak, png) if args.soak else None}

        figures = asyncio.run(run())
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    print("| clients | served | req/s | p50 s | p99 s | status counts | 5xx (not 503) | max queue seen / limit "
          "| health worst s | RSS start → peak → end MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in figures["load"]:
        print(f"| {r['clients']} | {r['served']} | {r['throughput_rps']} | {r['p50_s']} | {r['p99_s']} | "
              f"{r['status_counts']} | {r['5xx_other_than_503']} | {r['max_queue_seen']} (peak {r['peak_waiting']}) / "
              f"{r['max_queue_limit']} | {r['health_worst_s']} | {r['rss_start_mb']} → {r['rss_peak_mb']} → {r['rss_end_mb']} |")
    if figures["soak"]:
        s = figures["soak"]
        print(f"\nsoak: {s['requests']} sequential requests {s['status_counts']}; RSS after warm-up "
              f"{s['rss_after_warmup_mb']} MB, marks {s['rss_marks_mb']}, end {s['rss_end_mb']} MB "
              f"(growth {s['growth_mb']} MB)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
