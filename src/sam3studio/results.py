"""Result types: what a segmentation returns, independent of torch.

`Segmentation` holds every instance found in one image as parallel arrays, in the style of
`supervision.Detections`:

- ``masks``      ``(n, H, W)`` bool, in original-image pixels (or an `RLEMasks`, the same masks kept as
                 COCO RLE: what `Segmenter.segment(masks="rle")` returns for servers; index it for one
                 ``(H, W)`` bool mask, ``np.asarray`` it for the dense array)
- ``boxes``      ``(n, 4)`` float32, XYXY in original-image pixels
- ``scores``     ``(n,)`` float32 in [0, 1]
- ``prompt_ids`` ``(n,)`` int64, index into ``prompts``

Instances are ordered by prompt, then by descending score; ``Instance.id`` is the position.
Masks travel on the wire as COCO RLE (``{"size": [h, w], "counts": str}``) through pycocotools.
This module imports numpy and pycocotools only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

SCHEMA_VERSION = 1

__all__ = [
    "Instance",
    "PromptResult",
    "RLEMasks",
    "Segmentation",
    "mask_to_rle",
    "rle_to_mask",
]


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """Encode one ``(H, W)`` boolean mask as COCO RLE with ``counts`` as a UTF-8 string."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def masks_to_rles(masks: np.ndarray | RLEMasks) -> list[dict[str, Any]]:
    """Encode ``(n, H, W)`` boolean masks as a list of COCO RLE dicts.

    One mask at a time: pycocotools wants Fortran order, and converting the whole stack at once would
    copy it whole (4 GB for 100 masks of a 40 MP image). `RLEMasks` are returned as they are.
    """
    if isinstance(masks, RLEMasks):
        return list(masks.rles)
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be 3-D (n, H, W), got shape {masks.shape}")
    return [mask_to_rle(m) for m in masks]


