"""Vision batching: throughput of concurrent requests with and without one shared vision pass (docs/benchmarks.md).

    .venv/bin/python benchmarks/batching.py --model random --concurrency 4 --device cpu
    .venv/bin/python benchmarks/batching.py --model random --concurrency 8 --device cuda   # the issue's GPU goal

In one process and one run: ``concurrency`` threads each send one request (a different image, one
prompt) through `SegmentService.segment`, all at once, ``rounds`` times; first with ``vision_batch=1``
(requests run one at a time, as today's default), then with ``vision_batch=concurrency`` and
``max_concurrent=concurrency`` (the images of the requests that arrive together share one vision
pass). The engine's caches are cleared between rounds, so every round encodes its images. Reported:
requests per second of each, their ratio, the batch sizes seen, and the encoder calls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="random")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", default="640x480")
    args = ap.parse_args()

    import numpy as np

    from sam3studio import load_segmenter
    from sam3studio.service import SegmentService
    from sam3studio.settings import Settings

    width, height = (int(v) for v in args.size.lower().split("x"))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(args.concurrency)]
    seg = load_segmenter(args.model, device=args.device, dtype=args.dtype, translator="none",
                         image_cache_size=max(4, args.concurrency))
    seg.segment(images[0], "dog")  # warm-up: first-call allocations and kernel selection
    if seg.device.type == "cuda":
        import torch

        sync = torch.cuda.synchronize
    else:
        def sync() -> None:
            return None

    def run(batch: int) -> dict:
        settings = Settings(model=args.model, max_concurrent=max(1, batch), max_queue=args.concurrency,
                            vision_batch=batch, vision_batch_wait_ms=50, queue_timeout_s=3600)
        service = SegmentService(settings, segmenter=seg)
        calls0 = seg.stats.vision_encoder_calls
        times = []
        for _ in range(args.rounds):
            seg.clear_cache()
            barrier = threading.Barrier(args.concurrency)

            def one(i: int, barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                service.segment(images[i], "dog")

            threads = [threading.Thread(target=one, args=(i,)) for i in range(args.concurrency)]
            sync()
            t = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            sync()
            times.append(time.perf_counter() - t)
        batcher = service.batcher
        return {"vision_batch": batch, "round_s": statistics.median(times), "rounds_s": times,
                "requests_per_s": args.concurrency / statistics.median(times),
                "encoder_calls": seg.stats.vision_encoder_calls - calls0,
                "batch_sizes": sorted(set(batcher.batch_sizes)) if batcher else [1]}

    one_by_one = run(1)
    batched = run(args.concurrency)
    report = {"model": args.model, "device": str(seg.device), "dtype": str(seg.dtype).removeprefix("torch."),
              "concurrency": args.concurrency, "image": args.size, "one_at_a_time": one_by_one, "batched": batched,
              "throughput_ratio": batched["requests_per_s"] / one_by_one["requests_per_s"]}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
