"""Atomic file writes: readers (and resumed runs) never see half a file."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_json"]


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through a temporary file in the same directory, fsync it, then ``os.replace`` it.

    Readers never see a partial file; on any error the temporary file is removed.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_json(path: Path, data: Any, *, indent: int | None = 2) -> None:
    """`atomic_write` of ``data`` as UTF-8 JSON (non-ASCII kept as is) with a final newline."""
    text = json.dumps(data, ensure_ascii=False, indent=indent) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
