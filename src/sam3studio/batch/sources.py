"""What a batch job reads: listing SOURCE into a sorted input list, and reading one input's bytes.

Listing runs on the driver (both engines), because shard boundaries depend on the *global* sorted
order: the same SOURCE must always give the same shards, or a resumed job would mix two layouts.
Reading one input (a file or a URL) runs wherever the work runs (the driver in the local engine, a
Ray worker in the Ray engine), so every item is a self-contained string: an absolute path or a URL.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sam3studio.errors import InputError, InputTooLargeError, install_hint
from sam3studio.io.images import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, is_image_path, load_image

__all__ = ["BatchInputError", "ReadLimits", "list_inputs", "inputs_digest", "is_url", "read_item", "decode_item"]

PARQUET_SUFFIXES = frozenset({".parquet", ".pq"})
URL_SCHEMES = ("http://", "https://")


class BatchInputError(InputError):
    """SOURCE itself cannot be listed (missing, empty, unreadable manifest): a usage error, not a per-image one."""


@dataclass(frozen=True)
class ReadLimits:
    """Per-image guards; plain data so it pickles to Ray workers."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    url_timeout: float = 10.0
    allow_private_urls: bool = False


def is_url(item: str) -> bool:
    return item.lower().startswith(URL_SCHEMES)


def _normalise(entry: str, base: Path) -> str:
    """A manifest entry -> an item: URLs stay as written, paths become absolute (workers have another cwd)."""
    if is_url(entry) or "://" in entry:  # other schemes are kept so that reading them reports a clear error
        return entry
    path = Path(entry).expanduser()
    if not path.is_absolute():
        path = base / path
    return os.path.abspath(path)  # abspath, not resolve(): keep the user's symlinked layout visible in records


def _list_folder(folder: Path) -> list[str]:
    return [os.path.abspath(p) for p in folder.rglob("*") if p.is_file() and is_image_path(p)]


def _list_text(manifest: Path) -> list[str]:
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise BatchInputError(f"{manifest}: not a UTF-8 text manifest (expected one path or URL per line, "
                              "or a .parquet file with a 'path' column)") from None
    lines = (line.strip() for line in text.splitlines())
    return [_normalise(line, manifest.parent) for line in lines if line and not line.startswith("#")]


def _list_parquet(manifest: Path) -> list[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise BatchInputError(f"reading a Parquet manifest needs pyarrow: {install_hint('ray')}") from None
    try:
        schema = pq.read_schema(manifest)
        if "path" not in schema.names:
            raise BatchInputError(f"{manifest}: Parquet manifest has no 'path' column (columns: {', '.join(schema.names)})")
        column = pq.read_table(manifest, columns=["path"]).column("path")
    except BatchInputError:
        raise
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...: the message is what the user needs
        raise BatchInputError(f"{manifest}: not a readable Parquet file ({exc})") from None
    values = column.to_pylist()
    if any(v is not None and not isinstance(v, str) for v in values):
        raise BatchInputError(f"{manifest}: the 'path' column must hold strings, not {column.type}")
    return [_normalise(v.strip(), manifest.parent) for v in values if v and v.strip()]


def list_inputs(source: Path) -> list[str]:
    """SOURCE (a folder, a text manifest or a Parquet manifest) -> sorted, de-duplicated items.

    A folder is searched recursively for image files. A text manifest holds one path or URL per
    line (blank lines and ``#`` comments skipped); a ``.parquet``/``.pq`` manifest has a ``path``
    column. Relative manifest paths are relative to the manifest's folder. A single image file is a
    one-item job. Raises `BatchInputError` when SOURCE is missing or yields nothing.
    """
    if source.is_dir():
        items = _list_folder(source)
        what = "folder contains no images (jpg, png, webp, bmp, tiff, gif)"
    elif source.is_file():
        if source.suffix.lower() in PARQUET_SUFFIXES:
            items = _list_parquet(source)
        elif is_image_path(source):
            items = [os.path.abspath(source)]
        else:
            items = _list_text(source)
        what = "manifest lists no inputs"
    else:
        raise BatchInputError(f"{source}: no such file or folder")
    items = sorted(set(items))
    if not items:
        raise BatchInputError(f"{source}: {what}")
    return items


def inputs_digest(items: list[str]) -> str:
    """A short fingerprint of the input list, stored with the job so a resume can tell the inputs changed."""
    h = hashlib.sha256()
    for item in items:
        h.update(item.encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return h.hexdigest()[:16]


def read_item(item: str, limits: ReadLimits) -> bytes:
    """The raw bytes of one input: an SSRF-guarded download for a URL, a size-checked read for a path.

    Raises `InputError` (or its subclasses `InputTooLargeError`, `UrlFetchError`) with one sentence.
    """
    if is_url(item):
        from sam3studio.io.urls import FetchPolicy, fetch_url

        policy = FetchPolicy(max_bytes=limits.max_bytes, timeout=limits.url_timeout,
                             allow_private=limits.allow_private_urls)
        return fetch_url(item, policy)
    if "://" in item:
        raise InputError(f"{item}: unsupported URL scheme; use http(s) URLs or paths the workers can read")
    path = Path(item)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise InputError(f"{item}: not a file")
        if size > limits.max_bytes:
            raise InputTooLargeError(f"{item}: file is {size} bytes, over the limit of {limits.max_bytes}")
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{item}: no such file") from None
    except PermissionError:
        raise InputError(f"{item}: permission denied") from None
    except IsADirectoryError:
        raise InputError(f"{item}: not a file") from None


def decode_item(item: str, data: bytes, limits: ReadLimits) -> np.ndarray:
    """Decode bytes with the library's guarded decoder; the buffer carries ``item`` as its name for messages."""
    buf = io.BytesIO(data)
    buf.name = item  # load_image names a file object by its .name in every error message
    return load_image(buf, max_pixels=limits.max_pixels, max_bytes=limits.max_bytes)
