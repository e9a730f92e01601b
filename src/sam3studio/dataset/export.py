"""`export_dataset`: a dataset's reviewed images and instances in the format a trainer or an annotation tool reads.

Formats (``--format``), each with the split names ``train``, ``val`` and ``test`` (an empty split writes nothing):

- ``coco``: ``DIR/{split}.json`` (COCO instances; masks as COCO RLE, or polygons with ``--polygons``) and
  ``DIR/images/{split}/``; ``file_name`` is relative to ``DIR``, so ``sam3studio eval DIR/val.json`` and
  ``sam3studio finetune DIR/train.json --val DIR/val.json`` find the images without ``--images``.
- ``yolo``: the Ultralytics layout, ``images/{split}/``, ``labels/{split}/*.txt``, ``data.yaml``; one
  line per instance (segmentation polygons, or boxes with ``--yolo-task detect``).
- ``voc``: Pascal VOC, ``JPEGImages/``, ``Annotations/*.xml`` (one ``<object>`` per instance: box and
  polygon), ``SegmentationObject/*.png`` and ``SegmentationClass/*.png`` (palette PNGs: instance k of the
  XML is value k, class c is c + 1), ``ImageSets/{Main,Segmentation}/{split}.txt``, ``labels.txt``.
- ``labelstudio``: ``tasks.json``, a list of tasks whose predictions hold each instance as a
  ``brushlabels`` result in Label Studio's brush RLE (or ``polygonlabels`` with ``--polygons``; box-only
  instances as ``rectanglelabels``), ``label_config.xml`` (the labelling interface that reads them) and
  ``images/``.
- ``cvat``: CVAT's "COCO 1.0" import layout, ``annotations/instances_{split}.json`` and ``images/{split}/``
  (``file_name`` is the bare image name, as CVAT matches it); polygons by default, RLE with ``--rle``.

What comes from libraries: COCO RLE from pycocotools; contours with holes bridged
(``approximate_mask_with_polygons``), YOLO lines (``detections_to_yolo_annotations`` for boxes,
``object_to_yolo`` for a polygon) and VOC ``<object>`` elements (``object_to_pascal_voc``) from
supervision. Written here by hand: the file layouts (supervision's ``DetectionDataset.as_*`` write bare
file names, decode and re-encode every image, number ids from 1, and write a mask of several parts as
several YOLO lines or VOC objects, where we need one per instance), the COCO annotations (supervision
writes RLE only as ``iscrowd: 1``, which evaluators ignore, and polygons without bridging holes, which
COCO readers then fill), one polygon per instance (`shapes.single_polygon`), Ultralytics' ``data.yaml``
(supervision's holds only ``names``), the VOC PNG masks, and all of Label Studio and CVAT (no library of
ours writes them).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv
import yaml
from PIL import Image
from supervision.dataset.formats.pascal_voc import object_to_pascal_voc
from supervision.dataset.formats.yolo import detections_to_yolo_annotations, object_to_yolo

from sam3studio import __version__
from sam3studio.dataset.shapes import box_polygon, brush_rle, mask_polygons, single_polygon
from sam3studio.dataset.splits import SPLITS, assign_splits
from sam3studio.dataset.store import DB_NAME, REVIEWED, DatasetError, DatasetStore, StoredImage, StoredInstance

__all__ = ["FORMATS", "IMAGE_MODES", "ExportOptions", "ExportSummary", "export_dataset"]

FORMATS = ("coco", "yolo", "voc", "labelstudio", "cvat")
IMAGE_MODES = ("copy", "link", "none")
MASK_MODES = ("auto", "rle", "polygon")
YOLO_TASKS = ("segment", "detect")
DEFAULT_MASKS = {"coco": "rle", "cvat": "polygon", "labelstudio": "rle", "yolo": "polygon", "voc": "polygon"}
LS_IMAGE_PREFIX = "/data/local-files/?d=images/"


@dataclass(frozen=True)
class ExportOptions:
    """How to export: format, split fractions and seed, which images, mask encoding, images copied or not."""

    format: str
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    include_unreviewed: bool = False
    overwrite: bool = False
    masks: str = "auto"  # rle or polygon (auto: the format's default, DEFAULT_MASKS)
    yolo_task: str = "segment"
    images: str = "copy"  # copy, link (symlink) or none (refer to the files where they are)
    image_url_prefix: str = LS_IMAGE_PREFIX  # Label Studio: what precedes the image name in data.image

    def __post_init__(self) -> None:
        checks = (("--format", self.format, FORMATS), ("--images", self.images, IMAGE_MODES),
                  ("--masks", self.masks, MASK_MODES), ("--yolo-task", self.yolo_task, YOLO_TASKS))
        for flag, value, allowed in checks:
            if value not in allowed:
                raise DatasetError(f"unknown {flag} {value!r}; choose one of {', '.join(allowed)}")
        if self.format == "yolo" and self.images == "none":
            raise DatasetError("--format yolo needs the images next to the labels: use --images copy or link")
        if self.format in ("yolo", "voc") and self.masks == "rle":
            raise DatasetError(f"--format {self.format} has no RLE masks (YOLO and VOC XML hold polygons)")

    @property
    def mask_mode(self) -> str:
        return DEFAULT_MASKS[self.format] if self.masks == "auto" else self.masks

    @property
    def states(self) -> tuple[str, ...]:
        return (*REVIEWED, "unreviewed") if self.include_unreviewed else REVIEWED


@dataclass
class ExportSummary:
    """What an export wrote: images and instances per split, images left out, the main files."""

    format: str
    out: Path
    images: dict[str, int] = field(default_factory=dict)
    instances: dict[str, int] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # image files not found (left out)
    unread: int = 0  # selected images never read (size unknown: no label run or import reached them)
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class _Item:
    """One image to export: where it goes and what it is called there."""

    image: StoredImage
    split: str
    name: str  # unique file name in the export (stems unique too)


# ---------------------------------------------------------------------------- shared helpers
def _export_names(selected: Sequence[tuple[int, str]]) -> dict[int, str]:
    """A file name per image: its own, unless two selected images share a stem (then ``stem-<id>.ext``)."""
    stems = Counter(Path(p).stem.casefold() for _, p in selected)
    out = {}
    for image_id, path in selected:
        p = Path(path)
        out[image_id] = p.name if stems[p.stem.casefold()] == 1 else f"{p.stem}-{image_id}{p.suffix}"
    return out


def _prepare_out(out: Path, store: DatasetStore, overwrite: bool) -> None:
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise DatasetError(f"--out {out}: exists and is not a folder")
    resolved = out.resolve()
    if resolved == store.root or store.root.is_relative_to(resolved) or (resolved / DB_NAME).exists():
        raise DatasetError(f"--out {out} holds the dataset itself; export into another folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DatasetError(f"--out {out} is not empty; use --overwrite to replace what is there, or another folder")
        for child in out.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _place_image(src: str, dst: Path, mode: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "link":
        os.symlink(os.path.abspath(src), dst)
    else:
        shutil.copyfile(src, dst)


def _mask(inst: StoredInstance) -> np.ndarray | None:
    return inst.mask()


def _filled(inst: StoredInstance) -> np.ndarray:
    """The instance's mask, or its box filled for a box-only instance."""
    mask = inst.mask()
    if mask is not None:
        return mask
    out = np.zeros((inst.height, inst.width), bool)
    x1, y1, x2, y2 = (int(round(v)) for v in inst.box)
    out[y1:y2, x1:x2] = True
    return out


