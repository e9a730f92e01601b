"""YouTube-VIS JSON from tracking results: corrected tracks go straight to `sam3studio eval` and other tools.

The layout is YouTube-VIS' ground-truth file (Yang et al., ICCV 2019), which `sam3studio eval`
reads as video ground truth and most video-instance tools load::

    {"info": {...},
     "videos": [{"id": 1, "name": "clip", "width": W, "height": H, "length": n,
                 "file_names": ["clip/00000.jpg", ...]}],
     "categories": [{"id": 1, "name": "dog", "supercategory": "object"}],
     "annotations": [{"id": 7, "video_id": 1, "category_id": 1, "iscrowd": 0, "height": H, "width": W,
                      "length": 1, "segmentations": [RLE or null per file name],
                      "bboxes": [[x, y, w, h] or null, ...], "areas": [int or null, ...],
                      "score": 0.83, "track_id": 7}]}

One annotation per track (its id is the track id, the REST API's ``object_id``), one category per
prompt (an object made by clicks carries its label, ``"object"`` by default). ``file_names[j]`` is the
``j``-th processed frame, named ``<video>/<frame index, 5 digits>.jpg`` (what extracting the frames
with FFmpeg's ``-start_number 0`` gives); for a frame folder the folder's own file names. ``score``
and ``track_id`` are extra keys (YouTube-VIS readers ignore them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sam3studio.io.files import atomic_write_json

__all__ = ["YTVIS_NAME", "YtvisSink", "jsonl_to_ytvis", "write_ytvis", "ytvis_from_frames"]

YTVIS_NAME = "ytvis.json"


class YtvisSink:
    """Collects frames (`FrameResult` or their ``to_dict`` form) and writes one YouTube-VIS file at `close`.

    Only the per-frame RLE strings, boxes and scores are kept until then, never masks or pixels.
    """

    def __init__(self, path: str | Path | None, video_name: str, width: int, height: int,
                 file_names: Sequence[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.video_name, self.width, self.height = video_name, int(width), int(height)
        self.file_names = list(file_names) if file_names is not None else None
        self.frames: list[int] = []
        self._tracks: dict[int, dict[str, Any]] = {}
        self._prompts: dict[str, int] = {}
        self._closed = False

    def write(self, frame: Any) -> None:
        data = frame.to_dict() if hasattr(frame, "to_dict") else frame
        position = len(self.frames)
        if not self.width or not self.height:  # a summary without video info: the frames know their size
            self.width, self.height = int(data.get("width") or 0), int(data.get("height") or 0)
        self.frames.append(int(data["frame"]))
        for inst in data.get("instances", ()):
            prompt = str(inst.get("prompt") or "object")
            self._prompts.setdefault(prompt, len(self._prompts) + 1)
            track = self._tracks.setdefault(int(inst["track_id"]), {"prompt": prompt, "at": {}})
            x1, y1, x2, y2 = (float(v) for v in inst["box_xyxy"])
            track["at"][position] = (inst.get("mask"), [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                                     int(inst.get("area", 0)), float(inst.get("score", 0.0)))

    def build(self) -> dict[str, Any]:
        n = len(self.frames)
        names = self.file_names if self.file_names is not None and len(self.file_names) == n else [
            f"{self.video_name}/{index:05d}.jpg" for index in self.frames]
        annotations = []
        for track_id, track in sorted(self._tracks.items()):
            at = track["at"]
            scores = [v[3] for v in at.values()]
            annotations.append({
                "id": track_id, "track_id": track_id, "video_id": 1, "category_id": self._prompts[track["prompt"]],
                "iscrowd": 0, "height": self.height, "width": self.width, "length": 1,
                "segmentations": [at[j][0] if j in at else None for j in range(n)],
                "bboxes": [at[j][1] if j in at else None for j in range(n)],
                "areas": [at[j][2] if j in at else None for j in range(n)],
                "score": round(sum(scores) / len(scores), 6) if scores else 0.0,
            })
        return {
            "info": {"description": "sam3studio tracks in YouTube-VIS layout", "frames": self.frames},
            "videos": [{"id": 1, "name": self.video_name, "width": self.width, "height": self.height, "length": n,
                        "file_names": names}],
            "categories": [{"id": cid, "name": name, "supercategory": "object"} for name, cid in self._prompts.items()],
            "annotations": annotations,
        }

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.path is not None:
            atomic_write_json(self.path, self.build(), indent=None)


def ytvis_from_frames(frames: Iterable[Any], *, video_name: str, width: int, height: int,
                      file_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The YouTube-VIS dict of ``frames`` (`FrameResult`s or their dicts, in processing order)."""
    sink = YtvisSink(None, video_name, width, height, file_names)
    for frame in frames:
        sink.write(frame)
    return sink.build()


def write_ytvis(path: str | Path, data: dict[str, Any]) -> Path:
    path = Path(path)
    atomic_write_json(path, data, indent=None)
    return path


def jsonl_to_ytvis(folder: str | Path, video_name: str | None = None) -> dict[str, Any]:
    """YouTube-VIS of a finished tracking run's folder (``frames.jsonl`` + ``summary.json``), e.g. a video job's.

    ``video_name`` (default: the source video's file stem) names the video and prefixes its file names.
    """
    folder = Path(folder)
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    video = summary.get("video") or {}
    name = video_name or Path(str(video.get("path") or folder.name)).stem or "video"
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)

    def frames() -> Iterable[dict[str, Any]]:
        with (folder / "frames.jsonl").open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)

    return ytvis_from_frames(frames(), video_name=name, width=width, height=height)
