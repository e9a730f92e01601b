"""The output folder of a batch job: deterministic shards, atomic writes, resume.

Layout of ``--out DIR``::

    job.json                   settings + input fingerprint; a resume must match them
    shard-00000.jsonl          one result record per image of shard 0 (or shard-00000.parquet)
    shard-00000.errors.jsonl   one error record per failed image of shard 0 (only when there are failures)

Shard ``i`` holds the items ``[i * shard_size, (i + 1) * shard_size)`` of the sorted input list. A
shard is done when its result file exists: the errors file is written first and the result file last,
each to a temporary name then renamed (atomic on POSIX), so a crash never leaves a half shard that
looks done.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from sam3studio.batch.sources import BatchInputError
from sam3studio.io.files import atomic_write as _atomic_write

__all__ = ["FORMATS", "JobDir", "plan_shards"]

FORMATS = ("jsonl", "parquet")
JOB_FILE = "job.json"
JOB_VERSION = 1
# Recorded in job.json for people, not compared on resume: the same inputs may be reached by another
# path, and a new read limit or timeout cannot change a record that was already written.
_INFO_KEYS = frozenset({"source", "limits"})


def plan_shards(n_items: int, shard_size: int) -> list[range]:
    """Item index ranges of each shard; the last one may be short."""
    if shard_size < 1:
        raise ValueError(f"shard size must be at least 1, got {shard_size}")
    return [range(start, min(start + shard_size, n_items)) for start in range(0, n_items, shard_size)]


def _write_lines(lines: Iterable[str]) -> Callable[[IO[bytes]], None]:
    def write(fh: IO[bytes]) -> None:
        for line in lines:
            fh.write(line.encode("utf-8"))
            fh.write(b"\n")

    return write


def _parquet_writer(lines: list[str]) -> Callable[[IO[bytes]], None]:
    """Flat, schema-stable Parquet: a few query-friendly columns plus the full record as JSON text.

    Nested instance lists would get a different inferred schema in a shard with no detections, so
    the nested part stays a JSON string that any engine (DuckDB, Spark, pandas) can parse.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [json.loads(line) for line in lines]
    schema = pa.schema([("index", pa.int64()), ("source", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
                        ("num_instances", pa.int32()), ("record", pa.string())])
    table = pa.table({
        "index": [r["index"] for r in records],
        "source": [r["source"] for r in records],
        "width": [r["width"] for r in records],
        "height": [r["height"] for r in records],
        "num_instances": [len(r["instances"]) for r in records],
        "record": lines,
    }, schema=schema)

    def write(fh: IO[bytes]) -> None:
        pq.write_table(table, fh)

    return write


class JobDir:
    """The ``--out`` folder: which shards are done, and writing one shard."""

    def __init__(self, root: Path, fmt: str = "jsonl") -> None:
        if fmt not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        self.root = root
        self.fmt = fmt

    # ------------------------------------------------------------------ names
    def shard_path(self, shard: int) -> Path:
        return self.root / f"shard-{shard:05d}.{self.fmt}"

    def errors_path(self, shard: int) -> Path:
        return self.root / f"shard-{shard:05d}.errors.jsonl"

    def is_done(self, shard: int) -> bool:
        return self.shard_path(shard).is_file()

    # ------------------------------------------------------------------ job settings
    def prepare(self, settings: dict[str, Any], overwrite: bool = False) -> None:
        """Create the folder and record the job; refuse to resume a job whose settings or inputs differ.

        Mixing shards made with two prompt lists or two input lists would silently corrupt the output,
        so a mismatch is a usage error (use another folder, or ``--overwrite`` to start again).
        """
        if self.root.exists() and not self.root.is_dir():
            raise BatchInputError(f"--out {self.root}: exists and is not a folder")
        self.root.mkdir(parents=True, exist_ok=True)
        job = {"job_version": JOB_VERSION, "format": self.fmt, **settings}
        path = self.root / JOB_FILE
        if overwrite:
            self._remove_outputs()
        elif path.is_file():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise BatchInputError(f"{path}: unreadable job file; use another --out folder, "
                                      "or --overwrite to start again") from None
            changed = [k for k in job if k not in _INFO_KEYS and old.get(k) != job[k]]
            if changed:
                detail = "; ".join(f"{k}: {old.get(k)!r} -> {job[k]!r}" for k in changed[:3])
                raise BatchInputError(f"--out {self.root} holds a batch job with other settings or inputs ({detail}); "
                                      "use another --out folder, or --overwrite to start again")
        else:
            stale = sorted(self.root.glob("shard-*"))
            if stale:
                raise BatchInputError(f"--out {self.root} holds shard files but no {JOB_FILE}; "
                                      "use another --out folder, or --overwrite to start again")
        for tmp in self.root.glob(".shard-*.tmp"):  # left by an interrupted run
            tmp.unlink(missing_ok=True)
        _atomic_write(path, lambda fh: fh.write(json.dumps(job, indent=2, ensure_ascii=False).encode("utf-8")))

    def _remove_outputs(self) -> None:
        for pattern in ("shard-*.jsonl", "shard-*.parquet", ".shard-*.tmp", JOB_FILE):
            for p in self.root.glob(pattern):
                p.unlink(missing_ok=True)

    # ------------------------------------------------------------------ writing
    def write_shard(self, shard: int, ok_lines: list[str], error_lines: list[str]) -> None:
        """Write the errors file (or remove a stale one), then the result file last: its presence means done."""
        errors = self.errors_path(shard)
        if error_lines:
            _atomic_write(errors, _write_lines(error_lines))
        else:
            errors.unlink(missing_ok=True)
        writer = _parquet_writer(ok_lines) if self.fmt == "parquet" else _write_lines(ok_lines)
        _atomic_write(self.shard_path(shard), writer)

    def count_errors(self, shards: Iterable[int]) -> int:
        """Failed images recorded for these shards (done ones only), for the end-of-job summary."""
        total = 0
        for shard in shards:
            path = self.errors_path(shard)
            if self.is_done(shard) and path.is_file():
                with open(path, "rb") as fh:
                    total += sum(1 for line in fh if line.strip())
        return total
