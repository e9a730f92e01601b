"""Exemplar boxes: "objects like this one" with or without text, through `Segmenter.segment(boxes=...)`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam3studio.core import BOX_ONLY_QUERY
from sam3studio.errors import InputError


def _baseline_scores(segmenter, image, text, boxes, labels):
    """The documented transformers path: processor with input_boxes, one model call."""
    proc, model = segmenter.processor, segmenter.model
    inputs = proc(images=image, text=text, input_boxes=[boxes], input_boxes_labels=[labels], return_tensors="pt")
    with torch.inference_mode():
        out = model(**inputs)
    presence = torch.sigmoid(out.presence_logits.float()).reshape(-1)
    return np.sort((torch.sigmoid(out.pred_logits.float())[0] * presence[0]).numpy())[::-1]


@pytest.mark.parametrize(("text", "boxes", "labels"), [
    ("cat", [[120, 40, 330, 240]], [1]),
    ("cat", [[120, 40, 330, 240], [0, 0, 60, 60]], [1, 0]),
    (None, [[120, 40, 330, 240]], [1]),
])
def test_boxes_give_what_the_documented_processor_path_gives(segmenter, cat_photo, text, boxes, labels):
    ours = segmenter.segment(cat_photo, text, score_threshold=0.01, mask_threshold=0.01, boxes=boxes, box_labels=labels)
    expected = _baseline_scores(segmenter, cat_photo, text or BOX_ONLY_QUERY, boxes, labels)
    got = np.sort(ours.scores)[::-1]
    np.testing.assert_allclose(got, expected[expected > 0.01][: len(got)], atol=1e-4)
    assert ours.prompts[0].text == (text or BOX_ONLY_QUERY)


def test_box_coordinates_reach_the_model_normalised_on_a_non_square_image(segmenter, monkeypatch):
    """A box drawn on a 400x100 image arrives as (cx, cy, w, h) / (W, H), with its label, for every prompt."""
    image = np.zeros((100, 400, 3), np.uint8)
    seen = {}
    forward = segmenter.model.forward

    def spy(*args, **kwargs):
        seen.update({k: kwargs.get(k) for k in ("input_boxes", "input_boxes_labels")})
        return forward(*args, **kwargs)

    monkeypatch.setattr(segmenter.model, "forward", spy)
    segmenter.segment(image, "cat, dog", boxes=[[40, 10, 120, 50], [200, 0, 400, 100]], box_labels=[1, 0])
    boxes, labels = seen["input_boxes"], seen["input_boxes_labels"]
    assert tuple(boxes.shape) == (2, 2, 4) and tuple(labels.shape) == (2, 2)
    np.testing.assert_allclose(boxes[0].numpy(), [[0.2, 0.3, 0.2, 0.4], [0.75, 0.5, 0.5, 1.0]], atol=1e-6)
    np.testing.assert_array_equal(boxes[1].numpy(), boxes[0].numpy())
    assert labels.tolist() == [[1, 0], [1, 0]]


def test_boxes_change_the_result_and_reuse_the_image_encoding(segmenter, cat_photo):
    segmenter.clear_cache()
    calls = segmenter.stats.vision_encoder_calls
    text_only = segmenter.segment(cat_photo, "cat", score_threshold=0.01)
    with_box = segmenter.segment(cat_photo, "cat", score_threshold=0.01, boxes=[[120, 40, 330, 240]])
    again = segmenter.segment(cat_photo, "cat", score_threshold=0.01, boxes=[[120, 40, 330, 240]])
    assert segmenter.stats.vision_encoder_calls == calls + 1  # one encoding for all three
    assert not np.allclose(np.sort(text_only.scores), np.sort(with_box.scores))
    np.testing.assert_array_equal(with_box.scores, again.scores)  # cached per (image, prompt, boxes)


@pytest.mark.parametrize(("boxes", "labels", "match"), [
    ([[50, 50, 40, 80]], None, "x1 < x2"),
    ([[10, 80, 40, 20]], None, "y1 < y2"),
    ([[-1, 0, 40, 40]], None, "outside the 451x300 image"),
    ([[0, 0, 452, 40]], None, "outside"),
    ([[0, 0, 40]], None, "x1, y1, x2, y2"),
    ("not boxes", None, "boxes must be"),
    ([[0, 0, 40, 40]], [1, 0], "2 box labels for 1 boxes"),
    ([[0, 0, 40, 40]], [2], "1 \\(positive"),
    ([[0, 0, 1, 1]] * 17, None, "limit is 16"),
    ([[0, 0, float("nan"), 40]], None, "finite"),
])
def test_bad_boxes_are_precise_input_errors(segmenter, cat_photo, boxes, labels, match):
    with pytest.raises(InputError, match=match):
        segmenter.segment(cat_photo, "cat", boxes=boxes, box_labels=labels)


def test_labels_without_boxes_and_nothing_at_all_are_errors(segmenter, cat_photo):
    with pytest.raises(InputError, match="box_labels given without boxes"):
        segmenter.segment(cat_photo, "cat", box_labels=[1])
    with pytest.raises(InputError, match="no prompt"):
        segmenter.segment(cat_photo, None)


# ---------------------------------------------------------------------------- the REST API
@pytest.fixture
def client(tiny_checkpoint, segmenter):
    from fastapi.testclient import TestClient

    from sam3studio.api import create_app
    from sam3studio.settings import Settings

    settings = Settings(model=str(tiny_checkpoint), device="cpu", dtype="float32", ui=False)
    with TestClient(create_app(settings, segmenter=segmenter)) as c:
        yield c


@pytest.fixture(scope="module")
def cat_png(cat_photo):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(cat_photo).save(buf, format="PNG")
    return buf.getvalue()


def test_api_boxes_in_json_and_multipart_match_the_library(client, segmenter, cat_photo, cat_png):
    import base64

    box = [[120, 40, 330, 240], [0, 0, 60, 60]]
    direct = segmenter.segment(cat_photo, "cat", score_threshold=0.05, boxes=box, box_labels=[1, 0])
    form = client.post("/api/v1/segment", files={"image": ("cat.png", cat_png, "image/png")},
                       data={"prompt": "cat", "threshold": "0.05", "boxes": "[[120, 40, 330, 240], [0, 0, 60, 60]]",
                             "box_labels": "[1, 0]"})
    assert form.status_code == 200, form.text
    assert [i["score"] for i in form.json()["instances"]] == pytest.approx(direct.scores.tolist(), abs=1e-5)

    only_boxes = client.post("/api/v1/segment", json={"image_base64": base64.b64encode(cat_png).decode(),
                                                      "boxes": [box[0]], "threshold": 0.05})
    assert only_boxes.status_code == 200, only_boxes.text
    assert only_boxes.json()["prompts"][0]["text"] == BOX_ONLY_QUERY
    expected = segmenter.segment(cat_photo, None, score_threshold=0.05, boxes=[box[0]])
    assert len(only_boxes.json()["instances"]) == len(expected)


@pytest.mark.parametrize(("data", "status", "code", "match"), [
    ({"prompt": "cat", "boxes": "[[50, 50, 40, 80]]"}, 400, "bad_input", "x1 < x2"),
    ({"prompt": "cat", "boxes": "[[0, 0, 999, 40]]"}, 400, "bad_input", "outside"),
    ({"prompt": "cat", "boxes": "[[0, 0, 40, 40]]", "box_labels": "[1, 1]"}, 400, "bad_input", "2 box labels"),
    ({"prompt": "cat", "box_labels": "[1]"}, 400, "bad_input", "without boxes"),
    ({"prompt": "cat", "boxes": "[[0, 0, 40"}, 422, "invalid_fields", "not valid JSON"),
    ({"threshold": "0.5"}, 422, "invalid_fields", "or exemplar `boxes`"),
])
def test_api_bad_boxes(client, cat_png, data, status, code, match):
    import re

    resp = client.post("/api/v1/segment", files={"image": ("cat.png", cat_png, "image/png")}, data=data)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code and re.search(match, resp.json()["error"]["message"])


def test_boxes_run_in_bf16_on_the_cpu(tiny_checkpoint, segmenter, cat_photo):
    """bf16 on the CPU: SAM 3's box pooling (torchvision roi_align) fails under CPU autocast, so the box pass
    runs in plain bf16; the scores stay close to float32's."""
    from sam3studio import load_segmenter

    bf16 = load_segmenter(str(tiny_checkpoint), device="cpu", dtype="bfloat16")
    for text in ("cat", None):
        low = bf16.segment(cat_photo, text, score_threshold=0.01, boxes=[[120, 40, 330, 240], [0, 0, 60, 60]],
                           box_labels=[1, 0])
        ref = segmenter.segment(cat_photo, text, score_threshold=0.01, boxes=[[120, 40, 330, 240], [0, 0, 60, 60]],
                                box_labels=[1, 0])
        assert low.prompts[0].text == ref.prompts[0].text
        np.testing.assert_allclose(low.prompts[0].presence_score, ref.prompts[0].presence_score, atol=0.05)
        n = min(len(low), len(ref), 3)
        np.testing.assert_allclose(np.sort(low.scores)[::-1][:n], np.sort(ref.scores)[::-1][:n], atol=0.05)
