"""The image tab's handlers called directly (no server, no browser): what they return for the panels."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from sam3studio.service import SegmentService
from sam3studio.settings import Settings
from sam3studio.ui.app import model_banner
from sam3studio.ui.common import UiContext, display_source, in_range, readable
from sam3studio.ui.image_tab import UNTRAINED_THRESHOLD, ImageState, ImageTab, default_threshold
from sam3studio.ui.marks import canvas_scale


@pytest.fixture(scope="module")
def service(tiny_checkpoint) -> SegmentService:
    from sam3studio import load_segmenter

    segmenter = load_segmenter(str(tiny_checkpoint), device="cpu", dtype="float32")
    return SegmentService(Settings(model=str(tiny_checkpoint), device="cpu"), segmenter=segmenter)


def _tab(service: SegmentService) -> ImageTab:
    with gr.Blocks():
        lang = gr.Radio(["en", "zh"], value="en")
        return ImageTab(UiContext(service, language=lang, first_lang="en"))


@pytest.fixture(scope="module")
def tab(service) -> ImageTab:
    return _tab(service)


@pytest.fixture
def cat_png(tmp_path, cat_photo) -> str:
    path = tmp_path / "chelsea.png"
    Image.fromarray(cat_photo).save(path)
    return str(path)


def _run(tab: ImageTab, image, prompt="cat, dog", threshold=0.1, lang="en", state=None) -> dict:
    return tab.run(image, prompt, threshold, 0.5, 0, 0, 0, lang, "text", state or ImageState())


def test_no_instances_offer_no_downloads(tab, cat_png):
    none = _run(tab, cat_png, threshold=0.95)
    assert none[tab.table]["data"] == []
    assert none[tab.downloads] is None and none[tab.downloads_box]["visible"] is False
    some = _run(tab, cat_png, threshold=0.1)
    assert some[tab.table]["data"]
    assert len(some[tab.downloads]) == 4 and some[tab.downloads_box]["visible"] is True


def test_the_result_is_written_again_in_another_language_from_the_state(tab, cat_png):
    out = _run(tab, cat_png)
    state: ImageState = out[tab.state]
    rows = out[tab.table]["data"]
    zh = tab.words(state, "zh")
    assert zh[tab.table]["headers"][:2] == ["编号", "提示词"] and zh[tab.table]["data"] == rows
    assert "图像编码" in zh[tab.status] and "image encoding" in out[tab.status]
    assert "个实例" in zh[tab.prompts_md]
    assert zh[tab.details_md] == "把鼠标移到掩码上可看标签和得分；点击掩码查看详情。"
    # A click on a mask (its legend index) selects it; the details line then follows the language too.
    picked = tab.show_details(state, "en", gr.SelectData(None, {"index": 1, "value": "x"}))
    assert picked[tab.details_md].startswith(f"**#{rows[1][0]} {rows[1][1]}** · score")
    again = tab.words(picked[tab.state], "zh")[tab.details_md]
    assert again.startswith(f"**#{rows[1][0]} {rows[1][1]}** · 得分")
    assert tab.words(None, "zh")[tab.table]["data"] == []  # a page that opens has no result yet


def test_a_slider_value_out_of_range_is_clamped_and_said(tab, cat_png):
    with pytest.warns(UserWarning, match=r"Detection threshold: 1.5 is outside 0.05 – 0.95; 0.95 was used"):
        out = tab.run(cat_png, "cat", 1.5, 0.5, 0, 0, 0, "en", "text", ImageState())
    assert out[tab.state].threshold == 0.95
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert in_range("en", tab.threshold, 0.3, "threshold") == 0.3  # in range: nothing said


def test_without_a_model_one_warning_one_log_line_and_no_panel_changes(tiny_checkpoint, cat_png, caplog):
    failed = SegmentService(Settings(model="/nonexistent/sam3", device="cpu"))
    failed.load()
    tab = _tab(failed)
    caplog.clear()
    with caplog.at_level(logging.INFO), pytest.warns(UserWarning, match="could not be loaded") as said:
        out = _run(tab, cat_png)
    assert out == gr.skip()
    assert len(said) == 1
    ui_lines = [r for r in caplog.records if r.name == "sam3studio.ui"]
    assert len(ui_lines) == 1 and ui_lines[0].exc_info is None and "/nonexistent/sam3" in ui_lines[0].getMessage()
    assert "could not be loaded" in model_banner(failed, "en")


def test_an_untrained_model_gets_a_banner_and_a_threshold_that_shows_masks(service, tab, cat_png):
    assert service.segmenter.untrained
    assert default_threshold(service) == UNTRAINED_THRESHOLD
    banner = model_banner(service, "en")
    assert "Untrained demo model" in banner and "/" not in banner.split("(")[1].split(",")[0]  # no server path
    assert "未训练的演示模型" in model_banner(service, "zh")
    assert _run(tab, cat_png, threshold=UNTRAINED_THRESHOLD)[tab.table]["data"], "the default must show masks"
    assert default_threshold(SegmentService(Settings(model="facebook/sam3"))) == 0.5
    assert default_threshold(SegmentService(Settings(model="random"))) == UNTRAINED_THRESHOLD  # known before loading


def test_helpers():
    assert readable("run `hf auth login` <now>") == "run <code>hf auth login</code> &lt;now&gt;"
    assert display_source(str(Path(__file__).parent)) == "tests" and display_source("facebook/sam3") == "facebook/sam3"
    assert canvas_scale(451, 300) == 2 and canvas_scale(2000, 1500) == 1 and canvas_scale(224, 224) == 4


def test_picking_the_object_being_refined_again_keeps_its_clicks(tab, cat_png):
    from sam3studio.ui.marks import Marks

    state = ImageState(marks=Marks().point_click(10, 20, 1), target=2)
    assert tab.on_target(cat_png, "click", 2, state, "en") == gr.skip()
    other = tab.on_target(cat_png, "click", 0, state, "en")
    assert other[tab.state].target == 0 and other[tab.state].marks.points == []
