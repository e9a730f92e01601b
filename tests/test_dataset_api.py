"""The dataset routes under /api/v1/datasets (TestClient, no model): list, page, image, change, accept, conflicts."""

from __future__ import annotations

import os

import numpy as np
import pytest
from fastapi.testclient import TestClient

from sam3studio.api import create_app
from sam3studio.dataset.store import DatasetStore
from sam3studio.results import mask_to_rle
from sam3studio.settings import Settings
from test_dataset import square, store_with_images


@pytest.fixture
def client(tmp_path):
    store_with_images(tmp_path, 3).close()
    settings = Settings(datasets=[tmp_path / "ds"], ui=False, mcp=False, data_dir=tmp_path / "data")
    app = create_app(settings)  # no lifespan: the model is never loaded, and these routes do not need it
    yield TestClient(app)
    app.state.datasets.close()


def _error(r, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    return body["error"]["message"]


def test_list_page_and_image(client):
    r = client.get("/api/v1/datasets")
    assert r.status_code == 200
    (info,) = r.json()["datasets"]
    assert info["id"] == "ds" and info["classes"] == ["cat", "dog"] and info["progress"]["total"] == 3
    page = client.get("/api/v1/datasets/ds/images", params={"limit": 2}).json()
    assert [i["id"] for i in page["images"]] == [1, 2] and page["next_after"] == 2 and page["total"] == 3
    assert client.get("/api/v1/datasets/ds/images", params={"after": 2}).json()["next_after"] is None
    dogs = client.get("/api/v1/datasets/ds/images", params={"class_name": "dog"}).json()
    assert dogs["images"] == [] and dogs["total"] is None  # not counted by default for a filter on instances
    cats = client.get("/api/v1/datasets/ds/images", params={"class_name": "cat", "with_total": True}).json()
    assert cats["total"] == 3
    image = client.get("/api/v1/datasets/ds/images/1").json()
    assert image["state"] == "unreviewed" and image["version"] == 1 and not image["missing"]
    (inst,) = image["instances"]
    assert inst["class_name"] == "cat" and inst["mask"]["size"] == [48, 64] and inst["origin"] == "model"
    poly = client.get("/api/v1/datasets/ds/images/1", params={"mask_format": "polygon"}).json()
    assert isinstance(poly["instances"][0]["mask"], list)
    file = client.get("/api/v1/datasets/ds/images/1/file")
    assert file.status_code == 200 and file.content[:4] == b"\x89PNG"


def test_changes_and_the_version_rule(client):
    base = "/api/v1/datasets/ds/images/1"
    image = client.get(base).json()
    inst = image["instances"][0]["id"]
    r = client.patch(f"{base}/instances/{inst}", json={"version": image["version"], "class_name": "dog"})
    assert r.status_code == 200 and r.json()["state"] == "corrected" and r.json()["instances"][0]["class_name"] == "dog"
    # A second client still holding the first version is refused, and learns the current one.
    stale = client.post(f"{base}/accept", json={"version": image["version"]})
    assert "changed since it was read" in _error(stale, 409, "version_conflict")
    assert stale.headers["X-Image-Version"] == str(r.json()["version"])
    mask = square(48, 64, 30, 40, 40, 60)
    added = client.post(f"{base}/instances", json={"version": r.json()["version"], "class_name": "cat",
                                                   "mask": mask_to_rle(mask)})
    assert added.status_code == 201
    new = added.json()["instances"][-1]
    assert new["origin"] == "api" and new["area"] == 200 and new["box_xyxy"] == [40, 30, 60, 40]
    box = client.post(f"{base}/instances", json={"version": added.json()["version"], "class_name": "dog",
                                                 "box": [1, 1, 11, 21]}).json()
    assert box["instances"][-1]["mask"] is None and box["instances"][-1]["area"] == 200
    gone = client.delete(f"{base}/instances/{new['id']}", params={"version": box["version"]})
    assert gone.status_code == 200 and len(gone.json()["instances"]) == 2
    accepted = client.post(f"{base}/accept", json={"version": gone.json()["version"]}).json()
    assert accepted["state"] == "corrected"  # changed, then accepted
    skipped = client.post("/api/v1/datasets/ds/images/2/state", json={"version": 1, "state": "skipped"}).json()
    assert skipped["state"] == "skipped"
    info = client.get("/api/v1/datasets/ds").json()
    assert info["progress"] == {"unreviewed": 1, "accepted": 0, "corrected": 1, "skipped": 1, "total": 3, "reviewed": 1}


def test_two_clients_editing_one_image_never_lose_an_update(client):
    """Two clients read the same version; both change it; the second is refused, reloads and re-applies: both land."""
    base = "/api/v1/datasets/ds/images/3"
    a = client.get(base).json()
    b = client.get(base).json()
    r1 = client.post(f"{base}/instances", json={"version": a["version"], "class_name": "dog", "box": [0, 0, 10, 10]})
    assert r1.status_code == 201
    r2 = client.patch(f"{base}/instances/{b['instances'][0]['id']}", json={"version": b["version"], "class_name": "dog"})
    _error(r2, 409, "version_conflict")
    b = client.get(base).json()
    r2 = client.patch(f"{base}/instances/{b['instances'][0]['id']}", json={"version": b["version"], "class_name": "dog"})
    assert r2.status_code == 200
    final = client.get(base).json()
    assert [i["class_name"] for i in final["instances"]] == ["dog", "dog"]  # both changes are there


def test_errors_use_the_envelope(client, tmp_path):
    assert "no dataset 'nope'" in _error(client.get("/api/v1/datasets/nope"), 404, "not_found")
    _error(client.get("/api/v1/datasets/nope/images"), 404, "not_found")
    _error(client.get("/api/v1/datasets/ds/images/99"), 404, "not_found")
    _error(client.delete("/api/v1/datasets/ds/images/1/instances/999", params={"version": 1}), 404, "not_found")
    assert "unknown class" in _error(client.get("/api/v1/datasets/ds/images", params={"class_name": "bird"}), 400,
                                     "bad_input")
    _error(client.post("/api/v1/datasets/ds/images/1/instances", json={"version": 1, "class_name": "bird",
                                                                       "box": [0, 0, 5, 5]}), 400, "bad_input")
    wrong = mask_to_rle(np.ones((10, 10), bool))
    assert "the image is 64x48" in _error(client.post("/api/v1/datasets/ds/images/1/instances",
                                                      json={"version": 1, "class_name": "cat", "mask": wrong}),
                                          400, "bad_input")
    _error(client.post("/api/v1/datasets/ds/images/1/instances", json={"version": 1, "class_name": "cat"}), 422,
           "invalid_fields")
    _error(client.post("/api/v1/datasets/ds/images/1/state", json={"version": 1, "state": "done"}), 422,
           "invalid_fields")
    _error(client.delete("/api/v1/datasets/ds/images/1/instances/1"), 422, "invalid_fields")  # no version
    _error(client.put("/api/v1/datasets/ds"), 405, "method_not_allowed")
    with DatasetStore.open(tmp_path / "ds") as store:
        path = store.image(2).path
    os.unlink(path)
    assert client.get("/api/v1/datasets/ds/images/2").json()["missing"] is True
    assert "missing" in _error(client.get("/api/v1/datasets/ds/images/2/file"), 404, "not_found")


def test_a_server_without_datasets_lists_none(tmp_path):
    app = create_app(Settings(ui=False, mcp=False, data_dir=tmp_path / "data"))
    c = TestClient(app)
    assert c.get("/api/v1/datasets").json() == {"datasets": []}
    _error(c.get("/api/v1/datasets/x/images/1"), 404, "not_found")
