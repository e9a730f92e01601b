"""The Gradio UI end to end through `gradio_client`, against a real `sam3studio serve` subprocess."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from _server import server_url  # noqa: F401  (module-scoped fixture)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(server_url, tmp_path_factory):  # noqa: F811
    from gradio_client import Client

    return Client(server_url, verbose=False, download_files=str(tmp_path_factory.mktemp("gradio-downloads")))


@pytest.fixture
def cat_png(tmp_path, cat_photo) -> str:
    from PIL import Image

    path = tmp_path / "chelsea.png"
    Image.fromarray(cat_photo).save(path)
    return str(path)


def _segment(client, image, prompt: str, threshold: float = 0.1, lang: str = "en"):
    """The result panel's six outputs (the rest feed the drawing canvas of the box and click modes)."""
    from gradio_client import handle_file

    out = client.predict(handle_file(image) if image else None, prompt, threshold, 0.5, 0, 0, 0, lang,
                         api_name="/segment")
    return out[:6]


def test_segment_endpoint_returns_consistent_outputs(client, cat_png):
    from PIL import Image

    result, table, summary, downloads, status, details = _segment(client, cat_png, "cat, dog")

    # The annotated image: the photo itself plus one mask per instance, each labelled with its prompt.
    assert Image.open(result["image"]).size == (451, 300)
    annotations = result["annotations"]
    assert annotations, "threshold 0.1 on the tiny model should give instances"
    for ann in annotations:
        assert ann["label"].split(" · ")[0] in ("cat", "dog")
        assert Image.open(ann["image"]).size == (451, 300)

    # The table: one row per instance, same ids and prompts as the annotations, scores above the threshold.
    assert table["headers"] == ["id", "prompt", "score", "predicted IoU", "area %", "box (x1, y1, x2, y2)"]
    rows = table["data"]
    assert len(rows) == len(annotations)
    labels = [a["label"] for a in annotations]
    assert [(lab.split(" · ")[0], lab.rsplit("#", 1)[1].rstrip(")")) for lab in labels] == [(r[1], str(r[0])) for r in rows]
    for lab, r in zip(labels, rows, strict=True):
        assert float(lab.split(" · ")[1].split(" ")[0]) == pytest.approx(r[2], abs=0.006)
    assert all(r[2] >= 0.1 and r[3] is None and 0 < r[4] <= 100 for r in rows)  # no click refined these: no IoU

    # The prompt summary names both prompts.
    assert "cat" in summary and "dog" in summary
    assert summary.count("\n") == 1

    # Downloads: JSON, overlay, cutout and masks zip; the JSON describes this run.
    names = sorted(Path(p).name for p in downloads)
    assert names == ["result.cutout.png", "result.json", "result.masks.zip", "result.overlay.png"]
    by_name = {Path(p).name: Path(p) for p in downloads}
    doc = json.loads(by_name["result.json"].read_text())
    assert (doc["width"], doc["height"]) == (451, 300)
    assert [p["text"] for p in doc["prompts"]] == ["cat", "dog"]
    assert sum(p["count"] for p in doc["prompts"]) == len(rows)
    assert len(doc["instances"]) == len(rows)
    assert [inst["id"] for inst in doc["instances"]] == [r[0] for r in rows]
    assert Image.open(by_name["result.overlay.png"]).size == (451, 300)
    with zipfile.ZipFile(by_name["result.masks.zip"]) as zf:
        assert len(zf.namelist()) == len(rows)

    # Status line and the details placeholder.
    assert "image encoding" in status and "cpu" in status
    assert details == "Hover a mask for its label and score; click it for its details."


def test_higher_threshold_gives_fewer_instances(client, cat_png):
    low = _segment(client, cat_png, "cat, dog", threshold=0.1)
    high = _segment(client, cat_png, "cat, dog", threshold=0.95)
    assert len(high[1]["data"]) < len(low[1]["data"])
    assert len(high[0]["annotations"]) == len(high[1]["data"])
    assert "no match" in high[2]


def test_empty_prompt_is_reported(client, cat_png):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="prompt is empty"):
        _segment(client, cat_png, "   ")


def test_missing_image_is_reported(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Upload an image"):
        _segment(client, None, "cat")


def test_chinese_prompt_in_the_chinese_ui(client, cat_png):
    """A Chinese prompt reaches the model in English; the page says which query it used and which word it
    did not understand, and every text it returns is Chinese."""
    result, table, summary, downloads, status, details = _segment(client, cat_png, "猫, 咕噜噜的小狗", lang="zh")

    assert table["headers"] == ["编号", "提示词", "得分", "预测 IoU", "面积 %", "框 (x1, y1, x2, y2)"]
    assert {r[1] for r in table["data"]} <= {"猫", "咕噜噜的小狗"}
    assert {a["label"].split(" · ")[0] for a in result["annotations"]} == {r[1] for r in table["data"]}
    assert "**猫** → *cat*" in summary
    assert "**咕噜噜的小狗** → *dog*" in summary
    assert "无法理解：咕噜噜" in summary
    assert "图像编码" in status and "秒" in status
    assert details == "把鼠标移到掩码上可看标签和得分；点击掩码查看详情。"

    by_name = {Path(p).name: Path(p) for p in downloads}
    doc = json.loads(by_name["result.json"].read_text())
    assert [(p["text"], p["query"], p["unknown_words"]) for p in doc["prompts"]] == [
        ("猫", "cat", []), ("咕噜噜的小狗", "dog", ["咕噜噜"])]


def test_errors_in_chinese(client, cat_png):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="请先上传图片"):
        _segment(client, None, "猫", lang="zh")
    with pytest.raises(AppError, match="无法处理：.*咕噜噜"):
        _segment(client, cat_png, "咕噜噜", lang="zh")


def test_language_switch_relabels_the_page(client):
    """The switch relabels every component in place; the result's words (table, summary, status) come from the
    page's state, which an API call does not have (the browser test checks that they follow the switch)."""
    zh = client.predict("zh", api_name="/language")
    en = client.predict("en", api_name="/language")
    assert len(zh) == len(en)
    assert "输入要找的东西" in zh[0] and "Type what to find" in en[0]
    assert "已就绪" in zh[2] or "未训练的演示模型" in zh[2]
    assert "ready on cpu" in en[2] or "Untrained demo model" in en[2]
    zh_labels = {u["label"] for u in zh if isinstance(u, dict) and "label" in u}
    en_labels = {u["label"] for u in en if isinstance(u, dict) and "label" in u}
    assert {"语言", "提示词", "检测阈值", "掩码精度", "实例", "示例照片"} <= zh_labels
    assert {"Language", "Prompts", "Detection threshold", "Mask precision", "Instances", "Example photos"} <= en_labels
    zh_table = next(u["value"] for u in zh if isinstance(u, dict) and u.get("label") == "实例")
    assert zh_table["headers"][:3] == ["编号", "提示词", "得分"]
