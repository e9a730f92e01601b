"""The Image tab: segment a photo by text prompts or example boxes, refine one object by clicks, download.

`image_tab(ctx)` builds the tab inside the page's ``gr.Tabs()``, wires its events and returns its relabel
rows. `ImageTab` holds the components (as attributes) and the handlers (as methods); the page's drawing
and refinement state is one `ImageState` in a ``gr.State``. Every handler returns a dict keyed by the
components it changes; the other outputs stay as they are (``gr.skip()`` alone: nothing changes).

The result column shows one large image: in text mode the annotated result (hover a mask for its label,
click it for its details: `page.js` forwards both to the legend chips Gradio's AnnotatedImage answers);
in the two drawing modes the canvas in its place, the same result drawn with the boxes or clicks, and
clicking it adds a box corner or a refinement click.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image
from skimage import data

from sam3studio.errors import NotReady, Sam3StudioError
from sam3studio.export import write_outputs
from sam3studio.random_model import UNTRAINED_THRESHOLD
from sam3studio.results import Segmentation
from sam3studio.service import SegmentOptions
from sam3studio.ui.common import (
    RAW_SLIDERS,
    Relabel,
    UiContext,
    display_source,
    failure,
    in_range,
    refuse_not_ready,
    segment_events,
    session_of,
    texts,
)
from sam3studio.ui.i18n import normalize
from sam3studio.ui.i18n import text as t
from sam3studio.ui.marks import (
    NEW_OBJECT,
    POSITIVE,
    Marks,
    annotation_label,
    canvas_image,
    canvas_scale,
    marks_text,
    target_choices,
    with_instance,
)

EXAMPLE_PHOTOS = {  # scikit-image ships these real photos in its wheel: no download
    "cat": lambda d: d.chelsea(),
    "astronaut": lambda d: d.astronaut(),
    "coffee": lambda d: d.coffee(),
    "rocket": lambda d: d.rocket(),
    "motorcycle": lambda d: d.stereo_motorcycle()[0],
}
DISPLAY_PIXELS = 4_000_000  # the result panel's image is subsampled to this; downloads stay full size
# English and Chinese prompt chips side by side: both reach the model as English noun phrases.
PROMPT_CHIPS = ["cat", "person", "red car", "wooden table", "leftmost person", "eyes", "猫", "红色的汽车", "穿白衣服的人"]

DEFAULT_THRESHOLD = 0.5  # the API's default too
# An untrained SAM 3 (the `random` source, the tiny test checkpoints) scores every query near
# sigmoid(0) x sigmoid(0) = 0.25: measured 0.24-0.29 for the full-size random model (two seeds, three
# photos) and 0.17-0.32 for the tiny ones. At 0.25 about half of its queries show; at 0.5 none would.
RESULT_HEIGHT = 560  # px: the result (or canvas) fills the column's height at 1400 x 1000 with the status under it


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
        if p.presence_score is None:  # objects added by clicks: no prompt found them, so no presence score
            lines.append(t(lang, "clicked", text=p.text, count=p.count, plural="s" if p.count != 1 else ""))
            continue
        query = t(lang, "query", query=p.query) if p.query != p.text else ""
        fields = {"text": p.text, "query": query, "presence": p.presence_score}
        if p.count:
            lines.append(t(lang, "match", count=p.count, plural="s" if p.count != 1 else "", **fields))
        else:
            lines.append(t(lang, "no_match", threshold=threshold, **fields))
        if p.unknown_words:
            lines.append(t(lang, "unknown", words=", ".join(p.unknown_words)))
    return "\n".join(lines)


@dataclass(frozen=True)
class Said:
    """A line of the result panel kept as its text key and fields, so a language switch can write it again."""

    key: str
    fields: dict[str, Any] = field(default_factory=dict)

    def text(self, lang: str) -> str:
        return t(lang, self.key, **self.fields)


def status_said(seg, info: dict[str, str]) -> Said:
    tm = seg.timings
    return Said("status", {"encode": tm.get("image_encoding", 0), "prompts": tm.get("prompts", 0),
                           "post": tm.get("postprocess", 0), "total": tm.get("total", 0), "device": info.get("device"),
                           "dtype": info.get("dtype"), "source": display_source(info.get("source") or "")})


def status_line(seg, info: dict[str, str], lang: str = "en") -> str:
    return status_said(seg, info).text(lang)


def instance_rows(seg: Segmentation) -> list[list[Any]]:
    """One table row per instance: the detection score and SAM's predicted IoU (of a mask refined by clicks) in
    columns of their own; a cell stays empty where the instance has no such value."""
    rows = []
    for d in seg.to_dict(include_masks=False)["instances"]:
        score, iou = d["score"], d.get("predicted_iou")
        rows.append([d["id"], d["prompt"], None if score is None else round(score, 3),
                     None if iou is None else round(iou, 3), round(100 * d["area_ratio"], 2),
                     ", ".join(f"{v:.0f}" for v in d["box_xyxy"])])
    return rows


def table_value(rows: list[list[Any]], lang: str) -> dict[str, Any]:
    return {"headers": t(lang, "headers"), "data": rows}


def mode_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(lang, "mode_text"), "text"), (t(lang, "mode_box"), "box"), (t(lang, "mode_click"), "click")]


def polarity_choices(lang: str) -> list[tuple[str, int]]:
    return [(t(lang, "positive"), POSITIVE), (t(lang, "negative"), 0)]


def details_line(seg: Segmentation | None, selected: int | None, lang: str) -> str:
    """The line under the result: the clicked instance's details, or the hint to hover and click."""
    if seg is None or selected is None or not 0 <= selected < len(seg):
        return t(lang, "details_hint")
    d = seg.to_dict(include_masks=False)["instances"][selected]
    x1, y1, x2, y2 = d["box_xyxy"]
    scores = [t(lang, "score_value", score=d["score"])] if d["score"] is not None else []
    if d.get("predicted_iou") is not None:
        scores.append(t(lang, "iou_value", iou=d["predicted_iou"]))
    return t(lang, "details", id=d["id"], prompt=d["prompt"], scores=" · ".join(scores) or t(lang, "no_score"),
             area=d["area"], ratio=100 * d["area_ratio"], x1=x1, y1=y1, x2=x2, y2=y2)


