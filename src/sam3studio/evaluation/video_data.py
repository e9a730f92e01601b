"""Video ground truth and predictions for evaluation: YouTube-VIS layout (and SA-Co/VEval's additions).

Ground truth (YouTube-VIS JSON; recognised by its ``videos`` key)::

    {"videos": [{"id", "file_names": ["v1/00000.jpg", ...], "width", "height"}],
     "categories": [{"id", "name"}],
     "annotations": [{"id", "video_id", "category_id", "iscrowd",
                      "segmentations": [RLE or polygons or null, one per file name]}]}

SA-Co/VEval adds ``video_np_pairs`` (``video_id``, ``category_id``, ``noun_phrase``): then only the
listed (video, phrase) pairs are asked, a pair without masklets being a negative; without it every
category is asked on every video (YouTube-VIS).

Predictions: a YouTube-VIS results list (``[{"video_id", "category_id", "score", "segmentations"}]``),
this module's own file (`VideoPredictions.save`: the same tracks plus track ids and per-frame latency),
or `sam3studio track` output folders (``frames.jsonl``): one folder when the ground truth has one video,
else a folder of them named by video id or by the video's frame folder. Frame ``i`` of a track run is
``file_names[i]`` of its video, so track the folder holding exactly the video's listed frames.

Every mask is kept as a compressed COCO RLE (``{"size": [h, w], "counts": str}``); nothing is decoded here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from sam3studio.evaluation.data import (
    EvalCategory,
    EvalDataError,
    EvalDataset,
    _images_dir,
    _list_of_dicts,
    _need,
    _parse_coco,
    _parse_saco,
    _read_json,
    _size,
    detect_format,
    normalize_prompt,
)
from sam3studio.io.files import atomic_write_json

__all__ = [
    "VIDEO_PREDICTIONS_FORMAT",
    "EvalVideo",
    "VideoDataset",
    "VideoPredictions",
    "load_ground_truth",
    "load_video_gt",
]

VIDEO_PREDICTIONS_FORMAT = "sam3studio-video-predictions"
FORMATS = ("auto", "coco", "saco", "ytvis")


@dataclass(frozen=True)
class EvalVideo:
    id: int
    file_names: tuple[str, ...]
    width: int
    height: int
    name: str = ""

    @property
    def length(self) -> int:
        return len(self.file_names)

    @property
    def folder(self) -> str:
        """The folder of the first frame (``"v1"`` for ``"v1/00000.jpg"``); how a track folder can name it."""
        return str(PurePosixPath(self.file_names[0].replace("\\", "/")).parent) if self.file_names else ""


@dataclass
class VideoDataset:
    """Videos, categories, the (video, category) pairs asked, and ground-truth tracks.

    A track is ``{"id", "video_id", "category_id", "iscrowd", "segmentations": [RLE | None] * length}``.
    """

    format: str  # "ytvis" or "saco-veval"
    videos: list[EvalVideo]
    categories: list[EvalCategory]
    tracks: list[dict[str, Any]]
    asked: dict[int, list[int]]
    images_dir: Path | None = None
    source: str = ""

    def __post_init__(self) -> None:
        self._video_by_id = {v.id: v for v in self.videos}
        self._cat_by_id = {c.id: c for c in self.categories}

    def video(self, video_id: int) -> EvalVideo:
        return self._video_by_id[video_id]

    def category(self, category_id: int) -> EvalCategory:
        return self._cat_by_id[category_id]

    def frame_paths(self, video: EvalVideo) -> list[Path]:
        base = self.images_dir if self.images_dir is not None else Path(".")
        return [base / name for name in video.file_names]

    def pairs(self) -> list[tuple[int, int]]:
        """Every (video id, category id) asked, in video order."""
        return [(v.id, c) for v in self.videos for c in self.asked.get(v.id, [])]

    def subset(self, limit: int | None) -> VideoDataset:
        """The first ``limit`` videos with their tracks (all of them when ``limit`` is None)."""
        if limit is None or limit >= len(self.videos):
            return self
        if limit < 1:
            raise EvalDataError(f"--limit must be at least 1, got {limit}")
        keep = {v.id for v in self.videos[:limit]}
        return replace(self, videos=self.videos[:limit], tracks=[t for t in self.tracks if t["video_id"] in keep],
                       asked={k: v for k, v in self.asked.items() if k in keep})

    def with_mapping(self, mapping: Mapping[str, str]) -> VideoDataset:
        unknown = sorted(set(mapping) - {c.name for c in self.categories})
        if unknown:
            raise EvalDataError(f"mapping names categories not in the ground truth: {', '.join(map(repr, unknown[:5]))}")
        cats = [replace(c, prompt=normalize_prompt(mapping[c.name], f"mapping[{c.name!r}]")) if c.name in mapping else c
                for c in self.categories]
        return replace(self, categories=cats)

    def summary(self) -> dict[str, Any]:
        pairs = self.pairs()
        positive = {(t["video_id"], t["category_id"]) for t in self.tracks if not t["iscrowd"]}
        return {"format": self.format, "source": self.source, "videos": len(self.videos),
                "frames": sum(v.length for v in self.videos), "categories": len(self.categories),
                "pairs": len(pairs), "positive_pairs": len(positive & set(pairs)), "tracks": len(self.tracks)}


# ---------------------------------------------------------------------------- masks
def _rle(segm: Any, height: int, width: int, where: str) -> dict[str, Any] | None:
    """One frame's mask as a compressed RLE with string counts, or None (object absent)."""
    from pycocotools import mask as mask_utils

    if segm is None or segm == [] or segm == {}:
        return None
    if isinstance(segm, dict):
        size, counts = segm.get("size"), segm.get("counts")
        if not isinstance(size, list) or len(size) != 2 or not isinstance(counts, (list, str)):
            raise EvalDataError(f"{where}: an RLE needs 'size' [h, w] and 'counts'")
        if [int(size[0]), int(size[1])] != [height, width]:
            raise EvalDataError(f"{where}: mask size {size[1]}x{size[0]} (w x h) differs from the video's {width}x{height}")
        rle = mask_utils.frPyObjects(segm, height, width) if isinstance(counts, list) else segm
    elif isinstance(segm, list) and all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in segm):
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    else:
        raise EvalDataError(f"{where}: a segmentation must be an RLE dict, polygons or null")
    counts = rle["counts"]
    return {"size": [height, width], "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def _segmentations(raw: Any, video: EvalVideo, where: str) -> list[dict[str, Any] | None]:
    if not isinstance(raw, list):
        raise EvalDataError(f"{where}: 'segmentations' must be a list with one entry per frame")
    if len(raw) != video.length:
        raise EvalDataError(f"{where}: {len(raw)} segmentations for a video of {video.length} frames")
    return [_rle(s, video.height, video.width, f"{where}.segmentations[{t}]") for t, s in enumerate(raw)]


# ---------------------------------------------------------------------------- ground truth
def _parse_videos(raw_videos: list[dict[str, Any]], src: str) -> list[EvalVideo]:
    videos = []
    for i, v in enumerate(raw_videos):
        where = f"{src}: videos[{i}]"
        names = _need(v, "file_names", list, where)
        if not names or not all(isinstance(n, str) for n in names):
            raise EvalDataError(f"{where}: 'file_names' must be a non-empty list of strings")
        w, h = _size(v, where)
        videos.append(EvalVideo(_need(v, "id", int, where), tuple(names), w, h, str(v.get("video_name") or v.get("name") or "")))
    if len({v.id for v in videos}) != len(videos):
        raise EvalDataError(f"{src}: video ids are not unique")
    return videos


def _parse_ytvis(data: Any, src: str, images_dir: str | Path | None) -> VideoDataset:
    if not isinstance(data, dict):
        raise EvalDataError(f"{src}: a YouTube-VIS file must be a JSON object with videos, annotations and categories")
    videos = _parse_videos(_list_of_dicts(data, "videos", src), src)
    if not videos:
        raise EvalDataError(f"{src}: 'videos' is empty")
    raw_cats = _list_of_dicts(data, "categories", src)
    if not raw_cats:
        raise EvalDataError(f"{src}: 'categories' is empty")
    names: dict[int, str] = {}
    for i, c in enumerate(raw_cats):
        names[_need(c, "id", int, f"{src}: categories[{i}]")] = _need(c, "name", str, f"{src}: categories[{i}]")
    if len(names) != len(raw_cats):
        raise EvalDataError(f"{src}: category ids are not unique")
    by_id = {v.id: v for v in videos}
    pairs = _list_of_dicts(data, "video_np_pairs", src, required=False)
    phrase: dict[int, str] = {}
    asked: dict[int, list[int]] = {}
    for i, p in enumerate(pairs):
        where = f"{src}: video_np_pairs[{i}]"
        vid, cid = _need(p, "video_id", int, where), _need(p, "category_id", int, where)
        if vid not in by_id or cid not in names:
            raise EvalDataError(f"{where}: video {vid} or category {cid} is not in the file")
        if cid not in asked.setdefault(vid, []):
            asked[vid].append(cid)
        if isinstance(p.get("noun_phrase"), str):
            phrase.setdefault(cid, p["noun_phrase"])
    if not pairs:
        asked = {v.id: list(names) for v in videos}
    cats = [EvalCategory(cid, name, normalize_prompt(phrase.get(cid, name), f"{src}: category {cid}"))
            for cid, name in names.items()]
    tracks = []
    for i, a in enumerate(_list_of_dicts(data, "annotations", src, required=False)):
        where = f"{src}: annotations[{i}]"
        vid, cid = _need(a, "video_id", int, where), _need(a, "category_id", int, where)
        if vid not in by_id:
            raise EvalDataError(f"{where}: video_id {vid} is not in 'videos'")
        if cid not in names:
            raise EvalDataError(f"{where}: category_id {cid} is not in 'categories'")
        segs = _segmentations(a.get("segmentations"), by_id[vid], where)
        if pairs and cid not in asked.get(vid, []):
            raise EvalDataError(f"{where}: category {cid} is not listed for video {vid} in 'video_np_pairs'")
        tracks.append({"id": len(tracks) + 1, "video_id": vid, "category_id": cid,
                       "iscrowd": int(bool(a.get("iscrowd", 0))), "segmentations": segs})
    return VideoDataset("saco-veval" if pairs else "ytvis", videos, cats, tracks, asked,
                        images_dir=_images_dir(src, images_dir), source=src)


def load_video_gt(path: str | Path, images_dir: str | Path | None = None,
                  mapping: Mapping[str, str] | None = None) -> VideoDataset:
    """YouTube-VIS (or SA-Co/VEval) ground truth; ``images_dir`` defaults to the file's folder."""
    ds = _parse_ytvis(_read_json(path, "ground truth"), str(path), images_dir)
    return ds.with_mapping(mapping) if mapping else ds


def load_ground_truth(path: str | Path, images_dir: str | Path | None = None, format: str = "auto",
                      mapping: Mapping[str, str] | None = None) -> EvalDataset | VideoDataset:
    """Image (COCO, SA-Co) or video (YouTube-VIS) ground truth; ``auto`` goes by the file's keys.

    A ``videos`` key means YouTube-VIS; image entries with ``text_input`` mean SA-Co; else COCO.
    """
    if format not in FORMATS:
        raise EvalDataError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    data = _read_json(path, "ground truth")
    fmt = format
    if fmt == "auto":
        fmt = "ytvis" if isinstance(data, dict) and "videos" in data else detect_format(data)
    if fmt == "ytvis":
        ds: EvalDataset | VideoDataset = _parse_ytvis(data, str(path), images_dir)
    else:
        ds = (_parse_saco if fmt == "saco" else _parse_coco)(data, str(path), images_dir)
    return ds.with_mapping(mapping) if mapping else ds


# ---------------------------------------------------------------------------- predictions
@dataclass
class VideoPredictions:
    """Predicted tracks (YouTube-VIS results, plus an optional ``track_id``) and per-frame latencies."""

    tracks: list[dict[str, Any]]
    frame_latency_s: list[float] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": VIDEO_PREDICTIONS_FORMAT, "version": 1, "meta": self.meta, "tracks": self.tracks,
                "frame_latency_s": self.frame_latency_s}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, self.to_dict(), indent=None)
        return path

    @classmethod
    def load(cls, path: str | Path, dataset: VideoDataset) -> VideoPredictions:
        """A results JSON file, or `sam3studio track` output folder(s); checked against ``dataset``."""
        path = Path(path)
        if path.is_dir():
            return _from_track_folders(path, dataset)
        data = _read_json(path, "predictions file")
        if isinstance(data, list):
            data = {"tracks": data}
        if not isinstance(data, dict) or not isinstance(data.get("tracks"), list):
            raise EvalDataError(f"{path}: expected a YouTube-VIS results list or an object with 'tracks'")
        tracks = [_check_track(t, dataset, f"{path}: tracks[{i}]") for i, t in enumerate(data["tracks"])]
        latency = data.get("frame_latency_s") or []
        if not isinstance(latency, list) or not all(isinstance(v, (int, float)) for v in latency):
            raise EvalDataError(f"{path}: 'frame_latency_s' must be a list of seconds")
        return cls(tracks, [float(v) for v in latency], dict(data.get("meta") or {}))


