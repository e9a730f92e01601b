"""`sam3studio info`: versions, the device and dtype that would be used, the model cache."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sam3studio import __version__
from sam3studio.cli.common import (
    DebugOpt,
    DeviceOpt,
    DtypeOpt,
    ModelOpt,
    console,
    fail,
    quiet_libraries,
)
from sam3studio.errors import ModelSourceError


def info(
    model: ModelOpt = "facebook/sam3",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Show versions, the device and dtype that would be used, and where models are cached."""
    quiet_libraries(debug)
    import huggingface_hub
    import torch
    import transformers
    from huggingface_hub import constants as hub_constants

    from sam3studio.model import cpu_supports_bf16, resolve_device, resolve_dtype

    try:
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
    except ModelSourceError as exc:
        raise fail(str(exc), debug, code=2) from None
    cached = "n/a"
    if Path(model).expanduser().is_dir():
        cached = "local directory"
    elif model not in ("random",) and not model.startswith("modelscope:"):
        try:
            hit = huggingface_hub.try_to_load_from_cache(model, "config.json")
            cached = "yes" if isinstance(hit, str) else "no (downloads on first use; the checkpoint is gated)"
        except Exception:  # a malformed id is reported, not raised, here
            cached = "no"
    data = {
        "sam3studio": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(dev),
        "dtype": str(dt).removeprefix("torch."),
        "cuda_available": torch.cuda.is_available(),
        "cpu_bf16": cpu_supports_bf16(),
        "cpu_threads": torch.get_num_threads(),
        "model": model,
        "model_cached": cached,
        "hf_cache": str(hub_constants.HF_HUB_CACHE),
        "hf_offline": bool(hub_constants.HF_HUB_OFFLINE),
    }
    if as_json:
        console.print_json(json.dumps(data))
        return
    table = Table(title="sam3studio info", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for k, v in data.items():
        table.add_row(k, str(v))
    console.print(table)
