"""`sam3studio.evaluation` and `sam3studio eval`: synthetic ground truth where every answer is known.

The synthetic set: three 60x40 images, categories "cat" (1) and "dog" (2).
image 1: a cat (x 5-25, y 5-25) and a dog (x 30-50, y 10-30); image 2: a cat (x 10-30, y 10-20);
image 3: nothing. So 6 (image, prompt) pairs, 3 positive and 3 negative.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from typer.testing import CliRunner

from sam3studio.evaluation import (
    EvalDataError,
    Predictions,
    binary_stats,
    evaluate,
    load_coco_gt,
    load_gt,
    load_saco_gt,
    predict,
    write_plots,
)
from sam3studio.results import mask_to_rle

W, H = 60, 40
CAT, DOG = 1, 2
RECTS = {  # (image id, category id) -> list of (x0, y0, x1, y1), x1/y1 exclusive
    (1, CAT): [(5, 5, 25, 25)],
    (1, DOG): [(30, 10, 50, 30)],
    (2, CAT): [(10, 10, 30, 20)],
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()


def rect_mask(x0, y0, x1, y1, w=W, h=H):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def det(image_id, category_id, rect, score):
    x0, y0, x1, y1 = rect
    return {"image_id": image_id, "category_id": category_id, "segmentation": mask_to_rle(rect_mask(*rect)),
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "score": score}


def perfect_detections(score=0.9):
    return [det(i, c, r, score) for (i, c), rects in RECTS.items() for r in rects]


def coco_gt_dict(with_masks=True):
    anns = []
    for (image_id, cat_id), rects in RECTS.items():
        for x0, y0, x1, y1 in rects:
            ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": cat_id, "iscrowd": 0,
                   "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)}
            if with_masks:  # polygons for the first, RLE for the others: both forms are read
                ann["segmentation"] = ([[x0, y0, x1, y0, x1, y1, x0, y1]] if not anns
                                       else mask_to_rle(rect_mask(x0, y0, x1, y1)))
            anns.append(ann)
    return {
        "images": [{"id": i, "file_name": f"img{i}.png", "width": W, "height": H} for i in (1, 2, 3)],
        "categories": [{"id": CAT, "name": "cat"}, {"id": DOG, "name": "dog"}],
        "annotations": anns,
    }


@pytest.fixture
def coco_files(tmp_path):
    """GT JSON next to three noise images; returns (gt path, images folder)."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in (1, 2, 3):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(images / f"img{i}.png")
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(coco_gt_dict()))
    return gt, images


def run_pycocotools(gt_path, dets, iou_type):
    """pycocotools on the files, the way its README does it."""
    gt = COCO(str(gt_path))
    ev = COCOeval(gt, gt.loadRes(copy.deepcopy(dets)), iou_type)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev


# ---------------------------------------------------------------------------- loading
def test_load_coco_gt_builds_pairs_and_fills_defaults(coco_files):
    gt, images = coco_files
    ds = load_coco_gt(gt, images)
    assert [c.prompt for c in ds.categories] == ["cat", "dog"]
    assert ds.pairs() == [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2)]
    assert ds.positive_pairs() == {(1, 1), (1, 2), (2, 1)}
    assert ds.has_masks and ds.image_path(ds.image(2)) == images / "img2.png"
    poly = ds.annotations[0]["segmentation"]  # the polygon became an RLE of the same 20x20 square
    assert mask_utils.area({"size": poly["size"], "counts": poly["counts"].encode()}) == 400
    assert ds.summary() == {"format": "coco", "source": str(gt), "images": 3, "categories": 2, "pairs": 6,
                            "positive_pairs": 3, "annotations": 3, "has_masks": True}
    assert [im.id for im in ds.subset(2).images] == [1, 2] and len(ds.subset(1).annotations) == 2


