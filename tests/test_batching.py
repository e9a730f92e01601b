"""Dynamic batching: concurrent requests' images share one vision-encoder pass, with the results of one-by-one."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from sam3studio.service import SegmentService, VisionBatcher
from sam3studio.settings import Settings


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    from skimage import data

    return [data.chelsea(), data.astronaut()[::2, ::2].copy(), rng.integers(0, 255, (120, 200, 3), dtype=np.uint8),
            data.coffee()[::3, ::3].copy()]


def _assert_same(a, b):
    assert [p.text for p in a.prompts] == [p.text for p in b.prompts] and len(a) == len(b)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
    np.testing.assert_allclose([p.presence_score for p in a.prompts], [p.presence_score for p in b.prompts], atol=1e-4)
    assert all((x != y).mean() < 1e-3 for x, y in zip(a.masks, b.masks, strict=True))


def test_encode_images_is_one_pass_and_gives_the_one_by_one_results(tiny_checkpoint, images):
    from sam3studio import load_segmenter

    batched = load_segmenter(str(tiny_checkpoint), device="cpu", dtype="float32")
    single = load_segmenter(str(tiny_checkpoint), device="cpu", dtype="float32")
    assert batched.encode_images(images + [images[0]]) == len(images)  # a repeated image is encoded once
    assert batched.stats.vision_encoder_calls == 1 and batched.stats.batched_images == len(images)
    for image in images:
        _assert_same(batched.segment(image, "cat, person", score_threshold=0.05),
                     single.segment(image, "cat, person", score_threshold=0.05))
    assert batched.stats.vision_encoder_calls == 1  # every segment started from the batch's cache
    assert single.stats.vision_encoder_calls == len(images)
    assert batched.encode_images(images[:2]) == 0  # cached: nothing to do


def test_a_batch_is_bounded_by_the_image_cache(tiny_checkpoint, images):
    from sam3studio import load_segmenter

    seg = load_segmenter(str(tiny_checkpoint), device="cpu", dtype="float32", image_cache_size=2)
    assert seg.encode_images(images) == 2


def _run_threads(n, target):
    errors, results = [], [None] * n

    def run(i):
        try:
            results[i] = target(i)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, errors


def test_the_batcher_groups_concurrent_images(segmenter, images):
    batcher = VisionBatcher(segmenter, max_batch=4, max_wait_s=5.0)
    _, errors = _run_threads(4, lambda i: batcher.encode(images[i]))
    assert not errors
    assert list(batcher.batch_sizes) == [4]  # the leader waited for the other three
    assert segmenter.stats.vision_encoder_calls == 1


def test_a_full_batch_leaves_the_rest_for_the_next(segmenter, images):
    batcher = VisionBatcher(segmenter, max_batch=2, max_wait_s=0.2)
    five = images + [images[0][::-1].copy()]
    _, errors = _run_threads(5, lambda i: batcher.encode(five[i]))
    assert not errors
    assert sum(batcher.batch_sizes) == 5 and max(batcher.batch_sizes) <= 2
    assert segmenter.stats.batched_images == 5


def test_an_error_reaches_every_request_of_its_batch(images):
    class Broken:
        def encode_images(self, batch):
            raise RuntimeError("simulated")

    batcher = VisionBatcher(Broken(), max_batch=3, max_wait_s=5.0)
    _, errors = _run_threads(3, lambda i: batcher.encode(images[i]))
    assert len(errors) == 3 and all(isinstance(e, RuntimeError) for e in errors)


def test_a_batch_out_of_memory_falls_back_to_one_by_one(segmenter, images, tiny_checkpoint, monkeypatch):
    """The batch is too big together: each request encodes its own image and succeeds."""
    def too_big(batch):
        raise MemoryError("simulated: the batch does not fit")

    monkeypatch.setattr(segmenter, "encode_images", too_big)
    settings = Settings(model=str(tiny_checkpoint), max_concurrent=3, vision_batch=3, vision_batch_wait_ms=1000)
    service = SegmentService(settings, segmenter=segmenter)
    results, errors = _run_threads(3, lambda i: service.segment(images[i], "cat"))
    assert not errors and all(r is not None for r in results)
    assert list(service.batcher.batch_sizes) == [3] and segmenter.stats.vision_encoder_calls == 3


def test_the_service_batches_concurrent_requests(segmenter, images, tiny_checkpoint):
    settings = Settings(model=str(tiny_checkpoint), max_concurrent=4, vision_batch=4, vision_batch_wait_ms=1000)
    service = SegmentService(settings, segmenter=segmenter)
    results, errors = _run_threads(4, lambda i: service.segment(images[i], "cat"))
    assert not errors and all(r is not None for r in results)
    assert segmenter.stats.vision_encoder_calls == 1 and list(service.batcher.batch_sizes) == [4]
    solo = SegmentService(Settings(model=str(tiny_checkpoint)), segmenter=segmenter)
    assert solo.batcher is None  # vision_batch 1: off


def test_a_batch_larger_than_the_image_cache_grows_it_and_encodes_once(tiny_checkpoint, images):
    """8 requests, an image cache of 2: the service makes room for a batch, so no request encodes again."""
    from sam3studio import load_segmenter

    seg = load_segmenter(str(tiny_checkpoint), device="cpu", dtype="float32", image_cache_size=2)
    eight = images + [im[::-1].copy() for im in images]
    settings = Settings(model=str(tiny_checkpoint), max_concurrent=8, vision_batch=8, vision_batch_wait_ms=1000)
    service = SegmentService(settings, segmenter=seg)
    results, errors = _run_threads(8, lambda i: service.segment(eight[i], "cat"))
    assert not errors and all(r is not None for r in results)
    assert seg.stats.vision_encoder_calls == 1 and seg.stats.batched_images == 8
    calls = seg.stats.vision_encoder_calls
    service.segment(eight[0], "dog")  # cached: the batcher is skipped, and no encoder call runs
    assert seg.stats.vision_encoder_calls == calls


def test_a_lone_request_out_of_memory_is_not_retried(images):
    class TooBig:
        calls = 0

        def encode_images(self, batch):
            TooBig.calls += 1
            raise MemoryError("simulated")

    batcher = VisionBatcher(TooBig(), max_batch=4, max_wait_s=0.0)
    with pytest.raises(MemoryError):
        batcher.encode(images[0])
    assert TooBig.calls == 1
