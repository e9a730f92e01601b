"""Deprecated module: mask clean-up is `sam3studio.cleanup` (``CleanupOptions``, ``cleanup_masks``).

"Refine" now means click and box refinement only (`Segmenter.refine`, ``/api/v1/refine``). The old
names keep working for one release and warn with a `DeprecationWarning`.
"""

from __future__ import annotations

import warnings
from typing import Any

from sam3studio import cleanup

_RENAMED = {"RefineOptions": "CleanupOptions", "refine_masks": "cleanup_masks", "MAX_SMOOTH": "MAX_SMOOTH"}


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        new = _RENAMED[name]
        warnings.warn(f"sam3studio.refine.{name} is deprecated; use sam3studio.cleanup.{new} "
                      "(mask clean-up; 'refine' now means click refinement)", DeprecationWarning, stacklevel=2)
        return getattr(cleanup, new)
    raise AttributeError(f"module 'sam3studio.refine' has no attribute {name!r}")
