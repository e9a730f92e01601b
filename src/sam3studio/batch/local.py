"""The local engine: one process, one model, shards in order. The reference the Ray engine must match."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sam3studio.batch.shards import JobDir
from sam3studio.batch.work import BatchSpec, Worker

__all__ = ["run_local"]


def run_local(
    spec: BatchSpec,
    items: Sequence[str],
    pending: Sequence[tuple[int, range]],
    job: JobDir,
    *,
    on_model_loaded: Callable[[Worker], None] | None = None,
    on_image: Callable[[], None] | None = None,
    on_shard: Callable[[int, int, int], None] | None = None,
    worker: Worker | None = None,
) -> None:
    """Process each pending ``(shard, index range)``; every finished shard is on disk before the next starts."""
    if not pending:
        return
    worker = worker or Worker(spec)
    if on_model_loaded is not None:
        on_model_loaded(worker)
    for shard, indices in pending:
        ok_lines: list[str] = []
        error_lines: list[str] = []
        for index in indices:
            ok, line = worker.process(index, items[index])
            (ok_lines if ok else error_lines).append(line)
            if on_image is not None:
                on_image()
        job.write_shard(shard, ok_lines, error_lines)
        if on_shard is not None:
            on_shard(shard, len(ok_lines), len(error_lines))
