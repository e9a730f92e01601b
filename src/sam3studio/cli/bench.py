"""``sam3studio bench``: run the benchmark suite, print one Rich table, optionally write the figures as JSON.

The work is the `sam3studio.bench` package; torch loads inside the command (start-up time of the CLI).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sam3studio.cli.common import console, err_console, fail, plural, quiet_libraries

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["bench_command", "bench_table"]


def _s(seconds: float | None) -> str:
    """Seconds with a unit that keeps 3 significant figures readable (ms below one second)."""
    if seconds is None:
        return "[dim]n/a[/]"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _goal(met: bool | None, text: str) -> str:
    if met is None:
        return f"[dim]{text}[/]"
    return f"{text} [green]met[/]" if met else f"{text} [red]not met[/]"


def _mb(value: float | None) -> str:
    if value is None:
        return "[dim]n/a[/]"
    return f"{value:,.0f} MB" if value >= 10 else f"{value:.2f} MB"


def _flops(value: float) -> str:
    return f"{value / 1e12:.2f} TFLOP" if value >= 1e11 else f"{value / 1e9:.3f} GFLOP"


def _rate(tflops: float) -> str:
    return f"{tflops:.3f} TFLOP/s" if tflops >= 0.01 else f"{tflops * 1000:.2f} GFLOP/s"


def bench_table(report: dict[str, Any]) -> Table:
    """The report as one table: a row per figure, the comparison and ratio beside it, the goal last."""
    from rich.table import Table

    meta = report["meta"]
    table = Table(title=f"sam3studio bench: {meta['model']} on {meta['device']} ({meta['dtype']}, {meta['attention']})",
                  caption=f"median of {meta['repeats']} run(s) after a warm-up; ratios from this run; "
                          f"{meta['cpu']}, {meta['torch_threads']} threads, torch {meta['torch']}")
    for col, justify in (("section", "left"), ("measure", "left"), ("ours / value", "right"),
                         ("compared with", "right"), ("ratio", "right"), ("goal", "left")):
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]

    if "prompts" in report:
        p = report["prompts"]
        table.add_row("prompts", "image encoding", _s(p["encode_s"]), "", "", "")
        table.add_row("", "per extra prompt", _s(p["per_extra_prompt_s"]),
                      f"{_s(p['baseline_single_call_s'])} baseline call", "", f"[dim]{p['per_extra_prompt_basis']}[/]")
        for row in p["rows"]:
            label = "" if row["baseline_method"] == "measured" else f" ({row['baseline_method']})"
            goal = "" if row["goal"] is None else _goal(row["goal_met"], f">= {row['goal']:g}x")
            table.add_row("", f"K={row['k']} total", _s(row["ours_s"]), f"{_s(row['baseline_s'])} baseline{label}",
                          f"{row['ratio']:.2f}x", goal)
        table.add_section()
    if "dtype" in report:
        d = report["dtype"]
        goal_text = f">= {d['goal']:g}x on AMX CPUs" + ("" if d["goal_applies"] else " (n/a: no AMX)")
        table.add_row("dtype", "vision encoder bf16 vs fp32", _s(d["vision_bf16_s"]), f"{_s(d['vision_fp32_s'])} fp32",
                      f"{d['ratio']:.2f}x", _goal(d["goal_met"], goal_text))
        table.add_row("", "--dtype auto picks", d["auto_dtype"], d["auto_reason"], "", "")
        a = d["agreement"]
        iou = "n/a" if a["mean_iou"] is None else f"{a['mean_iou']:.4f}"
        diff = "" if a["max_score_diff"] is None else f", max score diff {a['max_score_diff']:.4f}"
        table.add_row("", "bf16 vs fp32 masks (tiny)", f"IoU {iou}",
                      f"{a['matched']} matched of {a['reference_instances']}/{a['other_instances']}{diff}", "", "")
        table.add_section()
    if "postprocess" in report:
        pp = report["postprocess"]
        w, h = pp["image_size"]
        table.add_row("postprocess", f"{plural(pp['instances'], 'instance')} at {w}x{h}", _s(pp["postprocess_s"]), "", "",
                      "[dim]synthetic logits, real shapes[/]")
        table.add_row("", f"JSON + RLE ({pp['json_bytes'] / 1024:,.0f} KiB)", _s(pp["json_s"]), "", "", "")
        table.add_row("", "share of model time", _s(pp["postprocess_s"] + pp["json_s"]), f"{_s(pp['model_s'])} model",
                      f"{pp['fraction']:.1%}", _goal(pp["goal_met"], f"< {pp['goal']:.0%}"))
        table.add_section()
    if "api" in report:
        api = report["api"]
        if "skipped" in api:
            table.add_row("api", f"[dim]skipped ({api['skipped']})[/]", "", "", "", "")
        else:
            o = api["overhead_c1"]
            table.add_row("api", "HTTP vs direct, c=1", _s(o["api_s"]), f"{_s(o['direct_s'])} direct",
                          f"{o['overhead']:+.1%}", _goal(o["goal_met"], f"< {o['goal']:.0%} overhead"))
            if "overhead_c1_load_model" in api:
                t = api["overhead_c1_load_model"]
                table.add_row("", "HTTP vs direct, c=1 (tiny)", _s(t["api_s"]), f"{_s(t['direct_s'])} direct",
                              f"{t['overhead']:+.1%}", "")
            c = api["concurrency"]
            for lv in c["levels"]:
                table.add_row("", f"c={lv['concurrency']}: p50 / p99", f"{_s(lv['p50_s'])} / {_s(lv['p99_s'])}",
                              f"{lv['throughput_rps']:.2f} req/s", "",
                              f"{lv['ok']}/{lv['requests']} ok, {lv['rejected_503']} x 503")
            table.add_row("", "[dim]load model[/]", "", "", "", f"[dim]{c['model']}[/]")
        table.add_section()
    if "memory" in report:
        m = report["memory"]
        table.add_row("memory", "weights", _mb(m["weights_mb"]), "", "", "")
        table.add_row("", "peak / current RSS after load", _mb(m["after_load"]["peak_rss_mb"]),
                      _mb(m["after_load"]["rss_mb"]), "", "")
        table.add_row("", "peak / current RSS after runs", _mb(m["after_runs"]["peak_rss_mb"]),
                      _mb(m["after_runs"]["rss_mb"]), "", "[dim]incl. fp32 baseline copy[/]")
        if "cuda_max_allocated_mb" in m["after_runs"]:
            table.add_row("", "CUDA max allocated", _mb(m["after_runs"]["cuda_max_allocated_mb"]), "", "", "")
        table.add_section()
    if "onnxruntime" in report:
        _ort_rows(table, report["onnxruntime"])
        table.add_section()
    if "tflops" in report:
        tf = report["tflops"]
        table.add_row("tflops", "vision FLOPs / forward", _flops(tf["vision_flops"]), "", "", "")
        for row in tf["rows"]:
            peak = row["peak"]
            peak_text = "peak unknown" if peak is None else (
                f"{peak['tflops']:.2f} {'est. ' if peak['estimate'] else ''}peak")
            util = "" if row["utilization"] is None else f"{row['utilization']:.1%}"
            table.add_row("", f"achieved, {row['dtype']}", _rate(row["achieved_tflops"]), peak_text, util,
                          f"[dim]{peak['basis']}[/]" if peak else "")
    return table


def _ort_rows(table: Table, r: dict[str, Any]) -> None:
    """The onnxruntime section: GEMM ceilings, vision encoder on both backends, profile, K=1/K=5, agreement."""
    g = r["gemm"]
    m, k, n = g["shape_mkn"]
    table.add_row("onnxruntime", f"GEMM {m}x{k}x{n}: torch fp32 / bf16", _rate(g["torch_float32"]),
                  _rate(g["torch_bfloat16"]), "", "[dim]measured in this run[/]")
    table.add_row("", "GEMM: ORT fp32 / int8", _rate(g["ort_float32"]), _rate(g["ort_int8"]), "", "")
    for row in r["vision"]:
        table.add_row("", f"vision, {row['run']}", _s(row["vision_s"]), _rate(row["achieved_tflops"]),
                      f"{row['of_gemm']:.0%} of GEMM", "")
    goals = r["goals"]
    f, q = goals["fp32_vs_torch_fp32"], goals["int8_vs_torch_bf16"]
    table.add_row("", "ORT fp32 / PyTorch fp32 time", "", "", f"{f['ratio']:.2f}x", _goal(f["goal_met"], f"<= {f['goal']:g}x"))
    table.add_row("", "PyTorch bf16 / ORT int8 time", "", "", f"{q['ratio']:.2f}x", _goal(q["goal_met"], f">= {q['goal']:g}x"))
    for name, prof in r["profile"].items():
        top = ", ".join(f"{op['op']} {op['share']:.0%}" for op in prof["top_ops"][:4])
        table.add_row("", f"where {name} vision time goes", _s(prof["node_s"]), "", "", f"[dim]{top}[/]")
    for row in r["end_to_end"]:
        table.add_row("", f"K={row['k']}: torch / ORT fp32 / ORT int8",
                      f"{_s(row['torch_s'])} / {_s(row['ort_float32_s'])} / {_s(row['ort_int8_s'])}", "", "",
                      f"[dim]engine {r['engine_dtype']}, cold cache[/]")
    c = r["feature_cosine"]
    table.add_row("", "feature cosine: ORT fp32 vs torch / int8 vs fp32",
                  f"{c['ort_float32_vs_torch_float32']:.6f} / {c['ort_int8_vs_ort_float32']:.6f}", "", "", "")
    masks = r["masks"]
    for name in ("ort_float32_vs_torch", "ort_int8_vs_torch"):
        a = masks[name]
        iou = "n/a" if a["mean_iou"] is None else f"{a['mean_iou']:.4f}"
        table.add_row("", f"masks {name.replace('_vs_torch', '')} vs torch", f"IoU {iou}",
                      f"{a['matched']} matched of {a['reference_instances']}/{a['other_instances']}", "",
                      f"[dim]{masks['model']}[/]")


def bench_command(
    model: Annotated[str, typer.Option("--model", "-m", help="Hub id, local directory, modelscope:<id>, or 'random' "
                                       "(full-size SAM 3, untrained weights: timings only).")] = "random",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto, float32 or bfloat16 (our engine; the baseline is "
                                       "always float32).")] = "auto",
    repeats: Annotated[int | None, typer.Option("--repeats", "-n", help="Timed runs per figure, after one warm-up.",
                                                show_default="3, 1 with --quick")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="K = 1 and 5 prompts only, 1 repeat, no API section.")] = False,
    only: Annotated[str | None, typer.Option("--only", help="Comma list of sections: prompts, dtype, postprocess, api, "
                                             "memory, tflops, onnxruntime.", show_default=False)] = None,
    image_size: Annotated[str, typer.Option("--image-size", help="WIDTHxHEIGHT of the benchmark photo.")] = "1920x1080",
    baseline_budget: Annotated[float, typer.Option("--baseline-budget", help="Seconds the baseline may take at K > 1; "
                                                   "beyond it, K x the measured single call is reported (labelled).")]
    = 120.0,
    backend: Annotated[str, typer.Option("--backend", help="torch, or onnxruntime: add the onnxruntime section (the "
                                         "model exported in the run, fp32 and int8, timed beside PyTorch).")] = "torch",
    onnx: Annotated[Path | None, typer.Option("--onnx", help="With --backend onnxruntime: an export of the same weights "
                                              "(skips the export; not for 'random', whose weights are new each run).",
                                              show_default=False)] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write every figure to this JSON file.",
                                                  show_default=False)] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks and library logs.")] = False,
) -> None:
    """Time the engine against the documented transformers usage: prompts, dtypes, post-processing, API, memory."""
    import time

    from sam3studio.bench.runner import BenchError, BenchOptions, parse_image_size, parse_only, run_bench
    from sam3studio.errors import Sam3StudioError
    quiet_libraries(debug)
    try:
        options = BenchOptions(model=model, device=device, dtype=dtype, quick=quick,
                               repeats=repeats if repeats is not None else (1 if quick else 3),
                               only=parse_only(only), image_size=parse_image_size(image_size),
                               baseline_budget_s=baseline_budget, backend=backend,
                               onnx=str(onnx) if onnx is not None else None)
        options.validate()
        if json_out is not None and json_out.is_dir():
            raise BenchError(f"--json {json_out} is a folder; give a file name")
    except BenchError as exc:
        raise fail(str(exc), debug, code=2) from None

    start = time.perf_counter()

    def progress(message: str) -> None:
        console.print(f"[dim]{time.perf_counter() - start:7.1f} s  {message}[/]", highlight=False)

    try:
        report = run_bench(options, progress)
    except BenchError as exc:
        raise fail(str(exc), debug, code=2) from None
    except (Sam3StudioError, OSError, RuntimeError) as exc:
        raise fail(str(exc), debug) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]Interrupted: no figures written.[/]")
        raise typer.Exit(130) from None
    argv = sys.argv
    report["meta"]["command"] = "sam3studio " + " ".join(argv[argv.index("bench"):]) if "bench" in argv else None
    console.print(bench_table(report))
    if json_out is not None:
        try:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(report, indent=2) + "\n")
        except OSError as exc:
            raise fail(f"could not write {json_out}: {exc}", debug) from None
        console.print(f"Wrote {json_out}", highlight=False, soft_wrap=True)
