"""The image tab's drawing state (boxes by two corners, clicks, undo, clear) and how a refined object enters the result."""

from __future__ import annotations

import numpy as np

from sam3studio.results import Instance, PromptResult, Segmentation
from sam3studio.ui.marks import NEGATIVE, NEW_OBJECT, POSITIVE, Marks, draw, target_choices, with_instance


def test_two_clicks_make_a_box_in_either_corner_order():
    m = Marks().box_click(120, 80, POSITIVE)
    assert m.corner == (120, 80) and m.boxes == []
    m = m.box_click(20, 200, POSITIVE)
    assert m.boxes == [[20, 80, 120, 200]] and m.box_labels == [POSITIVE] and m.corner is None
    m = m.box_click(5, 5, NEGATIVE).box_click(50, 40, NEGATIVE)
    assert m.boxes[-1] == [5, 5, 50, 40] and m.box_labels == [POSITIVE, NEGATIVE]


def test_a_second_click_on_the_same_spot_restarts_the_box():
    m = Marks().box_click(10, 10, POSITIVE).box_click(10.4, 30, POSITIVE)
    assert m.boxes == [] and m.corner == (10.4, 30)


def test_undo_removes_the_pending_corner_then_the_last_box_and_clear_empties_one_mode():
    m = Marks().box_click(0, 0, 1).box_click(10, 10, 1).box_click(20, 20, 0)
    m = m.undo("box")
    assert m.corner is None and len(m.boxes) == 1
    m = m.undo("box")
    assert m.boxes == [] and m.box_labels == []
    m = Marks().point_click(1, 2, 1).point_click(3, 4, 0).box_click(0, 0, 1).box_click(9, 9, 1)
    assert m.undo("click").points == [[1, 2]] and m.undo("click").point_labels == [1]
    cleared = m.clear("click")
    assert cleared.points == [] and cleared.boxes == [[0, 0, 9, 9]]
    assert m.clear("box").boxes == [] and m.clear("box").points == m.points


def test_draw_marks_boxes_clicks_and_the_object_being_refined():
    rgb = np.zeros((60, 80, 3), np.uint8)
    boxes = Marks().box_click(10, 10, POSITIVE).box_click(40, 40, POSITIVE).box_click(50, 5, NEGATIVE).box_click(70, 30, NEGATIVE)
    img = draw(rgb, boxes, "box")
    assert img.shape == rgb.shape and tuple(img[10, 25]) == (40, 200, 80) and tuple(img[5, 60]) == (230, 50, 50)
    assert not img[25, 25].any()  # inside a box: untouched
    mask = np.zeros((60, 80), bool)
    mask[:, :20] = True
    clicks = Marks().point_click(60, 50, NEGATIVE)
    img = draw(rgb, clicks, "click", mask)
    assert img[30, 5].any() and not img[30, 40].any()  # the object is tinted, the rest is not
    assert tuple(img[50, 60]) == (230, 50, 50)
    assert np.array_equal(draw(rgb, boxes, "click"), rgb)  # boxes are not drawn in click mode


def _seg(n: int) -> Segmentation:
    masks = np.zeros((n, 4, 5), bool)
    for i in range(n):
        masks[i, i] = True
    return Segmentation(width=5, height=4, prompts=[PromptResult(text="cat", presence_score=0.9, count=n)], masks=masks,
                        boxes=np.tile(np.array([[0, 0, 5, 1]], np.float32), (n, 1)), scores=np.full(n, 0.8, np.float32),
                        prompt_ids=np.zeros(n, np.int64))


def _inst(mask: np.ndarray) -> Instance:
    return Instance(id=0, prompt="object", prompt_index=0, score=0.7, box=(0.0, 0.0, 5.0, 4.0), area=int(mask.sum()),
                    area_ratio=float(mask.mean()), mask=mask)


def test_a_refined_object_replaces_its_row_and_keeps_its_prompt():
    seg = _seg(2)
    new = np.ones((4, 5), bool)
    out = with_instance(seg, _inst(new), 1, "object")
    assert len(out) == 2 and out.masks[1].all() and out[1].prompt == "cat" and out.scores[1] == np.float32(0.7)
    assert np.array_equal(out.masks[0], seg.masks[0]) and not seg.masks[1].all()  # the base is not modified


def test_a_new_object_is_added_with_its_own_prompt_entry():
    out = with_instance(_seg(1), _inst(np.ones((4, 5), bool)), NEW_OBJECT, "object")
    assert len(out) == 2 and out[1].prompt == "object" and [p.text for p in out.prompts] == ["cat", "object"]
    empty = with_instance(Segmentation.empty(5, 4), _inst(np.ones((4, 5), bool)), NEW_OBJECT, "object")
    assert len(empty) == 1
    assert target_choices(out, "new")[-1] == ("new", NEW_OBJECT) and [v for _, v in target_choices(out, "new")] == [0, 1, -1]
