"""`import_labels`: start (or extend) a dataset from labels another tool made: a COCO instances file or a YOLO
``data.yaml``.

COCO is read by `sam3studio.evaluation.data.load_coco_gt` (the same checked reader ``eval`` uses:
polygons become RLE, mask sizes are checked against the image sizes); YOLO by supervision's
``DetectionDataset.from_yolo`` per split (segmentation lines become masks, box lines box-only
instances). Every mask is decoded with our checked RLE reader and encoded again before it is stored.

Idempotent: an image already holding imported instances, or already reviewed, is left as it is, so
importing the same file twice adds nothing. Imported instances have origin ``import`` and the score
the file gives (COCO ``score``), else none.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

from sam3studio.dataset.store import DatasetError, DatasetStore, mask_box
from sam3studio.errors import InputError
from sam3studio.results import mask_to_rle, rle_to_mask

__all__ = ["IMPORT_FORMATS", "ImportSummary", "detect_import_format", "import_labels"]

IMPORT_FORMATS = ("auto", "coco", "yolo")
_QUARTER_TURNS = {5, 6, 7, 8}  # EXIF orientations that swap width and height


@dataclass
class ImportSummary:
    dataset: Path
    format: str
    classes: list[str]
    images_added: int = 0
    images_labelled: int = 0  # images that received instances in this import
    images_kept: int = 0  # images left as they were (reviewed, or imported before)
    instances: int = 0
    crowd_skipped: int = 0
    missing: list[str] = field(default_factory=list)  # image files not found (imported; shown as missing)

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def detect_import_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "coco"
    if suffix in (".yaml", ".yml"):
        return "yolo"
    raise DatasetError(f"{path}: cannot tell the format from the name; give --format coco (a COCO .json) "
                       "or --format yolo (a data.yaml)")


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) as the decoded image has them (EXIF orientation applied), from the header only."""
    with Image.open(path) as im:
        width, height = im.size
        orientation = im.getexif().get(0x0112)
    return (height, width) if orientation in _QUARTER_TURNS else (width, height)


def _store_image(store: DatasetStore, summary: ImportSummary, path: str, name: str, width: int, height: int,
                 instances: list[dict[str, Any]]) -> None:
    summary.images_added += store.add_images([(path, name)])
    image_id = store.image_id_of(path)
    if image_id is None:  # pragma: no cover - just added
        raise DatasetError(f"{path}: could not be added")
    if store.store_imported(image_id, width, height, instances):
        summary.images_labelled += 1
        summary.instances += len(instances)
    else:
        summary.images_kept += 1
    if not Path(path).is_file():
        summary.missing.append(path)


def _coco(file: Path, images: Path | None, store: DatasetStore, summary: ImportSummary,
          on_image: Callable[[], None] | None) -> None:
    from sam3studio.evaluation.data import load_coco_gt

    gt = load_coco_gt(file, images)
    # The checked reader keeps the annotations in file order but not their scores (pre-labels may have them).
    raw = json.loads(file.read_text(encoding="utf-8")).get("annotations") or []
    scores = [a.get("score") if isinstance(a.get("score"), (int, float)) else None for a in raw]
    for ann, score in zip(gt.annotations, scores, strict=False):
        ann["score"] = score
    names = [c.name for c in gt.categories]
    store.add_classes(names)
    summary.classes = store.classes
    class_of = {c.id: store.class_id(c.name) for c in gt.categories}
    by_image: dict[int, list[dict[str, Any]]] = {im.id: [] for im in gt.images}
    for ann in gt.annotations:
        if ann.get("iscrowd"):
            summary.crowd_skipped += 1
            continue
        by_image[ann["image_id"]].append(ann)
    for im in gt.images:
        instances = []
        for ann in by_image[im.id]:
            where = f"{file}: annotation {ann['id']} of image {im.file_name}"
            item: dict[str, Any] = {"class_id": class_of[ann["category_id"]], "score": ann.get("score"), "origin": "import"}
            segm = ann.get("segmentation")
            if segm:
                try:
                    mask = rle_to_mask(segm, (im.height, im.width))
                except ValueError as exc:
                    raise DatasetError(f"{where}: {exc}") from None
                if not mask.any():
                    continue
                item.update(counts=mask_to_rle(mask)["counts"], box=mask_box(mask), area=int(mask.sum()))
            else:
                x, y, w, h = ann["bbox"]
                item.update(store.instance_fields(None, im.width, im.height, (x, y, x + w, y + h)))
            instances.append(item)
        path = os.path.abspath(gt.image_path(im))
        _store_image(store, summary, path, im.file_name, im.width, im.height, instances)
        if on_image is not None:
            on_image()


