"""Video tracking speed: seconds per frame with 1 and with 10 tracked objects (docs/benchmarks.md, "Video speed").

    .venv/bin/python benchmarks/video_fps.py --model /tmp/tiny-video --frames 24
    .venv/bin/python benchmarks/video_fps.py --model random --frames 4 --size 640x360   # full size, CPU: minutes

The number of tracked objects is set, not left to chance: random and tiny weights score every query
about alike, so the run uses a score threshold of 0.01 (everything is detected) and caps the
session at N objects with the model's own `max_num_objects`. "tracked" counts the objects the
session holds (the work done); "shown" those the model reports for the frame (random masks overlap,
and SAM 3 hides duplicates and overlapping tracks). Each N runs in a fresh subprocess on
the same synthetic video (a moving square on noise); the first frame, which starts the tracks, is
reported apart from the steady frames after it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, "tests")
from conftest import make_test_video
from sam3studio.video import load_video_segmenter
model, objects, frames, width, height, dtype, device, folder = sys.argv[1:9]
objects, frames, width, height = int(objects), int(frames), int(width), int(height)
video = make_test_video(f"{folder}/v.mp4", n=frames, width=width, height=height, fps=24)
t = time.perf_counter()
vs = load_video_segmenter(model, device=device, dtype=dtype, translator="none")
load_s = time.perf_counter() - t
vs.model.max_num_objects = objects
import sam3studio.video.tracker as T
session_objects = []
_prune = T._prune
def spy(session, step, window):
    session_objects.append(len(session.obj_ids))  # objects the session tracks, shown or not
    _prune(session, step, window)
T._prune = spy
times, counts = [], []
t = time.perf_counter()
for frame in vs.track(video, "object", score_threshold=0.01):
    now = time.perf_counter()
    times.append(now - t)
    counts.append(len(frame.instances))
    t = now
steady = times[1:] or times
print(json.dumps({"objects_cap": objects, "frames": len(times), "load_s": load_s, "first_frame_s": times[0],
                  "steady_s_per_frame": sum(steady) / len(steady), "fps": len(steady) / sum(steady),
                  "tracked_per_frame": sum(session_objects[1:] or session_objects) / len(session_objects[1:] or session_objects),
                  "shown_per_frame": sum(counts[1:] or counts) / len(counts[1:] or counts),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "device": str(vs.device), "dtype": str(vs.dtype)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a tiny video checkpoint folder, facebook/sam3, or random")
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", default="320x240", help="video WxH")
    ap.add_argument("--objects", default="1,10", help="object caps to run, comma-separated")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for n in (int(v) for v in args.objects.split(",")):
            res = subprocess.run([sys.executable, "-c", CHILD, args.model, str(n), str(args.frames), str(width), str(height),
                                  args.dtype, args.device, folder], capture_output=True, text=True, check=False)
            if res.returncode:
                sys.exit(f"objects={n} failed:\n{res.stderr[-3000:]}")
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(f"{'objects cap':>12} {'tracked/frame':>14} {'shown/frame':>12} {'first frame s':>14} {'s/frame':>9} {'fps':>7} "
          f"{'peak RSS MB':>12}")
    for r in rows:
        print(f"{r['objects_cap']:>12} {r['tracked_per_frame']:>14.1f} {r['shown_per_frame']:>12.1f} {r['first_frame_s']:>14.2f} "
              f"{r['steady_s_per_frame']:>9.3f} {r['fps']:>7.2f} {r['peak_rss_mb']:>12.0f}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
