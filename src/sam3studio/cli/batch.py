"""``sam3studio batch``: the command's Typer wiring; the work is the `sam3studio.batch` package.

torch, transformers and ray are imported by the engines when they run (start-up time of the CLI).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from sam3studio.cli.common import (
    BackendOpt,
    DeviceOpt,
    DtypeOpt,
    ModelOpt,
    console,
    err_console,
    fail,
    model_line,
    plural,
    quiet_libraries,
)
from sam3studio.errors import InputError, ModelSourceError, Sam3StudioError

__all__ = ["batch_command"]

_RAY_ONLY_DEFAULTS = {"--ray-address": None, "--num-workers": 1, "--gpus-per-worker": 0.0, "--cpus-per-worker": 1.0,
                      "--runtime-env": None}


def _parse_runtime_env(value: str) -> dict[str, Any]:
    """``--runtime-env``: inline JSON, or the path of a JSON file (Ray's runtime_env dict)."""
    from sam3studio.batch.sources import BatchInputError

    path = Path(value).expanduser()
    try:
        text = path.read_text(encoding="utf-8") if path.is_file() else value
        env = json.loads(text)
    except (OSError, ValueError) as exc:
        raise BatchInputError(f"--runtime-env must be JSON or a JSON file, e.g. '{{\"pip\": [\"sam3studio\"]}}' "
                              f"({exc})") from None
    if not isinstance(env, dict):
        raise BatchInputError("--runtime-env must be a JSON object, e.g. '{\"pip\": [\"sam3studio\"]}'")
    return env


def _check_options(engine: str, *, ray_address: str | None, num_workers: int, gpus_per_worker: float,
                   cpus_per_worker: float, runtime_env: str | None, batch_size: int, shard_size: int,
                   max_instances: int, max_pixels: int, max_mb: float, url_timeout: float, threshold: float,
                   mask_threshold: float) -> None:
    """Usage errors found before anything is read or loaded (`InputError`, exit code 2)."""
    from sam3studio.batch.runner import ENGINES

    if engine not in ENGINES:
        raise InputError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    given = {"--ray-address": ray_address, "--num-workers": num_workers, "--gpus-per-worker": gpus_per_worker,
             "--cpus-per-worker": cpus_per_worker, "--runtime-env": runtime_env}
    if engine == "local" and (misplaced := [k for k, v in given.items() if v != _RAY_ONLY_DEFAULTS[k]]):
        raise InputError(f"{', '.join(misplaced)} only appl{'ies' if len(misplaced) == 1 else 'y'} to --engine ray")
    for name, value in (("--batch-size", batch_size), ("--num-workers", num_workers), ("--shard-size", shard_size),
                        ("--max-instances", max_instances), ("--max-pixels", max_pixels)):
        if value < 1:
            raise InputError(f"{name} must be at least 1, got {value}")
    if gpus_per_worker < 0 or cpus_per_worker <= 0:
        raise InputError("--gpus-per-worker must be >= 0 and --cpus-per-worker > 0")
    if max_mb <= 0 or url_timeout <= 0:
        raise InputError("--max-mb and --url-timeout must be positive")
    if not 0.01 <= threshold <= 1 or not 0 < mask_threshold < 1:
        raise InputError("--threshold must be in [0.01, 1] and --mask-threshold in (0, 1)")


def batch_command(
    source: Annotated[Path, typer.Argument(help="A folder of images (searched recursively), a text manifest (one path "
                                           "or URL per line) or a Parquet manifest with a 'path' column.",
                                           show_default=False)],
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="What to find; repeat or comma-separate.",
                                              show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for shard-NNNNN.jsonl files (re-run to resume).",
                                      show_default=False)],
    engine: Annotated[str, typer.Option("--engine", help="local (this process) or ray (Ray Data actor pool).")] = "local",
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Ray cluster: auto, ray://head:10001, ...",
                                                    show_default="RAY_ADDRESS, else a new local Ray")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per Ray Data batch (ray engine).")] = 8,
    num_workers: Annotated[int, typer.Option("--num-workers", help="Model actors, each loads SAM 3 once (ray engine).")] = 1,
    gpus_per_worker: Annotated[float, typer.Option("--gpus-per-worker", help="GPUs per actor, e.g. 1 (ray engine).")] = 0.0,
    cpus_per_worker: Annotated[float, typer.Option("--cpus-per-worker", help="CPUs per actor (ray engine).")] = 1.0,
    runtime_env: Annotated[str | None, typer.Option("--runtime-env", help="Ray runtime_env as JSON or a JSON file "
                                                    "(ray engine).", show_default=False)] = None,
    shard_size: Annotated[int, typer.Option("--shard-size", help="Images per output shard (the unit of resume).")] = 1000,
    fmt: Annotated[str, typer.Option("--format", "-f", help="Shard format: jsonl or parquet.")] = "jsonl",
    threshold: Annotated[float, typer.Option("--threshold", "-t", help="Detection score threshold.")] = 0.5,
    mask_threshold: Annotated[float, typer.Option("--mask-threshold", help="Mask probability threshold.")] = 0.5,
    max_instances: Annotated[int, typer.Option("--max-instances", help="Keep at most this many per image.")] = 100,
    max_pixels: Annotated[int, typer.Option("--max-pixels", help="Refuse images with more pixels.")] = 50_000_000,
    max_mb: Annotated[float, typer.Option("--max-mb", help="Refuse files and downloads larger than this.")] = 50.0,
    url_timeout: Annotated[float, typer.Option("--url-timeout", help="Seconds allowed per URL download.")] = 10.0,
    allow_private_urls: Annotated[bool, typer.Option("--allow-private-urls", help="Let URLs reach private addresses "
                                                     "(trusted networks only).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Delete this job's shards in --out and start again.")] = False,
    model: ModelOpt = "facebook/sam3",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    backend: BackendOpt = "auto",
    translator: Annotated[str, typer.Option("--translator", help="Prompt translator: lexicon, none, or a MarianMT folder.",
                                            envvar="SAM3STUDIO_TRANSLATOR")] = "lexicon",
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks, library logs and Ray's progress.")] = False,
) -> None:
    """Segment a folder or manifest of images into resumable JSON Lines shards (locally or on Ray)."""
    from rich.markup import escape

    from sam3studio.batch.ray_engine import RayOptions
    from sam3studio.batch.runner import plan_batch
    from sam3studio.batch.sources import ReadLimits
    from sam3studio.batch.work import BatchSpec
    from sam3studio.prompts import parse_prompts
    quiet_libraries(debug)
    try:
        _check_options(engine, ray_address=ray_address, num_workers=num_workers, gpus_per_worker=gpus_per_worker,
                       cpus_per_worker=cpus_per_worker, runtime_env=runtime_env, batch_size=batch_size,
                       shard_size=shard_size, max_instances=max_instances, max_pixels=max_pixels, max_mb=max_mb,
                       url_timeout=url_timeout, threshold=threshold, mask_threshold=mask_threshold)
        queries = parse_prompts(prompt)
        env = _parse_runtime_env(runtime_env) if runtime_env else None
        from sam3studio.translate import get_translator

        translate = get_translator(translator)
        translations = [translate(q) for q in queries]  # an untranslatable prompt is a usage error, found up front
        limits = ReadLimits(max_bytes=int(max_mb * 1024 * 1024), max_pixels=max_pixels, url_timeout=url_timeout,
                            allow_private_urls=allow_private_urls)
        spec = BatchSpec(prompts=tuple(queries), model=model, device=device, dtype=dtype, backend=backend, translator=translator,
                         threshold=threshold, mask_threshold=mask_threshold, max_instances=max_instances, limits=limits)
        plan = plan_batch(source, out, spec, shard_size=shard_size, fmt=fmt, overwrite=overwrite)
    except (Sam3StudioError, ValueError, OSError) as exc:
        raise fail(str(exc), debug, code=2) from None

    for q, tr in zip(queries, translations, strict=True):
        if tr.query != q or tr.unknown:
            note = f" [yellow](not understood: {', '.join(tr.unknown)})[/]" if tr.unknown else ""
            console.print(f"Prompt [bold]{escape(q)}[/] → {escape(tr.query)}{note}", highlight=False)
    n_shards, done = len(plan.shards), len(plan.shards) - len(plan.pending)
    console.print(f"{plural(len(plan.items), 'input')} from {escape(str(source))} → {plural(n_shards, 'shard')} "
                  f"of up to {shard_size} in "
                  f"{escape(str(out))} "
                  f"({done} already done, {len(plan.pending)} to do)", highlight=False, soft_wrap=True)
    if not plan.pending:
        console.print(f"Nothing to do: every shard is written (use --overwrite to redo). "
                      f"Failed inputs: {plan.job.count_errors(range(n_shards))}, listed in shard-*.errors.jsonl.",
                      highlight=False, soft_wrap=True)
        return

    ray_options = RayOptions(address=ray_address, num_workers=num_workers, batch_size=batch_size,
                             gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker, runtime_env=env,
                             verbose=debug)
    _run(plan, spec, engine, ray_options, model=model, out=out, debug=debug)


