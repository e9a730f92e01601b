"""Click and box refinement of one object: `Segmenter.refine` on SAM 3's tracker (`Sam3TrackerModel`).

The oracle is the documented transformers path (`Sam3TrackerProcessor` + `Sam3TrackerModel`, its
own backbone, `post_process_masks`), loaded from the same tiny checkpoint.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam3studio.errors import InputError
from sam3studio.interactive import TRACKER_KEY_MAPPING


@pytest.fixture(scope="module")
def documented(tiny_video_checkpoint):
    """The tracker as its documentation loads it (plus the key mapping transformers 5 needs: see interactive.py)."""
    from transformers import Sam3TrackerModel, Sam3TrackerProcessor

    model = Sam3TrackerModel.from_pretrained(str(tiny_video_checkpoint), key_mapping=TRACKER_KEY_MAPPING).eval()
    return model, Sam3TrackerProcessor.from_pretrained(str(tiny_video_checkpoint))


@pytest.fixture
def clicker(tiny_video_checkpoint):
    """A segmenter on the tiny sam3_video checkpoint: the one checkpoint that serves image, refinement and video."""
    from sam3studio import load_segmenter

    return load_segmenter(str(tiny_video_checkpoint), device="cpu", dtype="float32")


def _documented_masks(documented, image, **prompts):
    model, proc = documented
    multimask = prompts.pop("multimask_output", True)
    input_masks = prompts.pop("input_masks", None)
    inputs = proc(images=image, return_tensors="pt", **prompts)
    with torch.inference_mode():
        out = model(**inputs, input_masks=input_masks, multimask_output=multimask)
    best = int(out.iou_scores[0, 0].argmax())
    masks = proc.post_process_masks(out.pred_masks, inputs["original_sizes"])[0][0]
    return masks[best].numpy(), float(out.iou_scores[0, 0, best]), out.pred_masks[:, :, best]


def _spy_on_prompt_encoder(clicker, monkeypatch) -> dict:
    """What the tracker's prompt encoder receives on the next refine (its keyword arguments)."""
    seen: dict = {}
    encoder = clicker._ensure_tracker().model.prompt_encoder
    forward = encoder.forward

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return forward(*args, **kwargs)

    monkeypatch.setattr(encoder, "forward", spy)
    return seen


def test_one_click_gives_the_documented_mask(clicker, documented, cat_photo):
    inst = clicker.refine(cat_photo, points=[[200, 150]], point_labels=[1])
    mask, iou, _ = _documented_masks(documented, cat_photo, input_points=[[[[200, 150]]]], input_labels=[[[1]]])
    assert inst.mask.shape == cat_photo.shape[:2] and inst.mask.dtype == bool
    np.testing.assert_array_equal(inst.mask, mask)
    assert inst.score == pytest.approx(min(max(iou, 0.0), 1.0), abs=1e-5)
    assert clicker.stats.tracker_loads == 1 and clicker.stats.refine_passes == 1


def test_positive_and_negative_points_give_the_documented_mask(clicker, documented, cat_photo):
    pts, labels = [[200, 150], [40, 40], [420, 260]], [1, 0, 0]
    inst = clicker.refine(cat_photo, points=pts, point_labels=labels)
    mask, _, _ = _documented_masks(documented, cat_photo, input_points=[[pts]], input_labels=[[labels]],
                                   multimask_output=False)
    np.testing.assert_array_equal(inst.mask, mask)


def test_a_box_gives_the_documented_mask(clicker, documented, cat_photo):
    inst = clicker.refine(cat_photo, box=[120, 40, 330, 240])
    mask, _, _ = _documented_masks(documented, cat_photo, input_boxes=[[[120, 40, 330, 240]]], multimask_output=False)
    np.testing.assert_array_equal(inst.mask, mask)
    assert inst.area == int(inst.mask.sum()) > 0
    ys, xs = np.nonzero(inst.mask)
    assert inst.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_refining_a_refined_mask_feeds_its_logits_back_as_the_documentation_shows(clicker, documented, cat_photo):
    """Iterative refinement: the previous result's low-resolution logits are the mask prompt of the next click."""
    first = clicker.refine(cat_photo, points=[[200, 150]], point_labels=[1])
    second = clicker.refine(cat_photo, points=[[200, 150], [60, 250]], point_labels=[1, 0], mask=first.mask)
    _, _, prev_logits = _documented_masks(documented, cat_photo, input_points=[[[[200, 150]]]], input_labels=[[[1]]])
    expected, _, _ = _documented_masks(documented, cat_photo, input_points=[[[[200, 150], [60, 250]]]],
                                       input_labels=[[[1, 0]]], input_masks=prev_logits, multimask_output=False)
    np.testing.assert_array_equal(second.mask, expected)
    assert clicker.stats.vision_encoder_calls == 1  # one encoding for every click


