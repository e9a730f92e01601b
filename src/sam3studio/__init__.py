"""sam3studio: segment anything by text with Meta's SAM 3.

The top-level names load lazily, so ``import sam3studio`` neither imports torch nor probes devices.

>>> from sam3studio import load_segmenter
>>> seg = load_segmenter("facebook/sam3")            # doctest: +SKIP
>>> result = seg.segment("photo.jpg", "dog, red car")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

__version__ = "0.2.0"

_LAZY = {
    "load_segmenter": "sam3studio.loading",
    "CleanupOptions": "sam3studio.cleanup",
    "Segmenter": "sam3studio.core",
    "Segmentation": "sam3studio.results",
    "Instance": "sam3studio.results",
    "PromptResult": "sam3studio.results",
    "load_image": "sam3studio.io.images",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name == "RefineOptions":  # deprecated for one release: mask clean-up is CleanupOptions now
        warnings.warn("sam3studio.RefineOptions is deprecated; use sam3studio.CleanupOptions", DeprecationWarning,
                      stacklevel=2)
        name = "CleanupOptions"
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sam3studio' has no attribute {name!r}")
