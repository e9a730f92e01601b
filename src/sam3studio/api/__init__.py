"""The REST API (FastAPI) under ``/api/v1``, and the one app that also mounts the UI at ``/`` (see `app`)."""

from sam3studio.api.app import create_app

__all__ = ["create_app"]
