"""The ``sam3studio`` command line: `app` (Typer) and `main` (the console-script entry point)."""

from sam3studio.cli.app import app, main

__all__ = ["app", "main"]
