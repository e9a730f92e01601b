"""The dataset store: one SQLite file (WAL) per dataset folder with every image, its instances and its review state.

Layout of a dataset folder::

    dataset.sqlite3        the store (plus SQLite's -wal and -shm files while it is open)
    .label-staging/        shards of a `--engine ray` label run not yet taken into the store (normally absent)

Schema (version 1; ``meta.schema_version`` says which, `MIGRATIONS` brings an older file up to date)::

    meta(key, value)                     schema_version, created, label settings
    classes(id, name)                    id = the class index (0, 1, ...), in the order given
    images(id, path, name, width, height, state, version, proposed, error, updated)
    instances(id, image_id, class_id, score, origin, x1, y1, x2, y2, area, rle, updated)

``images.state`` is the review state: ``unreviewed``, ``accepted``, ``corrected`` or ``skipped``.
``images.proposed`` is 1 once a label run stored the model's proposals for the image. An instance's
mask is COCO RLE (the compressed ``counts`` string of an ``(height, width)`` mask) or NULL for a
box-only instance; its box is XYXY in image pixels (the mask's tight box when it has a mask).

Concurrency rule: every image has a ``version``. Each change to an image (an instance added, changed
or deleted, a new review state) names the version its writer last read; in one ``BEGIN IMMEDIATE``
transaction the store checks it is still current, applies the change and increments the version.
A writer holding an older version gets `VersionConflict` with the current one and must reload, so
two browser tabs (or an API client and a tab) never overwrite each other's changes unseen. A label
run writes proposals only to images that are still ``unreviewed`` and not yet proposed, in the same
kind of transaction, so it never touches an image a person has looked at.

Paged lists use keyset paging (``id > after``) on indexed columns, so a page costs the same on image
1 and on image 100 000.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sam3studio.errors import InputError, Sam3StudioError
from sam3studio.prompts import parse_prompts
from sam3studio.results import mask_to_rle, rle_to_mask

__all__ = [
    "DB_NAME", "MIGRATIONS", "ORIGINS", "REVIEWED", "SCHEMA_VERSION", "STATES", "DatasetError", "DatasetNotFound",
    "DatasetStore", "ImageFilter", "ImagePage", "ImageRow", "StoredImage", "StoredInstance", "VersionConflict",
    "mask_box", "parse_classes",
]

DB_NAME = "dataset.sqlite3"
STATES = ("unreviewed", "accepted", "corrected", "skipped")
REVIEWED = ("accepted", "corrected")
# Where an instance came from: the label run, an imported file, or a reviewer's text prompt, example box or clicks.
ORIGINS = ("model", "import", "text", "box", "clicks", "api")
MAX_CLASSES = 256
_SEPARATORS = re.compile(r"[,，、;；]")  # as prompts are split (sam3studio.prompts)
MAX_PAGE = 500

_V1 = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE classes (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    width INTEGER,
    height INTEGER,
    state TEXT NOT NULL DEFAULT 'unreviewed' CHECK (state IN ({", ".join(f"'{s}'" for s in STATES)})),
    version INTEGER NOT NULL DEFAULT 0,
    proposed INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    updated REAL NOT NULL
);
CREATE INDEX images_state ON images (state, id);
CREATE INDEX images_pending ON images (proposed, state, id);
CREATE TABLE instances (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    class_id INTEGER NOT NULL REFERENCES classes (id),
    score REAL,
    origin TEXT NOT NULL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    area INTEGER NOT NULL,
    rle TEXT,
    updated REAL NOT NULL
);
CREATE INDEX instances_image ON instances (image_id, class_id, score);
CREATE INDEX instances_class ON instances (class_id, score, image_id);
"""

# MIGRATIONS[i] turns a version-i store into a version-(i + 1) one; version 0 is an empty file.
MIGRATIONS: tuple[str, ...] = (_V1,)
SCHEMA_VERSION = len(MIGRATIONS)


class DatasetError(InputError):
    """A dataset folder, class list or request that cannot be used (one sentence). HTTP 400."""


