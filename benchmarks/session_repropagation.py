"""Video sessions: seconds per frame of re-propagation after one correction, and memory against video length
(docs/benchmarks.md, "Video sessions").

    .venv/bin/python benchmarks/session_repropagation.py --model /tmp/tiny-video --frames 30,100,300
    .venv/bin/python benchmarks/session_repropagation.py --model random --frames 10 --size 640x480 --no-second  # full size

Each video length runs in a fresh subprocess (peak RSS is per process). In it: the model is loaded, a
synthetic video of N frames (PyAV, 160x120 unless --size) is opened as a `VideoSession`, one object
is clicked on frame 0 and propagated forward to the end, then corrected with a negative click on the
middle frame and re-propagated forward from there. Reported: seconds per frame of both propagations
and of the correction click itself; the process's resident memory (RSS, from /proc) before the
session opens, after each propagation and after `close` (then once more around a second session on the
same video, to separate what `close` gives back from one-time allocations); the bytes of tensors the object's tracker
state holds at the end (distinct storages); the size of the results on disk.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, "tests")
from conftest import make_test_video
import torch
from sam3studio.video import VideoSession, load_video_segmenter

model, frames, folder, dtype, w, h = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
second = sys.argv[7] == "1"

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def state_mb(session):
    seen, total = set(), 0
    def walk(x):
        nonlocal total
        if isinstance(x, torch.Tensor):
            key = x.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                total += x.untyped_storage().nbytes()
        elif isinstance(x, dict):
            for v in x.values(): walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x: walk(v)
    for obj in session.objects.values():
        walk(obj.state.output_dict_per_obj)
        walk(obj.state.point_inputs_per_obj)
        walk(obj.state.mask_inputs_per_obj)
    return total / 2**20

video = make_test_video(f"{folder}/v{frames}.mp4", n=frames, width=w, height=h, fps=24)
vs = load_video_segmenter(model, device="cpu", dtype=dtype)
out = {"frames": frames, "size": f"{w}x{h}", "rss_loaded_mb": rss_mb()}
session = VideoSession.open(vs, video, work_dir=f"{folder}/session{frames}")
out["rss_open_mb"] = rss_mb()
t = time.perf_counter()
session.add_clicks(0, [[w // 2, h // 2]], [1])
out["click_s"] = time.perf_counter() - t
t = time.perf_counter()
n = sum(1 for _ in session.propagate("forward"))
out["propagate_s_per_frame"] = (time.perf_counter() - t) / n
out["rss_after_propagation_mb"] = rss_mb()
k = frames // 2
stored = session.frame(k)
point = [w // 2, h // 2]
if len(stored):
    import numpy as np
    ys, xs = np.nonzero(stored.instances[0].mask)
    point = [int(xs[len(xs) // 2]), int(ys[len(ys) // 2])]
t = time.perf_counter()
session.add_clicks(k, [point], [0], object_id=1)
out["correction_click_s"] = time.perf_counter() - t
t = time.perf_counter()
m = sum(1 for _ in session.propagate("forward"))
out["repropagated_frames"] = m
out["repropagate_s_per_frame"] = (time.perf_counter() - t) / m
out["rss_after_repropagation_mb"] = rss_mb()
out["tracker_state_mb"] = state_mb(session)
out["results_on_disk_kb"] = sum(p.stat().st_size for p in session.work_dir.iterdir()) / 1024
session.close()
out["rss_after_close_mb"] = rss_mb()
# A second session on the same video, to tell what close() gives back from what the first use of the code
# paths keeps for good (libraries' one-time allocations): the process should end where the first close left it.
out["rss_second_session_mb"] = out["rss_after_second_close_mb"] = float("nan")
if second:
    again = VideoSession.open(vs, video, work_dir=f"{folder}/again{frames}")
    again.add_clicks(0, [[w // 2, h // 2]], [1])
    sum(1 for _ in again.propagate("forward"))
    out["rss_second_session_mb"] = rss_mb()
    again.close()
    out["rss_after_second_close_mb"] = rss_mb()
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint folder, hub id, or 'random' (full size, untrained)")
    ap.add_argument("--frames", default="30,100,300", help="comma-separated video lengths")
    ap.add_argument("--size", default="160x120", help="video frame size WxH")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--no-second", action="store_true", help="skip the second session (saves time at full size)")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for n in (int(v) for v in args.frames.split(",")):
            done = subprocess.run([sys.executable, "-c", CHILD, args.model, str(n), folder, args.dtype, str(w), str(h),
                                   "0" if args.no_second else "1"], capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{n} frames: the run failed:\n{done.stderr[-3000:]}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| frames | s/frame first propagation | correction click s | s/frame re-propagation (frames) "
          "| RSS MB: loaded / open / propagated / re-propagated / closed | session's RSS MB | tracker state MB "
          "| results on disk KB | RSS MB: second session / closed again |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['frames']} | {r['propagate_s_per_frame']:.3f} | {r['correction_click_s']:.2f} | "
              f"{r['repropagate_s_per_frame']:.3f} ({r['repropagated_frames']}) | {r['rss_loaded_mb']:.0f} / "
              f"{r['rss_open_mb']:.0f} / {r['rss_after_propagation_mb']:.0f} / {r['rss_after_repropagation_mb']:.0f} / "
              f"{r['rss_after_close_mb']:.0f} | {r['rss_after_repropagation_mb'] - r['rss_open_mb']:.0f} | "
              f"{r['tracker_state_mb']:.1f} | {r['results_on_disk_kb']:.0f} | {r['rss_second_session_mb']:.0f} / "
              f"{r['rss_after_second_close_mb']:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