def test_mapping_replaces_prompts_and_rejects_unknown_names(coco_files, tmp_path):
    gt, images = coco_files
    ds = load_gt(gt, images, mapping={"cat": "tabby, cat"})
    assert [c.prompt for c in ds.categories] == ["tabby cat", "dog"]  # separators cannot split a prompt
    with pytest.raises(EvalDataError, match="not in the ground truth: 'horse'"):
        load_gt(gt, images, mapping={"horse": "pony"})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "malformed JSON"),
        (json.dumps({"images": [], "categories": []}), "'images' is empty"),
        (json.dumps({**coco_gt_dict(), "annotations": [{"image_id": 9, "category_id": 1, "bbox": [0, 0, 1, 1]}]}),
         "image_id 9 is not in 'images'"),
        (json.dumps({**coco_gt_dict(), "images": [{"id": 1, "file_name": "a.png", "width": W}]}), "has no 'height'"),
    ],
)
def test_malformed_ground_truth_is_one_sentence(tmp_path, content, message):
    path = tmp_path / "gt.json"
    path.write_text(content)
    with pytest.raises(EvalDataError, match=message):
        load_gt(path)


# ---------------------------------------------------------------------------- metrics with known answers
def test_perfect_predictions_score_one_everywhere(coco_files):
    ds = load_coco_gt(*coco_files)
    report = evaluate(ds, Predictions(perfect_detections(0.9)))
    # pycocotools divides by tp + fp + eps, so a perfect AP is 1 within 1e-15
    assert report.ap["segm"] == pytest.approx({"AP": 1.0, "AP50": 1.0, "AP75": 1.0}, abs=1e-12)
    assert report.ap["bbox"] == pytest.approx({"AP": 1.0, "AP50": 1.0, "AP75": 1.0}, abs=1e-12)
    assert [(r["name"], r["AP_segm"], r["AP_bbox"]) for r in report.per_category] == [
        ("cat", pytest.approx(1.0, abs=1e-12), pytest.approx(1.0, abs=1e-12)),
        ("dog", pytest.approx(1.0, abs=1e-12), pytest.approx(1.0, abs=1e-12))]
    assert report.presence["f1"] == 1.0 and report.presence["precision"] == 1.0 and report.presence["recall"] == 1.0
    assert (report.presence["tp"], report.presence["fp"], report.presence["fn"], report.presence["tn"]) == (3, 0, 0, 3)
    assert report.cgf1["cgF1"] == 1.0 and report.cgf1["pmF1"] == 1.0 and report.cgf1["IL_MCC"] == 1.0
    assert report.cgf1["F1@50"] == 1.0
    assert report.iou_type == "segm"
    by_t = {row["threshold"]: row for row in report.sweep}
    assert len(by_t) == 19 and by_t[0.05]["cgF1"] == 1.0 and by_t[0.9]["cgF1"] == 1.0
    assert by_t[0.95]["F1@50"] == 0.0 and by_t[0.95]["cgF1"] == 0.0  # every score (0.9) is below 0.95
    assert report.recommended_threshold == 0.05  # ties go to the lower threshold
    assert report.latency is None and report.presence_head is None


def test_shifted_mask_gives_the_hand_computed_iou_and_ap(coco_files):
    ds = load_coco_gt(*coco_files)
    # The image-2 cat is 20x10 at x 10-30; predicted 4 px to the right (x 14-34):
    # intersection 16x10 = 160, union 200 + 200 - 160 = 240, IoU = 2/3 for the mask and the box.
    shifted = (14, 10, 34, 20)
    gt_rle, dt_rle = mask_to_rle(rect_mask(10, 10, 30, 20)), mask_to_rle(rect_mask(*shifted))
    iou = mask_utils.iou([{"size": dt_rle["size"], "counts": dt_rle["counts"].encode()}],
                         [{"size": gt_rle["size"], "counts": gt_rle["counts"].encode()}], [0])[0, 0]
    assert iou == pytest.approx(2 / 3, abs=1e-12)
    dets = [d for d in perfect_detections(0.9) if d["image_id"] != 2] + [det(2, CAT, shifted, 0.8)]
    report = evaluate(ds, Predictions(dets))
    cat = report.per_category[0]
    # IoU 2/3 passes the thresholds 0.50, 0.55, 0.60, 0.65 and fails the six from 0.70 up. Above 0.65 the
    # cat's precision is 1 up to recall 0.5 (the image-1 cat, scored higher) and 0 after: 51 of 101 points.
    for kind in ("segm", "bbox"):
        assert cat[f"AP50_{kind}"] == pytest.approx(1.0, abs=1e-12)
        assert cat[f"AP75_{kind}"] == pytest.approx(51 / 101)
        assert cat[f"AP_{kind}"] == pytest.approx((4 * 1.0 + 6 * 51 / 101) / 10)
    assert report.per_category[1]["AP_segm"] == pytest.approx(1.0, abs=1e-12)
    # pmF1: F1 = 1 at the four thresholds IoU 2/3 passes; above, TP 2, FP 1, FN 1 so F1 = 2/3.
    assert report.cgf1["pmF1"] == pytest.approx((4 * 1 + 6 * 2 / 3) / 10)
    assert report.cgf1["pmF1@50"] == 1.0 and report.cgf1["pmF1@75"] == pytest.approx(2 / 3)
    assert report.cgf1["IL_MCC"] == 1.0 and report.cgf1["cgF1"] == pytest.approx(0.8)


