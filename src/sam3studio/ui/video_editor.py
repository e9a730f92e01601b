"""The Video tab's editor: a video session you correct (`sam3studio.sessions.SessionManager`, as /api/v1/sessions).

Open the tab's video in the editor, move the frame slider (that frame's masks are drawn on it), click on
the frame to add an object or fix the one picked (positive or negative clicks, as on the Image tab),
find objects by text on that frame, remove an object, propagate forward, backward or both with a
progress bar, and download the results (frames JSONL, summary, YouTube-VIS JSON, overlay MP4).

Part of the Video tab (built inside its ``gr.Tab`` by `VideoEditor`); it imports `ui.common`, `ui.i18n`,
`ui.marks` and the library only. One session per page (in a ``gr.State``); opening another video closes
it, and the manager's idle timeout ends one a page left behind.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from sam3studio.errors import Sam3StudioError, SessionNotFound
from sam3studio.ui.common import Relabel, UiContext, failure, texts
from sam3studio.ui.i18n import normalize
from sam3studio.ui.i18n import text as t
from sam3studio.ui.marks import NEW_OBJECT, POSITIVE
from sam3studio.video.results import FrameResult
from sam3studio.video.sinks import FrameOverlay

__all__ = ["EditorState", "VideoEditor", "object_choices", "object_rows", "video_editor"]

DOWNLOADS = ("frames.jsonl", "summary.json", "ytvis.json", "overlay.mp4")


@dataclass(frozen=True)
class EditorState:
    """The page's session: its id in the manager and its frame count (0: none open)."""

    session_id: str | None = None
    frames: int = 0


def object_rows(objects: list[dict[str, Any]]) -> list[list[Any]]:
    """The objects table: id, label, what made it, frames with an input, frames where it is present."""
    return [[o["object_id"], o["label"], o["kind"], ", ".join(str(f) for f in o["input_frames"]), o["frames_present"]]
            for o in objects]


def object_choices(objects: list[dict[str, Any]], new_label: str) -> list[tuple[str, int]]:
    return [(new_label, NEW_OBJECT), *((f"#{o['object_id']} {o['label']}", o["object_id"]) for o in objects)]


def direction_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(lang, "editor_forward"), "forward"), (t(lang, "editor_backward"), "backward"),
            (t(lang, "editor_both"), "both")]


def polarity_choices(lang: str) -> list[tuple[str, int]]:
    return [(t(lang, "positive"), POSITIVE), (t(lang, "negative"), 0)]


