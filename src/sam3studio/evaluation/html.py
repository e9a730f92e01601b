"""``report.html``: one self-contained page (no network, no other file) with everything an evaluation found.

Plots and failure crops are PNGs embedded as ``data:`` URIs; the styles are inline; a
Content-Security-Policy forbids the page any other source, so it opens the same offline, from an
e-mail attachment or an artefact store. Every text from the data (prompts, file names) is escaped.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sam3studio.evaluation.data import EvalDataset
    from sam3studio.evaluation.metrics import EvalReport
    from sam3studio.evaluation.video import VideoReport

__all__ = ["crop_png", "render_html", "write_html"]

CROP_SIDE = 180  # px, the longer side of a gallery crop
MAX_PROMPT_ROWS = 50
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1200px;padding:0 16px;color:#1d2330}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #d8dce4;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #d8dce4;padding:3px 8px;text-align:right}
th{background:#f2f4f8}td:first-child,th:first-child{text-align:left}.note{color:#5b6473;font-size:12px}
.plots img{max-width:100%;margin:4px 8px 4px 0;border:1px solid #d8dce4}
.gallery{display:flex;flex-wrap:wrap;gap:10px}.gallery figure{margin:0;width:190px}
.gallery img{display:block;border:1px solid #d8dce4;max-width:100%}.gallery figcaption{font-size:12px}
"""
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _e(value)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# ---------------------------------------------------------------------------- crops
def crop_png(image: np.ndarray | None, width: int, height: int, segmentation: dict[str, Any] | None,
             bbox: Sequence[float], colour: tuple[int, int, int]) -> bytes:
    """A PNG of the box's neighbourhood with the mask tinted and outlined; grey where the image is unknown."""
    from PIL import Image
    from pycocotools import mask as mask_utils
    from scipy import ndimage

    rgb = np.full((height, width, 3), 128, np.uint8) if image is None else np.asarray(image, np.uint8).copy()
    if segmentation is not None:
        counts = segmentation["counts"]
        mask = mask_utils.decode({"size": segmentation["size"],
                                  "counts": counts.encode("ascii") if isinstance(counts, str) else counts}).astype(bool)
        tint = np.asarray(colour, np.float32)
        rgb[mask] = (0.55 * rgb[mask] + 0.45 * tint).astype(np.uint8)
        rgb[mask & ~ndimage.binary_erosion(mask)] = colour
    x, y, w, h = (float(v) for v in bbox)
    margin = max(12.0, 0.25 * max(w, h))
    x0, y0 = int(max(0, np.floor(x - margin))), int(max(0, np.floor(y - margin)))
    x1, y1 = int(min(width, np.ceil(x + w + margin))), int(min(height, np.ceil(y + h + margin)))
    crop = Image.fromarray(rgb[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)])
    scale = CROP_SIDE / max(crop.size)
    crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))),
                       Image.NEAREST if scale > 1 else Image.BILINEAR)
    buf = io.BytesIO()
    crop.save(buf, format="PNG")
    return buf.getvalue()


def _gallery(entries: Sequence[dict[str, Any]], dataset: EvalDataset | None, colour: tuple[int, int, int]) -> str:
    if not entries:
        return '<p class="note">none at this threshold</p>'
    from sam3studio.io.images import load_image

    cache: dict[int, np.ndarray | None] = {}
    figures = []
    for entry in entries:
        image_id = entry["image_id"]
        im = dataset.image(image_id) if dataset is not None else None
        if image_id not in cache:
            path = dataset.image_path(im) if im is not None and dataset is not None else None
            try:
                cache[image_id] = load_image(path) if path is not None and path.is_file() else None
            except (OSError, ValueError):
                cache[image_id] = None
        seg = entry.get("segmentation")
        h, w = (im.height, im.width) if im is not None else (seg["size"] if seg else (1, 1))
        image = cache[image_id]
        if image is not None and image.shape[:2] != (h, w):
            image = None
        png = crop_png(image, w, h, seg, entry["bbox"], colour)
        name = im.file_name if im is not None else f"image {image_id}"
        score = entry.get("score")
        if entry["kind"] == "miss":
            found = f"below the threshold at score {score:.2f}" if score is not None else "by no detection"
            detail = f"{entry.get('area', 0):.0f} px, found {found}"
        else:
            detail = f"score {_fmt(score, 2)} · best IoU {_fmt(entry.get('best_iou'), 2)}"
        caption = f"<b>{_e(entry['prompt'])}</b> · {detail}<br>{_e(name)}"
        figures.append(f'<figure><img alt="{_e(entry["kind"])}: {_e(entry["prompt"])}" src="{_data_uri(png)}">'
                       f"<figcaption>{caption}</figcaption></figure>")
    return f'<div class="gallery">{"".join(figures)}</div>'


