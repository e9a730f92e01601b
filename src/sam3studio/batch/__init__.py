"""``sam3studio batch``: segment a folder or a manifest of images into resumable JSON Lines shards.

Two engines produce the same records: ``local`` (one process) and ``ray`` (Ray Data with an actor pool,
on this machine or an existing cluster; needs ``pip install 'sam3studio[ray]'``). See docs/scale-out.md.

Importing this package imports neither torch nor ray; the engines import what they need when they run.
"""

from __future__ import annotations

from sam3studio.batch.runner import ENGINES, BatchPlan, BatchSummary, plan_batch, run_batch
from sam3studio.batch.shards import FORMATS, JobDir, plan_shards
from sam3studio.batch.sources import BatchInputError, ReadLimits, list_inputs
from sam3studio.batch.work import BatchSpec, Worker

__all__ = [
    "ENGINES",
    "FORMATS",
    "BatchInputError",
    "BatchPlan",
    "BatchSpec",
    "BatchSummary",
    "JobDir",
    "ReadLimits",
    "Worker",
    "list_inputs",
    "plan_batch",
    "plan_shards",
    "run_batch",
]