def _run(plan: Any, spec: Any, engine: str, ray_options: Any, *, model: str, out: Path, debug: bool) -> None:
    """Run the planned shards with a progress bar, then print the summary."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from sam3studio.batch.ray_engine import RayEngineError
    from sam3studio.batch.runner import run_batch

    ray_address, num_workers, gpus_per_worker = ray_options.address, ray_options.num_workers, ray_options.gpus_per_worker
    progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("images"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                        console=console, disable=engine != "local" or plan.pending_images < 2)
    task = progress.add_task("Segmenting", total=plan.pending_images)

    def on_start(what: Any) -> None:
        if engine == "local":
            info = what.segmenter.info()
            progress.console.print(model_line(info), highlight=False)
        else:
            res = ", ".join(f"{k} {v:g}" for k, v in sorted(what.items()) if k in ("CPU", "GPU"))
            progress.console.print(f"Ray: {escape(ray_address or 'local or RAY_ADDRESS')} ({res}); {num_workers} model actor(s), "
                                   f"{gpus_per_worker:g} GPU each", highlight=False)

    def on_shard(shard: int, ok: int, failed: int) -> None:
        failed_note = f", [red]{failed} failed[/]" if failed else ""
        progress.console.print(f"shard {shard:05d} written: {ok} ok{failed_note}", highlight=False)

    status = console.status(f"Loading SAM 3 from [bold]{escape(model)}[/] …" if engine == "local"
                            else f"Starting the Ray job on {ray_address or 'local Ray'} …")
    status.start()

    def started(what: Any) -> None:
        status.stop()
        on_start(what)

    try:
        with progress:
            summary = run_batch(plan, spec, engine=engine, ray_options=ray_options, on_start=started,
                                on_image=lambda: progress.advance(task), on_shard=on_shard)
    except (ModelSourceError, RayEngineError, InputError) as exc:
        status.stop()
        raise fail(str(exc), debug) from None
    except KeyboardInterrupt:
        status.stop()
        err_console.print("[yellow]Interrupted: finished shards are kept; re-run to resume.[/]")
        raise typer.Exit(130) from None
    finally:
        status.stop()

    images = summary.images_ok + summary.images_failed
    work_s = max(summary.seconds - summary.startup_seconds, 0.0)
    startup = "loading the model" if engine == "local" else "starting Ray"
    console.print(f"Done in {summary.seconds:.1f} s ({startup} {summary.startup_seconds:.1f} s"
                  + (f", then {work_s / images:.2f} s/image" if images else "") + "): "
                  f"{plural(summary.shards_written, 'shard')} written, {summary.shards_skipped} skipped (already done); "
                  f"{plural(summary.images_ok, 'image')} ok, {summary.images_failed} failed.", highlight=False,
                  soft_wrap=True)
    if summary.errors_total:
        err_console.print(f"[yellow]{plural(summary.errors_total, 'input')} failed in this job; the reasons are in "
                          f"{escape(str(out))}/shard-*.errors.jsonl[/]", highlight=False, soft_wrap=True)
