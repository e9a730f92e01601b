"""``sam3studio track`` end to end: a synthetic H.264 video, the tiny video checkpoint, real outputs.

The tiny model's weights are random, so these tests check the plumbing (frames in = frames out, frame
selection, files, exit codes), not what is found. Each model run costs about a second per frame on a
small CPU, so the video is short and each run processes few frames.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import av
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from sam3studio.cli import app
from sam3studio.testing import make_tiny_video_checkpoint
from sam3studio.video import sinks

FRAMES, FPS, W, H = 8, 12, 160, 120


def _app() -> typer.Typer:
    """The real CLI (``track`` is one of its commands)."""
    return app


APP = _app()
runner = CliRunner()


def write_video(path: Path, frames: int = FRAMES, fps: int = FPS) -> Path:
    """Moving coloured rectangles as an H.264 MP4 (yuv420p), written with PyAV."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for i in range(frames):
            img = np.full((H, W, 3), 30, np.uint8)
            img[20:60, 5 + i * 6:45 + i * 6] = (230, 30, 30)
            img[70:110, 140 - i * 6:170 - i * 6] = (30, 200, 60)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_tiny_video_checkpoint(tmp_path_factory.mktemp("tiny-sam3-video"), seed=0)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4")


def track(checkpoint: Path, video: Path, out: Path, *args: str):
    """One prompt (in Chinese, so the translation reaches the summary): each prompt adds tracking work."""
    return runner.invoke(APP, ["track", str(video), "-p", "狗", "--out", str(out), "--model",
                               str(checkpoint), "--device", "cpu", "--dtype", "float32", "--threshold", "0.1", *args])


def decoded_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow
def test_every_frame_in_is_a_frame_out(checkpoint, video, tmp_path):
    result = track(checkpoint, video, tmp_path, "--masks")
    assert result.exit_code == 0, result.output
    lines = jsonl(tmp_path / "frames.jsonl")
    assert [line["frame"] for line in lines] == list(range(FRAMES))
    assert all((line["width"], line["height"]) == (W, H) for line in lines)
    frames = decoded_frames(tmp_path / "overlay.mp4")
    assert len(frames) == FRAMES and frames[0].shape == (H, W, 3)
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["completed"] is True and summary["frames_processed"] == FRAMES
    assert summary["video"]["width"] == W and summary["video"]["frame_count"] == FRAMES
    assert [(p["text"], p["query"]) for p in summary["prompts"]] == [("狗", "dog")]
    ids = {inst["track_id"] for line in lines for inst in line["instances"]}
    assert {t["track_id"] for t in summary["tracks"]} == ids
    assert sum(p["count"] for p in summary["prompts"]) == len(ids)
    for t in summary["tracks"]:
        present = [line["frame"] for line in lines if any(i["track_id"] == t["track_id"] for i in line["instances"])]
        assert (t["first_frame"], t["last_frame"], t["frames_present"]) == (present[0], present[-1], len(present))
        assert (tmp_path / "masks" / f"frame_{present[0]:06d}" / f"track_{t['track_id']:04d}.png").is_file()
    assert f"Tracked {FRAMES} frames" in result.output and "狗:" in result.output and str(tmp_path) in result.output


@pytest.mark.slow
def test_stride_start_end_max_frames_select_frames(checkpoint, video, tmp_path):
    # 12 fps: [0.1 s, 0.6 s) holds frames 2..7; every second one is 2, 4, 6; --max-frames 2 keeps 2, 4
    result = track(checkpoint, video, tmp_path, "--stride", "2", "--start", "0.1", "--end", "0.6", "--max-frames", "2",
                   "--no-video")
    assert result.exit_code == 0, result.output
    assert [line["frame"] for line in jsonl(tmp_path / "frames.jsonl")] == [2, 4]
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert (summary["first_frame"], summary["last_frame"], summary["frames_processed"]) == (2, 4, 2)
    assert summary["completed"] is True
    assert not (tmp_path / "overlay.mp4").exists() and not (tmp_path / "masks").exists()
    assert summary["outputs"] == {"jsonl": "frames.jsonl", "summary": "summary.json"}


