"""Video sessions through the REST API (/api/v1/sessions): the flow through a real `sam3studio serve` process,
typed errors, limits, idle expiry (event-based), restarts (410 and the last export kept), sessions on a done job."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from _server import running_server
from conftest import make_test_video
from sam3studio.api import create_app
from sam3studio.errors import SessionGone
from sam3studio.jobs import JobRunner
from sam3studio.results import mask_to_rle, rle_to_mask
from sam3studio.sessions import SessionManager
from sam3studio.settings import Settings

pytestmark = pytest.mark.slow

W, H = 96, 72
API = "/api/v1/sessions"


def _settings(tmp_path, video_model, **over) -> Settings:
    base = dict(model=str(tmp_path / "no-image-model"), video_model=str(video_model), device="cpu", dtype="float32",
                ui=False, data_dir=tmp_path / "data")
    base.update(over)
    return Settings(**base)


@pytest.fixture(scope="module")
def video_segmenter(tiny_video_checkpoint):
    from sam3studio.video import load_video_segmenter

    return load_video_segmenter(str(tiny_video_checkpoint), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_test_video(tmp_path_factory.mktemp("session-clips") / "clip.mp4", n=8, width=W, height=H, fps=12)


def _upload(client, clip):
    with open(clip, "rb") as fh:
        return client.post(API, files={"video": ("clip.mp4", fh, "video/mp4")})


def _error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == code, body
    return body["message"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------------- the independent check, over HTTP
def _wait_idle(http: httpx.Client, sid: str, timeout_s: float = 600.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        state = http.get(f"{API}/{sid}").json()
        if state["state"] != "propagating":
            assert state["state"] == "idle", state
            assert state["progress"]["done"] == state["progress"]["total"]
            return state
        assert time.monotonic() < deadline, f"still propagating: {state['progress']}"
        time.sleep(0.3)


def _present(http: httpx.Client, sid: str, object_id: int, frames: int) -> list[int]:
    out = []
    for i in range(frames):
        body = http.get(f"{API}/{sid}/frames/{i}").json()
        assert body["frame"] == i and (body["width"], body["height"]) == (W, H)
        if any(inst["object_id"] == object_id for inst in body["instances"]):
            out.append(i)
    return out


def test_the_session_flow_through_a_serve_process(tmp_path, tiny_video_checkpoint, clip):
    env = {"SAM3STUDIO_DATA_DIR": str(tmp_path / "served"), "SAM3STUDIO_UI": "false"}
    with (running_server(tiny_video_checkpoint, timeout_s=300, extra_env=env) as url,  # slow start on a loaded machine
          httpx.Client(base_url=url, timeout=300) as http):
        with open(clip, "rb") as fh:
            created = http.post(API, files={"video": ("clip.mp4", fh, "video/mp4")})
        assert created.status_code == 201, created.text
        info = created.json()
        sid, n = info["id"], info["frames"]
        assert (n, info["width"], info["height"]) == (8, W, H) and created.headers["location"] == f"{API}/{sid}"

        found = http.post(f"{API}/{sid}/prompts", json={"frame": 0, "prompts": ["red car"], "threshold": 0.1}).json()
        text_ids = [o["object_id"] for o in found["objects"]]
        assert found["frame"] == 0 and text_ids, found
        assert http.post(f"{API}/{sid}/propagate", json={"direction": "forward"}).status_code == 202
        state = _wait_idle(http, sid)
        assert {o["object_id"] for o in state["objects"]} == set(text_ids)

        middle = n // 2
        click = http.post(f"{API}/{sid}/clicks", json={"frame": middle, "points": [[48, 36]], "point_labels": [1]})
        assert click.status_code == 200, click.text
        new_id = click.json()["object_id"]
        assert new_id not in text_ids and click.json()["mask"]["size"] == [H, W]
        accepted = http.post(f"{API}/{sid}/propagate", json={"direction": "both"})
        assert accepted.status_code == 202 and accepted.json()["progress"]["total"] == n
        _wait_idle(http, sid)
        present = _present(http, sid, new_id, n)
        assert min(present) < middle < max(present), f"the new object is on frames {present}"

        gone = text_ids[0]
        assert http.delete(f"{API}/{sid}/objects/{gone}").json()["object_id"] == gone
        assert _present(http, sid, gone, n) == []
        result = http.get(f"{API}/{sid}/result").json()
        assert all(inst["object_id"] != gone for f in result["frames"] for inst in f["instances"])
        assert http.get(f"{API}/{sid}/result", params={"format": "ytvis"}).json()["videos"][0]["length"] == n

        assert http.delete(f"{API}/{sid}").status_code == 204
        assert http.get(f"{API}/{sid}").status_code == 404


# ---------------------------------------------------------------------------- in process
def test_typed_errors_the_session_bound_and_a_busy_session(tmp_path, tiny_video_checkpoint, video_segmenter, clip):
    settings = _settings(tmp_path, tiny_video_checkpoint, max_sessions=1)
    app = create_app(settings, jobs=JobRunner(settings, segmenter=video_segmenter))
    with TestClient(app) as client:
        created = _upload(client, clip)
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        assert "1 video sessions are open" in _error(_upload(client, clip), 503, "overloaded")

        _error(client.post(f"{API}/{sid}/clicks", json={"frame": 8, "points": [[5, 5]], "point_labels": [1]}),
               400, "frame_out_of_range")
        _error(client.get(f"{API}/{sid}/frames/99"), 400, "frame_out_of_range")
        _error(client.post(f"{API}/{sid}/clicks", json={"frame": 1, "points": [[5, 5]], "point_labels": [1],
                                                        "object_id": 42}), 404, "unknown_object")
        _error(client.delete(f"{API}/{sid}/objects/42"), 404, "unknown_object")
        _error(client.post(f"{API}/{sid}/clicks", json={"frame": 1, "points": [[500, 5]], "point_labels": [1]}),
               400, "bad_input")
        _error(client.post(f"{API}/{sid}/clicks", json={"frame": 1, "points": [[5, 5]]}), 422, "invalid_fields")
        _error(client.post(f"{API}/{sid}/propagate", json={}), 400, "bad_input")  # no objects yet
        _error(client.post(f"{API}/{sid}/propagate", json={"direction": "up"}), 422, "invalid_fields")
        _error(client.get(f"{API}/{sid}/result"), 409, "not_ready")
        _error(client.get(f"{API}/{'0' * 32}"), 404, "not_found")
        _error(client.get(f"{API}/not-an-id"), 404, "not_found")
        _error(client.post(API, json={"video_url": "http://x/v.mp4", "job_id": "a" * 32}), 422, "invalid_fields")
        _error(client.post(API, content=b"x", headers={"content-type": "text/plain"}), 415, "unsupported_media_type")

        box = client.post(f"{API}/{sid}/boxes", json={"frame": 2, "box": [48, 5, 91, 36]}).json()
        assert box["object_id"] == 1 and box["instance"]["label"] == "object"
        gate = app.state.service.gate
        with gate.admit():  # the model is taken: the propagation waits for its turn, so it is surely running
            assert client.post(f"{API}/{sid}/propagate", json={"direction": "forward"}).status_code == 202
            state = client.get(f"{API}/{sid}").json()
            assert state["state"] == "propagating" and state["progress"] == {"done": 0, "total": 6}
            _error(client.post(f"{API}/{sid}/clicks", json={"frame": 1, "points": [[5, 5]], "point_labels": [1]}),
                   409, "busy")
            _error(client.post(f"{API}/{sid}/propagate", json={}), 409, "busy")
        app.state.sessions.wait(sid)
        state = client.get(f"{API}/{sid}").json()
        assert state["state"] == "idle" and state["propagations"] == 1
        assert state["objects"][0]["kind"] == "box" and state["objects"][0]["frames_present"] >= 1
        result = client.get(f"{API}/{sid}/result").json()
        assert [f["frame"] for f in result["frames"]] == list(range(8)) and "/" not in result["summary"]["video"]["path"]
        overlay = client.get(f"{API}/{sid}/overlay.mp4")
        assert overlay.status_code == 200 and overlay.headers["content-type"] == "video/mp4"
        assert client.get(f"{API}/{sid}/result").json()["frames"] == result["frames"]  # the overlay left the JSON
        assert client.delete(f"{API}/{sid}").status_code == 204
        _error(client.get(f"{API}/{sid}"), 404, "not_found")
        assert _upload(client, clip).status_code == 201  # room again


def test_an_idle_session_ends_and_keeps_its_last_export(tmp_path, tiny_video_checkpoint, video_segmenter, clip):
    settings = _settings(tmp_path, tiny_video_checkpoint, session_idle_timeout_s=60)
    app = create_app(settings, jobs=JobRunner(settings, segmenter=video_segmenter))
    clock = FakeClock()
    manager: SessionManager = app.state.sessions
    manager.clock, manager.reap_every_s = clock, 0.05
    with TestClient(app) as client:
        sid = _upload(client, clip).json()["id"]
        client.post(f"{API}/{sid}/boxes", json={"frame": 6, "box": [48, 5, 91, 36]})
        client.post(f"{API}/{sid}/propagate", json={"direction": "forward"})
        manager.wait(sid)
        kept = client.get(f"{API}/{sid}/result").json()
        clock.now += 30
        assert client.get(f"{API}/{sid}").status_code == 200  # reading touches nothing; 30 s is not idle enough
        assert not manager.expired.is_set()
        clock.now += 31
        assert manager.expired.wait(timeout=60), "the reaper ends the idle session"
        message = _error(client.get(f"{API}/{sid}"), 410, "gone")
        assert "unused for more than 60 s" in message
        _error(client.post(f"{API}/{sid}/clicks", json={"frame": 1, "points": [[5, 5]], "point_labels": [1]}),
               410, "gone")
        assert client.get(f"{API}/{sid}/result").json()["frames"] == kept["frames"]
        assert manager.open_count() == 0 and not (manager.folder(sid) / "work").exists()


def test_a_restart_ends_sessions_with_410_and_keeps_their_export(tmp_path, tiny_video_checkpoint, video_segmenter,
                                                                 clip):
    settings = _settings(tmp_path, tiny_video_checkpoint)
    first = SessionManager(settings, _NoGate(), lambda: video_segmenter)
    first.start()
    handle = first.create(lambda path: path.write_bytes(clip.read_bytes()), ".mp4")
    first.add_box(handle.id, 3, [48, 5, 91, 36])
    first.propagate(handle.id, "both")
    first.wait(handle.id)
    assert (handle.folder / "export" / "summary.json").is_file()
    # The process dies here (no stop); a new server starts on the same data folder.
    second = SessionManager(settings, _NoGate(), lambda: video_segmenter)
    second.start()
    with pytest.raises(SessionGone, match="server restarted"):
        second.get(handle.id)
    assert sorted(p.name for p in handle.folder.iterdir()) == ["ended.json", "export"]
    assert (second.result_folder(handle.id) / "ytvis.json").is_file()
    second.stop()
    handle.session.close()  # what the dead process held
    first._sessions.clear()
    first.stop()

    app = create_app(settings, jobs=JobRunner(settings, segmenter=video_segmenter))
    with TestClient(app) as client:
        sid = _upload(client, clip).json()["id"]
    with TestClient(create_app(settings, jobs=JobRunner(settings, segmenter=video_segmenter))) as client:
        assert "server stopped" in _error(client.get(f"{API}/{sid}"), 410, "gone")
        _error(client.get(f"{API}/{handle.id}/overlay.mp4"), 404, "not_found")  # never rendered before the end
        assert client.get(f"{API}/{handle.id}/result").status_code == 200


class _NoGate:
    """An admission gate that always admits (a manager without a service)."""

    def admit(self, cancelled=None):
        import contextlib

        return contextlib.nullcontext()


def _done_job(runner: JobRunner, clip, n: int) -> str:
    job = runner.store.create({"prompts": ["red car"], "threshold": 0.5}, state="done", progress_total=n)
    folder = runner.job_dir(job["id"])
    folder.mkdir(parents=True)
    (folder / "input.mp4").write_bytes(clip.read_bytes())
    rows = []
    for i in range(n):
        mask = np.zeros((H, W), bool)
        mask[20:50, 5 + i: 35 + i] = True
        rows.append({"frame": i, "timestamp": i / 12, "width": W, "height": H, "instances": [
            {"track_id": 3, "prompt": "red car", "score": 0.9, "box_xyxy": [5 + i, 20, 35 + i, 50],
             "area": int(mask.sum()), "mask": mask_to_rle(mask)}]})
    (folder / "frames.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "summary.json").write_text(json.dumps({"completed": True, "video": {"width": W, "height": H}}))
    return job["id"]


def test_a_session_opens_on_a_done_video_job(tmp_path, tiny_video_checkpoint, video_segmenter, clip):
    settings = _settings(tmp_path, tiny_video_checkpoint)
    runner = JobRunner(settings, segmenter=video_segmenter)
    with TestClient(create_app(settings, jobs=runner)) as client:
        job_id = _done_job(runner, clip, 8)
        created = client.post(API, json={"job_id": job_id})
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        state = client.get(f"{API}/{sid}").json()
        assert [(o["object_id"], o["label"], o["kind"], o["frames_present"]) for o in state["objects"]] == [
            (3, "red car", "job", 8)]
        frame = client.get(f"{API}/{sid}/frames/5").json()
        expected = np.zeros((H, W), bool)
        expected[20:50, 10:40] = True
        np.testing.assert_array_equal(rle_to_mask(frame["instances"][0]["mask"]), expected)
        ytvis = client.get(f"/api/v1/videos/{job_id}/result", params={"format": "ytvis"}).json()
        assert [a["id"] for a in ytvis["annotations"]] == [3] and ytvis["categories"][0]["name"] == "red car"
        assert ytvis["videos"][0]["file_names"][:2] == [f"{job_id}/00000.jpg", f"{job_id}/00001.jpg"]
        _error(client.post(API, json={"job_id": "f" * 32}), 404, "not_found")
        queued = runner.store.create({"prompts": ["x"]}, state="queued")
        assert "queued" in _error(client.post(API, json={"job_id": queued["id"]}), 400, "bad_input")


def test_an_image_only_checkpoint_answers_409_not_available(tmp_path, tiny_checkpoint, clip):
    """Found by fuzzing: the session route answered 503 `not_ready` (retry later) for a checkpoint that will
    never track."""
    settings = Settings(model=str(tiny_checkpoint), device="cpu", ui=False, data_dir=tmp_path / "data")
    with TestClient(create_app(settings)) as client:
        body = _error(_upload(client, clip), 409, "not_available")
    assert "image-only" in body and "sam3_video" in body
