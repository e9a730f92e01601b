"""``sam3studio eval``: measure the model (or saved predictions) on labelled data.

The work is the `sam3studio.evaluation` package. Heavy imports (torch, pycocotools, matplotlib) happen
inside the command, for the CLI's start-up time.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sam3studio.cli.common import DebugOpt, DeviceOpt, DtypeOpt, ModelOpt, console, err_console, fail, plural, quiet_libraries

if TYPE_CHECKING:
    from rich.progress import Progress
    from rich.table import Table

    from sam3studio.core import Segmenter
    from sam3studio.evaluation.data import EvalDataset
    from sam3studio.evaluation.metrics import EvalReport
    from sam3studio.evaluation.video import VideoReport
    from sam3studio.evaluation.video_data import VideoDataset, VideoPredictions

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
                      f"mean; p50 {lat['p50_s'] * 1000:.1f}, p90 {lat['p90_s'] * 1000:.1f}, "
                      f"p99 {lat['p99_s'] * 1000:.1f} ms")
    if report.memory:
        table.add_row("peak memory", f"{report.memory['peak_rss_bytes'] / 2**20:.0f} MiB", "process resident set"
                      + (f"; {report.memory['device']} {report.memory['peak_device_bytes'] / 2**20:.0f} MiB"
                         if report.memory.get("peak_device_bytes") is not None else ""))
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


def _video_table(report: VideoReport, title: str) -> Table:
    from rich.table import Table

    v = report.video
    ds = report.dataset
    table = Table(title=title, caption=f"tracking metrics on tracks scoring >= {report.score_threshold:g}; "
                  "video mask AP on all tracks")
    for col in ("metric", "value", "notes"):
        table.add_column(col, justify="right" if col == "value" else "left", overflow="fold")
    table.add_row("videos / frames", f"{ds['videos']} / {ds['frames']}",
                  f"{ds['format']}, {ds['categories']} prompts, {ds['tracks']} ground-truth tracks")
    table.add_row("HOTA", _fmt(v["hota"]), f"DetA {_fmt(v['deta'])}, AssA {_fmt(v['assa'])} (trackeval)")
    table.add_row("IDF1", _fmt(v["idf1"]), "IoU >= 0.5")
    table.add_row("MOTA / ID switches", f"{_fmt(v['mota'])} / {_fmt(v['id_switches'])}", "CLEAR MOT, IoU >= 0.5")
    table.add_row("video mask AP / AP50", f"{_fmt(v['mask_ap'])} / {_fmt(v['mask_ap50'])}", "spatio-temporal mask IoU")
    if report.latency:
        table.add_row("latency per frame", f"{report.latency['p50_s'] * 1000:.1f} ms",
                      f"p50; p99 {report.latency['p99_s'] * 1000:.1f} ms")
    if report.ignored_tracks:
        table.add_row("ignored tracks", str(report.ignored_tracks), "on videos or prompts not asked")
    return table


def _progress(total: int, unit: str) -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn(unit), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=console, disable=total < 2)


def _load_segmenter(model: str, device: str, dtype: str, debug: bool) -> Segmenter:
    from sam3studio.errors import InputError, ModelSourceError
    from sam3studio.loading import load_segmenter

    with console.status(f"Loading SAM 3 from [bold]{model}[/] …"):
        try:
            segmenter = load_segmenter(model, device=device, dtype=dtype)
        except (ModelSourceError, InputError) as exc:
            raise fail(str(exc), debug) from None
    info = segmenter.info()
    console.print(f"Model [bold]{info['source']}[/] on {info['device']} ({info['dtype']})", highlight=False)
    return segmenter


def _check_images(dataset: EvalDataset, debug: bool) -> None:
    missing = [dataset.image_path(im) for im in dataset.images if not dataset.image_path(im).is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise fail(f"image {missing[0]}: no such file{more} (set the images folder with --images)", debug, code=2)


def _predict_images(segmenter: Segmenter, dataset: EvalDataset, mask_threshold: float, debug: bool):
    from sam3studio.errors import Sam3StudioError
    from sam3studio.evaluation.predictions import predict

    progress = _progress(len(dataset.images), "images")
    try:
        with progress:
            task = progress.add_task("Evaluating", total=len(dataset.images))
            return predict(segmenter, dataset, mask_threshold=mask_threshold, on_image=lambda _im: progress.advance(task))
    except (Sam3StudioError, ValueError, OSError) as exc:
        raise fail(str(exc), debug) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]Interrupted: nothing was evaluated.[/]")
        raise typer.Exit(130) from None


def _run_clicks(segmenter: Segmenter, dataset: EvalDataset, max_clicks: int, mask_threshold: float, model: str,
                debug: bool) -> dict[str, Any]:
    from sam3studio.errors import Sam3StudioError, TrackerUnavailable
    from sam3studio.evaluation.clicks import evaluate_clicks, segmenter_refiner

    total = sum(1 for a in dataset.annotations if not a.get("iscrowd", 0))
    progress = _progress(total, "objects")
    try:
        with progress:
            task = progress.add_task(f"Clicking (up to {max_clicks} per object)", total=total)
            return evaluate_clicks(segmenter_refiner(segmenter, mask_threshold), dataset, max_clicks=max_clicks,
                                   on_object=lambda n: progress.update(task, completed=n))
    except TrackerUnavailable:
        raise fail(f"--clicks needs a checkpoint with SAM 3's tracker (model_type 'sam3_video', as facebook/sam3 "
                   f"is); '{model}' is an image-only checkpoint", debug, code=2) from None
    except (Sam3StudioError, ValueError, OSError) as exc:
        raise fail(str(exc), debug) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]Interrupted: no click results.[/]")
        raise typer.Exit(130) from None


def _predict_videos(dataset: VideoDataset, model: str, device: str, dtype: str, threshold: float,
                    debug: bool) -> VideoPredictions:
    from sam3studio.errors import InputError, ModelSourceError, Sam3StudioError
    from sam3studio.evaluation.video_predict import predict_video
    from sam3studio.video import load_video_segmenter

    with console.status(f"Loading SAM 3 (video) from [bold]{model}[/] …"):
        try:
            segmenter = load_video_segmenter(model, device=device, dtype=dtype)
        except (ModelSourceError, InputError, ValueError, OSError) as exc:
            raise fail(str(exc), debug) from None
    progress = _progress(len(dataset.videos), "videos")
    try:
        with progress:
            task = progress.add_task("Tracking", total=len(dataset.videos))
            return predict_video(segmenter, dataset, score_threshold=threshold, on_video=lambda _v: progress.advance(task))
    except (Sam3StudioError, ValueError, OSError) as exc:
        raise fail(str(exc), debug) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]Interrupted: nothing was evaluated.[/]")
        raise typer.Exit(130) from None


def _eval_video(dataset: VideoDataset, predictions: Path | None, save_predictions: Path | None, out: Path,
                threshold: float, model: str, device: str, dtype: str, debug: bool) -> None:
    from sam3studio.errors import Sam3StudioError
    from sam3studio.evaluation.html import write_html
    from sam3studio.evaluation.video import evaluate_video
    from sam3studio.evaluation.video_data import VideoPredictions

    try:
        saved = VideoPredictions.load(predictions, dataset) if predictions is not None else None
    except (Sam3StudioError, ValueError, OSError) as exc:
        raise fail(str(exc), debug, code=2) from None
    if saved is None:
        saved = _predict_videos(dataset, model, device, dtype, threshold, debug)
    try:
        if save_predictions is not None:
            saved.save(save_predictions)
        report = evaluate_video(dataset, saved, score_threshold=threshold)
        out.mkdir(parents=True, exist_ok=True)
        report.save_json(out / "report.json")
        write_html(out / "report.html", title=f"sam3studio eval: {Path(dataset.source).name}", video=report)
    except (Sam3StudioError, ValueError, OSError) as exc:
        raise fail(str(exc), debug) from None
    console.print(_video_table(report, f"sam3studio eval → {out}"))
    written = [out / "report.json", out / "report.html", *([save_predictions] if save_predictions else [])]
    console.print("Wrote " + ", ".join(str(p) for p in written), highlight=False, soft_wrap=True)


def _write_image_outputs(report: EvalReport, clicks: dict[str, Any] | None, dataset: EvalDataset, out: Path) -> list[Path]:
    import json

    from sam3studio.evaluation.html import write_html
    from sam3studio.evaluation.plots import plot_click_curve, write_plots

    out.mkdir(parents=True, exist_ok=True)
    data = report.to_dict()
    plots = write_plots(report, out)
    if clicks is not None:
        data["clicks"] = clicks
        plots.append(plot_click_curve(clicks, out / "clicks_miou.png"))
    (out / "report.json").write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    html = write_html(out / "report.html", title=f"sam3studio eval: {Path(dataset.source).name}", image=report,
                      dataset=dataset, clicks=clicks, plots=plots)
    return [out / "report.json", html, *plots]


def _save_baseline(dataset: EvalDataset, predictions: Any, threshold: float, path: Path) -> None:
    """The drift baseline of this run: what a server answering with ``threshold`` would have seen."""
    from sam3studio.evaluation.predictions import pair_outcomes
    from sam3studio.observability.drift import Distributions, normalize_prompt, outcome

    dist = Distributions()
    for prompt, presence, scores in pair_outcomes(dataset, predictions, threshold):
        dist.add(normalize_prompt(prompt), *outcome(presence, scores))
    dist.save_baseline(path, source=f"sam3studio eval {dataset.source} (threshold {threshold:g})")


def eval_command(
    gt: Annotated[Path, typer.Argument(help="Ground truth: COCO instances, SA-Co, or YouTube-VIS (video) JSON.",
                                       show_default=False)],
    images: Annotated[Path | None, typer.Option("--images", "-i", help="Folder the file_name / file_names entries are "
                                                "in (default: the ground truth's folder).", show_default=False)] = None,
    fmt: Annotated[str, typer.Option("--format", help="Ground-truth format: auto, coco, saco or ytvis.")] = "auto",
    mapping: Annotated[Path | None, typer.Option("--mapping", help="JSON object mapping category name -> prompt.",
                                                 show_default=False)] = None,
    predictions: Annotated[Path | None, typer.Option("--predictions", help="Evaluate saved predictions (for video: a "
                                                     "YouTube-VIS results JSON or `track` output folder).",
                                                     show_default=False)] = None,
    save_predictions: Annotated[Path | None, typer.Option("--save-predictions", help="Write this run's predictions "
                                                          "to this JSON file.", show_default=False)] = None,
    save_baseline: Annotated[Path | None, typer.Option("--save-baseline", help="Write a drift baseline (per prompt: "
                                                       "presence, top score and instance count at --threshold) to "
                                                       "this JSON file, for `sam3studio drift --baseline`.",
                                                       show_default=False)] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for report.json, report.html and the plots.")]
    = Path("sam3studio-eval"),
    threshold: Annotated[float, typer.Option("--threshold", "-t", help="Detection threshold for the presence, cgF1 "
                                             "and tracking numbers (the sweep covers 0.05-0.95).")] = 0.5,
    mask_threshold: Annotated[float, typer.Option("--mask-threshold", help="Mask probability threshold.")] = 0.5,
    limit: Annotated[int | None, typer.Option("--limit", help="Evaluate only the first N images (or videos).",
                                              show_default=False)] = None,
    clicks: Annotated[bool, typer.Option("--clicks", help="Also measure click refinement with a simulated user "
                                         "(image ground truth with masks; needs SAM 3's tracker).")] = False,
    max_clicks: Annotated[int, typer.Option("--max-clicks", help="Clicks per object for --clicks (1-64).")] = 20,
    model: ModelOpt = "facebook/sam3",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    debug: DebugOpt = False,
) -> None:
    """Measure the model on labelled data: images (COCO, SA-Co: AP, presence F1, cgF1, a threshold sweep, where it
    fails), video (YouTube-VIS: HOTA, IDF1, MOTA, video mask AP) and clicks to quality (--clicks)."""
    from sam3studio.errors import Sam3StudioError
    from sam3studio.evaluation.data import EvalDataError, load_mapping
    from sam3studio.evaluation.metrics import evaluate
    from sam3studio.evaluation.predictions import Predictions
    from sam3studio.evaluation.video_data import FORMATS, VideoDataset, load_ground_truth
    quiet_libraries(debug)
    try:
        if not 0 < threshold <= 1 or not 0 < mask_threshold < 1:
            raise EvalDataError("--threshold must be in (0, 1] and --mask-threshold in (0, 1)")
        if limit is not None and limit < 1:
            raise EvalDataError(f"--limit must be at least 1, got {limit}")
        if predictions is not None and save_predictions is not None:
            raise EvalDataError("--save-predictions has nothing to save with --predictions (no model runs)")
        if fmt not in FORMATS:
            raise EvalDataError(f"--format must be {', '.join(FORMATS[:-1])} or {FORMATS[-1]}, got {fmt!r}")
        if not 1 <= max_clicks <= 64:
            raise EvalDataError(f"--max-clicks must be between 1 and 64, got {max_clicks}")
        if images is not None and not images.is_dir():
            raise EvalDataError(f"--images {images}: no such folder")
        names = load_mapping(mapping) if mapping is not None else None
        dataset = load_ground_truth(gt, images, fmt, names).subset(limit)
        if isinstance(dataset, VideoDataset) and clicks:
            raise EvalDataError("--clicks needs image ground truth (COCO or SA-Co with masks), not video")
        if isinstance(dataset, VideoDataset) and save_baseline is not None:
            raise EvalDataError("--save-baseline needs image ground truth (COCO or SA-Co): drift is watched on images")
        saved = None
        if predictions is not None and not isinstance(dataset, VideoDataset):
            saved = Predictions.load(predictions)
    except (Sam3StudioError, ValueError, OSError) as exc:
        raise fail(str(exc), debug, code=2) from None

    if isinstance(dataset, VideoDataset):
        _eval_video(dataset, predictions, save_predictions, out, threshold, model, device, dtype, debug)
        return
    if saved is None or clicks:  # before loading a model: a missing image is a bad input
        _check_images(dataset, debug)
    segmenter = _load_segmenter(model, device, dtype, debug) if saved is None or clicks else None
    # clicks first: a checkpoint without the tracker fails before the long detection pass
    click_results = _run_clicks(segmenter, dataset, max_clicks, mask_threshold, model, debug) if clicks else None
    if saved is None:
        saved = _predict_images(segmenter, dataset, mask_threshold, debug)
        if save_predictions is not None:
            try:
                saved.save(save_predictions)
            except OSError as exc:
                raise fail(f"could not write {save_predictions}: {exc}", debug) from None

    try:
        report = evaluate(dataset, saved, score_threshold=threshold)
        written = _write_image_outputs(report, click_results, dataset, out)
        if save_baseline is not None:
            _save_baseline(dataset, saved, threshold, save_baseline)
    except (Sam3StudioError, ValueError, OSError) as exc:
        raise fail(str(exc), debug) from None

    console.print(_summary_table(report, f"sam3studio eval → {out}"))
    console.print(_category_table(report))
    if click_results is not None:
        console.print(f"Clicks: NoC@85 {_fmt(click_results['noc85'], 2)}, NoC@90 {_fmt(click_results['noc90'], 2)}, "
                      f"mIoU after 1 / {max_clicks} clicks {_fmt((click_results['miou_at_clicks'] or [None])[0])} / "
                      f"{_fmt((click_results['miou_at_clicks'] or [None])[-1])} ({click_results['objects']} objects)",
                      highlight=False)
    written += [p for p in (save_predictions, save_baseline) if p is not None]
    console.print("Wrote " + ", ".join(str(p) for p in written), highlight=False, soft_wrap=True)
