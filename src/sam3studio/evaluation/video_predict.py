"""Run SAM 3's video tracker over every video of a `VideoDataset` (the prompts asked on it).

Each video's listed frames are linked, in their listed order, into a temporary folder that the
tracker reads as a folder video, so frame ``t`` of the run is ``file_names[t]`` whatever the files
are called. A video asks at most ``VideoSegmenter.max_prompts`` prompts per run; more are tracked in
several runs (track ids are kept apart per prompt, which is what the metrics compare).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam3studio.evaluation.data import EvalDataError
from sam3studio.evaluation.resources import peak_memory
from sam3studio.evaluation.video_data import EvalVideo, VideoDataset, VideoPredictions
from sam3studio.results import mask_to_rle

if TYPE_CHECKING:
    from sam3studio.video.tracker import VideoSegmenter

__all__ = ["predict_video"]


@contextmanager
def _frames_folder(dataset: VideoDataset, video: EvalVideo) -> Iterator[Path]:
    """A temporary folder of links ``000000.jpg, 000001.png, ...`` to the video's frames in listed order."""
    paths = dataset.frame_paths(video)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise EvalDataError(f"frame {missing[0]}: no such file{more} (set the frames folder with --images)")
    folder = Path(tempfile.mkdtemp(prefix=f"sam3studio-eval-v{video.id}-"))
    try:
        for t, path in enumerate(paths):
            link = folder / f"{t:06d}{path.suffix.lower()}"
            try:
                os.symlink(path.resolve(), link)
            except OSError:  # no symlinks (some file systems): copy instead
                shutil.copyfile(path, link)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _track_one(segmenter: VideoSegmenter, folder: Path, video: EvalVideo, prompts: list[str],
               score_threshold: float, latency: list[float]) -> dict[tuple[str, int], dict[str, Any]]:
    """(prompt, track id) -> scores and per-frame RLEs for one run over ``folder``."""
    tracks: dict[tuple[str, int], dict[str, Any]] = {}
    run = segmenter.track(folder, prompts, score_threshold=score_threshold)
    with run:
        for frame in run:
            latency.append(float(sum((frame.timings or {}).values())))
            if frame.index >= video.length:  # pragma: no cover - the folder holds exactly the listed frames
                break
            if (frame.height, frame.width) != (video.height, video.width):
                raise EvalDataError(f"video {video.id}: frame {frame.index} is {frame.width}x{frame.height}, "
                                    f"the ground truth says {video.width}x{video.height}")
            for inst in frame.instances:
                t = tracks.setdefault((inst.prompt, inst.track_id), {"scores": [], "segmentations": [None] * video.length})
                t["scores"].append(float(inst.score))
                t["segmentations"][frame.index] = mask_to_rle(inst.mask)
    return tracks


def predict_video(
    segmenter: VideoSegmenter,
    dataset: VideoDataset,
    *,
    score_threshold: float = 0.5,
    on_video: Callable[[EvalVideo], None] | None = None,
) -> VideoPredictions:
    """Track the prompts asked on each video; a track's score is the mean of its per-frame scores.

    ``score_threshold`` is the tracker's detection threshold (objects below it are neither started nor
    reported). Raises `EvalDataError` for a missing frame or one whose size differs from the ground truth.
    """
    per_run = max(1, int(getattr(segmenter, "max_prompts", 16)))
    tracks: list[dict[str, Any]] = []
    latency: list[float] = []
    started = time.perf_counter()
    for video in dataset.videos:
        cats_of: dict[str, list[int]] = {}
        for cid in dataset.asked.get(video.id, []):
            cats_of.setdefault(dataset.category(cid).prompt, []).append(cid)
        prompts = list(cats_of)
        with _frames_folder(dataset, video) as folder:
            for start in range(0, len(prompts), per_run):
                found = _track_one(segmenter, folder, video, prompts[start:start + per_run], score_threshold, latency)
                for (prompt, tid), t in sorted(found.items(), key=lambda kv: kv[0][1]):
                    score = sum(t["scores"]) / len(t["scores"])
                    tracks.extend({"video_id": video.id, "category_id": cid, "track_id": tid, "score": score,
                                   "segmentations": list(t["segmentations"])} for cid in cats_of.get(prompt, []))
        if on_video is not None:
            on_video(video)
    meta = {"segmenter": segmenter.info(), "score_threshold": score_threshold, "ground_truth": dataset.source,
            "videos": len(dataset.videos), "elapsed_s": time.perf_counter() - started,
            "memory": peak_memory(getattr(segmenter, "device", None))}
    return VideoPredictions(tracks, latency, meta)