def _check_track(t: Any, dataset: VideoDataset, where: str) -> dict[str, Any]:
    if not isinstance(t, dict):
        raise EvalDataError(f"{where} must be an object")
    vid, cid = _need(t, "video_id", int, where), _need(t, "category_id", int, where)
    score = t.get("score")
    if not isinstance(score, (int, float)) or isinstance(score, bool) or not 0 <= score <= 1:
        raise EvalDataError(f"{where}: 'score' must be a number in [0, 1], got {score!r}")
    try:
        video = dataset.video(vid)
    except KeyError:
        raise EvalDataError(f"{where}: video_id {vid} is not in the ground truth") from None
    out = {"video_id": vid, "category_id": cid, "score": float(score),
           "segmentations": _segmentations(t.get("segmentations"), video, where)}
    if isinstance(t.get("track_id"), int):
        out["track_id"] = t["track_id"]
    return out


def _track_folder_for(root: Path, video: EvalVideo, single: bool) -> Path | None:
    if single and (root / "frames.jsonl").is_file():
        return root
    for name in (str(video.id), video.name, video.folder, PurePosixPath(video.folder).name):
        if name and (root / name / "frames.jsonl").is_file():
            return root / name
    return None


def _from_track_folders(root: Path, dataset: VideoDataset) -> VideoPredictions:
    """Tracks from `sam3studio track` folders; a prompt names every category whose prompt it is."""
    single = len(dataset.videos) == 1
    if not single and (root / "frames.jsonl").is_file():
        raise EvalDataError(f"{root} is one track run but the ground truth has {len(dataset.videos)} videos: put one "
                            "run per video in sub-folders named by video id or frame folder")
    cats_of: dict[str, list[int]] = {}
    for c in dataset.categories:
        cats_of.setdefault(c.prompt, []).append(c.id)
    tracks: list[dict[str, Any]] = []
    latency: list[float] = []
    found = 0
    for video in dataset.videos:
        folder = _track_folder_for(root, video, single)
        if folder is None:
            continue
        found += 1
        tracks.extend(_tracks_of_run(folder, video, cats_of))
        latency.extend(_run_latency(folder))
    if not found:
        raise EvalDataError(f"{root}: no track output (frames.jsonl) for any video of the ground truth")
    return VideoPredictions(tracks, latency, {"track_folders": str(root), "videos_found": found})


