"""Peak memory of the evaluating process (what the report's ``memory`` holds)."""

from __future__ import annotations

import resource
import sys
from typing import Any

__all__ = ["peak_memory"]


def peak_memory(device: Any = None) -> dict[str, Any]:
    """The process's peak resident memory since it started (bytes; the model's loading included) and,
    on a CUDA device, torch's peak allocation there."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    out: dict[str, Any] = {"peak_rss_bytes": int(rss if sys.platform == "darwin" else rss * 1024)}
    if device is not None and str(device).startswith("cuda"):
        import torch  # only when a model already runs on CUDA

        out["peak_device_bytes"] = int(torch.cuda.max_memory_allocated(device))
        out["device"] = str(device)
    return out
