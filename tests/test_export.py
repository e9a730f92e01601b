"""Export: format parsing, output paths, writers, atomicity, slugs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam3studio import export
from sam3studio.export import (
    DEFAULT_FORMATS,
    FORMATS,
    is_complete,
    output_paths,
    parse_formats,
    safe_name,
    write_outputs,
)
from sam3studio.results import PromptResult, Segmentation

H, W = 30, 40


def make_seg(n_per_prompt=(1, 1), prompts=("red car", "红色 汽车"), height=H, width=W) -> Segmentation:
    """Instance ``i`` is a 1-px-high horizontal bar on row ``i``, scores descending."""
    n = sum(n_per_prompt)
    assert n <= height
    masks = np.zeros((n, height, width), bool)
    masks[np.arange(n), np.arange(n), 2 : width - 2] = True
    boxes = np.array([(2, i, width - 2, i + 1) for i in range(n)], np.float32).reshape(-1, 4)
    return Segmentation(
        width=width,
        height=height,
        prompts=[PromptResult(text=t, presence_score=0.8, count=c) for t, c in zip(prompts, n_per_prompt, strict=True)],
        masks=masks,
        boxes=boxes,
        scores=np.linspace(0.95, 0.5, n).astype(np.float32),
        prompt_ids=np.repeat(np.arange(len(prompts)), n_per_prompt),
    )


@pytest.fixture
def seg() -> Segmentation:
    return make_seg()


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(2).integers(0, 256, (H, W, 3), dtype=np.uint8)


# ---------------------------------------------------------------------- parse_formats
def test_format_constants():
    assert FORMATS == ("json", "overlay", "masks", "cutout", "labelmap")
    assert DEFAULT_FORMATS == ("json", "overlay")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("json,overlay", ("json", "overlay")),
        (" Masks , json ,,", ("masks", "json")),
        ("json,overlay,json", ("json", "overlay")),
        (["cutout", "labelmap,json"], ("cutout", "labelmap", "json")),
        (("overlay",), ("overlay",)),
    ],
)
def test_parse_formats(spec, expected):
    assert parse_formats(spec) == expected


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("json,pdf", r"unknown output format\(s\): pdf; valid formats: json, overlay, masks, cutout, labelmap"),
        (["svg", "coco"], r"unknown output format\(s\): svg, coco"),
        ("", r"no output format given; valid formats: json"),
        (" , ", r"no output format given"),
        ([], r"no output format given"),
        ([1], r"must be strings"),
    ],
)
def test_parse_formats_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_formats(spec)


# ---------------------------------------------------------------------- paths
def test_output_paths(tmp_path):
    paths = output_paths(tmp_path, "img", FORMATS)
    assert list(paths) == list(FORMATS)
    assert {k: p.name for k, p in paths.items()} == {
        "json": "img.json",
        "overlay": "img.overlay.png",
        "masks": "img.masks",
        "cutout": "img.cutout.png",
        "labelmap": "img.labels.png",
    }
    assert all(p.parent == tmp_path for p in paths.values())
    assert list(output_paths(tmp_path, "img", "overlay,json")) == ["overlay", "json"]


@pytest.mark.parametrize("stem", ["", ".", "..", "a/b", "a\\b"])
def test_bad_stem_rejected(tmp_path, stem):
    with pytest.raises(ValueError, match="stem"):
        output_paths(tmp_path, stem, "json")


# ---------------------------------------------------------------------- write_outputs
def test_write_all_formats(tmp_path, seg, image):
    paths = write_outputs(seg, image, tmp_path / "out", "photo", FORMATS, source="in/photo.jpg")
    assert paths == output_paths(tmp_path / "out", "photo", FORMATS)
    assert is_complete(tmp_path / "out", "photo", FORMATS)

    with Image.open(paths["overlay"]) as im:
        assert im.mode == "RGB" and im.size == (W, H)
    with Image.open(paths["cutout"]) as im:
        assert im.mode == "RGBA" and im.size == (W, H)
        np.testing.assert_array_equal(np.asarray(im)[..., 3] == 255, seg.masks.any(axis=0))
    with Image.open(paths["labelmap"]) as im:
        assert im.mode == "L" and im.size == (W, H)
        np.testing.assert_array_equal(np.asarray(im), seg.label_map())

    files = sorted(p.name for p in paths["masks"].iterdir())
    assert files == ["000_red_car.png", "001_红色_汽车.png"]
    for i, name in enumerate(files):
        with Image.open(paths["masks"] / name) as im:
            assert im.mode == "L" and im.size == (W, H)
            arr = np.asarray(im)
        assert set(np.unique(arr)) == {0, 255}
        np.testing.assert_array_equal(arr == 255, seg.masks[i])


def test_json_round_trips(tmp_path, seg, image):
    paths = write_outputs(seg, image, tmp_path, "a", ["json"], source="cats/a.png")
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert data["source"] == "cats/a.png"
    assert data["prompts"][1]["text"] == "红色 汽车"  # stored as UTF-8, not escaped
    assert "红色" in paths["json"].read_text(encoding="utf-8")
    back = Segmentation.from_dict(data)
    np.testing.assert_array_equal(back.masks, seg.masks)
    np.testing.assert_allclose(back.boxes, seg.boxes, atol=0.01)
    np.testing.assert_allclose(back.scores, seg.scores, atol=1e-6)
    np.testing.assert_array_equal(back.prompt_ids, seg.prompt_ids)


def test_json_without_source_has_no_source_key(tmp_path, seg):
    paths = write_outputs(seg, None, tmp_path, "a", "json")
    assert "source" not in json.loads(paths["json"].read_text(encoding="utf-8"))


def test_label_map_values_8_and_16_bit(tmp_path):
    small = make_seg((2, 1))
    p = write_outputs(small, None, tmp_path, "small", "labelmap")["labelmap"]
    with Image.open(p) as im:
        assert im.mode == "L"
        arr = np.asarray(im)
    assert arr[0, 5] == 1 and arr[1, 5] == 2 and arr[2, 5] == 3 and arr[10, 5] == 0

    big_seg = make_seg((300,), prompts=("dot",), height=310)
    p = write_outputs(big_seg, None, tmp_path, "big", "labelmap")["labelmap"]
    with Image.open(p) as im:
        assert im.mode.startswith("I")  # 16-bit grey PNG
        arr = np.asarray(im).astype(np.int64)
    np.testing.assert_array_equal(arr, big_seg.label_map())
    assert arr.max() == 300


def empty_seg() -> Segmentation:
    return Segmentation.empty(W, H, [PromptResult(text="dog", presence_score=0.01, count=0)])


def test_empty_segmentation_writes_images(tmp_path, image):
    paths = write_outputs(empty_seg(), image, tmp_path, "e", "overlay,masks,cutout,labelmap")
    assert list(paths["masks"].iterdir()) == []
    with Image.open(paths["overlay"]) as im:
        np.testing.assert_array_equal(np.asarray(im), image)
    with Image.open(paths["labelmap"]) as im:
        assert not np.asarray(im).any()
    with Image.open(paths["cutout"]) as im:
        assert not np.asarray(im).any()


def test_empty_segmentation_writes_json(tmp_path):
    paths = write_outputs(empty_seg(), None, tmp_path, "e", "json")
    assert json.loads(paths["json"].read_text(encoding="utf-8"))["instances"] == []


def test_rewrite_removes_stale_mask_files(tmp_path, image):
    write_outputs(make_seg((3,), prompts=("cat",)), image, tmp_path, "x", "masks")
    (tmp_path / "x.masks" / "notes.txt").write_text("mine")
    write_outputs(make_seg((1,), prompts=("cat",)), image, tmp_path, "x", "masks")
    assert sorted(p.name for p in (tmp_path / "x.masks").iterdir()) == ["000_cat.png", "notes.txt"]


def test_image_required_for_image_formats(tmp_path, seg):
    with pytest.raises(ValueError, match="image is required for format.*cutout, overlay"):
        write_outputs(seg, None, tmp_path, "a", "json,overlay,cutout")
    assert list(tmp_path.iterdir()) == []


def test_wrong_image_size_writes_nothing(tmp_path, seg):
    with pytest.raises(ValueError, match="does not match"):
        write_outputs(seg, np.zeros((H + 1, W, 3), np.uint8), tmp_path, "a", "labelmap,overlay,json")
    assert list(tmp_path.iterdir()) == []


def test_json_written_last(tmp_path, seg, image, monkeypatch):
    order: list[str] = []
    real = export._atomic_write

    def spy(path: Path, write):
        order.append(path.name)
        real(path, write)

    monkeypatch.setattr(export, "_atomic_write", spy)
    write_outputs(seg, image, tmp_path, "a", ["json", "overlay", "labelmap", "masks"])
    assert order[-1] == "a.json"
    assert len(order) == 1 + 1 + 1 + len(seg)


def test_atomic_write_leaves_no_temp_files(tmp_path, seg, image):
    write_outputs(seg, image, tmp_path, "a", FORMATS)
    write_outputs(seg, image, tmp_path, "a", FORMATS)  # overwrite in place
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def test_interrupted_write_keeps_old_json_and_no_temp(tmp_path, seg, monkeypatch):
    paths = write_outputs(seg, None, tmp_path, "a", "json", source="old")

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    from sam3studio.io import files

    monkeypatch.setattr(files.os, "replace", boom)  # the atomic writer export uses
    with pytest.raises(KeyboardInterrupt):
        write_outputs(seg, None, tmp_path, "a", "json", source="new")
    assert json.loads(paths["json"].read_text(encoding="utf-8"))["source"] == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_is_complete(tmp_path, seg, image):
    assert not is_complete(tmp_path, "a", DEFAULT_FORMATS)
    write_outputs(seg, image, tmp_path, "a", ["overlay"])
    assert is_complete(tmp_path, "a", "overlay")
    assert not is_complete(tmp_path, "a", DEFAULT_FORMATS)  # JSON missing
    write_outputs(seg, image, tmp_path, "a", ["json"])
    assert is_complete(tmp_path, "a", DEFAULT_FORMATS)


# ---------------------------------------------------------------------- safe_name
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("red car/../x", "red_car_x"),
        ("红色 汽车", "红色_汽车"),
        ("car", "car"),
        ("  ..//  ", "unnamed"),
        ("", "unnamed"),
        ("a" * 50, "a" * 40),
        ("Straße-Schild #2", "Straße_Schild_2"),
        ("C:\\Windows\\system32", "C_Windows_system32"),
        ("नमस्ते", "नमस्ते"),  # combining vowel signs are kept
    ],
)
def test_safe_name(text, expected):
    assert safe_name(text) == expected


def test_safe_name_never_ends_with_separator_after_truncation():
    out = safe_name("a" * 39 + " bbb")
    assert out == "a" * 39 and len(out) <= 40
