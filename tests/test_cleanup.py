"""Mask clean-up: hole filling, island removal, smoothing, validation."""

from __future__ import annotations

import numpy as np
import pytest

from sam3studio.cleanup import CleanupOptions, cleanup_masks


def ring_with_hole(size: int = 40) -> np.ndarray:
    """A 20x20 square (400 px) at (10, 10) with a 3x3 (9 px) hole in the middle: area 391."""
    m = np.zeros((size, size), bool)
    m[10:30, 10:30] = True
    m[18:21, 18:21] = False
    return m


def square_with_island(size: int = 50) -> np.ndarray:
    """A 20x20 square (400 px) plus a separate 2x2 island (4 px): area 404."""
    m = np.zeros((size, size), bool)
    m[5:25, 5:25] = True
    m[40:42, 40:42] = True
    return m


# ---------------------------------------------------------------------- identity
def test_defaults_are_identity():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 31, 47)) > 0.5
    out = cleanup_masks(masks)
    assert out.dtype == bool and out.shape == masks.shape
    np.testing.assert_array_equal(out, masks)
    assert out is not masks  # a copy, never the caller's array


def test_input_not_modified():
    masks = ring_with_hole()[None].copy()
    before = masks.copy()
    cleanup_masks(masks, fill_holes=1.0, smooth=2)
    np.testing.assert_array_equal(masks, before)


def test_integer_masks_accepted():
    masks = ring_with_hole()[None].astype(np.uint8)
    out = cleanup_masks(masks, fill_holes=0.5)
    assert out.dtype == bool
    assert out[0, 18:21, 18:21].all()


def test_empty_masks_and_zero_instances():
    assert cleanup_masks(np.zeros((0, 5, 7), bool), fill_holes=1, smooth=3).shape == (0, 5, 7)
    out = cleanup_masks(np.zeros((2, 9, 9), bool), fill_holes=1, min_island=1, smooth=2)
    assert not out.any()


# ---------------------------------------------------------------------- fill holes
def test_fill_holes_fills_when_threshold_large_enough():
    m = ring_with_hole()
    # 9 < 0.05 * 391 = 19.55 -> filled
    out = cleanup_masks(m[None], fill_holes=0.05)[0]
    expected = m.copy()
    expected[18:21, 18:21] = True
    np.testing.assert_array_equal(out, expected)


def test_fill_holes_keeps_hole_when_threshold_too_small():
    m = ring_with_hole()
    # 9 >= 0.02 * 391 = 7.82 -> kept
    np.testing.assert_array_equal(cleanup_masks(m[None], fill_holes=0.02)[0], m)


def test_fill_holes_threshold_is_strict():
    m = ring_with_hole()
    area = int(m.sum())
    exactly = 9 / area
    np.testing.assert_array_equal(cleanup_masks(m[None], fill_holes=exactly)[0], m)  # 9 < 9 is false
    assert cleanup_masks(m[None], fill_holes=exactly * 1.01)[0, 19, 19]


def test_fill_holes_ignores_background_open_to_the_border():
    # A U shape: the notch touches the image border, so it is not a hole.
    m = np.zeros((20, 20), bool)
    m[0:15, 2:18] = True
    m[0:10, 8:12] = False  # notch open at the top image edge
    np.testing.assert_array_equal(cleanup_masks(m[None], fill_holes=1.0)[0], m)
    # A C shape open to the background margin inside the image is not a hole either.
    c = np.zeros((30, 30), bool)
    c[5:25, 5:25] = True
    c[10:20, 10:25] = False
    np.testing.assert_array_equal(cleanup_masks(c[None], fill_holes=1.0)[0], c)


def test_fill_holes_diagonal_gap_still_a_hole():
    # Background is 4-connected: a hole touching the outside only at a corner is enclosed.
    m = np.zeros((12, 12), bool)
    m[2:9, 2:9] = True
    m[5, 5] = False  # a 1-px hole
    m[8, 8] = False  # a notch at the corner of the square: 4-connected to the outside
    out = cleanup_masks(m[None], fill_holes=1.0)[0]
    assert out[5, 5]
    assert not out[8, 8]