def _tracks_of_run(folder: Path, video: EvalVideo, cats_of: Mapping[str, list[int]]) -> list[dict[str, Any]]:
    per_track: dict[int, dict[str, Any]] = {}
    jsonl = folder / "frames.jsonl"
    with jsonl.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                frame = json.loads(line)
                index, instances = int(frame["frame"]), frame["instances"]
            except (ValueError, KeyError, TypeError):
                raise EvalDataError(f"{jsonl}: line {n} is not a frame record") from None
            if not 0 <= index < video.length:
                raise EvalDataError(f"{jsonl}: line {n}: frame {index} is outside video {video.id} "
                                    f"({video.length} listed frames)")
            for inst in instances:
                where = f"{jsonl}: line {n}"
                tid = _need(inst, "track_id", int, where)
                rle = _rle(inst.get("mask"), video.height, video.width, where) if inst.get("mask") else None
                if rle is None:
                    raise EvalDataError(f"{where}: instances need masks (run `sam3studio track` with masks in frames.jsonl)")
                t = per_track.setdefault(tid, {"prompt": str(inst.get("prompt", "")), "scores": [],
                                               "segmentations": [None] * video.length})
                t["segmentations"][index] = rle
                t["scores"].append(float(inst.get("score", 0.0)))
    out = []
    for tid, t in sorted(per_track.items()):
        for cid in cats_of.get(normalize_prompt(t["prompt"], "prompt") if t["prompt"].strip() else "", []):
            out.append({"video_id": video.id, "category_id": cid, "track_id": tid,
                        "score": sum(t["scores"]) / len(t["scores"]), "segmentations": list(t["segmentations"])})
    return out


def _run_latency(folder: Path) -> list[float]:
    """A run's mean time per frame (summary.json), repeated once per processed frame; none without a summary."""
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        per_frame = sum(float(v) for v in summary["timings"]["mean_per_frame_s"].values())
        return [per_frame] * int(summary["frames_processed"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []
