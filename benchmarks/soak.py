"""Video and image load together against a real `sam3studio serve` on 127.0.0.1 (figures in docs/reliability.md).

    .venv/bin/python benchmarks/soak.py --seconds 300 --image-clients 4 --video-clients 2

Starts its own server (the tiny random image checkpoint, the tiny video checkpoint, a fresh data dir,
default limits) and, for ``--seconds``, runs at once:

- ``--image-clients`` clients posting the cat photo to /api/v1/segment back to back (random prompts and
  thresholds; after a 503 a client waits a tenth of Retry-After);
- ``--video-clients`` clients submitting short synthetic videos to /api/v1/videos (a 503 means the job
  queue is full: wait and try again) and following every accepted job to its end;
- a watcher sampling the server's RSS (/proc) and /api/v1/health's latency every second.

Then it stops submitting and waits (at most ``--drain-s``) for every accepted job to end. It is bounded in
count (``--max-requests``, ``--max-jobs``) and in time. It reports every status seen, the 5xx other than 503
(the goal is none), accepted jobs and how they ended (the goal: all done, none lost), and the RSS over time.
Exit status 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

PROMPTS = ["cat", "dog", "cat, dog", "eyes", "猫", "red box", "whiskers, nose", "person"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cat_png() -> bytes:
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buf, format="PNG")
    return buf.getvalue()


def _video(path: Path, frames: int) -> bytes:
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(frames):
            img = np.full((64, 96, 3), 30, np.uint8)
            img[20:44, (4 * i) % 60: (4 * i) % 60 + 24] = (220, 40, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path.read_bytes()


def _start_server(folder: Path, port: int) -> subprocess.Popen:
    from sam3studio.testing import make_tiny_checkpoint, make_tiny_video_checkpoint

    image = make_tiny_checkpoint(folder / "tiny", seed=0)
    video = make_tiny_video_checkpoint(folder / "tiny-video", seed=0)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "SAM3STUDIO_VIDEO_MODEL": str(video), "SAM3STUDIO_DATA_DIR": str(folder / "data")}
    exe = Path(sys.executable).with_name("sam3studio")
    log = open(folder / "server.log", "w")  # noqa: SIM115 - lives as long as the server
    return subprocess.Popen([str(exe), "serve", "--model", str(image), "--host", "127.0.0.1", "--port", str(port),
                             "--device", "cpu"], stdout=log, stderr=subprocess.STDOUT, env=env)


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Soak:
    def __init__(self, url: str, pid: int, args: argparse.Namespace, png: bytes, video: bytes) -> None:
        self.url, self.pid, self.args, self.png, self.video = url, pid, args, png, video
        self.image_status: Counter[int] = Counter()
        self.video_status: Counter[int] = Counter()
        self.poll_status: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.accepted: dict[str, str] = {}  # job id -> last state
        self.rss: list[tuple[float, float]] = []
        self.health_worst = 0.0
        self.requests = 0
        self.start = time.monotonic()
        self.stop_at = self.start + args.seconds

    def submitting(self) -> bool:
        return time.monotonic() < self.stop_at

    async def image_client(self, client: httpx.AsyncClient, seed: int) -> None:
        rng = random.Random(seed)
        while self.submitting() and self.requests < self.args.max_requests:
            self.requests += 1
            try:
                r = await client.post("/api/v1/segment", files={"image": ("cat.png", self.png, "image/png")},
                                      data={"prompt": rng.choice(PROMPTS), "threshold": str(rng.choice([0.05, 0.2, 0.5])),
                                            "mask_format": rng.choice(["rle", "none", "polygon"])})
            except httpx.HTTPError as exc:
                self.errors[f"image {type(exc).__name__}"] += 1
                continue
            self.image_status[r.status_code] += 1
            if r.status_code == 503:
                await asyncio.sleep(int(r.headers.get("retry-after", "1")) / 10)

    async def video_client(self, client: httpx.AsyncClient, seed: int) -> None:
        rng = random.Random(seed)
        while self.submitting() and len(self.accepted) < self.args.max_jobs:
            try:
                r = await client.post("/api/v1/videos", files={"video": ("clip.mp4", self.video, "video/mp4")},
                                      data={"prompt": rng.choice(PROMPTS), "threshold": "0.1",
                                            "stride": str(rng.choice([1, 2]))})
            except httpx.HTTPError as exc:
                self.errors[f"video {type(exc).__name__}"] += 1
                await asyncio.sleep(1)
                continue
            self.video_status[r.status_code] += 1
            if r.status_code == 202:
                self.accepted[r.json()["id"]] = "queued"
            else:
                await asyncio.sleep(2 if r.status_code == 503 else 1)

    async def follow_jobs(self, client: httpx.AsyncClient) -> None:
        """Poll every accepted job until it ends; after the load, until all have or the drain time is over."""
        deadline = self.stop_at + self.args.drain_s
        while time.monotonic() < deadline:
            open_jobs = [j for j, s in self.accepted.items() if s in ("queued", "running")]
            if not open_jobs and not self.submitting():
                return
            for job_id in open_jobs:
                try:
                    r = await client.get(f"/api/v1/videos/{job_id}")
                except httpx.HTTPError as exc:
                    self.errors[f"poll {type(exc).__name__}"] += 1
                    continue
                self.poll_status[r.status_code] += 1
                self.accepted[job_id] = r.json()["state"] if r.status_code == 200 else f"http {r.status_code}"
            await asyncio.sleep(1)

    async def watch(self, client: httpx.AsyncClient) -> None:
        while self.submitting() or any(s in ("queued", "running") for s in self.accepted.values()):
            t0 = time.monotonic()
            try:
                await client.get("/api/v1/health", timeout=30)
                self.health_worst = max(self.health_worst, time.monotonic() - t0)
            except httpx.HTTPError:
                self.errors["health"] += 1
            self.rss.append((round(time.monotonic() - self.start, 1), round(_rss_mb(self.pid), 1)))
            await asyncio.sleep(1)
            if time.monotonic() > self.stop_at + self.args.drain_s:
                return

    async def run(self) -> dict:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=self.url, timeout=300, limits=limits) as client:
            tasks = [self.image_client(client, i) for i in range(self.args.image_clients)]
            tasks += [self.video_client(client, 1000 + i) for i in range(self.args.video_clients)]
            await asyncio.gather(*tasks, self.follow_jobs(client), self.watch(client))
        return self.report()

    def report(self) -> dict:
        ends = Counter(self.accepted.values())
        bad_5xx = sum(n for counts in (self.image_status, self.video_status, self.poll_status)
                      for code, n in counts.items() if code >= 500 and code != 503)
        rss = [mb for _, mb in self.rss]
        minute_marks, next_mark = [], 0.0  # the first sample at or after each whole minute
        for t, mb in self.rss:
            if t >= next_mark:
                minute_marks.append(mb)
                next_mark = (int(t // 60) + 1) * 60.0
        return {"seconds": self.args.seconds, "image_clients": self.args.image_clients,
                "video_clients": self.args.video_clients,
                "image_status": dict(self.image_status), "video_submit_status": dict(self.video_status),
                "poll_status": dict(self.poll_status), "client_errors": dict(self.errors),
                "5xx_not_503": bad_5xx, "jobs_accepted": len(self.accepted), "job_ends": dict(ends),
                "jobs_done": ends.get("done", 0), "health_worst_s": round(self.health_worst, 3),
                "rss_mb": {"start": rss[0] if rss else None, "peak": max(rss) if rss else None,
                           "end": rss[-1] if rss else None, "every_minute": minute_marks}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--image-clients", type=int, default=4)
    parser.add_argument("--video-clients", type=int, default=2)
    parser.add_argument("--video-frames", type=int, default=8)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--max-jobs", type=int, default=500)
    parser.add_argument("--drain-s", type=float, default=900.0, help="how long to wait for accepted jobs after the load")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="sam3studio-soak-"))
    port = _free_port()
    proc = _start_server(folder, port)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/api/v1/ready", timeout=5).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start; see {folder / 'server.log'}")
            time.sleep(0.5)
        soak = Soak(url, proc.pid, args, _cat_png(), _video(folder / "clip.mp4", args.video_frames))
        report = asyncio.run(soak.run())
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    lost = report["jobs_accepted"] - report["jobs_done"]
    if report["5xx_not_503"] or lost:
        print(f"goal missed: {report['5xx_not_503']} 5xx other than 503, {lost} accepted job(s) not done "
              f"(see {folder / 'server.log'})", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