def test_fill_holes_per_mask_fraction():
    big, small = ring_with_hole(), np.zeros((40, 40), bool)
    small[0:5, 0:5] = True
    small[2, 2] = False  # 1-px hole in a 24-px mask
    out = cleanup_masks(np.stack([big, small]), fill_holes=0.05)
    assert out[0, 19, 19]  # 9 < 19.55
    assert out[1, 2, 2]  # 1 < 1.2


# ---------------------------------------------------------------------- islands
def test_min_island_drops_small_island():
    m = square_with_island()
    out = cleanup_masks(m[None], min_island=0.05)[0]  # 4 < 20.2 -> dropped
    expected = m.copy()
    expected[40:42, 40:42] = False
    np.testing.assert_array_equal(out, expected)


def test_min_island_keeps_island_when_threshold_small():
    m = square_with_island()
    np.testing.assert_array_equal(cleanup_masks(m[None], min_island=0.001)[0], m)  # 4 >= 0.404


def test_min_island_never_drops_largest_component():
    m = np.zeros((30, 30), bool)
    m[2:5, 2:5] = True  # 9 px
    m[20:22, 20:22] = True  # 4 px
    out = cleanup_masks(m[None], min_island=1.0)[0]
    expected = np.zeros_like(m)
    expected[2:5, 2:5] = True
    np.testing.assert_array_equal(out, expected)


def test_diagonal_pixels_are_one_island():
    # Foreground is 8-connected: the diagonal staircase is a single component and survives.
    m = np.zeros((20, 20), bool)
    m[0:10, 0:10] = True  # 100 px
    for k in range(10, 14):
        m[k, k] = True  # 4 px diagonal tail touching the square's corner
    np.testing.assert_array_equal(cleanup_masks(m[None], min_island=0.5)[0], m)


# ---------------------------------------------------------------------- smoothing
def square(size: int = 40) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[10:30, 10:30] = True
    return m


def test_smooth_removes_one_pixel_spur():
    spur = square()
    spur[19, 30:36] = True  # 1-px wide, 6-px long spur
    out = cleanup_masks(spur[None], smooth=1)[0]
    assert not out[19, 31:36].any()  # the spur is gone ...
    expected = cleanup_masks(square()[None], smooth=1)[0]
    expected[19, 30] = True  # ... except the pixel at its base, which any disk touching the edge covers
    np.testing.assert_array_equal(out, expected)


def test_smooth_rounds_corners_by_radius():
    # Opening with disk(1) (a 3x3 cross) removes exactly the 4 corner pixels of a square.
    out = cleanup_masks(square()[None], smooth=1)[0]
    expected = square()
    expected[[10, 10, 29, 29], [10, 29, 10, 29]] = False
    np.testing.assert_array_equal(out, expected)


def test_smooth_fills_one_pixel_slit():
    slit = square()
    slit[10:16, 19] = False  # 1-px wide slit from the top edge, 6 deep
    out = cleanup_masks(slit[None], smooth=1)[0]
    assert out[12:16, 19].all()  # the slit closes below its mouth
    assert out.sum() >= square().sum() - 8


def test_smooth_keeps_mask_touching_image_border():
    m = np.zeros((30, 30), bool)
    m[0:15, 0:30] = True  # touches three image edges
    np.testing.assert_array_equal(cleanup_masks(m[None], smooth=3)[0], m)


def test_smooth_never_erases_a_mask():
    m = np.zeros((30, 30), bool)
    m[10:12, 10:12] = True  # thinner than the disk: opening would erase it
    np.testing.assert_array_equal(cleanup_masks(m[None], smooth=3)[0], m)


