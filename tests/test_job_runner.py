"""The video job runner's durability without a model: graceful stops, restarts, cancel races, retention,
the disk floor and the store's schema migrations.

A stand-in segmenter yields blank frames, each only when the test hands out a permit, so every test
decides exactly where a job is when it stops, is cancelled or finishes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import make_test_video
from sam3studio.api import create_app
from sam3studio.errors import InsufficientStorage, JobGone, JobNotFound
from sam3studio.jobs import JobRunner, JobStore
from sam3studio.jobs.store import SCHEMA_VERSION
from sam3studio.settings import Settings
from sam3studio.video.io import probe_video
from sam3studio.video.results import FrameResult

FRAMES = 4


class GatedRun:
    """A `TrackingRun` look-alike: blank frames, each released by one permit of ``gate``."""

    def __init__(self, path: Path, gate: threading.Semaphore, max_frames: int | None) -> None:
        self.video = probe_video(path)
        self.expected_frames = min(FRAMES, max_frames or FRAMES)
        self.prompts: list = []
        self._gate = gate

    def __iter__(self):
        for i in range(self.expected_frames):
            if not self._gate.acquire(timeout=60):
                raise TimeoutError("the test handed out no permit for the next frame")
            yield FrameResult(index=i, timestamp=i / self.video.fps, width=self.video.width, height=self.video.height,
                              image=np.zeros((self.video.height, self.video.width, 3), np.uint8))

    def close(self) -> None:
        pass


class GatedSegmenter:
    def __init__(self, permits: int = 0) -> None:
        self.gate = threading.Semaphore(permits)
        self.runs: list[Path] = []

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self.gate.release()

    def track(self, path, prompts, *, max_frames=None, **options) -> GatedRun:
        self.runs.append(Path(path))
        self.options = options
        return GatedRun(Path(path), self.gate, max_frames)


def _settings(tmp_path: Path, **over) -> Settings:
    base = dict(model=str(tmp_path / "no-model"), device="cpu", ui=False, data_dir=tmp_path / "data",
                max_video_jobs=8)
    base.update(over)
    return Settings(**base)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_test_video(tmp_path_factory.mktemp("clip") / "clip.mp4", n=FRAMES, width=32, height=32, fps=12)


def _submit(runner: JobRunner, clip: Path) -> str:
    return runner.submit_file(clip, {"prompts": "box"})["id"]


def _until(condition, timeout: float = 60.0, what: str = "the condition"):
    """Wait for ``condition()`` to be truthy (event-based: no fixed sleep decides the outcome)."""
    end = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


def _state(runner: JobRunner, job_id: str) -> str:
    return runner.store.get(job_id)["state"]


def test_a_graceful_stop_leaves_queued_jobs_queued_and_a_restart_runs_them_all(tmp_path, clip):
    settings = _settings(tmp_path)
    fake = GatedSegmenter()
    runner = JobRunner(settings, segmenter=fake)
    runner.start()
    ids = [_submit(runner, clip) for _ in range(3)]
    fake.release()
    _until(lambda: runner.store.get(ids[0])["progress_done"] == 1, what="the first frame")
    stopper = threading.Thread(target=runner.stop)
    stopper.start()
    _until(lambda: runner._stopping.is_set(), what="the stop")
    fake.release(FRAMES)  # the frame being computed when the stop came ends; no further frame is asked for
    stopper.join(30)
    assert not runner.running
    assert [_state(runner, i) for i in ids] == ["running", "queued", "queued"]
    assert runner.store.get(ids[0])["progress_done"] < FRAMES
    assert all(runner.input_path(i) is not None for i in ids)  # every upload kept
    runner.store.close()

    again = GatedSegmenter(permits=100)
    restarted = JobRunner(settings, segmenter=again)
    restarted.start()
    try:
        for job_id in ids:
            job = restarted.wait(job_id, timeout=60, every=0.02)
            assert job["state"] == "done" and job["progress_done"] == FRAMES, job
            assert restarted.result(job_id)[0]["completed"] is True
        assert [p.parent.name for p in again.runs] == ids  # the interrupted one first, from the start
    finally:
        restarted.stop()


def test_a_cancel_that_arrives_as_a_job_finishes_is_not_overwritten(tmp_path, clip, monkeypatch):
    fake = GatedSegmenter(permits=100)
    runner = JobRunner(_settings(tmp_path), segmenter=fake)
    real_finish = runner._finish
    raced: list[str] = []

    def cancel_then_finish(job_id, state, error, frames=None):
        if not raced:  # the client's DELETE lands after the last frame, before the worker records "done"
            raced.append(runner.cancel(job_id))
        real_finish(job_id, state, error, frames)

    monkeypatch.setattr(runner, "_finish", cancel_then_finish)
    runner.start()
    try:
        first = _submit(runner, clip)
        job = runner.wait(first, timeout=60, every=0.02)
        assert raced == ["cancelled"] and job["state"] == "cancelled", job
        assert not runner.job_dir(first).exists()
        # The other order: done first, then the DELETE: the job is deleted (a tombstone), never "done" again.
        second = _submit(runner, clip)
        assert runner.wait(second, timeout=60, every=0.02)["state"] == "done"
        assert runner.cancel(second) == "deleted"
        with pytest.raises(JobGone, match="deleted"):
            runner.get(second)
        assert not runner.job_dir(second).exists()
    finally:
        runner.stop()


def test_jobs_run_with_the_servers_prompt_limits(tmp_path, clip):
    fake = GatedSegmenter(permits=100)
    runner = JobRunner(_settings(tmp_path, max_prompts=64, max_prompt_chars=300), segmenter=fake)
    runner.start()
    try:
        prompts = [f"thing {i}" for i in range(63)] + ["x" * 300]
        job_id = runner.submit_file(clip, {"prompts": prompts})["id"]
        assert runner.wait(job_id, timeout=60, every=0.02)["state"] == "done"
        assert (fake.options["max_prompts"], fake.options["max_prompt_chars"]) == (64, 300)
    finally:
        runner.stop()


def test_cancelling_a_queued_job_removes_its_files_and_the_worker_skips_it(tmp_path, clip):
    fake = GatedSegmenter()
    runner = JobRunner(_settings(tmp_path), segmenter=fake)
    runner.start()
    try:
        running, queued = _submit(runner, clip), _submit(runner, clip)
        _until(lambda: _state(runner, running) == "running", what="the first job to start")
        assert runner.cancel(queued) == "cancelled"
        assert not runner.job_dir(queued).exists()
        fake.release(100)
        assert runner.wait(running, timeout=60, every=0.02)["state"] == "done"
        assert runner.get(queued)["state"] == "cancelled" and len(fake.runs) == 1
    finally:
        runner.stop()


def test_retention_sweeps_finished_jobs_to_tombstones_then_forgets_them(tmp_path, clip):
    runner = JobRunner(_settings(tmp_path, video_job_retention_h=24), segmenter=GatedSegmenter(permits=100))
    runner.start()
    try:
        job_id = _submit(runner, clip)
        assert runner.wait(job_id, timeout=60, every=0.02)["state"] == "done"
        assert runner.sweep(now=time.time() + 23 * 3600) == 0  # within the retention period: kept
        assert runner.sweep(now=time.time() + 25 * 3600) == 1
        with pytest.raises(JobGone, match="24 h"):
            runner.get(job_id)
        assert not runner.job_dir(job_id).exists()
        row = runner.store.get(job_id)
        assert row["state"] == "expired" and row["params"] == {}  # a small tombstone
        runner.sweep(now=time.time() + 31 * 86400)
        with pytest.raises(JobNotFound) as err:
            runner.get(job_id)
        assert not isinstance(err.value, JobGone)
    finally:
        runner.stop()


def test_the_sweep_runs_at_start_up_and_periodically_and_removes_orphaned_folders(tmp_path, clip):
    settings = _settings(tmp_path, video_job_retention_h=1.0)
    store = JobStore(settings.data_dir / "jobs.sqlite3")
    old = store.create({"prompts": ["box"]}, state="done")
    store.update(old["id"], finished=time.time() - 2 * 3600)
    (settings.data_dir / "jobs" / old["id"]).mkdir(parents=True)
    orphan = settings.data_dir / "jobs" / ("ab" * 16)  # a crash mid-upload: a folder with no row
    orphan.mkdir()
    (orphan / "input.mp4").write_bytes(b"partial")
    for p in (orphan / "input.mp4", orphan):
        os.utime(p, (time.time() - 7200, time.time() - 7200))
    fresh = settings.data_dir / "jobs" / ("cd" * 16)  # an upload still being written: kept
    fresh.mkdir()
    store.close()

    runner = JobRunner(settings, segmenter=GatedSegmenter(permits=100), sweep_every_s=0.05)
    runner.start()
    try:
        with pytest.raises(JobGone):
            runner.get(old["id"])
        assert not orphan.exists() and fresh.exists()
        job_id = _submit(runner, clip)
        assert runner.wait(job_id, timeout=60, every=0.02)["state"] == "done"
        runner.store.update(job_id, finished=time.time() - 3601)  # as if an hour had passed
        _until(lambda: runner.store.get(job_id)["state"] == "expired", what="the periodic sweep")
        assert not runner.job_dir(job_id).exists()
    finally:
        runner.stop()


def test_new_jobs_are_refused_below_the_disk_floor(tmp_path, clip):
    settings = _settings(tmp_path, min_free_disk_mb=1e12)  # more than any disk has
    runner = JobRunner(settings, segmenter=GatedSegmenter())
    with TestClient(create_app(settings, jobs=runner)) as client:
        with open(clip, "rb") as f:
            r = client.post("/api/v1/videos", files={"video": ("clip.mp4", f, "video/mp4")}, data={"prompt": "box"})
        assert r.status_code == 507 and r.json()["error"]["code"] == "insufficient_storage", r.text
        assert "min_free_disk_mb" in r.json()["error"]["message"]
        assert list((settings.data_dir / "jobs").iterdir()) == []
    with pytest.raises(InsufficientStorage):
        runner.submit_file(clip, {"prompts": "box"})


def test_the_job_ids_answer_410_once_gone_through_the_api(tmp_path, clip):
    settings = _settings(tmp_path)
    runner = JobRunner(settings, segmenter=GatedSegmenter(permits=100))
    with TestClient(create_app(settings, jobs=runner)) as client:
        with open(clip, "rb") as f:
            job_id = client.post("/api/v1/videos", files={"video": ("clip.mp4", f, "video/mp4")},
                                 data={"prompt": "box"}).json()["id"]
        runner.wait(job_id, timeout=60, every=0.02)
        runner.sweep(now=time.time() + 25 * 3600)
        for path in ("", "/result", "/overlay.mp4"):
            r = client.get(f"/api/v1/videos/{job_id}{path}")
            assert r.status_code == 410 and r.json()["error"]["code"] == "gone", r.text
        assert client.get("/api/v1/videos/" + "0" * 32).status_code == 404


# The schema of jobs.sqlite3 before versioning (sam3studio 0.2.0), verbatim.
V1_SCHEMA = ("CREATE TABLE IF NOT EXISTS jobs ("
             " id TEXT PRIMARY KEY,"
             " state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),"
             " created REAL NOT NULL, updated REAL NOT NULL, params TEXT NOT NULL DEFAULT '{}',"
             " progress_done INTEGER NOT NULL DEFAULT 0, progress_total INTEGER,"
             " error TEXT, deadline REAL)")
PARAMS = '{"prompts": ["box"], "threshold": 0.5, "stride": 1, "start": null, "end": null, "max_frames": null}'


def test_a_store_of_the_first_schema_is_migrated_and_its_jobs_run(tmp_path, clip):
    settings = _settings(tmp_path)
    path = settings.data_dir / "jobs.sqlite3"
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(V1_SCHEMA)
    db.execute("CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created)")
    rows = {state: f"{i:032x}" for i, state in enumerate(("queued", "running", "done", "failed", "cancelled"), 1)}
    for i, (state, job_id) in enumerate(rows.items()):
        db.execute("INSERT INTO jobs (id, state, created, updated, params, progress_total, error) VALUES "
                   "(?, ?, ?, ?, ?, ?, ?)", (job_id, state, 1000.0 + i, 2000.0 + i, PARAMS, FRAMES,
                                              "boom" if state == "failed" else None))
    db.commit()
    with pytest.raises(sqlite3.IntegrityError):  # the old CHECK: no tombstones possible
        db.execute("UPDATE jobs SET state = 'expired' WHERE id = ?", (rows["done"],))
    db.close()
    for state in ("queued", "running"):
        folder = settings.data_dir / "jobs" / rows[state]
        folder.mkdir(parents=True)
        (folder / "input.mp4").write_bytes(clip.read_bytes())

    store = JobStore(path)
    assert store.schema_version == SCHEMA_VERSION
    for state, job_id in rows.items():
        job = store.get(job_id)
        assert job["state"] == state and job["params"] == json.loads(PARAMS) and job["progress_total"] == FRAMES
        assert job["finished"] == (job["updated"] if state in ("done", "failed", "cancelled") else None)
    assert store.get(rows["failed"])["error"] == "boom"
    store.tombstone(rows["done"], "expired", "swept")  # the new states are allowed now
    store.close()
    assert JobStore(path).schema_version == SCHEMA_VERSION  # opening again changes nothing

    runner = JobRunner(settings, segmenter=GatedSegmenter(permits=100))
    runner.start()
    try:
        for state in ("queued", "running"):
            assert runner.wait(rows[state], timeout=60, every=0.02)["state"] == "done"
    finally:
        runner.stop()


def test_a_store_from_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    JobStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match="newer sam3studio"):
        JobStore(path)
