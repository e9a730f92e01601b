"""Reading the ``image`` and ``video`` arguments of the LLM tools: a URL, a ``data:`` URL or base64, or a path.

One string names the input, since that is what a language model can send:

1. ``http://`` or ``https://``: fetched through the API's SSRF guard (`sam3studio.io.urls.fetch_url`:
   public addresses only unless ``allow_private_urls``, bounded size and time);
2. ``data:<type>;base64,<data>``: decoded;
3. ``file://<path>`` or any other string that is an existing file: a local path, accepted only where
   `PathPolicy` allows it (over stdio, where the caller is the local user; otherwise only under a
   folder named with ``--allow-path``);
4. otherwise a string of base64 characters is decoded as the file's bytes.

Every refusal is an `InputError` (or `InputTooLargeError`) whose message names the argument and
says what would work instead.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from sam3studio.errors import InputError, InputTooLargeError
from sam3studio.io.urls import FetchPolicy, fetch_url
from sam3studio.service import SegmentService
from sam3studio.settings import Settings

__all__ = ["PathPolicy", "decode_base64", "read_image", "video_writer"]

_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class PathPolicy:
    """Which local paths a tool may read.

    ``any_path``: every path the server process can read (stdio without ``--allow-path``);
    otherwise only paths that resolve (symlinks followed) inside one of ``roots``; with no roots, none.
    ``transport`` names the connection in messages ("stdio", "HTTP").
    """

    any_path: bool = False
    roots: tuple[Path, ...] = ()
    transport: str = "HTTP"

    @classmethod
    def for_transport(cls, transport: str, allow: Sequence[str | os.PathLike[str]] = ()) -> PathPolicy:
        """stdio: any path unless ``allow`` names folders; HTTP: only under ``allow`` (none by default)."""
        roots = tuple(Path(p).expanduser().resolve() for p in allow)
        return cls(any_path=transport == "stdio" and not roots, roots=roots, transport=transport)

    @property
    def allows_paths(self) -> bool:
        return self.any_path or bool(self.roots)

    def check(self, raw: str, argument: str) -> Path:
        """The resolved path, or `InputError` saying why it is refused."""
        if not self.allows_paths:
            raise InputError(f"{argument}: local paths are not accepted over {self.transport} on this server; "
                             "send an http(s) URL, a data: URL or the file's bytes as base64")
        path = Path(raw).expanduser()
        resolved = path.resolve()
        if not self.any_path and not any(resolved.is_relative_to(root) for root in self.roots):
            folders = ", ".join(str(r) for r in self.roots)
            raise InputError(f"{argument}: {raw} is outside the folders this server may read ({folders}); "
                             "send a path inside them, an http(s) URL or base64")
        if not resolved.is_file():
            raise InputError(f"{argument}: no such file: {raw} (nor is it an http(s) URL, a data: URL or base64)")
        return resolved


def decode_base64(text: str, argument: str, max_bytes: int) -> bytes:
    """Plain base64 (whitespace ignored) or a ``data:...;base64,`` URL, at most ``max_bytes`` once decoded."""
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or not header.endswith(";base64"):
            raise InputError(f"{argument}: a data: URL must be base64-encoded, like data:image/png;base64,iVBOR...")
    if len(text) > max_bytes * 4 // 3 + 8:
        raise InputTooLargeError(f"{argument}: the data is over the limit of {max_bytes} bytes")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{argument}: not valid base64 (nor an http(s) URL or an existing file)") from None
    if not data:
        raise InputError(f"{argument}: the base64 data is empty")
    return data


def _kind(value: str, policy: PathPolicy) -> tuple[str, str]:
    """("url" | "data" | "path" | "base64", the value to read) for one argument string."""
    scheme = _SCHEME.match(value)
    if scheme:
        name = scheme.group(1).lower()
        if name in ("http", "https"):
            return "url", value
        if name == "file":
            return "path", unquote(urlsplit(value).path)
        raise InputError(f"unsupported URL scheme {name!r}: use http(s), a data: URL, base64 or a local path")
    if value.startswith("data:"):
        return "data", value
    looks_base64 = len(value) >= 64 and _BASE64.fullmatch(value) is not None
    if looks_base64 and not (policy.allows_paths and os.path.isfile(value)):
        return "base64", value
    return "path", value


def read_image(value: Any, service: SegmentService, policy: PathPolicy, argument: str = "image") -> np.ndarray:
    """Decode the ``image`` argument to an ``(H, W, 3)`` uint8 RGB array within the service's limits."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{argument} is empty: give an http(s) URL, a data: URL, base64 image bytes, or a local path")
    value = value.strip()
    try:
        kind, text = _kind(value, policy)
    except InputError as exc:
        raise InputError(f"{argument}: {exc}") from None
    if kind == "url":
        try:
            return service.fetch_image(text)
        except InputError as exc:  # the fetcher speaks of the API's image_url field
            raise type(exc)(f"{argument}: " + str(exc).replace("image_url", "the URL")) from None
    limit = service.settings.max_upload_bytes
    if kind in ("data", "base64"):
        data = decode_base64(text, argument, limit)
        try:
            return service.decode_image(data)
        except InputTooLargeError:
            raise
        except InputError as exc:
            reason = str(exc).removeprefix("image: ")
            raise InputError(f"{argument}: the base64 data is not a readable image ({reason})") from None
    return service.decode_image(policy.check(text, argument))


WriteInput = Callable[[Path], None]


def video_writer(value: Any, settings: Settings, policy: PathPolicy, argument: str = "video") -> tuple[WriteInput, str]:
    """The ``video`` argument as (a function writing the video to a path, its file suffix), for `JobRunner.submit`."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{argument} is empty: give an http(s) URL, a data: URL, base64 video bytes, or a local path")
    value = value.strip()
    limit = settings.max_video_bytes
    try:
        kind, text = _kind(value, policy)
    except InputError as exc:
        raise InputError(f"{argument}: {exc}") from None
    if kind == "path":
        source = policy.check(text, argument)
        size = source.stat().st_size
        if size > limit:
            raise InputTooLargeError(f"{argument}: the video is {size} bytes; the limit is {limit}")
        return (lambda dest: shutil.copyfile(source, dest)), source.suffix
    if kind == "url":
        fetch = FetchPolicy(max_bytes=limit, timeout=max(settings.url_timeout_s, 60.0),
                            allow_private=settings.allow_private_urls)
        try:
            data = fetch_url(text, fetch)
        except InputError as exc:  # the fetcher speaks of image_url
            message = f"{argument}: " + str(exc).replace("image_url", "the video URL")
            raise (InputTooLargeError if isinstance(exc, InputTooLargeError) else InputError)(message) from None
        suffix = os.path.splitext(urlsplit(text).path)[1]
    else:
        data = decode_base64(text, argument, limit)
        suffix = ""
    return (lambda dest: Path(dest).write_bytes(data)), suffix