def test_false_positive_on_a_negative_pair_lowers_presence_precision_and_mcc(coco_files):
    ds = load_coco_gt(*coco_files)
    fp = det(3, CAT, (0, 0, 10, 10), 0.7)  # image 3 has no cat
    report = evaluate(ds, Predictions([*perfect_detections(0.9), fp]), score_threshold=0.5)
    p = report.presence
    assert (p["tp"], p["fp"], p["fn"], p["tn"]) == (3, 1, 0, 2)
    assert p["precision"] == pytest.approx(3 / 4) and p["recall"] == 1.0 and p["f1"] == pytest.approx(6 / 7)
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (3*2 - 0) / sqrt(4*3*3*2) = 1/sqrt(2)
    assert p["mcc"] == pytest.approx(1 / math.sqrt(2))
    cat = report.per_category[0]["presence"]
    assert (cat["tp"], cat["fp"], cat["fn"], cat["tn"]) == (2, 1, 0, 0)
    assert cat["precision"] == pytest.approx(2 / 3) and cat["mcc"] == 0.0  # no true negative: MCC undefined -> 0
    assert report.per_category[1]["presence"]["precision"] == 1.0
    cg = report.cgf1
    assert cg["IL_MCC"] == pytest.approx(1 / math.sqrt(2))
    assert cg["pmF1"] == 1.0  # a false positive on a negative pair does not touch the positive micro F1
    assert cg["cgF1"] == pytest.approx(1 / math.sqrt(2))
    assert cg["F1@50"] == pytest.approx(6 / 7)  # but it does count in the plain instance F1
    # above 0.7 the false positive is gone: the sweep sees it and recommends the lowest perfect threshold
    by_t = {row["threshold"]: row for row in report.sweep}
    assert by_t[0.7]["cgF1"] == pytest.approx(1 / math.sqrt(2)) and by_t[0.75]["cgF1"] == 1.0
    assert report.recommended_threshold == 0.75
    # at a higher headline threshold the same predictions are perfect
    assert evaluate(ds, Predictions([*perfect_detections(0.9), fp]), score_threshold=0.8).presence["precision"] == 1.0


def test_binary_stats_conventions():
    assert binary_stats(0, 0, 0, 5) == {"tp": 0, "fp": 0, "fn": 0, "tn": 5, "precision": None, "recall": None,
                                        "f1": None, "mcc": 0.0}
    s = binary_stats(2, 1, 1, 3)
    assert s["precision"] == pytest.approx(2 / 3) and s["f1"] == pytest.approx(2 / 3)
    assert s["mcc"] == pytest.approx((2 * 3 - 1) / math.sqrt(3 * 3 * 4 * 4))


