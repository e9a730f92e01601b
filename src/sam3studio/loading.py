"""Build a ready `Segmenter` from a checkpoint source: the one call every entry point uses.

It sits above `sam3studio.model` (sources, device, dtype, weights), `sam3studio.core` (the engine) and
`sam3studio.onnx` (the ONNX Runtime backend), so none of those needs the others' loaders.
"""

from __future__ import annotations

from typing import Any

from sam3studio.core import Segmenter
from sam3studio.errors import ModelSourceError
from sam3studio.model import DEFAULT_SOURCE, load_model
from sam3studio.onnx.manifest import is_onnx_export
from sam3studio.onnx.runtime import load_onnx_segmenter
from sam3studio.translate import get_translator

__all__ = ["BACKENDS", "load_segmenter", "resolve_backend"]

BACKENDS = ("auto", "torch", "onnxruntime")
_ALIASES = {"pytorch": "torch", "pt": "torch", "ort": "onnxruntime", "onnx": "onnxruntime"}


def resolve_backend(backend: str | None, source: str) -> str:
    """``torch`` or ``onnxruntime``: ``auto`` picks onnxruntime for a folder written by ``export-onnx``."""
    name = (backend or "auto").strip().lower()
    name = _ALIASES.get(name, name)
    if name not in BACKENDS:
        raise ModelSourceError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if name == "auto":
        return "onnxruntime" if is_onnx_export(source) else "torch"
    return name


def load_segmenter(
    source: str = DEFAULT_SOURCE, device: str = "auto", dtype: str = "auto", translator: Any = "lexicon",
    compile: bool = False, backend: str = "auto", **options: Any
) -> Segmenter:
    """Load SAM 3 from ``source`` and wrap it in a `sam3studio.core.Segmenter`.

    ``translator`` turns prompts into English queries: ``"lexicon"`` (default: Chinese prompts are
    translated offline, English passes unchanged), ``"none"``, a local MarianMT folder, or a callable.
    ``compile`` compiles the vision encoder with ``torch.compile`` (the first image compiles).
    ``backend``: ``torch``, ``onnxruntime`` (a folder written by ``sam3studio export-onnx``, or a checkpoint
    exported on first use into the cache), or ``auto`` (onnxruntime for an export folder, else torch).
    ``options`` go to the `Segmenter` constructor (cache sizes, prompt batch size).
    """
    if translator is None or isinstance(translator, str):
        translator = get_translator(translator)
    if resolve_backend(backend, source) == "onnxruntime":
        return load_onnx_segmenter(source, device=device, dtype=dtype, translator=translator, compile=compile, **options)
    loaded = load_model(source, device=device, dtype=dtype, compile=compile)
    return Segmenter.from_loaded(loaded, translator=translator, **options)