def test_frame_selection_plan_matches_the_cli_arithmetic(video):
    """The numbers above without a model: the same selection through the video reader."""
    from sam3studio.video.io import iter_frames, plan_frames, probe_video

    info = probe_video(video)
    assert info.frame_count == FRAMES and (info.width, info.height) == (W, H)
    assert [i for i, _t, _rgb in iter_frames(info, start=0.1, end=0.6, stride=2)] == [2, 4, 6]
    assert plan_frames(info, 0.1, 0.6, 2, None) == 3
    assert [i for i, _t, _rgb in iter_frames(info, stride=3)] == [0, 3, 6]


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name == "nt", reason="needs POSIX signals")
def test_ctrl_c_stops_cleanly_and_keeps_output(checkpoint, video, tmp_path, monkeypatch):
    """A real SIGINT after the first frame: the run stops between frames, exit 130, readable partial output."""
    real = sinks.write_tracking

    def interrupting(run, out_dir, *, progress, **kwargs):
        def progress_then_ctrl_c(done, total):
            progress(done, total)
            if done == 1:
                os.kill(os.getpid(), signal.SIGINT)

        return real(run, out_dir, progress=progress_then_ctrl_c, **kwargs)

    monkeypatch.setattr(sinks, "write_tracking", interrupting)
    before = signal.getsignal(signal.SIGINT)
    result = track(checkpoint, video, tmp_path, "--max-frames", "3")
    assert result.exit_code == 130, result.output
    assert "partial output kept in" in result.output
    assert len(jsonl(tmp_path / "frames.jsonl")) == 1
    assert len(decoded_frames(tmp_path / "overlay.mp4")) == 1
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["completed"] is False and summary["frames_processed"] == 1
    assert signal.getsignal(signal.SIGINT) is before  # the handler was put back


@pytest.mark.parametrize(("args", "message"), [
    (["--stride", "0"], "--stride must be 1 or more"),
    (["--start", "2", "--end", "1"], "--end (1.0 s) must be after start"),
    (["--start", "-1"], "--start must be 0 or more"),
    (["--max-frames", "0"], "--max-frames must be 1 or more"),
    (["--threshold", "0"], "--threshold must be in (0, 1]"),
    (["-p", " , "], "empty"),
])
def test_bad_options_exit_2_before_loading_anything(video, tmp_path, args, message):
    result = runner.invoke(APP, ["track", str(video), "-p", "dog", "--out", str(tmp_path / "o"), "--model",
                                 str(tmp_path / "no-such-model"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "error:" in result.output
    assert not (tmp_path / "o").exists()


def test_bad_input_exits_1_before_loading_the_model(tmp_path):
    corrupt = tmp_path / "broken.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    no_model = str(tmp_path / "no-such-model")  # reaching the model would fail differently
    for path, message in [(corrupt, "broken.mp4"), (tmp_path / "missing.mp4", "no such file")]:
        result = runner.invoke(APP, ["track", str(path), "-p", "dog", "--out", str(tmp_path / "o"), "--model", no_model])
        assert result.exit_code == 1, result.output
        assert message in result.output and "error:" in result.output
    result = runner.invoke(APP, ["track", str(write_video(tmp_path / "short.mp4", frames=4)), "-p", "dog", "--out",
                                 str(tmp_path / "o"), "--model", no_model, "--start", "5"])
    assert result.exit_code == 1 and "no frames between --start and --end" in result.output, result.output


def test_too_large_video_exits_1(tmp_path, monkeypatch):
    from sam3studio.video import io

    real = io.VideoLimits
    monkeypatch.setattr(io, "VideoLimits", lambda: real(max_duration_s=0.1))  # the CLI's limits: 0.1 s at most
    clip = write_video(tmp_path / "long.mp4", frames=4)
    result = runner.invoke(APP, ["track", str(clip), "-p", "dog", "--out", str(tmp_path / "o"),
                                 "--model", str(tmp_path / "no-such-model")])
    assert result.exit_code == 1, result.output
    assert "limit" in result.output


def test_missing_model_exits_1(video, tmp_path):
    result = runner.invoke(APP, ["track", str(video), "-p", "dog", "--out", str(tmp_path / "o"), "--model",
                                 str(tmp_path / "no-such-model"), "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert "error:" in result.output and "does not exist" in result.output


@pytest.mark.parametrize(("raised", "code", "message"), [
    (KeyboardInterrupt(), 130, "Interrupted after 1 frame: partial output kept in"),
    (ValueError("decoding failed after frame 0"), 1, "decoding failed after frame 0 (output so far kept in"),
])
def test_interrupt_or_failure_mid_run(checkpoint, video, tmp_path, monkeypatch, raised, code, message):
    """A second Ctrl-C (KeyboardInterrupt) or an error mid-run; no frame is computed, the model only loads."""

    def failing(run, out_dir, *, progress, **kwargs):
        progress(1, run.expected_frames)
        raise raised

    monkeypatch.setattr(sinks, "write_tracking", failing)
    result = track(checkpoint, video, tmp_path)
    assert result.exit_code == code, result.output
    assert message in " ".join(result.output.split())


@pytest.mark.skipif(os.name == "nt", reason="needs POSIX signals")
def test_first_ctrl_c_asks_to_stop_second_interrupts():
    from sam3studio.cli.track import _CtrlC

    before = signal.getsignal(signal.SIGINT)
    calls: list[str] = []
    with _CtrlC(on_first=lambda: calls.append("first")) as ctrl_c:
        os.kill(os.getpid(), signal.SIGINT)
        assert ctrl_c.requested and calls == ["first"]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler right after the call returns
    assert signal.getsignal(signal.SIGINT) is before
