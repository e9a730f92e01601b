"""Tool-call overhead of the MCP server over the direct library call, and output size per instance (docs/benchmarks.md).

    .venv/bin/python benchmarks/mcp_overhead.py [--model random] [--device auto] [--dtype auto] [--calls 10]
        [--image-size 1280x720] [--prompts "person,rocket"] [--json out.json]

1. direct: ``Segmenter.segment(path, prompts)`` in this process, one fresh image per call (a different
   pixel each time, so no cache helps), after two warm-up calls;
2. mcp: the same images through ``sam3studio mcp`` over stdio with the MCP SDK's client (``segment`` with
   the image's path), a fresh server process holding its own model, after two warm-up calls, once per
   variant: ``mask_format`` none without the marked image (the bare tool call), none with it (the
   default), polygon (64 points) and rle.

The direct model is freed before the server starts, so the two never share the machine. Overhead is
the median tool call over the median direct call, minus one (the target is below 5 %). Output size is
the structured content's JSON bytes per instance, and the text and image bytes per call.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

VARIANTS = {  # name -> extra segment arguments
    "none, no image": {"mask_format": "none", "annotate": False},
    "none + marked image (default)": {"mask_format": "none", "annotate": True},
    "polygon (64 points)": {"mask_format": "polygon", "max_polygon_points": 64, "annotate": False},
    "rle": {"mask_format": "rle", "annotate": False},
}


def _images(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    from skimage import data

    base = np.asarray(Image.fromarray(data.astronaut()).resize(size, Image.Resampling.BILINEAR))
    paths = []
    for i in range(n):
        img = base.copy()
        img[0, 0] = (i % 256, (i // 256) % 256, 7)  # a different image each call: no cache hit
        path = folder / f"img_{i:03d}.png"
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths


def _direct(args, prompts: list[str], paths: list[Path]) -> list[float]:
    from sam3studio import load_segmenter

    seg = load_segmenter(args.model, device=args.device, dtype=args.dtype)
    for p in paths[:2]:
        seg.segment(p, prompts, score_threshold=args.threshold, max_instances=args.max_instances)
    times = []
    for p in paths[2:]:
        t = time.perf_counter()
        seg.segment(p, prompts, score_threshold=args.threshold, max_instances=args.max_instances)
        times.append(time.perf_counter() - t)
    del seg
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
    return times


async def _mcp(args, prompts: list[str], paths: list[Path]) -> dict[str, dict]:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    script = shutil.which("sam3studio") or str(Path(sys.executable).with_name("sam3studio"))
    server = StdioServerParameters(command=script, args=["mcp", "--model", args.model, "--device", args.device,
                                                         "--dtype", args.dtype], env=dict(os.environ))
    out: dict[str, dict] = {}
    async with Client(server, read_timeout_seconds=600) as client:
        common = {"prompts": prompts, "threshold": args.threshold, "max_instances": args.max_instances,
                  "timeout_s": 600}
        for p in paths[:2]:  # warm-up: also waits for the model to load
            result = await client.call_tool("segment", {"image": str(p), **common, **VARIANTS["rle"]})
            if result.is_error:
                raise SystemExit(f"the MCP server answered an error: {result.content[0].text}")
        for name, extra in VARIANTS.items():
            times, sizes, texts, images, counts = [], [], [], [], []
            for p in paths[2:]:
                # the same images for every variant: the server's caches would help; clear them by
                # giving each variant its own images (a different second pixel)
                img = np.asarray(Image.open(p)).copy()
                img[0, 1] = (len(out), 3, 5)
                variant_path = p.with_name(f"{p.stem}_{len(out)}.png")
                Image.fromarray(img).save(variant_path)
                t = time.perf_counter()
                result = await client.call_tool("segment", {"image": str(variant_path), **common, **extra})
                times.append(time.perf_counter() - t)
                if result.is_error:
                    raise SystemExit(f"the MCP server answered an error: {result.content[0].text}")
                data = result.structured_content
                counts.append(len(data["instances"]))
                sizes.append(len(json.dumps(data, separators=(",", ":"))))
                texts.append(len(result.content[0].text.encode()))
                images.append(sum(len(c.data) for c in result.content if c.type == "image"))
            n = sum(counts)
            out[name] = {"times_s": times, "median_s": statistics.median(times), "instances": n,
                         "json_bytes_per_instance": sum(sizes) / n if n else None,
                         "json_bytes_per_call": statistics.mean(sizes), "text_bytes_per_call": statistics.mean(texts),
                         "image_bytes_per_call": statistics.mean(images)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="random")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--calls", type=int, default=10, help="timed calls per figure (after 2 warm-up calls)")
    ap.add_argument("--image-size", default="1280x720")
    ap.add_argument("--prompts", default="person,rocket")
    ap.add_argument("--threshold", type=float, default=0.05, help="low, so untrained weights still find instances")
    ap.add_argument("--max-instances", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    w, h = (int(v) for v in args.image_size.lower().split("x"))
    prompts = [p.strip() for p in args.prompts.split(",") if p.strip()]
    folder = Path(tempfile.mkdtemp(prefix="sam3studio-mcp-bench-"))
    try:
        paths = _images(folder, args.calls + 2, (w, h))
        direct = _direct(args, prompts, paths)
        mcp = asyncio.run(_mcp(args, prompts, paths))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    base = statistics.median(direct)
    print(f"model {args.model}, device {args.device}, dtype {args.dtype}, image {w}x{h}, prompts {prompts}, "
          f"{args.calls} timed calls per figure")
    print("| path | median s | overhead | JSON bytes / instance | JSON / call | text / call | image / call |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| direct Segmenter.segment | {base:.4f} | - | - | - | - | - |")
    for name, r in mcp.items():
        per = f"{r['json_bytes_per_instance']:.0f}" if r["json_bytes_per_instance"] else "-"
        print(f"| mcp segment, {name} | {r['median_s']:.4f} | {100 * (r['median_s'] / base - 1):+.1f} % | {per} | "
              f"{r['json_bytes_per_call']:.0f} | {r['text_bytes_per_call']:.0f} | {r['image_bytes_per_call']:.0f} |")
    bare = mcp["none, no image"]["median_s"] / base - 1
    print(f"bare tool-call overhead {100 * bare:+.1f} % (target < 5 %): {'PASS' if bare < 0.05 else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "direct_times_s": direct,
                                         "direct_median_s": base, "mcp": mcp, "bare_overhead": bare}, indent=2))


if __name__ == "__main__":
    main()
