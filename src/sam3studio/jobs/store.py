"""The video job store: one SQLite file (WAL) under the data dir, shared by the API, the UI and the runner."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["ACTIVE_STATES", "DB_NAME", "JobStore", "STATES"]

STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE_STATES = ("queued", "running")
DB_NAME = "jobs.sqlite3"
_COLUMNS = ("id", "state", "created", "updated", "params", "progress_done", "progress_total", "error", "deadline")


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
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS jobs ("
                " id TEXT PRIMARY KEY,"
                " state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),"
                " created REAL NOT NULL, updated REAL NOT NULL, params TEXT NOT NULL DEFAULT '{}',"
                " progress_done INTEGER NOT NULL DEFAULT 0, progress_total INTEGER,"
                " error TEXT, deadline REAL)")
            self._db.execute("CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

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

    def update(self, job_id: str, **fields: Any) -> None:
        unknown = set(fields) - set(_COLUMNS[1:])
        if unknown:
            raise ValueError(f"unknown job field(s): {', '.join(sorted(unknown))}")
        if "params" in fields:
            fields["params"] = json.dumps(fields["params"])
        fields["updated"] = time.time()
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*fields.values(), job_id))  # noqa: S608 - fixed names

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def in_states(self, states: Sequence[str]) -> list[dict[str, Any]]:
        marks = ", ".join("?" for _ in states)
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY created", tuple(states)).fetchall()  # noqa: S608
        return [self._row(r) for r in rows]  # type: ignore[misc]

    def count(self, states: Sequence[str] = ACTIVE_STATES) -> int:
        marks = ", ".join("?" for _ in states)
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(*) FROM jobs WHERE state IN ({marks})", tuple(states)).fetchone()[0])  # noqa: S608
