"""`label_dataset`: propose instances for every image of a folder or manifest into a dataset store, resumably.

The per-image work is `sam3studio.batch`'s (the same `Worker`, records and Ray engine), so a dataset
label run and a ``batch`` job turn an image into the same masks. What differs is where results go:
straight into the store, one transaction per image, so an interrupted run loses at most the image in
flight and a re-run carries on where it stopped.

Idempotent: images already in the store are not added twice; an image is proposed for once (its
``proposed`` flag) and only while it is still ``unreviewed``, so re-running never overwrites an image
a person has reviewed or changed, and only new or failed images cost model time.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycocotools import mask as mask_utils

from sam3studio.batch.shards import JobDir, plan_shards
from sam3studio.batch.sources import BatchInputError, ReadLimits, is_url, list_inputs
from sam3studio.batch.work import BatchSpec, Worker
from sam3studio.dataset.store import DatasetError, DatasetStore, parse_classes

__all__ = ["ENGINES", "LabelSummary", "label_dataset", "prepare_label"]

ENGINES = ("local", "ray")
STAGING = ".label-staging"  # shards of a Ray run not yet taken into the store
RAY_SHARD_SIZE = 64
LABEL_CLASSES_KEY = "label_classes"


@dataclass
class LabelSummary:
    """What a label run did. ``labelled`` + ``failed`` images were worked on by this run."""

    dataset: Path
    classes: list[str]
    images_total: int  # in the store after adding SOURCE
    images_added: int  # new in this run
    pending: int  # to be labelled when the run started
    labelled: int = 0
    failed: int = 0
    seconds: float = 0.0
    startup_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def _names(items: Sequence[str], source: Path) -> list[str]:
    """Display names: the path relative to the source folder (or the manifest's folder), else the file name."""
    base = source if source.is_dir() else source.parent
    base_abs = os.path.abspath(base)
    out = []
    for item in items:
        rel = os.path.relpath(item, base_abs)
        out.append(Path(item).name if rel.startswith("..") or os.path.isabs(rel) else Path(rel).as_posix())
    return out


def prepare_label(source: Path, out: Path, classes: str | Sequence[str]) -> tuple[DatasetStore, list[str], int]:
    """Check the class list and SOURCE, open (or create) the dataset and add SOURCE's images.

    Returns the store, the classes and how many images were new. A dataset that already holds proposals
    must be labelled with the same classes (proposals for a class missing from earlier images would be
    incomplete); a dataset made by `import` takes any classes, adding the new ones.
    """
    names = parse_classes(classes)
    try:
        items = list_inputs(Path(source))
    except BatchInputError as exc:
        raise DatasetError(str(exc)) from None
    urls = [i for i in items if is_url(i) or "://" in i]
    if urls:
        raise DatasetError(f"{urls[0]}: dataset label reads local image files (the review shows them from disk); "
                           "download URLs first")
    store = DatasetStore.create(out)
    try:
        earlier = store.get_meta(LABEL_CLASSES_KEY)
        if earlier is not None and json.loads(earlier) != names:
            raise DatasetError(f"{out} was labelled with the classes {', '.join(json.loads(earlier))}; label it with "
                               "the same --classes, or make another dataset with another --out")
        store.add_classes(names)
        store.set_meta(LABEL_CLASSES_KEY, json.dumps(names, ensure_ascii=False))
        added = store.add_images(zip(items, _names(items, Path(source)), strict=True))
    except BaseException:
        store.close()
        raise
    return store, names, added


class _Ingest:
    """Turns batch records (JSON lines) into store proposals; counts what it stored."""

    def __init__(self, store: DatasetStore, classes: Sequence[str], on_image: Callable[[bool], None] | None) -> None:
        self.store = store
        self.class_ids = [store.class_id(c) for c in classes]  # prompt index -> class id
        self.on_image = on_image
        self.labelled = self.failed = 0

    def line(self, line: str) -> None:
        record = json.loads(line)
        image_id = self.store.image_id_of(record["source"])
        if image_id is None:  # a stale staging shard from another dataset's run: nothing to do
            return
        if "instances" not in record:
            self.store.store_proposals(image_id, 0, 0, (), error=f"{record.get('stage')}: {record.get('error')}")
            self.failed += 1
            ok = False
        else:
            height, width = int(record["height"]), int(record["width"])
            instances = []
            for inst in record["instances"]:
                rle = inst["mask"]
                x, y, w, h = (float(v) for v in mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode()}))
                instances.append({"class_id": self.class_ids[int(inst["prompt_index"])], "score": float(inst["score"]),
                                  "counts": rle["counts"], "box": (x, y, x + w, y + h), "area": int(inst["area"]),
                                  "origin": "model"})
            self.store.store_proposals(image_id, width, height, instances)
            self.labelled += 1
            ok = True
        if self.on_image is not None:
            self.on_image(ok)


