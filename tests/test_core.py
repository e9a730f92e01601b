"""The engine: end to end on the tiny checkpoint, batching, caches, and an oracle for coordinates."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sam3studio import Segmentation, load_segmenter
from sam3studio.cleanup import CleanupOptions
from sam3studio.core import Segmenter
from sam3studio.errors import InputError

PROMPTS = ["cat", "red car", "person", "wooden table", "leftmost dog"]
LOW = 0.05  # the tiny random model scores around 0.1-0.3


def test_tiny_checkpoint_segments_a_real_photo_end_to_end(segmenter, cat_photo):
    result = segmenter.segment(cat_photo, "cat, red car", score_threshold=LOW)

    assert isinstance(result, Segmentation)
    assert (result.height, result.width) == cat_photo.shape[:2]
    assert [p.text for p in result.prompts] == ["cat", "red car"]
    assert len(result) > 0
    assert result.masks.shape == (len(result), 300, 451) and result.masks.dtype == bool
    assert np.all(result.boxes[:, [0, 2]] <= 451) and np.all(result.boxes[:, [1, 3]] <= 300)
    assert np.all(result.boxes[:, 2] >= result.boxes[:, 0]) and np.all(result.boxes[:, 3] >= result.boxes[:, 1])
    assert np.all(result.scores > LOW)
    assert sum(p.count for p in result.prompts) == len(result)
    assert all(0.0 <= p.presence_score <= 1.0 for p in result.prompts)
    # Instances are grouped by prompt and sorted by score within a prompt.
    assert np.all(np.diff(result.prompt_ids) >= 0)
    for pid in range(len(result.prompts)):
        s = result.scores[result.prompt_ids == pid]
        assert np.all(np.diff(s) <= 0)
    assert {"image_encoding", "prompts", "postprocess", "total"} <= set(result.timings)


def test_image_inputs_path_pil_and_array_agree(segmenter, cat_photo, tmp_path):
    from PIL import Image

    path = tmp_path / "cat.png"
    Image.fromarray(cat_photo).save(path)
    by_array = segmenter.segment(cat_photo, "cat", score_threshold=LOW)
    by_path = segmenter.segment(str(path), "cat", score_threshold=LOW)
    by_pil = segmenter.segment(Image.open(path), "cat", score_threshold=LOW)
    for other in (by_path, by_pil):
        np.testing.assert_array_equal(other.masks, by_array.masks)
        np.testing.assert_allclose(other.scores, by_array.scores)
    assert segmenter.stats.vision_encoder_calls == 1  # same pixels -> same cache entry


def test_batched_prompts_equal_each_prompt_alone(tiny_checkpoint, astronaut_photo):
    batched = load_segmenter(str(tiny_checkpoint), device="cpu", dtype="float32", prompt_batch_size=8)
    together = batched.segment(astronaut_photo, PROMPTS, score_threshold=LOW)
    assert batched.stats.head_passes == 1

    alone = []
    for prompt in PROMPTS:
        fresh = load_segmenter(str(tiny_checkpoint), device="cpu", dtype="float32")
        alone.append(fresh.segment(astronaut_photo, prompt, score_threshold=LOW))

    assert [p.count for p in together.prompts] == [len(r) for r in alone]
    np.testing.assert_allclose(together.scores, np.concatenate([r.scores for r in alone]), atol=1e-5)
    np.testing.assert_allclose(together.boxes, np.concatenate([r.boxes for r in alone]), atol=1e-3)
    np.testing.assert_allclose(
        [p.presence_score for p in together.prompts], [r.prompts[0].presence_score for r in alone], atol=1e-5
    )
    mism = np.mean(together.masks != np.concatenate([r.masks for r in alone]))
    assert mism < 1e-4  # only float-rounding flips exactly at the threshold are tolerated


def test_prompt_batch_size_splits_passes_without_changing_results(tiny_checkpoint, cat_photo):
    one = load_segmenter(str(tiny_checkpoint), device="cpu", dtype="float32", prompt_batch_size=2)
    r1 = one.segment(cat_photo, PROMPTS, score_threshold=LOW)
    assert one.stats.head_passes == 3  # 5 prompts in chunks of 2
    many = load_segmenter(str(tiny_checkpoint), device="cpu", dtype="float32", prompt_batch_size=16)
    r2 = many.segment(cat_photo, PROMPTS, score_threshold=LOW)
    np.testing.assert_allclose(r1.scores, r2.scores, atol=1e-5)


def _count_calls(obj, name):
    calls = {"n": 0}
    original = getattr(obj, name)

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    setattr(obj, name, wrapper)
    return calls


def test_cache_hits_do_not_run_the_vision_encoder_again(segmenter, cat_photo, astronaut_photo):
    vision = _count_calls(segmenter.model, "get_vision_features")
    text = _count_calls(segmenter.model, "get_text_features")

    segmenter.segment(cat_photo, "cat", score_threshold=LOW)
    segmenter.segment(cat_photo, "dog", score_threshold=LOW)  # new prompt, same image
    segmenter.segment(cat_photo.copy(), "cat", score_threshold=0.2)  # same pixels, new threshold
    segmenter.segment(cat_photo, "cat, dog", mask_threshold=0.7, score_threshold=LOW)
    assert vision["n"] == 1
    assert text["n"] == 2  # "cat" once, "dog" once
    assert segmenter.stats.head_passes == 2

    segmenter.segment(astronaut_photo, "cat", score_threshold=LOW)  # new image
    assert vision["n"] == 2
    assert text["n"] == 2  # "cat" text features reused across images


def test_rethresholding_from_cache_equals_a_fresh_run(tiny_checkpoint, segmenter, cat_photo):
    segmenter.segment(cat_photo, PROMPTS, score_threshold=LOW)
    cached = segmenter.segment(cat_photo, PROMPTS, score_threshold=0.2, mask_threshold=0.6)
    assert segmenter.stats.prediction_cache_hits == len(PROMPTS)

    fresh = load_segmenter(str(tiny_checkpoint), device="cpu", dtype="float32")
    direct = fresh.segment(cat_photo, PROMPTS, score_threshold=0.2, mask_threshold=0.6)
    np.testing.assert_array_equal(cached.masks, direct.masks)
    np.testing.assert_array_equal(cached.scores, direct.scores)
    assert cached.timings["image_encoding"] == 0.0


def test_image_cache_is_bounded(tiny_checkpoint, cat_photo):
    seg = load_segmenter(str(tiny_checkpoint), device="cpu", dtype="float32", image_cache_size=2)
    images = [cat_photo, cat_photo[::-1].copy(), cat_photo[:, ::-1].copy()]
    for img in images:
        seg.segment(img, "cat", score_threshold=0.2, mask_threshold=0.5)
    seg.segment(images[0], "new prompt", score_threshold=0.2)  # evicted -> encoded again
    assert seg.stats.vision_encoder_calls == 4


def test_matches_the_upstream_transformers_pipeline(segmenter, cat_photo):
    """Our cached, batched path gives what the documented processor + model + post-process gives."""
    proc, model = segmenter.processor, segmenter.model
    inputs = proc(images=cat_photo, text="cat", return_tensors="pt")
    with torch.inference_mode():
        out = model(**inputs)
    ref = proc.post_process_instance_segmentation(out, threshold=LOW, mask_threshold=0.5,
                                                  target_sizes=[cat_photo.shape[:2]])[0]
    ours = segmenter.segment(cat_photo, "cat", score_threshold=LOW, max_instances=None)
    order = torch.argsort(ref["scores"], descending=True)
    ref_masks = ref["masks"][order].bool().numpy()
    keep = ref_masks.reshape(len(ref_masks), -1).any(1)  # we drop instances with empty masks
    np.testing.assert_allclose(ours.scores, ref["scores"][order].numpy()[keep], atol=1e-5)
    np.testing.assert_array_equal(ours.masks, ref_masks[keep])
    ref_boxes = ref["boxes"][order].numpy()[keep]
    ref_boxes = np.clip(ref_boxes, 0, [451, 300, 451, 300])
    np.testing.assert_allclose(ours.boxes, ref_boxes, atol=1e-3)


@pytest.mark.parametrize("bad, match", [
    ("", "empty"),
    ("   ", "empty"),
    ([], "empty"),
    (["dog", " "], "prompt 2 is empty"),
    (42, "string or a list"),
    ("x" * 201, "limit is 200"),
    ([f"thing {i}" for i in range(40)], "limit is 32"),
])
def test_bad_prompts_raise_precise_value_errors(segmenter, cat_photo, bad, match):
    with pytest.raises(ValueError, match=match):
        segmenter.segment(cat_photo, bad)
    assert segmenter.stats.vision_encoder_calls == 0  # validated before any model work


def test_prompt_over_the_token_limit_is_rejected(segmenter, cat_photo):
    long_prompt = " ".join(["zq"] * 40)  # 40+ tokens, under the character limit
    with pytest.raises(InputError, match="tokens long"):
        segmenter.segment(cat_photo, long_prompt)


@pytest.mark.parametrize("kwargs, match", [
    ({"score_threshold": 1.5}, "score_threshold"),
    ({"score_threshold": 0.0}, "score_threshold"),
    ({"mask_threshold": 1.0}, "mask_threshold"),
    ({"max_instances": 0}, "max_instances"),
])
def test_bad_thresholds_raise(segmenter, cat_photo, kwargs, match):
    with pytest.raises(InputError, match=match):
        segmenter.segment(cat_photo, "cat", **kwargs)


def test_bad_image_inputs_raise_input_errors(segmenter, tmp_path):
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    for bad, match in [(corrupt, "broken.jpg"), (tmp_path / "missing.png", "no such file"),
                       (np.zeros((4, 4, 7), np.uint8), "shape"), (3.14, "unsupported image input")]:
        with pytest.raises(InputError, match=match):
            segmenter.segment(bad, "cat")


def test_max_instances_keeps_the_highest_scores(segmenter, cat_photo):
    full = segmenter.segment(cat_photo, PROMPTS, score_threshold=LOW, max_instances=None)
    capped = segmenter.segment(cat_photo, PROMPTS, score_threshold=LOW, max_instances=4)
    assert len(full) > 4 and len(capped) == 4
    np.testing.assert_allclose(np.sort(capped.scores), np.sort(full.scores)[-4:])
    assert sum(p.count for p in capped.prompts) == 4


def test_cleanup_option_is_applied(segmenter, cat_photo):
    plain = segmenter.segment(cat_photo, "cat", score_threshold=LOW)
    noop = segmenter.segment(cat_photo, "cat", score_threshold=LOW, cleanup=CleanupOptions())
    np.testing.assert_array_equal(plain.masks, noop.masks)
    smoothed = segmenter.segment(cat_photo, "cat", score_threshold=LOW, cleanup=CleanupOptions(smooth=3))
    assert smoothed.masks.shape == plain.masks.shape


def test_bfloat16_masks_agree_with_float32(tiny_checkpoint, cat_photo):
    f32 = load_segmenter(str(tiny_checkpoint), device="cpu", dtype="float32")
    bf16 = load_segmenter(str(tiny_checkpoint), device="cpu", dtype="bfloat16")
    assert bf16.info()["dtype"] == "bfloat16"
    a = f32.segment(cat_photo, "cat", score_threshold=LOW, max_instances=None)
    b = bf16.segment(cat_photo, "cat", score_threshold=LOW, max_instances=None)
    assert len(a) == len(b) > 0
    inter = (a.masks & b.masks).sum(axis=(1, 2))
    union = (a.masks | b.masks).sum(axis=(1, 2))
    assert np.mean(inter / np.maximum(union, 1)) > 0.9


# ---------------------------------------------------------------------------- oracle
class _OracleModel:
    """Stands in for Sam3Model: returns known boxes and masks in model space.

    Query 0: a rectangle covering x in [0.25, 0.75), y in [0.5, 1.0) of the (square) model
    space, logit +8 inside and -8 outside, score sigmoid(3) * sigmoid(2).
    Query 1: a low score, which must be filtered out.
    Query 2: the top-left quarter, score sigmoid(1) * sigmoid(2).
    """

    MASK = 96

    def __init__(self):
        self.parameters = lambda: iter([torch.zeros(1)])

    def get_vision_features(self, pixel_values):
        b = pixel_values.shape[0]
        feats = tuple(torch.zeros(b, 4, s, s) for s in (8, 4, 2))
        return SimpleNamespace(fpn_hidden_states=feats, fpn_position_encoding=feats)

    def get_text_features(self, input_ids, attention_mask):
        return SimpleNamespace(pooler_output=torch.zeros(input_ids.shape[0], input_ids.shape[1], 4))

    def __call__(self, vision_embeds, text_embeds, attention_mask):
        b = text_embeds.pooler_output.shape[0]
        m = self.MASK
        masks = torch.full((b, 3, m, m), -8.0)
        masks[:, 0, m // 2 :, m // 4 : 3 * m // 4] = 8.0
        masks[:, 2, : m // 2, : m // 2] = 8.0
        boxes = torch.tensor([[0.25, 0.5, 0.75, 1.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5]])
        return SimpleNamespace(
            pred_logits=torch.tensor([[3.0, -6.0, 1.0]]).repeat(b, 1),
            presence_logits=torch.full((b, 1), 2.0),
            pred_boxes=boxes.repeat(b, 1, 1),
            pred_masks=masks,
        )


class _VisionOut(SimpleNamespace):
    """The engine rebuilds the vision output with its own type to broadcast along the batch."""


@pytest.mark.parametrize("height, width", [(300, 451), (480, 640), (1080, 1920), (97, 53), (64, 64)])
def test_oracle_outputs_map_to_the_right_pixels(tiny_checkpoint, height, width):
    from transformers import Sam3Processor

    model = _OracleModel()
    real_get = model.get_vision_features
    model.get_vision_features = lambda pixel_values: _VisionOut(**vars(real_get(pixel_values)))
    seg = Segmenter(model, Sam3Processor.from_pretrained(tiny_checkpoint), device="cpu", dtype=torch.float32)
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)

    result = seg.segment(image, "thing", score_threshold=0.3)

    assert len(result) == 2  # query 1 scores below the threshold
    expected_scores = [1 / (1 + np.exp(-3)) / (1 + np.exp(-2)), 1 / (1 + np.exp(-1)) / (1 + np.exp(-2))]
    np.testing.assert_allclose(result.scores, expected_scores, rtol=1e-5)
    np.testing.assert_allclose(result.boxes[0], [0.25 * width, 0.5 * height, 0.75 * width, height], rtol=1e-5)
    np.testing.assert_allclose(result.boxes[1], [0, 0, 0.5 * width, 0.5 * height], rtol=1e-5)
    np.testing.assert_allclose(result.prompts[0].presence_score, 1 / (1 + np.exp(-2)), rtol=1e-6)

    for mask, (x1, y1, x2, y2) in zip(result.masks, [(0.25, 0.5, 0.75, 1.0), (0.0, 0.0, 0.5, 0.5)], strict=True):
        expected = np.zeros((height, width), bool)
        expected[round(y1 * height) : round(y2 * height), round(x1 * width) : round(x2 * width)] = True
        iou = (mask & expected).sum() / (mask | expected).sum()
        assert iou > 0.97, f"IoU {iou:.3f} for box {(x1, y1, x2, y2)} at {width}x{height}"
        # Interior pixels (a margin of one low-res cell away from the edges) are exact.
        my, mx = max(1, height // _OracleModel.MASK + 1), max(1, width // _OracleModel.MASK + 1)
        core = np.zeros_like(expected)
        core[round(y1 * height) + my : round(y2 * height) - my, round(x1 * width) + mx : round(x2 * width) - mx] = True
        assert mask[core].all()
        # ...and pixels more than one low-res cell outside the rectangle are background.
        outer = np.zeros_like(expected)
        outer[max(0, round(y1 * height) - my) : round(y2 * height) + my,
              max(0, round(x1 * width) - mx) : round(x2 * width) + mx] = True
        assert not mask[~outer].any()


def test_translator_maps_prompts_to_queries_and_reports_unknown_words(tiny_checkpoint, cat_photo):
    from sam3studio.prompts import Translation

    table = {"猫": Translation("cat"), "小狗": Translation("dog"), "某物": Translation("thing", unknown=("某",))}
    seg = load_segmenter(str(tiny_checkpoint), device="cpu", dtype="float32",
                         translator=lambda text: table.get(text, Translation(text)))
    result = seg.segment(cat_photo, "猫, 小狗, 某物, cat", score_threshold=LOW)
    assert [(p.text, p.query) for p in result.prompts] == [("猫", "cat"), ("小狗", "dog"), ("某物", "thing"),
                                                           ("cat", "cat")]
    assert result.prompts[2].unknown_words == ("某",)
    assert result.prompts[0].count == result.prompts[3].count  # same query, same answer
    assert seg.stats.text_encoder_calls == 1 and seg.stats.head_passes == 1  # "cat" ran once

    english = load_segmenter(str(tiny_checkpoint), device="cpu", dtype="float32").segment(
        cat_photo, "cat, dog", score_threshold=LOW)
    np.testing.assert_allclose(result[np.asarray(result.prompt_ids) < 2].scores, english.scores, atol=1e-6)


def test_refine_keyword_is_a_deprecated_name_of_cleanup(segmenter, cat_photo):
    opts = CleanupOptions(smooth=3)
    new = segmenter.segment(cat_photo, "cat", score_threshold=LOW, cleanup=opts)
    with pytest.warns(DeprecationWarning, match="cleanup="):
        old = segmenter.segment(cat_photo, "cat", score_threshold=LOW, refine=opts)
    np.testing.assert_array_equal(old.masks, new.masks)
    with pytest.warns(DeprecationWarning), pytest.raises(InputError, match="cleanup= only"):
        segmenter.segment(cat_photo, "cat", score_threshold=LOW, cleanup=opts, refine=opts)
