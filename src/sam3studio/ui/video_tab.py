"""The Video tab: track text prompts through a video as a job of the shared `JobRunner`, then show and offer its outputs;
below, the editor (`ui.video_editor`): the same video as a session to correct on any frame.

`video_tab(ctx)` builds the tab inside the page's ``gr.Tabs()``, wires its events and returns its relabel
rows. The job goes to ``ctx.job_runner()``, the same runner as ``POST /api/v1/videos`` (one worker, one
bounded queue).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import gradio as gr

from sam3studio.errors import Sam3StudioError
from sam3studio.jobs import JobNotFound
from sam3studio.ui.common import Relabel, UiContext, failure, session_of, texts
from sam3studio.ui.i18n import normalize
from sam3studio.ui.i18n import text as t
from sam3studio.ui.video_editor import video_editor

OUTPUT_FILES = ("summary.json", "frames.jsonl", "overlay.mp4")


def track_rows(summary: dict[str, Any]) -> list[list[Any]]:
    """The tracks table of the Video tab: track id, prompt, first/last frame, frames present, mean score."""
    return [[tr["track_id"], tr["prompt"], tr["first_frame"], tr["last_frame"], tr["frames_present"],
             round(float(tr["mean_score"]), 3)] for tr in summary.get("tracks", [])]


def _range(start, end, max_frames, lang: str) -> dict[str, Any]:
    """The optional range of a job (seconds from, seconds to, frames at most); an empty box is no limit."""
    start = float(start) if start not in (None, "") else None
    end = float(end) if end not in (None, "") else None
    max_frames = int(max_frames) if max_frames not in (None, "") else None
    if start is not None and end is not None and end <= start:
        raise gr.Error(t(lang, "video_bad_range", start=start, end=end))
    if max_frames is not None and max_frames < 1:
        raise gr.Error(t(lang, "video_bad_max_frames"))
    return {"start": start, "end": end, "max_frames": max_frames}


class VideoTab:
    """The tab's components and its one handler."""

    def __init__(self, ctx: UiContext) -> None:
        self.ctx = ctx
        lang = ctx.first_lang
        with gr.Tab(t(lang, "tab_video"), id="video", elem_id="video-tab") as self.tab:
            with gr.Row():
                with gr.Column(scale=1):
                    self.video_in = gr.Video(label=t(lang, "video"), sources=["upload"], elem_id="input-video")
                    self.prompt = gr.Textbox(label=t(lang, "prompts"), placeholder=t(lang, "prompts_placeholder"),
                                             info=t(lang, "prompts_info"), elem_id="video-prompt")
                    self.threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.01, label=t(lang, "threshold"),
                                               info=t(lang, "threshold_info"), elem_id="video-threshold")
                    self.stride = gr.Number(1, minimum=1, maximum=1000, step=1, precision=0, label=t(lang, "stride"),
                                            info=t(lang, "stride_info"), elem_id="video-stride")
                    with gr.Row():  # the same range options as the CLI (`track`) and the API (`/videos`)
                        self.start = gr.Number(None, minimum=0, label=t(lang, "video_start"), elem_id="video-start")
                        self.end = gr.Number(None, minimum=0, label=t(lang, "video_end"), elem_id="video-end")
                        self.max_frames = gr.Number(None, minimum=1, precision=0, label=t(lang, "video_max_frames"),
                                                    elem_id="video-max-frames")
                    self.run_btn = gr.Button(t(lang, "video_run"), variant="primary", elem_id="video-run")
                with gr.Column(scale=2):
                    self.video_out = gr.Video(label=t(lang, "video_result"), interactive=False, elem_id="video-result")
                    self.tracks = gr.Dataframe(headers=t(lang, "track_headers"), label=t(lang, "tracks"),
                                               interactive=False, elem_id="tracks")
                    self.files = gr.File(label=t(lang, "video_downloads"), file_count="multiple", interactive=False,
                                         elem_id="video-downloads")
                    self.status = gr.Markdown(elem_id="video-status")
            self.editor_relabels = video_editor(ctx, self.video_in)  # the editor: a session on this video

    def wire(self) -> None:
        inputs = [self.video_in, self.prompt, self.threshold, self.stride, self.ctx.language, self.start, self.end,
                  self.max_frames]
        outputs = [self.video_out, self.tracks, self.files, self.status]
        # One progress bar, on the result video (not one per output).
        group = {"concurrency_id": "video", "concurrency_limit": self.ctx.settings.max_video_jobs,
                 "show_progress_on": [self.video_out]}
        self.run_btn.click(self.run_video, inputs, outputs, api_name="track_video", **group)
        self.prompt.submit(self.run_video, inputs, outputs, api_name=False, **group)

    def relabels(self) -> list[Relabel]:
        """The tab's rows of the page's relabel table."""
        return [
            Relabel(self.tab, texts(label="tab_video")), Relabel(self.video_in, texts(label="video")),
            Relabel(self.prompt, texts(label="prompts", placeholder="prompts_placeholder", info="prompts_info")),
            Relabel(self.threshold, texts(label="threshold", info="threshold_info")),
            Relabel(self.stride, texts(label="stride", info="stride_info")),
            Relabel(self.start, texts(label="video_start")), Relabel(self.end, texts(label="video_end")),
            Relabel(self.max_frames, texts(label="video_max_frames")),
            Relabel(self.run_btn, texts(value="video_run")), Relabel(self.video_out, texts(label="video_result")),
            Relabel(self.tracks, texts(label="tracks")), Relabel(self.files, texts(label="video_downloads")),
            *self.editor_relabels,
        ]

    def run_video(self, video_path, prompt, threshold, stride, lang="en", start=None, end=None, max_frames=None,
                  progress=gr.Progress(), request: gr.Request = None):
        """Submit a job to the shared runner, follow it with a progress bar, then show and offer its outputs."""
        # A tuple, not a dict keyed by component: all four outputs always change, and callers (tests) unpack it.
        lang = normalize(lang)
        if not video_path:
            raise gr.Error(t(lang, "no_video"))
        try:
            r = self.ctx.job_runner()
            job = r.submit_file(video_path, {"prompts": prompt, "threshold": float(threshold),
                                             "stride": max(1, int(stride or 1)), **_range(start, end, max_frames, lang)})
        except (Sam3StudioError, OSError) as exc:
            raise failure(lang, exc) from None
        job_id = job["id"]
        job = self._follow(r, job, lang, progress)
        out_dir = self._collect(r, job_id, job, lang, session_of(request))
        summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
        overlay = out_dir / "overlay.mp4"
        downloads = [str(out_dir / name) for name in OUTPUT_FILES if (out_dir / name).is_file()]
        rows = track_rows(summary)
        status_text = t(lang, "video_status", frames=summary.get("frames_processed", 0), tracks=len(rows),
                        seconds=float((summary.get("timings") or {}).get("total_s") or 0.0))
        return (str(overlay) if overlay.is_file() else None, {"headers": t(lang, "track_headers"), "data": rows},
                downloads, status_text)

    @staticmethod
    def _follow(r, job: dict[str, Any], lang: str, progress) -> dict[str, Any]:
        """Poll the job until it ends, moving the progress bar; a job deleted meanwhile was cancelled."""
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
        return job

    def _collect(self, r, job_id: str, job: dict[str, Any], lang: str, session: str | None = None) -> Path:
        """Copy a done job's outputs where Gradio may serve them, then free the job's space in data_dir."""
        try:
            if job["state"] != "done":
                raise gr.Error(t(lang, "video_failed", detail=job["error"] or job["state"]))
            out_dir = self.ctx.run_dirs.new(session)
            for name in OUTPUT_FILES:
                src = r.output_path(job_id, name)
                if src.is_file():
                    shutil.copyfile(src, out_dir / name)
        finally:
            try:
                r.cancel(job_id)
            except JobNotFound:
                pass
        return out_dir


def video_tab(ctx: UiContext) -> list[Relabel]:
    """Build the Video tab (call inside the page's ``gr.Tabs()``), wire its events, return its relabel rows."""
    tab = VideoTab(ctx)
    tab.wire()
    return tab.relabels()
