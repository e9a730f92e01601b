"""Train / val / test splits of an export: ``--split 0.8,0.1,0.1 --seed 0``."""

from __future__ import annotations

import random
from collections.abc import Sequence

from sam3studio.dataset.store import DatasetError

__all__ = ["SPLITS", "assign_splits", "parse_split"]

SPLITS = ("train", "val", "test")


def parse_split(text: str | Sequence[float]) -> tuple[float, float, float]:
    """``"0.8,0.1,0.1"`` (or one or two numbers: the rest is 0) -> fractions of train, val and test summing to 1."""
    try:
        parts = [float(p) for p in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        raise DatasetError(f"--split must be up to three numbers such as 0.8,0.1,0.1, got {text!r}") from None
    if not 1 <= len(parts) <= 3 or any(p < 0 or p != p for p in parts):
        raise DatasetError(f"--split must be one to three non-negative fractions (train,val,test), got {text!r}")
    if abs(sum(parts) - 1) > 1e-6:
        raise DatasetError(f"--split fractions must add up to 1, got {text!r} (sum {sum(parts):g})")
    parts += [0.0] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


def assign_splits(image_ids: Sequence[int], fractions: Sequence[float], seed: int = 0) -> dict[int, str]:
    """Each image id -> ``train``, ``val`` or ``test``.

    The ids are sorted, shuffled with ``seed`` and cut in that order; the counts are the fractions of
    the total rounded by largest remainder, so they always add up (10 images at 0.8,0.1,0.1 give 8, 1, 1).
    The same ids, fractions and seed always give the same split.
    """
    ids = sorted(int(i) for i in image_ids)
    random.Random(seed).shuffle(ids)
    n = len(ids)
    exact = [f * n for f in fractions]
    counts = [int(e) for e in exact]
    for k in sorted(range(len(exact)), key=lambda k: exact[k] - counts[k], reverse=True)[: n - sum(counts)]:
        counts[k] += 1
    out: dict[int, str] = {}
    start = 0
    for name, count in zip(SPLITS, counts, strict=True):
        for image_id in ids[start:start + count]:
            out[image_id] = name
        start += count
    return out
