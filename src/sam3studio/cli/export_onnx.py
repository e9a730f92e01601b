"""`sam3studio export-onnx`: SAM 3's detector as ONNX graphs (vision encoder, text encoder, prompt heads)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from sam3studio.cli.common import DebugOpt, ModelOpt, console, fail, quiet_libraries
from sam3studio.errors import InputError, ModelSourceError

__all__ = ["export_onnx_command"]


def export_onnx_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the graphs and manifest.json to.",
                                      show_default=False)],
    model: ModelOpt = "facebook/sam3",
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (17-23).")] = 18,
    dtype: Annotated[str, typer.Option("--dtype", help="float32, or float16 (weights and compute; float32 inputs "
                                       "and outputs; for GPU providers).")] = "float32",
    quantize: Annotated[str | None, typer.Option("--quantize", help="int8: also write a dynamically quantized vision "
                                                 "encoder and make it the default.", show_default=False)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an export already in --out.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Export the detector to ONNX: vision encoder, text encoder and prompt heads, plus manifest.json.

    Run it with `sam3studio segment --model OUT` (the onnxruntime backend), or without sam3studio (docs/deploy.md).
    Not exported: click refinement and video tracking.
    """
    quiet_libraries(debug)
    from sam3studio.onnx.export import export_onnx

    quantize = None if quantize in (None, "", "none") else quantize
    with console.status(f"Exporting [bold]{escape(model)}[/] …") as status:
        try:
            manifest = export_onnx(model, out, opset=opset, dtype=dtype, quantize=quantize, overwrite=overwrite,
                                   progress=lambda msg: status.update(f"{escape(msg)} …"))
        except InputError as exc:
            raise fail(str(exc), debug, code=2) from None
        except ModelSourceError as exc:
            raise fail(str(exc), debug) from None
    table = Table(title=f"sam3studio export-onnx → {out}")
    for col in ("graph", "inputs", "outputs", "MB"):
        table.add_column(col, overflow="fold")
    for role, entry in manifest.graphs.items():
        shape = lambda v: f"{v['name']} {v['shape']}"  # noqa: E731
        table.add_row(role, ", ".join(shape(v) for v in entry["inputs"]), ", ".join(shape(v) for v in entry["outputs"]),
                      f"{sum(entry['bytes'].values()) / 2**20:.1f}")
    console.print(table)
    quant = manifest.raw.get("quantization")
    if quant:
        console.print(f"int8 vision encoder: feature cosine similarity to float32 {quant['agreement']['feature_cosine_min']:.5f} "
                      "(minimum over 3 photos); check accuracy on your data with `sam3studio eval`.", highlight=False)
    console.print(f"opset {manifest.opset}, {manifest.dtype}; source sha256 {manifest.source.get('sha256', '?')[:16]}…; "
                  f"run it with: sam3studio segment IMAGE -p PROMPT --model {escape(str(out))}", highlight=False,
                  soft_wrap=True)