def test_ap_agrees_with_pycocotools_run_directly(coco_files, tmp_path):
    gt_path, images = coco_files
    rng = np.random.default_rng(1)
    dets = []
    for (image_id, cat_id), rects in RECTS.items():  # jittered true positives, duplicates and strays
        for x0, y0, x1, y1 in rects:
            for _ in range(3):
                dx, dy = (int(v) for v in rng.integers(-6, 7, 2))
                r = (max(0, x0 + dx), max(0, y0 + dy), min(W, x1 + dx), min(H, y1 + dy))
                dets.append(det(image_id, cat_id, r, round(float(rng.uniform(0.1, 1.0)), 4)))
    for image_id in (1, 2, 3):
        x, y = (int(v) for v in rng.integers(0, 40, 2))
        dets.append(det(image_id, int(rng.integers(1, 3)), (x, y % 30, x + 15, y % 30 + 10), 0.55))
    results = tmp_path / "results.json"
    results.write_text(json.dumps(dets))
    report = evaluate(load_coco_gt(gt_path, images), Predictions.load(results))
    for kind in ("segm", "bbox"):
        ev = run_pycocotools(gt_path, json.loads(results.read_text()), kind)
        assert report.ap[kind]["AP"] == pytest.approx(ev.stats[0], abs=1e-12)
        assert report.ap[kind]["AP50"] == pytest.approx(ev.stats[1], abs=1e-12)
        assert report.ap[kind]["AP75"] == pytest.approx(ev.stats[2], abs=1e-12)
        for k, cat_id in enumerate(ev.params.catIds):
            p = ev.eval["precision"][:, :, k, 0, -1]
            row = next(r for r in report.per_category if r["id"] == cat_id)
            assert row[f"AP_{kind}"] == pytest.approx(float(p[p > -1].mean()), abs=1e-12)
            assert row[f"AP50_{kind}"] == pytest.approx(float(p[0][p[0] > -1].mean()), abs=1e-12)
        assert 0.0 < report.ap[kind]["AP"] < 1.0  # the jitter makes this a non-trivial case


def test_box_only_ground_truth_reports_mask_ap_as_not_available(tmp_path):
    gt = tmp_path / "boxes.json"
    gt.write_text(json.dumps(coco_gt_dict(with_masks=False)))
    ds = load_coco_gt(gt)
    assert not ds.has_masks
    report = evaluate(ds, Predictions(perfect_detections()))
    assert report.ap["segm"] is None and report.ap["bbox"]["AP"] == pytest.approx(1.0, abs=1e-12)
    assert report.iou_type == "bbox" and report.cgf1["cgF1"] == 1.0
    assert report.to_dict()["ap"]["segm"] is None and report.per_category[0]["AP_segm"] is None


# ---------------------------------------------------------------------------- SA-Co
def saco_gt_dict():
    """Two images, four (image, noun phrase) pairs: 'dog' on a.png and 'red car' on b.png are negatives."""
    cat_a, cat_b = (5, 5, 25, 25), (10, 10, 30, 20)

    def ann(i, pair_id, r):
        x0, y0, x1, y1 = r
        return {"id": i, "image_id": pair_id, "category_id": 1, "iscrowd": 0, "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": (x1 - x0) * (y1 - y0), "segmentation": mask_to_rle(rect_mask(*r))}

    entry = {"width": W, "height": H, "is_instance_exhaustive": True}
    return {
        "images": [{"id": 101, "file_name": "a.png", "text_input": "cat", **entry},
                   {"id": 102, "file_name": "a.png", "text_input": "dog", **entry},
                   {"id": 103, "file_name": "b.png", "text_input": "cat", **entry},
                   {"id": 104, "file_name": "b.png", "text_input": "red car", **entry}],
        "annotations": [ann(1, 101, cat_a), ann(2, 103, cat_b)],
        "categories": [{"id": 1, "name": "object"}],
    }, cat_a, cat_b


