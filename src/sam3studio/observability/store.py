"""The drift store: hourly binned counts per prompt in one SQLite file (``data_dir/drift.sqlite3``, WAL).

`DriftStore.add` only counts in memory, under a lock: a request never waits for the disk. A background
thread writes what was counted every ``flush_s`` seconds in one transaction (and `close` writes the rest),
adding to the rows of that hour; rows older than the retention are deleted once an hour. At most
``max_prompts_per_hour`` distinct prompts get rows per hour; later ones are counted under `OTHER`, so
neither the file nor the memory grows with the number of distinct prompts clients send.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import defaultdict
from pathlib import Path

from sam3studio.observability.drift import METRICS, OTHER, Distributions, bin_index

log = logging.getLogger(__name__)

__all__ = ["DB_NAME", "DriftStore"]

DB_NAME = "drift.sqlite3"
HOUR = 3600


class DriftStore:
    def __init__(self, path: str | Path, *, retention_hours: float = 30 * 24, max_prompts_per_hour: int = 1000,
                 flush_s: float = 10.0) -> None:
        self.path = Path(path)
        self.retention_hours, self.max_prompts_per_hour, self.flush_s = retention_hours, max_prompts_per_hour, flush_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db_lock = threading.Lock()
        with self._db_lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS drift (hour INTEGER NOT NULL, prompt TEXT NOT NULL,"
                             " metric TEXT NOT NULL, bin INTEGER NOT NULL, n INTEGER NOT NULL,"
                             " PRIMARY KEY (hour, prompt, metric, bin)) WITHOUT ROWID")
        self._lock = threading.Lock()  # the in-memory counts
        self._pending: dict[tuple[int, str, str, int], int] = defaultdict(int)
        self._known: dict[int, set[str]] = {}  # hour -> prompts with rows (stored or pending)
        self._pruned_hour = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ writing
    def _prompts_of(self, hour: int) -> set[str]:
        known = self._known.get(hour)
        if known is None:
            with self._db_lock:
                rows = self._db.execute("SELECT DISTINCT prompt FROM drift WHERE hour = ?", (hour,)).fetchall()
            known = self._known[hour] = {r[0] for r in rows}
            for old in [h for h in self._known if h < hour - 1]:
                del self._known[old]
        return known

    def add(self, prompt: str, presence: float, top_score: float, instances: int, when: float | None = None) -> None:
        """Count one image's answer for ``prompt`` (already normalised) in the hour of ``when`` (now)."""
        hour = int((time.time() if when is None else when) // HOUR)
        values = (presence, top_score, instances)
        with self._lock:
            known = self._prompts_of(hour)
            if prompt not in known:
                if len(known) >= self.max_prompts_per_hour:
                    prompt = OTHER
                known.add(prompt)
            for metric, value in zip(METRICS, values, strict=True):
                self._pending[(hour, prompt, metric, bin_index(metric, value))] += 1
        if self._thread is None and self.flush_s > 0:
            self.start()

    def flush(self) -> int:
        """Write what was counted since the last flush; return how many bin rows were touched."""
        with self._lock:
            pending, self._pending = self._pending, defaultdict(int)
        now_hour = int(time.time() // HOUR)
        with self._db_lock:
            if pending:
                self._db.execute("BEGIN")
                try:
                    self._db.executemany(
                        "INSERT INTO drift (hour, prompt, metric, bin, n) VALUES (?, ?, ?, ?, ?)"
                        " ON CONFLICT (hour, prompt, metric, bin) DO UPDATE SET n = n + excluded.n",
                        [(*key, n) for key, n in pending.items()])
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            if now_hour != self._pruned_hour:
                self._db.execute("DELETE FROM drift WHERE hour < ?", (now_hour - int(self.retention_hours),))
                self._pruned_hour = now_hour
        return len(pending)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
            except Exception:  # a full disk must not end the thread: the counts are retried next time
                log.exception("could not write drift counts to %s", self.path)

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="sam3studio-drift-flush", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the writer, write the rest, close the file."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=10)
        try:
            self.flush()
        finally:
            with self._db_lock:
                self._db.close()

    # ------------------------------------------------------------------ reading
    def window(self, start: float, end: float) -> Distributions:
        """The counts of the hours that begin in [start, end) (Unix times): windows that meet share no hour."""
        first, last = int(-(-start // HOUR)), int(-(-end // HOUR))
        with self._db_lock:
            rows = self._db.execute("SELECT prompt, metric, bin, SUM(n) FROM drift WHERE hour >= ? AND hour < ?"
                                    " GROUP BY prompt, metric, bin", (first, last)).fetchall()
        out = Distributions()
        for prompt, metric, index, n in rows:
            if metric in METRICS:
                out.add_bin(prompt, metric, int(index), int(n))
        return out

    def span(self) -> tuple[float, float] | None:
        """(start of the first stored hour, end of the last), or None when the store is empty."""
        with self._db_lock:
            first, last = self._db.execute("SELECT MIN(hour), MAX(hour) FROM drift").fetchone()
        return None if first is None else (first * HOUR, (last + 1) * HOUR)