def coco_polygons(inst: StoredInstance) -> list[list[float]]:
    """COCO polygons of an instance: one per part of its mask, holes bridged to the outline (a COCO file has no
    holes otherwise: its readers fill each polygon and merge them), in COCO's continuous coordinates (pixel i spans
    [i, i + 1], so contour points through pixel centres move by 0.5); the box for a box-only or tiny mask."""
    mask = inst.mask()
    parts = mask_polygons(mask) if mask is not None else []
    if not parts:
        return [box_polygon(inst.box).ravel().round(2).tolist()]
    return [(np.asarray(p, np.float64) + 0.5).ravel().round(2).tolist() for p in parts]


def _xywh(box: Sequence[float]) -> list[float]:
    x1, y1, x2, y2 = box
    return [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)]


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")


# ---------------------------------------------------------------------------- COCO and CVAT
class _CocoWriter:
    """One COCO instances file per split. ``cvat``: CVAT's COCO 1.0 layout (annotations/instances_<split>.json,
    bare file names)."""

    def __init__(self, out: Path, classes: list[str], opts: ExportOptions, dataset: str) -> None:
        self.out, self.opts, self.cvat = out, opts, opts.format == "cvat"
        self.polygons = opts.mask_mode == "polygon"
        self.categories = [{"id": k + 1, "name": name, "supercategory": ""} for k, name in enumerate(classes)]
        self.info = {"description": f"exported by sam3studio {__version__} from {dataset}", "version": "1",
                     "date_created": time.strftime("%Y-%m-%d %H:%M:%S")}
        self.splits: dict[str, dict[str, list[dict[str, Any]]]] = {}

    def image_path(self, item: _Item) -> Path | None:
        return None if self.opts.images == "none" else self.out / "images" / item.split / item.name

    def add(self, item: _Item) -> None:
        im = item.image
        if self.cvat:
            file_name = item.name
        elif self.opts.images == "none":
            file_name = os.path.abspath(im.path)
        else:
            file_name = f"images/{item.split}/{item.name}"
        split = self.splits.setdefault(item.split, {"images": [], "annotations": []})
        split["images"].append({"id": im.id, "file_name": file_name, "width": im.width, "height": im.height})
        split["annotations"] += self._polygon_annotations(im) if self.polygons else self._rle_annotations(im)

    @staticmethod
    def _rle_annotations(im: StoredImage) -> list[dict[str, Any]]:
        out = []
        for inst in im.instances:
            ann = {"id": inst.id, "image_id": im.id, "category_id": inst.class_id + 1, "bbox": _xywh(inst.box),
                   "area": float(inst.area), "iscrowd": 0}
            if inst.rle is not None:
                ann["segmentation"] = inst.rle
            out.append(ann)
        return out

    @staticmethod
    def _polygon_annotations(im: StoredImage) -> list[dict[str, Any]]:
        out = []
        for ann, inst in zip(_CocoWriter._rle_annotations(im), im.instances, strict=True):
            ann["segmentation"] = coco_polygons(inst)
            out.append(ann)
        return out

    def finish(self) -> list[str]:
        files = []
        for split in SPLITS:
            body = self.splits.get(split)
            if not body or not body["images"]:
                continue
            path = self.out / "annotations" / f"instances_{split}.json" if self.cvat else self.out / f"{split}.json"
            _write_json(path, {"info": self.info, "licenses": [], "images": body["images"],
                               "annotations": body["annotations"], "categories": self.categories})
            files.append(str(path))
        return files