def _yolo_splits(data_yaml: Path) -> tuple[list[str], list[tuple[Path, Path]]]:
    """Class names and the (images folder, labels folder) of each split a data.yaml names."""
    try:
        data = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DatasetError(f"cannot import {data_yaml}: not a readable YAML file ({exc})") from None
    if not isinstance(data, dict) or "names" not in data:
        raise DatasetError(f"cannot import {data_yaml}: a YOLO data.yaml needs 'names'")
    names = data["names"]
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names, key=int)]
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise DatasetError(f"cannot import {data_yaml}: 'names' must list class names")
    base = Path(data.get("path") or data_yaml.parent)
    if not base.is_absolute():
        base = data_yaml.parent / base
    splits = []
    for key in ("train", "val", "test"):
        entry = data.get(key)
        if not entry:
            continue
        for rel in entry if isinstance(entry, list) else [entry]:
            folder = (base / str(rel)).resolve()
            if not folder.is_dir():
                raise DatasetError(f"cannot import {data_yaml}: {key} {folder} is not a folder of images "
                                   "(image list files are not supported)")
            parts = list(folder.parts)
            if "images" not in parts:
                raise DatasetError(f"cannot import {data_yaml}: {folder} has no 'images' folder to find 'labels' beside")
            k = len(parts) - 1 - parts[::-1].index("images")
            splits.append((folder, Path(*parts[:k], "labels", *parts[k + 1:])))
    if not splits:
        raise DatasetError(f"cannot import {data_yaml}: it names no train, val or test folder")
    return names, list(dict.fromkeys(splits))


def _yolo(file: Path, store: DatasetStore, summary: ImportSummary, on_image: Callable[[], None] | None) -> None:
    import supervision as sv

    names, splits = _yolo_splits(file)
    store.add_classes(names)
    summary.classes = store.classes
    class_ids = [store.class_id(n) for n in names]
    for images_dir, labels_dir in splits:
        try:
            ds = sv.DetectionDataset.from_yolo(str(images_dir), str(labels_dir), str(file))
        except (ValueError, OSError) as exc:
            raise DatasetError(f"cannot import {file}: {exc}") from None
        for image_path in ds.image_paths:
            dets = ds.annotations[image_path]
            width, height = _image_size(Path(image_path))
            instances = []
            for k in range(len(dets)):
                item: dict[str, Any] = {"class_id": class_ids[int(dets.class_id[k])], "score": None, "origin": "import"}
                mask = dets.mask[k] if dets.mask is not None else None
                if mask is not None and mask.shape == (height, width) and mask.any():
                    item.update(counts=mask_to_rle(mask)["counts"], box=mask_box(mask), area=int(mask.sum()))
                else:
                    item.update(store.instance_fields(None, width, height, dets.xyxy[k]))
                instances.append(item)
            name = Path(os.path.relpath(image_path, images_dir.parent)).as_posix()
            _store_image(store, summary, os.path.abspath(image_path), name, width, height, instances)
            if on_image is not None:
                on_image()


def import_labels(file: Path, out: Path, *, fmt: str = "auto", images: Path | None = None,
                  on_image: Callable[[], None] | None = None) -> ImportSummary:
    """Import COCO (``file`` a .json; images under ``images``, default the file's folder) or YOLO (``file``
    a data.yaml) labels into the dataset at ``out`` (created when missing)."""
    file = Path(file)
    if fmt not in IMPORT_FORMATS:
        raise DatasetError(f"unknown import --format {fmt!r}; choose one of {', '.join(IMPORT_FORMATS)}")
    if not file.is_file():
        raise DatasetError(f"cannot import {file}: no such file")
    if images is not None and not Path(images).is_dir():
        raise DatasetError(f"--images {images}: no such folder")
    fmt = detect_import_format(file) if fmt == "auto" else fmt
    with DatasetStore.create(out) as store:
        summary = ImportSummary(store.root, fmt, store.classes)
        try:
            if fmt == "coco":
                _coco(file, images, store, summary, on_image)
            else:
                _yolo(file, store, summary, on_image)
        except DatasetError:
            raise
        except InputError as exc:  # the COCO reader's one-sentence errors
            raise DatasetError(f"cannot import: {exc}") from None
    return summary
