"""What the LLM tools do, without the protocol: segment, count, refine, and video jobs, each answering a
JSON-ready dict (the models of `sam3studio.llm.contract`), a short text summary, and an optional marked picture.

`sam3studio.llm.mcp_server` publishes these as MCP tools; `sam3studio.llm.agent` builds its own tools on
`instance_body` and `marked_image`. Every method is synchronous and raises only `Sam3StudioError`
subclasses for anything the caller can fix; the MCP layer adds time budgets and turns errors into
tool errors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sam3studio.errors import InputError
from sam3studio.jobs import JobRunner
from sam3studio.llm.contract import LIMITS
from sam3studio.llm.inputs import PathPolicy, read_image, video_writer
from sam3studio.llm.marks import encode_jpeg, marked_image
from sam3studio.masks import MaskFormat, segmentation_dict, set_mask
from sam3studio.results import SCHEMA_VERSION, Instance, PromptResult, Segmentation, rle_to_mask
from sam3studio.service import SegmentOptions, SegmentService
from sam3studio.settings import Settings

__all__ = ["Answer", "Sam3Tools", "instance_body", "segment_summary"]

MAX_SUMMARY_LINES = 30
MAX_RLE_CHARS = 2_000_000  # a mask given to refine


@dataclass
class Answer:
    """A tool's answer: structured content, the text an LLM reads, and an optional JPEG (base64)."""

    data: dict[str, Any]
    text: str
    image_jpeg: str | None = None


def instance_body(body: dict[str, Any], width: int, height: int) -> dict[str, Any]:
    """A REST instance body (``Instance.to_dict``) plus ``box``, ``box_normalized`` and ``area_fraction``."""
    box = [float(v) for v in body["box_xyxy"]]
    body["box"] = box
    body["box_normalized"] = [round(min(1.0, max(0.0, v / s)), 4) for v, s in zip(box, (width, height) * 2, strict=True)]
    body["area_fraction"] = body["area_ratio"]
    return body


def _prompt_body(p: dict[str, Any]) -> dict[str, Any]:
    return {**p, "no_match": p["count"] == 0}


def _box_text(box: list[float]) -> str:
    return "[" + ", ".join(f"{v:.0f}" for v in box) + "]"


def segment_summary(data: dict[str, Any]) -> str:
    """A few lines an LLM reads: per prompt found/none, then one line per instance (bounded)."""
    lines = [f"Image {data['width']}x{data['height']} px."]
    for p in data["prompts"]:
        shown = p["text"] if p["query"] == p["text"] else f"{p['text']} (as '{p['query']}')"
        lines.append(f"'{shown}': no match (presence {p['presence_score']:.2f})." if p["no_match"] else
                     f"'{shown}': {p['count']} found (presence {p['presence_score']:.2f}).")
    for inst in data["instances"][:MAX_SUMMARY_LINES]:
        lines.append(f"#{inst['id']} {inst['prompt']} score {inst['score']:.2f} box {_box_text(inst['box'])} "
                     f"area {100 * inst['area_fraction']:.1f}%")
    if len(data["instances"]) > MAX_SUMMARY_LINES:
        lines.append(f"... {len(data['instances']) - MAX_SUMMARY_LINES} more in the structured result.")
    if data.get("truncated"):
        lines.append("More instances exist than max_instances allowed.")
    return "\n".join(lines)


def _recount(seg: Segmentation) -> Segmentation:
    """``seg`` with each prompt's count set to the instances it holds (after a cut)."""
    counts = np.bincount(seg.prompt_ids, minlength=len(seg.prompts)) if len(seg) else np.zeros(len(seg.prompts), int)
    seg.prompts = [dataclasses.replace(p, count=int(c)) for p, c in zip(seg.prompts, counts, strict=True)]
    return seg


