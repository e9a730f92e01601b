"""The ``sam3studio`` command line (Typer + Rich). A thin edge: parse, call the library, map errors."""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import rich.markup
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from sam3studio import __version__
from sam3studio.cli_options import DebugOpt, DeviceOpt, DtypeOpt, ModelOpt, TranslatorOpt
from sam3studio.errors import InputError, ModelSourceError, Sam3StudioError

app = typer.Typer(
    name="sam3studio",
    help="Segment anything by text with SAM 3: type 'dog' or 'red car', get every matching object.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)



def _fail(message: str, debug: bool, code: int = 1) -> typer.Exit:
    if debug:
        err_console.print_exception()
    # The message is plain text (paths, "pip install 'sam3studio[ray]'"): escape it from Rich markup.
    err_console.print(f"[bold red]error:[/] {rich.markup.escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _quiet_libraries(debug: bool) -> None:
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


# ---------------------------------------------------------------------------- segment
@dataclass
class _Job:
    path: Path
    stem: str  # output name, relative to --out (may contain sub-folders)

    def target(self, out: Path) -> tuple[Path, str]:
        """The folder and the plain file stem this input's outputs go to."""
        rel = Path(self.stem)
        return out / rel.parent, rel.name


def _collect_inputs(inputs: list[Path]) -> tuple[list[_Job], list[tuple[Path, str]]]:
    """Files and folders (searched recursively) -> jobs with unique output stems; plus bad paths."""
    from sam3studio.io.images import is_image_path

    jobs: list[_Job] = []
    bad: list[tuple[Path, str]] = []
    seen: set[str] = set()

    def add(path: Path, stem: str) -> None:
        base, n = stem, 2
        while stem in seen:
            stem, n = f"{base}_{n}", n + 1
        seen.add(stem)
        jobs.append(_Job(path, stem))

    for item in inputs:
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and is_image_path(p))
            if not found:
                bad.append((item, "folder contains no images (jpg, png, webp, bmp, tiff, gif)"))
            for p in found:
                add(p, str(p.relative_to(item).with_suffix("")))
        elif item.is_file():
            add(item, item.stem)
        else:
            bad.append((item, "no such file or folder"))
    return jobs, bad


@app.command()
def segment(
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively).",
                                                 show_default=False)],
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="What to find; repeat or comma-separate.",
                                              show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("sam3studio-out"),
    threshold: Annotated[float, typer.Option("--threshold", "-t", help="Detection score threshold.")] = 0.5,
    mask_threshold: Annotated[float, typer.Option("--mask-threshold", help="Mask probability threshold.")] = 0.5,
    formats: Annotated[str, typer.Option("--format", "-f",
                                         help="Comma-separated: json, overlay, masks, cutout, labelmap.")] = "json,overlay",
    max_instances: Annotated[int, typer.Option("--max-instances", help="Keep at most this many per image.")] = 100,
    fill_holes: Annotated[float, typer.Option("--fill-holes", help="Fill holes smaller than this fraction of the mask.")] = 0.0,
    min_island: Annotated[float, typer.Option("--min-island", help="Drop islands smaller than this fraction of the mask.")] = 0.0,
    smooth: Annotated[int, typer.Option("--smooth", help="Edge smoothing radius in pixels.")] = 0,
    max_pixels: Annotated[int, typer.Option("--max-pixels", min=1, help="Refuse images larger than this many pixels.")]
    = 50_000_000,
    max_mb: Annotated[float, typer.Option("--max-mb", min=0.001, help="Refuse image files larger than this (MB).")] = 50.0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo inputs whose outputs already exist.")] = False,
    model: ModelOpt = "facebook/sam3",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    translator: TranslatorOpt = "lexicon",
    debug: DebugOpt = False,
) -> None:
    """Segment images by text prompts and write JSON, overlays, masks and cutouts."""
    from sam3studio.export import is_complete, parse_formats, write_outputs
    from sam3studio.prompts import parse_prompts
    from sam3studio.refine import RefineOptions

    _quiet_libraries(debug)
    try:
        queries = parse_prompts(prompt)
        fmts = parse_formats(formats)
        refine = RefineOptions(fill_holes=fill_holes, min_island=min_island, smooth=smooth)
        if not 0 < threshold <= 1 or not 0 < mask_threshold < 1:
            raise InputError("--threshold must be in (0, 1] and --mask-threshold in (0, 1)")
    except (ValueError, Sam3StudioError) as exc:
        raise _fail(str(exc), debug, code=2) from None

    jobs, bad = _collect_inputs(inputs)
    rows: list[tuple[str, str, str, str]] = [(str(p), "-", "[red]failed[/]", reason) for p, reason in bad]
    todo = [j for j in jobs if overwrite or not is_complete(*j.target(out), fmts)]
    for j in jobs:
        if j not in todo:
            rows.append((str(j.path), "-", "[dim]skipped[/]", "outputs exist (use --overwrite to redo)"))

    failed = len(bad)
    if todo:
        from sam3studio.io.images import load_image
        from sam3studio.model import load_segmenter

        with console.status(f"Loading SAM 3 from [bold]{model}[/] …"):
            try:
                segmenter = load_segmenter(model, device=device, dtype=dtype, translator=translator)
            except (ModelSourceError, InputError) as exc:
                raise _fail(str(exc), debug) from None
        info = segmenter.info()
        console.print(f"Model [bold]{info['source']}[/] on {info['device']} ({info['dtype']})", highlight=False)
        try:  # translate once up front: an untranslatable prompt is a usage error, not a per-image failure
            translations = [segmenter.translator(q) for q in queries]
        except Sam3StudioError as exc:
            raise _fail(str(exc), debug, code=2) from None
        for q, tr in zip(queries, translations, strict=True):
            if tr.query != q or tr.unknown:
                note = f" [yellow](not understood: {', '.join(tr.unknown)})[/]" if tr.unknown else ""
                console.print(f"Prompt [bold]{q}[/] → {tr.query}{note}", highlight=False)
        progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TextColumn("images"), TimeElapsedColumn(),
                            TextColumn("ETA"), TimeRemainingColumn(), console=console,
                            disable=len(todo) < 2)
        with progress:
            task = progress.add_task("Segmenting", total=len(todo))
            for job in todo:
                t0 = time.perf_counter()
                try:
                    rgb = load_image(job.path, max_pixels=max_pixels, max_bytes=int(max_mb * 1024 * 1024))
                    seg = segmenter.segment(rgb, queries, score_threshold=threshold, mask_threshold=mask_threshold,
                                            refine=refine, max_instances=max_instances)
                    write_outputs(seg, rgb, *job.target(out), fmts, source=str(job.path))
                    counts = ", ".join(f"{p.text}: {p.count}" for p in seg.prompts)
                    rows.append((str(job.path), str(len(seg)), "[green]ok[/]",
                                 f"{counts} ({time.perf_counter() - t0:.2f} s)"))
                except (Sam3StudioError, ValueError, OSError) as exc:
                    if debug:
                        err_console.print_exception()
                    failed += 1
                    rows.append((str(job.path), "-", "[red]failed[/]", str(exc)))
                except KeyboardInterrupt:
                    progress.stop()
                    err_console.print("[yellow]Interrupted: finished images are kept; re-run to resume.[/]")
                    raise typer.Exit(130) from None
                progress.advance(task)

    table = Table(title=f"sam3studio segment → {out}", show_lines=False)
    for col in ("input", "instances", "status", "details"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if failed:
        err_console.print(f"[red]{failed} input(s) failed[/]")
        raise typer.Exit(1)


# ---------------------------------------------------------------------------- serve
@app.command()
def serve(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Hub id, local directory, modelscope:<id>, or 'random'. "
                                               "[env: SAM3STUDIO_MODEL; default facebook/sam3]", show_default=False)] = None,
    host: Annotated[str | None, typer.Option("--host", help="Address to listen on [default 127.0.0.1].",
                                             show_default=False)] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port [default 7860].", show_default=False)] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.", show_default=False)] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="auto, float32, bfloat16 or float16.", show_default=False)] = None,
    translator: Annotated[str | None, typer.Option("--translator", help="lexicon (default), none, or a MarianMT folder.",
                                                   show_default=False)] = None,
    lang: Annotated[str | None, typer.Option("--lang", help="UI language: auto (the browser's), en or zh [default auto].",
                                             show_default=False)] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="Require this key on the REST API (X-API-Key or "
                                                "Bearer). Prefer the env SAM3STUDIO_API_KEY: argv is visible to "
                                                "other users.", show_default=False)] = None,
    ui_auth: Annotated[str | None, typer.Option("--ui-auth", help="user:password the web UI asks for "
                                                "[env: SAM3STUDIO_UI_AUTH].", show_default=False)] = None,
    no_ui: Annotated[bool, typer.Option("--no-ui", help="Serve the REST API only.")] = False,
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile the vision encoder (faster per image "
                                                "after a slow first one; needs a C/C++ compiler on the CPU).")] = False,
    debug: DebugOpt = False,
) -> None:
    """Serve the web UI at / and the REST API at /api/v1 on one port (settings also from SAM3STUDIO_* env)."""
    _quiet_libraries(debug)
    from pydantic import ValidationError

    from sam3studio.settings import Settings

    overrides = {k: v for k, v in {"model": model, "host": host, "port": port, "device": device, "dtype": dtype,
                                                   "translator": translator, "lang": lang,
                                                   "api_key": api_key, "ui_auth": ui_auth}.items()
                 if v is not None}
    if no_ui:
        overrides["ui"] = False
    if compile_model:
        overrides["compile"] = True
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise _fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()), debug, code=2) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    from sam3studio.api import create_app

    for warning in access_warnings(settings):
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print(f"Loading SAM 3 from [bold]{settings.model}[/] in the background; "
                  f"UI at [bold]http://{settings.host}:{settings.port}/[/], API docs at /docs", highlight=False)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info" if debug else "warning")


