"""The tool contract for language models: output models of the MCP tools, defaults and limits.

The MCP server publishes these models as each tool's ``outputSchema`` (and validates what it sends
against them); docs/llm.md describes them with examples. Instances extend the REST API's
(`sam3studio.schemas.InstanceOut`) with LLM-friendly fields; nothing of the REST schema is dropped.

Versioning: ``schema_version`` is the REST schema's (`sam3studio.results.SCHEMA_VERSION`); within a
version, fields are only ever added. Renaming or removing a field or a tool, or changing a meaning,
is a new version.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from sam3studio.schemas import RLE, InstanceOut, PromptOut

__all__ = [
    "CountOutput", "CountPrompt", "JobProgress", "JobResultOutput", "JobStatusOutput", "Limits", "McpInstance",
    "McpPrompt", "RefineOutput", "SegmentOutput", "TrackInfo", "TrackSubmitted", "VideoInfo", "VideoPrompt",
]

MaskFormatIn = Literal["rle", "polygon", "none"]
JobState = Literal["queued", "running", "done", "failed"]


class Limits(BaseModel):
    """Defaults and bounds of the tools (the server's own, shown in docs/llm.md)."""

    default_max_instances: int = 20
    max_polygon_points: int = 64  # default points budget per instance for mask_format=polygon
    polygon_points_cap: int = 1000
    marked_image_side: int = 1024  # the annotated image's longer side, in pixels
    default_timeout_s: float = 60.0
    max_timeout_s: float = 600.0
    max_wait_s: float = 60.0  # job_status(wait_s=...)
    default_max_tracks: int = 50
    max_tracks_cap: int = 500


LIMITS = Limits()


class McpPrompt(PromptOut):
    no_match: bool = Field(description="True when nothing was found for this prompt (count is 0)")


class McpInstance(InstanceOut):
    """One object: the REST API's instance plus ``box``, ``box_normalized`` and ``area_fraction``."""

    box: list[float] = Field(min_length=4, max_length=4, description="[x1, y1, x2, y2] in image pixels "
                             "(origin top-left, x right, y down); the same as box_xyxy")
    box_normalized: list[float] = Field(min_length=4, max_length=4, description="The box divided by "
                                        "[width, height, width, height]: each value in [0, 1]")
    area_fraction: float = Field(ge=0, le=1, description="Mask area / image area (the same as area_ratio)")
    mask: RLE | list[list[float]] | None = Field(
        None, description="With mask_format=rle: COCO RLE {size: [h, w], counts}; with polygon: a list of flat "
                          "[x0, y0, x1, y1, ...] polygons in pixels; absent with none")


class SegmentOutput(BaseModel):
    schema_version: int
    width: int = Field(gt=0, description="Image width in pixels (after EXIF orientation)")
    height: int = Field(gt=0, description="Image height in pixels")
    mask_format: MaskFormatIn
    no_match: bool = Field(description="True when no prompt matched anything (instances is empty)")
    truncated: bool = Field(description="True when more instances were found than max_instances allowed")
    prompts: list[McpPrompt]
    instances: list[McpInstance]
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds per stage")


class CountPrompt(BaseModel):
    text: str
    query: str
    presence_score: float = Field(ge=0, le=1)
    count: int = Field(ge=0)
    no_match: bool


class CountOutput(BaseModel):
    schema_version: int
    width: int
    height: int
    total: int = Field(ge=0, description="Instances over all prompts")
    no_match: bool
    prompts: list[CountPrompt]


class RefineOutput(BaseModel):
    schema_version: int
    width: int
    height: int
    mask_format: MaskFormatIn
    instance: McpInstance


class JobProgress(BaseModel):
    done: int = Field(ge=0, description="Frames processed")
    total: int | None = Field(None, description="Frames to process, when known")


class TrackSubmitted(BaseModel):
    job_id: str
    state: JobState
    progress: JobProgress
    next: str = Field(description="What to call next")


class JobStatusOutput(BaseModel):
    job_id: str
    state: JobState
    progress: JobProgress
    error: str | None = None
    created: float = Field(description="Unix time")
    updated: float = Field(description="Unix time")


class VideoInfo(BaseModel):
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    frame_count: int | None = None
    duration_s: float | None = None


class VideoPrompt(BaseModel):
    text: str
    query: str
    count: int = Field(ge=0, description="Objects tracked for this prompt")
    no_match: bool


class TrackInfo(BaseModel):
    track_id: int
    prompt: str
    first_frame: int = Field(description="Index of the first frame the object was seen in (source video)")
    last_frame: int
    frames_present: int
    mean_score: float


class JobResultOutput(BaseModel):
    job_id: str
    state: Literal["done"]
    completed: bool = Field(description="False when the run stopped before the end")
    video: VideoInfo
    frames_processed: int
    first_frame: int | None = None
    last_frame: int | None = None
    no_match: bool = Field(description="True when no prompt was tracked in any frame")
    prompts: list[VideoPrompt]
    tracks: list[TrackInfo]
    tracks_total: int
    truncated: bool = Field(description="True when tracks holds only the first max_tracks")
    files: dict[str, str] | None = Field(None, description="Paths of overlay.mp4 and frames.jsonl (stdio only)")
