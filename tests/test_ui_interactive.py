"""The image tab's prompt modes in a real browser: draw exemplar boxes, then refine an object by clicks (undo, clear).

Runs `sam3studio serve` on the tiny sam3_video checkpoint, which has the tracker click refinement needs.
"""

from __future__ import annotations

import json
import re

import pytest

from _browser import TIMEOUT_MS
from _server import running_server
from test_ui_browser import IDLE_JS, _grid_row_count, _table_rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def video_server_url(tiny_video_checkpoint):
    with running_server(tiny_video_checkpoint) as url:
        yield url


@pytest.fixture
def page(browser):  # noqa: F811
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    context.close()


def _click_image_at(page, x: float, y: float, width: int = 451) -> None:
    """Click the canvas at pixel (x, y) of the ``width``-pixel-wide image, whatever size the page shows it at.

    The canvas draws a small image a whole number of times larger (`ui.marks.canvas_scale`), and Gradio shows it
    centred in its box, at most at its own size: the same arithmetic as Gradio's own click coordinates.
    """
    img = page.locator("#canvas img").first
    img.wait_for()
    # Let the layout settle (the hint under the canvas appears with it), then bring the canvas into view.
    page.wait_for_function("() => (document.querySelector('#marks')?.innerText ?? '').trim() !== ''")
    # ...and let every event still under way answer (a click on a canvas being redrawn is lost).
    page.wait_for_function(IDLE_JS)
    page.wait_for_timeout(300)
    img.scroll_into_view_if_needed()
    _until_still(img)
    box = img.bounding_box()
    natural_w, natural_h = img.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    k = natural_w / width
    scale = min(box["width"] / natural_w, box["height"] / natural_h, 1)
    left = box["x"] + (box["width"] - natural_w * scale) / 2
    top = box["y"] + (box["height"] - natural_h * scale) / 2
    page.mouse.click(left + (x * k + 0.5) * scale, top + (y * k + 0.5) * scale)


STILL_JS = """i => new Promise(done => {
    const a = i.getBoundingClientRect();
    requestAnimationFrame(() => requestAnimationFrame(() => {
        const b = i.getBoundingClientRect();
        done(i.complete && i.naturalWidth > 0 && a.x === b.x && a.y === b.y && a.width === b.width);
    }));
})"""


def _until_still(img) -> None:
    """Wait until the image is loaded and has not moved between two frames (the layout has settled)."""
    for _ in range(200):
        if img.evaluate(STILL_JS):
            return
    raise AssertionError("the canvas never stopped moving")


def _wait_text(page, selector: str, pattern: str) -> str:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function("([sel, pat]) => new RegExp(pat).test(document.querySelector(sel)?.innerText ?? '')",
                               arg=[selector, pattern])
    except PlaywrightTimeout:
        shown = page.evaluate("sel => document.querySelector(sel)?.innerText", selector)
        raise AssertionError(f"{selector} never matched {pattern!r}; it shows {shown!r}") from None
    return page.locator(selector).inner_text()


