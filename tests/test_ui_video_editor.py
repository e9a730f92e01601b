"""The Video tab's editor in a real browser (Playwright, Chromium) against `sam3studio serve` on the tiny video
checkpoint: open a video as a session, find objects by text, click to add and fix an object, propagate both ways
with a progress bar, remove an object, download the results, and the editor in Chinese."""

from __future__ import annotations

import json
import re

import pytest

from _server import running_server
from conftest import make_test_video
from test_ui_interactive import _wait_text

pytestmark = pytest.mark.slow

W, H = 96, 72


@pytest.fixture(scope="module")
def editor_url(tiny_video_checkpoint, tmp_path_factory):
    env = {"SAM3STUDIO_DATA_DIR": str(tmp_path_factory.mktemp("editor-data"))}
    with running_server(tiny_video_checkpoint, timeout_s=300, extra_env=env) as url:  # the UI makes start-up slower
        yield url


def _rows(page) -> list[list[str]]:
    return page.locator("#editor-objects [role=grid]").evaluate(
        """grid => [...grid.querySelectorAll('[role=row].virtual-row')]
                  .map(row => [...row.querySelectorAll('[role=gridcell]')].map(cell => cell.innerText.trim()))""")


def _click_frame(page, x: float, y: float) -> None:
    """Click the editor's frame at frame pixel (x, y), whatever size the page shows it at."""
    img = page.locator("#editor-view img").first
    img.wait_for()
    img.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    box = img.bounding_box()
    width, height = img.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    assert (width, height) == (W, H)
    page.mouse.click(box["x"] + (x + 0.5) * box["width"] / width, box["y"] + (y + 0.5) * box["height"] / height)


def _set_number(page, selector: str, value: float) -> None:
    number = page.locator(f"{selector} input[type=number]")
    number.fill(str(value))
    number.press("Enter")


def test_correct_a_video_in_the_editor(editor_url, page, tmp_path):
    clip = make_test_video(tmp_path / "clip.mp4", n=8, width=W, height=H, fps=12)
    page.goto(editor_url)
    page.get_by_role("tab", name="Video").click()
    page.locator("#input-video input[type=file]").set_input_files(str(clip))
    page.locator("#input-video video").first.wait_for()
    page.locator("#editor-open").click()
    _wait_text(page, "#editor-status", "Session open: 8 frames, 96x72")

    # Text on frame 0: objects found by the detector.
    _set_number(page, "#editor-threshold", 0.1)
    page.locator("#editor-prompt textarea").fill("red car")
    page.locator("#editor-find").click()
    found = int(re.search(r"(\d+) new object", _wait_text(page, "#editor-status", r"new object\(s\) on frame 0"))[1])
    assert found >= 1
    page.wait_for_function(f"() => document.querySelectorAll('#editor-objects [role=row].virtual-row').length === {found}")

    # Frame 4: a click adds a new object, picked at once; a negative click fixes it.
    _set_number(page, "#editor-frame", 4)
    page.wait_for_timeout(500)
    _click_frame(page, 48, 36)
    status = _wait_text(page, "#editor-status", r"Object #\d+ on frame 4")
    new_id = int(re.search(r"#(\d+)", status)[1])
    assert new_id == found + 1
    page.locator("#editor-polarity").get_by_label("negative (−)").check()
    _click_frame(page, 60, 20)
    _wait_text(page, "#editor-status", rf"Object #{new_id} on frame 4")
    rows = _rows(page)
    assert [r[0] for r in rows] == [str(i) for i in range(1, new_id + 1)] and rows[-1][2] == "clicks"

    # Propagate both ways: the progress bar, then every frame.
    page.locator("#editor-propagate").click()
    page.locator("#editor-status .progress-text, .progress-text").first.wait_for(timeout=120_000)
    _wait_text(page, "#editor-status", r"Propagated \d+ frame\(s\)")
    present = {r[0]: int(r[4]) for r in _rows(page)}
    assert present[str(new_id)] >= 2, present

    # Remove the clicked object (still picked): gone from the table and every frame.
    page.locator("#editor-remove").click()
    _wait_text(page, "#editor-status", rf"Object #{new_id} removed from \d+ frame\(s\)")
    page.wait_for_function(f"() => document.querySelectorAll('#editor-objects [role=row].virtual-row').length === {found}")

    # Download: the session's results, the removed object nowhere in them.
    page.locator("#editor-download").click()
    _wait_text(page, "#editor-status", "4 file")
    link = page.locator("#editor-files a[download='ytvis.json']")
    with page.expect_download() as download:
        link.click()
    saved = tmp_path / "ytvis.json"
    download.value.save_as(saved)
    data = json.loads(saved.read_text())
    assert data["videos"][0]["length"] == 8 and new_id not in [a["id"] for a in data["annotations"]]

    # The editor speaks Chinese too.
    page.locator("#language").get_by_label("中文").check()
    _wait_text(page, "#editor-open", "在编辑器中打开")
    _wait_text(page, "#editor-propagate", "传播")
