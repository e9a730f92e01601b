"""The fine-tune's report: ``report.json``, ``report.md`` and ``training_curves.png``.

``report.json`` has ``before`` (zero-shot on the validation split) and ``after`` (the kept checkpoint on
the same split), each exactly what ``sam3studio eval`` writes as its report, plus ``gain`` (after minus
before for the headline metrics), ``improved``, the settings, the data summary and one entry per epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sam3studio.io.files import atomic_write, atomic_write_json

__all__ = ["HEADLINE", "headline", "write_report"]

# (name in the report, path in an eval report)
HEADLINE = (
    ("mask AP", ("ap", "segm", "AP")),
    ("mask AP50", ("ap", "segm", "AP50")),
    ("mask AP75", ("ap", "segm", "AP75")),
    ("box AP", ("ap", "bbox", "AP")),
    ("cgF1", ("cgf1", "cgF1")),
    ("presence F1", ("presence", "f1")),
)


def _dig(report: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = report
    for key in path:
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return float(value) if isinstance(value, (int, float)) else None


def headline(report: dict[str, Any]) -> dict[str, float | None]:
    """The headline metrics of one eval report (None where not defined)."""
    return {name: _dig(report, path) for name, path in HEADLINE}


def monitored(report: dict[str, Any]) -> float:
    """The number that picks the best epoch: mask AP (box AP without masks), then AP50 to break ties."""
    ap = _dig(report, ("ap", "segm", "AP"))
    ap50 = _dig(report, ("ap", "segm", "AP50"))
    if ap is None:
        ap, ap50 = _dig(report, ("ap", "bbox", "AP")), _dig(report, ("ap", "bbox", "AP50"))
    return (ap or 0.0) + 1e-3 * (ap50 or 0.0)


def gains(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float | None]:
    b, a = headline(before), headline(after)
    return {k: (a[k] - b[k]) if a[k] is not None and b[k] is not None else None for k in b}


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _markdown(report: dict[str, Any]) -> str:
    b, a, g = headline(report["before"]), headline(report["after"]), report["gain"]
    s = report["settings"]
    lines = [
        f"# Fine-tune of {report['source']}",
        "",
        f"Mode `{s['train']}`, {report['epochs_run']} of {s['epochs']} epochs, lr {s['lr']:g}, "
        f"batch {report['images_per_step']} x {report['accumulate']}, seed {s['seed']}; best epoch {report['best_epoch']}; "
        f"{report['wall_s']:.0f} s on {report['device']} ({report['compute_dtype']}).",
        "",
    ]
    if not report["improved"]:
        lines += ["**WARNING: the fine-tuned model is not better than the base model on the validation split "
                  "(mask AP did not rise). Keep using the base model, or change the data or the settings.**", ""]
    lines += ["| validation metric | before (zero-shot) | after | gain |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {_fmt(b[k])} | {_fmt(a[k])} | {_fmt(g[k])} |" for k in b]
    lines += ["", "| epoch | train loss | val mask AP | val mask AP50 | val cgF1 | seconds |", "|---:|---:|---:|---:|---:|---:|"]
    for e in report["history"]:
        v = e["val"]
        lines.append(f"| {e['epoch']} | {e['loss']:.4f} | {_fmt(v['mask AP'])} | {_fmt(v['mask AP50'])} | "
                     f"{_fmt(v['cgF1'])} | {e['seconds']:.1f} |")
    d = report["data"]
    lines += ["", f"Training images {d['train']['images']} ({d['train']['annotations']} instances), validation images "
              f"{d['val']['images']} ({d['val']['annotations']} instances; {d['val_source']})."]
    lines += [f"- {n}" for n in report.get("notes", [])]
    lines += ["", "![loss and validation AP per epoch](training_curves.png)", ""]
    return "\n".join(lines)


def plot_curves(report: dict[str, Any], path: Path) -> Path:
    """Training loss and validation mask AP / AP50 per epoch (zero-shot at epoch 0)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    hist = report["history"]
    epochs = [e["epoch"] for e in hist]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    ax1.plot(epochs, [e["loss"] for e in hist], marker="o", ms=3)
    ax1.set(xlabel="epoch", ylabel="training loss", title="loss")
    before = headline(report["before"])
    for key, style in (("mask AP", "-"), ("mask AP50", "--")):
        ys = [before[key]] + [e["val"][key] for e in hist]
        ax2.plot([0, *epochs], [y if y is not None else float("nan") for y in ys], style, marker="o", ms=3, label=key)
    ax2.axvline(report["best_epoch"], color="grey", lw=0.8, ls=":")
    ax2.set(xlabel="epoch (0: zero-shot)", ylabel="validation", title="validation AP", ylim=(0, 1))
    ax2.legend()
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png"))
    plt.close(fig)
    return path


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    """Write the three files into ``out``; return their paths."""
    json_path, md_path, png_path = out / "report.json", out / "report.md", out / "training_curves.png"
    atomic_write_json(json_path, report)
    text = _markdown(report)
    atomic_write(md_path, lambda fh: fh.write(text.encode("utf-8")))
    plot_curves(report, png_path)
    return [json_path, md_path, png_path]
