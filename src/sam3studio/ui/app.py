"""The Gradio 6 web UI. It calls the same `SegmentService` as the REST API; it never calls the API over HTTP."""

from __future__ import annotations

import collections
import contextlib
import json
import shutil
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

import sam3studio.ui.i18n as i18n
from sam3studio.errors import Sam3StudioError
from sam3studio.jobs import JobNotFound, JobRunner
from sam3studio.results import Segmentation
from sam3studio.service import SegmentOptions, SegmentService
from sam3studio.ui.marks import NEW_OBJECT, POSITIVE, Marks, draw, target_choices, with_instance

EXAMPLE_PHOTOS = {  # scikit-image ships these real photos in its wheel: no download
    "cat": lambda d: d.chelsea(),
    "astronaut": lambda d: d.astronaut(),
    "coffee": lambda d: d.coffee(),
    "rocket": lambda d: d.rocket(),
    "motorcycle": lambda d: d.stereo_motorcycle()[0],
}
# English and Chinese prompt chips side by side: both reach the model as English noun phrases.
PROMPT_CHIPS = ["cat", "person", "red car", "wooden table", "leftmost person", "eyes", "猫", "红色的汽车", "穿白衣服的人"]
TABLE_HEADERS = i18n.text("en", "headers")
_KEEP_RUN_DIRS = 32


def example_paths() -> list[str]:
    """Write the example photos once to a temporary folder Gradio may serve; return their paths."""
    from PIL import Image
    from skimage import data

    folder = Path(tempfile.gettempdir()) / "sam3studio-examples"
    folder.mkdir(exist_ok=True)
    paths = []
    for name, load in EXAMPLE_PHOTOS.items():
        path = folder / f"{name}.png"
        if not path.exists():
            tmp = path.with_suffix(".tmp.png")
            Image.fromarray(load(data)).save(tmp)
            tmp.replace(path)
        paths.append(str(path))
    return paths


class _RunDirs:
    """Per-run download folders; only the newest few are kept on disk."""

    def __init__(self, keep: int = _KEEP_RUN_DIRS) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sam3studio-ui-"))
        self._dirs: collections.deque[Path] = collections.deque()
        self._keep = keep
        self._lock = threading.Lock()

    def new(self) -> Path:
        with self._lock:
            path = Path(tempfile.mkdtemp(dir=self.root))
            self._dirs.append(path)
            while len(self._dirs) > self._keep:
                shutil.rmtree(self._dirs.popleft(), ignore_errors=True)
            return path


def prompt_summary(seg, threshold: float, lang: str = "en") -> str:
    """One line per prompt: its count and presence, the English query when it was translated, and any
    word the translator did not understand; a prompt without match gets a suggestion."""
    lines = []
    for p in seg.prompts:
        query = i18n.text(lang, "query", query=p.query) if p.query != p.text else ""
        fields = {"text": p.text, "query": query, "presence": p.presence_score}
        if p.count:
            lines.append(i18n.text(lang, "match", count=p.count, plural="s" if p.count != 1 else "", **fields))
        else:
            lines.append(i18n.text(lang, "no_match", threshold=threshold, **fields))
        if p.unknown_words:
            lines.append(i18n.text(lang, "unknown", words=", ".join(p.unknown_words)))
    return "\n".join(lines)


def status_line(seg, info: dict[str, str], lang: str = "en") -> str:
    t = seg.timings
    return i18n.text(lang, "status", encode=t.get("image_encoding", 0), prompts=t.get("prompts", 0),
                     post=t.get("postprocess", 0), total=t.get("total", 0), device=info.get("device"),
                     dtype=info.get("dtype"), source=info.get("source"))


def instance_rows(seg) -> list[list[Any]]:
    return [[inst.id, inst.prompt, round(inst.score, 3), round(100 * inst.area_ratio, 2),
             ", ".join(f"{v:.0f}" for v in inst.box)] for inst in seg]


