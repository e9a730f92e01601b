"""The data engine's figures (docs/benchmarks.md): review latency on a large store, and export throughput.

    .venv/bin/python benchmarks/dataset.py review [--images 100000] [--instances 5] [--size 640x480] [--steps 30]
        [--clicks-model /tmp/tiny-video] [--reuse DIR]
    .venv/bin/python benchmarks/dataset.py export [--images 10000] [--instances 5] [--size 640x480]
        [--formats coco,coco-polygons,yolo,yolo-detect,voc,labelstudio,cvat]

Both build a synthetic dataset in a temporary folder: ``--images`` rows whose files are hard links to a few
JPEGs of ``--size`` (so every row has a real file), each with ``--instances`` proposals (ellipses of random
size and place, two classes, random scores), written through `DatasetStore.store_proposals`.

review: the server-side time of the Review tab's "next" (the store's navigation, position and progress
queries, decoding the image, drawing the instances, and Gradio's encoding of the canvas), from the middle of
the store, ``--steps`` times, unfiltered and filtered by class and score; plus, with ``--clicks-model`` (a
tiny sam3_video checkpoint), one "add by clicks" click (refinement and save). Also the store's paged list
and count at this size.

export: `export_dataset` per format with ``--images link`` (annotation work, no image copies), and COCO with
copies; images per second.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def build(folder: Path, n_images: int, n_instances: int, size: tuple[int, int], seed: int = 0):
    from sam3studio.dataset.store import DatasetStore

    if (folder / "ds").is_dir():  # --reuse: built by an earlier run
        store = DatasetStore.open(folder / "ds")
        print(f"reusing {folder}: {store.count()} images")
        return store
    w, h = size
    rng = np.random.default_rng(seed)
    bases = []
    for k in range(8):
        img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        path = folder / f"base{k}.jpg"
        Image.fromarray(img).save(path, quality=85)
        bases.append(path)
    (folder / "imgs").mkdir()
    items = []
    for i in range(n_images):
        path = folder / "imgs" / f"im{i:06d}.jpg"
        os.link(bases[i % len(bases)], path)
        items.append((str(path), path.name))
    store = DatasetStore.create(folder / "ds", ["cat", "dog"])
    store.add_images(items)
    yy, xx = np.mgrid[:h, :w]
    templates = []  # masks made once and reused: the store's work does not depend on the pixels
    for _ in range(64):
        cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
        rx, ry = rng.uniform(0.03, 0.2) * w, rng.uniform(0.03, 0.2) * h
        templates.append(store.instance_fields(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1, w, h))
    start = time.perf_counter()
    for image_id in range(1, n_images + 1):
        rows = [{"class_id": int(rng.integers(2)), "score": float(rng.uniform(0.05, 1)),
                 **templates[int(rng.integers(len(templates)))]} for _ in range(n_instances)]
        store.store_proposals(image_id, w, h, rows)
    print(f"built {n_images} images x {n_instances} instances in {time.perf_counter() - start:.1f} s "
          f"({(folder / 'ds' / 'dataset.sqlite3').stat().st_size / 2**20:.0f} MB store)")
    return store


def _ms(values: list[float]) -> str:
    values = sorted(values)
    return f"median {1000 * statistics.median(values):.1f} ms, p90 {1000 * values[int(0.9 * (len(values) - 1))]:.1f} ms"


def review(args) -> None:
    import gradio as gr

    from sam3studio.dataset.review import DatasetRegistry
    from sam3studio.dataset.store import ImageFilter
    from sam3studio.service import SegmentService
    from sam3studio.settings import Settings
    from sam3studio.ui.common import UiContext
    from sam3studio.ui.review_tab import ALL, ReviewState, ReviewTab

    folder = Path(args.reuse) if args.reuse else Path(tempfile.mkdtemp(prefix="sam3studio-bench-review-"))
    try:
        size = tuple(int(v) for v in args.size.split("x"))
        store = build(folder, args.images, args.instances, size)
        for label, call in (("list_images (page of 50, by class, from the middle)",
                             lambda: store.list_images(ImageFilter(class_id=1), after=args.images // 2)),
                            ("list_images (page of 50, unreviewed, with the total)",
                             lambda: store.list_images(ImageFilter(state="unreviewed"), after=args.images // 2)),
                            ("count by class and score", lambda: store.count(ImageFilter(class_id=1, max_score=0.3))),
                            ("progress", store.progress)):
            times = []
            for _ in range(20):
                t = time.perf_counter()
                call()
                times.append(time.perf_counter() - t)
            print(f"store {label}: {_ms(times)}")
        store.close()
        segmenter = None
        if args.clicks_model:
            from sam3studio import load_segmenter

            segmenter = load_segmenter(args.clicks_model, device="cpu", dtype="float32")
        settings = Settings(datasets=[folder / "ds"], model=args.clicks_model or "facebook/sam3")
        registry = DatasetRegistry(settings.datasets)
        service = SegmentService(settings, segmenter=segmenter)
        with gr.Blocks():
            ctx = UiContext(service, language=gr.Radio(["en"], value="en"), first_lang="en", datasets=registry)
            with gr.Tabs():
                tab = ReviewTab(ctx)
        for name, filters in (("unfiltered", (ALL, ALL, 0, 1)), ("class dog, score <= 0.5", (ALL, "dog", 0, 0.5))):
            state = ReviewState(dataset="ds", image_id=args.images // 2)
            times = []
            for _ in range(args.steps):
                t = time.perf_counter()
                out = tab.on_next(state, "ds", *filters, "en")
                tab.canvas.postprocess(out[tab.canvas])  # what Gradio does with the canvas before answering
                times.append(time.perf_counter() - t)
                state = out[tab.state]
            print(f"review 'next' ({name}, {size[0]}x{size[1]}, {args.instances} instances): {_ms(times)}")
        if segmenter is not None:
            times = []
            evt = gr.SelectData(None, {"index": [300, 200], "value": None, "selected": True})
            tab.on_canvas(ReviewState(dataset="ds", image_id=1), "ds", ALL, ALL, 0, 1, "add_clicks", 1, "cat", "en",
                          evt)  # warm-up: the first click loads the tracker
            for k in range(args.steps // 3 or 1):
                state = ReviewState(dataset="ds", image_id=args.images // 2 + k)
                t = time.perf_counter()
                out = tab.on_canvas(state, "ds", ALL, ALL, 0, 1, "add_clicks", 1, "cat", "en", evt)
                tab.canvas.postprocess(out[tab.canvas])
                times.append(time.perf_counter() - t)
            print(f"review 'add by clicks', one click (tiny checkpoint, refine + save + redraw): {_ms(times)}")
        registry.close()
    finally:
        if not args.reuse:
            shutil.rmtree(folder, ignore_errors=True)


def export(args) -> None:
    from sam3studio.dataset.export import ExportOptions, export_dataset

    variants = {"coco": {"format": "coco"}, "coco-polygons": {"format": "coco", "masks": "polygon"},
                "yolo": {"format": "yolo"}, "yolo-detect": {"format": "yolo", "yolo_task": "detect"},
                "voc": {"format": "voc"}, "labelstudio": {"format": "labelstudio"}, "cvat": {"format": "cvat"}}
    folder = Path(tempfile.mkdtemp(prefix="sam3studio-bench-export-"))
    try:
        size = tuple(int(v) for v in args.size.split("x"))
        store = build(folder, args.images, args.instances, size)
        runs = [(name, {**variants[name], "images": "link"}) for name in args.formats.split(",")]
        runs.append(("coco, images copied", {"format": "coco", "images": "copy"}))
        for name, opts in runs:
            out = folder / "out"
            t = time.perf_counter()
            summary = export_dataset(store, out, ExportOptions(include_unreviewed=True, overwrite=True, **opts))
            seconds = time.perf_counter() - t
            n = sum(summary.images.values())
            print(f"export {name}: {n} images, {sum(summary.instances.values())} instances in {seconds:.1f} s "
                  f"= {n / seconds:.0f} images/s")
            shutil.rmtree(out)
        store.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    r = sub.add_parser("review")
    r.add_argument("--images", type=int, default=100_000)
    r.add_argument("--steps", type=int, default=30)
    r.add_argument("--clicks-model", default=None)
    r.add_argument("--reuse", default=None, help="a folder to build the dataset in once and reuse (kept)")
    e = sub.add_parser("export")
    e.add_argument("--images", type=int, default=10_000)
    e.add_argument("--formats", default="coco,coco-polygons,yolo,yolo-detect,voc,labelstudio,cvat")
    for p in (r, e):
        p.add_argument("--instances", type=int, default=5)
        p.add_argument("--size", default="640x480")
    args = parser.parse_args()
    review(args) if args.what == "review" else export(args)


if __name__ == "__main__":
    main()
