"""Result types: RLE helpers and `Segmentation` validation, access and conversion."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from sam3studio.results import (
    SCHEMA_VERSION,
    Instance,
    PromptResult,
    Segmentation,
    mask_to_rle,
    masks_to_rles,
    rle_to_mask,
)

H, W = 20, 30


def make_seg() -> Segmentation:
    """Three instances: two 'cat' (0.9, 0.6), one 'dog' (0.8); cat-1 overlaps dog."""
    masks = np.zeros((3, H, W), bool)
    masks[0, 2:8, 2:10] = True  # 48 px
    masks[1, 10:15, 10:20] = True  # 50 px
    masks[2, 12:18, 15:25] = True  # 60 px, overlaps masks[1] on rows 12-14, cols 15-19
    return Segmentation(
        width=W,
        height=H,
        prompts=[PromptResult("cat", 0.95, 2), PromptResult("dog", 0.7, 1, query="dog")],
        masks=masks,
        boxes=[[2, 2, 10, 8], [10, 10, 20, 15], [15, 12, 25, 18]],
        scores=[0.9, 0.6, 0.8],
        prompt_ids=[0, 0, 1],
        timings={"infer": 0.1234567},
    )


# ---------------------------------------------------------------------- RLE
def random_masks(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    masks = np.random.default_rng(seed).random((n, h, w)) > 0.6
    masks[0] = False  # an empty mask
    masks[1] = True  # a full mask
    return masks


@pytest.mark.parametrize(("h", "w"), [(37, 53), (1, 1), (64, 48), (5, 200)])
def test_rle_round_trip(h, w):
    masks = random_masks(4, h, w)
    for m in masks:
        rle = mask_to_rle(m)
        assert rle["size"] == [h, w] and isinstance(rle["counts"], str)
        json.dumps(rle)  # JSON-serialisable
        np.testing.assert_array_equal(rle_to_mask(rle), m)
        # Agrees with pycocotools itself.
        np.testing.assert_array_equal(mask_utils.decode({"size": [h, w], "counts": rle["counts"].encode()}), m)
        assert rle_to_mask(rle).dtype == bool


def test_masks_to_rles_equals_per_mask():
    masks = random_masks(5, 37, 53, seed=3)
    assert masks_to_rles(masks) == [mask_to_rle(m) for m in masks]
    assert masks_to_rles(np.zeros((0, 4, 4), bool)) == []


def test_uncompressed_rle_decodes():
    # Column-major runs, starting with background: 3 zeros, 2 ones, 4 zeros, 3 ones on a 4x3 mask.
    mask = rle_to_mask({"size": [4, 3], "counts": [3, 2, 4, 3]})
    expected = np.zeros(12, bool)
    expected[3:5] = True
    expected[9:12] = True
    np.testing.assert_array_equal(mask, expected.reshape(3, 4).T)


def test_rle_to_mask_accepts_bytes_counts():
    m = random_masks(2, 6, 7)[1]
    rle = mask_to_rle(m)
    np.testing.assert_array_equal(rle_to_mask({"size": rle["size"], "counts": rle["counts"].encode()}), m)


@pytest.mark.parametrize("bad", [None, [], {"size": [2, 2]}, {"counts": "x"}])
def test_rle_to_mask_rejects_non_rle(bad):
    with pytest.raises(ValueError, match="RLE must be a dict with 'size' and 'counts'"):
        rle_to_mask(bad)


def test_rle_helpers_check_dimensions():
    with pytest.raises(ValueError, match=r"mask must be 2-D \(H, W\), got shape \(1, 2, 2\)"):
        mask_to_rle(np.zeros((1, 2, 2), bool))
    with pytest.raises(ValueError, match=r"masks must be 3-D \(n, H, W\), got shape \(2, 2\)"):
        masks_to_rles(np.zeros((2, 2), bool))


# ---------------------------------------------------------------------- validation
def test_construction_normalises_dtypes():
    seg = make_seg()
    assert seg.masks.dtype == bool and seg.boxes.dtype == np.float32
    assert seg.scores.dtype == np.float32 and seg.prompt_ids.dtype == np.int64
    assert seg.boxes.shape == (3, 4)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        (
            "masks",
            np.zeros((3, H, W + 1), bool),
            r"masks must have shape \(3, 20, 30\) for 3 instances, got \(3, 20, 31\)",
        ),
        ("masks", np.zeros((2, H, W), bool), r"masks must have shape \(3, 20, 30\) for 3 instances, got \(2, 20, 30\)"),
        ("boxes", np.zeros((2, 4)), r"boxes must have shape \(3, 4\) for 3 instances, got \(2, 4\)"),
        ("prompt_ids", [0, 0], r"prompt_ids must have shape \(3,\) for 3 instances, got \(2,\)"),
        ("prompt_ids", [0, 0, 2], r"prompt_ids must index into 2 prompts, got \[0, 0, 2\]"),
        ("prompt_ids", [0, -1, 1], r"prompt_ids must index into 2 prompts"),
        ("scores", [0.9, 1.2, 0.5], r"scores must lie in \[0, 1\]"),
        ("scores", [0.9, -0.1, 0.5], r"scores must lie in \[0, 1\]"),
        ("scores", [0.9, np.inf, 0.5], r"scores must lie in \[0, 1\]"),  # NaN alone means "no detection score"
        ("width", 0, r"image size must be positive, got width=0 height=20"),
        ("height", -3, r"image size must be positive, got width=30 height=-3"),
    ],
)
def test_validation_errors(field, value, match):
    seg = make_seg()
    kwargs = {k: getattr(seg, k) for k in ("width", "height", "prompts", "masks", "boxes", "scores", "prompt_ids")}
    kwargs[field] = value
    with pytest.raises(ValueError, match=match):
        Segmentation(**kwargs)


@pytest.mark.parametrize(("shape", "got"), [((3, 5), r"\(3, 5\)"), ((6, 2), r"\(6, 2\)"), ((12,), r"\(12,\)")])
def test_boxes_shape_checked_as_given(shape, got):
    seg = make_seg()
    with pytest.raises(ValueError, match=rf"boxes must have shape \(3, 4\) for 3 instances, got {got}"):
        Segmentation(
            width=W,
            height=H,
            prompts=seg.prompts,
            masks=seg.masks,
            boxes=np.zeros(shape),
            scores=seg.scores,
            prompt_ids=seg.prompt_ids,
        )


def test_empty():
    seg = Segmentation.empty(W, H, [PromptResult("cat", 0.1, 0)])
    assert len(seg) == 0 and seg.masks.shape == (0, H, W) and seg.boxes.shape == (0, 4)
    assert seg.label_map().shape == (H, W) and not seg.label_map().any()
    assert len(seg.to_detections()) == 0


def test_empty_from_unshaped_arrays():
    seg = Segmentation(width=W, height=H, prompts=[], masks=[], boxes=[], scores=[], prompt_ids=[])
    assert seg.masks.shape == (0, H, W) and seg.boxes.shape == (0, 4)


def test_empty_areas_and_to_dict():
    seg = Segmentation.empty(W, H, [PromptResult("cat", 0.1, 0)])
    assert seg.areas.shape == (0,)
    back = Segmentation.from_dict(json.loads(seg.to_json()))
    assert len(back) == 0 and back.masks.shape == (0, H, W)
    assert seg.to_coco() == []


# ---------------------------------------------------------------------- access
def test_instances_and_areas():
    seg = make_seg()
    np.testing.assert_array_equal(seg.areas, [48, 50, 60])
    np.testing.assert_allclose(seg.area_ratios, np.array([48, 50, 60]) / (H * W))
    inst = seg[2]
    assert isinstance(inst, Instance)
    assert (inst.id, inst.prompt, inst.prompt_index, inst.area) == (2, "dog", 1, 60)
    assert inst.score == pytest.approx(0.8)
    assert inst.box == (15.0, 12.0, 25.0, 18.0)
    np.testing.assert_array_equal(inst.mask, seg.masks[2])
    assert seg[-1].id == 2
    assert [i.id for i in seg] == [0, 1, 2]


@pytest.mark.parametrize("index", [3, -4])
def test_getitem_int_out_of_range(index):
    with pytest.raises(IndexError, match="out of range for 3 instances"):
        make_seg()[index]


@pytest.mark.parametrize(
    ("index", "kept"),
    [
        (slice(1, None), [1, 2]),
        (slice(None, None, -1), [2, 1, 0]),
        (np.array([True, False, True]), [0, 2]),
        ([2, 0], [2, 0]),
        (np.array([1]), [1]),
    ],
)
def test_getitem_subset(index, kept):
    seg = make_seg()
    sub = seg[index]
    assert isinstance(sub, Segmentation)
    assert (sub.width, sub.height, sub.prompts) == (seg.width, seg.height, seg.prompts)
    np.testing.assert_array_equal(sub.masks, seg.masks[kept])
    np.testing.assert_array_equal(sub.boxes, seg.boxes[kept])
    np.testing.assert_array_equal(sub.scores, seg.scores[kept])
    np.testing.assert_array_equal(sub.prompt_ids, seg.prompt_ids[kept])


def test_getitem_score_filter():
    seg = make_seg()
    sub = seg[seg.scores >= 0.8]
    np.testing.assert_allclose(sub.scores, [0.9, 0.8])
    assert [i.prompt for i in sub] == ["cat", "dog"]


def test_label_map_overlap_higher_score_wins():
    seg = make_seg()
    lm = seg.label_map()
    assert lm.dtype == np.uint16 and lm.shape == (H, W)
    assert lm[5, 5] == 1 and lm[0, 0] == 0
    assert lm[11, 12] == 2  # only instance 1
    assert lm[13, 17] == 3  # overlap: dog (0.8) beats cat (0.6)
    assert lm[16, 22] == 3
    # Swap scores: now instance 1 wins the overlap.
    swapped = Segmentation(
        width=W,
        height=H,
        prompts=seg.prompts,
        masks=seg.masks,
        boxes=seg.boxes,
        scores=[0.9, 0.85, 0.8],
        prompt_ids=seg.prompt_ids,
    )
    assert swapped.label_map()[13, 17] == 2
    np.testing.assert_array_equal(np.unique(lm), [0, 1, 2, 3])


# ---------------------------------------------------------------------- conversion
def test_to_dict_schema_and_round_trip():
    seg = make_seg()
    data = json.loads(seg.to_json(indent=2))
    assert data["schema_version"] == SCHEMA_VERSION
    assert (data["width"], data["height"]) == (W, H)
    assert data["prompts"][0] == {"text": "cat", "query": "cat", "presence_score": 0.95, "count": 2, "unknown_words": []}
    assert data["timings"] == {"infer": 0.123457}
    first = data["instances"][0]
    assert first["id"] == 0 and first["prompt"] == "cat" and first["area"] == 48
    assert first["box_xyxy"] == [2.0, 2.0, 10.0, 8.0]
    back = Segmentation.from_dict(data)
    np.testing.assert_array_equal(back.masks, seg.masks)
    np.testing.assert_array_equal(back.boxes, seg.boxes)
    np.testing.assert_allclose(back.scores, seg.scores, atol=1e-6)
    np.testing.assert_array_equal(back.prompt_ids, seg.prompt_ids)
    assert back.prompts == seg.prompts


def test_to_dict_without_masks():
    data = make_seg().to_dict(include_masks=False)
    assert all("mask" not in inst for inst in data["instances"])


def test_translated_prompt_keeps_query():
    p = PromptResult(text="红色 汽车", presence_score=0.5, count=0, query="red car")
    assert p.to_dict()["query"] == "red car"
    assert PromptResult("car", 0.5, 0).query == "car"


def test_to_coco():
    seg = make_seg()
    coco = seg.to_coco(image_id=7)
    assert len(coco) == 3
    assert [c["category_id"] for c in coco] == [1, 1, 2]
    assert coco[2]["bbox"] == [15.0, 12.0, 10.0, 6.0]  # XYWH
    assert coco[0]["image_id"] == 7 and coco[0]["area"] == 48
    assert coco[0]["score"] == pytest.approx(0.9)
    np.testing.assert_array_equal(rle_to_mask(coco[1]["segmentation"]), seg.masks[1])
    assert [c["category_id"] for c in seg.to_coco(category_ids=[18, 3])] == [18, 18, 3]
    with pytest.raises(ValueError, match=r"category_ids must have one id per prompt \(2\), got 1"):
        seg.to_coco(category_ids=[1])


def test_to_detections():
    seg = make_seg()
    det = seg.to_detections()
    assert len(det) == 3
    np.testing.assert_array_equal(det.xyxy, seg.boxes)
    np.testing.assert_array_equal(det.mask, seg.masks)
    np.testing.assert_allclose(det.confidence, [0.9, 0.6, 0.8])
    np.testing.assert_array_equal(det.class_id, [0, 0, 1])
    assert list(det.data["class_name"]) == ["cat", "cat", "dog"]
