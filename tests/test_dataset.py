"""The dataset store, label runs (resume, idempotence, never touching reviewed images), imports and shared helpers."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam3studio.dataset.importer import import_labels
from sam3studio.dataset.label import label_dataset
from sam3studio.dataset.review import DatasetRegistry, draw_review, new_results, view_of, view_scale
from sam3studio.dataset.shapes import brush_rle, decode_brush_rle, join_parts, single_polygon
from sam3studio.dataset.splits import assign_splits, parse_split
from sam3studio.dataset.store import (
    DB_NAME,
    SCHEMA_VERSION,
    DatasetError,
    DatasetNotFound,
    DatasetStore,
    ImageFilter,
    VersionConflict,
    parse_classes,
)
from sam3studio.results import mask_to_rle


def make_images(folder: Path, n: int, size: tuple[int, int] = (64, 48), suffix: str = ".png") -> list[Path]:
    """Small synthetic photos: a bright square on a noisy background, each a little different."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    w, h = size
    for i in range(n):
        img = (rng.random((h, w, 3)) * 60).astype(np.uint8)
        img[8 + i % 5: 28 + i % 5, 10:34] = (220, 60, 40)
        path = folder / f"img{i:02d}{suffix}"
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths


def square(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def store_with_images(tmp_path: Path, n: int = 3, classes=("cat", "dog")) -> DatasetStore:
    paths = make_images(tmp_path / "imgs", n)
    store = DatasetStore.create(tmp_path / "ds", classes)
    store.add_images((str(p), p.name) for p in paths)
    for image_id, _ in store.pending_labels():
        inst = store.instance_fields(square(48, 64, 5, 20, 5, 25), 64, 48)
        store.store_proposals(image_id, 64, 48, [{"class_id": 0, "score": 0.9, **inst}])
    return store


@pytest.fixture(scope="module")
def tiny_segmenter(tiny_checkpoint):
    from sam3studio import load_segmenter

    return load_segmenter(str(tiny_checkpoint), device="cpu", dtype="float32")


# ---------------------------------------------------------------------------- store
def test_new_store_has_the_schema_version_and_refuses_a_newer_one(tmp_path):
    store = DatasetStore.create(tmp_path / "ds", ["cat"])
    assert store.schema_version == SCHEMA_VERSION == 1
    assert store.get_meta("schema_version") == "1"
    store.close()
    db = sqlite3.connect(tmp_path / "ds" / DB_NAME)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(DatasetError, match="newer sam3studio"):
        DatasetStore.open(tmp_path / "ds")


def test_open_refuses_a_folder_that_is_not_a_dataset(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        DatasetStore.open(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a dataset"):
        DatasetStore.open(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DatasetError, match="not a readable dataset store"):
        DatasetStore.open(tmp_path / "bad")


@pytest.mark.parametrize(("text", "expected"), [
    ("hard hat, person", ["hard hat", "person"]),
    ("猫，狗", ["猫", "狗"]),
    (" cat ,dog, ", ["cat", "dog"]),
])
def test_parse_classes(text, expected):
    assert parse_classes(text) == expected


@pytest.mark.parametrize(("text", "error"), [("", "empty"), (" , ", "empty"), ("cat, Cat", "listed twice"),
                                             ("x" * 300, "characters long")])
def test_invalid_class_lists(text, error):
    with pytest.raises(DatasetError, match=f"invalid class list.*{error}"):
        parse_classes(text)


def test_every_change_checks_and_bumps_the_version(tmp_path):
    store = store_with_images(tmp_path, 1)
    image = store.image(1)
    assert image.state == "unreviewed" and image.version == 1 and len(image.instances) == 1
    inst = image.instances[0]
    after = store.update_instance(1, inst.id, image.version, class_id="dog")
    assert after.version == 2 and after.state == "corrected" and after.instances[0].class_name == "dog"
    with pytest.raises(VersionConflict) as err:  # a writer that read version 1 is refused
        store.delete_instance(1, inst.id, image.version)
    assert err.value.current == 2
    assert store.image(1).instances[0].class_name == "dog"  # nothing was overwritten
    accepted = store.accept(1, after.version)
    assert accepted.state == "corrected" and accepted.version == 3  # changed, then accepted: stays corrected
    with pytest.raises(DatasetNotFound):
        store.delete_instance(1, 999, accepted.version)
    with pytest.raises(DatasetError, match="unknown class"):
        store.update_instance(1, inst.id, accepted.version, class_id="bird")


def test_accept_of_an_unchanged_image_is_accepted_and_states_are_checked(tmp_path):
    store = store_with_images(tmp_path, 2)
    assert store.accept(1, store.image(1).version).state == "accepted"
    assert store.set_state(2, None, "skipped").state == "skipped"
    with pytest.raises(DatasetError, match="state must be one of"):
        store.set_state(2, None, "done")
    assert store.progress() == {"unreviewed": 0, "accepted": 1, "corrected": 0, "skipped": 1, "total": 2,
                                "reviewed": 1}


def test_add_instances_by_mask_and_by_box(tmp_path):
    store = store_with_images(tmp_path, 1)
    v = store.image(1).version
    image = store.add_instance(1, v, "dog", box=[30, 10, 50, 40], origin="api")
    box_only = image.instances[-1]
    assert box_only.counts is None and box_only.mask() is None and box_only.box == (30, 10, 50, 40)
    assert box_only.area == 600
    mask = square(48, 64, 30, 40, 40, 60)
    image = store.add_instance(1, image.version, 1, mask=mask, origin="clicks")
    assert np.array_equal(image.instances[-1].mask(), mask)
    assert image.instances[-1].box == (40, 30, 60, 40)  # the mask's tight box
    with pytest.raises(DatasetError, match="the mask is 10x10"):
        store.add_instance(1, image.version, 0, mask=np.ones((10, 10), bool))
    with pytest.raises(DatasetError, match="empty"):
        store.add_instance(1, image.version, 0, mask=np.zeros((48, 64), bool))
    with pytest.raises(DatasetError, match="no area"):
        store.add_instance(1, image.version, 0, box=[70, 50, 80, 60])


def test_paged_lists_filters_and_navigation(tmp_path):
    store = DatasetStore.create(tmp_path / "ds", ["cat", "dog"])
    store.add_images((f"/data/{i:03d}.png", f"{i:03d}.png") for i in range(120))
    for image_id in range(1, 121):
        inst = store.instance_fields(square(10, 10, 0, 5, 0, 5), 10, 10)
        cls, score = (image_id % 2, image_id / 200)
        store.store_proposals(image_id, 10, 10, [{"class_id": cls, "score": score, **inst}])
    store.set_state(7, None, "accepted")
    page = store.list_images(limit=50)
    assert [r.id for r in page.images] == list(range(1, 51)) and page.next_after == 50 and page.total == 120
    last = store.list_images(after=100, limit=50)
    assert [r.id for r in last.images] == list(range(101, 121)) and last.next_after is None
    dogs = ImageFilter(class_id=1)
    assert store.count(dogs) == 60 and store.list_images(dogs, limit=3).images[0].id == 1
    assert store.list_images(dogs).total is None and store.list_images(dogs, with_total=True).total == 60
    low = ImageFilter(max_score=0.1)
    assert store.count(low) == 20
    assert store.count(ImageFilter(state="accepted")) == 1
    assert store.step(None, 1, ImageFilter(state="accepted")) == 7
    assert store.step(10, 1, dogs) == 11 and store.step(11, -1, dogs) == 9
    assert store.step(119, 1, dogs) is None and store.step(119, 1, dogs, wrap=True) == 1
    assert store.position(11, dogs) == 6
    with pytest.raises(DatasetError, match="limit"):
        store.list_images(limit=0)
    with pytest.raises(DatasetError, match="min_score"):
        ImageFilter(min_score=2)


def test_two_writers_on_one_image_never_lose_an_update(tmp_path):
    """Many threads change one image, each retrying on a conflict from the version it last read: every change lands."""
    store = store_with_images(tmp_path, 1)
    n_threads, per_thread = 4, 5
    errors = []

    def writer(k: int) -> None:
        for j in range(per_thread):
            while True:
                image = store.image(1)
                try:
                    store.add_instance(1, image.version, "dog", box=[k * 10, j * 5, k * 10 + 5, j * 5 + 4])
                    break
                except VersionConflict:
                    continue
                except Exception as exc:  # pragma: no cover - reported below
                    errors.append(exc)
                    return

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    image = store.image(1)
    assert len(image.instances) == 1 + n_threads * per_thread
    assert image.version == 1 + n_threads * per_thread


def test_a_second_connection_sees_the_change_and_conflicts(tmp_path):
    """Two processes (here: two connections) on one dataset file follow the same rule."""
    a = store_with_images(tmp_path, 1)
    b = DatasetStore.open(tmp_path / "ds")
    seen = b.image(1).version
    a.delete_instance(1, a.image(1).instances[0].id, seen)
    with pytest.raises(VersionConflict):
        b.accept(1, seen)
    assert b.image(1).instances == [] and b.accept(1, b.image(1).version).state == "corrected"


# ---------------------------------------------------------------------------- label runs
def test_label_is_resumable_and_never_overwrites_reviewed_images(tmp_path, tiny_segmenter):
    make_images(tmp_path / "imgs", 5)
    calls = []

    def stop_after_two(ok: bool) -> None:
        calls.append(ok)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of a run

    with pytest.raises(KeyboardInterrupt):
        label_dataset(tmp_path / "imgs", tmp_path / "ds", "cat, dog", segmenter=tiny_segmenter, threshold=0.01,
                      on_image=stop_after_two)
    with DatasetStore.open(tmp_path / "ds") as store:
        assert store.count() == 5 and len(store.pending_labels()) == 3
        first = store.image(1)
        assert first.proposed and first.instances and {i.origin for i in first.instances} == {"model"}
        reviewed = store.delete_instance(1, first.instances[0].id, first.version)  # a person corrects image 1
    calls.clear()
    before = tiny_segmenter.stats.head_passes
    summary = label_dataset(tmp_path / "imgs", tmp_path / "ds", "cat, dog", segmenter=tiny_segmenter,
                            threshold=0.01, on_image=calls.append)
    assert (summary.images_added, summary.pending, summary.labelled, summary.failed) == (0, 3, 3, 0)
    assert len(calls) == 3 and tiny_segmenter.stats.head_passes > before
    with DatasetStore.open(tmp_path / "ds") as store:
        assert store.pending_labels() == []
        assert store.image(1) == reviewed  # untouched by the second run
        assert all(store.image(i).proposed for i in range(1, 6))
    # A third run with one new image labels only that one.
    make_images(tmp_path / "imgs", 6)
    summary = label_dataset(tmp_path / "imgs", tmp_path / "ds", "cat, dog", segmenter=tiny_segmenter, threshold=0.01)
    assert (summary.images_added, summary.labelled, summary.images_total) == (1, 1, 6)


def test_label_records_unreadable_images_and_retries_them(tmp_path, tiny_segmenter):
    paths = make_images(tmp_path / "imgs", 2)
    paths[1].write_bytes(b"not an image")
    summary = label_dataset(tmp_path / "imgs", tmp_path / "ds", ["cat"], segmenter=tiny_segmenter)
    assert (summary.labelled, summary.failed) == (1, 1)
    with DatasetStore.open(tmp_path / "ds") as store:
        bad = store.image(store.image_id_of(str(paths[1])))
        assert not bad.proposed and "decode" in bad.error
    make_images(tmp_path / "imgs", 2)  # the file is fixed
    summary = label_dataset(tmp_path / "imgs", tmp_path / "ds", ["cat"], segmenter=tiny_segmenter)
    assert (summary.pending, summary.labelled, summary.failed) == (1, 1, 0)


def test_label_refuses_other_classes_and_urls(tmp_path, tiny_segmenter):
    make_images(tmp_path / "imgs", 1)
    label_dataset(tmp_path / "imgs", tmp_path / "ds", "cat", segmenter=tiny_segmenter)
    with pytest.raises(DatasetError, match="labelled with the classes cat"):
        label_dataset(tmp_path / "imgs", tmp_path / "ds", "cat, dog", segmenter=tiny_segmenter)
    manifest = tmp_path / "urls.txt"
    manifest.write_text("https://example.invalid/a.jpg\n")
    with pytest.raises(DatasetError, match="local image files"):
        label_dataset(manifest, tmp_path / "ds2", "cat", segmenter=tiny_segmenter)
    with pytest.raises(DatasetError, match="no such file or folder"):
        label_dataset(tmp_path / "missing", tmp_path / "ds3", "cat", segmenter=tiny_segmenter)


def test_leftover_ray_shards_are_taken_in(tmp_path, tiny_segmenter):
    """A Ray run interrupted after writing a shard: the next run stores that shard's results without re-running them."""
    from sam3studio.batch.shards import JobDir
    from sam3studio.batch.work import BatchSpec, Worker
    from sam3studio.dataset.label import STAGING, prepare_label

    paths = make_images(tmp_path / "imgs", 3)
    store, _, _ = prepare_label(tmp_path / "imgs", tmp_path / "ds", "cat")
    store.close()
    worker = Worker(BatchSpec(prompts=("cat",), threshold=0.01), tiny_segmenter)
    lines = [worker.process(i, str(p))[1] for i, p in enumerate(paths[:2])]
    (tmp_path / "ds" / STAGING).mkdir()
    JobDir(tmp_path / "ds" / STAGING).write_shard(0, lines, [])
    summary = label_dataset(tmp_path / "imgs", tmp_path / "ds", "cat", segmenter=tiny_segmenter, threshold=0.01)
    assert (summary.pending, summary.labelled) == (1, 3)  # two from the shard, one run now
    assert not (tmp_path / "ds" / STAGING).exists()


# ---------------------------------------------------------------------------- import
def _coco_file(tmp_path: Path) -> Path:
    paths = make_images(tmp_path / "coco", 2)
    m = square(48, 64, 4, 20, 6, 30)
    data = {"images": [{"id": 10 + i, "file_name": p.name, "width": 64, "height": 48} for i, p in enumerate(paths)],
            "categories": [{"id": 3, "name": "hard hat"}, {"id": 7, "name": "person"}],
            "annotations": [{"id": 1, "image_id": 10, "category_id": 7, "segmentation": mask_to_rle(m), "score": 0.7},
                            {"id": 2, "image_id": 10, "category_id": 3,
                             "segmentation": [[30, 30, 50, 30, 50, 44, 30, 44]]},
                            {"id": 3, "image_id": 11, "category_id": 3, "bbox": [1, 2, 10, 5]},
                            {"id": 4, "image_id": 11, "category_id": 7, "bbox": [0, 0, 5, 5], "iscrowd": 1}]}
    path = tmp_path / "coco" / "labels.json"
    path.write_text(json.dumps(data))
    return path


def test_import_coco_then_again_adds_nothing(tmp_path):
    path = _coco_file(tmp_path)
    summary = import_labels(path, tmp_path / "ds")
    assert (summary.format, summary.images_added, summary.instances, summary.crowd_skipped) == ("coco", 2, 3, 1)
    with DatasetStore.open(tmp_path / "ds") as store:
        assert store.classes == ["hard hat", "person"]
        a = store.image(1)
        assert [i.class_name for i in a.instances] == ["person", "hard hat"]
        assert np.array_equal(a.instances[0].mask(), square(48, 64, 4, 20, 6, 30)) and a.instances[0].score == 0.7
        assert a.instances[1].origin == "import" and a.instances[1].area > 200
        b = store.image(2)
        assert b.instances[0].counts is None and b.instances[0].box == (1, 2, 11, 7)
        assert not a.proposed  # a label run may still propose
    again = import_labels(path, tmp_path / "ds")
    assert (again.images_added, again.instances, again.images_kept) == (0, 0, 2)


def test_import_yolo_segmentation_and_boxes(tmp_path):
    root = tmp_path / "yolo"
    paths = make_images(root / "images" / "train", 2)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "img00.txt").write_text("1 0.1 0.1 0.5 0.1 0.5 0.5 0.1 0.5\n0 0.75 0.5 0.2 0.4\n")
    (root / "labels" / "train" / "img01.txt").write_text("0 0.75 0.5 0.2 0.4\n")  # a detection-only file
    (root / "data.yaml").write_text("train: images/train\nval: images/train\nnames: {0: car, 1: bus}\n")
    summary = import_labels(root / "data.yaml", tmp_path / "ds")
    assert (summary.format, summary.images_added, summary.instances) == ("yolo", 2, 3)
    with DatasetStore.open(tmp_path / "ds") as store:
        image = store.image(store.image_id_of(str(paths[0].resolve())))
        bus, car = image.instances
        assert bus.class_name == "bus" and bus.counts is not None and 450 < bus.area < 600
        assert car.class_name == "car" and car.box == (42, 14, 55, 35)  # beside a polygon a box is a filled rectangle
        (box_only,) = store.image(store.image_id_of(str(paths[1].resolve()))).instances
        assert box_only.counts is None and box_only.box == pytest.approx((41.6, 14.4, 54.4, 33.6), abs=0.01)


@pytest.mark.parametrize(("content", "name", "error"), [
    ("{not json", "x.json", "malformed JSON"),
    ('{"images": [], "categories": []}', "x.json", "'images' is empty"),
    ("names: [a]\n", "data.yaml", "names no train"),
    ("a: [\n", "data.yaml", "not a readable YAML"),
    ("whatever", "x.txt", "cannot tell the format"),
])
def test_unreadable_import_files(tmp_path, content, name, error):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DatasetError, match=error):
        import_labels(path, tmp_path / "ds")
    with pytest.raises(DatasetError, match="no such file"):
        import_labels(tmp_path / "gone.json", tmp_path / "ds")


# ---------------------------------------------------------------------------- splits, shapes, review helpers
def test_splits_are_exact_seeded_and_stable():
    assert parse_split("0.8,0.1,0.1") == (0.8, 0.1, 0.1) and parse_split("0.9,0.1") == (0.9, 0.1, 0.0)
    for bad in ("0.5,0.1", "a,b", "1,0,0,0", "-0.5,1.5"):
        with pytest.raises(DatasetError, match="--split"):
            parse_split(bad)
    ids = list(range(1, 11))
    split = assign_splits(ids, (0.8, 0.1, 0.1), seed=3)
    assert sorted(split) == ids and [list(split.values()).count(s) for s in ("train", "val", "test")] == [8, 1, 1]
    assert assign_splits(ids[::-1], (0.8, 0.1, 0.1), seed=3) == split
    assert assign_splits(ids, (0.8, 0.1, 0.1), seed=4) != split
    assert set(assign_splits(ids, (1, 0, 0)).values()) == {"train"}


def test_brush_rle_round_trip_and_a_known_vector():
    # A 1x1 mask inside: 4 RGBA values of 255 -> header (4 values, word 8, sizes 3,4,8,16) + one run of 4 x 255.
    assert brush_rle(np.ones((1, 1), bool)) == [0, 0, 0, 4, 57, 27, 252, 127, 224]  # as label-studio-converter writes it
    rng = np.random.default_rng(0)
    for h, w in ((1, 1), (7, 5), (60, 80), (300, 451)):
        mask = rng.random((h, w)) > 0.7
        mask[: h // 2, : w // 2] = True
        assert np.array_equal(decode_brush_rle(brush_rle(mask), h, w), mask)
    full = np.ones((300, 300), bool)  # runs over 65 536 values are split
    assert np.array_equal(decode_brush_rle(brush_rle(full), 300, 300), full)


def test_single_polygon_joins_parts_and_bridges_holes():
    import cv2

    mask = square(60, 80, 5, 20, 5, 20) | square(60, 80, 30, 55, 40, 75) | square(60, 80, 50, 56, 5, 12)
    mask[38:47, 50:62] = False  # a hole
    poly = single_polygon(mask, (0, 0, 1, 1))
    filled = np.zeros(mask.shape, np.uint8)
    cv2.fillPoly(filled, [poly.round().astype(np.int32)], 1)
    filled = filled.astype(bool)
    assert (filled & mask).sum() / (filled | mask).sum() > 0.85
    assert not filled[40:45, 53:60].any()  # the hole stays open
    tiny = np.zeros((10, 10), bool)
    tiny[3, 3] = True
    assert single_polygon(tiny, (3, 3, 4, 4)).tolist() == [[3, 3], [4, 3], [4, 4], [3, 4]]
    assert join_parts([np.array([[0, 0], [1, 0], [1, 1]])]).shape == (3, 2)


# A ragged mask (as an untrained model gives) with a hole supervision finds no seam for: it raises there.
RAGGED = np.array([[int(c) for c in row] for row in (
    "111011011001", "000110111001", "111011001001", "101101101101", "101101110101", "111010000111",
    "101101010110", "011110101010", "010010010010", "111111100111", "111111110110", "101110010101")], bool)


def test_a_hole_supervision_cannot_bridge_is_filled_not_an_error(tmp_path):
    from supervision.dataset.utils import approximate_mask_with_polygons

    from sam3studio.dataset.shapes import mask_polygons

    with pytest.raises(ValueError, match="seam"):
        approximate_mask_with_polygons(RAGGED, bridge_holes=True)
    polygons = mask_polygons(RAGGED)
    assert polygons and all(p.ndim == 2 and p.shape[1] == 2 for p in polygons)
    assert single_polygon(RAGGED, (0, 0, 12, 12)).shape[1] == 2


def test_registry_ids_view_and_missing_images(tmp_path):
    store = store_with_images(tmp_path, 2)
    store.close()
    registry = DatasetRegistry([tmp_path / "ds", tmp_path / "ds"])
    assert registry.ids() == ["ds"] and registry.info("ds")["progress"]["total"] == 2
    with pytest.raises(DatasetNotFound, match="served: ds"):
        registry.get("other")
    store = registry.get("ds")
    view = view_of(store, 2, ImageFilter())
    assert (view.position, view.matching) == (2, 2)
    assert (view_of(store, 2, ImageFilter(class_id=0)).position, view_of(store, 2, ImageFilter(class_id=1)).position) == (
        None, 0)  # on instances: not counted, but "outside the filter" is known
    image = store.image(1)
    canvas = draw_review(None, image)
    assert canvas.shape[:2] == (480, 640) and view_scale(image) == 10  # small images are drawn larger
    Path(image.path).unlink()
    assert image.missing
    rgb = np.zeros((48, 64, 3), np.uint8)
    assert draw_review(rgb, image, selected=image.instances[0].id).shape == (480, 640, 3)
    dup = square(48, 64, 5, 20, 5, 25)[None]
    other = square(48, 64, 30, 40, 40, 60)[None]
    assert new_results(image.instances, np.concatenate([dup, other, other])) == [1]
    registry.close()
