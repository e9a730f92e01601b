"""What every command shares: the consoles, the one-line error exit, library quieting, and the Typer options
of every model-loading command (segment, eval, batch, track, ...), declared once.

This is a leaf: command modules import it, it imports no command and not `sam3studio.cli.app`.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Annotated

import rich.markup
import typer
from rich.console import Console

__all__ = ["DebugOpt", "DeviceOpt", "DtypeOpt", "ModelOpt", "TranslatorOpt", "console", "err_console", "fail",
           "quiet_libraries"]

console = Console()
err_console = Console(stderr=True)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Hub id, local directory, modelscope:<id>, or 'random'.",
                                       envvar="SAM3STUDIO_MODEL")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.", envvar="SAM3STUDIO_DEVICE")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16 or float16.", envvar="SAM3STUDIO_DTYPE")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show full tracebacks and library logs.")]
TranslatorOpt = Annotated[str, typer.Option("--translator", help="Prompt translator: lexicon (Chinese to English, offline), "
                                            "none, or a local MarianMT folder.", envvar="SAM3STUDIO_TRANSLATOR")]


def fail(message: str, debug: bool, code: int = 1) -> typer.Exit:
    if debug:
        err_console.print_exception()
    # The message is plain text (paths, "pip install 'sam3studio[ray]'"): escape it from Rich markup.
    err_console.print(f"[bold red]error:[/] {rich.markup.escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def quiet_libraries(debug: bool) -> None:
    """Keep the terminal for our own output unless --debug."""
    if debug:
        logging.basicConfig(level=logging.INFO)
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
