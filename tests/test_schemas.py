"""The per-image JSON (CLI export, future API response) follows the pydantic schema."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from sam3studio.schemas import SegmentationOut


def test_engine_json_validates_against_the_schema(segmenter, cat_photo):
    result = segmenter.segment(cat_photo, "cat, red car", score_threshold=0.05)
    data = json.loads(result.to_json())
    model = SegmentationOut.model_validate(data)
    assert len(model.instances) == len(result) > 0
    assert model.width == 451 and model.height == 300
    assert all(inst.mask is not None and inst.mask.size == [300, 451] for inst in model.instances)
    assert model.model_dump(exclude_none=True, exclude={"source"}) == data


def test_empty_result_validates(segmenter, cat_photo):
    data = segmenter.segment(cat_photo, "cat", score_threshold=0.99).to_dict()
    model = SegmentationOut.model_validate(data)
    assert model.instances == [] and model.prompts[0].count == 0


@pytest.mark.parametrize("path, value", [
    (("instances", 0, "box_xyxy"), [1, 2, 3]),
    (("instances", 0, "score"), 1.5),
    (("width",), 0),
    (("prompts", 0, "count"), -1),
])
def test_schema_rejects_malformed_results(segmenter, cat_photo, path, value):
    data = segmenter.segment(cat_photo, "cat", score_threshold=0.05).to_dict()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValidationError):
        SegmentationOut.model_validate(data)


def test_json_schema_documents_the_fields():
    schema = SegmentationOut.model_json_schema()
    assert {"width", "height", "prompts", "instances"} <= set(schema["required"])
    assert "XYXY" in json.dumps(schema)
