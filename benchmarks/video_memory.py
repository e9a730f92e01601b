"""Peak memory of video tracking for a short video and one 4x longer (docs/benchmarks.md, "Video memory").

    .venv/bin/python benchmarks/video_memory.py --frames 60 --model /path/to/tiny-or-real [--window 20]

Each run is a fresh subprocess (peak RSS is per process): it tracks a synthetic video of N frames and
reports its peak RSS and the bytes of tensors the inference session still holds at the end. Runs the
pruned session (default window) and, for contrast, an unbounded one (window 10^9).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, "tests")
from conftest import make_test_video
import torch
from sam3studio.video import load_video_segmenter
import sam3studio.video.tracker as T
model, frames, window, folder = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
video = make_test_video(f"{folder}/v{frames}.mp4", n=frames, width=320, height=240, fps=24)
vs = load_video_segmenter(model, device="cpu", dtype="float32", keep_window=window)
held = {}
orig = T._prune
def spy(session, step, w):
    orig(session, step, w)
    def size(x):
        if isinstance(x, torch.Tensor): return x.numel() * x.element_size()
        if isinstance(x, dict): return sum(size(v) for v in x.values())
        if isinstance(x, (list, tuple)): return sum(size(v) for v in x)
        return 0
    held["bytes"] = size(session.processed_frames) + size(session.output_dict_per_obj)
T._prune = spy
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
n = sum(1 for _ in vs.track(video, "red car", score_threshold=0.1))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"frames": n, "seconds": time.perf_counter() - t0, "peak_rss_mb": peak,
                  "rss_before_tracking_mb": rss0 / 1024, "session_tensor_mb": held.get("bytes", 0) / 2**20}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for window in (args.window, 10**9):
            for n in (args.frames, 4 * args.frames):
                out = subprocess.run([sys.executable, "-c", CHILD, args.model, str(n), str(window), folder],
                                     capture_output=True, text=True, check=True)
                figures = json.loads(out.stdout.strip().splitlines()[-1])
                row = {"window": "pruned" if window == args.window else "unbounded", **figures}
                rows.append(row)
                print(row, flush=True)
    print("\n| session | frames | peak RSS MB | RSS growth over tracking MB | session tensors at end MB | s/frame |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        growth = r["peak_rss_mb"] - r["rss_before_tracking_mb"]
        print(f"| {r['window']} | {r['frames']} | {r['peak_rss_mb']:.0f} | {growth:.0f} | "
              f"{r['session_tensor_mb']:.1f} | {r['seconds'] / r['frames']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
