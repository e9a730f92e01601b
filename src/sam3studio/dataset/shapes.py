"""Masks as the shapes export formats want: one polygon per instance, and Label Studio's brush RLE.

Written here by hand, on top of supervision's contour tracing, because no library in our stack does them:

- `single_polygon`: YOLO segmentation (and Label Studio / VOC polygons) want exactly one polygon per
  instance. supervision's ``approximate_mask_with_polygons(bridge_holes=True)`` already joins each
  hole to its outer contour; a mask of several parts is then joined into one polygon by zero-width
  bridges between the closest points of consecutive parts (walked there and back, so the filled
  polygon is the union of the parts), which is how Ultralytics' own converter joins COCO multi-part
  segments. A mask too small to trace (fewer than 3 contour points) becomes its box. A hole that
  supervision cannot bridge (it raises for some ragged masks, such as an untrained model's) is filled
  instead: `mask_polygons` then gives the outer contours only, so an export never stops on one mask.
- `brush_rle` / `decode_brush_rle`: the RLE Label Studio's BrushLabels read (the bit-packed format of
  thi.ng's rle-pack over the RGBA bytes of the mask image: a 32-bit value count, a 5-bit word size,
  four 4-bit run-length sizes, then per run a repeat flag, a size index, the run length and the value).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree
from supervision.dataset.utils import approximate_mask_with_polygons

__all__ = ["box_polygon", "brush_rle", "decode_brush_rle", "join_parts", "mask_polygons", "single_polygon"]


def box_polygon(box: Sequence[float]) -> np.ndarray:
    """The four corners of an XYXY box, ``(4, 2)`` float."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64)


def _closest(a: np.ndarray, b: np.ndarray) -> tuple[int, int, float]:
    """Indices of the closest pair of points between contours ``a`` and ``b``, and their distance."""
    dist, idx = cKDTree(b).query(a)
    i = int(np.argmin(dist))
    return i, int(idx[i]), float(dist[i])


