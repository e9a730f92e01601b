"""The per-image work both engines share, so that they cannot drift apart.

An image goes through two stages: `read_stage` (bytes from a file or URL: I/O, no model) and
`Worker.segment_stage` (decode + SAM 3). The local engine calls them back to back; the Ray engine
runs the first in CPU tasks and the second in the actor pool. Either way each image becomes exactly
one JSON line: a result record for the shard file or an error record for the shard's errors file.

Records hold no timings, so the same inputs give byte-identical shards on any engine and any re-run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sam3studio.batch.sources import ReadLimits, decode_item, read_item
from sam3studio.errors import Sam3StudioError

if TYPE_CHECKING:
    from sam3studio.core import Segmenter
    from sam3studio.results import Segmentation

__all__ = ["BatchSpec", "Worker", "read_stage", "result_record", "error_record", "dumps"]

RECORD_VERSION = 1


@dataclass(frozen=True)
class BatchSpec:
    """Everything a worker needs to turn an item into a record. Plain data: it is pickled to Ray actors."""

    prompts: tuple[str, ...]
    model: str = "facebook/sam3"
    device: str = "auto"
    dtype: str = "auto"
    backend: str = "auto"  # torch or onnxruntime (`sam3studio.loading.resolve_backend`)
    translator: str = "lexicon"
    threshold: float = 0.5
    mask_threshold: float = 0.5
    max_instances: int = 100
    limits: ReadLimits = field(default_factory=ReadLimits)

    def job_settings(self) -> dict[str, Any]:
        """The settings that change records: a resumed job must use the same ones (see `shards.JobDir`).

        Device and dtype are left out on purpose: resuming a CPU job on a GPU machine is legitimate.
        """
        return {"prompts": list(self.prompts), "model": self.model, "translator": self.translator,
                "threshold": self.threshold, "mask_threshold": self.mask_threshold,
                "max_instances": self.max_instances, "limits": asdict(self.limits)}


def dumps(record: dict[str, Any]) -> str:
    """One compact JSON line; non-ASCII prompts stay readable."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def result_record(index: int, item: str, seg: Segmentation) -> dict[str, Any]:
    """The per-image record: the library's `Segmentation.to_dict()` (masks as COCO RLE) plus where it came from."""
    body = seg.to_dict(include_masks=True)
    body.pop("timings", None)  # wall-clock times would make engines and re-runs differ
    return {"record_version": RECORD_VERSION, "index": index, "source": item, **body}


def error_record(index: int, item: str, stage: str, exc: BaseException) -> dict[str, Any]:
    return {"record_version": RECORD_VERSION, "index": index, "source": item, "stage": stage,
            "error_type": type(exc).__name__, "error": str(exc) or type(exc).__name__}


def read_stage(index: int, item: str, limits: ReadLimits) -> tuple[bytes | None, str | None]:
    """``(bytes, None)``, or ``(None, error line)`` when the input cannot be read (missing, refused URL, too large)."""
    try:
        return read_item(item, limits), None
    except (Sam3StudioError, ValueError, OSError) as exc:
        return None, dumps(error_record(index, item, "read", exc))


def _oom_types() -> tuple[type[BaseException], ...]:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom,) if oom is not None else ()


class Worker:
    """Holds one loaded segmenter (built once per process or actor) and turns bytes into a record line."""

    def __init__(self, spec: BatchSpec, segmenter: Segmenter | None = None) -> None:
        self.spec = spec
        if segmenter is None:
            from sam3studio.loading import load_segmenter

            # Caches only pay off when an image is seen twice; in a batch job each image is seen once.
            segmenter = load_segmenter(spec.model, device=spec.device, dtype=spec.dtype, backend=spec.backend,
                                       translator=spec.translator, image_cache_size=1, prediction_cache_mb=64)
        self.segmenter = segmenter
        self._oom = _oom_types()

    def segment_stage(self, index: int, item: str, data: bytes) -> tuple[bool, str]:
        """``(True, result line)`` or ``(False, error line)``; bad pixels and model refusals never raise."""
        spec = self.spec
        try:
            rgb = decode_item(item, data, spec.limits)
        except (Sam3StudioError, ValueError, OSError) as exc:
            return False, dumps(error_record(index, item, "decode", exc))
        try:
            seg = self.segmenter.segment(rgb, list(spec.prompts), score_threshold=spec.threshold,
                                         mask_threshold=spec.mask_threshold, max_instances=spec.max_instances)
        except (Sam3StudioError, ValueError, OSError) as exc:
            return False, dumps(error_record(index, item, "segment", exc))
        except self._oom as exc:  # one huge image must not end a million-image job
            self._free_memory()
            return False, dumps(error_record(index, item, "segment", exc))
        return True, dumps(result_record(index, item, seg))

    def process(self, index: int, item: str) -> tuple[bool, str]:
        """Both stages for one item (the local engine)."""
        data, error = read_stage(index, item, self.spec.limits)
        if error is not None or data is None:
            return False, error or ""
        return self.segment_stage(index, item, data)

    def _free_memory(self) -> None:
        import torch

        self.segmenter.clear_cache()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
