"""The web UI in a real browser (Playwright driving Debian's Chromium) against a `sam3studio serve` subprocess.

With SAM3STUDIO_SCREENSHOT=path set, saves a full-page screenshot there (docs/img/ui.png is made this way);
otherwise the screenshot goes to the test's temporary folder, so test runs never modify the repository.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from _browser import TIMEOUT_MS
from _server import server_url  # noqa: F401  (module-scoped fixture)

pytestmark = pytest.mark.slow

SCREENSHOT_ENV = "SAM3STUDIO_SCREENSHOT"


ROWS_JS = "document.querySelectorAll('#instances [role=grid] [role=row].virtual-row')"


def _table_rows(page) -> list[list[str]]:
    """The data rows of the instances table as cell texts (Gradio 6 renders them as div rows in a virtual list)."""
    return page.locator("#instances [role=grid]").evaluate(
        """grid => [...grid.querySelectorAll('[role=row].virtual-row')]
                  .map(row => [...row.querySelectorAll('[role=gridcell]')].map(cell => cell.innerText.trim()))""")


def _grid_row_count(page) -> int:
    """Data rows the table says it has (aria-rowcount counts the header row too)."""
    return int(page.locator("#instances [role=grid]").get_attribute("aria-rowcount")) - 1


def _wait_for_status(page) -> str:
    page.wait_for_function("() => { const s = document.querySelector('#status'); return s && s.innerText.trim() !== ''; }")
    return page.locator("#status").inner_text().strip()


def test_segment_in_the_browser(server_url, page, cat_photo, tmp_path):  # noqa: F811
    from PIL import Image
    from playwright.sync_api import expect

    image_path = tmp_path / "chelsea.png"
    Image.fromarray(cat_photo).save(image_path)

    page.goto(server_url)
    page.wait_for_selector("#run")
    page.locator("#model-banner").get_by_text(re.compile("ready on cpu")).wait_for()

    # Inputs: upload the photo, type two prompts, set the detection threshold to 0.1.
    page.locator("#input-image input[type=file]").set_input_files(str(image_path))
    page.locator("#input-image img").first.wait_for()
    page.locator("#prompt textarea").fill("cat, dog")
    number = page.locator("#threshold input[type=number]")
    number.fill("0.1")
    number.press("Enter")
    assert page.locator("#threshold input[type=range]").input_value() == "0.1"

    # Run: the annotated image, the table, the prompt summary and the status line all fill in.
    page.locator("#run").click()
    page.locator("#result img.base-image").wait_for()
    page.wait_for_function(f"() => {ROWS_JS}.length > 0")
    status = _wait_for_status(page)
    assert "image encoding" in status and "cpu" in status
    rows = _table_rows(page)
    assert len(rows) == _grid_row_count(page) > 0
    assert {r[1] for r in rows} <= {"cat", "dog"}
    assert all(float(r[2]) >= 0.1 for r in rows)
    expect(page.locator("#result img.mask")).to_have_count(len(rows))
    summary = page.locator("#prompt-summary").inner_text()
    assert "cat" in summary and "dog" in summary
    page.locator("#downloads a[download]").first.wait_for()

    # Typing the threshold also fires the slider's `release` (a second run, same inputs): let it settle too.
    page.wait_for_function("() => document.querySelectorAll('.pending, .translucent').length === 0")
    page.wait_for_function("() => [...document.querySelectorAll('#result img, #input-image img')]"
                           ".every(img => img.complete && img.naturalWidth > 0)")
    shot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "ui.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    # Drag the threshold slider to halfway between the lowest and highest score shown: its `release` re-runs
    # post-processing only, from the engine's caches, so the table becomes the first result filtered by the new value.
    scores = sorted(float(r[2]) for r in rows)
    assert scores[-1] - scores[0] > 0.05, f"scores too close together to split with the slider: {scores}"
    target = (scores[0] + scores[-1]) / 2
    slider = page.locator("#threshold input[type=range]")
    box = slider.bounding_box()
    y = box["y"] + box["height"] / 2

    def x_at(value: float) -> float:
        return box["x"] + (value - 0.05) / (0.95 - 0.05) * box["width"]

    page.mouse.move(x_at(0.1), y)
    page.mouse.down()
    page.mouse.move(x_at(target), y, steps=8)
    page.mouse.up()
    new_threshold = float(slider.input_value())
    assert scores[0] < new_threshold <= scores[-1], (new_threshold, scores)
    assert float(number.input_value()) == new_threshold
    expected = sorted((r[1], r[2]) for r in rows if float(r[2]) >= new_threshold)
    page.wait_for_function(f"n => {ROWS_JS}.length === n", arg=len(expected))
    raised = _table_rows(page)
    assert sorted((r[1], r[2]) for r in raised) == expected
    assert _grid_row_count(page) == len(raised)
    expect(page.locator("#result img.mask")).to_have_count(len(raised))
    assert "image encoding" in page.locator("#status").inner_text()

    # Download the JSON through its link: it describes the re-run result.
    link = page.locator("#downloads a[download='result.json']")
    with page.expect_download() as download_info:
        link.click()
    saved = tmp_path / "result.json"
    download_info.value.save_as(saved)
    doc = json.loads(saved.read_text())
    assert (doc["width"], doc["height"]) == (451, 300)
    assert [p["text"] for p in doc["prompts"]] == ["cat", "dog"]
    assert len(doc["instances"]) == len(raised)


def test_error_is_shown_without_an_image(server_url, page):  # noqa: F811
    page.goto(server_url)
    page.wait_for_selector("#run")
    page.locator("#prompt textarea").fill("cat")
    page.locator("#run").click()
    page.get_by_text("Upload an image or pick an example first.").first.wait_for()


def test_page_opens_in_the_browser_language_and_switches(server_url, browser):  # noqa: F811
    """A browser that prefers Chinese gets the Chinese page (server default --lang auto); the switch relabels it."""
    context = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server_url)
        run = page.locator("#run")
        page.wait_for_function("() => document.querySelector('#run')?.innerText.trim() === '分割'")
        page.locator("#model-banner").get_by_text(re.compile("已就绪")).wait_for()
        assert "检测阈值" in page.locator("#threshold").inner_text()
        assert "提示词" in page.locator("#prompt").inner_text()

        page.locator("#language").get_by_text("English").click()
        page.wait_for_function("() => document.querySelector('#run')?.innerText.trim() === 'Segment'")
        assert "Detection threshold" in page.locator("#threshold").inner_text()
        page.locator("#model-banner").get_by_text(re.compile("ready on cpu")).wait_for()
        assert run.inner_text().strip() == "Segment"
    finally:
        context.close()
