"""Video jobs through the REST API: submit, poll, results, limits, cancellation, queue bound, restarts."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import make_test_video
from sam3studio.api import create_app
from sam3studio.jobs import JobRunner, JobStore
from sam3studio.results import rle_to_mask
from sam3studio.settings import Settings

pytestmark = pytest.mark.slow

W, H = 96, 64


def _settings(tmp_path, video_model, **over) -> Settings:
    base = dict(model=str(tmp_path / "no-image-model"), video_model=str(video_model), device="cpu", dtype="float32",
                ui=False, data_dir=tmp_path / "data", max_video_duration_s=2.0)
    base.update(over)
    return Settings(**base)


@pytest.fixture(scope="module")
def video_segmenter(tiny_video_checkpoint):
    from sam3studio.video import load_video_segmenter

    return load_video_segmenter(str(tiny_video_checkpoint), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return {"short": make_test_video(d / "short.mp4", n=6, width=W, height=H, fps=12),
            "medium": make_test_video(d / "medium.mp4", n=16, width=W, height=H, fps=12),
            "long": make_test_video(d / "long.mp4", n=36, width=W, height=H, fps=12)}  # 3 s > the 2 s limit


def _submit(client, path, **fields):
    data = {"prompt": "red box", "threshold": "0.1", **{k: str(v) for k, v in fields.items()}}
    with open(path, "rb") as f:
        return client.post("/api/v1/videos", files={"video": (path.name, f, "video/mp4")}, data=data)


def _wait(client, job_id, timeout=180.0, until=("done", "failed")):
    end = time.monotonic() + timeout
    while True:
        r = client.get(f"/api/v1/videos/{job_id}")
        assert r.status_code == 200, r.text
        body = r.json()
        if body["state"] in until or time.monotonic() > end:
            return body
        time.sleep(0.2)


def _count_frames(path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_submit_poll_result_and_overlay(tmp_path, tiny_video_checkpoint, videos):
    """The model comes from the `video_model` setting, loaded lazily by the first job."""
    with TestClient(create_app(_settings(tmp_path, tiny_video_checkpoint))) as client:
        r = _submit(client, videos["short"])
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert r.json()["state"] == "queued"
        assert r.headers["location"] == f"/api/v1/videos/{job_id}"
        assert (tmp_path / "data" / "jobs" / job_id / "input.mp4").is_file()
        early = client.get(f"/api/v1/videos/{job_id}/result")
        if early.status_code != 200:  # still queued/running
            assert early.status_code == 409 and early.json()["error"]["code"] == "not_ready"
        body = _wait(client, job_id)
        assert body["state"] == "done", body
        assert body["progress"] == {"done": 6, "total": 6}
        assert body["error"] is None and body["updated"] >= body["created"]

        res = client.get(f"/api/v1/videos/{job_id}/result")
        assert res.status_code == 200
        data = res.json()
        frames, summary = data["frames"], data["summary"]
        assert len(frames) == 6 == summary["frames_processed"]
        assert summary["completed"] is True
        assert str(tmp_path) not in json.dumps(summary)  # no server path leaks
        seen = set()
        for frame in frames:
            assert (frame["width"], frame["height"]) == (W, H)
            for inst in frame["instances"]:
                mask = rle_to_mask(inst["mask"])
                assert mask.shape == (H, W) and mask.dtype == np.bool_
                seen.add(inst["track_id"])
        assert seen == {t["track_id"] for t in summary["tracks"]}

        mp4 = client.get(f"/api/v1/videos/{job_id}/overlay.mp4")
        assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4"
        out = tmp_path / "overlay.mp4"
        out.write_bytes(mp4.content)
        assert _count_frames(out) == 6

        assert client.delete(f"/api/v1/videos/{job_id}").status_code == 204
        for path in ("", "/result", "/overlay.mp4"):  # a tombstone: gone, not unknown
            gone = client.get(f"/api/v1/videos/{job_id}{path}")
            assert gone.status_code == 410 and gone.json()["error"]["code"] == "gone", gone.text
        assert "deleted" in gone.json()["error"]["message"]
        assert client.delete(f"/api/v1/videos/{job_id}").status_code == 410
        assert not (tmp_path / "data" / "jobs" / job_id).exists()


def test_bad_inputs_are_refused_at_submit(tmp_path, tiny_video_checkpoint, video_segmenter, videos):
    settings = _settings(tmp_path, tiny_video_checkpoint)
    with TestClient(create_app(settings, jobs=JobRunner(settings, segmenter=video_segmenter))) as client:
        corrupt = tmp_path / "corrupt.mp4"
        corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
        r = _submit(client, corrupt)
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_input", r.text
        r = _submit(client, videos["long"])
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large", r.text
        r = _submit(client, videos["short"], stride=0)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_fields"
        r = client.post("/api/v1/videos", data={"prompt": "x"})
        assert r.status_code in (415, 422)
        # Nothing refused was kept.
        assert list((tmp_path / "data" / "jobs").iterdir()) == []
        for path in ("/api/v1/videos/" + "0" * 32, "/api/v1/videos/nope", "/api/v1/videos/nope/result",
                     "/api/v1/videos/" + "0" * 32 + "/overlay.mp4"):
            r = client.get(path)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", path
        assert client.delete("/api/v1/videos/" + "a" * 32).status_code == 404


def test_cancel_running_job_and_queue_bound(tmp_path, tiny_video_checkpoint, video_segmenter, videos):
    settings = _settings(tmp_path, tiny_video_checkpoint, max_video_jobs=2)
    runner = JobRunner(settings, segmenter=video_segmenter)
    with TestClient(create_app(settings, jobs=runner)) as client:
        first = _submit(client, videos["medium"]).json()["id"]
        second = _submit(client, videos["short"]).json()["id"]
        full = _submit(client, videos["short"])
        assert full.status_code == 503 and full.json()["error"]["code"] == "overloaded"
        assert "retry-after" in full.headers

        body = _wait(client, first, until=("running",))
        assert body["state"] == "running"
        while client.get(f"/api/v1/videos/{first}").json()["progress"]["done"] < 1:
            time.sleep(0.1)
        assert client.delete(f"/api/v1/videos/{first}").status_code == 204
        assert client.get(f"/api/v1/videos/{first}").json()["state"] == "cancelled"
        r = client.get(f"/api/v1/videos/{first}/result")
        assert r.status_code == 409 and r.json()["error"]["code"] == "job_cancelled"
        # The worker stops the cancelled job before its next frame and goes on with the next one.
        assert _wait(client, second)["state"] == "done"
        assert not (tmp_path / "data" / "jobs" / first).exists()
        assert runner.store.get(first)["state"] == "cancelled"  # kept (without files) for the retention period
        assert client.get(f"/api/v1/videos/{first}").json()["progress"]["done"] < 16  # stopped early


def test_unfinished_jobs_survive_a_restart(tmp_path, tiny_video_checkpoint, video_segmenter, videos):
    settings = _settings(tmp_path, tiny_video_checkpoint)
    store = JobStore(settings.data_dir / "jobs.sqlite3")
    job = store.create({"prompts": ["red box"], "threshold": 0.1, "stride": 2, "start": None, "end": None,
                        "max_frames": None}, state="running", progress_total=3)
    folder = settings.data_dir / "jobs" / job["id"]
    folder.mkdir(parents=True)
    (folder / "input.mp4").write_bytes(videos["short"].read_bytes())
    (folder / "summary.json").write_text('{"stale": true}')  # a crashed run's leftovers
    store.update(job["id"], progress_done=2)
    store.close()

    with TestClient(create_app(settings, jobs=JobRunner(settings, segmenter=video_segmenter))) as client:
        body = _wait(client, job["id"])
        assert body["state"] == "done", body
        data = client.get(f"/api/v1/videos/{job['id']}/result").json()
        assert data["summary"]["completed"] is True and "stale" not in data["summary"]
        assert len(data["frames"]) == 3  # every second frame of 6


def test_ui_video_tab_runs_a_job_through_the_runner(tmp_path, tiny_video_checkpoint, video_segmenter, videos):
    import gradio as gr

    from sam3studio.service import SegmentService
    from sam3studio.ui import build_ui

    settings = _settings(tmp_path, tiny_video_checkpoint, ui=True)
    runner = JobRunner(settings, segmenter=video_segmenter)
    runner.start()
    try:
        demo = build_ui(SegmentService(settings), jobs=runner)
        fn = next(f.fn for f in demo.fns.values() if f.api_name == "track_video")
        overlay, table, downloads, status = fn(str(videos["short"]), "red box", 0.1, 2, "zh")
        assert _count_frames(overlay) == 3
        assert table["headers"][0] == "轨迹编号"
        assert sorted(p.rsplit("/", 1)[-1] for p in downloads) == ["frames.jsonl", "overlay.mp4", "summary.json"]
        assert "3 帧" in status
        assert runner.store.count(("queued", "running", "done", "failed")) == 0  # the UI's job is cleaned up
        # The range options the CLI and the API have: at most 2 frames; an end before the start is refused.
        overlay, _, _, status = fn(str(videos["short"]), "red box", 0.1, 1, "en", None, None, 2)
        assert _count_frames(overlay) == 2 and status.startswith("2 frame(s) processed")
        with pytest.raises(gr.Error, match="must come after the start"):
            fn(str(videos["short"]), "red box", 0.1, 1, "en", 0.5, 0.2, None)
    finally:
        runner.stop()


def _poll(url: str, job_id: str) -> dict:
    import httpx

    return httpx.get(f"{url}/api/v1/videos/{job_id}", timeout=30).json()


def test_jobs_survive_a_graceful_stop_and_a_killed_server(tmp_path, tiny_checkpoint, tiny_video_checkpoint):
    """Real `serve` processes on one data dir: three jobs (one running, two queued), SIGTERM (what systemd,
    Docker and Kubernetes send), start again: nothing lost; then SIGKILL mid-job (a crash), start again:
    every job completes with every frame."""
    import signal

    import httpx

    from _server import PROCESSES, running_server

    video = make_test_video(tmp_path / "eight.mp4", n=8, width=W, height=H, fps=12)
    env = {"SAM3STUDIO_VIDEO_MODEL": str(tiny_video_checkpoint), "SAM3STUDIO_DATA_DIR": str(tmp_path / "data"),
           "SAM3STUDIO_UI": "false"}
    fields = ({}, {"max_frames": "2"}, {"max_frames": "2"})
    with running_server(tiny_checkpoint, extra_env=env) as url:
        ids = []
        for extra in fields:
            with open(video, "rb") as f:
                r = httpx.post(f"{url}/api/v1/videos", files={"video": ("eight.mp4", f, "video/mp4")},
                               data={"prompt": "red box", "threshold": "0.1", **extra}, timeout=60)
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        end = time.monotonic() + 300
        while (state := _poll(url, ids[0]))["progress"]["done"] < 1:
            assert state["state"] in ("queued", "running") and time.monotonic() < end, state
            time.sleep(0.1)
        proc = PROCESSES[url]
        proc.send_signal(signal.SIGTERM)
        # uvicorn runs the lifespan's shutdown, then raises the signal again: the exit status says SIGTERM.
        assert proc.wait(timeout=120) in (0, -signal.SIGTERM)

    with running_server(tiny_checkpoint, extra_env=env) as url:
        states = [_poll(url, i)["state"] for i in ids]
        assert states[0] in ("queued", "running") and states[1:] == ["queued", "queued"], states  # nothing lost
        end = time.monotonic() + 300
        while (state := _poll(url, ids[0]))["progress"]["done"] < 2 or state["state"] != "running":
            assert state["state"] in ("queued", "running") and time.monotonic() < end, state
            time.sleep(0.1)
        proc = PROCESSES[url]
        proc.send_signal(signal.SIGKILL)  # a crash: no shutdown code runs
        proc.wait(timeout=30)

    with running_server(tiny_checkpoint, extra_env=env) as url:
        for job_id, frames in zip(ids, (8, 2, 2), strict=True):
            end = time.monotonic() + 600
            while (state := _poll(url, job_id))["state"] != "done":
                assert state["state"] in ("queued", "running") and time.monotonic() < end, state
                time.sleep(0.2)
            result = httpx.get(f"{url}/api/v1/videos/{job_id}/result", timeout=30).json()
            assert result["summary"]["completed"] is True
            assert [f["frame"] for f in result["frames"]] == list(range(frames))


def test_a_stream_that_breaks_mid_decode_fails_its_job_and_the_server_goes_on(tmp_path, tiny_video_checkpoint,
                                                                               video_segmenter, videos, monkeypatch):
    """Probing passed, then decoding fails at frame 2 (as a damaged stream does): that job fails with the
    reason, the next job runs normally."""
    import sam3studio.video.tracker as tracker
    from sam3studio.errors import InputError

    real_iter_frames = tracker.iter_frames
    broken = {"on": True}

    def breaking(*args, **kwargs):
        for n, item in enumerate(real_iter_frames(*args, **kwargs)):
            if broken["on"] and n == 2:
                raise InputError("medium.mp4: decoding failed after frame 1 (Invalid data found when processing input)")
            yield item

    monkeypatch.setattr(tracker, "iter_frames", breaking)
    settings = _settings(tmp_path, tiny_video_checkpoint)
    with TestClient(create_app(settings, jobs=JobRunner(settings, segmenter=video_segmenter))) as client:
        job = _submit(client, videos["medium"]).json()["id"]
        body = _wait(client, job)
        assert body["state"] == "failed" and "decoding failed after frame 1" in body["error"], body
        r = client.get(f"/api/v1/videos/{job}/result")
        assert r.status_code == 409 and r.json()["error"]["code"] == "job_failed"
        assert client.get("/api/v1/health").status_code == 200
        broken["on"] = False
        assert _wait(client, _submit(client, videos["short"]).json()["id"])["state"] == "done"


def test_video_jobs_share_the_image_models_detector(tmp_path, tiny_video_checkpoint, video_segmenter, videos):
    """One checkpoint for images and videos: the video model uses the image segmenter's Sam3Model as its
    detector (one copy in memory) and tracks exactly as a video model with its own detector does."""
    settings = _settings(tmp_path, "", model=str(tiny_video_checkpoint))  # no separate video model
    app = create_app(settings)
    with TestClient(app) as client:
        end = time.monotonic() + 120
        while client.get("/api/v1/ready").status_code != 200:
            assert time.monotonic() < end, "image model not ready"
            time.sleep(0.2)
        job_id = _submit(client, videos["short"]).json()["id"]
        assert _wait(client, job_id)["state"] == "done"
        frames = client.get(f"/api/v1/videos/{job_id}/result").json()["frames"]
    image_model = app.state.service.segmenter.model
    video_model = app.state.jobs.segmenter.model
    assert video_model.detector_model is image_model
    own = sum(p.numel() for p in video_model.parameters()) - sum(p.numel() for p in image_model.parameters())
    assert own == sum(p.numel() for p in video_segmenter.model.parameters()) - sum(
        p.numel() for p in video_segmenter.model.detector_model.parameters())  # nothing but the tracker parts

    expected = list(video_segmenter.track(videos["short"], "red box", score_threshold=0.1))
    assert [len(f["instances"]) for f in frames] == [len(f.instances) for f in expected]
    for got, want in zip(frames, expected, strict=True):
        for inst, ref in zip(got["instances"], want.instances, strict=True):
            assert inst["track_id"] == ref.track_id and inst["score"] == pytest.approx(ref.score, abs=1e-5)
            np.testing.assert_array_equal(rle_to_mask(inst["mask"]), ref.mask)