def test_a_mask_from_elsewhere_reaches_the_model_in_place_on_a_non_square_image(clicker, monkeypatch):
    """An instance mask covering the left quarter of a 400x100 image becomes a prior positive on the left quarter."""
    image = np.zeros((100, 400, 3), np.uint8)
    mask = np.zeros((100, 400), bool)
    mask[:, :100] = True
    seen = _spy_on_prompt_encoder(clicker, monkeypatch)
    encoder = clicker._ensure_tracker().model.prompt_encoder
    clicker.refine(image, points=[[50, 50]], point_labels=[1], mask=mask)
    prior = seen["input_masks"][0, 0].numpy()
    h, w = encoder.mask_input_size
    assert prior.shape == (h, w)
    assert (prior[:, : w // 4 - 2] > 9).all() and (prior[:, w // 4 + 2 :] < -9).all()


def test_points_and_box_reach_the_model_in_place_on_a_non_square_image(clicker, monkeypatch):
    """Clicks and a box on a 400x100 image arrive scaled by (S/W, S/H) with S the model's input size, labels intact."""
    image = np.zeros((100, 400, 3), np.uint8)
    seen = _spy_on_prompt_encoder(clicker, monkeypatch)
    clicker.refine(image, points=[[100, 50], [400, 0]], point_labels=[1, 0], box=[40, 10, 120, 50])
    s = clicker._ensure_tracker().processor.target_size
    np.testing.assert_allclose(seen["input_points"][0, 0].numpy(), [[100 * s / 400, 50 * s / 100], [s, 0]], atol=1e-4)
    assert seen["input_labels"][0, 0].tolist() == [1, 0]
    np.testing.assert_allclose(seen["input_boxes"][0, 0].numpy(), [40 * s / 400, 10 * s / 100, 120 * s / 400, 50 * s / 100],
                               atol=1e-4)


def test_refine_reuses_the_image_encoding_of_segment(clicker, cat_photo):
    clicker.segment(cat_photo, "cat")
    clicker.refine(cat_photo, points=[[10, 10]], point_labels=[1])
    clicker.refine(cat_photo, box=[0, 0, 100, 100])
    assert clicker.stats.vision_encoder_calls == 1
    assert clicker.stats.tracker_loads == 1


def test_the_tracker_shares_the_detectors_backbone_and_its_weights_are_the_same(clicker, documented):
    """One ViT in memory: the shared tracker has none, and the documented tracker's backbone equals the detector's."""
    tracker = clicker._ensure_tracker()
    assert tracker.shared_backbone and not hasattr(tracker.model.vision_encoder, "backbone")
    ours = dict(clicker.model.vision_encoder.backbone.named_parameters())
    theirs = dict(documented[0].vision_encoder.backbone.named_parameters())
    assert ours.keys() == theirs.keys() and ours
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_the_tracker_loads_only_on_first_refine(clicker, cat_photo):
    clicker.segment(cat_photo, "cat")
    assert not clicker.tracker_loaded
    clicker.refine(cat_photo, points=[[10, 10]], point_labels=[1])
    assert clicker.tracker_loaded


def test_an_image_only_checkpoint_says_refinement_needs_the_full_one(segmenter, cat_photo, monkeypatch):
    from sam3studio import interactive
    from sam3studio.errors import TrackerUnavailable

    with pytest.raises(TrackerUnavailable, match="has no SAM 3 tracker.*sam3_video"):
        segmenter.refine(cat_photo, points=[[10, 10]], point_labels=[1])
    monkeypatch.setattr(interactive, "load_tracker", lambda *a, **k: pytest.fail("asked the checkpoint again"))
    with pytest.raises(TrackerUnavailable):  # remembered: the checkpoint is not read again
        segmenter.refine(cat_photo, points=[[10, 10]], point_labels=[1])


def test_refinement_logits_are_kept_per_image(clicker, monkeypatch):
    """The same mask on another image enters as a plain mask prompt, not as the first image's logits."""
    first, second = np.zeros((64, 80, 3), np.uint8), np.full((64, 80, 3), 200, np.uint8)
    inst = clicker.refine(first, points=[[40, 30]], point_labels=[1])
    seen = _spy_on_prompt_encoder(clicker, monkeypatch)
    clicker.refine(first, points=[[40, 30]], point_labels=[1], mask=inst.mask)
    exact = seen["input_masks"]
    clicker.refine(second, points=[[40, 30]], point_labels=[1], mask=inst.mask)
    plain = seen["input_masks"]
    assert not np.isin(exact.numpy(), (-10.0, 10.0)).all()  # the logits that made the mask
    assert np.abs(plain.numpy()).max() <= 10.0 + 1e-5  # a resized binary mask as +-10 logits


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"points": [[10, 10]]}, "without point_labels"),
    ({"point_labels": [1]}, "point_labels were given without points"),
    ({"points": [[10, 10], [20, 20]], "point_labels": [1]}, "2 points, 1 labels"),
    ({"points": [[10, 10]], "point_labels": [2]}, "1 \\(positive\\) or 0"),
    ({"points": [[10, 10]], "point_labels": [True]}, "1 \\(positive\\) or 0"),
    ({"points": [[500, 10]], "point_labels": [1]}, "point \\(500, 10\\) is outside the 451x300 image"),
    ({"points": [[10, -1]], "point_labels": [1]}, "outside"),
    ({"points": [[10, 10, 3]], "point_labels": [1]}, "\\[x, y\\] pairs"),
    ({"points": [[10, float("nan")]], "point_labels": [1]}, "finite"),
    ({"points": [["a", 1]], "point_labels": [1]}, "must be numbers"),
    ({"points": [[1, 1]] * 65, "point_labels": [1] * 65}, "at most 64 points"),
    ({"box": [50, 50, 40, 80]}, "x1 < x2"),
    ({"box": [0, 0, 452, 40]}, "outside the 451x300 image"),
    ({"box": [0, 0, 40]}, "\\[x1, y1, x2, y2\\]"),
    ({}, "at least one point"),
    ({"mask": np.ones((300, 451), bool)}, "at least one point"),
    ({"box": [0, 0, 40, 40], "mask": np.ones((10, 10), bool)}, "mask is 10x10, the image is 451x300"),
    ({"box": [0, 0, 40, 40], "mask": np.full((300, 451), 3)}, "boolean"),
    ({"box": [0, 0, 40, 40], "mask_threshold": 1.0}, "mask_threshold"),
])
def test_bad_refinement_inputs_are_precise_input_errors(clicker, cat_photo, kwargs, match):
    with pytest.raises(InputError, match=match):
        clicker.refine(cat_photo, **kwargs)
    assert not clicker.tracker_loaded  # validated before anything loads
