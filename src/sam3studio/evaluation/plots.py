"""PNG plots of an `EvalReport` with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sam3studio.evaluation.metrics import EvalReport

__all__ = ["MAX_PR_CURVES", "plot_click_curve", "plot_f1_vs_threshold", "plot_pr_curves", "write_plots"]

MAX_PR_CURVES = 20  # per-category curves drawn; the rest are summarised by the mean curve


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_pr_curves(report: EvalReport, path: str | Path) -> Path:
    """Precision against recall at IoU 0.5 per category (most instances first), plus their mean."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5.5), dpi=100)
    curves = report.pr_curves.get("precision", {}) if report.pr_curves else {}
    recall = report.pr_curves.get("recall", []) if report.pr_curves else []
    if curves:
        order = {row["name"]: row["instances"] for row in report.per_category}
        names = sorted(curves, key=lambda n: -order.get(n, 0))
        for name in names[:MAX_PR_CURVES]:
            ax.plot(recall, curves[name], linewidth=1, alpha=0.8, label=name)
        if len(curves) > 1:
            mean = np.mean(np.maximum(np.array([curves[n] for n in names]), 0), axis=0)
            ax.plot(recall, mean, color="black", linewidth=2.5, label="mean")
        ax.legend(fontsize=7, loc="lower left", ncol=2 if len(names) > 10 else 1)
        kind = "mask" if report.pr_curves.get("iou_type") == "segm" else "box"
        ax.set_title(f"Precision-recall at IoU 0.5 ({kind})")
    else:
        ax.text(0.5, 0.5, "no ground-truth instances", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("Precision-recall at IoU 0.5")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    return _save(fig, plt, path)


def plot_f1_vs_threshold(report: EvalReport, path: str | Path) -> Path:
    """F1@50, cgF1, pmF1 and IL_MCC against the detection threshold, with the recommendation marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    xs = [row["threshold"] for row in report.sweep]
    for key, style in (("F1@50", "-o"), ("cgF1", "-s"), ("pmF1", "--"), ("IL_MCC", ":")):
        ys = [row[key] if row[key] is not None else float("nan") for row in report.sweep]
        ax.plot(xs, ys, style, markersize=3, label=key)
    if report.recommended_threshold is not None:
        ax.axvline(report.recommended_threshold, color="grey", linestyle="--", linewidth=1,
                   label=f"recommended {report.recommended_threshold:.2f}")
    ax.set_xlabel("detection threshold")
    ax.set_ylabel("score")
    ax.set_xlim(0, 1)
    ax.set_ylim(min(-0.05, ax.get_ylim()[0]), 1.02)
    ax.set_title("F1 against the detection threshold")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, plt, path)


def plot_click_curve(clicks: dict[str, Any], path: str | Path) -> Path:
    """mIoU against the number of clicks (`evaluate_clicks` output), with the 0.85 and 0.90 levels."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    ys = clicks.get("miou_at_clicks") or []
    xs = list(range(1, len(ys) + 1))
    if ys:
        ax.plot(xs, ys, "-o", markersize=3, label=f"mIoU ({clicks.get('objects', 0)} objects)")
    for level, style in ((0.85, "--"), (0.90, ":")):
        ax.axhline(level, color="grey", linestyle=style, linewidth=1, label=f"IoU {level:.2f}")
    ax.set_xlabel("clicks")
    ax.set_ylabel("mean IoU")
    ax.set_xlim(0.5, max(len(ys), 1) + 0.5)
    ax.set_ylim(0, 1.02)
    noc = [f"NoC@{k} {clicks[f'noc{k}']:.2f}" for k in (85, 90) if clicks.get(f"noc{k}") is not None]
    ax.set_title("Clicks to quality" + (f" ({', '.join(noc)})" if noc else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, plt, path)


def write_plots(report: EvalReport, out_dir: str | Path) -> list[Path]:
    """``pr_curves.png`` and ``f1_vs_threshold.png`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [plot_pr_curves(report, out / "pr_curves.png"), plot_f1_vs_threshold(report, out / "f1_vs_threshold.png")]


def _save(fig, plt, path: str | Path) -> Path:
    path = Path(path)
    try:
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path
