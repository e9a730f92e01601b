"""`run_batch`: list the inputs, plan the shards, skip the finished ones, hand the rest to an engine."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sam3studio.batch.shards import FORMATS, JobDir, plan_shards
from sam3studio.batch.sources import BatchInputError, inputs_digest, list_inputs
from sam3studio.batch.work import BatchSpec
from sam3studio.errors import install_hint

__all__ = ["ENGINES", "BatchPlan", "BatchSummary", "plan_batch", "run_batch"]

ENGINES = ("local", "ray")
DEFAULT_SHARD_SIZE = 1000


@dataclass
class BatchPlan:
    """The sorted inputs, all shards, and the ones still to do."""

    source: Path
    items: list[str]
    shards: list[range]
    pending: list[tuple[int, range]]
    job: JobDir

    @property
    def pending_images(self) -> int:
        return sum(len(r) for _, r in self.pending)


@dataclass
class BatchSummary:
    """What a run did; ``shards_written`` + ``shards_skipped`` == ``shards_total`` after a complete run."""

    out: Path
    engine: str
    images_total: int
    shards_total: int
    shards_skipped: int = 0
    shards_written: int = 0
    images_ok: int = 0  # in shards written by this run
    images_failed: int = 0  # in shards written by this run
    errors_total: int = 0  # failed images recorded across all finished shards, earlier runs included
    seconds: float = 0.0
    startup_seconds: float = 0.0  # loading the model (local) or connecting to Ray, within `seconds`
    written: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def plan_batch(source: Path, out: Path, spec: BatchSpec, *, shard_size: int = DEFAULT_SHARD_SIZE,
               fmt: str = "jsonl", overwrite: bool = False) -> BatchPlan:
    """List SOURCE, check ``out`` against an earlier run of the same job, and find the shards left to do."""
    if shard_size < 1:
        raise BatchInputError(f"--shard-size must be at least 1, got {shard_size}")
    if fmt not in FORMATS:
        raise BatchInputError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise BatchInputError(f"--format parquet needs pyarrow: {install_hint('ray')}") from None
    items = list_inputs(source)
    shards = plan_shards(len(items), shard_size)
    job = JobDir(out, fmt)
    job.prepare({"source": str(source), "inputs": len(items), "inputs_sha256": inputs_digest(items),
                 "shard_size": shard_size, "shards": len(shards), **spec.job_settings()}, overwrite=overwrite)
    pending = [(i, r) for i, r in enumerate(shards) if not job.is_done(i)]
    return BatchPlan(source, items, shards, pending, job)


def run_batch(
    plan: BatchPlan,
    spec: BatchSpec,
    *,
    engine: str = "local",
    ray_options: Any = None,
    on_start: Callable[[Any], None] | None = None,
    on_image: Callable[[], None] | None = None,
    on_shard: Callable[[int, int, int], None] | None = None,
) -> BatchSummary:
    """Run the plan's pending shards on ``engine`` (``local`` or ``ray``) and summarise.

    ``on_start`` gets the loaded `Worker` (local) or the Ray cluster resources (ray); ``on_image``
    fires per image (local only: in Ray the driver sees whole shards); ``on_shard(shard, ok, failed)``
    fires after each shard is on disk.
    """
    if engine not in ENGINES:
        raise BatchInputError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    summary = BatchSummary(out=plan.job.root, engine=engine, images_total=len(plan.items), shards_total=len(plan.shards),
                           shards_skipped=len(plan.shards) - len(plan.pending))

    def shard_done(shard: int, ok: int, failed: int) -> None:
        summary.shards_written += 1
        summary.written.append(shard)
        summary.images_ok += ok
        summary.images_failed += failed
        if on_shard is not None:
            on_shard(shard, ok, failed)

    start = time.perf_counter()

    def started(what: Any) -> None:
        summary.startup_seconds = time.perf_counter() - start
        if on_start is not None:
            on_start(what)

    try:
        if engine == "local":
            from sam3studio.batch.local import run_local

            run_local(spec, plan.items, plan.pending, plan.job, on_model_loaded=started, on_image=on_image,
                      on_shard=shard_done)
        else:
            from sam3studio.batch.ray_engine import RayOptions, run_ray

            run_ray(spec, plan.items, plan.pending, plan.job, ray_options or RayOptions(), on_connected=started,
                    on_shard=shard_done)
    finally:
        summary.seconds = time.perf_counter() - start
        summary.errors_total = plan.job.count_errors(range(len(plan.shards)))
    return summary