def test_saco_format_with_negative_noun_phrases(tmp_path):
    data, cat_a, cat_b = saco_gt_dict()
    path = tmp_path / "saco.json"
    path.write_text(json.dumps(data))
    ds = load_gt(path)  # detected from text_input
    assert ds.format == "saco" and load_saco_gt(path).pairs() == ds.pairs()
    assert [im.file_name for im in ds.images] == ["a.png", "b.png"]
    assert [(c.id, c.name) for c in ds.categories] == [(1, "cat"), (2, "dog"), (3, "red car")]
    assert ds.pairs() == [(1, 1), (1, 2), (2, 1), (2, 3)]
    assert ds.positive_pairs() == {(1, 1), (2, 1)}
    dets = [det(1, 1, cat_a, 0.9), det(2, 1, cat_b, 0.9),
            det(2, 3, (0, 0, 10, 10), 0.6),  # a red car on b.png, which has none: a false positive
            det(1, 3, (0, 0, 10, 10), 0.9)]  # 'red car' was never asked on a.png: ignored
    report = evaluate(ds, Predictions(dets))
    assert report.ignored_detections == 1
    p = report.presence
    assert (p["tp"], p["fp"], p["fn"], p["tn"]) == (2, 1, 0, 1) and p["precision"] == pytest.approx(2 / 3)
    assert report.cgf1["IL_MCC"] == pytest.approx(2 / math.sqrt(12))  # (2*1 - 1*0) / sqrt(3*2*2*1)
    assert report.cgf1["pmF1"] == 1.0 and report.cgf1["cgF1"] == pytest.approx(2 / math.sqrt(12))
    # AP is class-agnostic over pairs: both true positives outrank the false positive
    assert report.ap["segm"] == pytest.approx({"AP": 1.0, "AP50": 1.0, "AP75": 1.0}, abs=1e-12)
    assert report.per_category[0]["AP_segm"] is None  # no per-noun-phrase AP for SA-Co
    assert report.per_category[2]["presence"]["fp"] == 1
    assert list(report.pr_curves["precision"]) == ["all noun phrases"]


def test_saco_non_exhaustive_pairs_are_left_out_of_cgf1(tmp_path):
    data, cat_a, cat_b = saco_gt_dict()
    data["images"][2]["is_instance_exhaustive"] = False  # b.png / cat
    path = tmp_path / "saco.json"
    path.write_text(json.dumps(data))
    ds = load_saco_gt(path)
    report = evaluate(ds, Predictions([det(1, 1, cat_a, 0.9)]))  # b.png's cat is missed
    assert report.presence["fn"] == 1  # presence still counts it
    assert report.cgf1["IL_counts"] == {"tp": 1, "fp": 0, "fn": 0, "tn": 2}  # cgF1 does not
    assert report.cgf1["cgF1"] == 1.0


# ---------------------------------------------------------------------------- with the tiny model
def test_predictions_round_trip_equals_in_memory(segmenter, coco_files, tmp_path):
    ds = load_coco_gt(*coco_files)
    preds = predict(segmenter, ds, score_threshold=0.05)
    assert len(preds.presence) == 6 and sorted(preds.latency_s) == [1, 2, 3]
    assert {(p["image_id"], p["category_id"]) for p in preds.presence} == set(ds.pairs())
    assert all(0.05 < d["score"] <= 1 and d["segmentation"]["size"] == [H, W] for d in preds.detections)
    assert all(len(d["bbox"]) == 4 for d in preds.detections)
    path = preds.save(tmp_path / "preds.json")
    loaded = Predictions.load(path)
    assert loaded.detections == preds.detections and loaded.presence == preds.presence
    assert loaded.latency_s == preds.latency_s
    a, b = evaluate(ds, preds).to_dict(), evaluate(ds, loaded).to_dict()
    assert a == b
    assert a["latency"]["images"] == 3 and a["latency"]["mean_s"] > 0
    assert a["presence_head"]["tp"] + a["presence_head"]["fp"] + a["presence_head"]["fn"] + a["presence_head"]["tn"] == 6


def test_predict_uses_mapped_prompts_and_shares_them(segmenter, coco_files):
    gt, images = coco_files
    ds = load_gt(gt, images, mapping={"cat": "animal", "dog": "animal"}).subset(1)
    preds = predict(segmenter, ds, score_threshold=0.05)
    # one prompt for two categories: each detection is reported for both, with the same presence score
    by_cat = {c: [d["score"] for d in preds.detections if d["category_id"] == c] for c in (CAT, DOG)}
    assert by_cat[CAT] == by_cat[DOG]
    assert preds.presence[0]["score"] == preds.presence[1]["score"]


def test_predict_reports_a_missing_image(segmenter, coco_files):
    gt, images = coco_files
    (images / "img2.png").unlink()
    with pytest.raises(EvalDataError, match="img2.png: no such file"):
        predict(segmenter, load_coco_gt(gt, images))


