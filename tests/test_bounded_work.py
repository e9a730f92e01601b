"""Bounded work per request: masks as RLE from the start on the service path (never the (n, H, W) stack),
the instances x pixels budget, decoding behind its own bound, and response encoding off the event loop."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import tracemalloc

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from sam3studio.api import create_app
from sam3studio.cleanup import CleanupOptions
from sam3studio.errors import InputTooLargeError, Overloaded
from sam3studio.results import RLEMasks, Segmentation, mask_to_rle, rle_to_mask
from sam3studio.service import SegmentOptions, SegmentService
from sam3studio.settings import Settings

LOW = 0.05


def fake_instances(segmenter, n: int = 100, seed: int = 0, size: int = 288) -> None:
    """Make ``segmenter`` find ``n`` round blobs for every prompt on any image (a stand-in for SAM 3 at a
    threshold of 0.01 on a busy photo). Only the model's raw outputs are faked; post-processing is real."""
    import torch

    from sam3studio.core import _RawPrediction

    g = torch.Generator().manual_seed(seed)
    centres, radii = torch.rand(n, 2, generator=g), 0.03 + 0.1 * torch.rand(n, generator=g)
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    dist = ((xx[None] - centres[:, 0, None, None]) ** 2 + (yy[None] - centres[:, 1, None, None]) ** 2).sqrt()
    logits = (8.0 * (radii[:, None, None] - dist) / radii[:, None, None]).clamp(-20, 20)
    boxes = torch.cat([centres - radii[:, None], centres + radii[:, None]], dim=1).clamp(0, 1)
    scores = torch.sort(0.3 + 0.6 * torch.rand(n, generator=g), descending=True).values
    pred = _RawPrediction(scores=scores, boxes=boxes, mask_logits=logits, presence=1.0)
    segmenter._predict = lambda key, rgb, queries, timer, geometry=None: [pred for _ in queries]


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _gradient(width: int, height: int) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    return np.broadcast_to((x + y) / 2, (height, width, 3)).astype(np.uint8)


@pytest.mark.parametrize("cleanup", [None, CleanupOptions(fill_holes=0.5, smooth=2)])
def test_rle_masks_are_exactly_the_dense_ones(segmenter, cat_photo, cleanup):
    dense = segmenter.segment(cat_photo, "cat, dog, ear", score_threshold=LOW, cleanup=cleanup)
    rle = segmenter.segment(cat_photo, "cat, dog, ear", score_threshold=LOW, cleanup=cleanup, masks="rle")
    assert isinstance(rle.masks, RLEMasks) and isinstance(dense.masks, np.ndarray) and len(dense) > 3
    assert rle.to_dict() | {"timings": {}} == dense.to_dict() | {"timings": {}}
    np.testing.assert_array_equal(np.asarray(rle.masks), dense.masks)
    np.testing.assert_array_equal(rle.areas, dense.areas)
    np.testing.assert_array_equal(rle.label_map(), dense.label_map())
    np.testing.assert_array_equal(rle[1:3].masks[0], dense.masks[1])
    assert [i.area for i in rle] == [i.area for i in dense]
    assert rle.to_coco() == dense.to_coco()


@pytest.mark.parametrize("mode, target", [("box", 0), ("click", 1)])
def test_the_canvas_draws_rle_results_as_dense_ones(segmenter, cat_photo, mode, target):
    """The UI keeps RLE masks; the drawing modes' canvas (which enlarges a small photo) draws them as it draws
    dense ones (it failed on RLE masks once)."""
    from sam3studio.ui.marks import Marks, canvas_image, canvas_scale

    small = np.ascontiguousarray(cat_photo[::2, ::2])
    assert canvas_scale(small.shape[1], small.shape[0]) > 1
    dense = segmenter.segment(small, "cat, ear", score_threshold=LOW)
    rle = segmenter.segment(small, "cat, ear", score_threshold=LOW, masks="rle")
    marks = Marks().box_click(10, 10, 1).box_click(60, 50, 1) if mode == "box" else Marks().point_click(20, 20, 1)
    np.testing.assert_array_equal(canvas_image(small, marks, mode, rle, target),
                                  canvas_image(small, marks, mode, dense, target))


def test_rle_masks_check_their_size():
    with pytest.raises(ValueError, match="RLE mask of size"):
        RLEMasks([mask_to_rle(np.ones((4, 5), bool))], 5, 4)
    with pytest.raises(ValueError, match="masks must have shape"):
        Segmentation(width=5, height=4, prompts=[], masks=RLEMasks([mask_to_rle(np.ones((4, 5), bool))], 4, 5),
                     boxes=np.zeros((0, 4)), scores=[], prompt_ids=[])


