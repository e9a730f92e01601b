"""Phone videos carry a display matrix (how a player turns the stored frames): quarter turns are applied to
every decoded frame, anything else is refused at probe time. The rotated clips are made here with PyAV
(``VideoStream.set_display_rotation``), which writes the same matrix a phone does.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from sam3studio.errors import InputError
from sam3studio.video.io import VideoLimits, iter_frames, plan_video, probe_video

STORED_W, STORED_H = 64, 32


def stored_frame() -> np.ndarray:
    """What the camera stored: dark, with a white block in the top-left corner (so every turn is visible)."""
    img = np.full((STORED_H, STORED_W, 3), 20, np.uint8)
    img[:12, :12] = 250
    return img


def rotated_clip(path: Path, degrees: float, hflip: bool = False, frames: int = 3) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = STORED_W, STORED_H, "yuv420p"
        stream.set_display_rotation(degrees, hflip=hflip)
        for _ in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(stored_frame(), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _bright_corner(rgb: np.ndarray) -> tuple[str, str]:
    ys, xs = np.nonzero(rgb.mean(axis=2) > 128)
    h, w = rgb.shape[:2]
    return ("top" if ys.mean() < h / 2 else "bottom"), ("left" if xs.mean() < w / 2 else "right")


# Where a player shows the stored top-left block after each counter-clockwise turn.
SHOWN = {0: ("top", "left"), 90: ("bottom", "left"), 180: ("bottom", "right"), 270: ("top", "right")}


@pytest.mark.parametrize("degrees", [0, 90, 180, 270, -90])
def test_quarter_turns_are_applied_to_every_frame(tmp_path, degrees):
    clip = rotated_clip(tmp_path / "phone.mp4", degrees)
    turn = degrees % 360
    info = probe_video(clip)
    assert info.rotation == turn
    assert (info.width, info.height) == ((STORED_H, STORED_W) if turn in (90, 270) else (STORED_W, STORED_H))
    assert info.to_dict()["rotation"] == turn
    frames = list(iter_frames(info))
    assert len(frames) == 3
    for _, _, rgb in frames:
        assert rgb.shape == (info.height, info.width, 3) and rgb.flags["C_CONTIGUOUS"]
        assert _bright_corner(rgb) == SHOWN[turn]


def test_the_turn_matches_what_ffmpeg_shows(tmp_path):
    """The reference: the block lands where np.rot90 of the stored frame puts it (checked once against
    ffmpeg's own auto-rotation when this was written: `ffmpeg -i phone.mp4 -frames:v 1 out.png`)."""
    clip = rotated_clip(tmp_path / "phone.mp4", 90)
    _, _, rgb = next(iter_frames(probe_video(clip)))
    expected = np.rot90(stored_frame(), 1)
    assert np.abs(rgb.astype(int) - expected.astype(int)).mean() < 8  # H.264 is lossy


@pytest.mark.parametrize(("degrees", "hflip", "match"), [(45, False, "rotated by 45 degrees"),
                                                          (90, True, "mirrors the picture"),
                                                          (0, True, "mirrors the picture")])
def test_other_display_matrices_are_refused_clearly(tmp_path, degrees, hflip, match):
    clip = rotated_clip(tmp_path / "odd.mp4", degrees, hflip=hflip)
    with pytest.raises(InputError, match=match):
        probe_video(clip)
    with pytest.raises(InputError, match="re-encode it upright"):
        plan_video(clip, VideoLimits())