# ---------------------------------------------------------------------------- YOLO
class _YoloWriter:
    """Ultralytics layout; exactly one line per instance."""

    def __init__(self, out: Path, classes: list[str], opts: ExportOptions, dataset: str) -> None:
        self.out, self.classes, self.opts = out, classes, opts
        self.used: set[str] = set()

    def image_path(self, item: _Item) -> Path:
        return self.out / "images" / item.split / item.name

    def lines(self, im: StoredImage) -> list[str]:
        shape = (im.height, im.width)
        if self.opts.yolo_task == "detect":
            if not im.instances:
                return []
            dets = sv.Detections(xyxy=np.array([i.box for i in im.instances], np.float32),
                                 class_id=np.array([i.class_id for i in im.instances], int))
            return detections_to_yolo_annotations(dets, image_shape=shape)
        return [object_to_yolo(np.asarray(inst.box, np.float32), inst.class_id, shape,
                               polygon=single_polygon(inst.mask(), inst.box)) for inst in im.instances]

    def add(self, item: _Item) -> None:
        self.used.add(item.split)
        path = self.out / "labels" / item.split / (Path(item.name).stem + ".txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = self.lines(item.image)
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    def finish(self) -> list[str]:
        data: dict[str, Any] = {split: f"images/{split}" for split in SPLITS if split in self.used}
        if "val" not in data and "train" in data:  # Ultralytics requires a val entry
            data["val"] = data["train"]
        data.update(nc=len(self.classes), names=dict(enumerate(self.classes)))
        path = self.out / "data.yaml"
        path.write_text("# Ultralytics dataset written by sam3studio; paths are relative to this file's folder\n"
                        + yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
        return [str(path)]


# ---------------------------------------------------------------------------- Pascal VOC
def _palette() -> list[int]:
    """The VOC colour map (bit-interleaved RGB per index), index 255 white."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    pal[255 * 3:] = [255, 255, 255]
    return pal


class _VocWriter:
    """Pascal VOC: one XML per image with one ``<object>`` per instance, and instance / class PNG masks."""

    MAX_OBJECTS = 254  # instance values 1..254 in an 8-bit PNG (255 is VOC's "void")

    def __init__(self, out: Path, classes: list[str], opts: ExportOptions, dataset: str) -> None:
        self.out, self.classes, self.opts = out, classes, opts
        self.sets: dict[str, list[str]] = {}
        self.palette = _palette()

    def image_path(self, item: _Item) -> Path | None:
        return None if self.opts.images == "none" else self.out / "JPEGImages" / item.name

    def _xml(self, item: _Item) -> bytes:
        im = item.image
        root = ET.Element("annotation")
        ET.SubElement(root, "folder").text = "JPEGImages"
        ET.SubElement(root, "filename").text = item.name
        if self.opts.images == "none":
            ET.SubElement(root, "path").text = os.path.abspath(im.path)
        ET.SubElement(ET.SubElement(root, "source"), "database").text = "sam3studio"
        size = ET.SubElement(root, "size")
        for tag, value in (("width", im.width), ("height", im.height), ("depth", 3)):
            ET.SubElement(size, tag).text = str(value)
        ET.SubElement(root, "segmented").text = "1" if im.instances else "0"
        for inst in im.instances:
            obj = object_to_pascal_voc(np.asarray(inst.box, np.float64), inst.class_name,
                                       polygon=single_polygon(inst.mask(), inst.box))
            for tag, value in (("pose", "Unspecified"), ("truncated", "0"), ("difficult", "0")):
                ET.SubElement(obj, tag).text = value
            root.append(obj)
        ET.indent(root)
        return ET.tostring(root, encoding="utf-8", xml_declaration=True)

    def _pngs(self, item: _Item, stem: str) -> None:
        im = item.image
        objects = np.zeros((im.height, im.width), np.uint8)
        classes = np.zeros((im.height, im.width), np.uint8)
        # Larger instances first, so a small object lying on a large one stays visible.
        order = sorted(range(len(im.instances)), key=lambda k: -im.instances[k].area)
        for k in order:
            if k + 1 > self.MAX_OBJECTS:
                continue
            inst = im.instances[k]
            mask = _filled(inst)
            objects[mask] = k + 1
            classes[mask] = inst.class_id + 1
        for folder, arr in (("SegmentationObject", objects), ("SegmentationClass", classes)):
            png = Image.fromarray(arr, mode="P")
            png.putpalette(self.palette)
            path = self.out / folder / f"{stem}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            png.save(path, optimize=False)

    def add(self, item: _Item) -> None:
        stem = Path(item.name).stem
        path = self.out / "Annotations" / f"{stem}.xml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self._xml(item))
        self._pngs(item, stem)
        self.sets.setdefault(item.split, []).append(stem)

    def finish(self) -> list[str]:
        for split, stems in self.sets.items():
            for kind in ("Main", "Segmentation"):
                path = self.out / "ImageSets" / kind / f"{split}.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("".join(s + "\n" for s in stems), encoding="utf-8")
        labels = self.out / "labels.txt"
        labels.write_text("".join(f"{name}\n" for name in ["background", *self.classes]), encoding="utf-8")
        return [str(self.out / "Annotations"), str(labels)]


# ---------------------------------------------------------------------------- Label Studio
class _LabelStudioWriter:
    """Label Studio tasks with the instances as predictions (brush RLE or polygons), and the labelling config."""

    def __init__(self, out: Path, classes: list[str], opts: ExportOptions, dataset: str) -> None:
        self.out, self.classes, self.opts = out, classes, opts
        self.tasks: list[dict[str, Any]] = []
        self.kind = "polygonlabels" if opts.mask_mode == "polygon" else "brushlabels"

    def image_path(self, item: _Item) -> Path | None:
        return None if self.opts.images == "none" else self.out / "images" / item.name

    def _result(self, inst: StoredInstance, w: int, h: int) -> dict[str, Any]:
        base = {"id": f"i{inst.id}", "to_name": "image", "original_width": w, "original_height": h,
                "image_rotation": 0, "origin": "prediction"}
        if inst.score is not None:
            base["score"] = round(float(inst.score), 6)
        mask = inst.mask()
        if mask is None:
            x1, y1, x2, y2 = inst.box
            return {**base, "from_name": "box", "type": "rectanglelabels",
                    "value": {"x": 100 * x1 / w, "y": 100 * y1 / h, "width": 100 * (x2 - x1) / w,
                              "height": 100 * (y2 - y1) / h, "rotation": 0, "rectanglelabels": [inst.class_name]}}
        if self.kind == "brushlabels":
            return {**base, "from_name": "label", "type": "brushlabels",
                    "value": {"format": "rle", "rle": brush_rle(mask), "brushlabels": [inst.class_name]}}
        poly = single_polygon(mask, inst.box)
        shift = 0.5 if mask is not None and mask.any() else 0.0  # contour points are pixel centres
        points = [[round(100 * (float(x) + shift) / w, 4), round(100 * (float(y) + shift) / h, 4)] for x, y in poly]
        return {**base, "from_name": "label", "type": "polygonlabels",
                "value": {"points": points, "closed": True, "polygonlabels": [inst.class_name]}}

    def add(self, item: _Item) -> None:
        im = item.image
        image = os.path.abspath(im.path) if self.opts.images == "none" else self.opts.image_url_prefix + item.name
        results = [self._result(inst, im.width, im.height) for inst in im.instances]
        scores = [i.score for i in im.instances if i.score is not None]
        prediction = {"model_version": f"sam3studio-{__version__}", "result": results}
        if scores:
            prediction["score"] = round(float(np.mean(scores)), 6)
        self.tasks.append({"data": {"image": image, "split": item.split, "review_state": im.state,
                                    "sam3studio_image_id": im.id},
                           "predictions": [prediction]})

    def finish(self) -> list[str]:
        tasks = self.out / "tasks.json"
        _write_json(tasks, self.tasks)
        tag = "PolygonLabels" if self.kind == "polygonlabels" else "BrushLabels"
        root = ET.Element("View")
        ET.SubElement(root, "Image", name="image", value="$image", zoom="true")
        for control, name in ((tag, "label"), ("RectangleLabels", "box")):
            labels = ET.SubElement(root, control, name=name, toName="image")
            for cls in self.classes:
                ET.SubElement(labels, "Label", value=cls)
        ET.indent(root)
        config = self.out / "label_config.xml"
        config.write_bytes(ET.tostring(root, encoding="utf-8"))
        return [str(tasks), str(config)]


_WRITERS = {"coco": _CocoWriter, "cvat": _CocoWriter, "yolo": _YoloWriter, "voc": _VocWriter,
            "labelstudio": _LabelStudioWriter}


def export_dataset(store: DatasetStore, out: Path, opts: ExportOptions,
                   on_image: Callable[[], None] | None = None) -> ExportSummary:
    """Write the dataset's selected images (reviewed ones; with ``include_unreviewed`` the unreviewed too;
    never the skipped ones) into ``out`` in ``opts.format``. Missing image files are left out and listed."""
    start = time.perf_counter()
    out = Path(out).expanduser()
    _prepare_out(out, store, opts.overwrite)
    summary = ExportSummary(opts.format, out)
    selected = store.image_paths(opts.states)
    present = []
    for image_id, path in selected:
        if opts.images != "none" and not Path(path).is_file():
            summary.missing.append(path)
        else:
            present.append((image_id, path))
    names = _export_names(present)
    splits = assign_splits([i for i, _ in present], opts.split, opts.seed)
    writer = _WRITERS[opts.format](out, store.classes, opts, str(store.root))
    for image in store.iter_images(ids=[i for i, _ in present]):
        if image.width is None or image.height is None:
            summary.unread += 1
            continue
        item = _Item(image, splits[image.id], names[image.id])
        dst = writer.image_path(item)
        try:
            if dst is not None:
                _place_image(image.path, dst, opts.images)
        except FileNotFoundError:  # gone since it was listed
            summary.missing.append(image.path)
            continue
        writer.add(item)
        summary.images[item.split] = summary.images.get(item.split, 0) + 1
        summary.instances[item.split] = summary.instances.get(item.split, 0) + len(image.instances)
        if on_image is not None:
            on_image()
    summary.files = writer.finish()
    summary.seconds = time.perf_counter() - start
    return summary
