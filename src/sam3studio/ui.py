"""The Gradio 6 web UI. It calls the same `SegmentService` as the REST API; it never calls the API over HTTP."""

from __future__ import annotations

import collections
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from sam3studio import i18n
from sam3studio.errors import Sam3StudioError
from sam3studio.jobs import JobNotFound, JobRunner
from sam3studio.service import SegmentOptions, SegmentService

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

    def run(image_path, prompt, threshold, mask_threshold, fill_holes, min_island, smooth, lang="en"):
        lang = i18n.normalize(lang)
        if not image_path:
            raise gr.Error(t(lang, "no_image"))
        try:
            rgb = service.decode_image(Path(image_path))
            options = SegmentOptions(score_threshold=float(threshold), mask_threshold=float(mask_threshold),
                                     fill_holes=float(fill_holes), min_island=float(min_island), smooth=int(smooth))
            seg = service.segment(rgb, prompt, options)
        except Sam3StudioError as exc:
            raise gr.Error(t(lang, "error", detail=str(exc))) from None
        info = service.segmenter.info()
        annotations = [(seg.masks[i].astype(np.float32), f"{inst.prompt} · {inst.score:.2f} (#{inst.id})")
                       for i, inst in enumerate(seg)]
        out_dir = run_dirs.new()
        paths = write_outputs(seg, rgb, out_dir, "result", ("json", "overlay", "cutout", "masks"))
        zip_path = shutil.make_archive(str(out_dir / "result.masks"), "zip", paths["masks"])
        downloads = [str(paths["json"]), str(paths["overlay"]), str(paths["cutout"]), zip_path]
        details = [inst.to_dict(include_mask=False) for inst in seg]
        return ((rgb, annotations), table_value(instance_rows(seg), lang), prompt_summary(seg, float(threshold), lang),
                downloads, status_line(seg, info, lang), details, t(lang, "details_hint"))

    runner_box: list[JobRunner] = [jobs] if jobs is not None else []
    runner_lock = threading.Lock()

    def runner() -> JobRunner:
        with runner_lock:
            if not runner_box:
                runner_box.append(JobRunner(settings))
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

    def rerun(image_path, prompt, *rest):
        """Slider moves re-run post-processing only; before a first run there is nothing to update."""
        if not image_path or not (prompt or "").strip():
            return tuple(gr.skip() for _ in outputs)
        return run(image_path, prompt, *rest)

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
                    gr.update(label=t(lang, "video_downloads")))

        labelled = [intro, lang_radio, banner, image, photo_examples.dataset, prompt, chips.dataset, threshold,
                    mask_threshold, cleanup, fill_holes, min_island, smooth, run_btn, result, details_md, table, downloads,
                    image_tab, video_tab, video_in, video_prompt, video_threshold, video_stride, video_btn, video_out,
                    tracks_table, video_files]

        def on_load(request: gr.Request) -> tuple:
            """A page opens in --lang, or with "auto" in the browser's language."""
            lang = i18n.pick_language(settings.lang, request.headers.get("accept-language") if request else None)
            return relabel(lang)

        inputs = [image, prompt, threshold, mask_threshold, fill_holes, min_island, smooth, lang_radio]
        outputs = [result, table, prompts_md, downloads, status, details_state, details_md]
        # All segment events of a page share one concurrency group, so a click and a slider release
        # never race each other; a burst of slider moves keeps only the last.
        group = {"concurrency_id": "segment", "concurrency_limit": settings.max_concurrent}
        run_btn.click(run, inputs, outputs, api_name="segment", **group)
        prompt.submit(run, inputs, outputs, api_name=False, **group)
        for slider in (threshold, mask_threshold, fill_holes, min_island, smooth):
            # Only post-processing re-runs: the image and prompt outputs come from the engine's caches.
            slider.release(rerun, inputs, outputs, api_name=False, show_progress="minimal", trigger_mode="always_last",
                           **group)
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
