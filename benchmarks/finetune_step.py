"""Fine-tuning cost per training step, per mode (docs/benchmarks.md, docs/finetune.md).

    .venv/bin/python benchmarks/finetune_step.py [--model tiny|random|DIR] [--dtype auto] [--steps 5]
                                                 [--batch-size 1] [--images 8] [--variants heads-cached,...]

Each variant runs in a fresh subprocess (so its peak memory is its own) on a synthetic shapes dataset
(`sam3studio.testing.make_shapes_dataset`, 640x480 images), through the library's own `prepare_run`:

- ``heads-cached``: the default mode; the vision features of every view are computed once (``prepare``,
  timed per view) and a step runs the heads only;
- ``heads-encoder``: the same heads step, but the frozen vision encoder runs in every step (``--cache off``):
  what a step costs without the cache;
- ``lora``: LoRA adapters on the last vision layers and the text encoder, the encoder running every step;
- ``all`` (not in the default list: for tiny models and big GPUs).

Reported per variant: median seconds per step after one warm-up step (forward, backward, optimizer),
seconds per cached view, the feature cache's bytes per view (measured and as estimated), peak RSS (and
peak CUDA memory on a GPU), and the library's memory estimate for the same settings.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, statistics, sys, time, warnings
warnings.filterwarnings("ignore")
import torch
from sam3studio.finetune import FinetuneConfig
from sam3studio.finetune.pipeline import prepare_run
variant, model, dtype, steps, batch, train, val, out, device = sys.argv[1:10]
mode = {"heads-cached": "heads", "heads-encoder": "heads", "lora": "lora", "all": "all"}[variant]
cfg = FinetuneConfig(train=mode, epochs=1, batch_size=int(batch), dtype=dtype, device=device,
                     cache="memory" if variant == "heads-cached" else "off")
run = prepare_run(train, val, out=out, model=model, config=cfg)
res = {"variant": variant, "device": str(run.device), "compute_dtype": str(run.compute_dtype),
       "trainable_params_m": run.extra["trainable_parameters"] / 1e6,
       "estimate_gb": run.extra["memory_estimate"]["total_bytes"] / 2**30,
       "cache_bytes_per_view_estimated": run.extra["feature_cache"]["bytes_per_view"]}
t = time.perf_counter()
run.prepare()
views = len(run.view_keys)
if run.cache is not None:
    res["cache_s_per_view"] = (time.perf_counter() - t) / max(1, views + len(run.data.val.images))
    res["cache_bytes_per_view_measured"] = run.cache.nbytes() / max(1, views + len(run.data.val.images))
times = run.time_steps(int(steps) + 1)
res["step_s_median"] = statistics.median(times[1:])
res["step_s_all"] = times
res["images_per_step"] = run.batch
res["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
if torch.cuda.is_available():
    res["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 2**30
print("RESULT " + json.dumps(res))
"""

DEFAULT_VARIANTS = "heads-cached,heads-encoder,lora"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="tiny (a tiny checkpoint made here), random (full size), or a folder")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step")
    ap.add_argument("--batch-size", type=int, default=1, help="images per step")
    ap.add_argument("--images", type=int, default=8, help="training images (each cached in 2 views in heads mode)")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()

    from sam3studio.testing import make_shapes_dataset, make_tiny_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        model = str(make_tiny_checkpoint(f"{tmp}/tiny")) if args.model == "tiny" else args.model
        size = {"heights": (480, 480), "widths": (640, 640)}
        train = make_shapes_dataset(f"{tmp}/data", args.images, seed=1, split="train", **size)
        val = make_shapes_dataset(f"{tmp}/data", 2, seed=2, split="val", **size)
        results = []
        for i, variant in enumerate(args.variants.split(",")):
            cmd = [sys.executable, "-c", CHILD, variant, model, args.dtype, str(args.steps), str(args.batch_size),
                   str(train), str(val), f"{tmp}/out{i}", args.device]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(f"{variant}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
                continue
            res = json.loads(line[len("RESULT "):])
            results.append(res)
            extra = (f", cache {res['cache_s_per_view']:.3f} s/view, {res['cache_bytes_per_view_measured'] / 2**20:.2f} MB/view"
                     if "cache_s_per_view" in res else "")
            print(f"{variant:14s} {res['step_s_median']:.3f} s/step ({res['images_per_step']} image/step, "
                  f"{res['compute_dtype']}){extra}, peak RSS {res['peak_rss_gb']:.2f} GB "
                  f"(estimate {res['estimate_gb']:.2f} GB)", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
