"""Which image model a server's video jobs may take as their detector (`SegmentService.shared_detector`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest
import torch

from sam3studio.service import SegmentService
from sam3studio.settings import Settings


@dataclass
class FakeSegmenter:
    source: str = "ckpt"
    architecture: str = "Sam3Model"
    compiled: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    model: object = field(default_factory=object)


def _service(segmenter, **settings) -> SegmentService:
    return SegmentService(Settings(**{"model": "ckpt", "device": "cpu", "dtype": "float32", **settings}),
                          segmenter=segmenter)


def test_the_image_model_is_shared_when_it_is_the_same_checkpoint_device_and_dtype():
    seg = FakeSegmenter()
    assert _service(seg).shared_detector() is seg.model
    assert _service(seg, video_model="ckpt").shared_detector() is seg.model


@pytest.mark.parametrize(("segmenter", "settings"), [
    (FakeSegmenter(source="other"), {}),  # a segmenter passed in from another checkpoint
    (FakeSegmenter(), {"video_model": "another-video-ckpt"}),
    (FakeSegmenter(dtype=torch.bfloat16), {}),  # settings say float32: sharing would cast one of them
    (FakeSegmenter(architecture="Sam3LiteTextModel"), {}),  # another detector than the video model's
    (FakeSegmenter(compiled=True), {}),  # compiled under image autocast: the video path would recompile it
])
def test_anything_else_is_not_shared(segmenter, settings):
    assert _service(segmenter, **settings).shared_detector() is None


def test_a_video_job_at_start_up_waits_for_the_image_model():
    service = _service(None)
    seg = FakeSegmenter()

    def slow_load():
        time.sleep(0.3)
        service.segmenter = seg
        service._load_done.set()

    service.load = slow_load  # type: ignore[method-assign]
    service.load_in_background()
    assert service.shared_detector(wait_s=30) is seg.model


def test_a_failed_image_load_lets_the_video_model_load_its_own():
    service = _service(None)
    service.load = lambda: service._load_done.set()  # type: ignore[method-assign]
    service.load_in_background()
    assert service.shared_detector(wait_s=30) is None