def _peak_mb(fn) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_the_service_path_never_holds_the_mask_stack(tiny_checkpoint, segmenter):
    """100 instances on a 1.2 MP image: the dense stack alone is 114 MB; the API's path holds one mask (and
    one chunk of the upsampling) at a time. NumPy's allocations are traced (torch's are not)."""
    fake_instances(segmenter, 100)
    width, height = 1200, 1000
    rgb = _gradient(width, height)
    dense: dict = {}
    dense_peak = _peak_mb(lambda: dense.setdefault("seg", segmenter.segment(rgb, "thing", score_threshold=0.01)))
    assert dense_peak > 100 * width * height / 2**20  # the stack: the measurement can see it

    settings = Settings(model=str(tiny_checkpoint), device="cpu", ui=False, max_upload_mb=20, max_pixels=40_000_000)
    body = {"prompt": "thing", "threshold": 0.01, "image_base64": base64.b64encode(_png(rgb)).decode()}
    with TestClient(create_app(settings, segmenter=segmenter)) as client:
        out = {}
        api_peak = _peak_mb(lambda: out.setdefault("r", client.post("/api/v1/segment", json=body)))
    r = out["r"]
    assert r.status_code == 200, r.text
    instances = r.json()["instances"]
    assert len(instances) == 100
    for inst, want in zip(instances, dense["seg"].masks, strict=True):
        np.testing.assert_array_equal(rle_to_mask(inst["mask"]), want)
    assert api_peak < 50, f"the API request's NumPy peak was {api_peak:.0f} MB (dense: {dense_peak:.0f} MB)"


def test_beyond_the_mask_budget_is_413_naming_it_before_any_upsampling(tiny_checkpoint, segmenter, monkeypatch):
    fake_instances(segmenter, 10)
    rgb = _gradient(300, 200)
    settings = Settings(model=str(tiny_checkpoint), device="cpu", ui=False, max_mask_pixels=9 * 300 * 200)
    monkeypatch.setattr(type(segmenter), "_upsampled", staticmethod(lambda *a: pytest.fail("upsampled")))
    with TestClient(create_app(settings, segmenter=segmenter)) as client:
        r = client.post("/api/v1/segment", files={"image": ("a.png", _png(rgb), "image/png")},
                        data={"prompt": "thing", "threshold": "0.01"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_large", r.text
        assert "max_mask_pixels" in r.json()["error"]["message"] and "10 instances" in r.json()["error"]["message"]
        assert client.get("/api/v1/info").json()["limits"]["max_mask_pixels"] == 9 * 300 * 200
    with pytest.raises(InputTooLargeError, match="budget"):
        SegmentService(settings, segmenter=segmenter).segment(rgb, "thing", SegmentOptions(score_threshold=0.01))


def test_decoding_has_a_bound_of_its_own(tiny_checkpoint, segmenter, cat_photo, monkeypatch):
    import sam3studio.service as service_module

    settings = Settings(model=str(tiny_checkpoint), device="cpu", ui=False, max_decodes=1, max_queue=1)
    service = SegmentService(settings, segmenter=segmenter)
    inside, release = threading.Event(), threading.Event()
    real_load = service_module.load_image

    def slow_load(*args, **kwargs):
        inside.set()
        release.wait(30)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(service_module, "load_image", slow_load)
    png = _png(cat_photo)
    first = threading.Thread(target=service.decode_image, args=(png,))
    first.start()
    assert inside.wait(30)
    second = threading.Thread(target=service.decode_image, args=(png,))
    second.start()
    deadline = threading.Event()
    while service.decode_gate.waiting != 1 and not deadline.wait(0.01):
        pass
    assert (service.decode_gate.active, service.decode_gate.waiting) == (1, 1)
    assert service.gate.active == 0  # the model's own slots are untouched by decoding
    with pytest.raises(Overloaded):  # one decoding, one waiting: the third is refused at once
        service.decode_image(png)
    release.set()
    first.join(30)
    second.join(30)
    assert (service.decode_gate.active, service.decode_gate.waiting) == (0, 0)


def test_responses_are_encoded_off_the_event_loop(client_app, monkeypatch, cat_photo):
    import sam3studio.api.images as images

    where: list[str] = []
    real = images.segmentation_response

    def spy(*args):
        try:
            asyncio.get_running_loop()
            where.append("event loop")
        except RuntimeError:
            where.append("worker thread")
        return real(*args)

    monkeypatch.setattr(images, "segmentation_response", spy)
    for fmt in ("rle", "png_base64", "polygon", "none"):
        r = client_app.post("/api/v1/segment", files={"image": ("a.png", _png(cat_photo), "image/png")},
                            data={"prompt": "cat", "threshold": str(LOW), "mask_format": fmt})
        assert r.status_code == 200 and r.json()["instances"], r.text
    assert where == ["worker thread"] * 4


@pytest.fixture
def client_app(tiny_checkpoint, segmenter):
    settings = Settings(model=str(tiny_checkpoint), device="cpu", ui=False)
    with TestClient(create_app(settings, segmenter=segmenter)) as c:
        yield c
