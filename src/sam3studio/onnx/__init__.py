"""Deploy anywhere: SAM 3's detector as ONNX graphs, and an ONNX Runtime backend for the engine.

- `export_onnx` / `export_model` (``sam3studio export-onnx``): vision encoder, text encoder and prompt
  heads as separate graphs, a ``manifest.json``, optionally an int8 vision encoder;
- `load_onnx_segmenter` (``load_segmenter(..., backend="onnxruntime")``, ``--backend onnxruntime``): the
  same `Segmenter` API on ONNX Runtime sessions;
- `is_onnx_export`, `read_manifest`: recognise and check an export folder.

torch and onnxruntime are imported only when a function here needs them.
"""

from __future__ import annotations

import importlib
from typing import Any

from sam3studio.onnx.manifest import MANIFEST, Manifest, is_onnx_export, read_manifest

_LAZY = {
    "export_onnx": "sam3studio.onnx.export",
    "export_model": "sam3studio.onnx.export",
    "load_onnx_segmenter": "sam3studio.onnx.runtime",
    "OnnxRuntimeBackend": "sam3studio.onnx.runtime",
}

__all__ = ["MANIFEST", "Manifest", "is_onnx_export", "read_manifest", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sam3studio.onnx' has no attribute {name!r}")
