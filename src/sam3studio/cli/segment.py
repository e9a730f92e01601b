"""`sam3studio segment`: images by text prompts to JSON, overlays, masks and cutouts."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from sam3studio.cli.common import (
    BackendOpt,
    DebugOpt,
    DeviceOpt,
    DtypeOpt,
    ModelOpt,
    TranslatorOpt,
    console,
    err_console,
    fail,
    model_line,
    plural,
    quiet_libraries,
)
from sam3studio.errors import InputError, ModelSourceError, Sam3StudioError


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
    backend: BackendOpt = "auto",
    translator: TranslatorOpt = "lexicon",
    debug: DebugOpt = False,
) -> None:
    """Segment images by text prompts and write JSON, overlays, masks and cutouts."""
    from sam3studio.cleanup import CleanupOptions
    from sam3studio.export import is_complete, parse_formats, write_outputs
    from sam3studio.prompts import parse_prompts

    quiet_libraries(debug)
    try:
        queries = parse_prompts(prompt)
        fmts = parse_formats(formats)
        cleanup = CleanupOptions(fill_holes=fill_holes, min_island=min_island, smooth=smooth)
        if not 0 < threshold <= 1 or not 0 < mask_threshold < 1:
            raise InputError("--threshold must be in (0, 1] and --mask-threshold in (0, 1)")
    except (ValueError, Sam3StudioError) as exc:
        raise fail(str(exc), debug, code=2) from None

    jobs, bad = _collect_inputs(inputs)
    rows: list[tuple[str, str, str, str]] = [(str(p), "-", "[red]failed[/]", reason) for p, reason in bad]
    todo = [j for j in jobs if overwrite or not is_complete(*j.target(out), fmts)]
    for j in jobs:
        if j not in todo:
            rows.append((str(j.path), "-", "[dim]skipped[/]", "outputs exist (use --overwrite to redo)"))

    failed = len(bad)
    if todo:
        from sam3studio.io.images import load_image
        from sam3studio.loading import load_segmenter

        with console.status(f"Loading SAM 3 from [bold]{model}[/] …"):
            try:
                segmenter = load_segmenter(model, device=device, dtype=dtype, translator=translator, backend=backend)
            except (ModelSourceError, InputError) as exc:
                raise fail(str(exc), debug) from None
        info = segmenter.info()
        console.print(model_line(info), highlight=False)
        try:  # translate once up front: an untranslatable prompt is a usage error, not a per-image failure
            translations = [segmenter.translator(q) for q in queries]
        except Sam3StudioError as exc:
            raise fail(str(exc), debug, code=2) from None
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
                                            cleanup=cleanup, max_instances=max_instances)
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
        err_console.print(f"[red]{plural(failed, 'input')} failed[/]")
        raise typer.Exit(1)