def mode_choices(lang: str) -> list[tuple[str, str]]:
    return [(i18n.text(lang, "mode_text"), "text"), (i18n.text(lang, "mode_box"), "box"),
            (i18n.text(lang, "mode_click"), "click")]


def polarity_choices(lang: str) -> list[tuple[str, int]]:
    return [(i18n.text(lang, "positive"), POSITIVE), (i18n.text(lang, "negative"), 0)]


def track_rows(summary: dict[str, Any]) -> list[list[Any]]:
    """The tracks table of the Video tab: track id, prompt, first/last frame, frames present, mean score."""
    return [[tr["track_id"], tr["prompt"], tr["first_frame"], tr["last_frame"], tr["frames_present"],
             round(float(tr["mean_score"]), 3)] for tr in summary.get("tracks", [])]


def build_ui(service: SegmentService, jobs: JobRunner | None = None) -> gr.Blocks:
    """The Blocks app. Every handler goes through ``service`` (shared admission gate, limits).

    The Video tab submits to ``jobs``, the same `JobRunner` as ``POST /api/v1/videos`` (one worker,
    one bounded queue); without one, a runner on ``settings.data_dir`` is started on the first video.

    Every word on the page comes from `sam3studio.i18n`; the language switch relabels the page in
    place, and a page opens in ``settings.lang`` or, when that is "auto", the browser's language.
    """
    from sam3studio.export import write_outputs

    settings = service.settings
    run_dirs = _RunDirs()
    t = i18n.text
    first_lang = i18n.pick_language(settings.lang)  # what the page is built in, before the browser is known

    def model_banner(lang: str = first_lang) -> str:
        state = service.info()
        if state["ready"]:
            m = state["model"]
            return t(lang, "banner_ready", source=m["source"], device=m["device"], dtype=m["dtype"])
        if state["error"]:
            return t(lang, "banner_error", error=state["error"])
        return t(lang, "banner_loading")

    def table_value(rows: list[list[Any]], lang: str) -> dict[str, Any]:
        return {"headers": t(lang, "headers"), "data": rows}

    def present(seg, rgb, lang: str, threshold: float, status_text: str) -> tuple:
        """The result panel for ``seg``: annotated image, table, prompt summary, downloads, status, details."""
        annotations = [(seg.masks[i].astype(np.float32), f"{inst.prompt} · {inst.score:.2f} (#{inst.id})")
                       for i, inst in enumerate(seg)]
        out_dir = run_dirs.new()
        paths = write_outputs(seg, rgb, out_dir, "result", ("json", "overlay", "cutout", "masks"))
        zip_path = shutil.make_archive(str(out_dir / "result.masks"), "zip", paths["masks"])
        downloads = [str(paths["json"]), str(paths["overlay"]), str(paths["cutout"]), zip_path]
        details = [inst.to_dict(include_mask=False) for inst in seg]
        return ((rgb, annotations), table_value(instance_rows(seg), lang), prompt_summary(seg, float(threshold), lang),
                downloads, status_text, details, t(lang, "details_hint"))

    def decode(image_path, lang: str):
        if not image_path:
            raise gr.Error(t(lang, "no_image"))
        try:
            return service.decode_image(Path(image_path))
        except Sam3StudioError as exc:
            raise gr.Error(t(lang, "error", detail=str(exc))) from None

    def run(image_path, prompt, threshold, mask_threshold, fill_holes, min_island, smooth, lang="en", mode="text",
            marks=None):
        """Segment by prompt, and in box mode by the exemplar boxes drawn; the result becomes the refinement base."""
        lang = i18n.normalize(lang)
        marks = marks or Marks()
        rgb = decode(image_path, lang)
        use_boxes = mode == "box" and bool(marks.boxes)
        if mode == "box" and not use_boxes and not (prompt or "").strip():
            raise gr.Error(t(lang, "no_boxes"))
        try:
            options = SegmentOptions(score_threshold=float(threshold), mask_threshold=float(mask_threshold),
                                     fill_holes=float(fill_holes), min_island=float(min_island), smooth=int(smooth),
                                     boxes=marks.boxes if use_boxes else None,
                                     box_labels=marks.box_labels if use_boxes else None)
            seg = service.segment(rgb, prompt if (prompt or "").strip() or not use_boxes else None, options)
        except Sam3StudioError as exc:
            raise gr.Error(t(lang, "error", detail=str(exc))) from None
        marks = marks.clear("click")
        panel = present(seg, rgb, lang, float(threshold), status_line(seg, service.segmenter.info(), lang))
        target = NEW_OBJECT if not len(seg) else 0
        return (*panel, seg, seg, marks, gr.update(choices=target_choices(seg, t(lang, "new_object")), value=target),
                canvas_image(rgb, marks, mode, seg, target), marks_text(marks, mode, lang))

    def canvas_image(rgb, marks, mode, shown, target):
        if rgb is None or mode == "text":
            return None
        mask = shown.masks[target] if mode == "click" and shown is not None and 0 <= target < len(shown) else None
        return draw(rgb, marks, mode, mask)

    def marks_text(marks, mode: str, lang: str) -> str:
        if mode == "box":
            if not marks.boxes and marks.corner is None:
                return t(lang, "box_hint")
            boxes = ", ".join(("+" if lab == POSITIVE else "−") + "[" + ", ".join(f"{v:.0f}" for v in box) + "]"
                              for box, lab in zip(marks.boxes, marks.box_labels, strict=True))
            pending = t(lang, "corner_pending", x=marks.corner[0], y=marks.corner[1]) if marks.corner else ""
            return t(lang, "boxes_drawn", n=len(marks.boxes), boxes=boxes or "–") + pending
        if mode == "click":
            if not marks.points:
                return t(lang, "click_hint")
            pts = ", ".join(("+" if lab == POSITIVE else "−") + f"({x:.0f}, {y:.0f})"
                            for (x, y), lab in zip(marks.points, marks.point_labels, strict=True))
            return t(lang, "clicks_made", n=len(marks.points), points=pts)
        return ""

    def refine_shown(rgb, marks, base, target, mask_threshold, threshold, lang):
        """Re-run the refinement of ``target`` with every click so far (an undone click is simply left out)."""
        base = base if base is not None else Segmentation.empty(rgb.shape[1], rgb.shape[0])
        if not marks.points:
            shown = base
            status_text = t(lang, "refine_cleared")
        else:
            prior = base.masks[target] if 0 <= target < len(base) else None
            start = time.perf_counter()
            try:
                inst = service.refine(rgb, marks.points, marks.point_labels, mask=prior,
                                      mask_threshold=float(mask_threshold))
            except Sam3StudioError as exc:
                raise gr.Error(t(lang, "error", detail=str(exc))) from None
            label = base[target].prompt if 0 <= target < len(base) else t(lang, "object")
            shown = with_instance(base, inst, target, label)
            status_text = t(lang, "refine_status", n=len(marks.points), score=inst.score,
                            seconds=time.perf_counter() - start)
        return shown, present(shown, rgb, lang, float(threshold), status_text)

    def on_canvas(image_path, mode, polarity, target, marks, base, shown, mask_threshold, threshold, lang,
                  evt: gr.SelectData):
        """A click on the canvas: a box corner in box mode, a refinement click (and a new mask) in click mode."""
        lang = i18n.normalize(lang)
        rgb = decode(image_path, lang)
        if evt is None or evt.index is None or mode not in ("box", "click"):
            return (gr.skip(),) * 11
        x, y = (float(v) for v in evt.index[:2])
        label = int(polarity)
        target = NEW_OBJECT if target is None else int(target)
        if mode == "box":
            marks = marks.box_click(x, y, label)
            return (marks, canvas_image(rgb, marks, mode, shown, target), marks_text(marks, mode, lang), gr.skip(),
                    *(gr.skip(),) * 7)
        marks = marks.point_click(x, y, label)
        shown, panel = refine_shown(rgb, marks, base, target, mask_threshold, threshold, lang)
        return (marks, canvas_image(rgb, marks, mode, shown, shown_index(base, shown, target)),
                marks_text(marks, mode, lang), shown, *panel)

    def shown_index(base, shown, target):
        """Where the object being refined is in ``shown``: its row, or the last row for a new object."""
        if 0 <= target < (len(base) if base is not None else 0):
            return target
        return len(shown) - 1 if shown is not None and len(shown) > (len(base) if base is not None else 0) else NEW_OBJECT

    def on_edit(action, image_path, mode, target, marks, base, shown, mask_threshold, threshold, lang):
        """Undo the last mark, or clear all marks, of the current mode; in click mode the mask follows."""
        lang = i18n.normalize(lang)
        if not image_path or mode not in ("box", "click"):
            return (gr.skip(),) * 11
        rgb = decode(image_path, lang)
        target = NEW_OBJECT if target is None else int(target)
        marks = marks.undo(mode) if action == "undo" else marks.clear(mode)
        if mode == "box":
            return (marks, canvas_image(rgb, marks, mode, shown, target), marks_text(marks, mode, lang), gr.skip(),
                    *(gr.skip(),) * 7)
        shown, panel = refine_shown(rgb, marks, base, target, mask_threshold, threshold, lang)
        return (marks, canvas_image(rgb, marks, mode, shown, shown_index(base, shown, target)),
                marks_text(marks, mode, lang), shown, *panel)

    def on_mode(image_path, mode, marks, shown, target, lang):
        """Switching mode keeps the shown result as the new base and starts with no clicks."""
        lang = i18n.normalize(lang)
        marks = replace(marks.clear("click"), corner=None)
        rgb = decode(image_path, lang) if image_path and mode != "text" else None
        target = NEW_OBJECT if target is None else int(target)
        target = target if shown is not None and 0 <= target < len(shown) else NEW_OBJECT
        return (gr.update(visible=mode != "text"), gr.update(visible=mode == "click",
                choices=target_choices(shown, t(lang, "new_object")), value=target),
                marks, shown, canvas_image(rgb, marks, mode, shown, target), marks_text(marks, mode, lang))

    def on_target(image_path, mode, target, marks, shown, lang):
        """Picking another object keeps the refinement made so far and starts with no clicks."""
        lang = i18n.normalize(lang)
        marks = marks.clear("click")
        rgb = decode(image_path, lang) if image_path else None
        target = NEW_OBJECT if target is None else int(target)
        return (marks, shown, gr.update(choices=target_choices(shown, t(lang, "new_object")), value=target),
                canvas_image(rgb, marks, mode, shown, target), marks_text(marks, mode, lang))

    def on_image(image_path, mode, lang):
        """A new image: no marks, no result to refine."""
        lang = i18n.normalize(lang)
        marks = Marks()
        rgb = None
        if image_path and mode != "text":
            with contextlib.suppress(gr.Error):
                rgb = decode(image_path, lang)
        return (marks, None, None, gr.update(choices=target_choices(None, t(lang, "new_object")), value=NEW_OBJECT),
                canvas_image(rgb, marks, mode, None, NEW_OBJECT), marks_text(marks, mode, lang))

    runner_box: list[JobRunner] = [jobs] if jobs is not None else []
    runner_lock = threading.Lock()

    def runner() -> JobRunner:
        with runner_lock:
            if not runner_box:
                runner_box.append(JobRunner(settings, detector=service.shared_detector))
            if not runner_box[0].running:
                runner_box[0].start()
            return runner_box[0]

    def run_video(video_path, prompt, threshold, stride, lang="en", progress=gr.Progress()):
        """Submit a job to the shared runner, follow it with a progress bar, then show and offer its outputs."""
        lang = i18n.normalize(lang)
        if not video_path:
            raise gr.Error(t(lang, "no_video"))
        try:
            r = runner()
            job = r.submit_file(video_path, {"prompts": prompt, "threshold": float(threshold),
                                             "stride": max(1, int(stride or 1))})
        except Sam3StudioError as exc:
            raise gr.Error(t(lang, "error", detail=str(exc))) from None
        except OSError as exc:
            raise gr.Error(t(lang, "error", detail=str(exc))) from None
        job_id = job["id"]
        try:
            while job["state"] in ("queued", "running"):
                done, total = job["progress_done"], job["progress_total"]
                if job["state"] == "queued":
                    progress(0, desc=t(lang, "video_queued"))
                elif total:
                    progress((done, total), desc=t(lang, "video_progress", done=done, total=total), unit="frames")
                else:
                    progress(None, desc=t(lang, "video_progress", done=done, total="?"))
                time.sleep(0.5)
                job = r.get(job_id)
        except JobNotFound:
            raise gr.Error(t(lang, "video_cancelled")) from None
        try:
            if job["state"] != "done":
                raise gr.Error(t(lang, "video_failed", detail=job["error"] or job["state"]))
            # Copy the outputs where Gradio may serve them, then free the job's space in data_dir.
            out_dir = run_dirs.new()
            for name in ("summary.json", "frames.jsonl", "overlay.mp4"):
                src = r.output_path(job_id, name)
                if src.is_file():
                    shutil.copyfile(src, out_dir / name)
        finally:
            try:
                r.cancel(job_id)
            except JobNotFound:
                pass
        summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
        overlay = out_dir / "overlay.mp4"
        downloads = [str(p) for p in (out_dir / "summary.json", out_dir / "frames.jsonl", overlay) if p.is_file()]
        rows = track_rows(summary)
        status_text = t(lang, "video_status", frames=summary.get("frames_processed", 0), tracks=len(rows),
                        seconds=float((summary.get("timings") or {}).get("total_s") or 0.0))
        return (str(overlay) if overlay.is_file() else None, {"headers": t(lang, "track_headers"), "data": rows},
                downloads, status_text)

    def rerun(image_path, prompt, threshold, mask_threshold, fill_holes, min_island, smooth, lang, mode, marks,
              base=None, target=None):
        """Slider moves re-run post-processing only; before a first run there is nothing to update.

        While an object is being refined by clicks, the sliders re-run that refinement (mask precision
        applies to it) instead of replacing it with a fresh segmentation.
        """
        if image_path and mode == "click" and marks is not None and marks.points:
            lang = i18n.normalize(lang)
            rgb = decode(image_path, lang)
            target = NEW_OBJECT if target is None else int(target)
            shown, panel = refine_shown(rgb, marks, base, target, mask_threshold, threshold, lang)
            return (*panel, gr.skip(), shown, gr.skip(), gr.skip(),
                    canvas_image(rgb, marks, mode, shown, shown_index(base, shown, target)), gr.skip())
        if not image_path or not ((prompt or "").strip() or (mode == "box" and marks is not None and marks.boxes)):
            return tuple(gr.skip() for _ in outputs)
        return run(image_path, prompt, threshold, mask_threshold, fill_holes, min_island, smooth, lang, mode, marks)

    def on_undo(*args):
        return on_edit("undo", *args)

    def on_clear(*args):
        return on_edit("clear", *args)

    def show_details(details: list[dict], lang: str, evt: gr.SelectData) -> str:
        if not details or evt.index is None or not 0 <= int(evt.index) < len(details):
            return t(lang, "details_hint")
        d = details[int(evt.index)]
        x1, y1, x2, y2 = d["box_xyxy"]
        return t(lang, "details", id=d["id"], prompt=d["prompt"], score=d["score"], area=d["area"],
                 ratio=100 * d["area_ratio"], x1=x1, y1=y1, x2=x2, y2=y2)

    with gr.Blocks(title="sam3studio", delete_cache=(3600, 7200)) as demo:
        with gr.Row():
            intro = gr.Markdown(t(first_lang, "intro"))
            lang_radio = gr.Radio([(name, code) for code, name in i18n.LANGUAGES.items()], value=first_lang,
                                  label=t(first_lang, "language"), elem_id="language", scale=0, min_width=180)
        banner = gr.Markdown(model_banner(), elem_id="model-banner")
        with gr.Tabs():
            with gr.Tab(t(first_lang, "tab_image"), id="image", elem_id="image-tab") as image_tab:
                with gr.Row():
                    with gr.Column(scale=1):
                        image = gr.Image(type="filepath", label=t(first_lang, "image"), sources=["upload", "clipboard"],
                                         elem_id="input-image")
                        photo_examples = gr.Examples(examples=[[p] for p in example_paths()], inputs=[image],
                                                     label=t(first_lang, "examples"))
                        prompt = gr.Textbox(label=t(first_lang, "prompts"), placeholder=t(first_lang, "prompts_placeholder"),
                                            elem_id="prompt", info=t(first_lang, "prompts_info"))
                        chips = gr.Examples(examples=[[c] for c in PROMPT_CHIPS], inputs=[prompt], label=t(first_lang, "try"))
                        mode = gr.Radio(mode_choices(first_lang), value="text", label=t(first_lang, "mode"),
                                        info=t(first_lang, "mode_info"), elem_id="mode")
                        with gr.Group(visible=False) as interact:
                            canvas = gr.Image(type="numpy", interactive=False, label=t(first_lang, "canvas"),
                                              elem_id="canvas")
                            polarity = gr.Radio(polarity_choices(first_lang), value=POSITIVE,
                                                label=t(first_lang, "polarity"), elem_id="polarity")
                            target = gr.Dropdown(target_choices(None, t(first_lang, "new_object")), value=NEW_OBJECT,
                                                 label=t(first_lang, "target"), elem_id="target", visible=False)
                            with gr.Row():
                                undo_btn = gr.Button(t(first_lang, "undo"), size="sm", elem_id="undo")
                                clear_btn = gr.Button(t(first_lang, "clear"), size="sm", elem_id="clear")
                            marks_md = gr.Markdown(elem_id="marks")
                        threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.01, label=t(first_lang, "threshold"),
                                              info=t(first_lang, "threshold_info"), elem_id="threshold")
                        mask_threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label=t(first_lang, "mask_precision"),
                                                   info=t(first_lang, "mask_precision_info"), elem_id="mask-threshold")
                        with gr.Accordion(t(first_lang, "cleanup"), open=False) as cleanup:
                            fill_holes = gr.Slider(0, 1, value=0, step=0.01, label=t(first_lang, "fill_holes"))
                            min_island = gr.Slider(0, 1, value=0, step=0.01, label=t(first_lang, "min_island"))
                            smooth = gr.Slider(0, 10, value=0, step=1, label=t(first_lang, "smooth"))
                        run_btn = gr.Button(t(first_lang, "run"), variant="primary", elem_id="run")
                    with gr.Column(scale=2):
                        result = gr.AnnotatedImage(label=t(first_lang, "result"), elem_id="result")
                        details_md = gr.Markdown(t(first_lang, "details_hint"), elem_id="details")
                        prompts_md = gr.Markdown(elem_id="prompt-summary")
                        table = gr.Dataframe(headers=t(first_lang, "headers"), label=t(first_lang, "instances"),
                                             interactive=False, elem_id="instances")
                        downloads = gr.File(label=t(first_lang, "downloads"), file_count="multiple",
                                            interactive=False, elem_id="downloads")
                        status = gr.Markdown(elem_id="status")
            with gr.Tab(t(first_lang, "tab_video"), id="video", elem_id="video-tab") as video_tab:
                with gr.Row():
                    with gr.Column(scale=1):
                        video_in = gr.Video(label=t(first_lang, "video"), sources=["upload"], elem_id="input-video")
                        video_prompt = gr.Textbox(label=t(first_lang, "prompts"),
                                                  placeholder=t(first_lang, "prompts_placeholder"),
                                                  info=t(first_lang, "prompts_info"), elem_id="video-prompt")
                        video_threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.01, label=t(first_lang, "threshold"),
                                                    info=t(first_lang, "threshold_info"), elem_id="video-threshold")
                        video_stride = gr.Number(1, minimum=1, maximum=1000, step=1, precision=0,
                                                 label=t(first_lang, "stride"), info=t(first_lang, "stride_info"),
                                                 elem_id="video-stride")
                        video_btn = gr.Button(t(first_lang, "video_run"), variant="primary", elem_id="video-run")
                    with gr.Column(scale=2):
                        video_out = gr.Video(label=t(first_lang, "video_result"), interactive=False,
                                             elem_id="video-result")
                        tracks_table = gr.Dataframe(headers=t(first_lang, "track_headers"), label=t(first_lang, "tracks"),
                                                    interactive=False, elem_id="tracks")
                        video_files = gr.File(label=t(first_lang, "video_downloads"), file_count="multiple",
                                              interactive=False, elem_id="video-downloads")
                        video_status = gr.Markdown(elem_id="video-status")
        details_state = gr.State([])
        marks_state = gr.State(Marks())
        base_state = gr.State(None)  # the segmentation clicks refine
        shown_state = gr.State(None)  # what the result panel shows (base with the current refinement)

        def relabel(lang: str, rows=None) -> tuple:
            """Every label, hint and button of the page in ``lang`` (the outputs of `labelled`)."""
            lang = i18n.normalize(lang)
            data = rows.values.tolist() if hasattr(rows, "values") else []  # the table arrives as a DataFrame
            return (t(lang, "intro"), gr.update(value=lang, label=t(lang, "language")), model_banner(lang),
                    gr.update(label=t(lang, "image")), gr.update(label=t(lang, "examples")),
                    gr.update(label=t(lang, "prompts"), placeholder=t(lang, "prompts_placeholder"), info=t(lang, "prompts_info")),
                    gr.update(label=t(lang, "try")),
                    gr.update(label=t(lang, "threshold"), info=t(lang, "threshold_info")),
                    gr.update(label=t(lang, "mask_precision"), info=t(lang, "mask_precision_info")),
                    gr.update(label=t(lang, "cleanup")), gr.update(label=t(lang, "fill_holes")),
                    gr.update(label=t(lang, "min_island")), gr.update(label=t(lang, "smooth")),
                    gr.update(value=t(lang, "run")), gr.update(label=t(lang, "result")), t(lang, "details_hint"),
                    gr.update(label=t(lang, "instances"), value=table_value(data, lang)),
                    gr.update(label=t(lang, "downloads")),
                    gr.update(label=t(lang, "tab_image")), gr.update(label=t(lang, "tab_video")),
                    gr.update(label=t(lang, "video")),
                    gr.update(label=t(lang, "prompts"), placeholder=t(lang, "prompts_placeholder"), info=t(lang, "prompts_info")),
                    gr.update(label=t(lang, "threshold"), info=t(lang, "threshold_info")),
                    gr.update(label=t(lang, "stride"), info=t(lang, "stride_info")), gr.update(value=t(lang, "video_run")),
                    gr.update(label=t(lang, "video_result")), gr.update(label=t(lang, "tracks")),
                    gr.update(label=t(lang, "video_downloads")),
                    gr.update(label=t(lang, "mode"), info=t(lang, "mode_info"), choices=mode_choices(lang)),
                    gr.update(label=t(lang, "canvas")),
                    gr.update(label=t(lang, "polarity"), choices=polarity_choices(lang)),
                    gr.update(label=t(lang, "target")), gr.update(value=t(lang, "undo")), gr.update(value=t(lang, "clear")))

        labelled = [intro, lang_radio, banner, image, photo_examples.dataset, prompt, chips.dataset, threshold,
                    mask_threshold, cleanup, fill_holes, min_island, smooth, run_btn, result, details_md, table, downloads,
                    image_tab, video_tab, video_in, video_prompt, video_threshold, video_stride, video_btn, video_out,
                    tracks_table, video_files, mode, canvas, polarity, target, undo_btn, clear_btn]

        def on_load(request: gr.Request) -> tuple:
            """A page opens in --lang, or with "auto" in the browser's language."""
            lang = i18n.pick_language(settings.lang, request.headers.get("accept-language") if request else None)
            return relabel(lang)

        inputs = [image, prompt, threshold, mask_threshold, fill_holes, min_island, smooth, lang_radio, mode, marks_state]
        panel = [result, table, prompts_md, downloads, status, details_state, details_md]
        outputs = [*panel, base_state, shown_state, marks_state, target, canvas, marks_md]
        # All segment events share one concurrency group (at most max_concurrent at once: with the default
        # of 1, a click and a slider release never race each other); a burst of slider moves keeps only the last.
        group = {"concurrency_id": "segment", "concurrency_limit": settings.max_concurrent}
        run_btn.click(run, inputs, outputs, api_name="segment", **group)
        prompt.submit(run, inputs, outputs, api_name=False, **group)
        for slider in (threshold, mask_threshold, fill_holes, min_island, smooth):
            # Only post-processing re-runs: the image and prompt outputs come from the engine's caches.
            slider.release(rerun, [*inputs, base_state, target], outputs, api_name=False, show_progress="minimal",
                           trigger_mode="always_last", **group)
        edit_inputs = [image, mode, target, marks_state, base_state, shown_state, mask_threshold, threshold, lang_radio]
        edit_outputs = [marks_state, canvas, marks_md, shown_state, *panel]
        canvas.select(on_canvas, [image, mode, polarity, target, marks_state, base_state, shown_state, mask_threshold,
                                  threshold, lang_radio], edit_outputs, api_name=False, **group)
        undo_btn.click(on_undo, edit_inputs, edit_outputs, api_name=False, **group)
        clear_btn.click(on_clear, edit_inputs, edit_outputs, api_name=False, **group)
        mode.input(on_mode, [image, mode, marks_state, shown_state, target, lang_radio],
                   [interact, target, marks_state, base_state, canvas, marks_md], api_name=False, **group)
        target.input(on_target, [image, mode, target, marks_state, shown_state, lang_radio],
                     [marks_state, base_state, target, canvas, marks_md], api_name=False, **group)
        image.change(on_image, [image, mode, lang_radio], [marks_state, base_state, shown_state, target, canvas, marks_md],
                     api_name=False, **group)
        video_inputs = [video_in, video_prompt, video_threshold, video_stride, lang_radio]
        video_outputs = [video_out, tracks_table, video_files, video_status]
        video_group = {"concurrency_id": "video", "concurrency_limit": settings.max_video_jobs}
        video_btn.click(run_video, video_inputs, video_outputs, api_name="track_video", **video_group)
        video_prompt.submit(run_video, video_inputs, video_outputs, api_name=False, **video_group)
        result.select(show_details, [details_state, lang_radio], [details_md], api_name=False)
        lang_radio.input(relabel, [lang_radio, table], labelled, api_name="language", queue=False)
        demo.load(on_load, None, labelled, api_name=False, queue=False)
    # Bounded like the API: beyond running + waiting requests, Gradio answers "queue full" at once.
    demo.queue(max_size=settings.max_concurrent + settings.max_queue)
    return demo
