"""`sam3studio dataset label | export | import | info | review`: the independent check rehearsed, and one-line errors."""

from __future__ import annotations

import glob
import json
import xml.etree.ElementTree as ET

import pytest
from pycocotools.coco import COCO
from typer.testing import CliRunner

from sam3studio.cli.app import app
from test_dataset import make_images

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, tiny_checkpoint):
    """`dataset label DIR --classes "cat, dog" --out DATASET --model CKPT --threshold 0.01` on images of its own."""
    root = tmp_path_factory.mktemp("cli")
    make_images(root / "imgs", 3, size=(80, 60), suffix=".jpg")
    make_images(root / "imgs" / "more", 2, size=(50, 70))
    result = invoke("dataset", "label", root / "imgs", "--classes", "cat, dog", "--out", root / "DATASET",
                    "--model", tiny_checkpoint, "--threshold", "0.01", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "5 images (5 new); labelled 5, failed 0" in result.output
    return root


def test_label_then_export_every_format(labelled):
    """What the independent check does, for coco, yolo, voc and labelstudio."""
    root = labelled
    for fmt in ("coco", "yolo", "voc", "labelstudio"):
        result = invoke("dataset", "export", root / "DATASET", "--format", fmt, "--out", root / f"OUT-{fmt}",
                        "--include-unreviewed")
        assert result.exit_code == 0, result.output
        assert f"Exported 5 images as {fmt}" in result.output
    n_coco = 0
    for path in glob.glob(str(root / "OUT-coco" / "*.json")):
        coco = COCO(path)
        for ann in coco.loadAnns(coco.getAnnIds()):
            image = coco.loadImgs(ann["image_id"])[0]
            assert coco.annToMask(ann).shape == (image["height"], image["width"])
            n_coco += 1
    assert n_coco > 0
    n_yolo = 0
    for path in glob.glob(str(root / "OUT-yolo" / "labels" / "*" / "*.txt")):
        for line in open(path):
            values = line.split()
            assert values[0] in ("0", "1") and all(0 <= float(v) <= 1 for v in values[1:])
            n_yolo += 1
    assert n_yolo == n_coco
    n_voc = sum(len(ET.parse(p).getroot().findall("object")) for p in glob.glob(str(root / "OUT-voc" / "Annotations" / "*.xml")))
    assert n_voc == n_coco
    tasks = json.loads((root / "OUT-labelstudio" / "tasks.json").read_text())
    assert isinstance(tasks, list) and len(tasks) == 5 and all("predictions" in t for t in tasks)
    assert sum(len(t["predictions"][0]["result"]) for t in tasks) == n_coco
    # Without --include-unreviewed nothing is reviewed yet: an empty export that says why.
    result = invoke("dataset", "export", root / "DATASET", "--format", "coco", "--out", root / "none")
    assert result.exit_code == 0 and "No image was accepted or corrected" in result.output
    assert "0 of 5 reviewed" in invoke("dataset", "info", root / "DATASET").output


def test_label_again_resumes_with_nothing_to_do(labelled, tiny_checkpoint):
    result = invoke("dataset", "label", labelled / "imgs", "--classes", "cat, dog", "--out", labelled / "DATASET",
                    "--model", tiny_checkpoint, "--device", "cpu")
    assert result.exit_code == 0 and "0 new); labelled 0" in result.output, result.output


def test_one_line_errors(labelled, tmp_path):
    ds = labelled / "DATASET"
    assert "invalid class list" in one_line_error(invoke("dataset", "label", labelled / "imgs", "--classes", " , ",
                                                         "--out", tmp_path / "d"))
    assert "listed twice" in one_line_error(invoke("dataset", "label", labelled / "imgs", "--classes", "cat,cat",
                                                   "--out", tmp_path / "d"))
    assert "unknown --format 'tfrecord'" in one_line_error(invoke("dataset", "export", ds, "--format", "tfrecord",
                                                                  "--out", tmp_path / "o"))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert "--overwrite" in one_line_error(invoke("dataset", "export", ds, "--format", "coco", "--out", tmp_path / "full"))
    assert "--split" in one_line_error(invoke("dataset", "export", ds, "--format", "coco", "--split", "0.5,0.2",
                                              "--out", tmp_path / "o"))
    assert "not a dataset" in one_line_error(invoke("dataset", "export", tmp_path, "--format", "coco", "--out",
                                                    tmp_path / "o"))
    bad = tmp_path / "labels.json"
    bad.write_text("{broken")
    assert "malformed JSON" in one_line_error(invoke("dataset", "import", bad, "--out", tmp_path / "d2"))
    assert "no such file" in one_line_error(invoke("dataset", "import", tmp_path / "nope.json", "--out", tmp_path / "d2"))
    assert "not a dataset" in one_line_error(invoke("dataset", "review", tmp_path))


def test_import_then_export_round_trip(labelled, tmp_path):
    """COCO out, COCO in: a new dataset with the same images and instances."""
    src = tmp_path / "coco"
    assert invoke("dataset", "export", labelled / "DATASET", "--format", "coco", "--out", src, "--include-unreviewed",
                  "--split", "1").exit_code == 0
    train = src / "train.json"
    result = invoke("dataset", "import", train, "--out", tmp_path / "again")
    assert result.exit_code == 0, result.output
    n = len(json.loads(train.read_text())["annotations"])
    assert f"5 new images, {n} instances on 5 image(s)" in result.output
