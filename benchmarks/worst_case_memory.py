"""Peak memory of one worst-case /api/v1/segment request: a 40 MP image, 100 instances, threshold 0.01.

The model is the tiny random checkpoint with its raw outputs replaced by 100 round blobs per prompt (what
SAM 3 at threshold 0.01 gives on a busy photo); everything after the model (upsampling, RLE, the JSON
body) is the server's real code. The request goes through the whole app (FastAPI's TestClient, in this
process). Peak RSS is the kernel's high-water mark (VmHWM), reset just before the request through
/proc/self/clear_refs, so it measures this request alone.

    python benchmarks/worst_case_memory.py                      # the code on PYTHONPATH
    SAM3STUDIO_MAX_MASK_PIXELS=4000000000 python benchmarks/worst_case_memory.py   # budget raised past it

It uses only names that exist before and after the bounded-work change (create_app, Settings,
load_segmenter, the engine's raw prediction type), so the same script measures either tree.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def vm(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def fake_instances(segmenter, n: int, seed: int = 0, size: int = 288) -> None:
    """Round blobs as the model's raw outputs, for every prompt on any image (as tests/test_bounded_work.py)."""
    import torch

    from sam3studio.core import _RawPrediction

    g = torch.Generator().manual_seed(seed)
    centres, radii = torch.rand(n, 2, generator=g), 0.03 + 0.1 * torch.rand(n, generator=g)
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    dist = ((xx[None] - centres[:, 0, None, None]) ** 2 + (yy[None] - centres[:, 1, None, None]) ** 2).sqrt()
    logits = (8.0 * (radii[:, None, None] - dist) / radii[:, None, None]).clamp(-20, 20)
    boxes = torch.cat([centres - radii[:, None], centres + radii[:, None]], dim=1).clamp(0, 1)
    scores = torch.sort(0.3 + 0.6 * torch.rand(n, generator=g), descending=True).values
    pred = _RawPrediction(scores=scores, boxes=boxes, mask_logits=logits, presence=1.0)
    segmenter._predict = lambda key, rgb, queries, timer, geometry=None: [pred for _ in queries]


def gradient_png(width: int, height: int) -> bytes:
    from PIL import Image

    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    rgb = np.broadcast_to((x + y) / 2, (height, width, 3)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=7744)
    parser.add_argument("--height", type=int, default=5165)  # 7744 x 5165 = 39,997,760 pixels, under the 40 M limit
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--format", default="rle", choices=["rle", "polygon", "png_base64", "none"])
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from sam3studio import load_segmenter
    from sam3studio.api import create_app
    from sam3studio.settings import Settings
    from sam3studio.testing import make_tiny_checkpoint

    checkpoint = make_tiny_checkpoint(Path(tempfile.mkdtemp()) / "tiny", seed=0)
    segmenter = load_segmenter(str(checkpoint), device="cpu", dtype="float32")
    fake_instances(segmenter, args.instances)
    png = gradient_png(args.width, args.height)
    settings = Settings(model=str(checkpoint), device="cpu", ui=False, max_pixels=40_000_000, max_upload_mb=20,
                        max_instances=100, data_dir=Path(tempfile.mkdtemp()))
    with TestClient(create_app(settings, segmenter=segmenter)) as client:
        client.get("/api/v1/health")
        rss_before = vm("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the high-water mark: what follows is this request's peak
        t0 = time.perf_counter()
        r = client.post("/api/v1/segment", files={"image": ("big.png", png, "image/png")},
                        data={"prompt": "thing", "threshold": "0.01", "max_instances": str(args.instances),
                              "mask_format": args.format})
        seconds = time.perf_counter() - t0
        peak = vm("VmHWM")
    body = r.json()
    print(json.dumps({
        "status": r.status_code, "instances": len(body.get("instances", [])), "error": body.get("error"),
        "image": f"{args.width}x{args.height}", "png_mb": round(len(png) / 2**20, 1), "format": args.format,
        "rss_before_mb": round(rss_before), "peak_rss_mb": round(peak), "growth_mb": round(peak - rss_before),
        "seconds": round(seconds, 1), "response_mb": round(len(r.content) / 2**20, 2)}))


if __name__ == "__main__":
    main()