def access_warnings(settings) -> list[str]:
    """What is open to anyone who can reach the server (nothing to say on loopback)."""
    if settings.host in ("127.0.0.1", "localhost", "::1"):
        return []
    out = []
    if settings.api_key is None:
        out.append(f"listening on {settings.host} without an API key: anyone who can reach this address can use "
                   "the REST API (set SAM3STUDIO_API_KEY).")
    if settings.ui and settings.ui_auth is None:
        out.append(f"listening on {settings.host} without UI credentials: anyone who can reach this address can use "
                   "the web UI and its Gradio API (set SAM3STUDIO_UI_AUTH=user:password, or --no-ui).")
    return out


# ---------------------------------------------------------------------------- info
@app.command()
def info(
    model: ModelOpt = "facebook/sam3",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Show versions, the device and dtype that would be used, and where models are cached."""
    _quiet_libraries(debug)
    import huggingface_hub
    import torch
    import transformers
    from huggingface_hub import constants as hub_constants

    from sam3studio.model import cpu_supports_bf16, resolve_device, resolve_dtype

    try:
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
    except ModelSourceError as exc:
        raise _fail(str(exc), debug, code=2) from None
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


# ---------------------------------------------------------------------------- commands from other modules
# One line per command defined elsewhere (heavy imports stay inside the command functions):
# app.command("name")(function)
from sam3studio.evaluation.cli import eval_command  # noqa: E402, I001
app.command("eval")(eval_command)
from sam3studio.translate.cli import prompt_command  # noqa: E402, I001
app.command("prompt")(prompt_command)
from sam3studio.batch.cli import batch_command  # noqa: E402, I001
app.command("batch")(batch_command)
from sam3studio.video.cli import track_command  # noqa: E402, I001
app.command("track")(track_command)
from sam3studio.bench.cli import bench_command  # noqa: E402, I001
app.command("bench")(bench_command)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - interactive
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