class VideoEditor:
    """The editor's components (built where it is constructed) and handlers."""

    def __init__(self, ctx: UiContext, video_in: Any) -> None:
        self.ctx = ctx
        self.video_in = video_in
        lang = ctx.first_lang
        with gr.Group(elem_id="editor"):
            self.title = gr.Markdown(t(lang, "editor_title"), elem_id="editor-title")
            self.open_btn = gr.Button(t(lang, "editor_open"), elem_id="editor-open")
            with gr.Row():
                with gr.Column(scale=2):
                    self.view = gr.Image(type="numpy", interactive=False, label=t(lang, "editor_view"),
                                         elem_id="editor-view")
                    self.frame = gr.Slider(0, 1, value=0, step=1, label=t(lang, "editor_frame"), interactive=False,
                                           elem_id="editor-frame")
                with gr.Column(scale=1):
                    self.target = gr.Dropdown(object_choices([], t(lang, "new_object")), value=NEW_OBJECT,
                                              label=t(lang, "editor_target"), elem_id="editor-target")
                    self.polarity = gr.Radio(polarity_choices(lang), value=POSITIVE, label=t(lang, "editor_polarity"),
                                             elem_id="editor-polarity")
                    self.remove_btn = gr.Button(t(lang, "editor_remove"), size="sm", elem_id="editor-remove")
                    self.text = gr.Textbox(label=t(lang, "editor_prompt"), placeholder=t(lang, "prompts_placeholder"),
                                           elem_id="editor-prompt")
                    self.threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.01, label=t(lang, "threshold"),
                                               elem_id="editor-threshold")
                    self.find_btn = gr.Button(t(lang, "editor_find"), size="sm", elem_id="editor-find")
                    self.direction = gr.Radio(direction_choices(lang), value="both", label=t(lang, "editor_direction"),
                                              elem_id="editor-direction")
                    self.propagate_btn = gr.Button(t(lang, "editor_propagate"), variant="primary",
                                                   elem_id="editor-propagate")
                    self.download_btn = gr.Button(t(lang, "editor_download"), size="sm", elem_id="editor-download")
            self.objects = gr.Dataframe(headers=t(lang, "editor_headers"), label=t(lang, "editor_objects"),
                                        interactive=False, elem_id="editor-objects")
            self.files = gr.File(label=t(lang, "editor_files"), file_count="multiple", interactive=False,
                                 elem_id="editor-files")
            self.status = gr.Markdown(elem_id="editor-status")
            self.state = gr.State(EditorState())

    # ------------------------------------------------------------------ wiring
    def wire(self) -> None:
        lang = self.ctx.language
        group = {"concurrency_id": "video-editor", "concurrency_limit": self.ctx.settings.max_sessions}
        shown = [self.view, self.objects, self.target, self.status]
        self.open_btn.click(self.on_open, [self.video_in, self.state, lang], [self.state, self.frame, *shown],
                            api_name=False, **group)
        self.frame.change(self.on_frame, [self.frame, self.state, lang], [self.view], api_name=False,
                          trigger_mode="always_last", show_progress="hidden", **group)
        self.view.select(self.on_click, [self.frame, self.polarity, self.target, self.state, lang], shown,
                         api_name=False, **group)
        self.find_btn.click(self.on_find, [self.frame, self.text, self.threshold, self.target, self.state, lang], shown,
                            api_name=False, **group)
        self.remove_btn.click(self.on_remove, [self.frame, self.target, self.state, lang], shown, api_name=False,
                              **group)
        self.propagate_btn.click(self.on_propagate, [self.frame, self.direction, self.target, self.state, lang], shown,
                                 api_name=False, **group)
        self.download_btn.click(self.on_download, [self.state, lang], [self.files, self.status], api_name=False,
                                **group)

    def relabels(self) -> list[Relabel]:
        def radio(label: str, choices: Any) -> Any:
            return lambda lang: gr.update(label=t(lang, label), choices=choices(lang))

        def table(lang: str, rows: Any) -> Any:
            if rows is None:  # the page is loading: the tab may have filled the table already, keep what it holds
                return gr.update(label=t(lang, "editor_objects"))
            data = rows.values.tolist() if hasattr(rows, "values") else []
            return gr.update(label=t(lang, "editor_objects"), value={"headers": t(lang, "editor_headers"), "data": data})

        return [
            Relabel(self.title, lambda lang: t(lang, "editor_title")), Relabel(self.open_btn, texts(value="editor_open")),
            Relabel(self.view, texts(label="editor_view")), Relabel(self.frame, texts(label="editor_frame")),
            Relabel(self.target, texts(label="editor_target")),
            Relabel(self.polarity, radio("editor_polarity", polarity_choices)),
            Relabel(self.remove_btn, texts(value="editor_remove")),
            Relabel(self.text, texts(label="editor_prompt", placeholder="prompts_placeholder")),
            Relabel(self.threshold, texts(label="threshold")), Relabel(self.find_btn, texts(value="editor_find")),
            Relabel(self.direction, radio("editor_direction", direction_choices)),
            Relabel(self.propagate_btn, texts(value="editor_propagate")),
            Relabel(self.download_btn, texts(value="editor_download")),
            Relabel(self.objects, table, keeps="editor_rows"), Relabel(self.files, texts(label="editor_files")),
        ]

    # ------------------------------------------------------------------ helpers
    def _manager(self, lang: str):
        try:
            return self.ctx.session_manager()
        except (Sam3StudioError, OSError) as exc:
            raise failure(lang, exc) from None

    def _session(self, state: EditorState, lang: str):
        if state is None or state.session_id is None:
            raise gr.Error(t(lang, "editor_no_session"))
        try:
            return self._manager(lang).get(state.session_id).session
        except Sam3StudioError as exc:
            raise failure(lang, exc) from None

    def _render(self, session, index: int):
        index = max(0, min(int(index or 0), session.frame_count - 1))
        frame = session.frame(index, with_image=True)
        return FrameOverlay(session.width, session.height).render(
            FrameResult(frame.index, frame.timestamp, frame.width, frame.height, frame.instances, image=frame.image))

    def _shown(self, session, index: int, lang: str, status: str, target: int | None = None) -> dict:
        objects = session.object_list()
        choices = object_choices(objects, t(lang, "new_object"))
        value = int(target) if target is not None and any(c[1] == int(target) for c in choices) else NEW_OBJECT
        return {self.view: self._render(session, index),
                self.objects: {"headers": t(lang, "editor_headers"), "data": object_rows(objects)},
                self.target: gr.update(choices=choices, value=value), self.status: status}

    # ------------------------------------------------------------------ handlers
    def on_open(self, video_path, state: EditorState, lang="en") -> dict:
        """Open the tab's video as a new session (the page's previous one is closed)."""
        lang = normalize(lang)
        if not video_path:
            raise gr.Error(t(lang, "no_video"))
        manager = self._manager(lang)
        if state is not None and state.session_id is not None:
            try:
                manager.delete(state.session_id)
            except SessionNotFound:
                pass
        try:
            handle = manager.create(lambda dest: shutil.copyfile(video_path, dest), Path(video_path).suffix)
        except (Sam3StudioError, OSError) as exc:
            raise failure(lang, exc) from None
        session = handle.session
        status = t(lang, "editor_opened", frames=session.frame_count, width=session.width, height=session.height)
        return {self.state: EditorState(handle.id, session.frame_count),
                self.frame: gr.update(minimum=0, maximum=max(1, session.frame_count - 1), value=0, interactive=True),
                **self._shown(session, 0, lang, status)}

    def on_frame(self, index, state: EditorState, lang="en") -> Any:
        if state is None or state.session_id is None:
            return gr.skip()
        return self._render(self._session(state, normalize(lang)), index)

    def on_click(self, index, polarity, target, state: EditorState, lang="en", evt: gr.SelectData = None) -> dict:
        """A click on the frame: a new object, or a fix of the object picked; that object stays picked."""
        lang = normalize(lang)
        session = self._session(state, lang)
        if evt is None or evt.index is None:
            return gr.skip()
        x, y = (float(v) for v in evt.index[:2])
        object_id = None if target is None or int(target) == NEW_OBJECT else int(target)
        try:
            inst = self._manager(lang).add_clicks(state.session_id, int(index), [[x, y]], [int(polarity)], object_id)
        except Sam3StudioError as exc:
            raise failure(lang, exc) from None
        status = t(lang, "editor_clicked", id=inst.track_id, frame=int(index), area=inst.area)
        return self._shown(session, index, lang, status, target=inst.track_id)

    def on_find(self, index, prompt, threshold, target, state: EditorState, lang="en") -> dict:
        lang = normalize(lang)
        session = self._session(state, lang)
        try:
            found = self._manager(lang).add_text(state.session_id, int(index), prompt, float(threshold))
        except Sam3StudioError as exc:
            raise failure(lang, exc) from None
        return self._shown(session, index, lang, t(lang, "editor_found", n=len(found), frame=int(index)), target)

    def on_remove(self, index, target, state: EditorState, lang="en") -> dict:
        lang = normalize(lang)
        session = self._session(state, lang)
        if target is None or int(target) == NEW_OBJECT:
            raise gr.Error(t(lang, "editor_pick_object"))
        try:
            removed = self._manager(lang).remove_object(state.session_id, int(target))
        except Sam3StudioError as exc:
            raise failure(lang, exc) from None
        return self._shown(session, index, lang, t(lang, "editor_removed", id=int(target), frames=removed))

    def on_propagate(self, index, direction, target, state: EditorState, lang="en", progress=gr.Progress()) -> dict:
        """Propagate in the background and follow it with the progress bar; then show the frame again."""
        lang = normalize(lang)
        session = self._session(state, lang)
        manager = self._manager(lang)
        started = time.perf_counter()
        try:
            handle = manager.propagate(state.session_id, direction or "both")
            while handle.thread is not None and handle.thread.is_alive():
                progress((handle.done, handle.total), desc=t(lang, "editor_progress", done=handle.done,
                                                              total=handle.total), unit="frames")
                handle.thread.join(0.3)
        except Sam3StudioError as exc:
            raise failure(lang, exc) from None
        if handle.state == "failed":
            raise gr.Error(t(lang, "error", detail=handle.error or "propagation failed"))
        status = t(lang, "editor_propagated", done=handle.done, seconds=time.perf_counter() - started)
        return self._shown(session, index, lang, status, target)

    def on_download(self, state: EditorState, lang="en") -> dict:
        lang = normalize(lang)
        self._session(state, lang)
        try:
            folder = self._manager(lang).result_folder(state.session_id, overlay=True)
        except Sam3StudioError as exc:
            raise failure(lang, exc) from None
        out = self.ctx.run_dirs.new()
        files = []
        for name in DOWNLOADS:
            if (folder / name).is_file():
                shutil.copyfile(folder / name, out / name)
                files.append(str(out / name))
        return {self.files: files, self.status: t(lang, "editor_downloads", n=len(files))}


def video_editor(ctx: UiContext, video_in: Any) -> list[Relabel]:
    """Build the editor where called (inside the Video tab), wire it, return its relabel rows."""
    editor = VideoEditor(ctx, video_in)
    editor.wire()
    return editor.relabels()

