"""Clicks to quality: the simulated user's clicks on hand-drawn masks, NoC and mIoU with scripted refiners, and
`sam3studio eval --clicks` on the tiny sam3_video checkpoint (and its one-line refusal of an image-only one)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sam3studio.evaluation.clicks import click_metrics, evaluate_clicks, next_click, simulate_object
from sam3studio.evaluation.data import EvalDataError, load_coco_gt
from sam3studio.results import mask_to_rle

runner = CliRunner()
H, W = 60, 80


def rect(r0, c0, r1, c1, h=H, w=W):
    """Rows r0..r1-1, columns c0..c1-1."""
    m = np.zeros((h, w), bool)
    m[r0:r1, c0:c1] = True
    return m


# ---------------------------------------------------------------------------- the simulated user
def test_first_click_is_positive_at_the_centre_of_a_square():
    # A 21x21 square, rows 10-30, columns 20-40: its one pixel farthest from the boundary is (20, 30).
    assert next_click(rect(10, 20, 31, 41), None) == (30.5, 20.5, True)


def test_the_image_border_counts_as_boundary():
    # A 10x10 square in the corner: farthest from its boundary *including the image border* are rows and columns
    # 4-5 (distance 5); the first in raster order is (4, 4). Ignoring the border would pick (0, 0).
    assert next_click(rect(0, 0, 10, 10), None) == (4.5, 4.5, True)


def test_next_click_goes_into_the_largest_error_region():
    gt = rect(10, 10, 40, 40)
    # missed: the bottom strip rows 35-39 (5 x 30 = 150 px); false: a 15x15 blob elsewhere (225 px): negative, at its centre
    pred = rect(10, 10, 35, 40) | rect(40, 55, 55, 70)
    assert next_click(gt, pred) == (62.5, 47.5, False)
    # without the blob, the missed strip is the largest: positive, on its middle row, first column of the tie
    x, y, positive = next_click(gt, rect(10, 10, 35, 40))
    assert positive and y == 37.5 and 12 <= x < 38
    # a split false region: two 6x6 pieces (36 px each) vs one 7x7 (49 px): the 7x7 wins although the total is smaller
    pred = gt | rect(0, 50, 6, 56) | rect(0, 60, 6, 66) | rect(50, 0, 57, 7)
    assert next_click(gt, pred) == (3.5, 53.5, False)


def test_no_error_means_no_click():
    gt = rect(5, 5, 20, 20)
    assert next_click(gt, gt.copy()) is None


# ---------------------------------------------------------------------------- scripted refiners
def test_a_perfect_refiner_needs_one_click():
    gt = rect(5, 5, 30, 40)
    ious, clicks = simulate_object(lambda img, pts, labels, mask: gt.copy(), None, gt, max_clicks=20)
    assert ious == [1.0] * 20 and len(clicks) == 1
    m = click_metrics([ious, ious], 20)
    assert m["noc85"] == m["noc90"] == 1.0 and m["failed85"] == m["failed90"] == 0.0
    assert m["miou_at_clicks"] == [1.0] * 20


def test_a_refiner_that_never_improves_costs_max_clicks():
    gt = rect(5, 5, 30, 40)
    seen = []

    def stuck(img, points, labels, mask):
        seen.append((points.copy(), labels.copy()))
        return np.zeros_like(gt)

    ious, clicks = simulate_object(stuck, None, gt, max_clicks=7)
    assert ious == [0.0] * 7 and len(clicks) == 7
    assert [len(p) for p, _ in seen] == list(range(1, 8))  # every click so far goes to the refiner each time
    assert all((labels == 1).all() for _, labels in seen)  # all misses: positive clicks
    m = click_metrics([ious], 7)
    assert m["noc85"] == m["noc90"] == 7.0 and m["failed85"] == m["failed90"] == 1.0


def test_noc_and_miou_from_curves():
    curves = [[0.5, 0.87, 0.88, 0.93], [0.91, 0.95, 0.96, 0.97], [0.1, 0.2, 0.3, 0.4]]
    m = click_metrics(curves, 4)
    assert m["noc85"] == pytest.approx((2 + 1 + 4) / 3)
    assert m["noc90"] == pytest.approx((4 + 1 + 4) / 3)
    assert m["failed85"] == pytest.approx(1 / 3) and m["failed90"] == pytest.approx(1 / 3)
    assert m["miou_at_clicks"] == pytest.approx([1.51 / 3, 2.02 / 3, 2.14 / 3, 2.30 / 3])


def test_the_refiner_gets_the_previous_mask_and_the_clicks():
    gt = rect(10, 10, 40, 40)
    calls = []

    def halves(img, points, labels, mask):
        calls.append(None if mask is None else mask.copy())
        return rect(10, 10, 40, 25) if len(points) == 1 else gt.copy()

    ious, clicks = simulate_object(halves, None, gt, max_clicks=3)
    assert ious == [0.5, 1.0, 1.0]
    assert calls[0] is None and calls[1].sum() == 30 * 15
    assert clicks[1][2] is True and clicks[1][0] > 25  # the second click lands in the missed right half


def _coco(tmp_path, n_images=2):
    anns, images = [], []
    for i in range(1, n_images + 1):
        m = rect(10, 10 + 5 * i, 40, 45 + 5 * i)
        img = np.full((H, W, 3), 30, np.uint8)
        img[m] = (200, 180, 40)
        Image.fromarray(img).save(tmp_path / f"img{i}.png")
        images.append({"id": i, "file_name": f"img{i}.png", "width": W, "height": H})
        anns.append({"id": i, "image_id": i, "category_id": 1, "iscrowd": 0, "segmentation": mask_to_rle(m),
                     "bbox": [10.0 + 5 * i, 10.0, 35.0, 30.0], "area": float(m.sum())})
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"images": images, "categories": [{"id": 1, "name": "box"}], "annotations": anns}))
    return path


def test_evaluate_clicks_over_a_dataset(tmp_path):
    ds = load_coco_gt(_coco(tmp_path))

    def oracle_after_two(img, points, labels, mask):  # exact from the second click on (the object is the yellow pixels)
        gt = img[..., 0] == 200
        return gt if len(points) >= 2 else np.zeros_like(gt)

    out = evaluate_clicks(oracle_after_two, ds, max_clicks=4)
    assert out["objects"] == 2 and out["noc85"] == 2.0 and out["miou_at_clicks"] == [0.0, 1.0, 1.0, 1.0]
    assert out["per_category"][0]["name"] == "box" and out["latency"]["refinements"] == 4
    with pytest.raises(EvalDataError, match="between 1 and 64"):
        evaluate_clicks(oracle_after_two, ds, max_clicks=0)


# ---------------------------------------------------------------------------- the command
def _cli(args):
    from sam3studio.cli import app

    return runner.invoke(app, ["eval", *args])


@pytest.mark.slow
def test_cli_clicks_with_the_tiny_video_checkpoint(tiny_video_checkpoint, tmp_path):
    gt = _coco(tmp_path, n_images=1)
    out = tmp_path / "out"
    res = _cli([str(gt), "--model", str(tiny_video_checkpoint), "--device", "cpu", "--clicks", "--max-clicks", "3",
                "--out", str(out)])
    assert res.exit_code == 0, res.output
    clicks = json.loads((out / "report.json").read_text())["clicks"]
    assert {"noc85", "noc90", "miou_at_clicks", "failed85", "failed90"} <= set(clicks)
    assert len(clicks["miou_at_clicks"]) == 3 and all(0 <= v <= 1 for v in clicks["miou_at_clicks"])
    assert 1 <= clicks["noc85"] <= 3 and clicks["objects"] == 1
    assert (out / "clicks_miou.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Clicks to quality" in (out / "report.html").read_text()


def test_cli_clicks_refuses_an_image_only_checkpoint_in_one_line(tiny_checkpoint, tmp_path):
    res = _cli([str(_coco(tmp_path, 1)), "--model", str(tiny_checkpoint), "--device", "cpu", "--clicks",
                "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "sam3_video" in errors[0] and "image-only" in errors[0]
    assert not (tmp_path / "out" / "report.json").exists()


def test_cli_rejects_a_bad_max_clicks(tmp_path):
    res = _cli([str(_coco(tmp_path, 1)), "--clicks", "--max-clicks", "99", "--predictions", str(tmp_path / "x.json")])
    assert res.exit_code == 2 and "--max-clicks must be between 1 and 64" in res.output