def test_only_the_crop_matters_on_a_large_image():
    masks = np.zeros((3, 4000, 4000), bool)
    masks[0, 100:140, 100:140] = True
    masks[0, 120, 120] = False
    masks[1, 3900:, :] = True  # a band along three image edges: smoothing leaves it alone
    masks[2, 2000, 2000] = True
    out = cleanup_masks(masks, fill_holes=0.5, min_island=0.1, smooth=2)
    # Same answer as cleaning up the same mask, shifted, in a small image: only the crop matters.
    small = np.zeros((1, 60, 60), bool)
    small[0, 10:50, 10:50] = masks[0, 100:140, 100:140]
    ref = cleanup_masks(small, fill_holes=0.5, min_island=0.1, smooth=2)[0]
    assert out[0, 120, 120] and ref[30, 30]
    np.testing.assert_array_equal(out[0, 90:150, 90:150], ref)
    assert out[0].sum() == ref.sum()
    np.testing.assert_array_equal(out[1], masks[1])
    np.testing.assert_array_equal(out[2], masks[2])


# ---------------------------------------------------------------------- options & validation
def test_cleanup_options_apply_and_noop():
    assert CleanupOptions().is_noop
    assert not CleanupOptions(smooth=1).is_noop
    opts = CleanupOptions(fill_holes=0.05)
    masks = ring_with_hole()[None]
    np.testing.assert_array_equal(opts.apply(masks), cleanup_masks(masks, fill_holes=0.05))
    with pytest.raises(AttributeError):
        opts.smooth = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fill_holes": -0.1}, r"fill_holes must be a number in \[0, 1\], got -0.1"),
        ({"fill_holes": 1.5}, r"fill_holes must be a number in \[0, 1\], got 1.5"),
        ({"fill_holes": float("nan")}, r"fill_holes must be a number in \[0, 1\]"),
        ({"fill_holes": "0.5"}, r"fill_holes must be a number"),
        ({"min_island": 2}, r"min_island must be a number in \[0, 1\], got 2"),
        ({"min_island": True}, r"min_island must be a number"),
        ({"smooth": -1}, r"smooth must be an integer radius in pixels in \[0, 50\], got -1"),
        ({"smooth": 51}, r"smooth must be an integer .* got 51"),
        ({"smooth": 1.5}, r"smooth must be an integer .* got 1.5"),
        ({"smooth": True}, r"smooth must be an integer"),
    ],
)
def test_invalid_options_raise(kwargs, match):
    masks = np.zeros((1, 4, 4), bool)
    with pytest.raises(ValueError, match=match):
        cleanup_masks(masks, **kwargs)
    with pytest.raises(ValueError, match=match):
        CleanupOptions(**kwargs)


@pytest.mark.parametrize(
    ("masks", "match"),
    [
        (np.zeros((4, 4), bool), r"masks must be 3-D \(n, H, W\), got shape \(4, 4\)"),
        (np.zeros((1, 2, 4, 4), bool), r"masks must be 3-D"),
        (np.zeros((1, 4, 4), np.float32), r"masks must be boolean or integer 0/1, got dtype float32"),
    ],
)
def test_invalid_masks_raise(masks, match):
    with pytest.raises(ValueError, match=match):
        cleanup_masks(masks, fill_holes=0.5)


def test_numpy_scalars_accepted():
    out = cleanup_masks(ring_with_hole()[None], fill_holes=np.float32(0.05), smooth=np.int64(0))
    assert out[0, 19, 19]


def test_old_names_are_deprecated_aliases():
    import sam3studio
    from sam3studio import refine as old_module

    with pytest.warns(DeprecationWarning, match="CleanupOptions"):
        assert old_module.RefineOptions is CleanupOptions
    with pytest.warns(DeprecationWarning, match="cleanup_masks"):
        assert old_module.refine_masks is cleanup_masks
    with pytest.warns(DeprecationWarning, match="CleanupOptions"):
        assert sam3studio.RefineOptions is CleanupOptions
    assert sam3studio.CleanupOptions is CleanupOptions
    with pytest.raises(AttributeError):
        old_module.nothing_here  # noqa: B018
