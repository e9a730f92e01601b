"""The REST API's pydantic models: request bodies (JSON forms; multipart forms carry the same fields) and responses."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sam3studio.masks import MaskFormat
from sam3studio.schemas import RLE, InstanceOut, SegmentationOut
from sam3studio.service import SegmentOptions


class PromptParams(BaseModel):
    """The prompt fields every request has: `prompt` or `prompts`, and the detection threshold."""

    model_config = ConfigDict(extra="forbid")
    prompt: str | None = Field(None, description="One prompt, or several separated by commas: 'dog, red car'")
    prompts: list[str] | None = Field(None, description="Prompts as a list (alternative to `prompt`)")
    threshold: float = Field(0.5, ge=0.01, le=1.0, description="Detection score threshold")

    @model_validator(mode="after")
    def _one_prompt_field(self) -> PromptParams:
        if self.prompt is None and self.prompts is None and getattr(self, "boxes", None) is None:
            raise ValueError("give `prompt` (e.g. 'dog, red car') or `prompts` (a list)"
                             + (" or exemplar `boxes`" if "boxes" in type(self).model_fields else ""))
        if self.prompt is not None and self.prompts is not None:
            raise ValueError("give either `prompt` or `prompts`, not both")
        return self

    def prompt_value(self) -> str | list[str] | None:
        return self.prompts if self.prompts is not None else self.prompt


class SegmentParams(PromptParams):
    """Options shared by the JSON and the multipart forms of POST /api/v1/segment."""

    mask_threshold: float = Field(0.5, gt=0.0, lt=1.0, description="Mask probability threshold")
    fill_holes: float = Field(0.0, ge=0.0, le=1.0, description="Fill holes smaller than this fraction of a mask")
    min_island: float = Field(0.0, ge=0.0, le=1.0, description="Drop islands smaller than this fraction of a mask")
    smooth: int = Field(0, ge=0, le=50, description="Edge smoothing radius in pixels")
    max_instances: int | None = Field(None, ge=1, description="Return at most this many instances")
    mask_format: MaskFormat = Field("rle", description="rle (COCO RLE), polygon, png_base64 or none")
    boxes: list[list[float]] | None = Field(
        None, max_length=16, description="Exemplar boxes [[x1, y1, x2, y2], ...] in image pixels: find objects like "
                                         "these (with or without a prompt). Multipart: a JSON list.")
    box_labels: list[int] | None = Field(None, description="One per box: 1 positive (default), 0 negative")

    def options(self) -> SegmentOptions:
        return SegmentOptions(score_threshold=self.threshold, mask_threshold=self.mask_threshold,
                              fill_holes=self.fill_holes, min_island=self.min_island, smooth=self.smooth,
                              max_instances=self.max_instances, boxes=self.boxes, box_labels=self.box_labels)


class JSONImage(BaseModel):
    """The image of a JSON body: `image_url` or `image_base64`, exactly one."""

    image_url: str | None = Field(None, description="http(s) URL of the image; private addresses are refused")
    image_base64: str | None = Field(None, description="The image file, base64-encoded (data: URLs accepted)")

    @model_validator(mode="after")
    def _one_image_field(self) -> JSONImage:
        if (self.image_url is None) == (self.image_base64 is None):
            raise ValueError("give exactly one of `image_url` or `image_base64`")
        return self


class SegmentJSONRequest(SegmentParams, JSONImage):
    """JSON body: the image as `image_url` or `image_base64`."""


class RefineParams(BaseModel):
    """Options shared by the JSON and the multipart forms of POST /api/v1/refine."""

    model_config = ConfigDict(extra="forbid")
    points: list[list[float]] | None = Field(
        None, max_length=64, description="Clicks [[x, y], ...] in image pixels. Multipart: a JSON list.")
    point_labels: list[int] | None = Field(
        None, max_length=64, description="One per point: 1 part of the object, 0 not part of it")
    box: list[float] | None = Field(None, description="[x1, y1, x2, y2] around the object, in image pixels")
    mask: RLE | None = Field(None, description="The object's current mask as COCO RLE (an instance's `mask` from "
                                               "/segment or /refine), to correct it with clicks")
    mask_threshold: float = Field(0.5, gt=0.0, lt=1.0, description="Mask probability threshold")
    mask_format: MaskFormat = Field("rle", description="rle (COCO RLE), polygon, png_base64 or none")
    label: str = Field("object", max_length=200, description="The `prompt` the returned instance carries")


class RefineJSONRequest(RefineParams, JSONImage):
    """JSON body: the image as `image_url` or `image_base64`."""


class VideoJobParams(PromptParams):
    """Options of POST /api/v1/videos (multipart fields or JSON)."""

    stride: int = Field(1, ge=1, le=10_000, description="Process every n-th frame")
    start: float | None = Field(None, ge=0, description="Start at this second (inclusive)")
    end: float | None = Field(None, gt=0, description="Stop at this second (exclusive)")
    max_frames: int | None = Field(None, ge=1, description="Process at most this many frames")

    def job_params(self) -> dict[str, Any]:
        return {"prompts": self.prompt_value(), "threshold": self.threshold,
                "stride": self.stride, "start": self.start, "end": self.end, "max_frames": self.max_frames}


class VideoJobJSONRequest(VideoJobParams):
    """JSON body: the video as `video_url`."""

    video_url: str = Field(description="http(s) URL of the video; private addresses are refused")


class VideoProgress(BaseModel):
    done: int
    total: int | None = Field(None, description="frames to process (null when the container does not say)")


class VideoJob(BaseModel):
    id: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    progress: VideoProgress
    error: str | None = None
    created: float = Field(description="Unix time")
    updated: float = Field(description="Unix time")
    params: dict[str, Any] = Field(default_factory=dict)


class VideoJobAccepted(BaseModel):
    id: str
    state: Literal["queued"] = "queued"


class VideoResult(BaseModel):
    id: str
    summary: dict[str, Any] = Field(description="summary.json: video, prompts, tracks, timings")
    frames: list[dict[str, Any]] = Field(description="frames.jsonl: one entry per processed frame, masks as COCO RLE")


class ModelInfo(BaseModel):
    source: str
    architecture: str | None = None
    device: str | None = None
    dtype: str | None = None
    compiled: str | None = Field(None, description="'eager', or how the model was compiled")
    backend: str | None = Field(None, description="'onnxruntime' when not the PyTorch engine (absent for torch)")


class InstanceResponse(InstanceOut):
    mask: RLE | list[list[float]] | str | None = Field(
        None, description="COCO RLE (mask_format rle), polygons as flat [x0, y0, x1, y1, ...] lists (polygon), "
                          "a base64 PNG (png_base64), or null (none)")


class SegmentResponse(SegmentationOut):
    instances: list[InstanceResponse]
    model: ModelInfo


class RefineResponse(BaseModel):
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    instance: InstanceResponse = Field(description="The object; `score` is SAM's predicted IoU of its mask")
    model: ModelInfo


class ErrorBody(BaseModel):
    code: str
    message: str
    request_id: str | None = Field(None, description="The request's X-Request-ID (quote it when reporting a problem)")


class ErrorResponse(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Ready(BaseModel):
    ready: bool
    model: ModelInfo


class QueueState(BaseModel):
    running: int = Field(description="requests doing model work now")
    waiting: int = Field(description="requests queued for the model now")
    peak_waiting: int = Field(description="most requests ever queued at once (bounded by limits.max_queue)")


class Info(BaseModel):
    version: str
    python: str
    torch: str
    transformers: str
    ready: bool
    loading: bool
    error: str | None
    model: ModelInfo
    limits: dict[str, float | int]
    body_limits: dict[str, Any] = Field(default_factory=dict, description="request-body limit in bytes per route "
                                        "(`routes`: path, content type, limit) and for every other path (`default`)")
    queue: QueueState
    rss_mb: float | None = Field(None, description="resident memory of the server process (Linux)")


# ---------------------------------------------------------------------------- datasets (/api/v1/datasets)
DatasetState = Literal["unreviewed", "accepted", "corrected", "skipped"]


class DatasetProgress(BaseModel):
    unreviewed: int
    accepted: int
    corrected: int
    skipped: int
    total: int
    reviewed: int = Field(description="accepted + corrected")


class DatasetInfo(BaseModel):
    id: str = Field(description="How routes name the dataset (from its folder name)")
    name: str
    classes: list[str] = Field(description="Class names by index")
    progress: DatasetProgress
    schema_version: int


class DatasetList(BaseModel):
    datasets: list[DatasetInfo]


class DatasetImageRow(BaseModel):
    id: int
    name: str
    state: DatasetState
    version: int
    instances: int
    width: int | None
    height: int | None


class DatasetImagePage(BaseModel):
    images: list[DatasetImageRow]
    next_after: int | None = Field(description="Pass as `after` for the next page; null on the last one")
    total: int | None = Field(description="Images matching the filter (null when not counted: see `with_total`)")


class DatasetInstance(BaseModel):
    id: int
    class_id: int
    class_name: str
    score: float | None = Field(description="The model's score; null for imported or hand-made instances")
    origin: str = Field(description="model, import, text, box, clicks or api")
    box_xyxy: list[float] = Field(min_length=4, max_length=4)
    area: int
    mask: Any = Field(None, description="In `mask_format`: COCO RLE (default), polygons, or null (none, or box only)")


class DatasetImage(BaseModel):
    id: int
    name: str
    width: int | None
    height: int | None
    state: DatasetState
    version: int = Field(description="Send it back with every change: a stale version answers 409")
    proposed: bool = Field(description="The model's proposals are stored")
    missing: bool = Field(description="The image file is not where the dataset says (moved or deleted)")
    error: str | None = Field(description="Why the last label run could not read the image")
    instances: list[DatasetInstance]


class VersionedChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=0, description="The image version this change was made on (from GET)")


class InstanceCreate(VersionedChange):
    class_name: str = Field(description="One of the dataset's classes")
    mask: RLE | None = Field(None, description="The mask as COCO RLE of the image's size")
    box: list[float] | None = Field(None, min_length=4, max_length=4, description="XYXY box (for a box-only instance)")

    @model_validator(mode="after")
    def _mask_or_box(self) -> InstanceCreate:
        if (self.mask is None) == (self.box is None):
            raise ValueError("give exactly one of `mask` (COCO RLE) or `box` ([x1, y1, x2, y2])")
        return self


class InstanceUpdate(VersionedChange):
    class_name: str | None = Field(None, description="The new class")
    mask: RLE | None = Field(None, description="The new mask (COCO RLE)")
    box: list[float] | None = Field(None, min_length=4, max_length=4, description="A new box (makes it box-only)")

    @model_validator(mode="after")
    def _something(self) -> InstanceUpdate:
        if self.class_name is None and self.mask is None and self.box is None:
            raise ValueError("give `class_name`, `mask` or `box`")
        if self.mask is not None and self.box is not None:
            raise ValueError("give `mask` or `box`, not both")
        return self


class StateChange(VersionedChange):
    state: DatasetState
# ---------------------------------------------------------------------------- video sessions
class SessionJSONRequest(BaseModel):
    """JSON body of POST /api/v1/sessions: the video as `video_url`, or `job_id` of a finished video job."""

    model_config = ConfigDict(extra="forbid")
    video_url: str | None = Field(None, description="http(s) URL of the video; private addresses are refused")
    job_id: str | None = Field(None, description="A done video job: the session opens on its video and its tracks")

    @model_validator(mode="after")
    def _one_source(self) -> SessionJSONRequest:
        if (self.video_url is None) == (self.job_id is None):
            raise ValueError("give exactly one of `video_url` or `job_id` (or upload `video` as multipart)")
        return self


class SessionCreated(BaseModel):
    id: str
    frames: int = Field(description="frames in the video (indices 0 to frames - 1)")
    fps: float
    width: int
    height: int


class _SessionInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    frame: int = Field(ge=0, description="0-based frame index")


class SessionPromptsRequest(_SessionInput):
    prompts: list[str] = Field(min_length=1, max_length=64, description="What to find on that frame, e.g. ['dog']")
    threshold: float | None = Field(None, ge=0.01, le=1.0, description="Detection score threshold (default 0.5)")


class SessionClicksRequest(_SessionInput):
    points: list[list[float]] = Field(min_length=1, max_length=64, description="Clicks [[x, y], ...] in frame pixels")
    point_labels: list[int] = Field(min_length=1, max_length=64, description="One per point: 1 on the object, 0 not")
    object_id: int | None = Field(None, description="The object to correct; omit for a new object")
    label: str = Field("object", max_length=200, description="A new object's label (its `prompt` in exports)")


class SessionBoxRequest(_SessionInput):
    box: list[float] = Field(min_length=4, max_length=4, description="[x1, y1, x2, y2] in frame pixels")
    object_id: int | None = Field(None, description="The object to redraw on that frame; omit for a new object")
    label: str = Field("object", max_length=200, description="A new object's label (its `prompt` in exports)")


class SessionPropagateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    direction: Literal["forward", "backward", "both"] = "forward"
    start_frame: int | None = Field(None, ge=0, description="Default: each object's latest input frame")
    object_ids: list[int] | None = Field(None, description="Default: the objects whose inputs changed (all if none did)")


class SessionInstance(BaseModel):
    object_id: int = Field(description="Stable across frames, text and click objects (`track_id` in the library)")
    label: str
    score: float
    box_xyxy: list[float]
    area: int
    mask: RLE | None = Field(None, description="COCO RLE at the frame's size")


class SessionObjectResult(BaseModel):
    object_id: int
    frame: int
    mask: RLE | None = Field(description="The object's mask on that frame (null when it came out empty)")
    instance: SessionInstance | None


class SessionPromptsResult(BaseModel):
    frame: int
    objects: list[SessionInstance] = Field(description="The new objects on that frame")


class SessionFrame(BaseModel):
    frame: int
    timestamp: float
    width: int
    height: int
    instances: list[SessionInstance]


class SessionObjectInfo(BaseModel):
    object_id: int
    label: str
    kind: Literal["text", "clicks", "box", "job"]
    input_frames: list[int]
    dirty: bool = Field(description="inputs changed since its last propagation")
    frames_present: int


class SessionProgress(BaseModel):
    done: int
    total: int


class SessionState(BaseModel):
    id: str
    state: Literal["idle", "propagating", "failed"]
    progress: SessionProgress
    objects: list[SessionObjectInfo]
    frames: int
    fps: float
    width: int
    height: int
    error: str | None = None
    propagations: int = Field(description="propagations completed so far")
    idle_timeout_s: float


class SessionObjectRemoved(BaseModel):
    object_id: int
    removed_frames: int
