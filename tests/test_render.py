"""Overlays and cutouts."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from sam3studio.render import palette_color, render_cutout, render_overlay
from sam3studio.results import PromptResult, Segmentation

H, W = 60, 80


def make_seg(masks: np.ndarray, scores=None, prompt_ids=None, prompts=("cat",)) -> Segmentation:
    masks = np.asarray(masks, bool)
    n = len(masks)
    boxes = np.zeros((n, 4), np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    prompt_ids = np.zeros(n, np.int64) if prompt_ids is None else np.asarray(prompt_ids)
    return Segmentation(
        width=masks.shape[2],
        height=masks.shape[1],
        prompts=[
            PromptResult(text=t, presence_score=0.9, count=int(np.sum(prompt_ids == k))) for k, t in enumerate(prompts)
        ],
        masks=masks,
        boxes=boxes,
        scores=np.full(n, 0.87, np.float32) if scores is None else scores,
        prompt_ids=prompt_ids,
    )


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture
def two() -> Segmentation:
    masks = np.zeros((2, H, W), bool)
    masks[0, 10:30, 10:30] = True
    masks[1, 10:30, 40:70] = True
    return make_seg(masks)


def test_palette_color_distinct_and_cycles():
    colors = [palette_color(i) for i in range(len(sv.ColorPalette.DEFAULT.colors))]
    assert len(set(colors)) == len(colors)
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in colors)
    assert palette_color(0) == (163, 81, 251)  # supervision's first default colour, as RGB
    assert palette_color(len(colors)) == palette_color(0)
    with pytest.raises(ValueError, match="non-negative"):
        palette_color(-1)


def test_overlay_blends_inside_and_leaves_outside_unchanged(image, two):
    out = render_overlay(image, two, alpha=0.5, labels=False)
    assert out.shape == image.shape and out.dtype == np.uint8
    for i in range(2):
        m = two.masks[i]
        expected = 0.5 * np.array(palette_color(i)) + 0.5 * image[m].astype(float)
        assert np.abs(out[m].astype(float) - expected).max() <= 1.0
    outside = ~two.masks.any(axis=0)
    np.testing.assert_array_equal(out[outside], image[outside])


def test_overlay_alpha_extremes(image, two):
    np.testing.assert_array_equal(render_overlay(image, two, alpha=0.0, labels=False), image)
    full = render_overlay(image, two, alpha=1.0, labels=False)
    assert (full[two.masks[1]] == np.array(palette_color(1), np.uint8)).all()


def test_two_instances_same_prompt_get_different_colours(two):
    flat = np.full((H, W, 3), 128, np.uint8)
    out = render_overlay(flat, two, labels=False)
    c0, c1 = out[20, 20], out[20, 50]
    assert not np.array_equal(c0, c1)
    assert not np.array_equal(c0, flat[0, 0])


def test_overlay_does_not_modify_input(image, two):
    before = image.copy()
    render_overlay(image, two, labels=True, boxes=True)
    np.testing.assert_array_equal(image, before)


def test_labels_and_boxes_draw_extra_pixels(two):
    flat = np.zeros((H, W, 3), np.uint8)
    plain = render_overlay(flat, two, labels=False)
    labelled = render_overlay(flat, two, labels=True)
    boxed = render_overlay(flat, two, labels=False, boxes=True)
    assert (labelled != plain).any()
    outline = (boxed != plain).any(axis=2)
    assert outline[10, 10:30].any()  # top edge of box 0
    assert not outline[45:, :].any()  # nothing drawn far below the boxes


def test_chinese_labels_are_drawn_in_chinese_with_the_shipped_font():
    """OpenCV's font has ASCII only; a Chinese label is drawn with the CJK font in the package, glyph by glyph
    (with a missing font every character would be the same box, and these two labels would look alike)."""
    image = np.full((120, 200, 3), 90, np.uint8)
    masks = np.zeros((1, 120, 200), bool)
    masks[0, 60:110, 40:160] = True

    def label(text: str) -> np.ndarray:
        seg = make_seg(masks, prompts=(text,))
        return render_overlay(image, seg, alpha=0.0)  # only the label differs from the image

    red, blue, english = label("红色的汽车"), label("蓝色的汽车"), label("red car")
    assert (red != image).any() and (blue != image).any()
    assert (red != blue).any(), "two different Chinese labels drew the same pixels: no CJK glyphs"
    assert (red != english).any()  # the prompt itself, not its English query


def test_the_shipped_cjk_font_covers_everyday_chinese_and_the_ui_texts():
    from fontTools.ttLib import TTFont

    from sam3studio.render import CJK_FONT
    from sam3studio.ui.i18n import TEXTS

    assert CJK_FONT.stat().st_size < 4_000_000 and (CJK_FONT.parent / "OFL.txt").exists()
    cmap = TTFont(str(CJK_FONT))["cmap"].getBestCmap()
    ui_chars = {ch for value in TEXTS["zh"].values() for ch in (value if isinstance(value, str) else "".join(value))}
    cjk = {ch for ch in ui_chars if 0x3000 <= ord(ch) <= 0x9FFF or 0xFF00 <= ord(ch) <= 0xFFEF}  # punctuation, hanzi
    missing = {ch for ch in cjk if ord(ch) not in cmap}
    assert not missing, f"the UI's Chinese texts use characters the font lacks: {''.join(sorted(missing))}"
    assert all(ord(ch) in cmap for ch in "猫狗汽车红色的人桌子咖啡杯火箭摩托车")


def test_empty_segmentation_returns_copy(image):
    seg = Segmentation.empty(W, H)
    out = render_overlay(image, seg)
    np.testing.assert_array_equal(out, image)
    assert out is not image


@pytest.mark.parametrize("shape", [(H, W + 1, 3), (H + 1, W, 3)])
def test_wrong_image_size_raises(two, shape):
    bad = np.zeros(shape, np.uint8)
    match = rf"image size {shape[1]}x{shape[0]} \(WxH\) does not match the segmentation's {W}x{H}"
    with pytest.raises(ValueError, match=match):
        render_overlay(bad, two)
    with pytest.raises(ValueError, match=match):
        render_cutout(bad, two)


@pytest.mark.parametrize("bad", [np.zeros((H, W), np.uint8), np.zeros((H, W, 4), np.uint8), np.zeros((H, W, 3), float)])
def test_wrong_image_type_raises(two, bad):
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        render_overlay(bad, two)


def test_alpha_out_of_range_raises(image, two):
    with pytest.raises(ValueError, match="alpha"):
        render_overlay(image, two, alpha=1.5)


def test_cutout_alpha_equals_union(image, two):
    out = render_cutout(image, two)
    assert out.shape == (H, W, 4) and out.dtype == np.uint8
    union = two.masks.any(axis=0)
    np.testing.assert_array_equal(out[..., 3], union.astype(np.uint8) * 255)
    np.testing.assert_array_equal(out[union, :3], image[union])
    assert not out[~union].any()


@pytest.mark.parametrize("index", [0, 1, -1])
def test_cutout_single_instance(image, two, index):
    out = render_cutout(image, two, index=index)
    np.testing.assert_array_equal(out[..., 3] == 255, two.masks[index])
    np.testing.assert_array_equal(out[..., 3] == 0, ~two.masks[index])


def test_cutout_index_out_of_range(image, two):
    with pytest.raises(IndexError, match="out of range for 2 instances"):
        render_cutout(image, two, index=2)


def test_cutout_of_empty_segmentation_is_transparent(image):
    out = render_cutout(image, Segmentation.empty(W, H))
    assert out.shape == (H, W, 4) and not out.any()