class Sam3Tools:
    """The tools over one `SegmentService` and one `JobRunner`; paths are read as ``paths`` allows."""

    def __init__(self, service: SegmentService, jobs: JobRunner | None, settings: Settings, paths: PathPolicy) -> None:
        self.service, self.jobs, self.settings, self.paths = service, jobs, settings, paths

    # ------------------------------------------------------------------ images
    def _segment(self, image: str, prompts: Any, threshold: float, max_instances: int,
                 cancelled: Callable[[], bool] | None) -> tuple[np.ndarray, Segmentation, bool]:
        rgb = read_image(image, self.service, self.paths)
        if isinstance(prompts, list) and not any(isinstance(p, str) and p.strip() for p in prompts):
            raise InputError("prompts is empty: give one or more noun phrases, like [\"person\", \"red car\"]")
        limit = min(max_instances, self.settings.max_instances)
        ask = min(limit + 1, self.settings.max_instances)  # one more than asked: tells whether the cut dropped any
        seg = self.service.segment(rgb, prompts, SegmentOptions(score_threshold=threshold, max_instances=ask), cancelled)
        truncated = len(seg) > limit
        if truncated:
            keep = np.sort(np.argsort(-seg.scores, kind="stable")[:limit])  # the best scores, as the model cuts
            seg = _recount(seg[keep])
        return rgb, seg, truncated

    def segment(self, image: str, prompts: Any, threshold: float = 0.5, mask_format: MaskFormat = "none",
                max_instances: int = LIMITS.default_max_instances, max_polygon_points: int = LIMITS.max_polygon_points,
                annotate: bool = True, cancelled: Callable[[], bool] | None = None) -> Answer:
        rgb, seg, truncated = self._segment(image, prompts, threshold, max_instances, cancelled)
        data = segmentation_dict(seg, mask_format, max_points=max_polygon_points)
        for inst in data["instances"]:
            instance_body(inst, seg.width, seg.height)
            if mask_format == "none":
                inst.pop("mask", None)
        data["prompts"] = [_prompt_body(p) for p in data["prompts"]]
        data.update(mask_format=mask_format, no_match=len(seg) == 0, truncated=truncated)
        picture = None
        if annotate:
            picture = encode_jpeg(marked_image(rgb, seg, list(range(len(seg))), LIMITS.marked_image_side))
        text = segment_summary(data)
        if picture is not None and len(seg):
            text += "\nThe attached image shows each instance's id on its mask."
        return Answer(data, text, picture)

    def count(self, image: str, prompts: Any, threshold: float = 0.5,
              cancelled: Callable[[], bool] | None = None) -> Answer:
        rgb, seg, _ = self._segment(image, prompts, threshold, self.settings.max_instances, cancelled)
        rows = [{"text": p.text, "query": p.query, "presence_score": round(float(p.presence_score), 6),
                 "count": int(p.count), "no_match": p.count == 0} for p in seg.prompts]
        data = {"schema_version": SCHEMA_VERSION, "width": seg.width, "height": seg.height, "total": len(seg),
                "no_match": len(seg) == 0, "prompts": rows}
        text = "; ".join(f"'{r['text']}': {r['count']}" + (" (no match)" if r["no_match"] else "") for r in rows)
        if len(seg) >= self.settings.max_instances:
            text += f" (at most {self.settings.max_instances} are counted)"
        return Answer(data, text)

    def refine(self, image: str, points: list[list[float]] | None = None, point_labels: list[int] | None = None,
               box: list[float] | None = None, mask: dict[str, Any] | None = None, mask_format: MaskFormat = "none",
               max_polygon_points: int = LIMITS.max_polygon_points, label: str = "object", annotate: bool = True,
               cancelled: Callable[[], bool] | None = None) -> Answer:
        rgb = read_image(image, self.service, self.paths)
        if points is None and box is None:
            raise InputError("give points (with point_labels) and/or a box around the object")
        if points is not None and point_labels is None:
            point_labels = [1] * len(points)  # clicks on the object unless told otherwise
        current = None
        if mask is not None:
            if len(str(mask.get("counts", ""))) > MAX_RLE_CHARS:
                raise InputError(f"mask: the RLE counts string is over {MAX_RLE_CHARS} characters")
            try:
                current = rle_to_mask(mask, rgb.shape[:2])
            except ValueError as exc:
                raise InputError(f"mask: {exc}") from None
        inst: Instance = self.service.refine(rgb, points, point_labels, box, current, cancelled=cancelled)
        inst = dataclasses.replace(inst, prompt=label)
        h, w = rgb.shape[:2]
        body = inst.to_dict(include_mask=mask_format == "rle")
        set_mask(body, inst.mask, mask_format, max_points=max_polygon_points)
        if mask_format == "none":
            body.pop("mask", None)
        instance_body(body, w, h)
        data = {"schema_version": SCHEMA_VERSION, "width": w, "height": h, "mask_format": mask_format, "instance": body}
        picture = None
        if annotate:
            one = Segmentation(width=w, height=h, prompts=[PromptResult(label, inst.score, 1)], masks=inst.mask[None],
                               boxes=np.array([inst.box], np.float32), scores=np.array([inst.score], np.float32),
                               prompt_ids=np.zeros(1, np.int64))
            picture = encode_jpeg(marked_image(rgb, one, [0], LIMITS.marked_image_side))
        text = (f"Image {w}x{h} px. '{label}': score {inst.score:.2f} box {_box_text(body['box'])} "
                f"area {100 * body['area_fraction']:.1f}%" + (" (empty mask)" if inst.area == 0 else ""))
        return Answer(data, text, picture)

    # ------------------------------------------------------------------ video jobs
    def _runner(self) -> JobRunner:
        jobs = self.jobs
        if jobs is None or not jobs.running:
            reason = getattr(jobs, "start_error", None) if jobs is not None else None
            raise InputError("video jobs are unavailable on this server" + (f": {reason}" if reason else ""))
        return jobs

    @staticmethod
    def _status(job: dict[str, Any]) -> dict[str, Any]:
        return {"job_id": job["id"], "state": job["state"],
                "progress": {"done": int(job["progress_done"] or 0), "total": job["progress_total"]},
                "error": job["error"], "created": job["created"], "updated": job["updated"]}

    def track_video(self, video: str, prompts: Any, threshold: float = 0.5, stride: int = 1, start: float | None = None,
                    end: float | None = None, max_frames: int | None = None) -> Answer:
        jobs = self._runner()
        write_input, suffix = video_writer(video, self.settings, self.paths)
        job = jobs.submit(write_input, suffix, {"prompts": prompts, "threshold": threshold, "stride": stride,
                                                "start": start, "end": end, "max_frames": max_frames})
        status = self._status(job)
        data = {"job_id": job["id"], "state": job["state"], "progress": status["progress"],
                "next": f"call job_status with job_id={job['id']} (wait_s up to {LIMITS.max_wait_s:g} waits for it), "
                        "then job_result"}
        total = status["progress"]["total"]
        return Answer(data, f"Video job {job['id']} is {job['state']}" + (f" ({total} frames to process)." if total else ".")
                      + " Poll it with job_status; fetch the tracks with job_result once it is done.")

    def job_status(self, job_id: str) -> Answer:
        job = self._runner().get(job_id)
        data = self._status(job)
        p = data["progress"]
        text = f"Job {job_id}: {job['state']}, {p['done']}" + (f"/{p['total']}" if p["total"] else "") + " frames"
        if job["error"]:
            text += f"; error: {job['error']}"
        return Answer(data, text + ".")

    def job_result(self, job_id: str, max_tracks: int = LIMITS.default_max_tracks) -> Answer:
        jobs = self._runner()
        job = jobs.get(job_id)
        if job["state"] == "failed":
            raise InputError(f"job {job_id} failed: {job['error']}")
        if job["state"] != "done":
            raise InputError(f"job {job_id} is {job['state']}, not done yet: call job_status (with wait_s) until it is")
        summary, _ = jobs.result(job_id)
        tracks = summary.get("tracks", [])
        prompts = [{"text": p["text"], "query": p.get("query") or p["text"], "count": int(p.get("count", 0)),
                    "no_match": int(p.get("count", 0)) == 0} for p in summary.get("prompts", [])]
        video = {k: summary.get("video", {}).get(k) for k in ("width", "height", "fps", "frame_count", "duration_s")}
        data = {"job_id": job_id, "state": "done", "completed": bool(summary.get("completed")), "video": video,
                "frames_processed": int(summary.get("frames_processed", 0)), "first_frame": summary.get("first_frame"),
                "last_frame": summary.get("last_frame"), "no_match": not tracks, "prompts": prompts,
                "tracks": tracks[:max_tracks], "tracks_total": len(tracks), "truncated": len(tracks) > max_tracks}
        if self.paths.any_path:  # the caller is the local user: where the files are
            folder = Path(jobs.job_dir(job_id))
            data["files"] = {name: str(folder / name) for name in ("overlay.mp4", "frames.jsonl")
                             if (folder / name).is_file()}
        counts = ", ".join(f"'{p['text']}': {p['count']}" + (" (no match)" if p["no_match"] else "") for p in prompts)
        text = f"Job {job_id} done: {data['frames_processed']} frames; objects tracked per prompt: {counts or 'none'}."
        return Answer(data, text)