class Annotations(Sequence):
    """The result image's annotations, one mask decoded (and subsampled by ``step``) only when Gradio draws it:
    the page never holds every mask at once, nor a mask larger than the shown image."""

    def __init__(self, seg: Segmentation, step: int, lang: str) -> None:
        self.seg, self.step, self.lang = seg, step, lang

    def __len__(self) -> int:
        return len(self.seg)

    def __getitem__(self, i: int) -> tuple[np.ndarray, str]:  # type: ignore[override]
        if not 0 <= i < len(self.seg):
            raise IndexError(i)
        mask = self.seg.masks[i][:: self.step, :: self.step]
        return mask.astype(np.float32), annotation_label(self.seg, i, self.lang)


def display_step(height: int, width: int) -> int:
    """The subsampling that brings an image under `DISPLAY_PIXELS` for the result panel (1: shown as it is)."""
    return max(1, math.ceil(math.sqrt(height * width / DISPLAY_PIXELS)))


def shown_index(base: Segmentation | None, shown: Segmentation | None, target: int) -> int:
    """Where the object being refined is in ``shown``: its row, or the last row for a new object."""
    if 0 <= target < (len(base) if base is not None else 0):
        return target
    return len(shown) - 1 if shown is not None and len(shown) > (len(base) if base is not None else 0) else NEW_OBJECT


def _target(value: Any) -> int:
    return NEW_OBJECT if value is None else int(value)


def default_threshold(service) -> float:
    """The detection threshold a page starts with: lower for a model with untrained weights, whose scores sit
    near 0.25 (`UNTRAINED_THRESHOLD`), so that its first run shows masks."""
    segmenter = service.segmenter
    untrained = service.settings.model == "random" or bool(getattr(segmenter, "untrained", False))
    return UNTRAINED_THRESHOLD if untrained else DEFAULT_THRESHOLD