# ---------------------------------------------------------------------------- sections
def _image_section(report: EvalReport, dataset: EvalDataset | None) -> str:
    r = report.to_dict()
    ap = r["ap"].get(r["iou_type"]) or {}
    cg = r["cgf1"]
    parts = ["<h2>Images</h2>", _table(["metric", "value"], [
        ("images / pairs", f"{r['dataset']['images']} / {r['dataset']['pairs']}"),
        (f"{'mask' if r['iou_type'] == 'segm' else 'box'} AP / AP50 / AP75",
         f"{_fmt(ap.get('AP'))} / {_fmt(ap.get('AP50'))} / {_fmt(ap.get('AP75'))}"),
        ("cgF1 (pmF1 × IL_MCC)", f"{_fmt(cg['cgF1'])} ({_fmt(cg['pmF1'])} × {_fmt(cg['IL_MCC'])})"),
        ("instance P / R / F1 @ IoU 0.5", f"{_fmt(cg['precision@50'])} / {_fmt(cg['recall@50'])} / {_fmt(cg['F1@50'])}"),
        ("detection threshold / recommended", f"{_fmt(r['score_threshold'], 2)} / {_fmt(r['recommended_threshold'], 2)}"),
    ])]
    bd = r.get("breakdown") or {}
    if bd.get("by_size"):
        parts += ["<h3>By object size (COCO areas)</h3>", _table(
            ["size", "instances", "AP", "AP50", "recall (AR@100)", "recall@50"],
            [(k, v["instances"], v["AP"], v["AP50"], v["recall"], v["recall@50"]) for k, v in bd["by_size"].items()])]
    if bd.get("by_frequency"):
        parts += ["<h3>By category frequency (LVIS buckets: images with instances)</h3>", _table(
            ["bucket", "categories", "instances", "mean AP", "recall@50"],
            [(k, v["categories"], v["instances"], v["AP"], v["recall@50"]) for k, v in bd["by_frequency"].items()])]
    if bd.get("hardest_prompts"):
        parts += ["<h3>Hardest prompts</h3>", _table(
            ["prompt", "instances", "AP", "recall@50", "precision@50", "F1@50"],
            [(h["prompt"], h["instances"], h["AP"], h["recall@50"], h["precision@50"], h["F1@50"])
             for h in bd["hardest_prompts"]])]
    rows = sorted(r["per_category"], key=lambda c: (-c["instances"], c["name"]))[:MAX_PROMPT_ROWS]
    top = f" (top {MAX_PROMPT_ROWS} by instances)" if len(r["per_category"]) > MAX_PROMPT_ROWS else ""
    parts += [f"<h3>Per prompt{top}</h3>",
              _table(["prompt", "instances", "AP", "AP50", "TP", "FP", "FN", "recall@50", "presence F1"],
                     [(c["prompt"], c["instances"], c["AP"], c.get(f"AP50_{r['iou_type']}"), c["tp"], c["fp"], c["fn"],
                       c["recall@50"], (c["presence"] or {}).get("f1")) for c in rows])]
    fails = report.failures or {}
    parts += [f"<h2>Failure gallery (detection threshold {_fmt(r['score_threshold'], 2)})</h2>",
              "<h3>Worst false positives (highest scores, matched to nothing at IoU 0.5)</h3>",
              _gallery(fails.get("false_positives", []), dataset, (230, 40, 40)),
              "<h3>Worst misses (largest objects no detection above the threshold matched)</h3>",
              _gallery(fails.get("misses", []), dataset, (250, 170, 20))]
    return "".join(parts)


