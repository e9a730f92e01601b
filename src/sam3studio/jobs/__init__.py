"""Video jobs: the SQLite store (`store`) and the single-worker runner (`runner`), shared by the API and the UI."""

from sam3studio.errors import JobNotFound
from sam3studio.jobs.runner import JobRunner
from sam3studio.jobs.store import ACTIVE_STATES, STATES, JobStore

__all__ = ["ACTIVE_STATES", "JobNotFound", "JobRunner", "JobStore", "STATES"]