def test_plots_are_valid_pngs(coco_files, tmp_path):
    report = evaluate(load_coco_gt(*coco_files), Predictions(perfect_detections()))
    for path in write_plots(report, tmp_path / "plots"):
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        assert Image.open(path).size[0] > 300


# ---------------------------------------------------------------------------- CLI
def _eval(args):
    from sam3studio.cli import app

    return runner.invoke(app, ["eval", *args])


def _png_ok(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000
    with Image.open(path) as im:
        im.verify()


def test_cli_end_to_end_with_the_tiny_model(tiny_checkpoint, coco_files, tmp_path):
    gt, images = coco_files
    out, saved = tmp_path / "report", tmp_path / "preds.json"
    res = _eval([str(gt), "--images", str(images), "--model", str(tiny_checkpoint), "--device", "cpu",
                 "--dtype", "float32", "--out", str(out), "--save-predictions", str(saved), "-t", "0.2"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["dataset"]["images"] == 3 and report["dataset"]["pairs"] == 6
    assert report["score_threshold"] == 0.2 and len(report["sweep"]) == 19
    assert set(report["ap"]) == {"segm", "bbox"} and report["latency"]["images"] == 3
    assert [r["name"] for r in report["per_category"]] == ["cat", "dog"]
    _png_ok(out / "pr_curves.png")
    _png_ok(out / "f1_vs_threshold.png")
    assert "cgF1" in res.output and "presence" in res.output
    # the saved predictions evaluate to the same report without a model
    out2 = tmp_path / "report2"
    res2 = _eval([str(gt), "--predictions", str(saved), "--out", str(out2), "-t", "0.2",
                  "--model", str(tmp_path / "no-such-model")])
    assert res2.exit_code == 0, res2.output
    assert json.loads((out2 / "report.json").read_text()) == report


def test_cli_limit_and_perfect_saved_predictions(coco_files, tmp_path):
    gt, _ = coco_files
    preds = tmp_path / "perfect.json"
    Predictions(perfect_detections()).save(preds)
    res = _eval([str(gt), "--predictions", str(preds), "--out", str(tmp_path / "o"), "--limit", "2"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["dataset"]["images"] == 2 and report["ignored_detections"] == 0
    assert report["ap"]["segm"]["AP"] == pytest.approx(1.0, abs=1e-6) and report["cgf1"]["cgF1"] is not None
    assert report["presence"]["f1"] == 1.0


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing_gt", "no such file"),
        ("malformed_gt", "malformed JSON"),
        ("missing_image", "img3.png: no such file"),
        ("malformed_predictions", "'score' must be a number"),
        ("bad_mapping", "must be a JSON object"),
        ("bad_threshold", "--threshold must be in"),
    ],
)
def test_cli_bad_input_is_one_line_and_nonzero(coco_files, tmp_path, setup, message):
    gt, images = coco_files
    args = [str(gt), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "no-model")]
    if setup == "missing_gt":
        args[0] = str(tmp_path / "nope.json")
    elif setup == "malformed_gt":
        gt.write_text('{"images": [')
    elif setup == "missing_image":
        (images / "img3.png").unlink()
        args += ["--images", str(images)]
    elif setup == "malformed_predictions":
        bad = tmp_path / "p.json"
        bad.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": "high"}]))
        args += ["--predictions", str(bad)]
    elif setup == "bad_mapping":
        bad = tmp_path / "m.json"
        bad.write_text("[1, 2]")
        args += ["--mapping", str(bad)]
    elif setup == "bad_threshold":
        args += ["--threshold", "0"]
    res = _eval(args)
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], res.output
    assert not (tmp_path / "o" / "report.json").exists()


def test_importing_the_evaluation_package_loads_neither_torch_nor_matplotlib():
    import subprocess
    import sys

    code = ("import sys, sam3studio.evaluation, sam3studio.cli.eval; "
            "bad = [m for m in ('torch', 'matplotlib', 'transformers') if m in sys.modules]; "
            "assert not bad, bad; import sam3studio.cli")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
