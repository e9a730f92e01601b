"""``sam3studio dataset label | review | export | import | info``: the data engine's commands (a Typer group).

The work is the `sam3studio.dataset` package; this module wires options and prints. torch and the model
load only inside ``label`` and ``review`` (start-up time of the CLI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from sam3studio.cli.common import (
    DebugOpt,
    DeviceOpt,
    DtypeOpt,
    ModelOpt,
    console,
    err_console,
    fail,
    plural,
    quiet_libraries,
    setting_option,
)
from sam3studio.errors import ModelSourceError, Sam3StudioError

__all__ = ["app"]

app = typer.Typer(name="dataset", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="The data engine: auto-label images, review and correct them in the browser, export for training.")


def _progress(total: int, what: str):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn(what), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                    disable=total < 2)


@app.command("label")
def label_command(
    source: Annotated[Path, typer.Argument(help="A folder of images (searched recursively) or a manifest (one path per "
                                           "line, or Parquet with a 'path' column), as for `batch`.", show_default=False)],
    classes: Annotated[str, typer.Option("--classes", "-c", help="The class list, comma-separated: \"hard hat, person\". "
                                         "Each class is also the prompt that finds it.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The dataset folder (created, or extended: re-run to add new "
                                      "images or resume; reviewed images are never overwritten).", show_default=False)],
    threshold: Annotated[float, typer.Option("--threshold", "-t", help="Detection score threshold (0.01 to 1).")] = 0.5,
    mask_threshold: Annotated[float, typer.Option("--mask-threshold", help="Mask probability threshold.")] = 0.5,
    max_instances: Annotated[int, typer.Option("--max-instances", help="Keep at most this many per image.")] = 100,
    engine: Annotated[str, typer.Option("--engine", help="local (this process) or ray (Ray Data actor pool).")] = "local",
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Ray cluster (ray engine).",
                                                    show_default="RAY_ADDRESS, else a new local Ray")] = None,
    num_workers: Annotated[int, typer.Option("--num-workers", help="Model actors (ray engine).")] = 1,
    gpus_per_worker: Annotated[float, typer.Option("--gpus-per-worker", help="GPUs per actor (ray engine).")] = 0.0,
    model: ModelOpt = "facebook/sam3",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    translator: Annotated[str, typer.Option("--translator", help="Prompt translator: lexicon, none, or a MarianMT folder.",
                                            envvar="SAM3STUDIO_TRANSLATOR")] = "lexicon",
    debug: DebugOpt = False,
) -> None:
    """Propose instances of each class for every image of SOURCE into the dataset at --out (resumable)."""
    from sam3studio.batch.ray_engine import RayEngineError, RayOptions
    from sam3studio.dataset.label import ENGINES, label_dataset
    from sam3studio.dataset.store import DatasetError, parse_classes

    quiet_libraries(debug)
    try:
        names = parse_classes(classes)
        if engine not in ENGINES:
            raise DatasetError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        if not 0.01 <= threshold <= 1 or not 0 < mask_threshold < 1 or max_instances < 1:
            raise DatasetError("--threshold must be in [0.01, 1], --mask-threshold in (0, 1), --max-instances >= 1")
    except Sam3StudioError as exc:
        raise fail(str(exc), debug, code=2) from None
    progress = _progress(2, "images")
    task = progress.add_task("Labelling", total=None)
    status = console.status(f"Loading SAM 3 from [bold]{escape(model)}[/] …")

    def on_start(pending: int) -> None:
        status.stop()
        console.print(f"{plural(pending, 'image')} to label with {', '.join(names)}", highlight=False)
        progress.update(task, total=pending)
        progress.start()

    ray = RayOptions(address=ray_address, num_workers=num_workers, gpus_per_worker=gpus_per_worker, verbose=debug)
    try:
        status.start()
        summary = label_dataset(source, out, names, model=model, device=device, dtype=dtype, translator=translator,
                                threshold=threshold, mask_threshold=mask_threshold, max_instances=max_instances,
                                engine=engine, ray_options=ray, on_start=on_start,
                                on_image=lambda ok: progress.advance(task))
    except DatasetError as exc:
        raise fail(str(exc), debug, code=2) from None
    except (ModelSourceError, RayEngineError, Sam3StudioError) as exc:
        raise fail(str(exc), debug) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]Interrupted: every image labelled so far is stored; re-run to resume.[/]")
        raise typer.Exit(130) from None
    finally:
        status.stop()
        progress.stop()
    console.print(f"Dataset {escape(str(summary.dataset))}: {plural(summary.images_total, 'image')} "
                  f"({summary.images_added} new); labelled {summary.labelled}, failed {summary.failed} "
                  f"in {summary.seconds:.1f} s.", highlight=False, soft_wrap=True)
    if summary.failed:
        err_console.print(f"[yellow]{plural(summary.failed, 'image')} could not be labelled (the review shows why); "
                          "a re-run tries them again.[/]", highlight=False)
    console.print(f"Next: [bold]sam3studio dataset review {escape(str(out))}[/]", highlight=False)


@app.command("review")
def review_command(
    datasets: Annotated[list[Path], typer.Argument(help="Dataset folder(s) to review.", show_default=False)],
    model: Annotated[str | None, setting_option("model", "--model", "-m", help="The model for adding instances by "
                                                "text, box or clicks (clicks need a sam3_video checkpoint).")] = None,
    host: Annotated[str | None, setting_option("host", "--host", help="Address to listen on.")] = None,
    port: Annotated[int | None, setting_option("port", "--port", help="Port.")] = None,
    device: Annotated[str | None, setting_option("device", "--device", help="auto, cpu, cuda, cuda:N or mps.")] = None,
    dtype: Annotated[str | None, setting_option("dtype", "--dtype", help="auto, float32, bfloat16 or float16.")] = None,
    lang: Annotated[str | None, setting_option("lang", "--lang", help="UI language: auto, en or zh.")] = None,
    debug: DebugOpt = False,
) -> None:
    """Serve the web UI with these datasets in its Review tab (the same server as `serve --dataset`)."""
    import logging

    from pydantic import ValidationError

    from sam3studio.dataset.review import DatasetRegistry
    from sam3studio.settings import Settings

    quiet_libraries(debug)
    overrides = {k: v for k, v in {"model": model, "host": host, "port": port, "device": device, "dtype": dtype,
                                   "lang": lang}.items() if v is not None}
    try:
        settings = Settings(datasets=datasets, **overrides)
        DatasetRegistry(settings.datasets).close()  # a folder that is not a dataset fails here, in one line
    except ValidationError as exc:
        raise fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()), debug, code=2) from None
    except Sam3StudioError as exc:
        raise fail(str(exc), debug, code=2) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    from sam3studio.api import create_app

    console.print(f"Reviewing {plural(len(datasets), 'dataset')} at [bold]http://{settings.host}:{settings.port}/[/] "
                  f"(model {escape(settings.model)} loads in the background)", highlight=False)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info" if debug else "warning")


@app.command("export")
def export_command(
    dataset: Annotated[Path, typer.Argument(help="The dataset folder.", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", "-f", help="coco, yolo, voc, labelstudio or cvat.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The export folder (must be empty, or --overwrite).",
                                      show_default=False)],
    split: Annotated[str, typer.Option("--split", help="train,val,test fractions.")] = "0.8,0.1,0.1",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split.")] = 0,
    include_unreviewed: Annotated[bool, typer.Option("--include-unreviewed", help="Export unreviewed images too "
                                                     "(default: accepted and corrected only; skipped never).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace what --out holds.")] = False,
    polygons: Annotated[bool, typer.Option("--polygons", help="Masks as polygons (coco, labelstudio).")] = False,
    rle: Annotated[bool, typer.Option("--rle", help="Masks as RLE (cvat; coco and labelstudio do by default).")] = False,
    yolo_task: Annotated[str, typer.Option("--yolo-task", help="segment (polygons) or detect (boxes).")] = "segment",
    images: Annotated[str, typer.Option("--images", help="copy, link (symlinks) or none (refer to the files where "
                                        "they are; not for yolo).")] = "copy",
    image_url_prefix: Annotated[str | None, typer.Option("--image-url-prefix", help="labelstudio: what precedes the "
                                                         "image name in each task's data.image.",
                                                         show_default="/data/local-files/?d=images/")] = None,
    debug: DebugOpt = False,
) -> None:
    """Write the dataset's reviewed images and instances in a training or annotation format, split train/val/test."""
    from sam3studio.dataset.export import LS_IMAGE_PREFIX, ExportOptions, export_dataset
    from sam3studio.dataset.splits import SPLITS, parse_split
    from sam3studio.dataset.store import DatasetError, DatasetStore

    try:
        if polygons and rle:
            raise DatasetError("give --polygons or --rle, not both")
        opts = ExportOptions(format=fmt, split=parse_split(split), seed=seed, include_unreviewed=include_unreviewed,
                             overwrite=overwrite, masks="polygon" if polygons else "rle" if rle else "auto",
                             yolo_task=yolo_task, images=images, image_url_prefix=image_url_prefix or LS_IMAGE_PREFIX)
        progress = _progress(2, "images")
        task = progress.add_task("Exporting", total=None)

        def on_image() -> None:  # the bar starts with the first image: a refused export prints one line only
            if not progress.live.is_started:
                progress.start()
            progress.advance(task)

        with DatasetStore.open(dataset) as store:
            try:
                summary = export_dataset(store, out, opts, on_image=on_image)
            finally:
                progress.stop()
    except Sam3StudioError as exc:
        raise fail(str(exc), debug, code=2) from None
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc}", debug) from None
    parts = [f"{name} {summary.images[name]} images / {summary.instances[name]} instances" for name in SPLITS
             if summary.images.get(name)]
    total = sum(summary.images.values())
    console.print(f"Exported {plural(total, 'image')} as {fmt} to {escape(str(out))} in {summary.seconds:.1f} s"
                  + (f": {', '.join(parts)}" if parts else ""), highlight=False, soft_wrap=True)
    if not total:
        which = "accepted or corrected" + (" or unreviewed" if include_unreviewed else "")
        err_console.print(f"[yellow]No image was {which}: review some (sam3studio dataset review), or pass "
                          "--include-unreviewed.[/]", highlight=False)
    if summary.missing:
        err_console.print(f"[yellow]{plural(len(summary.missing), 'image')} left out: file missing "
                          f"(first: {escape(summary.missing[0])})[/]", highlight=False, soft_wrap=True)
    for path in summary.files:
        console.print(f"  {escape(path)}", highlight=False)


