"""The Image tab: segment a photo by text prompts or example boxes, refine one object by clicks, download.

`image_tab(ctx)` builds the tab inside the page's ``gr.Tabs()``, wires its events and returns its relabel
rows. `ImageTab` holds the components (as attributes) and the handlers (as methods); the page's drawing
and refinement state is one `ImageState` in a ``gr.State``. Every handler returns a dict keyed by the
components it changes; the other outputs stay as they are (``gr.skip()`` alone: nothing changes).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image
from skimage import data

from sam3studio.errors import Sam3StudioError
from sam3studio.export import write_outputs
from sam3studio.results import Segmentation
from sam3studio.service import SegmentOptions
from sam3studio.ui.common import Relabel, UiContext, failure, plain, segment_events, texts
from sam3studio.ui.i18n import normalize
from sam3studio.ui.i18n import text as t
from sam3studio.ui.marks import NEW_OBJECT, POSITIVE, Marks, canvas_image, marks_text, target_choices, with_instance

EXAMPLE_PHOTOS = {  # scikit-image ships these real photos in its wheel: no download
    "cat": lambda d: d.chelsea(),
    "astronaut": lambda d: d.astronaut(),
    "coffee": lambda d: d.coffee(),
    "rocket": lambda d: d.rocket(),
    "motorcycle": lambda d: d.stereo_motorcycle()[0],
}
# English and Chinese prompt chips side by side: both reach the model as English noun phrases.
PROMPT_CHIPS = ["cat", "person", "red car", "wooden table", "leftmost person", "eyes", "猫", "红色的汽车", "穿白衣服的人"]


def example_paths() -> list[str]:
    """Write the example photos once to a temporary folder Gradio may serve; return their paths."""
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


def prompt_summary(seg, threshold: float, lang: str = "en") -> str:
    """One line per prompt: its count and presence, the English query when it was translated, and any
    word the translator did not understand; a prompt without match gets a suggestion."""
    lines = []
    for p in seg.prompts:
        query = t(lang, "query", query=p.query) if p.query != p.text else ""
        fields = {"text": p.text, "query": query, "presence": p.presence_score}
        if p.count:
            lines.append(t(lang, "match", count=p.count, plural="s" if p.count != 1 else "", **fields))
        else:
            lines.append(t(lang, "no_match", threshold=threshold, **fields))
        if p.unknown_words:
            lines.append(t(lang, "unknown", words=", ".join(p.unknown_words)))
    return "\n".join(lines)


def status_line(seg, info: dict[str, str], lang: str = "en") -> str:
    tm = seg.timings
    return t(lang, "status", encode=tm.get("image_encoding", 0), prompts=tm.get("prompts", 0),
             post=tm.get("postprocess", 0), total=tm.get("total", 0), device=info.get("device"),
             dtype=info.get("dtype"), source=info.get("source"))


def instance_rows(seg) -> list[list[Any]]:
    return [[inst.id, inst.prompt, round(inst.score, 3), round(100 * inst.area_ratio, 2),
             ", ".join(f"{v:.0f}" for v in inst.box)] for inst in seg]


def table_value(rows: list[list[Any]], lang: str) -> dict[str, Any]:
    return {"headers": t(lang, "headers"), "data": rows}


def mode_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(lang, "mode_text"), "text"), (t(lang, "mode_box"), "box"), (t(lang, "mode_click"), "click")]


def polarity_choices(lang: str) -> list[tuple[str, int]]:
    return [(t(lang, "positive"), POSITIVE), (t(lang, "negative"), 0)]


def details_of(seg: Segmentation) -> list[dict[str, Any]]:
    return [inst.to_dict(include_mask=False) for inst in seg]


def shown_index(base: Segmentation | None, shown: Segmentation | None, target: int) -> int:
    """Where the object being refined is in ``shown``: its row, or the last row for a new object."""
    if 0 <= target < (len(base) if base is not None else 0):
        return target
    return len(shown) - 1 if shown is not None and len(shown) > (len(base) if base is not None else 0) else NEW_OBJECT


def _target(value: Any) -> int:
    return NEW_OBJECT if value is None else int(value)


@dataclass
class ImageState:
    """One page's drawing and refinement state (a ``gr.State``: one per browser session)."""

    marks: Marks = field(default_factory=Marks)
    base: Segmentation | None = None  # the segmentation clicks refine
    shown: Segmentation | None = None  # what the result panel shows (base with the current refinement)
    details: list[dict[str, Any]] = field(default_factory=list)  # the panel's instances, for the details line