def _numbers(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", text)]


def test_draw_boxes_then_refine_by_clicks(video_server_url, page, cat_photo, tmp_path):
    from PIL import Image
    from playwright.sync_api import expect

    image_path = tmp_path / "chelsea.png"
    Image.fromarray(cat_photo).save(image_path)
    page.goto(video_server_url)
    page.wait_for_selector("#run")
    page.locator("#model-banner").get_by_text(re.compile("Untrained demo model")).wait_for()
    page.locator("#input-image input[type=file]").set_input_files(str(image_path))
    page.locator("#input-image img").first.wait_for()
    number = page.locator("#threshold input[type=number]")
    number.fill("0.05")
    number.press("Enter")

    # Example boxes: two clicks per box, a positive one and a negative one; the canvas lists them in image pixels.
    page.locator("#mode").get_by_label("Example boxes").check()
    _click_image_at(page, 120, 40)
    _wait_text(page, "#marks", r"first corner at \(120, 40\)")
    _click_image_at(page, 330, 240)
    marks = _wait_text(page, "#marks", r"1 box\(es\)")
    assert _numbers(marks.split(":", 1)[1]) == pytest.approx([120, 40, 330, 240], abs=1.5)
    page.locator("#polarity").get_by_label("negative").check()
    _click_image_at(page, 10, 250)
    _click_image_at(page, 60, 290)
    marks = _wait_text(page, "#marks", r"2 box\(es\)")
    assert "−[" in marks and "+[" in marks
    page.locator("#undo").click()
    _wait_text(page, "#marks", r"1 box\(es\)")

    # Segment with the box alone (no prompt): SAM 3 reads it as the "visual" query.
    page.locator("#run").click()
    _wait_text(page, "#status", "image encoding")
    _wait_text(page, "#prompt-summary", "visual")
    before = _grid_row_count(page)

    # Click refinement on a new object: each click updates the mask; undo and clear step back. The clicks go on
    # the large image of the result column (the canvas takes the annotated result's place), not on a small copy.
    page.locator("#mode").get_by_label("Click to refine").check()
    page.locator("#target").wait_for()
    expect(page.locator("#result")).to_be_hidden()
    assert page.locator("#canvas").bounding_box()["width"] > 700
    page.locator("#polarity").get_by_label("positive").check()
    page.locator("#target input").click()
    page.get_by_role("option", name="a new object").click()
    _click_image_at(page, 200, 150)
    status = _wait_text(page, "#status", r"refined with 1 click")
    assert "predicted IoU" in status
    marks = _wait_text(page, "#marks", r"1 click\(s\)")
    assert _numbers(marks.split(":", 1)[1]) == pytest.approx([200, 150], abs=1.5)
    page.wait_for_function("n => { const g = document.querySelector('#instances [role=grid]');"
                           " return g && +g.getAttribute('aria-rowcount') - 1 === n; }", arg=before + 1)
    # The target list follows the refinement: the new object is offered with its values (no stale list).
    iou = status.rsplit("predicted IoU", 1)[1].strip()
    page.locator("#target input").click()
    # No detection score for an object made by clicks: its label gives SAM's predicted IoU, named as such.
    expect(page.get_by_role("option", name=re.compile(rf"^#{before} object · IoU {re.escape(iou)}$"))).to_have_count(1)
    page.keyboard.press("Escape")
    expect(page.get_by_role("option")).to_have_count(0)
    page.locator("#polarity").get_by_label("negative").check()
    _click_image_at(page, 40, 40)
    _wait_text(page, "#status", r"refined with 2 click")
    assert "−(" in _wait_text(page, "#marks", r"2 click\(s\)")
    page.locator("#undo").click()
    _wait_text(page, "#status", r"refined with 1 click")
    _wait_text(page, "#marks", r"1 click\(s\)")

    # Moving mask precision while refining re-runs the refinement, not the segmentation: the object stays.
    precision = page.locator("#mask-threshold input[type=number]")
    previous = page.locator("#status").inner_text()
    precision.fill("0.3")
    precision.press("Enter")
    # Event-based: the status line is written again by the re-run (its timing differs), then checked.
    page.wait_for_function("prev => { const s = document.querySelector('#status');"
                           " return s && s.innerText.trim() !== prev.trim(); }", arg=previous)
    _wait_text(page, "#status", r"refined with 1 click")
    assert _grid_row_count(page) == before + 1
    # Honest values: the new object has no detection score, and its predicted IoU has its own column.
    new_row = _table_rows(page)[-1]
    assert new_row[1] == "object" and new_row[2] == "" and 0 <= float(new_row[3]) <= 1, new_row

    # The downloads describe the refined result: the new object is the last instance, labelled "object".
    link = page.locator("#downloads a[download='result.json']")
    with page.expect_download() as download_info:
        link.click()
    saved = tmp_path / "result.json"
    download_info.value.save_as(saved)
    doc = json.loads(saved.read_text())
    assert len(doc["instances"]) == before + 1 and doc["instances"][-1]["prompt"] == "object"
    assert doc["instances"][-1]["area"] > 0
    assert doc["instances"][-1]["score"] is None and 0 <= doc["instances"][-1]["predicted_iou"] <= 1
    assert doc["prompts"][-1]["text"] == "object" and doc["prompts"][-1]["presence_score"] is None

    page.locator("#clear").click()
    _wait_text(page, "#status", "no clicks")
    page.wait_for_function("n => +document.querySelector('#instances [role=grid]').getAttribute('aria-rowcount') - 1 === n",
                           arg=before)
