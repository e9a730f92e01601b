"""The Gradio 6 web UI (mounted at ``/`` by `sam3studio.api`): ``from sam3studio.ui import build_ui``."""

from sam3studio.ui.app import build_ui

__all__ = ["build_ui"]
