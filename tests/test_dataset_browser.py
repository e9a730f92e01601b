"""The Review tab in a real browser (Playwright + Chromium) against `sam3studio serve` with a dataset.

Accept, delete, relabel (keys and buttons), add an instance by clicks (the tiny sam3_video checkpoint has the
tracker), reload the page and find every change; then two tabs on one image: the stale one is refused and
reloaded, and both changes are kept.
"""

from __future__ import annotations

import json
import re

import httpx
import numpy as np
import pytest
from PIL import Image

from _browser import TIMEOUT_MS
from _server import running_server
from sam3studio.dataset.store import DatasetStore

pytestmark = pytest.mark.slow

W, H = 96, 72  # shown scaled up to 640 x 480


def _rect(y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


@pytest.fixture(scope="module")
def review_server(tmp_path_factory, tiny_video_checkpoint):
    root = tmp_path_factory.mktemp("review")
    rng = np.random.default_rng(0)
    store = DatasetStore.create(root / "ds", ["cat", "dog"])
    paths = []
    for k in range(3):
        img = (rng.random((H, W, 3)) * 80).astype(np.uint8)
        img[10:40, 10:40] = (220, 60, 40)
        img[45:65, 55:90] = (40, 90, 220)
        paths.append(root / f"photo{k}.png")
        Image.fromarray(img).save(paths[-1])
    store.add_images((str(p), p.name) for p in paths)
    for image_id in (1, 2, 3):
        rows = [{"class_id": 0, "score": 0.9, **store.instance_fields(_rect(10, 40, 10, 40), W, H)},
                {"class_id": 1, "score": 0.5, **store.instance_fields(_rect(45, 65, 55, 90), W, H)},
                {"class_id": 0, "score": 0.2, **store.instance_fields(_rect(2, 8, 70, 80), W, H)}]
        store.store_proposals(image_id, W, H, rows)
    store.close()
    env = {"SAM3STUDIO_DATASETS": json.dumps([str(root / "ds")])}
    with running_server(tiny_video_checkpoint, extra_env=env) as url:
        yield url, root / "ds"


def _progress(page) -> str:
    return page.locator("#review-progress").inner_text()


def _wait_text(page, selector: str, pattern: str) -> str:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function("([sel, pat]) => new RegExp(pat).test(document.querySelector(sel)?.innerText ?? '')",
                               arg=[selector, pattern])
    except PlaywrightTimeout:
        shown = page.evaluate("sel => document.querySelector(sel)?.innerText", selector)
        raise AssertionError(f"{selector} never matched {pattern!r}; it shows {shown!r}") from None
    return page.locator(selector).inner_text()


ROW_COUNT_JS = """n => { const g = document.querySelector('#review-instances [role=grid]');
                        return g && g.querySelectorAll('[role=row].virtual-row').length === n; }"""


def _rows(page, n: int | None = None) -> list[list[str]]:
    """The instances table's rows; with ``n``, once the table shows that many (it is written after the progress
    line, so a loaded machine may read it in between)."""
    if n is not None:
        page.wait_for_function(ROW_COUNT_JS, arg=n)
    return page.locator("#review-instances [role=grid]").evaluate(
        """grid => [...grid.querySelectorAll('[role=row].virtual-row')]
                  .map(row => [...row.querySelectorAll('[role=gridcell]')].map(cell => cell.innerText.trim()))""")


def _click_canvas(page, x: float, y: float) -> None:
    """Click image pixel (x, y) of the canvas: the image is drawn 640/96 times larger, and fitted into the box."""
    img = page.locator("#review-canvas img").first
    img.wait_for()
    page.wait_for_function("() => { const i = document.querySelector('#review-canvas img'); "
                           "return i && i.complete && i.naturalWidth > 0; }")
    img.scroll_into_view_if_needed()
    left, top, scale, natural = img.evaluate(
        """i => { const r = i.getBoundingClientRect(); const fit = getComputedStyle(i).objectFit;
                  let s = Math.min(r.width / i.naturalWidth, r.height / i.naturalHeight);
                  if (fit === 'scale-down') s = Math.min(1, s); if (fit === 'none') s = 1;
                  return [r.x + (r.width - i.naturalWidth * s) / 2, r.y + (r.height - i.naturalHeight * s) / 2, s,
                          i.naturalWidth]; }""")
    k = natural / W
    page.mouse.click(left + (x + 0.5) * k * scale, top + (y + 0.5) * k * scale)


def _pick(page, selector: str, option: str) -> None:
    page.locator(f"{selector} input").click()
    page.get_by_role("option", name=option, exact=True).click()
    page.evaluate("() => document.activeElement?.blur()")  # keys typed into a field are not shortcuts


def _open(page, url: str) -> None:
    page.goto(url)
    _wait_text(page, "#review-progress", r"of 3 reviewed")  # a server given datasets opens on the Review tab
    # the tiny checkpoint is marked untrained
    page.locator("#model-banner").get_by_text(re.compile("Untrained demo model")).wait_for()


def test_review_accept_delete_relabel_add_by_clicks_and_reload(review_server, page):
    url, folder = review_server
    _open(page, url)
    assert "image 1 of 3 shown · photo0.png · unreviewed" in _progress(page)
    assert [r[1] for r in _rows(page, 3)] == ["cat", "dog", "cat"]

    # Relabel: select the blue object (#2, dog) by a click on it, pick "cat", press r.
    _click_canvas(page, 70, 55)
    page.wait_for_function("() => document.querySelector('#review-selected input')?.value.startsWith('#2')")
    _pick(page, "#review-class-pick", "cat")
    page.locator("body").press("r")
    _wait_text(page, "#review-status", r"instance #2 is now cat")
    # Delete: select #3 with the instance buttons (. twice from #2 -> #3), press d.
    page.locator("#review-inst-next").click()
    page.wait_for_function("() => document.querySelector('#review-selected input')?.value.startsWith('#3')")
    page.locator("body").press("d")
    _wait_text(page, "#review-status", r"instance #3 deleted")
    assert [r[0] for r in _rows(page, 2)] == ["1", "2"]

    # Add by clicks: mode "adds an instance by clicks", class dog; two clicks, each saved at once.
    page.locator("#review-mode").get_by_label("adds an instance by clicks").check()
    _pick(page, "#review-class-pick", "dog")
    _click_canvas(page, 20, 60)
    _wait_text(page, "#review-status", r"saved: instance #\d+ from 1 click")
    page.locator("#review-polarity").get_by_label("negative (−)").check()
    _click_canvas(page, 5, 5)
    status = _wait_text(page, "#review-status", r"saved: instance #\d+ from 2 click")
    added = int(re.search(r"#(\d+)", status).group(1))
    rows = _rows(page, 3)
    assert [r[0] for r in rows] == ["1", "2", str(added)] and rows[-1][1:2] == ["dog"] and rows[-1][3] == "clicks"
    assert "corrected" in _progress(page)

    # Accept with the key: saved, and the next image is shown.
    page.locator("#review-mode").get_by_label("selects an instance").check()
    page.locator("body").press("a")
    _wait_text(page, "#review-progress", r"1 of 3 reviewed.*image 2 of 3 shown")
    assert "photo0.png is corrected" in page.locator("#review-status").inner_text()
    page.locator("body").press("a")  # image 2 unchanged: accepted
    _wait_text(page, "#review-progress", r"2 of 3 reviewed.*image 3 of 3")

    # Reload: a new page starts at the next unreviewed image and finds every change where it was made.
    page.reload()
    _wait_text(page, "#review-progress", r"2 of 3 reviewed \(accepted 1 · corrected 1 · skipped 0 · unreviewed 1\)"
                                         r".*photo2.png")
    page.locator("body").press("p")
    _wait_text(page, "#review-progress", r"photo1.png · accepted")
    page.locator("body").press("p")
    _wait_text(page, "#review-progress", r"photo0.png · corrected")
    rows = _rows(page, 3)
    assert [(r[0], r[1], r[3]) for r in rows] == [("1", "cat", "model"), ("2", "cat", "model"), (str(added), "dog", "clicks")]
    # The store says the same (what the REST API and an export read).
    body = httpx.get(f"{url}/api/v1/datasets/ds/images/1").json()
    assert [(i["id"], i["class_name"], i["origin"]) for i in body["instances"]] == [
        (1, "cat", "model"), (2, "cat", "model"), (added, "dog", "clicks")]
    assert body["state"] == "corrected"


def test_two_tabs_on_one_image_never_lose_an_update(review_server, browser):
    url, _ = review_server
    contexts = [browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in range(2)]
    try:
        a, b = (c.new_page() for c in contexts)
        for p in (a, b):
            p.set_default_timeout(TIMEOUT_MS)
            _open(p, url)
            _wait_text(p, "#review-progress", r"photo2.png")  # both on the same (last unreviewed) image
        # Tab B selects the blue object; then tab A deletes the red one; then B, still on the version it read,
        # relabels: refused, reloaded (B now shows A's deletion), and B applies its change again.
        _click_canvas(b, 70, 55)
        b.wait_for_function("() => document.querySelector('#review-selected input')?.value.startsWith('#')")
        _pick(b, "#review-class-pick", "cat")
        _click_canvas(a, 20, 20)
        a.wait_for_function("() => document.querySelector('#review-selected input')?.value.startsWith('#')")
        a.locator("#review-delete").click()
        _wait_text(a, "#review-status", r"deleted")
        b.locator("#review-relabel").click()
        _wait_text(b, "#review-status", r"changed in another tab")
        assert len(_rows(b, 2)) == 2  # B now shows A's deletion
        _click_canvas(b, 70, 55)
        b.wait_for_function("() => document.querySelector('#review-selected input')?.value.startsWith('#')")
        b.locator("#review-relabel").click()
        _wait_text(b, "#review-status", r"is now cat")
        body = httpx.get(f"{url}/api/v1/datasets/ds/images/3").json()
        assert [i["class_name"] for i in body["instances"]] == ["cat", "cat"]  # A's delete and B's relabel both kept
    finally:
        for c in contexts:
            c.close()