def _chain(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Parts in a walking order: from the largest, each time the nearest part not yet taken (by centre)."""
    centres = np.array([p.mean(axis=0) for p in parts])
    order = [int(np.argmax([len(p) for p in parts]))]
    taken = np.zeros(len(parts), bool)
    taken[order[0]] = True
    for _ in range(len(parts) - 1):
        dist = np.sum((centres - centres[order[-1]]) ** 2, axis=1)
        dist[taken] = np.inf
        nxt = int(np.argmin(dist))
        order.append(nxt)
        taken[nxt] = True
    return [parts[k] for k in order]


def join_parts(parts: Sequence[np.ndarray]) -> np.ndarray:
    """One closed polygon ``(N, 2)`` through every part, joined by zero-width bridges.

    Part k is entered at the point closest to part k - 1, walked all the way round; at its point closest
    to part k + 1 the walk detours through part k + 1 (and everything after it) and comes back.
    """
    parts = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in parts if len(p)]
    if len(parts) == 1:
        return parts[0]
    parts = _chain(parts)
    # exit[k]: index in part k of its bridge to part k + 1; entry[k + 1]: the bridge's end in part k + 1
    exits, entries = [], [0]
    for a, b in zip(parts, parts[1:], strict=False):
        i, j, _ = _closest(a, b)
        exits.append(i)
        entries.append(j)
    walk = None  # the walk of parts k.. from part k's entry back to it, built from the last part down
    for k in range(len(parts) - 1, -1, -1):
        part, entry = parts[k], entries[k]
        ring = np.roll(part, -entry, axis=0)
        loop = np.concatenate([ring, ring[:1]])  # back to the entry point
        if walk is not None:
            at = (exits[k] - entry) % len(part)
            loop = np.concatenate([loop[: at + 1], walk, loop[at:]])
        walk = loop
    return walk[:-1]  # the polygon closes itself


def mask_polygons(mask: np.ndarray) -> list[np.ndarray]:
    """The polygons of a mask's parts, each hole bridged to its outline; where supervision finds no seam
    inside the mask for a hole, the outer contours with that mask's holes filled."""
    mask = np.asarray(mask, dtype=bool)
    try:
        return approximate_mask_with_polygons(mask, bridge_holes=True)
    except ValueError:  # "No foreground-contained seam found for a mask hole."
        return approximate_mask_with_polygons(mask, bridge_holes=False)


def single_polygon(mask: np.ndarray | None, box: Sequence[float]) -> np.ndarray:
    """One polygon ``(N, 2)`` in image pixels for an instance: its mask's parts (holes bridged) joined,
    or its box when it has no mask or the mask is too small to trace."""
    if mask is None or not mask.any():
        return box_polygon(box)
    polygons = mask_polygons(mask)
    if not polygons:
        return box_polygon(box)
    return join_parts(polygons)


# ---------------------------------------------------------------------------- Label Studio brush RLE
_RLE_SIZES = (3, 4, 8, 16)  # bits that may hold a run's length - 1
_WORD = 8  # bits per value


def _bits(values: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """The concatenated big-endian bits of each value in its width, as a 0/1 uint8 array."""
    values = values.astype(np.int64)
    widths = widths.astype(np.int64)
    ends = np.cumsum(widths)
    owner = np.repeat(np.arange(len(values)), widths)
    shift = (ends[owner] - 1) - np.arange(int(ends[-1]))  # bit position within the owner's field, from its end
    return ((values[owner] >> shift) & 1).astype(np.uint8)


def brush_rle(mask: np.ndarray) -> list[int]:
    """Label Studio's brush RLE of an ``(H, W)`` bool mask (the mask as an RGBA image whose every channel is 255
    inside): a list of byte values, as ``value.rle`` of a ``brushlabels`` result."""
    flat = np.repeat(np.asarray(mask, dtype=bool).ravel(), 4)
    n = flat.size
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [n]]))
    values = np.where(flat[starts], 255, 0)
    # Runs longer than the largest length field are split into full chunks and a remainder.
    cap = 1 << _RLE_SIZES[-1]
    pieces = (lengths + cap - 1) // cap
    run_values = np.repeat(values, pieces)
    last = np.cumsum(pieces) - 1
    run_lengths = np.full(int(pieces.sum()), cap, dtype=np.int64)
    run_lengths[last] = lengths - (pieces - 1) * cap
    size_index = np.searchsorted(np.array([1 << s for s in _RLE_SIZES]), run_lengths)  # smallest field that fits
    size_bits = np.array(_RLE_SIZES)[size_index]
    m = len(run_lengths)
    fields = np.stack([np.ones(m, np.int64), size_index, run_lengths - 1, run_values], axis=1).ravel()
    widths = np.stack([np.ones(m, np.int64), np.full(m, 2), size_bits, np.full(m, _WORD)], axis=1).ravel()
    header_values = np.array([n, _WORD - 1, *(s - 1 for s in _RLE_SIZES)], dtype=np.int64)
    header_widths = np.array([32, 5, 4, 4, 4, 4], dtype=np.int64)
    bits = _bits(np.concatenate([header_values, fields]), np.concatenate([header_widths, widths]))
    return np.packbits(bits).tolist()  # packbits pads the last byte with zeros


def decode_brush_rle(rle: Sequence[int], height: int, width: int) -> np.ndarray:
    """The ``(H, W)`` bool mask of a Label Studio brush RLE (any channel non-zero), for tests and imports."""
    bits = np.unpackbits(np.asarray(rle, dtype=np.uint8))
    pos = 0

    def read(k: int) -> int:
        nonlocal pos
        chunk = bits[pos:pos + k]
        pos += k
        return int(chunk.dot(1 << np.arange(k - 1, -1, -1))) if k else 0

    n = read(32)
    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(n, np.uint8)
    i = 0
    while i < n:
        repeat = read(1)
        j = i + 1 + read(sizes[read(2)])
        if repeat:
            out[i:j] = read(word)
        else:
            for k in range(i, j):
                out[k] = read(word)
        i = j
    if n != height * width * 4:
        raise ValueError(f"the RLE holds {n} values, a {width}x{height} RGBA mask has {height * width * 4}")
    return out.reshape(height, width, 4).any(axis=2)
