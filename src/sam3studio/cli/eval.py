"""``sam3studio eval``: measure the model (or saved predictions) on labelled data.

The work is the `sam3studio.evaluation` package. Heavy imports (torch, pycocotools, matplotlib) happen
inside the command, for the CLI's start-up time.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sam3studio.cli.common import (
    BackendOpt,
    DebugOpt,
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

if TYPE_CHECKING:
    from rich.table import Table

    from sam3studio.evaluation.metrics import EvalReport

__all__ = ["eval_command"]

MAX_CATEGORY_ROWS = 30


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "[dim]n/a[/]"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _summary_table(report: EvalReport, title: str) -> Table:
    from rich.table import Table

    table = Table(title=title, show_header=True,
                  caption=f"cgF1, instance and presence numbers at detection threshold {report.score_threshold:g}")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    table.add_column("notes", overflow="fold")
    ds = report.dataset
    table.add_row("images / pairs", f"{ds['images']} / {ds['pairs']}",
                  f"{ds['format']}, {plural(ds['categories'], 'prompt')}, {ds['positive_pairs']} positive, "
                  f"{plural(ds['annotations'], 'instance')}")
    for kind, label in (("segm", "mask"), ("bbox", "box")):
        ap = report.ap.get(kind)
        if ap is None:
            table.add_row(f"{label} AP", _fmt(None), "ground truth or predictions have no masks")
        else:
            table.add_row(f"{label} AP / AP50 / AP75", f"{_fmt(ap['AP'])} / {_fmt(ap['AP50'])} / {_fmt(ap['AP75'])}",
                          "pycocotools COCOeval")
    cg = report.cgf1
    table.add_row("cgF1", _fmt(cg["cgF1"]), f"pmF1 {_fmt(cg['pmF1'])} x IL_MCC {_fmt(cg['IL_MCC'])}, "
                  f"{'mask' if report.iou_type == 'segm' else 'box'} IoU .50:.95")
    table.add_row("cgF1@50 / @75", f"{_fmt(cg['cgF1@50'])} / {_fmt(cg['cgF1@75'])}", "")
    table.add_row("instance P / R / F1", f"{_fmt(cg['precision@50'])} / {_fmt(cg['recall@50'])} / {_fmt(cg['F1@50'])}",
                  "IoU >= 0.5")
    pr = report.presence
    table.add_row("presence P / R / F1", f"{_fmt(pr['precision'])} / {_fmt(pr['recall'])} / {_fmt(pr['f1'])}",
                  f"TP {pr['tp']} FP {pr['fp']} FN {pr['fn']} TN {pr['tn']}")
    if report.presence_head is not None:
        ph = report.presence_head
        table.add_row("presence head P / R / F1", f"{_fmt(ph['precision'])} / {_fmt(ph['recall'])} / {_fmt(ph['f1'])}",
                      f"SAM 3 presence score >= {ph['threshold']:g}")
    rec = report.recommended_threshold
    if rec is not None:
        best = next(row for row in report.sweep if row["threshold"] == rec)
        table.add_row("recommended threshold", f"{rec:g}", f"best cgF1 ({_fmt(best['cgF1'])}) of {len(report.sweep)}")
    else:
        table.add_row("recommended threshold", _fmt(None), "no positive pairs to choose by")
    if report.latency is not None:
        lat = report.latency
        table.add_row("latency per image", f"{lat['mean_s'] * 1000:.1f} ms",
                      f"mean; p50 {lat['p50_s'] * 1000:.1f}, p90 {lat['p90_s'] * 1000:.1f} ms")
    if report.ignored_detections:
        table.add_row("ignored detections", str(report.ignored_detections), "on images or prompts not in the ground truth")
    return table


def _category_table(report: EvalReport) -> Table:
    from rich.table import Table

    rows = sorted(report.per_category, key=lambda r: (-r["instances"], r["name"]))
    table = Table(title="per prompt" + (f" (top {MAX_CATEGORY_ROWS} of {len(rows)} by instances)"
                                       if len(rows) > MAX_CATEGORY_ROWS else ""))
    table.caption = "P / R / F1: image-level presence at the detection threshold"
    for col in ("prompt", "inst.", "mask AP", "AP50", "box AP", "P", "R", "F1"):
        table.add_column(col, justify="left" if col == "prompt" else "right", overflow="fold")
    for r in rows[:MAX_CATEGORY_ROWS]:
        p = r["presence"] or {}
        label = r["name"] if r["prompt"] == r["name"] else f"{r['name']} → {r['prompt']}"
        table.add_row(label, str(r["instances"]), _fmt(r["AP_segm"]), _fmt(r["AP50_segm"]), _fmt(r["AP_bbox"]),
                      _fmt(p.get("precision")), _fmt(p.get("recall")), _fmt(p.get("f1")))
    return table


def eval_command(
    gt: Annotated[Path, typer.Argument(help="Ground truth: COCO instances JSON or SA-Co JSON.", show_default=False)],
    images: Annotated[Path | None, typer.Option("--images", "-i", help="Folder the images' file_name entries are in "
                                                "(default: the ground truth's folder).", show_default=False)] = None,
    fmt: Annotated[str, typer.Option("--format", help="Ground-truth format: auto, coco or saco.")] = "auto",
    mapping: Annotated[Path | None, typer.Option("--mapping", help="JSON object mapping category name -> prompt.",
                                                 show_default=False)] = None,
    predictions: Annotated[Path | None, typer.Option("--predictions", help="Evaluate saved predictions; loads no model.",
                                                     show_default=False)] = None,
    save_predictions: Annotated[Path | None, typer.Option("--save-predictions", help="Write this run's predictions "
                                                          "to this JSON file.", show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for report.json, pr_curves.png and "
                                      "f1_vs_threshold.png.")] = Path("sam3studio-eval"),
    threshold: Annotated[float, typer.Option("--threshold", "-t", help="Detection threshold for the presence and "
                                             "cgF1 numbers (the sweep covers 0.05-0.95).")] = 0.5,
    mask_threshold: Annotated[float, typer.Option("--mask-threshold", help="Mask probability threshold.")] = 0.5,
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate only the first N images.",
                                              show_default=False)] = None,
    model: ModelOpt = "facebook/sam3",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    backend: BackendOpt = "auto",
    debug: DebugOpt = False,
) -> None:
    """Measure the model on labelled data (COCO or SA-Co): mask/box AP, presence F1, cgF1, a threshold sweep."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from sam3studio.errors import Sam3StudioError
    from sam3studio.evaluation.data import EvalDataError, load_gt, load_mapping
    from sam3studio.evaluation.metrics import evaluate
    from sam3studio.evaluation.plots import write_plots
    from sam3studio.evaluation.predictions import Predictions, predict
    quiet_libraries(debug)
    try:
        if not 0 < threshold <= 1 or not 0 < mask_threshold < 1:
            raise EvalDataError("--threshold must be in (0, 1] and --mask-threshold in (0, 1)")
        if limit is not None and limit < 1:
            raise EvalDataError(f"--limit must be at least 1, got {limit}")
        if predictions is not None and save_predictions is not None:
            raise EvalDataError("--save-predictions has nothing to save with --predictions (no model runs)")
        if fmt not in ("auto", "coco", "saco"):
            raise EvalDataError(f"--format must be auto, coco or saco, got {fmt!r}")
        if images is not None and not images.is_dir():
            raise EvalDataError(f"--images {images}: no such folder")
        names = load_mapping(mapping) if mapping is not None else None
        dataset = load_gt(gt, images, fmt, names).subset(limit)
        saved = Predictions.load(predictions) if predictions is not None else None
    except (Sam3StudioError, ValueError, OSError) as exc:
        raise fail(str(exc), debug, code=2) from None

    if saved is None:
        missing = [dataset.image_path(im) for im in dataset.images if not dataset.image_path(im).is_file()]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise fail(f"image {missing[0]}: no such file{more} (set the images folder with --images)", debug, code=2)
        from sam3studio.errors import InputError, ModelSourceError
        from sam3studio.loading import load_segmenter

        with console.status(f"Loading SAM 3 from [bold]{model}[/] …"):
            try:
                segmenter = load_segmenter(model, device=device, dtype=dtype, backend=backend)
            except (ModelSourceError, InputError) as exc:
                raise fail(str(exc), debug) from None
        info = segmenter.info()
        console.print(model_line(info), highlight=False)
        progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("images"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                            console=console, disable=len(dataset.images) < 2)
        try:
            with progress:
                task = progress.add_task("Evaluating", total=len(dataset.images))
                saved = predict(segmenter, dataset, mask_threshold=mask_threshold,
                                on_image=lambda _im: progress.advance(task))
        except (Sam3StudioError, ValueError, OSError) as exc:
            raise fail(str(exc), debug) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]Interrupted: nothing was evaluated.[/]")
            raise typer.Exit(130) from None
        if save_predictions is not None:
            try:
                saved.save(save_predictions)
            except OSError as exc:
                raise fail(f"could not write {save_predictions}: {exc}", debug) from None

    try:
        report = evaluate(dataset, saved, score_threshold=threshold)
        out.mkdir(parents=True, exist_ok=True)
        report.save_json(out / "report.json")
        write_plots(report, out)
    except (Sam3StudioError, ValueError, OSError) as exc:
        raise fail(str(exc), debug) from None

    console.print(_summary_table(report, f"sam3studio eval → {out}"))
    console.print(_category_table(report))
    written = [out / "report.json", out / "pr_curves.png", out / "f1_vs_threshold.png"]
    if save_predictions is not None:
        written.append(save_predictions)
    console.print("Wrote " + ", ".join(str(p) for p in written), highlight=False, soft_wrap=True)
