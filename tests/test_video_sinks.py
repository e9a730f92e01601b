"""Tracking outputs from synthetic frames: no model, so every number here is known in advance."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from sam3studio.results import PromptResult, rle_to_mask
from sam3studio.video.results import FrameInstance, FrameResult
from sam3studio.video.sinks import (
    FrameOverlay,
    FramesJsonlSink,
    MaskPngSink,
    OverlayVideoSink,
    SummaryWriter,
    write_tracking,
)

W, H = 96, 64

# track id -> (prompt, frames it is present in)
TRACKS = {1: ("dog", range(0, 10)), 5: ("狗", range(3, 8)), 7: ("dog", range(8, 12))}
PROMPTS = [PromptResult("dog", 0.0, 0), PromptResult("狗", 0.0, 0, query="dog"), PromptResult("cat", 0.0, 0)]


def _frame(index: int, width: int = W, height: int = H, seed: int = 0) -> FrameResult:
    rng = np.random.default_rng(seed + index)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    instances = []
    for tid, (prompt, frames) in TRACKS.items():
        if index in frames:
            mask = rng.random((height, width)) > 0.7
            ys, xs = np.nonzero(mask)
            box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
            instances.append(FrameInstance(tid, prompt, 0.5 + tid / 100, box, mask))
    return FrameResult(index, index / 10, width, height, instances, {"track_s": 0.01}, image)


class FakeVideo:
    width, height, fps, frame_count, duration_s = W, H, 10.0, 12, 1.2


class FakeRun:
    """Quacks like a `TrackingRun`: iterable once, `.video`, `.expected_frames`, `.prompts`, `.close()`."""

    def __init__(self, indices, width: int = W, height: int = H, interrupt_at: int | None = None) -> None:
        self.indices = list(indices)
        self.size = (width, height)
        self.interrupt_at = interrupt_at
        self.video = FakeVideo()
        self.expected_frames = len(self.indices)
        self.prompts = list(PROMPTS)
        self.closed = False

    def __iter__(self):
        for i in self.indices:
            if i == self.interrupt_at:
                raise KeyboardInterrupt
            yield _frame(i, *self.size)

    def close(self) -> None:
        self.closed = True


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_write_tracking_writes_every_output(tmp_path):
    run = FakeRun(range(12))
    seen: list[tuple[int, int | None]] = []
    summary = write_tracking(run, tmp_path, masks=True, progress=lambda done, total: seen.append((done, total)))

    assert run.closed
    assert seen == [(i, 12) for i in range(1, 13)]
    lines = _jsonl(tmp_path / "frames.jsonl")
    assert [line["frame"] for line in lines] == list(range(12))
    for line in lines:
        expected = _frame(line["frame"])
        assert [inst["track_id"] for inst in line["instances"]] == [inst.track_id for inst in expected.instances]
        for inst, want in zip(line["instances"], expected.instances, strict=True):
            mask = rle_to_mask(inst["mask"])
            assert mask.shape == (H, W)
            assert np.array_equal(mask, want.mask)

    frames = _decode(tmp_path / "overlay.mp4")
    assert len(frames) == 12
    assert frames[0].shape == (H, W, 3)

    on_disk = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert on_disk == summary
    assert summary["completed"] is True and summary["stop_reason"] is None
    assert summary["frames_processed"] == 12
    assert (summary["first_frame"], summary["last_frame"]) == (0, 11)
    jsonl_ids = {inst["track_id"] for line in lines for inst in line["instances"]}
    assert {t["track_id"] for t in summary["tracks"]} == jsonl_ids == set(TRACKS)
    for t in summary["tracks"]:
        prompt, present = TRACKS[t["track_id"]]
        assert (t["prompt"], t["first_frame"], t["last_frame"], t["frames_present"]) == (
            prompt, present[0], present[-1], len(present))
    assert [(p["text"], p["query"], p["count"]) for p in summary["prompts"]] == [("dog", "dog", 2), ("狗", "dog", 1),
                                                                                  ("cat", "cat", 0)]
    assert summary["video"]["fps"] == 10.0 and summary["video"]["frame_count"] == 12
    assert summary["timings"]["total_s"] > 0 and summary["timings"]["frames_per_s"] > 0
    assert summary["timings"]["mean_per_frame_s"] == {"track_s": pytest.approx(0.01)}
    assert summary["outputs"] == {"jsonl": "frames.jsonl", "masks": "masks", "mp4": "overlay.mp4",
                                  "summary": "summary.json"}
    # masks: one PNG per track per frame, none for frames without instances
    pngs = sorted(p.relative_to(tmp_path / "masks").as_posix() for p in (tmp_path / "masks").rglob("*.png"))
    assert len(pngs) == sum(len(frames) for _, frames in TRACKS.values())
    assert "frame_000003/track_0005.png" in pngs
    assert not list(tmp_path.glob(".summary.json*"))  # the temporary file was renamed away


def test_mask_png_matches_the_mask(tmp_path):
    from PIL import Image

    frame = _frame(4)
    sink = MaskPngSink(tmp_path)
    sink.write(frame)
    sink.write(FrameResult(99, 9.9, W, H))  # empty frame: no folder
    sink.close()
    for inst in frame.instances:
        png = np.asarray(Image.open(tmp_path / "frame_000004" / f"track_{inst.track_id:04d}.png"))
        assert png.dtype == np.uint8 and set(np.unique(png)) <= {0, 255}
        assert np.array_equal(png == 255, inst.mask)
    assert not (tmp_path / "frame_000099").exists()


def test_stride_keeps_source_timing_in_the_mp4(tmp_path):
    (tmp_path / "summary.json").write_text('{"completed": true}')  # an earlier run's: must not survive
    write_tracking(FakeRun(range(0, 12, 3)), tmp_path, formats=("mp4",))
    with av.open(str(tmp_path / "overlay.mp4")) as container:
        times = [round(f.time, 3) for f in container.decode(video=0)]
    assert times == [0.0, 0.3, 0.6, 0.9]  # source indices at 10 fps
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "frames.jsonl").exists()


def test_odd_frame_size_is_padded_to_even(tmp_path):
    run = FakeRun(range(3), width=65, height=47)
    write_tracking(run, tmp_path, formats=("mp4", "jsonl"))
    frames = _decode(tmp_path / "overlay.mp4")
    assert len(frames) == 3 and frames[0].shape == (48, 66, 3)
    assert rle_to_mask(_jsonl(tmp_path / "frames.jsonl")[0]["instances"][0]["mask"]).shape == (47, 65)
    write_tracking(FakeRun(range(2)), tmp_path, formats=("jsonl",))  # re-run without video: no stale overlay
    assert not (tmp_path / "overlay.mp4").exists() and len(_jsonl(tmp_path / "frames.jsonl")) == 2


def test_overlay_colours_follow_track_ids():
    sink_frame = _frame(4)
    from sam3studio.render import PALETTE

    video = FrameOverlay(W, H, alpha=1.0)  # what OverlayVideoSink draws each frame with: no file needed
    plain = FrameResult(4, 0.4, W, H, [], {}, np.zeros((H, W, 3), np.uint8))
    for inst in sink_frame.instances:
        only = FrameResult(4, 0.4, W, H, [inst], {}, plain.image)
        out = video.render(only)
        ys, xs = np.nonzero(inst.mask)
        colour = PALETTE.by_idx(inst.track_id).as_rgb()
        # with opacity 1 a mask pixel far from the label is exactly the track's colour
        far = [(y, x) for y, x in zip(ys, xs, strict=True) if y > 30]
        assert far and tuple(out[far[0]]) == colour


def test_should_stop_leaves_playable_partial_output(tmp_path):
    run = FakeRun(range(12))
    done: list[int] = []
    summary = write_tracking(run, tmp_path, progress=lambda n, _t: done.append(n), should_stop=lambda: len(done) >= 5)
    assert run.closed
    assert summary["completed"] is False and summary["stop_reason"] == "stopped"
    assert summary["frames_processed"] == 5 and summary["last_frame"] == 4
    assert len(_decode(tmp_path / "overlay.mp4")) == 5
    assert len(_jsonl(tmp_path / "frames.jsonl")) == 5
    assert json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))["completed"] is False


def test_keyboard_interrupt_closes_everything_and_reraises(tmp_path):
    run = FakeRun(range(12), interrupt_at=7)
    with pytest.raises(KeyboardInterrupt):
        write_tracking(run, tmp_path)
    assert run.closed
    assert len(_decode(tmp_path / "overlay.mp4")) == 7
    assert len(_jsonl(tmp_path / "frames.jsonl")) == 7
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["completed"] is False and summary["stop_reason"] == "interrupted"
    assert summary["frames_processed"] == 7 and "error" not in summary


def test_error_mid_run_is_recorded_and_reraised(tmp_path):
    class Broken(FakeRun):
        def __iter__(self):
            yield _frame(0)
            raise ValueError("corrupt packet at frame 1")

    with pytest.raises(ValueError, match="corrupt packet"):
        write_tracking(Broken(range(3)), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["completed"] is False and summary["stop_reason"] == "error"
    assert summary["error"] == "corrupt packet at frame 1" and summary["frames_processed"] == 1
    assert len(_decode(tmp_path / "overlay.mp4")) == 1


def test_empty_run_and_unknown_format(tmp_path):
    summary = write_tracking(FakeRun([]), tmp_path)
    assert summary["completed"] is True and summary["frames_processed"] == 0 and summary["tracks"] == []
    assert [p["count"] for p in summary["prompts"]] == [0, 0, 0]
    assert (tmp_path / "frames.jsonl").read_text() == "" and not (tmp_path / "overlay.mp4").exists()
    with pytest.raises(ValueError, match="gif"):
        write_tracking(FakeRun([]), tmp_path, formats=("gif",))


def test_sinks_used_directly(tmp_path):
    frames = [_frame(i) for i in range(3)]
    with FramesJsonlSink(tmp_path / "f.jsonl", include_masks=False) as jsonl, \
            OverlayVideoSink(tmp_path / "o.mp4", 29.97, W, H, queries={"狗": "dog"}) as video:
        for f in frames:
            jsonl.write(f)
            assert len((tmp_path / "f.jsonl").read_text(encoding="utf-8").splitlines()) == f.index + 1  # flushed
            video.write(f)
    assert "mask" not in _jsonl(tmp_path / "f.jsonl")[0]["instances"][0]
    assert len(_decode(tmp_path / "o.mp4")) == 3
    writer = SummaryWriter()  # no path: build only
    for f in frames:
        writer.write(f)
    built = writer.finish(completed=True, prompts=[PromptResult("dog", 0.0, 0)])
    assert built["frames_processed"] == 3 and built["prompts"][0]["count"] == 1
    assert [p["text"] for p in built["prompts"]] == ["dog"]
