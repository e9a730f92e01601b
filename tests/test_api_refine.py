"""POST /api/v1/refine: clicks, a box and a mask to refine, through FastAPI's TestClient."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from sam3studio.api import create_app
from sam3studio.results import rle_to_mask
from sam3studio.settings import Settings
from test_api import _error, _png


@pytest.fixture(scope="module")
def clicker(tiny_video_checkpoint):
    from sam3studio import load_segmenter

    return load_segmenter(str(tiny_video_checkpoint), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def client(tiny_video_checkpoint, clicker):
    settings = Settings(model=str(tiny_video_checkpoint), device="cpu", dtype="float32", ui=False, max_upload_mb=1)
    with TestClient(create_app(settings, segmenter=clicker)) as c:
        yield c


@pytest.fixture(scope="module")
def cat_png(cat_photo):
    return _png(cat_photo)


def _refine(client, png, **fields):
    data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
    return client.post("/api/v1/refine", files={"image": ("cat.png", png, "image/png")}, data=data)


def test_multipart_clicks_give_the_library_result(client, clicker, cat_png, cat_photo):
    resp = _refine(client, cat_png, points=[[200, 150], [40, 40]], point_labels=[1, 0])
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["width"], body["height"]) == (451, 300)
    inst = body["instance"]
    expected = clicker.refine(cat_photo, points=[[200, 150], [40, 40]], point_labels=[1, 0])
    np.testing.assert_array_equal(rle_to_mask(inst["mask"]), expected.mask)
    assert inst["score"] == pytest.approx(expected.score, abs=1e-5)
    assert inst["area"] == expected.area and inst["prompt"] == "object"
    assert inst["box_xyxy"] == pytest.approx(list(expected.box))
    assert body["model"]["source"]


def test_json_box_with_base64_image(client, clicker, cat_png, cat_photo):
    resp = client.post("/api/v1/refine", json={"image_base64": base64.b64encode(cat_png).decode(),
                                               "box": [120, 40, 330, 240], "label": "cat"})
    assert resp.status_code == 200, resp.text
    inst = resp.json()["instance"]
    np.testing.assert_array_equal(rle_to_mask(inst["mask"]), clicker.refine(cat_photo, box=[120, 40, 330, 240]).mask)
    assert inst["prompt"] == "cat"


def test_an_instance_from_segment_is_refined_with_more_clicks(client, clicker, cat_png, cat_photo):
    seg = client.post("/api/v1/segment", files={"image": ("cat.png", cat_png, "image/png")},
                      data={"prompt": "cat", "threshold": "0.01"}).json()
    assert seg["instances"], "precondition: threshold 0.01 on the tiny model finds instances"
    rle = seg["instances"][0]["mask"]
    resp = _refine(client, cat_png, points=[[60, 250]], point_labels=[0], mask=rle)
    assert resp.status_code == 200, resp.text
    expected = clicker.refine(cat_photo, points=[[60, 250]], point_labels=[0], mask=rle_to_mask(rle))
    np.testing.assert_array_equal(rle_to_mask(resp.json()["instance"]["mask"]), expected.mask)


@pytest.mark.parametrize("fmt", ["png_base64", "polygon", "none"])
def test_mask_formats(client, cat_png, fmt):
    resp = _refine(client, cat_png, box=[120, 40, 330, 240], mask_format=fmt)
    assert resp.status_code == 200, resp.text
    mask = resp.json()["instance"]["mask"]
    if fmt == "none":
        assert mask is None
    elif fmt == "png_base64":
        assert Image.open(io.BytesIO(base64.b64decode(mask))).size == (451, 300)
    else:
        assert isinstance(mask, list)


@pytest.mark.parametrize(("fields", "status", "code", "match"), [
    ({"points": [[10, 10]]}, 400, "bad_input", "without point_labels"),
    ({"points": [[10, 10]], "point_labels": [1, 0]}, 400, "bad_input", "1 points, 2 labels"),
    ({"points": [[999, 10]], "point_labels": [1]}, 400, "bad_input", "outside the 451x300 image"),
    ({"box": [50, 50, 40, 80]}, 400, "bad_input", "x1 < x2"),
    ({"box": [1, 2, 3]}, 400, "bad_input", "\\[x1, y1, x2, y2\\]"),
    ({}, 400, "bad_input", "at least one point"),
    ({"box": [0, 0, 10, 10], "mask": {"size": [10, 10], "counts": "PP"}}, 400, "bad_input",
     "mask: the mask is 10x10, the image is 451x300"),
    ({"box": [0, 0, 10, 10], "mask": {"size": [300, 451], "counts": "0ol?ol?"}}, 400, "bad_input", "mask: RLE"),
    ({"points": [[1, 1]] * 65, "point_labels": [1] * 65}, 422, "invalid_fields", "points"),
    ({"points": "[[1, 1]", "point_labels": [1]}, 422, "invalid_fields", "points: not valid JSON"),
    ({"box": [0, 0, 10, 10], "mask_threshold": 1.5}, 422, "invalid_fields", "mask_threshold"),
    ({"box": [0, 0, 10, 10], "prompt": "cat"}, 422, "invalid_fields", "unknown form field"),
])
def test_bad_refinement_requests_are_typed_errors(client, cat_png, fields, status, code, match):
    import re

    message = _error(_refine(client, cat_png, **fields), status, code)
    assert re.search(match, message), message


def test_json_refine_rejects_two_image_fields_and_unknown_fields(client, cat_png):
    b64 = base64.b64encode(cat_png).decode()
    _error(client.post("/api/v1/refine", json={"box": [0, 0, 5, 5]}), 422, "invalid_fields")
    _error(client.post("/api/v1/refine", json={"image_base64": b64, "image_url": "http://x", "box": [0, 0, 5, 5]}),
           422, "invalid_fields")
    _error(client.post("/api/v1/refine", json={"image_base64": b64, "box": [0, 0, 5, 5], "boxes": []}),
           422, "invalid_fields")


def test_a_checkpoint_without_tracker_answers_409(tiny_checkpoint, segmenter, cat_photo):
    settings = Settings(model=str(tiny_checkpoint), device="cpu", dtype="float32", ui=False)
    with TestClient(create_app(settings, segmenter=segmenter)) as c:
        message = _error(_refine(c, _png(cat_photo[:64, :64]), box=[0, 0, 10, 10]), 409, "not_available")
    assert "no SAM 3 tracker" in message


def test_an_over_long_rle_string_is_refused_before_decoding(tiny_video_checkpoint, clicker, cat_png):
    from sam3studio.api.images import MAX_RLE_CHARS

    settings = Settings(model=str(tiny_video_checkpoint), device="cpu", dtype="float32", ui=False)  # 20 MB bodies
    body = {"image_base64": base64.b64encode(cat_png).decode(), "box": [0, 0, 10, 10],
            "mask": {"size": [300, 451], "counts": "1" * (MAX_RLE_CHARS + 1)}}
    with TestClient(create_app(settings, segmenter=clicker)) as c:
        message = _error(c.post("/api/v1/refine", json=body), 400, "bad_input")
    assert f"over {MAX_RLE_CHARS} characters" in message


def test_openapi_documents_refine(client):
    doc = client.get("/openapi.json").json()
    op = doc["paths"]["/api/v1/refine"]["post"]
    content = op["requestBody"]["content"]
    assert content["application/json"]["schema"]["$ref"] == "#/components/schemas/RefineJSONRequest"
    assert {"image", "points", "point_labels", "box", "mask"} <= set(content["multipart/form-data"]["schema"]["properties"])
    schemas = doc["components"]["schemas"]
    assert {"points", "point_labels", "box", "mask", "image_url", "image_base64"} <= set(
        schemas["RefineJSONRequest"]["properties"])
    assert "RLE" in schemas and "RefineResponse" in schemas
    assert "409" in op["responses"]
