"""Exports read back with the field's readers (pycocotools, supervision) give the same instances.

A synthetic dataset made in the test: 6 small images, 2 classes, masks of known shape (a multi-part one, one
with a hole, a one-pixel one), a box-only instance, and every review state.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import yaml
from PIL import Image
from pycocotools.coco import COCO

from sam3studio.dataset.export import ExportOptions, export_dataset
from sam3studio.dataset.shapes import decode_brush_rle
from sam3studio.dataset.store import DatasetError, DatasetStore
from sam3studio.evaluation.data import load_coco_gt

W, H = 96, 72


def _rect(y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def _disc(cy, cx, r) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _instances(k: int) -> list[dict]:
    ring = _disc(36, 70, 14) & ~_disc(36, 70, 5)  # a hole
    two_parts = _rect(4, 16, 4, 20) | _rect(50, 66, 6, 26)
    dot = np.zeros((H, W), bool)
    dot[60, 90] = True
    rows = [{"class_id": 0, "mask": _rect(8 + k, 30 + k, 30, 52), "score": 0.9},
            {"class_id": 1, "mask": ring, "score": 0.6}]
    if k % 2 == 0:
        rows.append({"class_id": 1, "mask": two_parts, "score": 0.4})
    if k == 0:
        rows += [{"class_id": 0, "mask": dot, "score": 0.3}, {"class_id": 0, "box": [60, 2, 80, 12]}]
    return rows


STATES = ["accepted", "corrected", "accepted", "skipped", "unreviewed", "accepted"]


@pytest.fixture
def dataset(tmp_path) -> DatasetStore:
    store = DatasetStore.create(tmp_path / "ds", ["cat", "dog"])
    rng = np.random.default_rng(1)
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    paths = []
    for k in range(6):
        # Two images share the name a.png (in two folders): the export must keep both.
        path = folder / ("sub/a.png" if k == 1 else "a.png" if k == 0 else f"p{k}.jpg")
        Image.fromarray((rng.random((H, W, 3)) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    store.add_images((str(p), p.name) for p in paths)
    for k in range(6):
        store.set_size(k + 1, W, H)
        store.add_instances(k + 1, None, [{**row, "origin": "import"} for row in _instances(k)])
        store.set_state(k + 1, None, STATES[k])
    return store


def _stored(store: DatasetStore, image_id: int) -> list:
    return store.image(image_id).instances


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / max((a | b).sum(), 1)


def test_coco_rle_round_trip_is_exact(dataset, tmp_path):
    out = tmp_path / "coco"
    summary = export_dataset(dataset, out, ExportOptions("coco", split=(0.5, 0.25, 0.25), seed=1))
    # Reviewed only: accepted and corrected (4 images); skipped and unreviewed are left out.
    assert sum(summary.images.values()) == 4 and set(summary.images) <= {"train", "val", "test"}
    files = sorted(p.name for p in out.glob("*.json"))
    assert files == sorted(f"{s}.json" for s in summary.images)
    seen = set()
    for path in out.glob("*.json"):
        coco = COCO(str(path))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["cat", "dog"]
        for image in coco.loadImgs(coco.getImgIds()):
            seen.add(image["id"])
            assert (out / image["file_name"]).is_file() and image["file_name"].startswith(f"images/{path.stem}/")
            anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
            stored = _stored(dataset, image["id"])
            assert [a["id"] for a in anns] == [i.id for i in stored]
            for ann, inst in zip(anns, stored, strict=True):
                assert ann["category_id"] == inst.class_id + 1 and ann["iscrowd"] == 0
                if inst.counts is None:
                    assert "segmentation" not in ann and ann["bbox"] == [60, 2, 20, 10]
                else:
                    assert np.array_equal(coco.annToMask(ann).astype(bool), inst.mask())
                    x, y, w, h = ann["bbox"]
                    assert (x, y, x + w, y + h) == inst.box
        # The evaluator's reader takes it as it is (what `eval` and `finetune` read).
        assert load_coco_gt(path).images
    assert seen == {1, 2, 3, 6}
    # supervision reads the same instances.
    for path in out.glob("*.json"):
        ds = sv.DetectionDataset.from_coco(str(out), str(path), force_masks=True)
        for image_path, _, dets in ds:
            image_id = next(i["id"] for i in json.loads(path.read_text())["images"] if image_path.endswith(i["file_name"]))
            stored = [i for i in _stored(dataset, image_id) if i.counts is not None]
            assert len(dets) == len(_stored(dataset, image_id))
            for inst in stored:
                assert any(np.array_equal(m, inst.mask()) for m in dets.mask)


def test_coco_polygons_within_tolerance_and_include_unreviewed(dataset, tmp_path):
    out = tmp_path / "coco-poly"
    summary = export_dataset(dataset, out, ExportOptions("coco", split=(1, 0, 0), masks="polygon",
                                                         include_unreviewed=True))
    assert summary.images == {"train": 5}  # the skipped image is never exported
    coco = COCO(str(out / "train.json"))
    assert not (out / "val.json").exists() and not (out / "test.json").exists()
    for image_id in coco.getImgIds():
        for ann, inst in zip(coco.loadAnns(coco.getAnnIds(imgIds=image_id)), _stored(dataset, image_id), strict=True):
            assert isinstance(ann["segmentation"], list) and all(len(p) >= 6 for p in ann["segmentation"])
            if inst.counts is not None and inst.area > 20:
                assert _iou(coco.annToMask(ann).astype(bool), inst.mask()) > 0.8
    dot = next(a for a in coco.loadAnns(coco.getAnnIds(imgIds=1)) if a["area"] == 1)
    assert dot["segmentation"] == [[90, 60, 91, 60, 91, 61, 90, 61]]  # too small to trace: its box
    ring = next(a for a in coco.loadAnns(coco.getAnnIds(imgIds=1)) if a["id"] == _stored(dataset, 1)[1].id)
    assert len(ring["segmentation"]) == 1 and not coco.annToMask(ring)[36, 70]  # the hole is kept open


def test_yolo_segmentation_one_line_per_instance(dataset, tmp_path):
    out = tmp_path / "yolo"
    export_dataset(dataset, out, ExportOptions("yolo", split=(1, 0, 0), include_unreviewed=True))
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["train"] == "images/train" and data["val"] == "images/train" and data["names"] == {0: "cat", 1: "dog"}
    assert data["nc"] == 2
    names = sorted(p.name for p in (out / "images" / "train").iterdir())
    assert "a.png" not in names and {"a-1.png", "a-2.png"} <= set(names)  # same stem twice: ids make them unique
    total = 0
    for label in (out / "labels" / "train").glob("*.txt"):
        lines = label.read_text().splitlines()
        image_id = int(label.stem.split("-")[1]) if label.stem.startswith("a-") else int(label.stem[1:]) + 1
        assert len(lines) == len(_stored(dataset, image_id))  # exactly one line per instance
        for line in lines:
            values = line.split()
            assert values[0] in ("0", "1") and len(values) >= 7 and len(values) % 2 == 1
            assert all(0 <= float(v) <= 1 for v in values[1:])
        total += len(lines)
    assert total == sum(len(_stored(dataset, i)) for i in (1, 2, 3, 5, 6))
    ds = sv.DetectionDataset.from_yolo(str(out / "images" / "train"), str(out / "labels" / "train"),
                                       str(out / "data.yaml"), force_masks=True)
    for image_path, _, dets in ds:
        name = Path(image_path).stem
        image_id = int(name.split("-")[1]) if name.startswith("a-") else int(name[1:]) + 1
        stored = _stored(dataset, image_id)
        assert dets.class_id.tolist() == [i.class_id for i in stored]
        for mask, inst in zip(dets.mask, stored, strict=True):
            if inst.counts is not None and inst.area > 20:  # multi-part and holed masks included
                assert _iou(mask, inst.mask()) > 0.8, inst


def test_yolo_detect_boxes(dataset, tmp_path):
    out = tmp_path / "yolo-det"
    export_dataset(dataset, out, ExportOptions("yolo", split=(1, 0, 0), yolo_task="detect", images="link"))
    assert (out / "images" / "train" / "a-1.png").is_symlink()
    ds = sv.DetectionDataset.from_yolo(str(out / "images" / "train"), str(out / "labels" / "train"),
                                       str(out / "data.yaml"))
    n = 0
    for image_path, _, dets in ds:
        name = Path(image_path).stem
        image_id = int(name.split("-")[1]) if name.startswith("a-") else int(name[1:]) + 1
        stored = _stored(dataset, image_id)
        assert np.allclose(dets.xyxy, [i.box for i in stored], atol=0.01 * W)
        n += len(dets)
    assert n == sum(len(_stored(dataset, i)) for i in (1, 2, 3, 6))


def test_pascal_voc_xml_and_png_masks(dataset, tmp_path):
    out = tmp_path / "voc"
    summary = export_dataset(dataset, out, ExportOptions("voc", split=(0.5, 0.5, 0)))
    splits = {s: (out / "ImageSets" / "Main" / f"{s}.txt").read_text().split() for s in summary.images}
    assert sorted(sum(splits.values(), [])) == ["a-1", "a-2", "p2", "p5"]
    assert (out / "labels.txt").read_text().split() == ["background", "cat", "dog"]
    ds = sv.DetectionDataset.from_pascal_voc(str(out / "JPEGImages"), str(out / "Annotations"), force_masks=True)
    assert set(ds.classes) == {"cat", "dog"}
    for image_path, _, dets in ds:
        stem = Path(image_path).stem
        image_id = int(stem.split("-")[1]) if stem.startswith("a-") else int(stem[1:]) + 1
        stored = _stored(dataset, image_id)
        root = ET.parse(out / "Annotations" / f"{stem}.xml").getroot()
        assert [o.findtext("name") for o in root.findall("object")] == [i.class_name for i in stored]
        assert root.findtext("size/width") == str(W) and root.findtext("filename") == Path(image_path).name
        assert len(dets) == len(stored)
        objects = np.asarray(Image.open(out / "SegmentationObject" / f"{stem}.png"))
        classes = np.asarray(Image.open(out / "SegmentationClass" / f"{stem}.png"))
        for k, inst in enumerate(stored):
            mask = inst.mask() if inst.counts is not None else None
            if mask is not None:
                assert np.array_equal(objects == k + 1, mask)  # the masks do not overlap: exact
                assert (classes[mask] == inst.class_id + 1).all()


def test_label_studio_brush_rle_and_polygons(dataset, tmp_path):
    out = tmp_path / "ls"
    export_dataset(dataset, out, ExportOptions("labelstudio", split=(1, 0, 0)))
    tasks = json.loads((out / "tasks.json").read_text())
    assert isinstance(tasks, list) and len(tasks) == 4
    config = ET.parse(out / "label_config.xml").getroot()
    assert [lab.get("value") for lab in config.find("BrushLabels")] == ["cat", "dog"]
    for task in tasks:
        image_id = task["data"]["sam3studio_image_id"]
        assert task["data"]["image"].startswith("/data/local-files/?d=images/")
        assert (out / "images" / task["data"]["image"].rsplit("/", 1)[1]).is_file()
        (prediction,) = task["predictions"]
        results = prediction["result"]
        stored = _stored(dataset, image_id)
        assert len(results) == len(stored)
        for result, inst in zip(results, stored, strict=True):
            assert result["to_name"] == "image" and result["original_width"] == W
            if inst.counts is None:
                assert result["type"] == "rectanglelabels" and result["value"]["rectanglelabels"] == [inst.class_name]
                assert result["value"]["width"] == pytest.approx(100 * 20 / W)
            else:
                assert result["type"] == "brushlabels" and result["value"]["brushlabels"] == [inst.class_name]
                assert np.array_equal(decode_brush_rle(result["value"]["rle"], H, W), inst.mask())
    poly = tmp_path / "ls-poly"
    export_dataset(dataset, poly, ExportOptions("labelstudio", split=(1, 0, 0), masks="polygon"))
    result = json.loads((poly / "tasks.json").read_text())[0]["predictions"][0]["result"][0]
    assert result["type"] == "polygonlabels" and all(0 <= v <= 100 for p in result["value"]["points"] for v in p)


def test_cvat_coco_layout(dataset, tmp_path):
    out = tmp_path / "cvat"
    export_dataset(dataset, out, ExportOptions("cvat", split=(1, 0, 0)))
    coco = COCO(str(out / "annotations" / "instances_train.json"))
    for image in coco.loadImgs(coco.getImgIds()):
        assert "/" not in image["file_name"] and (out / "images" / "train" / image["file_name"]).is_file()
    anns = coco.loadAnns(coco.getAnnIds())
    assert len(anns) == sum(len(_stored(dataset, i)) for i in (1, 2, 3, 6))
    assert all(isinstance(a["segmentation"], list) for a in anns)  # polygons by default for CVAT
    out_rle = tmp_path / "cvat-rle"
    export_dataset(dataset, out_rle, ExportOptions("cvat", split=(1, 0, 0), masks="rle"))
    assert any(isinstance(a.get("segmentation"), dict)
               for a in json.loads((out_rle / "annotations" / "instances_train.json").read_text())["annotations"])


def test_export_folder_rules_and_missing_images(dataset, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("x")
    with pytest.raises(DatasetError, match="not empty; use --overwrite"):
        export_dataset(dataset, out, ExportOptions("coco"))
    Path(dataset.image(2).path).unlink()  # moved away
    summary = export_dataset(dataset, out, ExportOptions("coco", overwrite=True, split=(1, 0, 0)))
    assert not (out / "old.txt").exists() and summary.images == {"train": 3}
    assert summary.missing == [dataset.image(2).path]
    with pytest.raises(DatasetError, match="holds the dataset"):
        export_dataset(dataset, dataset.root, ExportOptions("coco", overwrite=True))
    with pytest.raises(DatasetError, match="holds the dataset"):
        export_dataset(dataset, dataset.root.parent, ExportOptions("coco", overwrite=True))
    for kwargs, error in (({"format": "tfrecord"}, "unknown --format"), ({"format": "yolo", "images": "none"}, "needs"),
                          ({"format": "voc", "masks": "rle"}, "no RLE"), ({"format": "coco", "images": "zip"}, "--images")):
        with pytest.raises(DatasetError, match=error):
            ExportOptions(**kwargs)


def test_images_none_refers_to_the_files(dataset, tmp_path):
    out = tmp_path / "none"
    export_dataset(dataset, out, ExportOptions("coco", split=(1, 0, 0), images="none"))
    data = json.loads((out / "train.json").read_text())
    assert not (out / "images").exists()
    assert all(Path(i["file_name"]).is_absolute() and Path(i["file_name"]).is_file() for i in data["images"])