def _video_section(report: VideoReport) -> str:
    v = report.to_dict()["video"]
    parts = ["<h2>Video tracking</h2>", _table(["metric", "value"], [
        ("HOTA (DetA, AssA)", f"{_fmt(v['hota'])} ({_fmt(v['deta'])}, {_fmt(v['assa'])})"),
        ("IDF1", v["idf1"]), ("MOTA", v["mota"]), ("ID switches", v["id_switches"]),
        ("video mask AP / AP50 / AP75", f"{_fmt(v['mask_ap'])} / {_fmt(v['mask_ap50'])} / {_fmt(v['mask_ap75'])}"),
    ])]
    if v.get("by_size"):
        parts += ["<h3>By object size (mean area per frame)</h3>", _table(
            ["size", "tracks", "AP", "AP50", "recall", "recall@50"],
            [(k, s["instances"], s["AP"], s["AP50"], s["recall"], s["recall@50"]) for k, s in v["by_size"].items()])]
    parts += ["<h3>Per prompt</h3>", _table(
        ["prompt", "GT tracks", "predicted", "HOTA", "DetA", "AssA", "IDF1", "MOTA", "ID sw.", "mask AP"],
        [(p["prompt"], p["gt_tracks"], p["pred_tracks"], p["hota"], p["deta"], p["assa"], p["idf1"], p["mota"],
          p["id_switches"], p["mask_ap"]) for p in v["per_prompt"][:MAX_PROMPT_ROWS]])]
    return "".join(parts)


def _clicks_section(clicks: dict[str, Any]) -> str:
    miou = clicks.get("miou_at_clicks") or []
    picks = [k for k in (1, 2, 3, 5, 10, 20) if k <= len(miou)]
    return "".join(["<h2>Clicks to quality (simulated user)</h2>", _table(["metric", "value"], [
        ("objects", clicks.get("objects")), ("NoC@85", clicks.get("noc85")), ("NoC@90", clicks.get("noc90")),
        ("failed to reach 0.85 / 0.90", f"{_fmt(clicks.get('failed85'))} / {_fmt(clicks.get('failed90'))}"),
        *((f"mIoU after {k} click{'s' if k > 1 else ''}", miou[k - 1]) for k in picks),
        *((("refinement latency p50 / p99", f"{lat['p50_s'] * 1000:.1f} / {lat['p99_s'] * 1000:.1f} ms"),)
          if (lat := clicks.get("latency")) else ())])])


def _resources(latency: dict[str, Any] | None, memory: dict[str, Any] | None, unit: str) -> str:
    rows = []
    if latency:
        rows += [(f"latency per {unit} p50 / p99", f"{latency['p50_s'] * 1000:.1f} / {latency['p99_s'] * 1000:.1f} ms")]
    if memory:
        rows += [("peak resident memory (process)", f"{memory['peak_rss_bytes'] / 2**20:.0f} MiB")]
        if memory.get("peak_device_bytes") is not None:
            rows += [(f"peak {memory.get('device', 'device')} memory", f"{memory['peak_device_bytes'] / 2**20:.0f} MiB")]
    return ("<h2>Speed and memory</h2>" + _table(["", "value"], rows)) if rows else ""


def render_html(*, title: str, image: EvalReport | None = None, dataset: EvalDataset | None = None,
                video: VideoReport | None = None, clicks: dict[str, Any] | None = None,
                plots: Sequence[str | Path] = ()) -> str:
    """The page as a string; ``plots`` are PNG files embedded in order (missing ones are skipped)."""
    body = [f"<h1>{_e(title)}</h1>"]
    imgs = [f'<img alt="{_e(Path(p).stem)}" src="{_data_uri(Path(p).read_bytes())}">' for p in plots if Path(p).is_file()]
    if video is not None:
        body.append(_video_section(video))
        body.append(_resources(video.latency, video.memory, "frame"))
    if image is not None:
        body.append(_image_section(image, dataset))
        body.append(_resources(image.latency, image.memory, "image"))
    if clicks is not None:
        body.append(_clicks_section(clicks))
    if imgs:
        body.append(f'<h2>Plots</h2><div class="plots">{"".join(imgs)}</div>')
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")


def write_html(path: str | Path, **kwargs: Any) -> Path:
    """`render_html` written to ``path`` (UTF-8)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(**kwargs), encoding="utf-8")
    return path