@dataclass
class ImageState:
    """One page's drawing and refinement state (a ``gr.State``: one per browser session).

    Everything the result panel says comes from here (`ImageTab.words`), so a language switch, or a run
    that ends after one, writes the panel again in the page's current language.
    """

    marks: Marks = field(default_factory=Marks)
    base: Segmentation | None = None  # the segmentation clicks refine
    shown: Segmentation | None = None  # what the result panel shows (base with the current refinement)
    threshold: float = DEFAULT_THRESHOLD  # the detection threshold `shown` was made with (its summary names it)
    status: Said | None = None  # the status line
    selected: int | None = None  # the row of `shown` whose details the line under the result gives
    target: int = NEW_OBJECT  # the object the refinement target list shows (clicks refine it)


class ImageTab:
    """The tab's components and handlers. Every handler goes through ``ctx.service`` (shared admission gate, limits)."""

    def __init__(self, ctx: UiContext) -> None:
        self.ctx = ctx
        self.service = ctx.service
        lang = ctx.first_lang
        with gr.Tab(t(lang, "tab_image"), id="image", elem_id="image-tab") as self.tab:
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=380):
                    self._inputs(lang)
                with gr.Column(scale=2):
                    self._results(lang)
            self.state = gr.State(ImageState())
        self.slider_keys = {self.threshold: "threshold", self.mask_threshold: "mask_precision",
                            self.fill_holes: "fill_holes", self.min_island: "min_island", self.smooth: "smooth"}

    def _inputs(self, lang: str) -> None:
        self.image = gr.Image(type="filepath", label=t(lang, "image"), sources=["upload", "clipboard"],
                              elem_id="input-image", height=240)
        self.photo_examples = gr.Examples(examples=[[p] for p in example_paths()], inputs=[self.image],
                                          label=t(lang, "examples"), elem_id="photo-examples")
        self.prompt = gr.Textbox(label=t(lang, "prompts"), placeholder=t(lang, "prompts_placeholder"),
                                 elem_id="prompt", info=t(lang, "prompts_info"))
        self.run_btn = gr.Button(t(lang, "run"), variant="primary", elem_id="run")
        self.chips = gr.Examples(examples=[[c] for c in PROMPT_CHIPS], inputs=[self.prompt], label=t(lang, "try"),
                                 elem_id="prompt-chips")
        self.mode = gr.Radio(mode_choices(lang), value="text", label=t(lang, "mode"), info=t(lang, "mode_info"),
                             elem_id="mode")
        # A function as the value: Gradio calls it whenever a page opens, once the model may have loaded.
        self.threshold = gr.Slider(0.05, 0.95, value=lambda: default_threshold(self.service), step=0.01,
                                label=t(lang, "threshold"), info=t(lang, "threshold_info"), elem_id="threshold")
        self.mask_threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label=t(lang, "mask_precision"),
                                     info=t(lang, "mask_precision_info"), elem_id="mask-threshold")
        with gr.Accordion(t(lang, "cleanup"), open=False) as self.cleanup:
            self.fill_holes = gr.Slider(0, 1, value=0, step=0.01, label=t(lang, "fill_holes"))
            self.min_island = gr.Slider(0, 1, value=0, step=0.01, label=t(lang, "min_island"))
            self.smooth = gr.Slider(0, 10, value=0, step=1, label=t(lang, "smooth"))

    def _results(self, lang: str) -> None:
        with gr.Row(visible=False, equal_height=True) as self.interact:  # the drawing modes' controls, over the canvas
            self.polarity = gr.Radio(polarity_choices(lang), value=POSITIVE, label=t(lang, "polarity"),
                                     elem_id="polarity", scale=2)
            self.target = gr.Dropdown(target_choices(None, t(lang, "new_object")), value=NEW_OBJECT,
                                      label=t(lang, "target"), elem_id="target", visible=False, scale=2)
            with gr.Column(scale=0, min_width=100):
                self.undo_btn = gr.Button(t(lang, "undo"), size="sm", elem_id="undo")
                self.clear_btn = gr.Button(t(lang, "clear"), size="sm", elem_id="clear")
        self.result = gr.AnnotatedImage(label=t(lang, "result"), elem_id="result", height=RESULT_HEIGHT)
        self.canvas = gr.Image(type="numpy", interactive=False, label=t(lang, "canvas"), elem_id="canvas",
                               visible=False, height=RESULT_HEIGHT)
        self.marks_md = gr.Markdown(elem_id="marks")
        self.details_md = gr.Markdown(t(lang, "details_hint"), elem_id="details")
        self.status = gr.Markdown(elem_id="status")
        self.prompts_md = gr.Markdown(elem_id="prompt-summary")
        self.table = gr.Dataframe(headers=t(lang, "headers"), label=t(lang, "instances"), interactive=False,
                                  elem_id="instances")
        with gr.Column(visible=False) as self.downloads_box:  # shown only when there is something to download
            self.downloads = gr.File(label=t(lang, "downloads"), file_count="multiple", interactive=False,
                                     elem_id="downloads")

    @property
    def worded(self) -> list[Any]:
        """The components whose words come from the state (`words`)."""
        return [self.table, self.prompts_md, self.status, self.details_md]

    def wire(self) -> None:
        lang = self.ctx.language
        # Progress and errors show on the result image alone, not as a badge over every panel.
        group = {**segment_events(self.ctx.settings), "show_progress_on": [self.result, self.canvas], **RAW_SLIDERS}
        inputs = [self.image, self.prompt, self.threshold, self.mask_threshold, self.fill_holes, self.min_island,
                  self.smooth, lang, self.mode, self.state]
        panel = [self.result, self.table, self.prompts_md, self.downloads, self.status, self.details_md]
        outputs = [*panel, self.state, self.target, self.canvas, self.marks_md, self.downloads_box]
        # After each model run, its words again in the page's language *now*: a run that was under way
        # when the language switched answered in the old one.
        reword = {"fn": self.reword, "inputs": [lang, self.state], "outputs": self.worded, "api_name": False,
                  "queue": False, "show_progress": "hidden"}
        self.run_btn.click(self.run, inputs, outputs, api_name="segment", **group).then(**reword)
        self.prompt.submit(self.run, inputs, outputs, api_name=False, **group).then(**reword)
        for slider in self.slider_keys:
            # Only post-processing re-runs: the image and prompt outputs come from the engine's caches.
            # A burst of slider moves keeps only the last. (Enter in a slider's number box ends the edit
            # like leaving the box does: page.js.)
            slider.release(self.rerun, [*inputs, self.target], outputs, api_name=False, trigger_mode="always_last",
                           **{**group, "show_progress": "minimal"}).then(**reword)
        edit_inputs = [self.image, self.mode, self.target, self.state, self.mask_threshold, self.threshold, lang]
        edit_outputs = [self.state, self.canvas, self.marks_md, self.target, *panel, self.downloads_box]
        self.canvas.select(self.on_canvas, [self.image, self.mode, self.polarity, self.target, self.state,
                                            self.mask_threshold, self.threshold, lang], edit_outputs,
                           api_name=False, **group).then(**reword)
        self.undo_btn.click(self.on_undo, edit_inputs, edit_outputs, api_name=False, **group).then(**reword)
        self.clear_btn.click(self.on_clear, edit_inputs, edit_outputs, api_name=False, **group).then(**reword)
        drawing = [self.interact, self.target, self.state, self.canvas, self.marks_md, self.result, self.details_md]
        plain_group = {**group, "preprocess": True}  # no slider among their inputs
        self.mode.input(self.on_mode, [self.image, self.mode, self.state, self.target, lang], drawing,
                        api_name=False, **plain_group)
        self.target.input(self.on_target, [self.image, self.mode, self.target, self.state, lang],
                          [self.state, self.target, self.canvas, self.marks_md], api_name=False, **plain_group)
        self.image.change(self.on_image, [self.image, self.mode, self.state, lang],
                          [self.state, self.target, self.canvas, self.marks_md], api_name=False, **plain_group)
        self.result.select(self.show_details, [self.state, lang], [self.details_md, self.state], api_name=False,
                           queue=False, show_progress="hidden")

    def relabels(self) -> list[Relabel]:
        """The tab's rows of the page's relabel table."""
        def mode(lang: str) -> Any:
            return gr.update(label=t(lang, "mode"), info=t(lang, "mode_info"), choices=mode_choices(lang))

        def polarity(lang: str) -> Any:
            return gr.update(label=t(lang, "polarity"), choices=polarity_choices(lang))

        def table(lang: str, state: ImageState | None) -> Any:
            return gr.update(label=t(lang, "instances"), value=self.words(state, lang)[self.table])

        def said(component: Any) -> Any:
            return lambda lang, state: self.words(state, lang)[component]

        def target(lang: str, state: ImageState | None) -> Any:
            shown = state.shown if state is not None else None
            return gr.update(label=t(lang, "target"), choices=target_choices(shown, t(lang, "new_object")))

        return [
            Relabel(self.image, texts(label="image")), Relabel(self.photo_examples.dataset, texts(label="examples")),
            Relabel(self.prompt, texts(label="prompts", placeholder="prompts_placeholder", info="prompts_info")),
            Relabel(self.chips.dataset, texts(label="try")),
            Relabel(self.threshold, texts(label="threshold", info="threshold_info")),
            Relabel(self.mask_threshold, texts(label="mask_precision", info="mask_precision_info")),
            Relabel(self.cleanup, texts(label="cleanup")), Relabel(self.fill_holes, texts(label="fill_holes")),
            Relabel(self.min_island, texts(label="min_island")), Relabel(self.smooth, texts(label="smooth")),
            Relabel(self.run_btn, texts(value="run")), Relabel(self.result, texts(label="result")),
            # The result's words, from the state: rows under translated headers, summary, status, details.
            Relabel(self.table, table, keeps="table_state", reads=self.state),
            Relabel(self.prompts_md, said(self.prompts_md), keeps="summary_state", reads=self.state),
            Relabel(self.status, said(self.status), keeps="status_state", reads=self.state),
            Relabel(self.details_md, said(self.details_md), keeps="details_state", reads=self.state),
            Relabel(self.downloads, texts(label="downloads")), Relabel(self.tab, texts(label="tab_image")),
            Relabel(self.mode, mode), Relabel(self.canvas, texts(label="canvas")), Relabel(self.polarity, polarity),
            Relabel(self.target, target, keeps="target_state", reads=self.state),
            Relabel(self.undo_btn, texts(value="undo")), Relabel(self.clear_btn, texts(value="clear")),
        ]

    # --- helpers of the handlers -------------------------------------------------------------------------

    def image_path(self, payload: Any) -> str | None:
        """The uploaded image's path: handlers of `RAW_SLIDERS` events get the upload's payload, others a path."""
        if payload is None or isinstance(payload, (str, Path)):
            return payload
        if isinstance(payload, dict):  # Gradio hands an unprocessed input over as the JSON it arrived as
            payload = self.image.data_model.model_validate(payload)
        return self.image.preprocess(payload)

    def decode(self, image_path, lang: str) -> np.ndarray:
        image_path = self.image_path(image_path)
        if not image_path:
            raise gr.Error(t(lang, "no_image"))
        try:
            return self.service.decode_image(Path(image_path))
        except Sam3StudioError as exc:
            raise failure(lang, exc) from None

    def words(self, state: ImageState | None, lang: str) -> dict[Any, Any]:
        """What the result panel says, in ``lang``: the table, the prompt summary, the status and details lines."""
        state = state if state is not None else ImageState()
        seg = state.shown
        return {self.table: table_value(instance_rows(seg) if seg is not None else [], lang),
                self.prompts_md: prompt_summary(seg, state.threshold, lang) if seg is not None else "",
                self.status: state.status.text(lang) if state.status is not None else "",
                self.details_md: details_line(seg, state.selected, lang)}

    def reword(self, lang: str, state: ImageState | None) -> dict[Any, Any]:
        return self.words(state, normalize(lang))

    def panel(self, state: ImageState, rgb: np.ndarray, lang: str, session: str | None = None) -> dict:
        """The result panel for ``state.shown``: annotated image, its words, and downloads (none for 0 instances).

        The image shown is subsampled to at most `DISPLAY_PIXELS` (a browser shows no more) and its masks are
        decoded one at a time as Gradio draws them; the downloads are full size, in a folder of ``session``'s
        that is removed when the session ends."""
        seg = state.shown
        step = display_step(*rgb.shape[:2])
        shown_rgb = np.ascontiguousarray(rgb[::step, ::step]) if step > 1 else rgb
        downloads = None
        if len(seg):
            out_dir = self.ctx.run_dirs.new(session)
            paths = write_outputs(seg, rgb, out_dir, "result", ("json", "overlay", "cutout", "masks"))
            zip_path = shutil.make_archive(str(out_dir / "result.masks"), "zip", paths["masks"])
            downloads = [str(paths["json"]), str(paths["overlay"]), str(paths["cutout"]), zip_path]
        return {self.result: (shown_rgb, Annotations(seg, step, lang)), self.downloads: downloads,
                self.downloads_box: gr.update(visible=downloads is not None), **self.words(state, lang)}

    def sliders(self, lang: str, **values: Any) -> dict[str, float]:
        """The slider values by name, each clamped to its slider's range (a typed value outside it is said)."""
        by_name = {"threshold": self.threshold, "mask_threshold": self.mask_threshold, "fill_holes": self.fill_holes,
                   "min_island": self.min_island, "smooth": self.smooth}
        return {name: in_range(lang, by_name[name], value, self.slider_keys[by_name[name]])
                for name, value in values.items()}

    def refine_shown(self, rgb, marks: Marks, base, target: int, mask_threshold, lang: str) -> tuple[Segmentation, Said]:
        """Re-run the refinement of ``target`` with every click so far (an undone click is simply left out)."""
        base = base if base is not None else Segmentation.empty(rgb.shape[1], rgb.shape[0])
        if not marks.points:
            return base, Said("refine_cleared")
        prior = base.masks[target] if 0 <= target < len(base) else None
        start = time.perf_counter()
        inst = self.service.refine(rgb, marks.points, marks.point_labels, mask=prior, mask_threshold=float(mask_threshold))
        label = base[target].prompt if 0 <= target < len(base) else t(lang, "object")
        return with_instance(base, inst, target, label), Said(
            "refine_status", {"n": len(marks.points), "score": inst.score, "seconds": time.perf_counter() - start})

    def refined(self, rgb, state: ImageState, marks: Marks, target: int, mask_threshold, threshold, lang: str,
                session: str | None = None) -> dict:
        """Click mode after ``marks`` changed (or a slider moved): the refinement re-runs; panel, canvas, state and
        the target list (its scores) follow."""
        try:
            shown, said = self.refine_shown(rgb, marks, state.base, target, mask_threshold, lang)
        except NotReady as exc:
            return refuse_not_ready(lang, exc, failed=bool(self.service.load_error))
        except Sam3StudioError as exc:
            raise failure(lang, exc) from None
        state = replace(state, marks=marks, shown=shown, threshold=float(threshold), status=said, selected=None)
        return {**self.panel(state, rgb, lang, session), self.state: state,
                self.target: gr.update(choices=target_choices(shown, t(lang, "new_object"))),
                self.canvas: canvas_image(rgb, marks, "click", shown, shown_index(state.base, shown, target)),
                self.marks_md: marks_text(marks, "click", lang)}

    def redrawn(self, rgb, state: ImageState, marks: Marks, mode: str, target: int, lang: str) -> dict:
        """Box mode after ``marks`` changed: only the canvas and the line under it follow (Segment runs the model)."""
        return {self.state: replace(state, marks=marks), self.canvas: canvas_image(rgb, marks, mode, state.shown, target),
                self.marks_md: marks_text(marks, mode, lang)}

    # --- handlers ----------------------------------------------------------------------------------------

    def run(self, image_path, prompt, threshold, mask_threshold, fill_holes, min_island, smooth, lang="en",
            mode="text", state=None, request: gr.Request = None) -> dict:
        """Segment by prompt, and in box mode by the exemplar boxes drawn; the result becomes the refinement base."""
        lang = normalize(lang)
        state = state if state is not None else ImageState()
        marks = state.marks
        rgb = self.decode(image_path, lang)
        use_boxes = mode == "box" and bool(marks.boxes)
        if mode == "box" and not use_boxes and not (prompt or "").strip():
            raise gr.Error(t(lang, "no_boxes"))
        values = self.sliders(lang, threshold=threshold, mask_threshold=mask_threshold, fill_holes=fill_holes,
                              min_island=min_island, smooth=smooth)
        try:
            options = SegmentOptions(score_threshold=values["threshold"], mask_threshold=values["mask_threshold"],
                                     fill_holes=values["fill_holes"], min_island=values["min_island"],
                                     smooth=int(values["smooth"]), boxes=marks.boxes if use_boxes else None,
                                     box_labels=marks.box_labels if use_boxes else None)
            # Masks as RLE from the start: one mask upsampled at a time, as on the API's path.
            seg = self.service.segment(rgb, prompt if (prompt or "").strip() or not use_boxes else None, options,
                                       masks="rle")
        except NotReady as exc:
            return refuse_not_ready(lang, exc, failed=bool(self.service.load_error))
        except Sam3StudioError as exc:
            raise failure(lang, exc) from None
        marks = marks.clear("click")
        target = NEW_OBJECT if not len(seg) else 0
        state = replace(state, marks=marks, base=seg, shown=seg, threshold=values["threshold"],
                        status=status_said(seg, self.service.segmenter.info()), selected=None, target=target)
        return {**self.panel(state, rgb, lang, session_of(request)), self.state: state,
                self.target: gr.update(choices=target_choices(seg, t(lang, "new_object")), value=target),
                self.canvas: canvas_image(rgb, marks, mode, seg, target), self.marks_md: marks_text(marks, mode, lang)}

    def rerun(self, image_path, prompt, threshold, mask_threshold, fill_holes, min_island, smooth, lang, mode, state,
              target=None, request: gr.Request = None) -> dict:
        """Slider moves re-run post-processing only; before a first run there is nothing to update.

        While an object is being refined by clicks, the sliders re-run that refinement (mask precision
        applies to it) instead of replacing it with a fresh segmentation.
        """
        lang = normalize(lang)
        if image_path and mode == "click" and state is not None and state.marks.points:
            rgb = self.decode(image_path, lang)
            values = self.sliders(lang, threshold=threshold, mask_threshold=mask_threshold)
            return self.refined(rgb, state, state.marks, _target(target), values["mask_threshold"], values["threshold"],
                                lang, session_of(request))
        if not image_path or not ((prompt or "").strip() or (mode == "box" and state is not None and state.marks.boxes)):
            self.sliders(lang, threshold=threshold, mask_threshold=mask_threshold, fill_holes=fill_holes,
                         min_island=min_island, smooth=smooth)  # nothing to run, but a value out of range is still said
            return gr.skip()
        return self.run(image_path, prompt, threshold, mask_threshold, fill_holes, min_island, smooth, lang, mode, state,
                        request)

    def on_canvas(self, image_path, mode, polarity, target, state: ImageState, mask_threshold, threshold, lang,
                  evt: gr.SelectData, request: gr.Request = None) -> dict:
        """A click on the canvas: a box corner in box mode, a refinement click (and a new mask) in click mode."""
        lang = normalize(lang)
        rgb = self.decode(image_path, lang)
        if evt is None or evt.index is None or mode not in ("box", "click"):
            return gr.skip()
        k = canvas_scale(rgb.shape[1], rgb.shape[0])  # the canvas shows the image k times larger
        x, y = (float(v) / k for v in evt.index[:2])
        label = int(polarity)
        target = _target(target)
        if mode == "box":
            return self.redrawn(rgb, state, state.marks.box_click(x, y, label), mode, target, lang)
        values = self.sliders(lang, threshold=threshold, mask_threshold=mask_threshold)
        return self.refined(rgb, state, state.marks.point_click(x, y, label), target, values["mask_threshold"],
                            values["threshold"], lang, session_of(request))

    def on_edit(self, action, image_path, mode, target, state: ImageState, mask_threshold, threshold, lang,
                session: str | None = None) -> dict:
        """Undo the last mark, or clear all marks, of the current mode; in click mode the mask follows."""
        lang = normalize(lang)
        if not image_path or mode not in ("box", "click"):
            return gr.skip()
        rgb = self.decode(image_path, lang)
        target = _target(target)
        marks = state.marks.undo(mode) if action == "undo" else state.marks.clear(mode)
        if mode == "box":
            return self.redrawn(rgb, state, marks, mode, target, lang)
        values = self.sliders(lang, threshold=threshold, mask_threshold=mask_threshold)
        return self.refined(rgb, state, marks, target, values["mask_threshold"], values["threshold"], lang, session)

    def on_undo(self, image_path, mode, target, state, mask_threshold, threshold, lang,
                request: gr.Request = None) -> dict:
        return self.on_edit("undo", image_path, mode, target, state, mask_threshold, threshold, lang, session_of(request))

    def on_clear(self, image_path, mode, target, state, mask_threshold, threshold, lang,
                 request: gr.Request = None) -> dict:
        return self.on_edit("clear", image_path, mode, target, state, mask_threshold, threshold, lang,
                            session_of(request))

    def on_mode(self, image_path, mode, state: ImageState, target, lang) -> dict:
        """Switching mode keeps the shown result as the new base and starts with no clicks; the drawing modes show
        the canvas in the result's place."""
        lang = normalize(lang)
        marks = replace(state.marks.clear("click"), corner=None)
        rgb = self.decode(image_path, lang) if image_path and mode != "text" else None
        shown, target = state.shown, _target(target)
        target = target if shown is not None and 0 <= target < len(shown) else NEW_OBJECT
        drawing = mode != "text"
        return {self.interact: gr.update(visible=drawing), self.result: gr.update(visible=not drawing),
                self.details_md: gr.update(visible=not drawing),  # its hint is about the result, not the canvas
                self.target: gr.update(visible=mode == "click", choices=target_choices(shown, t(lang, "new_object")),
                                       value=target),
                self.state: replace(state, marks=marks, base=shown, target=target),
                self.canvas: gr.update(value=canvas_image(rgb, marks, mode, shown, target), visible=drawing),
                self.marks_md: marks_text(marks, mode, lang)}

    def on_target(self, image_path, mode, target, state: ImageState, lang) -> dict:
        """Picking another object keeps the refinement made so far and starts with no clicks; picking the one being
        refined again (the list can report its value again when it closes) changes nothing."""
        lang = normalize(lang)
        target = _target(target)
        if target == state.target:
            return gr.skip()
        marks = state.marks.clear("click")
        rgb = self.decode(image_path, lang) if image_path else None
        return {self.state: replace(state, marks=marks, base=state.shown, target=target),
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
        return {self.state: replace(state, marks=marks, base=None, shown=None, status=None, selected=None,
                                    target=NEW_OBJECT),
                self.target: gr.update(choices=target_choices(None, t(lang, "new_object")), value=NEW_OBJECT),
                self.canvas: canvas_image(rgb, marks, mode, None, NEW_OBJECT), self.marks_md: marks_text(marks, mode, lang)}

    def show_details(self, state: ImageState, lang: str, evt: gr.SelectData) -> dict:
        """A click on a mask of the result (or its legend chip): that instance's details under the image."""
        state = state if state is not None else ImageState()
        try:
            selected = int(evt.index)  # the legend's index of the mask: its row in `shown`
        except (AttributeError, TypeError, ValueError):
            selected = None
        if state.shown is None or selected is None or not 0 <= selected < len(state.shown):
            selected = None
        state = replace(state, selected=selected)
        return {self.details_md: details_line(state.shown, selected, normalize(lang)), self.state: state}


def image_tab(ctx: UiContext) -> list[Relabel]:
    """Build the Image tab (call inside the page's ``gr.Tabs()``), wire its events, return its relabel rows."""
    tab = ImageTab(ctx)
    tab.wire()
    return tab.relabels()
