"""The video job store: one SQLite file (WAL) under the data dir, shared by the API, the UI and the runner.

The file carries a schema version (``PRAGMA user_version``) and is migrated forward when opened:

- version 1: the first schema (no ``user_version``; states queued, running, done, failed, cancelled).
- version 2: tombstone states ``expired`` and ``deleted`` (a swept or deleted job keeps a small row so
  its id answers 410, not 404) and a ``finished`` time (when the job reached done, failed or cancelled,
  from which its retention counts).

SQLite cannot change a CHECK constraint in place, so a migration that changes the states rebuilds the
table inside one transaction. A file written by a newer sam3studio (a higher version) is refused.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["ACTIVE_STATES", "DB_NAME", "FINISHED_STATES", "GONE_STATES", "JobStore", "SCHEMA_VERSION", "STATES"]

STATES = ("queued", "running", "done", "failed", "cancelled", "expired", "deleted")
ACTIVE_STATES = ("queued", "running")
FINISHED_STATES = ("done", "failed", "cancelled")  # kept for the retention period, then swept
GONE_STATES = ("expired", "deleted")  # tombstones: files removed, the id answers 410
DB_NAME = "jobs.sqlite3"
SCHEMA_VERSION = 2
_COLUMNS = ("id", "state", "created", "updated", "finished", "params", "progress_done", "progress_total", "error",
            "deadline")


def _create_v2(db: sqlite3.Connection, table: str = "jobs") -> None:
    states = ", ".join(f"'{s}'" for s in STATES)
    db.execute(
        f"CREATE TABLE {table} ("  # noqa: S608 - fixed names
        " id TEXT PRIMARY KEY,"
        f" state TEXT NOT NULL CHECK (state IN ({states})),"
        " created REAL NOT NULL, updated REAL NOT NULL, finished REAL, params TEXT NOT NULL DEFAULT '{}',"
        " progress_done INTEGER NOT NULL DEFAULT 0, progress_total INTEGER,"
        " error TEXT, deadline REAL)")


def _index(db: sqlite3.Connection) -> None:
    db.execute("CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created)")


def _v1_to_v2(db: sqlite3.Connection) -> None:
    """Rebuild the table with the tombstone states and the ``finished`` column."""
    _create_v2(db, "jobs_v2")
    db.execute("INSERT INTO jobs_v2 (id, state, created, updated, finished, params, progress_done, progress_total,"
               " error, deadline) SELECT id, state, created, updated,"
               " CASE WHEN state IN ('done', 'failed', 'cancelled') THEN updated END,"
               " params, progress_done, progress_total, error, deadline FROM jobs")
    db.execute("DROP TABLE jobs")
    db.execute("ALTER TABLE jobs_v2 RENAME TO jobs")
    _index(db)


# MIGRATIONS[v] takes a store at version v to version v + 1.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _v1_to_v2}


def _migrate(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")  # one writer migrates; another process opening the file waits
    try:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        has_table = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").fetchone()
        if version == 0 and has_table is None:  # a new file: the current schema at once
            _create_v2(db)
            _index(db)
            version = SCHEMA_VERSION
        elif version == 0:  # the first schema had no version number
            version = 1
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"the job store was written by a newer sam3studio (schema {version}; this one "
                               f"reads up to {SCHEMA_VERSION}); upgrade sam3studio or use another data dir")
        while version < SCHEMA_VERSION:
            MIGRATIONS[version](db)
            version += 1
        db.execute(f"PRAGMA user_version = {version}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class JobStore:
    """Jobs in one SQLite file (WAL). Thread-safe: one connection guarded by a lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            _migrate(self._db)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @staticmethod
    def _row(row: sqlite3.Row | None) -> dict[str, Any] | None:
        if row is None:
            return None
        job = dict(row)
        job["params"] = json.loads(job["params"] or "{}")
        return job

    def create(self, params: dict[str, Any], *, job_id: str | None = None, state: str = "queued",
               progress_total: int | None = None) -> dict[str, Any]:
        now = time.time()
        job_id = job_id or uuid.uuid4().hex
        with self._lock:
            self._db.execute("INSERT INTO jobs (id, state, created, updated, params, progress_total) VALUES (?, ?, ?, ?, ?, ?)",
                             (job_id, state, now, now, json.dumps(params), progress_total))
        return self.get(job_id)  # type: ignore[return-value]

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._row(self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def update(self, job_id: str, *, only_from: Sequence[str] | None = None, **fields: Any) -> bool:
        """Set ``fields``; with ``only_from``, only while the job is in one of those states (compare and set).

        Returns whether a row changed. Moving to a finished state stamps ``finished``.
        """
        unknown = set(fields) - set(_COLUMNS[1:])
        if unknown:
            raise ValueError(f"unknown job field(s): {', '.join(sorted(unknown))}")
        if "params" in fields:
            fields["params"] = json.dumps(fields["params"])
        fields["updated"] = time.time()
        if fields.get("state") in FINISHED_STATES and "finished" not in fields:
            fields["finished"] = fields["updated"]
        sets = ", ".join(f"{k} = ?" for k in fields)
        where, args = "id = ?", [job_id]
        if only_from is not None:
            where += f" AND state IN ({', '.join('?' for _ in only_from)})"
            args.extend(only_from)
        with self._lock:
            cur = self._db.execute(f"UPDATE jobs SET {sets} WHERE {where}", (*fields.values(), *args))  # noqa: S608
            return cur.rowcount > 0

    def tombstone(self, job_id: str, state: str, reason: str) -> None:
        """Keep only a small row for a job whose files are gone: its id answers 410 with ``reason``."""
        if state not in GONE_STATES:
            raise ValueError(f"not a tombstone state: {state}")
        self.update(job_id, state=state, error=reason, params={}, deadline=None)

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def in_states(self, states: Sequence[str]) -> list[dict[str, Any]]:
        marks = ", ".join("?" for _ in states)
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY created", tuple(states)).fetchall()  # noqa: S608
        return [self._row(r) for r in rows]  # type: ignore[misc]

    def finished_before(self, when: float) -> list[dict[str, Any]]:
        """Finished jobs (done, failed, cancelled) that finished before ``when``: due for the sweep."""
        marks = ", ".join("?" for _ in FINISHED_STATES)
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM jobs WHERE state IN ({marks}) AND COALESCE(finished, updated) < ?"  # noqa: S608
                                    " ORDER BY created", (*FINISHED_STATES, when)).fetchall()
        return [self._row(r) for r in rows]  # type: ignore[misc]

    def forget_tombstones(self, before: float) -> int:
        """Delete tombstone rows last touched before ``before``; returns how many went."""
        marks = ", ".join("?" for _ in GONE_STATES)
        with self._lock:
            cur = self._db.execute(f"DELETE FROM jobs WHERE state IN ({marks}) AND updated < ?", (*GONE_STATES, before))  # noqa: S608
            return cur.rowcount

    def ids(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT id FROM jobs WHERE state NOT IN (?, ?)", GONE_STATES)}

    def count(self, states: Sequence[str] = ACTIVE_STATES) -> int:
        marks = ", ".join("?" for _ in states)
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(*) FROM jobs WHERE state IN ({marks})", tuple(states)).fetchone()[0])  # noqa: S608
