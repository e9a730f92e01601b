"""What every command shares: the consoles, the one-line error exit, library quieting, and the Typer options
of every model-loading command (segment, eval, batch, track, ...), declared once.

This is a leaf: command modules import it, it imports no command and not `sam3studio.cli.app`.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Annotated, Any

import rich.markup
import typer
from rich.console import Console

__all__ = ["BackendOpt", "DebugOpt", "DeviceOpt", "DtypeOpt", "ModelOpt", "TranslatorOpt", "console", "err_console", "fail",
           "model_line", "plural", "quiet_libraries", "setting_option"]

console = Console()
err_console = Console(stderr=True)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Hub id, local directory, modelscope:<id>, or 'random'.",
                                       envvar="SAM3STUDIO_MODEL")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.", envvar="SAM3STUDIO_DEVICE")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16 or float16 (onnxruntime backend: auto, "
                                       "float32, float16 or int8).", envvar="SAM3STUDIO_DTYPE")]
BackendOpt = Annotated[str, typer.Option("--backend", help="torch, onnxruntime, or auto (onnxruntime for a folder written "
                                         "by export-onnx).", envvar="SAM3STUDIO_BACKEND")]
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


def setting_option(name: str, *flags: str, help: str) -> Any:
    """A Typer option for the `Settings` field ``name``: its default and ``SAM3STUDIO_<NAME>`` shown in --help.

    The option's own default is None (an unset flag leaves the field to the environment and `Settings`);
    the environment variable is read by Typer and validated by `Settings`, like the flag.
    """
    from sam3studio.settings import Settings

    field = Settings.model_fields[name]
    default = field.default
    shown = "unset" if default is None else str(default.value if hasattr(default, "value") else default)
    return typer.Option(*flags, help=help, envvar=f"SAM3STUDIO_{name.upper()}", show_envvar=True, show_default=shown)


def model_line(info: dict[str, str]) -> str:
    """``Model SRC on cpu (float32)``, with the backend and its vision graph when not PyTorch (Rich markup, escaped)."""
    extra = f", {info['backend']}, vision encoder {info.get('vision_encoder', '?')}" if "backend" in info else ""
    return (f"Model [bold]{rich.markup.escape(info['source'])}[/] on {info['device']} "
            f"({info['dtype']}{rich.markup.escape(extra)})")


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 frame``, ``2 frames``; ``many`` for irregular plurals."""
    return f"{n} {word if n == 1 else (many or word + 's')}"