class ImageTab:
    """The tab's components and handlers. Every handler goes through ``ctx.service`` (shared admission gate, limits)."""

    def __init__(self, ctx: UiContext) -> None:
        self.ctx = ctx
        self.service = ctx.service
        lang = ctx.first_lang
        with gr.Tab(t(lang, "tab_image"), id="image", elem_id="image-tab") as self.tab:
            with gr.Row():
                with gr.Column(scale=1):
                    self._inputs(lang)
                with gr.Column(scale=2):
                    self._results(lang)
            self.state = gr.State(ImageState())

    def _inputs(self, lang: str) -> None:
        self.image = gr.Image(type="filepath", label=t(lang, "image"), sources=["upload", "clipboard"],
                              elem_id="input-image")
        self.photo_examples = gr.Examples(examples=[[p] for p in example_paths()], inputs=[self.image],
                                          label=t(lang, "examples"))
        self.prompt = gr.Textbox(label=t(lang, "prompts"), placeholder=t(lang, "prompts_placeholder"),
                                 elem_id="prompt", info=t(lang, "prompts_info"))
        self.chips = gr.Examples(examples=[[c] for c in PROMPT_CHIPS], inputs=[self.prompt], label=t(lang, "try"))
        self.mode = gr.Radio(mode_choices(lang), value="text", label=t(lang, "mode"), info=t(lang, "mode_info"),
                             elem_id="mode")
        with gr.Group(visible=False) as self.interact:
            self.canvas = gr.Image(type="numpy", interactive=False, label=t(lang, "canvas"), elem_id="canvas")
            self.polarity = gr.Radio(polarity_choices(lang), value=POSITIVE, label=t(lang, "polarity"),
                                     elem_id="polarity")
            self.target = gr.Dropdown(target_choices(None, t(lang, "new_object")), value=NEW_OBJECT,
                                      label=t(lang, "target"), elem_id="target", visible=False)
            with gr.Row():
                self.undo_btn = gr.Button(t(lang, "undo"), size="sm", elem_id="undo")
                self.clear_btn = gr.Button(t(lang, "clear"), size="sm", elem_id="clear")
            self.marks_md = gr.Markdown(elem_id="marks")
        self.threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.01, label=t(lang, "threshold"),
                                   info=t(lang, "threshold_info"), elem_id="threshold")
        self.mask_threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label=t(lang, "mask_precision"),
                                        info=t(lang, "mask_precision_info"), elem_id="mask-threshold")
        with gr.Accordion(t(lang, "cleanup"), open=False) as self.cleanup:
            self.fill_holes = gr.Slider(0, 1, value=0, step=0.01, label=t(lang, "fill_holes"))
            self.min_island = gr.Slider(0, 1, value=0, step=0.01, label=t(lang, "min_island"))
            self.smooth = gr.Slider(0, 10, value=0, step=1, label=t(lang, "smooth"))
        self.run_btn = gr.Button(t(lang, "run"), variant="primary", elem_id="run")

    def _results(self, lang: str) -> None:
        self.result = gr.AnnotatedImage(label=t(lang, "result"), elem_id="result")
        self.details_md = gr.Markdown(t(lang, "details_hint"), elem_id="details")
        self.prompts_md = gr.Markdown(elem_id="prompt-summary")
        self.table = gr.Dataframe(headers=t(lang, "headers"), label=t(lang, "instances"), interactive=False,
                                  elem_id="instances")
        self.downloads = gr.File(label=t(lang, "downloads"), file_count="multiple", interactive=False,
                                 elem_id="downloads")
        self.status = gr.Markdown(elem_id="status")

    def wire(self) -> None:
        lang = self.ctx.language
        group = segment_events(self.ctx.settings)
        inputs = [self.image, self.prompt, self.threshold, self.mask_threshold, self.fill_holes, self.min_island,
                  self.smooth, lang, self.mode, self.state]
        panel = [self.result, self.table, self.prompts_md, self.downloads, self.status, self.details_md]
        outputs = [*panel, self.state, self.target, self.canvas, self.marks_md]
        self.run_btn.click(self.run, inputs, outputs, api_name="segment", **group)
        self.prompt.submit(self.run, inputs, outputs, api_name=False, **group)
        for slider in (self.threshold, self.mask_threshold, self.fill_holes, self.min_island, self.smooth):
            # Only post-processing re-runs: the image and prompt outputs come from the engine's caches.
            # A burst of slider moves keeps only the last.
            slider.release(self.rerun, [*inputs, self.target], outputs, api_name=False, show_progress="minimal",
                           trigger_mode="always_last", **group)
        edit_inputs = [self.image, self.mode, self.target, self.state, self.mask_threshold, self.threshold, lang]
        edit_outputs = [self.state, self.canvas, self.marks_md, *panel]
        self.canvas.select(self.on_canvas, [self.image, self.mode, self.polarity, self.target, self.state,
                                            self.mask_threshold, self.threshold, lang], edit_outputs,
                           api_name=False, **group)
        self.undo_btn.click(self.on_undo, edit_inputs, edit_outputs, api_name=False, **group)
        self.clear_btn.click(self.on_clear, edit_inputs, edit_outputs, api_name=False, **group)
        self.mode.input(self.on_mode, [self.image, self.mode, self.state, self.target, lang],
                        [self.interact, self.target, self.state, self.canvas, self.marks_md], api_name=False, **group)
        self.target.input(self.on_target, [self.image, self.mode, self.target, self.state, lang],
                          [self.state, self.target, self.canvas, self.marks_md], api_name=False, **group)
        self.image.change(self.on_image, [self.image, self.mode, self.state, lang],
                          [self.state, self.target, self.canvas, self.marks_md], api_name=False, **group)
        self.result.select(self.show_details, [self.state, lang], [self.details_md], api_name=False)

    def relabels(self) -> list[Relabel]:
        """The tab's rows of the page's relabel table."""
        def mode(lang: str) -> Any:
            return gr.update(label=t(lang, "mode"), info=t(lang, "mode_info"), choices=mode_choices(lang))

        def polarity(lang: str) -> Any:
            return gr.update(label=t(lang, "polarity"), choices=polarity_choices(lang))

        def table(lang: str, rows: Any) -> Any:
            data = rows.values.tolist() if hasattr(rows, "values") else []  # the table arrives as a DataFrame
            return gr.update(label=t(lang, "instances"), value=table_value(data, lang))

        return [
            Relabel(self.image, texts(label="image")), Relabel(self.photo_examples.dataset, texts(label="examples")),
            Relabel(self.prompt, texts(label="prompts", placeholder="prompts_placeholder", info="prompts_info")),
            Relabel(self.chips.dataset, texts(label="try")),
            Relabel(self.threshold, texts(label="threshold", info="threshold_info")),
            Relabel(self.mask_threshold, texts(label="mask_precision", info="mask_precision_info")),
            Relabel(self.cleanup, texts(label="cleanup")), Relabel(self.fill_holes, texts(label="fill_holes")),
            Relabel(self.min_island, texts(label="min_island")), Relabel(self.smooth, texts(label="smooth")),
            Relabel(self.run_btn, texts(value="run")), Relabel(self.result, texts(label="result")),
            Relabel(self.details_md, plain("details_hint")), Relabel(self.table, table, keeps="rows"),
            Relabel(self.downloads, texts(label="downloads")), Relabel(self.tab, texts(label="tab_image")),
            Relabel(self.mode, mode), Relabel(self.canvas, texts(label="canvas")), Relabel(self.polarity, polarity),
            Relabel(self.target, texts(label="target")), Relabel(self.undo_btn, texts(value="undo")),
            Relabel(self.clear_btn, texts(value="clear")),
        ]

    # --- helpers of the handlers -------------------------------------------------------------------------

    def decode(self, image_path, lang: str) -> np.ndarray:
        if not image_path:
            raise gr.Error(t(lang, "no_image"))
        try:
            return self.service.decode_image(Path(image_path))
        except Sam3StudioError as exc:
            raise failure(lang, exc) from None

    def panel(self, seg: Segmentation, rgb: np.ndarray, lang: str, threshold: float, status_text: str) -> dict:
        """The result panel for ``seg``: annotated image, table, prompt summary, downloads, status, details hint."""
        annotations = [(seg.masks[i].astype(np.float32), f"{inst.prompt} · {inst.score:.2f} (#{inst.id})")
                       for i, inst in enumerate(seg)]
        out_dir = self.ctx.run_dirs.new()
        paths = write_outputs(seg, rgb, out_dir, "result", ("json", "overlay", "cutout", "masks"))
        zip_path = shutil.make_archive(str(out_dir / "result.masks"), "zip", paths["masks"])
        downloads = [str(paths["json"]), str(paths["overlay"]), str(paths["cutout"]), zip_path]
        return {self.result: (rgb, annotations), self.table: table_value(instance_rows(seg), lang),
                self.prompts_md: prompt_summary(seg, float(threshold), lang), self.downloads: downloads,
                self.status: status_text, self.details_md: t(lang, "details_hint")}

    def refine_shown(self, rgb, marks: Marks, base, target: int, mask_threshold, threshold, lang: str):
        """Re-run the refinement of ``target`` with every click so far (an undone click is simply left out)."""
        base = base if base is not None else Segmentation.empty(rgb.shape[1], rgb.shape[0])
        if not marks.points:
            shown = base
            status_text = t(lang, "refine_cleared")
        else:
            prior = base.masks[target] if 0 <= target < len(base) else None
            start = time.perf_counter()
            try:
                inst = self.service.refine(rgb, marks.points, marks.point_labels, mask=prior,
                                           mask_threshold=float(mask_threshold))
            except Sam3StudioError as exc:
                raise failure(lang, exc) from None
            label = base[target].prompt if 0 <= target < len(base) else t(lang, "object")
            shown = with_instance(base, inst, target, label)
            status_text = t(lang, "refine_status", n=len(marks.points), score=inst.score,
                            seconds=time.perf_counter() - start)
        return shown, self.panel(shown, rgb, lang, float(threshold), status_text)

    def refined(self, rgb, state: ImageState, marks: Marks, target: int, mask_threshold, threshold, lang: str) -> dict:
        """Click mode after ``marks`` changed (or a slider moved): the refinement re-runs; panel, canvas and state follow."""
        shown, panel = self.refine_shown(rgb, marks, state.base, target, mask_threshold, threshold, lang)
        return {**panel, self.state: replace(state, marks=marks, shown=shown, details=details_of(shown)),
                self.canvas: canvas_image(rgb, marks, "click", shown, shown_index(state.base, shown, target))}

    def redrawn(self, rgb, state: ImageState, marks: Marks, mode: str, target: int, lang: str) -> dict:
        """Box mode after ``marks`` changed: only the canvas and the line under it follow (Segment runs the model)."""
        return {self.state: replace(state, marks=marks), self.canvas: canvas_image(rgb, marks, mode, state.shown, target),
                self.marks_md: marks_text(marks, mode, lang)}

    # --- handlers ----------------------------------------------------------------------------------------

    def run(self, image_path, prompt, threshold, mask_threshold, fill_holes, min_island, smooth, lang="en",
            mode="text", state=None) -> dict:
        """Segment by prompt, and in box mode by the exemplar boxes drawn; the result becomes the refinement base."""
        lang = normalize(lang)
        state = state if state is not None else ImageState()
        marks = state.marks
        rgb = self.decode(image_path, lang)
        use_boxes = mode == "box" and bool(marks.boxes)
        if mode == "box" and not use_boxes and not (prompt or "").strip():
            raise gr.Error(t(lang, "no_boxes"))
        try:
            options = SegmentOptions(score_threshold=float(threshold), mask_threshold=float(mask_threshold),
                                     fill_holes=float(fill_holes), min_island=float(min_island), smooth=int(smooth),
                                     boxes=marks.boxes if use_boxes else None,
                                     box_labels=marks.box_labels if use_boxes else None)
            seg = self.service.segment(rgb, prompt if (prompt or "").strip() or not use_boxes else None, options)
        except Sam3StudioError as exc:
            raise failure(lang, exc) from None
        marks = marks.clear("click")
        panel = self.panel(seg, rgb, lang, float(threshold), status_line(seg, self.service.segmenter.info(), lang))
        target = NEW_OBJECT if not len(seg) else 0
        return {**panel, self.state: replace(state, marks=marks, base=seg, shown=seg, details=details_of(seg)),
                self.target: gr.update(choices=target_choices(seg, t(lang, "new_object")), value=target),
                self.canvas: canvas_image(rgb, marks, mode, seg, target), self.marks_md: marks_text(marks, mode, lang)}

    def rerun(self, image_path, prompt, threshold, mask_threshold, fill_holes, min_island, smooth, lang, mode, state,
              target=None) -> dict:
        """Slider moves re-run post-processing only; before a first run there is nothing to update.

        While an object is being refined by clicks, the sliders re-run that refinement (mask precision
        applies to it) instead of replacing it with a fresh segmentation.
        """
        if image_path and mode == "click" and state is not None and state.marks.points:
            lang = normalize(lang)
            rgb = self.decode(image_path, lang)
            return self.refined(rgb, state, state.marks, _target(target), mask_threshold, threshold, lang)
        if not image_path or not ((prompt or "").strip() or (mode == "box" and state is not None and state.marks.boxes)):
            return gr.skip()
        return self.run(image_path, prompt, threshold, mask_threshold, fill_holes, min_island, smooth, lang, mode, state)

    def on_canvas(self, image_path, mode, polarity, target, state: ImageState, mask_threshold, threshold, lang,
                  evt: gr.SelectData) -> dict:
        """A click on the canvas: a box corner in box mode, a refinement click (and a new mask) in click mode."""
        lang = normalize(lang)
        rgb = self.decode(image_path, lang)
        if evt is None or evt.index is None or mode not in ("box", "click"):
            return gr.skip()
        x, y = (float(v) for v in evt.index[:2])
        label = int(polarity)
        target = _target(target)
        if mode == "box":
            return self.redrawn(rgb, state, state.marks.box_click(x, y, label), mode, target, lang)
        marks = state.marks.point_click(x, y, label)
        return {**self.refined(rgb, state, marks, target, mask_threshold, threshold, lang),
                self.marks_md: marks_text(marks, mode, lang)}

    def on_edit(self, action, image_path, mode, target, state: ImageState, mask_threshold, threshold, lang) -> dict:
        """Undo the last mark, or clear all marks, of the current mode; in click mode the mask follows."""
        lang = normalize(lang)
        if not image_path or mode not in ("box", "click"):
            return gr.skip()
        rgb = self.decode(image_path, lang)
        target = _target(target)
        marks = state.marks.undo(mode) if action == "undo" else state.marks.clear(mode)
        if mode == "box":
            return self.redrawn(rgb, state, marks, mode, target, lang)
        return {**self.refined(rgb, state, marks, target, mask_threshold, threshold, lang),
                self.marks_md: marks_text(marks, mode, lang)}

    def on_undo(self, *args) -> dict:
        return self.on_edit("undo", *args)

    def on_clear(self, *args) -> dict:
        return self.on_edit("clear", *args)

    def on_mode(self, image_path, mode, state: ImageState, target, lang) -> dict:
        """Switching mode keeps the shown result as the new base and starts with no clicks."""
        lang = normalize(lang)
        marks = replace(state.marks.clear("click"), corner=None)
        rgb = self.decode(image_path, lang) if image_path and mode != "text" else None
        shown, target = state.shown, _target(target)
        target = target if shown is not None and 0 <= target < len(shown) else NEW_OBJECT
        return {self.interact: gr.update(visible=mode != "text"),
                self.target: gr.update(visible=mode == "click", choices=target_choices(shown, t(lang, "new_object")),
                                       value=target),
                self.state: replace(state, marks=marks, base=shown),
                self.canvas: canvas_image(rgb, marks, mode, shown, target), self.marks_md: marks_text(marks, mode, lang)}

    def on_target(self, image_path, mode, target, state: ImageState, lang) -> dict:
        """Picking another object keeps the refinement made so far and starts with no clicks."""
        lang = normalize(lang)
        marks = state.marks.clear("click")
        rgb = self.decode(image_path, lang) if image_path else None
        target = _target(target)
        return {self.state: replace(state, marks=marks, base=state.shown),
                self.target: gr.update(choices=target_choices(state.shown, t(lang, "new_object")), value=target),
                self.canvas: canvas_image(rgb, marks, mode, state.shown, target),
                self.marks_md: marks_text(marks, mode, lang)}

    def on_image(self, image_path, mode, state: ImageState, lang) -> dict:
        """A new image: no marks, no result to refine."""
        lang = normalize(lang)
        marks = Marks()
        rgb = None
        if image_path and mode != "text":
            with contextlib.suppress(gr.Error):
                rgb = self.decode(image_path, lang)
        return {self.state: replace(state, marks=marks, base=None, shown=None),
                self.target: gr.update(choices=target_choices(None, t(lang, "new_object")), value=NEW_OBJECT),
                self.canvas: canvas_image(rgb, marks, mode, None, NEW_OBJECT), self.marks_md: marks_text(marks, mode, lang)}

    def show_details(self, state: ImageState, lang: str, evt: gr.SelectData) -> str:
        details = state.details if state is not None else []
        if not details or evt.index is None or not 0 <= int(evt.index) < len(details):
            return t(lang, "details_hint")
        d = details[int(evt.index)]
        x1, y1, x2, y2 = d["box_xyxy"]
        return t(lang, "details", id=d["id"], prompt=d["prompt"], score=d["score"], area=d["area"],
                 ratio=100 * d["area_ratio"], x1=x1, y1=y1, x2=x2, y2=y2)


def image_tab(ctx: UiContext) -> list[Relabel]:
    """Build the Image tab (call inside the page's ``gr.Tabs()``), wire its events, return its relabel rows."""
    tab = ImageTab(ctx)
    tab.wire()
    return tab.relabels()
