"""Pydantic models of the JSON that `Segmentation.to_dict()` produces.

The CLI writes this JSON per image and the REST API returns it, so the schema is written down
once here (and appears in the API's OpenAPI document). No torch.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RLE(BaseModel):
    """COCO run-length encoding of one mask (pycocotools' compressed string form)."""

    model_config = ConfigDict(extra="forbid")
    size: list[int] = Field(min_length=2, max_length=2, description="[height, width]")
    counts: str


class PromptOut(BaseModel):
    text: str = Field(description="The prompt as given")
    query: str = Field(description="What the model saw (differs when the prompt was translated)")
    presence_score: float | None = Field(ge=0, le=1, description="SAM 3's probability that the concept is in the "
                                         "image (null for objects added by clicks, which no prompt found)")
    count: int = Field(ge=0, description="Instances kept for this prompt; 0 means no match")
    unknown_words: list[str] = Field(default_factory=list, description="Words the translator did not understand")


class InstanceOut(BaseModel):
    id: int = Field(ge=0)
    prompt: str
    prompt_index: int = Field(ge=0)
    score: float | None = Field(ge=0, le=1, description="detection score (null for an object added by clicks, "
                                "which was not detected)")
    predicted_iou: float | None = Field(None, ge=0, le=1, description="SAM's predicted IoU of a mask refined by "
                                        "clicks (absent otherwise)")
    box_xyxy: list[float] = Field(min_length=4, max_length=4, description="XYXY in original-image pixels")
    area: int = Field(ge=0, description="Mask area in pixels")
    area_ratio: float = Field(ge=0, le=1, description="Mask area / image area")
    mask: RLE | None = None


class SegmentationOut(BaseModel):
    """One image's result: the schema of `Segmentation.to_dict()`."""

    schema_version: int
    width: int = Field(gt=0, description="Image width in pixels (after EXIF orientation)")
    height: int = Field(gt=0, description="Image height in pixels (after EXIF orientation)")
    prompts: list[PromptOut]
    instances: list[InstanceOut]
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds per stage")
    source: str | None = Field(default=None, description="Input path (CLI exports only)")