class DatasetNotFound(Sam3StudioError):
    """No such dataset, image or instance. HTTP 404."""


class VersionConflict(Sam3StudioError):
    """The image changed since the writer read it (another tab or client): reload and try again. HTTP 409."""

    def __init__(self, image_id: int, expected: int, current: int) -> None:
        super().__init__(f"image {image_id} changed since it was read (version {expected}, now {current}): "
                         "reload it and apply the change again")
        self.image_id, self.expected, self.current = image_id, expected, current


def parse_classes(text: str | Sequence[str]) -> list[str]:
    """``"hard hat, person"`` -> ``["hard hat", "person"]``: split like prompts, and a repeated class is an error."""
    items = [text] if isinstance(text, str) else list(text)
    if not all(isinstance(i, str) for i in items):
        raise DatasetError("invalid class list: give class names as text, e.g. \"hard hat, person\"")
    names = [n for item in items for n in (" ".join(p.split()) for p in _SEPARATORS.split(item)) if n]
    if not names:
        raise DatasetError("invalid class list: it is empty; give class names such as \"hard hat, person\"")
    seen: set[str] = set()
    for name in names:
        if name.casefold() in seen:
            raise DatasetError(f"invalid class list: {name!r} is listed twice")
        seen.add(name.casefold())
    if len(names) > MAX_CLASSES:
        raise DatasetError(f"invalid class list: {len(names)} classes; the limit is {MAX_CLASSES}")
    try:
        return parse_prompts(names, max_prompts=MAX_CLASSES)
    except InputError as exc:
        raise DatasetError(f"invalid class list: {exc}") from None


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """The tight XYXY box of a boolean mask (pixel edges: a one-pixel mask at (x, y) is (x, y, x + 1, y + 1))."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if not len(xs):
        return (0.0, 0.0, 0.0, 0.0)
    return (float(xs[0]), float(ys[0]), float(xs[-1] + 1), float(ys[-1] + 1))


@dataclass(frozen=True)
class StoredInstance:
    """One instance as stored: class, score (None when no model scored it), origin, box, area and RLE mask."""

    id: int
    class_id: int
    class_name: str
    score: float | None
    origin: str
    box: tuple[float, float, float, float]
    area: int
    counts: str | None  # COCO compressed RLE counts of an (height, width) mask; None: box only
    height: int
    width: int

    @property
    def rle(self) -> dict[str, Any] | None:
        return None if self.counts is None else {"size": [self.height, self.width], "counts": self.counts}

    def mask(self) -> np.ndarray | None:
        """The ``(height, width)`` bool mask, or None for a box-only instance."""
        # Column-major (RLE's order): no transposing copy; indexing, contours and encoding do not mind.
        return None if self.counts is None else rle_to_mask(self.rle, (self.height, self.width), order="F")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "class_id": self.class_id, "class_name": self.class_name,
                "score": None if self.score is None else round(float(self.score), 6), "origin": self.origin,
                "box_xyxy": [round(v, 2) for v in self.box], "area": self.area, "mask": self.rle}


@dataclass(frozen=True)
class StoredImage:
    """One image with its instances (ordered by id), review state and version."""

    id: int
    path: str
    name: str
    width: int | None
    height: int | None
    state: str
    version: int
    proposed: bool
    error: str | None
    instances: list[StoredInstance] = field(default_factory=list)

    @property
    def missing(self) -> bool:
        """True when the image file is not where the store says (moved or deleted)."""
        return not Path(self.path).is_file()

    @property
    def reviewed(self) -> bool:
        return self.state in REVIEWED

    def instance(self, instance_id: int) -> StoredInstance:
        for inst in self.instances:
            if inst.id == instance_id:
                return inst
        raise DatasetNotFound(f"image {self.id} has no instance {instance_id}")


@dataclass(frozen=True)
class ImageRow:
    """One line of a paged image list."""

    id: int
    name: str
    state: str
    version: int
    instances: int
    width: int | None
    height: int | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ImagePage:
    images: list[ImageRow]
    next_after: int | None  # pass as ``after`` for the next page; None on the last page
    total: int | None  # images matching the filter (None when not counted)


@dataclass(frozen=True)
class ImageFilter:
    """Which images a list or a navigation step sees: a review state, a class, a score range (any instance in it).

    ``class_id`` and the score bounds look at instances: an image matches when one of its instances
    has that class (and, with bounds, a score within them). Unset fields match everything.
    """

    state: str | None = None
    class_id: int | None = None
    min_score: float | None = None
    max_score: float | None = None

    def __post_init__(self) -> None:
        if self.state is not None and self.state not in STATES:
            raise DatasetError(f"state must be one of {', '.join(STATES)}, got {self.state!r}")
        for name in ("min_score", "max_score"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise DatasetError(f"{name} must be between 0 and 1, got {value}")

    @property
    def on_instances(self) -> bool:
        """True when the filter looks at instances (class, score): then counting matches reads every instance."""
        return self.class_id is not None or self.min_score is not None or self.max_score is not None

    def sql(self) -> tuple[str, list[Any]]:
        """A WHERE clause over ``images`` (always starting with a condition) and its parameters.

        The instance conditions are an ``EXISTS`` on the ``(image_id, class_id, score)`` index, so a step or a
        page (``ORDER BY id LIMIT n``) stops at the first matches instead of reading every instance.
        """
        where, params = ["1 = 1"], []
        if self.state is not None:
            where.append("images.state = ?")
            params.append(self.state)
        inner, inner_params = [], []
        if self.class_id is not None:
            inner.append("i.class_id = ?")
            inner_params.append(self.class_id)
        if self.min_score is not None:
            inner.append("i.score >= ?")
            inner_params.append(self.min_score)
        if self.max_score is not None:
            inner.append("i.score <= ?")
            inner_params.append(self.max_score)
        if inner:
            where.append(f"EXISTS (SELECT 1 FROM instances i WHERE i.image_id = images.id AND {' AND '.join(inner)})")
            params += inner_params
        return " AND ".join(where), params


_INSTANCE_COLUMNS = "id, image_id, class_id, score, origin, x1, y1, x2, y2, area, rle"
_IMAGE_COLUMNS = "id, path, name, width, height, state, version, proposed, error"


class DatasetStore:
    """One dataset folder's store. Thread-safe: one connection, guarded by a lock; changes in short transactions.

    Open with `DatasetStore.open(folder)` (it must exist) or `DatasetStore.create(folder, classes)`.
    """

    def __init__(self, folder: str | Path, *, create: bool = False) -> None:
        self.root = Path(folder).expanduser().resolve()
        self.path = self.root / DB_NAME
        if not self.path.is_file():
            if not create:
                what = "no such folder" if not self.root.exists() else f"not a dataset (no {DB_NAME})"
                raise DatasetError(f"{folder}: {what}; make one with `sam3studio dataset label` or `dataset import`")
            if self.root.exists() and not self.root.is_dir():
                raise DatasetError(f"{folder}: exists and is not a folder")
            self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as exc:
            raise DatasetError(f"{self.path}: not a readable dataset store ({exc})") from None
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._migrate()
        self._classes = self._read_classes()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, folder: str | Path) -> DatasetStore:
        return cls(folder)

    @classmethod
    def create(cls, folder: str | Path, classes: Sequence[str] = ()) -> DatasetStore:
        """Open ``folder``'s store, creating it (and the folder) when missing; ``classes`` not yet known are added."""
        store = cls(folder, create=True)
        store.add_classes(classes)
        return store

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> DatasetStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        """Bring the file to `SCHEMA_VERSION`, one migration per transaction; refuse a newer file."""
        with self._lock:
            version = self._schema_version()
            if version > SCHEMA_VERSION:
                raise DatasetError(f"{self.path}: written by a newer sam3studio (store schema {version}, this "
                                   f"version reads up to {SCHEMA_VERSION}); upgrade sam3studio")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                with self._transaction():
                    for statement in _statements(MIGRATIONS[target - 1]):
                        self._db.execute(statement)
                    self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(target),))
                    if target == 1:
                        self._db.execute("INSERT INTO meta (key, value) VALUES ('created', ?)", (str(time.time()),))

    def _schema_version(self) -> int:
        has_meta = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
        if not has_meta:
            return 0
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    @property
    def schema_version(self) -> int:
        with self._lock:
            return self._schema_version()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on any error); the write lock is taken at the start."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ------------------------------------------------------------------ meta and classes
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def _read_classes(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT name FROM classes ORDER BY id")]

    @property
    def classes(self) -> list[str]:
        """Class names by index."""
        return list(self._classes)

    def add_classes(self, names: Sequence[str]) -> list[str]:
        """Add the names not yet known (after the others, in order); returns the full class list."""
        with self._transaction() as db:
            known = {r[0] for r in db.execute("SELECT name FROM classes")}
            start = int(db.execute("SELECT COALESCE(MAX(id) + 1, 0) FROM classes").fetchone()[0])
            new = [n for n in dict.fromkeys(names) if n not in known]
            if start + len(new) > MAX_CLASSES:
                raise DatasetError(f"a dataset holds at most {MAX_CLASSES} classes")
            db.executemany("INSERT INTO classes (id, name) VALUES (?, ?)", [(start + i, n) for i, n in enumerate(new)])
        self._classes = self._read_classes()
        return self.classes

    def class_id(self, name_or_id: str | int) -> int:
        """The index of a class given by name or index; `DatasetError` for an unknown one."""
        if isinstance(name_or_id, (int, np.integer)) and not isinstance(name_or_id, bool):
            if 0 <= int(name_or_id) < len(self._classes):
                return int(name_or_id)
        elif isinstance(name_or_id, str) and name_or_id in self._classes:
            return self._classes.index(name_or_id)
        raise DatasetError(f"unknown class {name_or_id!r}; the dataset's classes are: {', '.join(self._classes)}")

    # ------------------------------------------------------------------ images: adding, label runs
    def add_images(self, items: Iterable[tuple[str, str]]) -> int:
        """Add ``(absolute path, display name)`` pairs not yet in the store (as unreviewed); returns how many were new."""
        now = time.time()
        rows = [(str(p), str(n), now) for p, n in items]
        with self._transaction() as db:
            before = db.total_changes
            db.executemany("INSERT OR IGNORE INTO images (path, name, updated) VALUES (?, ?, ?)", rows)
            return db.total_changes - before

    def image_id_of(self, path: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT id FROM images WHERE path = ?", (str(path),)).fetchone()
        return int(row[0]) if row else None

    def pending_labels(self, limit: int | None = None) -> list[tuple[int, str]]:
        """``(id, path)`` of images a label run still has to propose for: unreviewed and not yet proposed."""
        sql = "SELECT id, path FROM images WHERE proposed = 0 AND state = 'unreviewed' ORDER BY id"
        with self._lock:
            rows = self._db.execute(sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ()).fetchall()
        return [(int(r[0]), r[1]) for r in rows]

    def set_size(self, image_id: int, width: int, height: int) -> None:
        with self._transaction() as db:
            db.execute("UPDATE images SET width = ?, height = ? WHERE id = ?", (int(width), int(height), image_id))

    def store_proposals(self, image_id: int, width: int, height: int, instances: Sequence[dict[str, Any]],
                        error: str | None = None) -> bool:
        """Store a label run's result for one image, unless it was reviewed or proposed meanwhile (then False).

        Each instance is ``{"class_id", "score", "counts", "box", "area"}`` (see `instance_fields`); ``error``
        records why the image could not be labelled (it stays unproposed, so a later run tries again).
        """
        now = time.time()
        with self._transaction() as db:
            row = db.execute("SELECT proposed, state, width, height FROM images WHERE id = ?", (image_id,)).fetchone()
            if row is None or row["proposed"] or row["state"] != "unreviewed":
                return False
            if error is not None:
                db.execute("UPDATE images SET error = ?, updated = ? WHERE id = ?", (error, now, image_id))
                return True
            if row["width"] is not None and (row["width"], row["height"]) != (width, height):
                raise DatasetError(f"image {image_id} is {width}x{height} now but was {row['width']}x{row['height']}")
            db.executemany(
                "INSERT INTO instances (image_id, class_id, score, origin, x1, y1, x2, y2, area, rle, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(image_id, int(i["class_id"]), i.get("score"), i.get("origin", "model"), *i["box"], int(i["area"]),
                  i.get("counts"), now) for i in instances])
            db.execute("UPDATE images SET proposed = 1, error = NULL, width = ?, height = ?, version = version + 1, "
                       "updated = ? WHERE id = ?", (width, height, now, image_id))
        return True

    def store_imported(self, image_id: int, width: int, height: int, instances: Sequence[dict[str, Any]]) -> bool:
        """Store imported instances for one image, unless it was reviewed or holds imported instances already
        (then False: importing a file twice adds nothing). Sets the image's size; a label run may still propose."""
        now = time.time()
        with self._transaction() as db:
            row = db.execute("SELECT state, width, height FROM images WHERE id = ?", (image_id,)).fetchone()
            if row is None or row["state"] != "unreviewed":
                return False
            if db.execute("SELECT 1 FROM instances WHERE image_id = ? AND origin = 'import' LIMIT 1", (image_id,)).fetchone():
                return False
            if row["width"] is not None and (row["width"], row["height"]) != (width, height):
                raise DatasetError(f"image {image_id} is {width}x{height} in the import but {row['width']}x{row['height']} "
                                   "in the dataset")
            db.executemany(
                "INSERT INTO instances (image_id, class_id, score, origin, x1, y1, x2, y2, area, rle, updated) "
                "VALUES (?, ?, ?, 'import', ?, ?, ?, ?, ?, ?, ?)",
                [(image_id, int(i["class_id"]), i.get("score"), *i["box"], int(i["area"]), i.get("counts"), now)
                 for i in instances])
            db.execute("UPDATE images SET width = ?, height = ?, version = version + 1, updated = ? WHERE id = ?",
                       (width, height, now, image_id))
        return True

    # ------------------------------------------------------------------ reading
    def _instances(self, image_ids: Sequence[int], sizes: dict[int, tuple[int, int]]) -> dict[int, list[StoredInstance]]:
        out: dict[int, list[StoredInstance]] = {i: [] for i in image_ids}
        for start in range(0, len(image_ids), 500):
            chunk = list(image_ids[start:start + 500])
            marks = ", ".join("?" for _ in chunk)
            rows = self._db.execute(f"SELECT {_INSTANCE_COLUMNS} FROM instances WHERE image_id IN ({marks}) "  # noqa: S608
                                    "ORDER BY image_id, id", chunk).fetchall()
            for r in rows:
                h, w = sizes[r["image_id"]]
                out[r["image_id"]].append(StoredInstance(
                    id=r["id"], class_id=r["class_id"], class_name=self._classes[r["class_id"]], score=r["score"],
                    origin=r["origin"], box=(r["x1"], r["y1"], r["x2"], r["y2"]), area=r["area"], counts=r["rle"],
                    height=h, width=w))
        return out

    def _image_rows(self, rows: Sequence[sqlite3.Row]) -> list[StoredImage]:
        sizes = {r["id"]: (r["height"] or 0, r["width"] or 0) for r in rows}
        instances = self._instances([r["id"] for r in rows], sizes)
        return [StoredImage(id=r["id"], path=r["path"], name=r["name"], width=r["width"], height=r["height"],
                            state=r["state"], version=r["version"], proposed=bool(r["proposed"]), error=r["error"],
                            instances=instances[r["id"]]) for r in rows]

    def image(self, image_id: int) -> StoredImage:
        """One image with its instances; `DatasetNotFound` when there is none with this id."""
        with self._lock:
            row = self._db.execute(f"SELECT {_IMAGE_COLUMNS} FROM images WHERE id = ?", (int(image_id),)).fetchone()  # noqa: S608
            if row is None:
                raise DatasetNotFound(f"the dataset has no image {image_id}")
            return self._image_rows([row])[0]

    def list_images(self, flt: ImageFilter | None = None, after: int = 0, limit: int = 50,
                    with_total: bool | None = None) -> ImagePage:
        """One page of the images matching ``flt``, in id order, after image id ``after``.

        ``total`` (the images matching) is counted when ``with_total``; by default only for filters that do not
        look at instances (for those, counting reads every instance: half a second at 100 000 images).
        """
        if not 1 <= limit <= MAX_PAGE:
            raise DatasetError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
        flt = flt or ImageFilter()
        where, params = flt.sql()
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, name, state, version, width, height, "  # noqa: S608 - the clause is built from fixed text
                f"(SELECT COUNT(*) FROM instances WHERE image_id = images.id) AS n "
                f"FROM images WHERE {where} AND id > ? ORDER BY id LIMIT ?", [*params, int(after), limit + 1]).fetchall()
        count = (not flt.on_instances) if with_total is None else with_total
        total = self.count(flt) if count else None
        more = len(rows) > limit
        rows = rows[:limit]
        page = [ImageRow(id=r["id"], name=r["name"], state=r["state"], version=r["version"], instances=r["n"],
                         width=r["width"], height=r["height"]) for r in rows]
        return ImagePage(page, page[-1].id if more else None, total)

    def count(self, flt: ImageFilter | None = None) -> int:
        where, params = (flt or ImageFilter()).sql()
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(*) FROM images WHERE {where}", params).fetchone()[0])  # noqa: S608

    def position(self, image_id: int, flt: ImageFilter | None = None) -> int:
        """How many images matching ``flt`` come up to and including ``image_id`` (1 for the first)."""
        where, params = (flt or ImageFilter()).sql()
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(*) FROM images WHERE {where} AND id <= ?",  # noqa: S608
                                        [*params, int(image_id)]).fetchone()[0])

    def progress(self) -> dict[str, int]:
        """Images per review state, plus ``total`` and ``reviewed`` (accepted + corrected)."""
        with self._lock:
            counts = dict.fromkeys(STATES, 0)
            counts.update({r[0]: int(r[1]) for r in self._db.execute("SELECT state, COUNT(*) FROM images GROUP BY state")})
        counts["total"] = sum(counts[s] for s in STATES)
        counts["reviewed"] = sum(counts[s] for s in REVIEWED)
        return counts

    def step(self, image_id: int | None, direction: int, flt: ImageFilter | None = None, wrap: bool = False) -> int | None:
        """The id of the next (``direction`` 1) or previous (-1) image matching ``flt`` from ``image_id``
        (None: from the start or the end); with ``wrap``, past the end it starts again at the other end."""
        where, params = (flt or ImageFilter()).sql()
        op, order = (">", "ASC") if direction > 0 else ("<", "DESC")
        start = image_id if image_id is not None else (0 if direction > 0 else 2**62)
        with self._lock:
            row = self._db.execute(f"SELECT id FROM images WHERE {where} AND id {op} ? ORDER BY id {order} LIMIT 1",  # noqa: S608
                                   [*params, int(start)]).fetchone()
            if row is None and wrap and image_id is not None:
                return self.step(None, direction, flt)
        return int(row[0]) if row else None

    def image_paths(self, states: Sequence[str] | None = None) -> list[tuple[int, str]]:
        """``(id, path)`` of every image (in the given review states), in id order: what an export selects."""
        cond = f" WHERE state IN ({', '.join('?' for _ in states)})" if states is not None else ""
        with self._lock:
            rows = self._db.execute(f"SELECT id, path FROM images{cond} ORDER BY id", list(states or ())).fetchall()  # noqa: S608
        return [(int(r[0]), r[1]) for r in rows]

    def iter_images(self, states: Sequence[str] | None = None, batch: int = 500,
                    ids: Sequence[int] | None = None) -> Iterator[StoredImage]:
        """Every image (in the given review states, or with the given ids) with its instances, in id order,
        ``batch`` at a time."""
        if ids is not None:
            wanted = sorted(int(i) for i in ids)
            for start in range(0, len(wanted), batch):
                chunk = wanted[start:start + batch]
                with self._lock:
                    rows = self._db.execute(f"SELECT {_IMAGE_COLUMNS} FROM images WHERE id IN "  # noqa: S608
                                            f"({', '.join('?' for _ in chunk)}) ORDER BY id", chunk).fetchall()
                    images = self._image_rows(rows)
                yield from images
            return
        after = 0
        cond, params = "", []
        if states is not None:
            cond = f"AND state IN ({', '.join('?' for _ in states)})"
            params = list(states)
        while True:
            with self._lock:
                rows = self._db.execute(f"SELECT {_IMAGE_COLUMNS} FROM images WHERE id > ? {cond} ORDER BY id LIMIT ?",  # noqa: S608
                                        [after, *params, batch]).fetchall()
                images = self._image_rows(rows)
            if not images:
                return
            yield from images
            after = images[-1].id

    # ------------------------------------------------------------------ review changes (version-checked)
    @contextlib.contextmanager
    def _change(self, image_id: int, version: int | None) -> Iterator[tuple[sqlite3.Connection, sqlite3.Row]]:
        """One version-checked change to an image: yields the connection and the image row inside the
        transaction; the image's version is incremented when the block ends without an error."""
        with self._transaction() as db:
            row = db.execute("SELECT id, state, version, width, height FROM images WHERE id = ?", (int(image_id),)).fetchone()
            if row is None:
                raise DatasetNotFound(f"the dataset has no image {image_id}")
            if version is not None and int(version) != row["version"]:
                raise VersionConflict(int(image_id), int(version), row["version"])
            yield db, row
            db.execute("UPDATE images SET version = version + 1, updated = ? WHERE id = ?", (time.time(), int(image_id)))

    @staticmethod
    def _corrected(db: sqlite3.Connection, image_id: int) -> None:
        db.execute("UPDATE images SET state = 'corrected' WHERE id = ?", (image_id,))

    def instance_fields(self, mask: np.ndarray | None, width: int, height: int,
                        box: Sequence[float] | None = None) -> dict[str, Any]:
        """``counts``, ``box`` and ``area`` of a new or changed instance: from its mask, or a box alone."""
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (height, width):
                raise DatasetError(f"the mask is {mask.shape[1]}x{mask.shape[0]}, the image is {width}x{height}")
            if not mask.any():
                raise DatasetError("the mask is empty")
            return {"counts": mask_to_rle(mask)["counts"], "box": mask_box(mask), "area": int(mask.sum())}
        if box is None:
            raise DatasetError("an instance needs a mask or a box")
        x1, y1, x2, y2 = (float(v) for v in box)
        x1, x2 = sorted((min(max(x1, 0.0), width), min(max(x2, 0.0), width)))
        y1, y2 = sorted((min(max(y1, 0.0), height), min(max(y2, 0.0), height)))
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            raise DatasetError(f"the box {list(box)} has no area inside the {width}x{height} image")
        return {"counts": None, "box": (x1, y1, x2, y2), "area": int(round((x2 - x1) * (y2 - y1)))}

    def add_instance(self, image_id: int, version: int | None, class_id: str | int, *, mask: np.ndarray | None = None,
                     box: Sequence[float] | None = None, score: float | None = None, origin: str = "api") -> StoredImage:
        """Add an instance (a mask, or a box alone); the image becomes ``corrected``. Returns the image after."""
        cid = self.class_id(class_id)
        _check_origin(origin)
        with self._change(image_id, version) as (db, row):
            width, height = _size_of(row)
            f = self.instance_fields(mask, width, height, box)
            db.execute("INSERT INTO instances (image_id, class_id, score, origin, x1, y1, x2, y2, area, rle, updated) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (int(image_id), cid, score, origin, *f["box"], f["area"], f["counts"], time.time()))
            self._corrected(db, int(image_id))
        return self.image(image_id)

    def add_instances(self, image_id: int, version: int | None, items: Sequence[dict[str, Any]]) -> StoredImage:
        """Add several instances in one change: each ``{"class_id", "mask" | "box", "score", "origin"}``."""
        with self._change(image_id, version) as (db, row):
            width, height = _size_of(row)
            for item in items:
                cid = self.class_id(item["class_id"])
                _check_origin(item.get("origin", "api"))
                f = self.instance_fields(item.get("mask"), width, height, item.get("box"))
                db.execute("INSERT INTO instances (image_id, class_id, score, origin, x1, y1, x2, y2, area, rle, updated) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (int(image_id), cid, item.get("score"), item.get("origin", "api"), *f["box"], f["area"],
                            f["counts"], time.time()))
            if items:
                self._corrected(db, int(image_id))
        return self.image(image_id)

    def update_instance(self, image_id: int, instance_id: int, version: int | None, *, class_id: str | int | None = None,
                        mask: np.ndarray | None = None, box: Sequence[float] | None = None,
                        origin: str | None = None) -> StoredImage:
        """Change an instance's class and/or its mask (or box); the image becomes ``corrected``."""
        cid = self.class_id(class_id) if class_id is not None else None
        if origin is not None:
            _check_origin(origin)
        with self._change(image_id, version) as (db, row):
            self._need_instance(db, image_id, instance_id)
            sets: dict[str, Any] = {}
            if cid is not None:
                sets["class_id"] = cid
            if mask is not None or box is not None:
                width, height = _size_of(row)
                f = self.instance_fields(mask, width, height, box)
                sets.update(x1=f["box"][0], y1=f["box"][1], x2=f["box"][2], y2=f["box"][3], area=f["area"], rle=f["counts"])
                sets["origin"] = origin or "api"
            if not sets:
                raise DatasetError("nothing to change: give a class, a mask or a box")
            sets["updated"] = time.time()
            db.execute(f"UPDATE instances SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?",  # noqa: S608 - fixed names
                       (*sets.values(), int(instance_id)))
            self._corrected(db, int(image_id))
        return self.image(image_id)

    def delete_instance(self, image_id: int, instance_id: int, version: int | None) -> StoredImage:
        """Delete an instance; the image becomes ``corrected``."""
        with self._change(image_id, version) as (db, _):
            self._need_instance(db, image_id, instance_id)
            db.execute("DELETE FROM instances WHERE id = ?", (int(instance_id),))
            self._corrected(db, int(image_id))
        return self.image(image_id)

    def set_state(self, image_id: int, version: int | None, state: str) -> StoredImage:
        """Set the review state. ``accepted`` keeps an image that was ``corrected`` corrected (its instances
        were changed by a person and then accepted); ``unreviewed`` and ``skipped`` are set as given."""
        if state not in STATES:
            raise DatasetError(f"state must be one of {', '.join(STATES)}, got {state!r}")
        with self._change(image_id, version) as (db, row):
            new = "corrected" if state == "accepted" and row["state"] == "corrected" else state
            db.execute("UPDATE images SET state = ? WHERE id = ?", (new, int(image_id)))
        return self.image(image_id)

    def accept(self, image_id: int, version: int | None) -> StoredImage:
        return self.set_state(image_id, version, "accepted")

    @staticmethod
    def _need_instance(db: sqlite3.Connection, image_id: int, instance_id: int) -> None:
        row = db.execute("SELECT image_id FROM instances WHERE id = ?", (int(instance_id),)).fetchone()
        if row is None or row[0] != int(image_id):
            raise DatasetNotFound(f"image {image_id} has no instance {instance_id}")


def _size_of(row: sqlite3.Row) -> tuple[int, int]:
    if row["width"] is None or row["height"] is None:
        raise DatasetError(f"image {row['id']} has not been read yet (its size is unknown): label or import it first")
    return int(row["width"]), int(row["height"])


def _check_origin(origin: str) -> None:
    if origin not in ORIGINS:
        raise DatasetError(f"origin must be one of {', '.join(ORIGINS)}, got {origin!r}")


def _statements(script: str) -> list[str]:
    """A migration script's statements (``executescript`` would commit on its own, outside our transaction)."""
    return [s.strip() for s in script.split(";") if s.strip()]