class RLEMasks:
    """``(n, H, W)`` boolean masks kept as COCO RLE dicts: a few KB per mask instead of H x W bytes.

    Quacks like the dense array where `Segmentation` and its consumers need it: ``len``, ``shape``,
    ``ndim``, ``dtype``; ``masks[i]`` decodes one ``(H, W)`` bool mask; a slice, an index list or a
    boolean array gives a new `RLEMasks`; iterating decodes one mask at a time; ``np.asarray(masks)``
    decodes them all into the dense array (the memory it saves is then spent, so servers avoid it).
    """

    ndim = 3
    dtype = np.dtype(bool)

    def __init__(self, rles: Sequence[dict[str, Any]], height: int, width: int) -> None:
        self.rles = tuple(rles)
        self.height, self.width = int(height), int(width)
        for rle in self.rles:
            if tuple(rle["size"]) != (self.height, self.width):
                raise ValueError(f"an RLE mask of size {rle['size']} in masks of {self.height}x{self.width}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.rles), self.height, self.width)

    @property
    def size(self) -> int:
        return len(self.rles) * self.height * self.width

    def __len__(self) -> int:
        return len(self.rles)

    def __getitem__(self, index: Any) -> np.ndarray | RLEMasks:
        if isinstance(index, (int, np.integer)):
            return rle_to_mask(self.rles[int(index)])
        picked = np.arange(len(self.rles))[index]
        return RLEMasks([self.rles[int(i)] for i in np.atleast_1d(picked)], self.height, self.width)

    def __iter__(self) -> Iterator[np.ndarray]:
        for rle in self.rles:
            yield rle_to_mask(rle)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.zeros(self.shape, dtype=bool)
        for i, rle in enumerate(self.rles):
            out[i] = rle_to_mask(rle)
        return out if dtype is None else out.astype(dtype)

    def areas(self) -> np.ndarray:
        """Pixel count of each mask, ``(n,)`` int64, from the runs (nothing decoded)."""
        if not self.rles:
            return np.zeros(0, np.int64)
        return np.asarray(mask_utils.area([_coco(r) for r in self.rles]), dtype=np.int64).reshape(-1)

    def any(self, axis: int | None = None) -> np.ndarray | bool:
        """``axis=0``: the union ``(H, W)``; ``None``: whether any mask has a pixel."""
        if axis is None:
            return bool(self.areas().sum())
        if axis != 0:
            raise ValueError("RLEMasks.any supports axis=0 or None")
        union = np.zeros((self.height, self.width), bool)
        for mask in self:
            union |= mask
        return union


def _coco(rle: dict[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def _compressed_counts(data: bytes, total: int) -> np.ndarray:
    """Run lengths of a compressed COCO RLE string (the format of pycocotools' ``rleToString``).

    Read here, never by pycocotools: its C parser has no bounds checks and computes long runs with
    32-bit overflows, so a crafted string both passes a Python check and overruns pycocotools'
    buffers. Vectorised (numpy), so a long hostile string costs milliseconds, not a Python loop.
    Each value is 1 to 7 characters of 5 bits (bit 0x20: more follow; bit 0x10 of the last: negative);
    from the fourth value on, values are deltas to the value two places back.
    """
    if not data:
        return np.zeros(0, np.int64)
    c = np.frombuffer(data, np.uint8).astype(np.int64) - 48
    if ((c < 0) | (c >= 64)).any():
        raise ValueError("RLE counts string is malformed")
    ends = (c & 0x20) == 0  # the last character of each value
    if not ends[-1]:
        raise ValueError("RLE counts string is truncated")
    starts = np.flatnonzero(np.concatenate(([True], ends[:-1])))
    lengths = np.diff(np.append(starts, c.size))
    if lengths.max() > 7:  # 7 x 5 bits holds any run of a 2^31-pixel mask
        raise ValueError("RLE counts string is malformed")
    k = np.arange(c.size) - np.repeat(starts, lengths)  # position of each character in its value
    values = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    negative = (c[ends] & 0x10) != 0
    values[negative] |= np.left_shift(np.int64(-1), 5 * lengths[negative])
    counts = values.copy()
    if len(values) > 3:  # undo the deltas: value i (i > 2) is relative to run i - 2
        counts[3::2] = values[1] + np.cumsum(values[3::2])
    if len(values) > 4:
        counts[4::2] = values[2] + np.cumsum(values[4::2])
    if (counts < 0).any() or counts.sum() > total:
        raise ValueError("RLE counts string is malformed or runs past the mask")
    return counts


def rle_to_mask(rle: dict[str, Any], shape: tuple[int, int] | None = None, order: str = "C") -> np.ndarray:
    """Decode a COCO RLE dict (compressed string counts or uncompressed list counts) to ``(H, W)`` bool.

    ``order="F"`` returns the mask in column-major memory order (RLE's own), without the copy into row-major
    order: several times faster for large masks, for callers that only index or trace it.

    Raises `ValueError` for anything malformed. The runs are checked and expanded here (pycocotools'
    decoder is not safe on hostile strings). On untrusted input pass ``shape``: a mask of another size
    is refused before anything is allocated (without it, ``size`` alone decides the allocation).
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError("RLE must be a dict with 'size' and 'counts'")
    size = rle["size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < 2**31 for v in size)):
        raise ValueError("RLE size must be [height, width]")
    h, w = (int(v) for v in size)
    if shape is not None and (h, w) != tuple(shape):
        raise ValueError(f"the mask is {w}x{h}, the image is {shape[1]}x{shape[0]}")
    counts = rle["counts"]
    if isinstance(counts, list):
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in counts):
            raise ValueError("RLE counts must be non-negative integers")
        if sum(int(v) for v in counts) != h * w:  # Python ints: no overflow before the check
            raise ValueError(f"RLE runs cover {sum(int(v) for v in counts)} pixels, the mask has {h * w}")
        runs = np.asarray(counts, dtype=np.int64)
    elif isinstance(counts, (str, bytes)):
        try:
            data = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
        except UnicodeEncodeError:
            raise ValueError("RLE counts string is malformed") from None
        runs = _compressed_counts(data, h * w)
    else:
        raise ValueError("RLE counts must be a string or a list of integers")
    if int(runs.sum()) != h * w:
        raise ValueError(f"RLE runs cover {int(runs.sum())} pixels, the mask has {h * w}")
    # Runs alternate background / foreground, column-major (COCO's Fortran order).
    values = (np.arange(len(runs)) % 2).astype(bool)
    mask = np.repeat(values, runs).reshape(w, h).T
    return mask if order == "F" else mask.copy()


@dataclass(frozen=True)
class PromptResult:
    """One prompt as the model saw it.

    ``text`` is what the user typed, ``query`` what reached the model (they differ once prompts
    are translated), ``presence_score`` SAM 3's image-level probability that the concept is
    present (None for objects that no prompt found, such as one added by clicks), ``count`` the
    number of instances kept for it.
    """

    text: str
    presence_score: float | None
    count: int
    query: str | None = None
    unknown_words: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.query is None:
            object.__setattr__(self, "query", self.text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "query": self.query,
            "presence_score": None if self.presence_score is None else round(float(self.presence_score), 6),
            "count": int(self.count),
            "unknown_words": list(self.unknown_words),
        }


@dataclass(frozen=True)
class Instance:
    """One object: a read-only view of one row of a `Segmentation`."""

    id: int
    prompt: str
    prompt_index: int
    score: float
    box: tuple[float, float, float, float]
    area: int
    area_ratio: float
    mask: np.ndarray = field(repr=False)

    def to_dict(self, include_mask: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "prompt": self.prompt,
            "prompt_index": self.prompt_index,
            "score": round(float(self.score), 6),
            "box_xyxy": [round(float(v), 2) for v in self.box],
            "area": int(self.area),
            "area_ratio": round(float(self.area_ratio), 6),
        }
        if include_mask:
            out["mask"] = mask_to_rle(self.mask)
        return out


@dataclass
class Segmentation:
    """All instances found in one image, as parallel arrays validated on construction."""

    width: int
    height: int
    prompts: list[PromptResult]
    masks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    prompt_ids: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    # SAM's predicted IoU of instances refined by clicks (`Segmenter.refine`), NaN for the others; None when none
    # was. A refined object that no prompt detected has no detection score: its ``scores`` entry is NaN.
    predicted_iou: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.width, self.height = int(self.width), int(self.height)
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got width={self.width} height={self.height}")
        if not isinstance(self.masks, RLEMasks):
            self.masks = np.asarray(self.masks, dtype=bool)
        self.boxes = np.asarray(self.boxes, dtype=np.float32) if np.size(self.boxes) else np.zeros((0, 4), np.float32)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.prompt_ids = np.asarray(self.prompt_ids, dtype=np.int64).reshape(-1)
        n = len(self.scores)
        expected = {
            "masks": ((n, self.height, self.width), self.masks.shape),
            "boxes": ((n, 4), self.boxes.shape),
            "prompt_ids": ((n,), self.prompt_ids.shape),
        }
        if self.masks.size == 0 and n == 0 and not isinstance(self.masks, RLEMasks):
            self.masks = np.zeros((0, self.height, self.width), dtype=bool)
            expected["masks"] = ((0, self.height, self.width), self.masks.shape)
        for name, (want, got) in expected.items():
            if tuple(want) != tuple(got):
                raise ValueError(f"{name} must have shape {tuple(want)} for {n} instances, got {tuple(got)}")
        if n and (self.prompt_ids.min() < 0 or self.prompt_ids.max() >= len(self.prompts)):
            raise ValueError(f"prompt_ids must index into {len(self.prompts)} prompts, got {self.prompt_ids.tolist()}")
        if n and not np.all(np.isnan(self.scores) | ((self.scores >= 0) & (self.scores <= 1))):
            raise ValueError("scores must lie in [0, 1] (NaN: no detection score)")
        if self.predicted_iou is not None:
            self.predicted_iou = np.asarray(self.predicted_iou, dtype=np.float32).reshape(-1)
            iou = self.predicted_iou
            if iou.shape != (n,) or not np.all(np.isnan(iou) | ((iou >= 0) & (iou <= 1))):
                raise ValueError(f"predicted_iou must hold {n} values in [0, 1] or NaN, got {iou.tolist()}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls, width: int, height: int, prompts: Sequence[PromptResult] = ()) -> Segmentation:
        return cls(
            width=width,
            height=height,
            prompts=list(prompts),
            masks=np.zeros((0, height, width), bool),
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            prompt_ids=np.zeros((0,), np.int64),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Segmentation:
        """Inverse of `to_dict` (masks decoded from RLE)."""
        width, height = int(data["width"]), int(data["height"])
        prompts = [
            PromptResult(text=p["text"], query=p.get("query"), presence_score=p["presence_score"], count=p["count"],
                         unknown_words=tuple(p.get("unknown_words", ())))
            for p in data["prompts"]
        ]
        inst = data["instances"]
        masks = np.stack([rle_to_mask(i["mask"]) for i in inst]) if inst else np.zeros((0, height, width), bool)
        ious = [i.get("predicted_iou") for i in inst]
        return cls(
            width=width,
            height=height,
            prompts=prompts,
            masks=masks,
            boxes=np.array([i["box_xyxy"] for i in inst], np.float32).reshape(-1, 4),
            scores=np.array([np.nan if i["score"] is None else i["score"] for i in inst], np.float32),
            prompt_ids=np.array([i["prompt_index"] for i in inst], np.int64),
            timings=dict(data.get("timings", {})),
            predicted_iou=None if all(v is None for v in ious) else
            np.array([np.nan if v is None else v for v in ious], np.float32),
        )

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.scores)

    @property
    def areas(self) -> np.ndarray:
        """Pixel count of each mask, ``(n,)`` int64."""
        if isinstance(self.masks, RLEMasks):
            return self.masks.areas()
        return self.masks.sum(axis=(1, 2), dtype=np.int64)

    @property
    def area_ratios(self) -> np.ndarray:
        return self.areas / float(self.width * self.height)

    @property
    def instances(self) -> list[Instance]:
        return list(self)

    def __iter__(self) -> Iterator[Instance]:
        areas, total = self.areas, float(self.width * self.height)
        for i in range(len(self)):
            pid = int(self.prompt_ids[i])
            yield Instance(
                id=i,
                prompt=self.prompts[pid].text,
                prompt_index=pid,
                score=float(self.scores[i]),
                box=tuple(float(v) for v in self.boxes[i]),  # type: ignore[arg-type]
                area=int(areas[i]),
                area_ratio=float(areas[i] / total),
                mask=self.masks[i],
            )

    def __getitem__(self, index: int | slice | np.ndarray | list[int]) -> Instance | Segmentation:
        """An int gives one `Instance`; a slice, index list or boolean mask gives a new `Segmentation`."""
        if isinstance(index, (int, np.integer)):
            n = len(self)
            if not -n <= index < n:
                raise IndexError(f"instance index {index} out of range for {n} instances")
            return self.instances[int(index)]
        idx = np.arange(len(self))[index]
        return Segmentation(
            width=self.width,
            height=self.height,
            prompts=self.prompts,
            masks=self.masks[idx],
            boxes=self.boxes[idx],
            scores=self.scores[idx],
            prompt_ids=self.prompt_ids[idx],
            timings=dict(self.timings),
            predicted_iou=None if self.predicted_iou is None else self.predicted_iou[idx],
        )

    def label_map(self) -> np.ndarray:
        """``(H, W)`` uint16 map: 0 is background, instance ``i`` is ``i + 1``.

        Where masks overlap, the higher-scoring instance wins.
        """
        if len(self) > np.iinfo(np.uint16).max:
            raise ValueError(f"too many instances for a uint16 label map: {len(self)}")
        out = np.zeros((self.height, self.width), np.uint16)
        for i in np.argsort(self.scores, kind="stable"):  # low scores first, high scores paint over
            out[self.masks[i]] = i + 1
        return out

    # ------------------------------------------------------------------ conversion
    def _instance_dicts(self) -> list[dict[str, Any]]:
        """Every instance as `Instance.to_dict` writes it, without its mask (nothing decoded)."""
        areas, total = self.areas, float(self.width * self.height)
        out = [{"id": i, "prompt": self.prompts[int(p)].text, "prompt_index": int(p),
                "score": None if np.isnan(self.scores[i]) else round(float(self.scores[i]), 6),
                "box_xyxy": [round(float(v), 2) for v in self.boxes[i]],
                "area": int(areas[i]), "area_ratio": round(float(areas[i] / total), 6)}
               for i, p in enumerate(self.prompt_ids)]
        if self.predicted_iou is not None:
            for d, iou in zip(out, self.predicted_iou, strict=True):
                if not np.isnan(iou):
                    d["predicted_iou"] = round(float(iou), 6)
        return out

    def to_dict(self, include_masks: bool = True) -> dict[str, Any]:
        """JSON-ready dict; the same schema the REST API returns (see `sam3studio.schemas`)."""
        instances = self._instance_dicts()
        if include_masks:
            for d, rle in zip(instances, masks_to_rles(self.masks), strict=True):
                d["mask"] = rle
        return {
            "schema_version": SCHEMA_VERSION,
            "width": self.width,
            "height": self.height,
            "prompts": [p.to_dict() for p in self.prompts],
            "instances": instances,
            "timings": {k: round(float(v), 6) for k, v in self.timings.items()},
        }

    def to_json(self, include_masks: bool = True, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(include_masks=include_masks), indent=indent, ensure_ascii=False)

    def to_coco(self, image_id: int = 0, category_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """COCO results list (one dict per instance): ``image_id``, ``category_id``,
        ``segmentation`` (RLE), ``bbox`` (XYWH), ``score``, ``area``.

        ``category_ids[k]`` is the category of prompt ``k`` (default: ``k + 1``).
        """
        if category_ids is None:
            category_ids = list(range(1, len(self.prompts) + 1))
        if len(category_ids) != len(self.prompts):
            raise ValueError(f"category_ids must have one id per prompt ({len(self.prompts)}), got {len(category_ids)}")
        out = []
        for inst, rle in zip(self, masks_to_rles(self.masks), strict=True):
            x1, y1, x2, y2 = inst.box
            out.append(
                {
                    "image_id": image_id,
                    "category_id": int(category_ids[inst.prompt_index]),
                    "segmentation": rle,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": inst.score,
                    "area": inst.area,
                }
            )
        return out

    def to_detections(self):  # -> supervision.Detections
        """Convert to `supervision.Detections` (``class_id`` = prompt index, ``data['class_name']`` = prompt)."""
        try:
            import supervision as sv
        except ImportError as exc:  # pragma: no cover - supervision is a dependency
            raise ImportError("to_detections() needs the 'supervision' package: pip install supervision") from exc
        return sv.Detections(
            xyxy=self.boxes.astype(np.float32),
            mask=np.asarray(self.masks),
            confidence=self.scores,
            class_id=self.prompt_ids.astype(int),
            data={"class_name": np.array([self.prompts[i].text for i in self.prompt_ids], dtype=object)},
        )
