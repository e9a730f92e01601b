"""``manifest.json`` of an ONNX export: what each graph takes and gives, and how to prepare and read them.

Plain JSON and the standard library only: a deployment can read the manifest without sam3studio, and
`read_manifest` turns every way a folder can be wrong into one `ModelSourceError` sentence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sam3studio.errors import ModelSourceError

__all__ = ["FORMAT", "FORMAT_VERSION", "GRAPH_ROLES", "MANIFEST", "Manifest", "is_onnx_export", "read_manifest"]

MANIFEST = "manifest.json"
FORMAT = "sam3studio-onnx"
FORMAT_VERSION = 1
# The graphs an export holds, by role. "vision_encoder_int8" only with --quantize int8.
GRAPH_ROLES = ("vision_encoder", "text_encoder", "prompt_heads", "prompt_heads_boxes")
OPTIONAL_ROLES = ("vision_encoder_int8",)
VISION_VARIANTS = {"float32": "vision_encoder", "float16": "vision_encoder", "int8": "vision_encoder_int8"}


def is_onnx_export(source: str | Path) -> bool:
    """Whether ``source`` is a folder written by ``sam3studio export-onnx`` (it holds a manifest.json)."""
    try:
        return (Path(str(source)).expanduser() / MANIFEST).is_file()
    except (OSError, ValueError):
        return False


@dataclass
class Manifest:
    """The parsed manifest. ``graphs`` maps a role to its entry (``file``, ``data``, ``bytes``, ``inputs``, ``outputs``)."""

    directory: Path
    dtype: str
    opset: int
    graphs: dict[str, dict[str, Any]]
    default_vision: str
    image: dict[str, Any]
    text: dict[str, Any]
    fpn_outputs: list[str]
    source: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    def path(self, role: str) -> Path:
        return self.directory / self.graphs[role]["file"]

    def vision_role(self, variant: str) -> str:
        """The vision graph for ``variant``: ``auto`` (the export's default), ``float32``/``float16`` or ``int8``."""
        if variant in ("auto", "", None):
            return self.default_vision
        role = VISION_VARIANTS.get(variant)
        if role is None:
            raise ModelSourceError(f"the onnxruntime backend runs the exported graphs: dtype auto, {self.dtype} or "
                                   f"int8 (a quantized vision encoder), not {variant!r}")
        if variant in ("float32", "float16") and variant != self.dtype:
            raise ModelSourceError(f"{self.directory} was exported in {self.dtype}, not {variant}; "
                                   f"use --dtype auto or re-export with --dtype {variant}")
        if role not in self.graphs:
            raise ModelSourceError(f"{self.directory} has no int8 vision encoder; export it with "
                                   "`sam3studio export-onnx --quantize int8`")
        return role


def _fail(directory: Path, reason: str) -> ModelSourceError:
    return ModelSourceError(f"{directory} is not a usable sam3studio ONNX export: {reason} "
                            "(re-run `sam3studio export-onnx`)")


def _check_graph(directory: Path, role: str, entry: Any) -> None:
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        raise _fail(directory, f"the manifest's entry for {role} names no file")
    for name in (entry["file"], entry.get("data")):
        if not name:
            continue
        if Path(name).name != name:
            raise _fail(directory, f"{role} names a file outside the folder ({name!r})")
        path = directory / name
        if not path.is_file():
            raise _fail(directory, f"{name} is missing")
        expected = (entry.get("bytes") or {}).get(name)
        if expected is not None and path.stat().st_size != expected:
            raise _fail(directory, f"{name} is {path.stat().st_size} bytes, the manifest says {expected} (truncated?)")
    for key in ("inputs", "outputs"):
        if not isinstance(entry.get(key), list) or not all(isinstance(i, dict) and "name" in i for i in entry[key]):
            raise _fail(directory, f"the manifest's entry for {role} has no {key} list")


def read_manifest(directory: str | Path) -> Manifest:
    """Read and check ``directory/manifest.json``: format, graphs present with their recorded sizes.

    Raises `ModelSourceError` (one sentence naming what is wrong) for a missing, unreadable or
    inconsistent manifest, a missing graph file, or a file whose size differs from the manifest's.
    """
    directory = Path(str(directory)).expanduser()
    path = directory / MANIFEST
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelSourceError(f"{directory} has no {MANIFEST}: it is not a folder written by "
                               "`sam3studio export-onnx`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(directory, f"{MANIFEST} cannot be read ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise _fail(directory, f"{MANIFEST} is not a {FORMAT} manifest")
    if raw.get("format_version") != FORMAT_VERSION:
        raise _fail(directory, f"format_version {raw.get('format_version')!r}; this sam3studio reads {FORMAT_VERSION}")
    graphs = raw.get("graphs")
    if not isinstance(graphs, dict):
        raise _fail(directory, "the manifest lists no graphs")
    for role in GRAPH_ROLES:
        if role not in graphs:
            raise _fail(directory, f"the manifest lists no {role}")
    for role, entry in graphs.items():
        if role not in GRAPH_ROLES + OPTIONAL_ROLES:
            raise _fail(directory, f"unknown graph {role!r} in the manifest")
        _check_graph(directory, role, entry)
    try:
        manifest = Manifest(
            directory=directory, dtype=str(raw["dtype"]), opset=int(raw["opset"]), graphs=graphs,
            default_vision=str(raw.get("default_vision", "vision_encoder")), image=dict(raw["preprocess"]["image"]),
            text=dict(raw["preprocess"]["text"]), fpn_outputs=[o["name"] for o in graphs["vision_encoder"]["outputs"]],
            source=dict(raw.get("source") or {}), raw=raw,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise _fail(directory, f"the manifest lacks {exc}") from None
    if manifest.default_vision not in graphs:
        raise _fail(directory, f"default_vision {manifest.default_vision!r} is not among its graphs")
    return manifest
