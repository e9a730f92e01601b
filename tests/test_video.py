"""Video tracking through the public entry point `load_video_segmenter(...).track(...)`, on the tiny video model."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from conftest import make_test_video
from sam3studio.errors import InputError, InputTooLargeError
from sam3studio.results import rle_to_mask
from sam3studio.video import VideoLimits, VideoSegmenter, load_video_segmenter, probe_video, summarize_tracks

pytestmark = pytest.mark.slow

THRESHOLD = 0.1  # the tiny random model's scores are about 0.1-0.25


@pytest.fixture(scope="module")
def vseg(tiny_video_checkpoint):
    return load_video_segmenter(str(tiny_video_checkpoint), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_test_video(tmp_path_factory.mktemp("video") / "shapes.mp4", n=24, fps=12)


def _frames(path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_every_frame_is_tracked_with_stable_ids_and_full_size_masks(vseg, video):
    run = vseg.track(video, "cat, red car", score_threshold=THRESHOLD)
    assert run.expected_frames == 24 == _frames(video)
    frames = list(run)
    assert [f.index for f in frames] == list(range(24))
    np.testing.assert_allclose([f.timestamp for f in frames], np.arange(24) / 12, atol=1e-6)
    assert all((f.width, f.height) == (160, 120) and f.image.shape == (120, 160, 3) for f in frames)
    instances = [inst for f in frames for inst in f]
    assert instances, "threshold 0.1 on the tiny model should track something"
    for f in frames:
        d = f.to_dict()
        assert d["frame"] == f.index and len(d["instances"]) == len(f)
        for inst, out in zip(f, d["instances"], strict=True):
            assert inst.score >= THRESHOLD and inst.prompt in ("cat", "red car")
            assert inst.mask.shape == (120, 160) and inst.mask.any()
            np.testing.assert_array_equal(rle_to_mask(out["mask"]), inst.mask)
            x1, y1, x2, y2 = inst.box
            assert 0 <= x1 <= x2 <= 160 and 0 <= y1 <= y2 <= 120
    # An id belongs to one prompt for the whole video, and most ids live for more than one frame.
    prompt_of: dict[int, str] = {}
    for inst in instances:
        assert prompt_of.setdefault(inst.track_id, inst.prompt) == inst.prompt
    lives = summarize_tracks()
    for f in frames:
        lives.add(f)
    tracks = lives.tracks()
    assert {t.track_id for t in tracks} == set(prompt_of)
    assert max(t.frames_present for t in tracks) > 1
    # Each prompt reports how many tracks it found.
    assert sum(p.count for p in run.prompts) == len(tracks)
    assert {p.text: p.count for p in run.prompts} == {
        text: sum(1 for t in tracks if t.prompt == text) for text in ("cat", "red car")}


def test_pruned_session_gives_the_same_tracks_as_an_unbounded_one(vseg, tmp_path):
    """Memory is bounded by dropping session state older than the window; that must not change any result."""
    long_video = make_test_video(tmp_path / "long.mp4", n=40, fps=12)
    unbounded = VideoSegmenter(vseg.loaded, translator=vseg.translator, keep_window=10**9)
    a = list(vseg.track(long_video, "red car", score_threshold=THRESHOLD))
    b = list(unbounded.track(long_video, "red car", score_threshold=THRESHOLD))
    assert len(a) == len(b) == 40
    # The window is 20 frames: the comparison means something only if objects are still tracked past it.
    assert any(len(f) for f in a[21:]), "no object tracked after frame 20: pruning went untested"
    assert {i.track_id for f in a[21:] for i in f} & {i.track_id for f in a[:20] for i in f}, \
        "no object tracked across the window"
    for fa, fb in zip(a, b, strict=True):
        assert [i.track_id for i in fa] == [i.track_id for i in fb], fa.index
        for ia, ib in zip(fa, fb, strict=True):
            np.testing.assert_array_equal(ia.mask, ib.mask)
            assert ia.score == pytest.approx(ib.score, abs=1e-6)


def test_a_rotated_phone_video_is_tracked_and_drawn_as_a_player_shows_it(vseg, tmp_path):
    from sam3studio.video.sinks import write_tracking
    from test_video_orientation import SHOWN, _bright_corner, rotated_clip

    clip = rotated_clip(tmp_path / "phone.mp4", 90)  # stored 64x32, shown 32x64
    frames = list(vseg.track(clip, "white box", score_threshold=THRESHOLD))
    assert [(f.width, f.height) for f in frames] == [(32, 64)] * 3
    assert any(len(f) for f in frames)
    assert all(inst.mask.shape == (64, 32) for f in frames for inst in f)
    # Nothing detected at 0.9: the overlay shows the frames themselves, upright, without a matrix to apply.
    summary = write_tracking(vseg.track(clip, "white box", score_threshold=0.9), tmp_path / "out")
    assert summary["video"]["rotation"] == 90 and (summary["video"]["width"], summary["video"]["height"]) == (32, 64)
    with av.open(str(tmp_path / "out" / "overlay.mp4")) as c:
        drawn = list(c.decode(video=0))
    assert len(drawn) == 3
    for frame in drawn:
        assert (frame.width, frame.height) == (32, 64) and not frame.rotation
        assert _bright_corner(frame.to_ndarray(format="rgb24")) == SHOWN[90]


@pytest.mark.parametrize(("options", "indices"), [
    ({"stride": 3}, list(range(0, 24, 3))),
    ({"start": 0.5, "end": 1.25}, list(range(6, 15))),
    ({"start": 1.0, "stride": 2}, list(range(12, 24, 2))),
    ({"max_frames": 5}, [0, 1, 2, 3, 4]),
    ({"start": 1.5, "stride": 4, "max_frames": 2}, [18, 22]),
])
def test_stride_start_end_and_max_frames_select_frames(vseg, video, options, indices):
    run = vseg.track(video, "red car", score_threshold=THRESHOLD, **options)
    assert run.expected_frames == len(indices)
    assert [f.index for f in run] == indices


def test_folder_of_frames_and_animated_gif(vseg, video, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    with av.open(str(video)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i < 6:
                frame.to_image().save(folder / f"frame_{i}.png")  # natural order: frame_10 after frame_9
    run = vseg.track(folder, "red car", score_threshold=THRESHOLD)
    assert run.video.kind == "folder" and run.expected_frames == 6
    assert [f.index for f in run] == list(range(6))

    gif = tmp_path / "anim.gif"
    images = [Image.new("RGB", (64, 48), (20 * i, 40, 200)) for i in range(5)]
    images[0].save(gif, save_all=True, append_images=images[1:], duration=100, loop=0)
    frames = list(vseg.track(gif, "red car", score_threshold=THRESHOLD))
    assert len(frames) == 5 and all((f.width, f.height) == (64, 48) for f in frames)


def test_chinese_prompt_is_translated(vseg, video):
    run = vseg.track(video, "红色的汽车", score_threshold=THRESHOLD, max_frames=2)
    assert [(p.text, p.query) for p in run.prompts] == [("红色的汽车", "red car")]
    frames = list(run)
    assert all(inst.prompt == "红色的汽车" for f in frames for inst in f)


def test_closing_a_run_stops_it_and_restores_the_model(vseg, video):
    model = vseg.model
    before = (model.score_threshold_detection, model.new_det_thresh)
    run = vseg.track(video, "red car", score_threshold=THRESHOLD)
    it = iter(run)
    next(it)
    assert model.score_threshold_detection == THRESHOLD
    run.close()
    with pytest.raises(StopIteration):
        next(it)
    assert (model.score_threshold_detection, model.new_det_thresh) == before
    assert len(list(vseg.track(video, "red car", score_threshold=THRESHOLD, max_frames=3))) == 3  # usable again


@pytest.mark.parametrize(("limits", "match"), [
    (VideoLimits(max_duration_s=1.0), "lasts 2.0 s"),
    (VideoLimits(max_pixels=160 * 120 - 1), "160x120"),
    (VideoLimits(max_bytes=100), "bytes"),
    (VideoLimits(max_frames=23), "24 frames to process"),
])
def test_limits_are_enforced_before_decoding(vseg, video, limits, match):
    with pytest.raises(InputError, match=match):
        vseg.track(video, "red car", limits=limits)


def test_limits_raise_too_large(video):
    with pytest.raises(InputTooLargeError):
        probe_video(video, VideoLimits(max_duration_s=1.0))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"stride": 0}, "stride"),
    ({"start": 2.0, "end": 1.0}, "must be after start"),
    ({"start": -1.0}, "start"),
    ({"max_frames": 0}, "max_frames"),
    ({"score_threshold": 0.0}, "score_threshold"),
])
def test_bad_options(vseg, video, kwargs, match):
    with pytest.raises(InputError, match=match):
        vseg.track(video, "red car", **kwargs)


def test_bad_sources(vseg, tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(InputError, match="corrupt.mp4"):
        list(vseg.track(corrupt, "red car"))
    with pytest.raises(InputError, match="no such file"):
        vseg.track(tmp_path / "missing.mp4", "red car")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        vseg.track(tmp_path / "empty.mp4", "red car")
    (tmp_path / "no-frames").mkdir()
    with pytest.raises(InputError, match="no image frames"):
        vseg.track(tmp_path / "no-frames", "red car")
    with pytest.raises(InputError, match="prompt is empty"):
        vseg.track(tmp_path / "missing.mp4", "  ")


def test_truncated_video_fails_with_a_clear_error_after_the_frames_it_could_decode(vseg, video, tmp_path):
    data = video.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    try:
        frames = list(vseg.track(cut, "red car", score_threshold=THRESHOLD))
    except InputError as exc:
        assert "cut.mp4" in str(exc)
    else:  # FFmpeg may recover the frames before the cut; then fewer frames come back, never garbage
        assert len(frames) < 24


def test_mask_iou_equals_transformers_and_replaces_it_once_a_model_loads(vseg):
    """Our pairwise mask IoU (a matrix product) gives transformers' numbers without its (N, M, H*W) tensor."""
    import torch
    from transformers.models.sam3_video import modeling_sam3_video

    from sam3studio.video.tracker import mask_iou

    assert modeling_sam3_video.mask_iou is mask_iou  # installed by load_video_segmenter (the vseg fixture)
    original = modeling_sam3_video.nms_masks.__globals__  # same module namespace
    assert original["mask_iou"] is mask_iou
    g = torch.Generator().manual_seed(0)
    for n, m in ((1, 1), (7, 3), (20, 20)):
        a = torch.rand(n, 32, 40, generator=g) > torch.rand(n, 1, 1, generator=g)
        b = torch.rand(m, 32, 40, generator=g) > torch.rand(m, 1, 1, generator=g)
        a[0] = False  # an empty mask: IoU 0, not NaN
        inter = (a[:, None].flatten(2) & b[None].flatten(2)).sum(2).float()
        union = (a[:, None].flatten(2) | b[None].flatten(2)).sum(2).float()
        np.testing.assert_allclose(mask_iou(a, b).numpy(), (inter / union.clamp(min=1)).numpy(), rtol=1e-6, atol=1e-7)
