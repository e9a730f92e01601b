"""The Ray engine: Ray Data streams the inputs through CPU read tasks into a pool of model actors.

Pipeline (one streaming Ray Data job)::

    rows (shard, index, source)            built on the driver from the sorted input list, pending shards only
      -> map_batches(_read_batch)          CPU tasks: file / URL bytes, or an error line (I/O overlaps inference)
      -> map_batches(_SegmentActor)        actor pool, ``num_workers`` actors, each loads SAM 3 once
      -> driver                            groups lines by shard; a shard is written as soon as it is complete

The driver writes the shards, so ``--out`` only has to exist where the command runs; the *inputs*
must be readable by the workers (a shared volume, or URLs). ``ray`` is imported only inside
`run_ray`: the base install does not need it.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sam3studio.batch.shards import JobDir
from sam3studio.batch.sources import ReadLimits
from sam3studio.batch.work import BatchSpec, Worker, read_stage
from sam3studio.errors import Sam3StudioError, install_hint

__all__ = ["RAY_MISSING", "RayEngineError", "RayOptions", "run_ray"]

RAY_MISSING = f"--engine ray needs Ray, which is not installed: {install_hint('ray')}"
MAX_INPUT_BLOCKS = 10_000  # bounds driver-side bookkeeping for very long input lists


class RayEngineError(Sam3StudioError):
    """Ray is missing, the cluster cannot be reached, or the Ray job failed."""


@dataclass(frozen=True)
class RayOptions:
    """How to reach Ray and size the actor pool.

    ``address=None`` starts a local Ray instance unless ``RAY_ADDRESS`` is set (Ray's own rule);
    ``init_kwargs`` are extra ``ray.init`` arguments for a *local* start (tests cap CPUs and memory).
    """

    address: str | None = None
    num_workers: int = 1
    batch_size: int = 8
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    read_cpus: float = 0.25  # I/O bound: several reads share one core
    runtime_env: dict[str, Any] | None = None
    init_kwargs: dict[str, Any] = field(default_factory=dict)
    verbose: bool = False


def _read_batch(batch: dict[str, np.ndarray], limits: ReadLimits) -> dict[str, np.ndarray]:
    """Ray task: add ``data`` (bytes, empty on failure) and ``error`` (an error line, or empty)."""
    data: list[bytes] = []
    errors: list[str] = []
    for index, item in zip(batch["index"], batch["source"], strict=True):
        raw, error = read_stage(int(index), str(item), limits)
        data.append(raw or b"")
        errors.append(error or "")
    out = dict(batch)
    out["data"] = np.array(data, dtype=object)
    out["error"] = np.array(errors, dtype=object)
    return out


class _SegmentActor:
    """Ray Data callable class: the constructor runs once per actor, so SAM 3 is loaded once per actor."""

    def __init__(self, spec: BatchSpec) -> None:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # actor logs reach the driver only with --debug
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        self.worker = Worker(spec)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok: list[bool] = []
        lines: list[str] = []
        for index, item, raw, error in zip(batch["index"], batch["source"], batch["data"], batch["error"], strict=True):
            if error:
                ok.append(False)
                lines.append(str(error))
                continue
            good, line = self.worker.segment_stage(int(index), str(item), bytes(raw))
            ok.append(good)
            lines.append(line)
        return {"shard": batch["shard"], "index": batch["index"], "ok": np.array(ok, dtype=bool),
                "line": np.array(lines, dtype=object)}


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXC_LINE = re.compile(r"^(?:[A-Za-z_][\w]*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit)\b.*:")


def _root_cause(exc: BaseException) -> str:
    """One line for a Ray failure: Ray wraps worker exceptions in text that ends with the original one."""
    lines = [_ANSI.sub("", line).strip() for line in str(exc).splitlines()]
    causes = [line for line in lines if _EXC_LINE.match(line)]
    text = causes[-1] if causes else next((line for line in lines if line), type(exc).__name__)
    return text[:300]


def _input_dataset(ray_data: Any, items: Sequence[str], pending: Sequence[tuple[int, range]], batch_size: int) -> Any:
    """Rows for the pending shards, split into blocks so that reading and inference stream."""
    import pyarrow as pa

    shard_col: list[int] = []
    index_col: list[int] = []
    for shard, indices in pending:
        shard_col.extend([shard] * len(indices))
        index_col.extend(indices)
    table = pa.table({"shard": pa.array(shard_col, pa.int64()), "index": pa.array(index_col, pa.int64()),
                      "source": pa.array([items[i] for i in index_col], pa.string())})
    rows = max(batch_size, math.ceil(len(table) / MAX_INPUT_BLOCKS))
    return ray_data.from_arrow([table.slice(start, rows) for start in range(0, len(table), rows)])


def run_ray(
    spec: BatchSpec,
    items: Sequence[str],
    pending: Sequence[tuple[int, range]],
    job: JobDir,
    options: RayOptions,
    *,
    on_connected: Callable[[dict[str, Any]], None] | None = None,
    on_shard: Callable[[int, int, int], None] | None = None,
) -> None:
    """Run the pending shards on Ray; shards written before a failure stay written (re-run to resume)."""
    if not pending:
        return
    try:
        import ray
        import ray.data
    except ImportError:
        raise RayEngineError(RAY_MISSING) from None

    started = False
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": options.verbose,
                                  "logging_level": logging.INFO if options.verbose else logging.WARNING}
        if options.runtime_env:
            kwargs["runtime_env"] = options.runtime_env
        if options.address is None:
            kwargs.update(options.init_kwargs)
        try:
            ray.init(address=options.address, **kwargs)
        except Exception as exc:  # ConnectionError, ValueError, RuntimeError...: one sentence for the user
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise RayEngineError(f"could not start or reach Ray at {options.address or 'a new local instance'}: "
                                 f"{first[:300]}") from exc
        started = True
    try:
        if on_connected is not None:
            on_connected(ray.cluster_resources())
        ctx = ray.data.DataContext.get_current()
        data_log = logging.getLogger("ray.data")
        saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars, data_log.level)  # restored below
        ctx.execution_options.preserve_order = True  # shards complete in order: few are buffered at once
        ctx.enable_progress_bars = options.verbose
        if not options.verbose:
            data_log.setLevel(logging.ERROR)

        ds = _input_dataset(ray.data, items, pending, options.batch_size)
        ds = ds.map_batches(_read_batch, fn_kwargs={"limits": spec.limits}, batch_size=options.batch_size,
                            batch_format="numpy", num_cpus=options.read_cpus)
        ds = ds.map_batches(_SegmentActor, fn_constructor_kwargs={"spec": spec}, batch_size=options.batch_size,
                            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=options.num_workers),
                            num_cpus=options.cpus_per_worker, num_gpus=options.gpus_per_worker or None)

        expected = {shard: len(indices) for shard, indices in pending}
        buffers: dict[int, list[tuple[int, bool, str]]] = {}
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for shard, index, ok, line in zip(batch["shard"], batch["index"], batch["ok"], batch["line"], strict=True):
                    rows = buffers.setdefault(int(shard), [])
                    rows.append((int(index), bool(ok), str(line)))
                    if len(rows) == expected[int(shard)]:
                        rows.sort()
                        job.write_shard(int(shard), [r[2] for r in rows if r[1]], [r[2] for r in rows if not r[1]])
                        del buffers[int(shard)]
                        if on_shard is not None:
                            on_shard(int(shard), sum(r[1] for r in rows), sum(not r[1] for r in rows))
        except Exception as exc:
            if isinstance(exc, Sam3StudioError):
                raise
            raise RayEngineError(f"the Ray job failed ({_root_cause(exc)}); finished shards are kept, "
                                 "re-run to resume") from exc
        finally:
            ctx.execution_options.preserve_order, ctx.enable_progress_bars, _ = saved
            data_log.setLevel(saved[2])
        if buffers:
            raise RayEngineError(f"Ray returned incomplete shards {sorted(buffers)[:5]}; re-run to resume")
    finally:
        if started:
            ray.shutdown()
