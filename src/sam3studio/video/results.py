"""What video tracking yields: one `FrameResult` per processed frame, instances with stable track ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sam3studio.results import mask_to_rle

__all__ = ["FrameInstance", "FrameResult", "TrackSummary", "summarize_tracks"]


@dataclass(frozen=True)
class FrameInstance:
    """One tracked object in one frame. ``track_id`` stays the same for the object across frames."""

    track_id: int
    prompt: str  # the prompt as the user typed it
    score: float
    box: tuple[float, float, float, float]  # XYXY, original frame pixels
    mask: np.ndarray  # (H, W) bool, original frame size

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def to_dict(self, include_mask: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "track_id": int(self.track_id),
            "prompt": self.prompt,
            "score": round(float(self.score), 6),
            "box_xyxy": [round(float(v), 2) for v in self.box],
            "area": self.area,
        }
        if include_mask:
            out["mask"] = mask_to_rle(self.mask)
        return out


@dataclass
class FrameResult:
    """One processed frame: its index in the source video, its timestamp, and every tracked object in it."""

    index: int  # 0-based index of the frame in the decoded source video (before stride/start)
    timestamp: float  # seconds from the start of the video
    width: int
    height: int
    instances: list[FrameInstance] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    image: np.ndarray | None = field(default=None, repr=False)  # the decoded (H, W, 3) uint8 RGB frame, for sinks

    def __len__(self) -> int:
        return len(self.instances)

    def __iter__(self):
        return iter(self.instances)

    @property
    def masks(self) -> np.ndarray:
        if not self.instances:
            return np.zeros((0, self.height, self.width), dtype=bool)
        return np.stack([inst.mask for inst in self.instances])

    def to_dict(self, include_masks: bool = True) -> dict[str, Any]:
        return {
            "frame": int(self.index),
            "timestamp": round(float(self.timestamp), 6),
            "width": int(self.width),
            "height": int(self.height),
            "instances": [inst.to_dict(include_mask=include_masks) for inst in self.instances],
        }


@dataclass
class TrackSummary:
    """One object over the whole run."""

    track_id: int
    prompt: str
    first_frame: int
    last_frame: int
    frames_present: int
    mean_score: float

    def to_dict(self) -> dict[str, Any]:
        return {"track_id": self.track_id, "prompt": self.prompt, "first_frame": self.first_frame,
                "last_frame": self.last_frame, "frames_present": self.frames_present,
                "mean_score": round(self.mean_score, 6)}


class summarize_tracks:  # noqa: N801 - used like a function that accumulates
    """Accumulates `FrameResult`s into per-track summaries without keeping the frames.

    >>> acc = summarize_tracks(); acc.add(frame); acc.tracks()  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._tracks: dict[int, dict[str, Any]] = {}
        self.frames = 0

    def add(self, frame: FrameResult) -> None:
        self.frames += 1
        for inst in frame.instances:
            t = self._tracks.setdefault(inst.track_id, {"prompt": inst.prompt, "first": frame.index, "last": frame.index,
                                                         "n": 0, "score": 0.0})
            t["last"] = frame.index
            t["n"] += 1
            t["score"] += float(inst.score)

    def tracks(self) -> list[TrackSummary]:
        return [TrackSummary(tid, t["prompt"], t["first"], t["last"], t["n"], t["score"] / t["n"])
                for tid, t in sorted(self._tracks.items())]
