"""Where the model fails (size and frequency buckets, per prompt, hardest prompts, failure gallery) and report.html,
down to opening the page in Chromium (Playwright driving Debian's /usr/bin/chromium) with its images.

The synthetic set: 120x120 images; "dot" (small, 5x5 px) on image 1, "tile" (medium, 40x40) on image 2 and
"slab" (large, 100x100) on image 3, one instance each; image 4 is empty. Predictions find the tile and the slab
exactly, miss the dot, and add two false "tile"s on image 4 (scores 0.95 and 0.6).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sam3studio.evaluation import Predictions, evaluate, load_coco_gt
from sam3studio.evaluation.html import render_html, write_html
from sam3studio.results import mask_to_rle

S = 120
DOT, TILE, SLAB = 1, 2, 3
OBJECTS = {DOT: (1, (50, 50, 55, 55)), TILE: (2, (30, 30, 70, 70)), SLAB: (3, (10, 10, 110, 110))}  # x0, y0, x1, y1
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
runner = CliRunner()


def rect(x0, y0, x1, y1):
    m = np.zeros((S, S), bool)
    m[y0:y1, x0:x1] = True
    return m


def det(image_id, category_id, box, score):
    x0, y0, x1, y1 = box
    return {"image_id": image_id, "category_id": category_id, "segmentation": mask_to_rle(rect(*box)),
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "score": score}


@pytest.fixture
def files(tmp_path):
    anns = []
    for cat, (image_id, (x0, y0, x1, y1)) in OBJECTS.items():
        anns.append({"id": cat, "image_id": image_id, "category_id": cat, "iscrowd": 0,
                     "segmentation": mask_to_rle(rect(x0, y0, x1, y1)), "bbox": [x0, y0, x1 - x0, y1 - y0],
                     "area": (x1 - x0) * (y1 - y0)})
    for i in range(1, 5):
        img = np.full((S, S, 3), 60, np.uint8)
        img[::8] = 90
        Image.fromarray(img).save(tmp_path / f"im{i}.png")
    gt = {"images": [{"id": i, "file_name": f"im{i}.png", "width": S, "height": S} for i in range(1, 5)],
          "categories": [{"id": DOT, "name": "dot"}, {"id": TILE, "name": "tile"}, {"id": SLAB, "name": "slab"}],
          "annotations": anns}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    preds = [det(2, TILE, OBJECTS[TILE][1], 0.9), det(3, SLAB, OBJECTS[SLAB][1], 0.8),
             det(4, TILE, (5, 5, 25, 25), 0.95), det(4, TILE, (80, 80, 100, 110), 0.6)]
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    return tmp_path


def _report(files):
    ds = load_coco_gt(files / "gt.json")
    return ds, evaluate(ds, Predictions.load(files / "preds.json"), score_threshold=0.5)


def test_size_buckets_are_cocoevals_area_ranges(files):
    _, report = _report(files)
    size = report.breakdown["by_size"]
    assert [size[k]["instances"] for k in ("small", "medium", "large")] == [1, 1, 1]
    assert size["small"]["AP"] == 0.0 and size["small"]["recall"] == 0.0  # the dot is missed
    assert size["large"]["AP"] == pytest.approx(1.0) and size["large"]["recall@50"] == 1.0
    # the tile is found but the two false tiles (one above it in score) lower its precision
    assert 0 < size["medium"]["AP"] < 1 and size["medium"]["recall"] == 1.0


def test_frequency_buckets_and_per_prompt_counts(files):
    _, report = _report(files)
    freq = report.breakdown["by_frequency"]
    assert freq["rare"]["categories"] == 3 and freq["common"]["categories"] == 0
    assert freq["rare"]["recall@50"] == pytest.approx(2 / 3)
    rows = {r["name"]: r for r in report.per_category}
    assert (rows["tile"]["tp"], rows["tile"]["fp"], rows["tile"]["fn"]) == (1, 2, 0)
    assert (rows["dot"]["tp"], rows["dot"]["fn"]) == (0, 1) and rows["dot"]["recall@50"] == 0.0
    assert rows["slab"]["F1@50"] == 1.0
    assert [h["name"] for h in report.breakdown["hardest_prompts"]] == ["dot", "tile", "slab"]


def test_failure_gallery_lists_the_worst_first(files):
    _, report = _report(files)
    fps = report.failures["false_positives"]
    assert [(f["image_id"], f["score"]) for f in fps] == [(4, 0.95), (4, 0.6)]
    assert all(f["prompt"] == "tile" and f["best_iou"] == 0.0 for f in fps)
    misses = report.failures["misses"]
    assert [(m["image_id"], m["prompt"], m["area"]) for m in misses] == [(1, "dot", 25.0)]
    assert misses[0]["score"] is None  # no detection covered it at all
    data = report.to_dict()  # and all of it is in report.json
    assert data["failures"]["misses"][0]["segmentation"]["size"] == [S, S]


def test_html_is_self_contained_and_escapes_text(files, tmp_path):
    ds, report = _report(files)
    report.per_category[0]["prompt"] = "<script>alert(1)</script>"
    report.failures["false_positives"][0]["prompt"] = '"><img src=x>'
    page = render_html(title="t <b>", image=report, dataset=ds, clicks={"objects": 1, "noc85": 2.0, "noc90": 3.0,
                                                                      "failed85": 0.0, "failed90": 0.0,
                                                                      "miou_at_clicks": [0.5, 0.9, 0.95]})
    assert "<script>" not in page and "<img src=x>" not in page and "t &lt;b&gt;" in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)  # 2 FPs + 1 miss
    assert "http://" not in page and "https://" not in page
    assert "default-src 'none'" in page
    assert "NoC@85" in page and "By object size" in page and "Hardest prompts" in page


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():  # a failure, not a skip: CI installs Chromium (.ci/run)
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.mark.slow
def test_report_html_opens_in_chromium_with_its_images(browser, files, tmp_path):
    from sam3studio.cli import app

    out = tmp_path / "out"
    res = runner.invoke(app, ["eval", str(files / "gt.json"), "--predictions", str(files / "preds.json"),
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    html = out / "report.html"
    assert html.is_file() and str(html) in res.output.replace("\n", "")
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    try:
        page.goto(html.as_uri(), wait_until="load")
        images = page.evaluate("() => [...document.images].map(i => ({ok: i.complete && i.naturalWidth > 0,"
                               " w: i.naturalWidth, alt: i.alt}))")
        headings = page.locator("h2").all_inner_texts()
        rows = page.locator("table").nth(4).locator("tbody tr").count()  # the per-prompt table
    finally:
        page.close()
    # 2 plots + 2 false positives + 1 miss, every one decoded by the browser
    assert len(images) == 5 and all(i["ok"] for i in images), images
    assert {i["alt"] for i in images} >= {"pr_curves", "f1_vs_threshold"}
    assert any(h.startswith("Failure gallery") for h in headings) and "Speed and memory" not in headings
    assert rows == 3
    assert all(u.startswith(("file:", "data:")) for u in requests), requests  # nothing from the network


def test_write_html_without_images_on_disk_draws_on_grey(files, tmp_path):
    ds, report = _report(files)
    for i in range(1, 5):
        (files / f"im{i}.png").unlink()
    path = write_html(tmp_path / "r.html", title="no images", image=report, dataset=ds)
    assert path.read_text().count("data:image/png;base64,") == 3