def _ingest_staging(staging: Path, ingest: _Ingest) -> None:
    """Take the finished shards a Ray run left behind into the store, then remove the staging folder."""
    if not staging.is_dir():
        return
    for path in sorted(staging.glob("shard-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                ingest.line(line)
    shutil.rmtree(staging, ignore_errors=True)


def _run_ray(spec: BatchSpec, pending: list[tuple[int, str]], store: DatasetStore, ingest: _Ingest,
             ray_options: Any, started: Callable[[Any], None]) -> None:
    """Ray Data over the pending images; each finished shard goes into the store as soon as it is on disk."""
    from sam3studio.batch.ray_engine import RayOptions, run_ray

    staging = store.root / STAGING
    job = JobDir(staging)
    items = [path for _, path in pending]
    shards = plan_shards(len(items), RAY_SHARD_SIZE)
    job.prepare({"inputs": len(items), **spec.job_settings()}, overwrite=True)

    def shard_done(shard: int, ok: int, failed: int) -> None:
        for path in (job.errors_path(shard), job.shard_path(shard)):
            if path.is_file():
                for line in path.read_text(encoding="utf-8").splitlines():
                    if line.strip():
                        ingest.line(line)
                path.unlink()

    run_ray(spec, items, list(enumerate(shards)), job, ray_options or RayOptions(), on_connected=started,
            on_shard=shard_done)
    shutil.rmtree(staging, ignore_errors=True)


def label_dataset(
    source: Path,
    out: Path,
    classes: str | Sequence[str],
    *,
    model: str = "facebook/sam3",
    device: str = "auto",
    dtype: str = "auto",
    translator: str = "lexicon",
    threshold: float = 0.5,
    mask_threshold: float = 0.5,
    max_instances: int = 100,
    limits: ReadLimits | None = None,
    engine: str = "local",
    ray_options: Any = None,
    segmenter: Any = None,
    on_start: Callable[[int], None] | None = None,
    on_image: Callable[[bool], None] | None = None,
) -> LabelSummary:
    """Add SOURCE's images to the dataset in ``out`` and store the model's proposals for every image still
    unreviewed and unproposed (new images, and those an earlier run did not finish or could not read).

    ``segmenter`` (local engine) skips loading the model; ``on_start(pending)`` fires once the model is
    loaded (or Ray is connected), ``on_image(ok)`` after each image is stored.
    """
    if engine not in ENGINES:
        raise DatasetError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    store, names, added = prepare_label(source, out, classes)
    start = time.perf_counter()
    try:
        ingest = _Ingest(store, names, on_image)
        _ingest_staging(store.root / STAGING, ingest)
        pending = store.pending_labels()
        summary = LabelSummary(store.root, names, store.count(), added, len(pending))
        spec = BatchSpec(prompts=tuple(names), model=model, device=device, dtype=dtype, translator=translator,
                         threshold=threshold, mask_threshold=mask_threshold, max_instances=max_instances,
                         limits=limits or ReadLimits())

        def started(_: Any = None) -> None:
            summary.startup_seconds = time.perf_counter() - start
            if on_start is not None:
                on_start(len(pending))

        try:
            if not pending:
                started()
            elif engine == "ray":
                _run_ray(spec, pending, store, ingest, ray_options, started)
            else:
                worker = Worker(spec, segmenter)
                started()
                for image_id, path in pending:
                    _, line = worker.process(image_id, path)
                    ingest.line(line)
        finally:
            summary.labelled, summary.failed = ingest.labelled, ingest.failed
            summary.seconds = time.perf_counter() - start
        return summary
    finally:
        store.close()
