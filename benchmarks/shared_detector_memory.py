"""Memory of a server that runs images and video jobs: the video model with its own detector vs sharing the
image model's (docs/benchmarks.md).

    .venv/bin/python benchmarks/shared_detector_memory.py [--model random] [--dtype bfloat16]

Each variant is a fresh subprocess that loads the image segmenter, then the video segmenter (as the
job runner does on the first video job), and reports resident memory after each and the parameters held.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys
from sam3studio import load_segmenter
from sam3studio.video import load_video_segmenter
model, dtype, share = sys.argv[1], sys.argv[2], sys.argv[3] == "shared"
def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
seg = load_segmenter(model, device="cpu", dtype=dtype, translator="none")
out = {"variant": sys.argv[3], "rss_image_model_mb": rss_mb()}
vseg = load_video_segmenter(model, device="cpu", dtype=dtype, translator="none", detector=seg.model if share else None)
out["rss_both_mb"] = rss_mb()
params = {id(p): p.numel() for m in (seg.model, vseg.model) for p in m.parameters()}
out["parameters_held_m"] = sum(params.values()) / 1e6
out["detector_shared"] = vseg.model.detector_model is seg.model
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="random")
    ap.add_argument("--dtype", default="bfloat16")
    args = ap.parse_args()
    rows = []
    for variant in ("shared", "separate"):
        res = subprocess.run([sys.executable, "-c", CHILD, args.model, args.dtype, variant], capture_output=True, text=True,
                             check=False)
        if res.returncode:
            sys.exit(f"{variant} failed:\n{res.stderr[-3000:]}")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    for r in rows:
        print(f"{r['variant']:>9}: image model {r['rss_image_model_mb']:.0f} MB, image + video {r['rss_both_mb']:.0f} MB, "
              f"{r['parameters_held_m']:.1f} M parameters, detector shared: {r['detector_shared']}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
