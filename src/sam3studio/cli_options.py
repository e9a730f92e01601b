"""Typer options every model-loading command shares (segment, eval, batch, track), declared once."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["DebugOpt", "DeviceOpt", "DtypeOpt", "ModelOpt", "TranslatorOpt"]

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Hub id, local directory, modelscope:<id>, or 'random'.",
                                       envvar="SAM3STUDIO_MODEL")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.", envvar="SAM3STUDIO_DEVICE")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16 or float16.", envvar="SAM3STUDIO_DTYPE")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show full tracebacks and library logs.")]
TranslatorOpt = Annotated[str, typer.Option("--translator", help="Prompt translator: lexicon (Chinese to English, offline), "
                                            "none, or a local MarianMT folder.", envvar="SAM3STUDIO_TRANSLATOR")]
