"""A session's per-frame results on disk: one SQLite file, one row per (frame, object), masks as COCO RLE.

A session may be corrected on any frame and re-propagated in either direction, so its results are
rewritten frame by frame in any order, and removing an object must take it out of every frame at
once. A table keyed by ``(frame, object_id)`` does both (one ``DELETE`` per object), keeps nothing in
memory, and is read back a frame at a time. Masks are stored as the compressed COCO RLE string of
pycocotools (`sam3studio.results.mask_to_rle`): a few hundred bytes for a typical object.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sam3studio.results import mask_to_rle, rle_to_mask

__all__ = ["ResultStore", "StoredInstance"]


@dataclass(frozen=True)
class StoredInstance:
    """One object on one frame as stored: the mask stays RLE until `mask` is asked for."""

    frame: int
    object_id: int
    score: float
    box: tuple[float, float, float, float]  # XYXY, original frame pixels
    area: int
    counts: str  # compressed COCO RLE counts
    height: int
    width: int

    @property
    def rle(self) -> dict[str, Any]:
        return {"size": [self.height, self.width], "counts": self.counts}

    def mask(self) -> np.ndarray:
        return rle_to_mask(self.rle, (self.height, self.width))


class ResultStore:
    """Rows of ``(frame, object_id, score, box, area, rle)`` in ``path``. Thread-safe (one connection, one lock)."""

    def __init__(self, path: str | Path, width: int, height: int) -> None:
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=OFF")  # working state: a crash ends the session anyway
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS instances (frame INTEGER NOT NULL, object_id INTEGER NOT NULL,"
                " score REAL NOT NULL, box TEXT NOT NULL, area INTEGER NOT NULL, rle TEXT NOT NULL,"
                " PRIMARY KEY (frame, object_id))")
            self._db.execute("CREATE INDEX IF NOT EXISTS instances_object ON instances (object_id, frame)")

    def put(self, frame: int, rows: Iterable[tuple[int, float, tuple[float, float, float, float], np.ndarray | None]]) -> None:
        """Replace the given objects on ``frame``: ``(object_id, score, box, mask)``; a None or empty mask deletes."""
        writes, deletes = [], []
        for object_id, score, box, mask in rows:
            if mask is None or not mask.any():
                deletes.append((int(frame), int(object_id)))
                continue
            if mask.shape != (self.height, self.width):
                raise ValueError(f"mask is {mask.shape}, the video is {self.height}x{self.width}")
            writes.append((int(frame), int(object_id), float(score), json.dumps([round(float(v), 2) for v in box]),
                           int(mask.sum()), mask_to_rle(mask)["counts"]))
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("DELETE FROM instances WHERE frame = ? AND object_id = ?", deletes)
                self._db.executemany("INSERT OR REPLACE INTO instances VALUES (?, ?, ?, ?, ?, ?)", writes)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _rows(self, sql: str, args: tuple) -> list[StoredInstance]:
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [StoredInstance(frame=r[0], object_id=r[1], score=r[2], box=tuple(json.loads(r[3])), area=r[4],
                               counts=r[5], height=self.height, width=self.width) for r in rows]

    def frame(self, frame: int) -> list[StoredInstance]:
        """The objects stored on ``frame``, by object id."""
        return self._rows("SELECT * FROM instances WHERE frame = ? ORDER BY object_id", (int(frame),))

    def get(self, frame: int, object_id: int) -> StoredInstance | None:
        rows = self._rows("SELECT * FROM instances WHERE frame = ? AND object_id = ?", (int(frame), int(object_id)))
        return rows[0] if rows else None

    def delete_object(self, object_id: int) -> int:
        """Remove the object from every frame; returns how many rows went."""
        with self._lock:
            return self._db.execute("DELETE FROM instances WHERE object_id = ?", (int(object_id),)).rowcount

    def frames_of(self, object_id: int) -> list[int]:
        with self._lock:
            rows = self._db.execute("SELECT frame FROM instances WHERE object_id = ? ORDER BY frame",
                                    (int(object_id),)).fetchall()
        return [r[0] for r in rows]

    def counts(self) -> dict[int, int]:
        """Frames present per object."""
        with self._lock:
            rows = self._db.execute("SELECT object_id, COUNT(*) FROM instances GROUP BY object_id").fetchall()
        return {r[0]: r[1] for r in rows}

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM instances").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
