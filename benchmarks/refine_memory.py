"""Memory and latency of click refinement with and without sharing the ViT backbone (docs/benchmarks.md).

    .venv/bin/python benchmarks/refine_memory.py [--model random] [--dtype bfloat16]

Each variant is a fresh subprocess: load the segmenter, segment one 1280x720 image with one prompt,
then refine one object with a click (the tracker loads on this first click) and with three more
clicks. It reports resident memory (RSS) after each step, the peak, the parameters held, and the
time of the first and of a further click.

- shared: what `Segmenter.refine` does (the tracker without its backbone, fed the cached backbone output);
- separate: the tracker with a backbone of its own (`share_backbone=False`), as the documented
  `Sam3TrackerModel` holds it, so each image is encoded by both backbones.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
from sam3studio import load_segmenter
from sam3studio.interactive import load_tracker
model, dtype, share = sys.argv[1], sys.argv[2], sys.argv[3] == "shared"
torch.manual_seed(0)
def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
def params(m):
    return sum(p.numel() for p in m.parameters()) if m is not None else 0
out = {"variant": sys.argv[3]}
out["rss_start_mb"] = rss_mb()
seg = load_segmenter(model, device="cpu", dtype=dtype, translator="none")
if not share:
    seg._tracker = load_tracker(model, seg.device, seg.dtype, share_backbone=False)
out["rss_loaded_mb"] = rss_mb()
image = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
seg.segment(image, "dog")
out["rss_segmented_mb"] = rss_mb()
t = time.perf_counter()
first = seg.refine(image, points=[[640, 360]], point_labels=[1])
out["first_click_s"] = time.perf_counter() - t
out["rss_after_first_click_mb"] = rss_mb()
t = time.perf_counter()
seg.refine(image, points=[[640, 360], [100, 100], [900, 500], [700, 300]], point_labels=[1, 0, 0, 1], mask=first.mask)
out["further_click_s"] = time.perf_counter() - t
out["rss_end_mb"] = rss_mb()
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["detector_params_m"] = params(seg.model) / 1e6
out["tracker_params_m"] = params(seg._tracker.model) / 1e6
out["vision_encoder_calls"] = seg.stats.vision_encoder_calls
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="random")
    ap.add_argument("--dtype", default="bfloat16")
    args = ap.parse_args()
    rows = []
    for variant in ("shared", "separate"):
        res = subprocess.run([sys.executable, "-c", CHILD, args.model, args.dtype, variant], capture_output=True,
                             text=True, check=False)
        if res.returncode:
            sys.exit(f"{variant} failed:\n{res.stderr[-3000:]}")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    keys = [k for k in rows[0] if k != "variant"]
    print(f"{'':28}" + "".join(f"{r['variant']:>12}" for r in rows))
    for k in keys:
        print(f"{k:28}" + "".join(f"{r[k]:>12.2f}" for r in rows))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