@app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="A COCO instances .json or a YOLO data.yaml.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The dataset folder (created or extended).", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", "-f", help="auto (from the file name), coco or yolo.")] = "auto",
    images: Annotated[Path | None, typer.Option("--images", "-i", help="COCO: the folder the file_name entries are in.",
                                                show_default="the file's folder")] = None,
    debug: DebugOpt = False,
) -> None:
    """Start or extend a dataset from labels another tool made (pre-labels to review)."""
    from sam3studio.dataset.importer import import_labels

    try:
        summary = import_labels(file, out, fmt=fmt, images=images)
    except Sam3StudioError as exc:
        raise fail(str(exc), debug, code=2) from None
    console.print(f"Imported {summary.format} from {escape(str(file))} into {escape(str(summary.dataset))}: "
                  f"{plural(summary.images_added, 'new image')}, {plural(summary.instances, 'instance')} on "
                  f"{summary.images_labelled} image(s); {summary.images_kept} left as they were; classes "
                  f"{escape(', '.join(summary.classes))}.", highlight=False, soft_wrap=True)
    if summary.crowd_skipped:
        err_console.print(f"[yellow]{plural(summary.crowd_skipped, 'crowd annotation')} (iscrowd) skipped.[/]")
    if summary.missing:
        err_console.print(f"[yellow]{plural(len(summary.missing), 'image file')} not found (imported; the review shows "
                          f"them as missing), first: {escape(summary.missing[0])}[/]", highlight=False, soft_wrap=True)


@app.command("info")
def info_command(
    dataset: Annotated[Path, typer.Argument(help="The dataset folder.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    debug: DebugOpt = False,
) -> None:
    """Classes and review progress of a dataset."""
    import json

    from sam3studio.dataset.store import DatasetStore

    try:
        with DatasetStore.open(dataset) as store:
            info: dict[str, Any] = {"dataset": str(store.root), "schema_version": store.schema_version,
                                    "classes": store.classes, "progress": store.progress()}
    except Sam3StudioError as exc:
        raise fail(str(exc), debug, code=2) from None
    if as_json:
        console.print_json(json.dumps(info))
        return
    p = info["progress"]
    console.print(f"{escape(info['dataset'])}: classes {escape(', '.join(info['classes']))}; {p['reviewed']} of "
                  f"{p['total']} reviewed (accepted {p['accepted']}, corrected {p['corrected']}, skipped {p['skipped']})",
                  highlight=False, soft_wrap=True)
