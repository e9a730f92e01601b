"""The Review tab: go through a dataset one image at a time, accept, fix and complete the model's proposals.

`review_tab(ctx)` builds the tab when the server serves datasets (``serve --dataset DIR``, ``dataset
review DIR``) and nothing otherwise. The page's state is one `ReviewState` in a ``gr.State``: which image
is shown, its version, the selected instance and the clicks of a click series. Every action is written to
the dataset store at once, with the image version it was made on (`DatasetStore`'s concurrency rule): when
another tab or an API client changed the image meanwhile, the change is refused, the tab reloads the
image and says so, and nothing is overwritten unseen.

Canvas clicks depend on the mode: select the instance under the click; add an instance by clicks (the
first click creates it, each further click refines it, saved every time); fix the selected instance's
mask by clicks (the refinement starts from its mask); add by example box (two corners, then SAM 3 finds
the object like it). A text prompt adds what it finds that no instance covers yet.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import Any

import gradio as gr
import numpy as np

from sam3studio.dataset.review import ImageView, ReviewImages, draw_review, new_results, view_of, view_scale
from sam3studio.dataset.store import STATES, DatasetNotFound, DatasetStore, ImageFilter, StoredImage, VersionConflict
from sam3studio.errors import Sam3StudioError
from sam3studio.results import rle_to_mask
from sam3studio.service import SegmentOptions
from sam3studio.ui.common import Relabel, UiContext, failure, segment_events, texts
from sam3studio.ui.i18n import normalize
from sam3studio.ui.i18n import text as t

ALL = "__all__"
MODES = ("select", "add_clicks", "fix_clicks", "add_box")
# Keys -> the button they press (ignored while typing in a field, and while the Review tab is hidden).
SHORTCUTS = {"a": "review-accept", "n": "review-next", "ArrowRight": "review-next", "p": "review-prev",
             "ArrowLeft": "review-prev", "u": "review-next-unreviewed", "s": "review-skip", "d": "review-delete",
             "Delete": "review-delete", "r": "review-relabel", ".": "review-inst-next", ",": "review-inst-prev"}
_KEYS_JS = """
if (!window.__sam3studioReviewKeys) {
  window.__sam3studioReviewKeys = true;
  const keys = %s;
  document.addEventListener('keydown', (e) => {
    const panel = document.getElementById('review-tab');
    if (!panel || panel.offsetParent === null || e.ctrlKey || e.metaKey || e.altKey) return;
    const el = e.target;
    const typing = el && ((el.tagName === 'INPUT' && !['radio', 'checkbox', 'button'].includes(el.type))
                          || el.tagName === 'TEXTAREA' || el.tagName === 'SELECT' || el.isContentEditable);
    if (typing) return;
    const button = keys[e.key] && document.getElementById(keys[e.key]);
    if (button && !button.disabled) { e.preventDefault(); button.click(); }
  });
}
"""


@dataclass
class ReviewState:
    """One page's review position and click series (a ``gr.State``: one per browser tab)."""

    dataset: str | None = None
    image_id: int | None = None
    version: int = 0
    selected: int | None = None  # instance id
    points: list[list[float]] = field(default_factory=list)  # the click series, image pixels
    labels: list[int] = field(default_factory=list)
    target: int | None = None  # the instance the click series edits
    base: str | None = None  # RLE counts of the target's mask before a "fix" series
    corner: tuple[float, float] | None = None  # the first corner of an example box

    def fresh(self) -> ReviewState:
        """The same position with no click series."""
        return replace(self, points=[], labels=[], target=None, base=None, corner=None)


def state_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(lang, "review_all"), ALL), *((t(lang, f"state_{s}"), s) for s in STATES)]


def mode_choices(lang: str) -> list[tuple[str, str]]:
    return [(t(lang, f"review_mode_{m}"), m) for m in MODES]


def polarity_choices(lang: str) -> list[tuple[str, int]]:
    return [(t(lang, "positive"), 1), (t(lang, "negative"), 0)]


def instance_rows(image: StoredImage | None) -> list[list[Any]]:
    if image is None:
        return []
    return [[i.id, i.class_name, "–" if i.score is None else round(i.score, 3), i.origin, i.area] for i in image.instances]


def instance_choices(image: StoredImage | None) -> list[tuple[str, int]]:
    if image is None:
        return []
    return [(f"#{i.id} {i.class_name}" + ("" if i.score is None else f" · {i.score:.2f}"), i.id) for i in image.instances]


class ReviewTab:
    """The tab's components and handlers; the store work goes through ``ctx.datasets``, the model through the service."""

    def __init__(self, ctx: UiContext) -> None:
        self.ctx = ctx
        self.service = ctx.service
        self.registry = ctx.datasets
        self.images = ReviewImages()
        ids = self.registry.ids()
        first = self.registry.get(ids[0])
        lang = ctx.first_lang
        with gr.Tab(t(lang, "tab_review"), id="review", elem_id="review-tab") as self.tab:
            with gr.Row():
                self.dataset = gr.Dropdown(ids, value=ids[0], label=t(lang, "review_dataset"), elem_id="review-dataset",
                                           scale=1)
                self.state_filter = gr.Dropdown(state_choices(lang), value=ALL, label=t(lang, "review_state"),
                                                elem_id="review-state", scale=1)
                self.class_filter = gr.Dropdown([(t(lang, "review_all"), ALL), *((c, c) for c in first.classes)],
                                                value=ALL, label=t(lang, "review_class"), elem_id="review-class", scale=1)
                self.min_score = gr.Number(0, minimum=0, maximum=1, step=0.05, label=t(lang, "review_min_score"),
                                           elem_id="review-min-score", scale=1)
                self.max_score = gr.Number(1, minimum=0, maximum=1, step=0.05, label=t(lang, "review_max_score"),
                                           elem_id="review-max-score", scale=1)
            self.progress = gr.Markdown(t(lang, "review_hint"), elem_id="review-progress")
            with gr.Row():
                self.prev_btn = gr.Button(t(lang, "review_prev"), elem_id="review-prev", size="sm")
                self.next_btn = gr.Button(t(lang, "review_next"), elem_id="review-next", size="sm")
                self.next_unreviewed_btn = gr.Button(t(lang, "review_next_unreviewed"), elem_id="review-next-unreviewed",
                                                     size="sm")
                self.skip_btn = gr.Button(t(lang, "review_skip"), elem_id="review-skip", size="sm")
                self.accept_btn = gr.Button(t(lang, "review_accept"), elem_id="review-accept", variant="primary", size="sm")
            with gr.Row():
                with gr.Column(scale=3):
                    self.canvas = gr.Image(type="numpy", interactive=False, format="jpeg", label=t(lang, "review_canvas"),
                                           elem_id="review-canvas", height=560)
                    self.status = gr.Markdown(elem_id="review-status")
                with gr.Column(scale=2):
                    self._side(lang, first)
            self.keys_md = gr.Markdown(t(lang, "review_keys"), elem_id="review-keys")
            # Mounted with the tab: installs the keys once and fires `click`, which loads the view (the tab's
            # `select` does not fire for a tab the page opens on).
            self.keys_js = gr.HTML("", js_on_load=_KEYS_JS % json.dumps(SHORTCUTS) + "trigger('click');",
                                   elem_id="review-keys-js")
            self.state = gr.State(ReviewState())

    def _side(self, lang: str, first: DatasetStore) -> None:
        self.table = gr.Dataframe(headers=t(lang, "review_headers"), label=t(lang, "instances"), interactive=False,
                                  elem_id="review-instances")
        with gr.Row():
            self.selected = gr.Dropdown([], value=None, label=t(lang, "review_selected"), elem_id="review-selected",
                                        scale=2)
            self.inst_prev_btn = gr.Button("◀", elem_id="review-inst-prev", size="sm", scale=0, min_width=40)
            self.inst_next_btn = gr.Button("▶", elem_id="review-inst-next", size="sm", scale=0, min_width=40)
        self.class_pick = gr.Dropdown(first.classes, value=first.classes[0] if first.classes else None,
                                      label=t(lang, "review_class_pick"), elem_id="review-class-pick")
        with gr.Row():
            self.relabel_btn = gr.Button(t(lang, "review_relabel"), elem_id="review-relabel", size="sm")
            self.delete_btn = gr.Button(t(lang, "review_delete"), elem_id="review-delete", size="sm", variant="stop")
        self.mode = gr.Radio(mode_choices(lang), value="select", label=t(lang, "review_mode"), elem_id="review-mode")
        self.polarity = gr.Radio(polarity_choices(lang), value=1, label=t(lang, "polarity"), elem_id="review-polarity")
        with gr.Row():
            self.prompt = gr.Textbox(label=t(lang, "review_prompt"), placeholder=t(lang, "review_prompt_placeholder"),
                                     elem_id="review-prompt", scale=3)
            self.threshold = gr.Number(0.5, minimum=0.01, maximum=1, step=0.05, label=t(lang, "threshold"),
                                       elem_id="review-threshold", scale=1)
        self.add_text_btn = gr.Button(t(lang, "review_add_text"), elem_id="review-add-text", size="sm")

    # --- wiring ------------------------------------------------------------------------------------------

    def wire(self) -> None:
        lang = self.ctx.language
        filters = [self.dataset, self.state_filter, self.class_filter, self.min_score, self.max_score]
        base = [self.state, *filters]
        view = [self.state, self.canvas, self.table, self.progress, self.selected, self.status]
        nav = {"api_name": False, "concurrency_limit": None}
        self.tab.select(self.on_open, [*base, lang], [*view, self.class_filter, self.class_pick], **nav)
        self.keys_js.click(self.on_open, [*base, lang], [*view, self.class_filter, self.class_pick], **nav)
        self.dataset.input(self.on_open, [*base, lang], [*view, self.class_filter, self.class_pick], **nav)
        for comp in (self.state_filter, self.class_filter, self.min_score, self.max_score):
            comp.input(self.on_filter, [*base, lang], view, **nav)
        self.prev_btn.click(self.on_prev, [*base, lang], view, **nav)
        self.next_btn.click(self.on_next, [*base, lang], view, **nav)
        self.next_unreviewed_btn.click(self.on_next_unreviewed, [*base, lang], view, **nav)
        self.accept_btn.click(self.on_accept, [*base, lang], view, **nav)
        self.skip_btn.click(self.on_skip, [*base, lang], view, **nav)
        self.delete_btn.click(self.on_delete, [*base, lang], view, **nav)
        self.relabel_btn.click(self.on_relabel, [*base, self.class_pick, lang], view, **nav)
        self.selected.input(self.on_select, [*base, self.selected, lang], view, **nav)
        self.inst_prev_btn.click(self.on_inst_prev, [*base, lang], view, **nav)
        self.inst_next_btn.click(self.on_inst_next, [*base, lang], view, **nav)
        self.mode.input(self.on_mode, [*base, lang], view, **nav)
        group = {"api_name": False, **segment_events(self.ctx.settings)}
        self.canvas.select(self.on_canvas, [*base, self.mode, self.polarity, self.class_pick, lang], view, **group)
        self.add_text_btn.click(self.on_add_text, [*base, self.prompt, self.threshold, self.class_pick, lang], view,
                                **group)
        self.prompt.submit(self.on_add_text, [*base, self.prompt, self.threshold, self.class_pick, lang], view, **group)

    def relabels(self) -> list[Relabel]:
        def choices(label: str, make) -> Any:
            return lambda lang: gr.update(label=t(lang, label), choices=make(lang))

        def table(lang: str, rows: Any) -> Any:
            if rows is None:  # the page is loading: the tab may have filled the table already, keep what it holds
                return gr.update(label=t(lang, "instances"))
            data = rows.values.tolist() if hasattr(rows, "values") else []
            return gr.update(label=t(lang, "instances"), value={"headers": t(lang, "review_headers"), "data": data})

        return [
            Relabel(self.tab, texts(label="tab_review")), Relabel(self.dataset, texts(label="review_dataset")),
            Relabel(self.state_filter, choices("review_state", state_choices)),
            Relabel(self.class_filter, texts(label="review_class")),
            Relabel(self.min_score, texts(label="review_min_score")),
            Relabel(self.max_score, texts(label="review_max_score")),
            Relabel(self.prev_btn, texts(value="review_prev")), Relabel(self.next_btn, texts(value="review_next")),
            Relabel(self.next_unreviewed_btn, texts(value="review_next_unreviewed")),
            Relabel(self.skip_btn, texts(value="review_skip")), Relabel(self.accept_btn, texts(value="review_accept")),
            Relabel(self.canvas, texts(label="review_canvas")), Relabel(self.table, table, keeps="review_rows"),
            Relabel(self.selected, texts(label="review_selected")),
            Relabel(self.class_pick, texts(label="review_class_pick")),
            Relabel(self.relabel_btn, texts(value="review_relabel")), Relabel(self.delete_btn, texts(value="review_delete")),
            Relabel(self.mode, choices("review_mode", mode_choices)),
            Relabel(self.polarity, choices("polarity", polarity_choices)),
            Relabel(self.prompt, texts(label="review_prompt", placeholder="review_prompt_placeholder")),
            Relabel(self.threshold, texts(label="threshold")), Relabel(self.add_text_btn, texts(value="review_add_text")),
            Relabel(self.keys_md, lambda lang: t(lang, "review_keys")),
        ]

    # --- helpers -----------------------------------------------------------------------------------------

    def _store(self, dataset: str | None, lang: str) -> DatasetStore:
        try:
            return self.registry.get(dataset or self.registry.ids()[0])
        except DatasetNotFound as exc:
            raise failure(lang, exc) from None

    def _filter(self, store: DatasetStore, state_f: str, class_f: str, min_s: Any, max_s: Any, lang: str) -> ImageFilter:
        lo = float(min_s) if min_s not in (None, "") else 0.0
        hi = float(max_s) if max_s not in (None, "") else 1.0
        try:
            return ImageFilter(state=None if state_f in (None, ALL) else state_f,
                               class_id=None if class_f in (None, ALL) else store.class_id(class_f),
                               min_score=lo if lo > 0 else None, max_score=hi if hi < 1 else None)
        except Sam3StudioError as exc:
            raise failure(lang, exc) from None

    def respond(self, state: ReviewState, store: DatasetStore, flt: ImageFilter, lang: str, status: str = "") -> dict:
        """Every output of a navigation or an edit: the canvas, the instances, the progress line, the status."""
        if state.image_id is None:
            p = store.progress()
            return {self.state: state, self.canvas: None, self.table: self._table([], lang),
                    self.progress: t(lang, "review_progress", **p) + " · " + t(lang, "review_nothing"),
                    self.selected: gr.update(choices=[], value=None), self.status: status}
        view = view_of(store, state.image_id, flt)
        image = view.image
        if state.selected is not None and all(i.id != state.selected for i in image.instances):
            state = replace(state, selected=None)
        state = replace(state, version=image.version)
        rgb = self.images.get(image)
        pending = [(x, y, lab) for (x, y), lab in zip(state.points, state.labels, strict=True)]
        if state.corner is not None:
            pending.append((*state.corner, 1))
        canvas = draw_review(rgb, image, state.selected, pending)
        if rgb is None:
            status = (status + " · " if status else "") + t(lang, "review_missing", path=image.path)
        return {self.state: state, self.canvas: canvas, self.table: self._table(instance_rows(image), lang),
                self.progress: self._progress_line(view, lang),
                self.selected: gr.update(choices=instance_choices(image), value=state.selected), self.status: status}

    @staticmethod
    def _table(rows: list[list[Any]], lang: str) -> dict[str, Any]:
        return {"headers": t(lang, "review_headers"), "data": rows}

    @staticmethod
    def _progress_line(view: ImageView, lang: str) -> str:
        fields = {"name": view.image.name, "state": t(lang, f"state_{view.image.state}"), "id": view.image.id}
        if view.position == 0:
            where = t(lang, "review_position_outside", **fields)
        elif view.position is None:  # a filter on classes or scores: not counted (see view_of)
            where = t(lang, "review_position_filtered", **fields)
        else:
            where = t(lang, "review_position", position=view.position, matching=view.matching, **fields)
        return t(lang, "review_progress", **view.progress) + " · " + where

    def _context(self, state: ReviewState | None, dataset, state_f, class_f, min_s, max_s, lang):
        lang = normalize(lang)
        state = state if state is not None else ReviewState()
        store = self._store(dataset, lang)
        if state.dataset != dataset:
            state = ReviewState(dataset=dataset)
        return state, store, self._filter(store, state_f, class_f, min_s, max_s, lang), lang

    def _goto(self, state: ReviewState, store: DatasetStore, flt: ImageFilter, lang: str, image_id: int | None,
              status: str = "") -> dict:
        if image_id is None:
            return self.respond(state.fresh(), store, flt, lang, status or t(lang, "review_end"))
        return self.respond(replace(state.fresh(), image_id=image_id, selected=None), store, flt, lang, status)

    def _change(self, state: ReviewState, store: DatasetStore, flt: ImageFilter, lang: str, work, done: str) -> dict:
        """Run a store change made on ``state.version``; a conflict reloads the image and says so."""
        if state.image_id is None:
            raise gr.Error(t(lang, "review_no_image"))
        try:
            work()
        except VersionConflict:
            gr.Warning(t(lang, "review_conflict"))
            return self.respond(state.fresh(), store, flt, lang, t(lang, "review_conflict"))
        except Sam3StudioError as exc:
            raise failure(lang, exc) from None
        return self.respond(state, store, flt, lang, done)

    # --- navigation --------------------------------------------------------------------------------------

    def on_open(self, state, dataset, state_f, class_f, min_s, max_s, lang) -> dict:
        """Opening the tab (or another dataset): the image shown before, else the first unreviewed, else the first."""
        lang = normalize(lang)
        store = self._store(dataset, lang)
        if state is None or state.dataset != dataset:
            state = ReviewState(dataset=dataset)
            class_f = ALL
        flt = self._filter(store, state_f, class_f, min_s, max_s, lang)
        image_id = state.image_id
        if image_id is None:
            image_id = store.step(None, 1, replace(flt, state="unreviewed")) or store.step(None, 1, flt)
        out = self._goto(state, store, flt, lang, image_id) if image_id != state.image_id else self.respond(
            state, store, flt, lang)
        classes = [(t(lang, "review_all"), ALL), *((c, c) for c in store.classes)]
        return {**out, self.class_filter: gr.update(choices=classes, value=class_f),
                self.class_pick: gr.update(choices=store.classes)}

    def on_filter(self, *args) -> dict:
        state, store, flt, lang = self._context(*args)
        return self._goto(state, store, flt, lang, store.step(None, 1, flt))

    def on_next(self, *args) -> dict:
        state, store, flt, lang = self._context(*args)
        return self._goto(state, store, flt, lang, store.step(state.image_id, 1, flt))

    def on_prev(self, *args) -> dict:
        state, store, flt, lang = self._context(*args)
        return self._goto(state, store, flt, lang, store.step(state.image_id, -1, flt))

    def on_next_unreviewed(self, *args) -> dict:
        state, store, flt, lang = self._context(*args)
        target = store.step(state.image_id, 1, replace(flt, state="unreviewed"), wrap=True)
        return self._goto(state, store, flt, lang, target, "" if target else t(lang, "review_all_done"))

    def _review(self, new_state: str, *args) -> dict:
        """Accept or skip the image, then go to the next one."""
        state, store, flt, lang = self._context(*args)
        if state.image_id is None:
            raise gr.Error(t(lang, "review_no_image"))
        try:
            image = store.set_state(state.image_id, state.version, new_state)
        except VersionConflict:
            gr.Warning(t(lang, "review_conflict"))
            return self.respond(state.fresh(), store, flt, lang, t(lang, "review_conflict"))
        done = t(lang, "review_saved_state", name=image.name, state=t(lang, f"state_{image.state}"))
        nxt = store.step(state.image_id, 1, flt)
        return self._goto(state, store, flt, lang, nxt if nxt is not None else state.image_id, done)

    def on_accept(self, *args) -> dict:
        return self._review("accepted", *args)

    def on_skip(self, *args) -> dict:
        return self._review("skipped", *args)

    # --- instance edits ----------------------------------------------------------------------------------

    def _need_selected(self, state: ReviewState, lang: str) -> int:
        if state.selected is None:
            raise gr.Error(t(lang, "review_select_first"))
        return state.selected

    def on_delete(self, *args) -> dict:
        state, store, flt, lang = self._context(*args)
        inst = self._need_selected(state, lang)
        return self._change(replace(state.fresh(), selected=None), store, flt, lang,
                            lambda: store.delete_instance(state.image_id, inst, state.version),
                            t(lang, "review_deleted", id=inst))

    def on_relabel(self, state, dataset, state_f, class_f, min_s, max_s, cls, lang) -> dict:
        state, store, flt, lang = self._context(state, dataset, state_f, class_f, min_s, max_s, lang)
        inst = self._need_selected(state, lang)
        if not cls:
            raise gr.Error(t(lang, "review_pick_class"))
        return self._change(state.fresh(), store, flt, lang,
                            lambda: store.update_instance(state.image_id, inst, state.version, class_id=cls),
                            t(lang, "review_relabelled", id=inst, cls=cls))

    def on_select(self, state, dataset, state_f, class_f, min_s, max_s, selected, lang) -> dict:
        state, store, flt, lang = self._context(state, dataset, state_f, class_f, min_s, max_s, lang)
        if state.image_id is None:
            return self.respond(state, store, flt, lang)
        return self.respond(replace(state.fresh(), selected=None if selected is None else int(selected)), store, flt, lang)

    def _cycle(self, step: int, *args) -> dict:
        state, store, flt, lang = self._context(*args)
        if state.image_id is None:
            return self.respond(state, store, flt, lang)
        ids = [i.id for i in store.image(state.image_id).instances]
        if not ids:
            return self.respond(state.fresh(), store, flt, lang)
        k = ids.index(state.selected) + step if state.selected in ids else (0 if step > 0 else -1)
        return self.respond(replace(state.fresh(), selected=ids[k % len(ids)]), store, flt, lang)

    def on_inst_next(self, *args) -> dict:
        return self._cycle(1, *args)

    def on_inst_prev(self, *args) -> dict:
        return self._cycle(-1, *args)

    def on_mode(self, *args) -> dict:
        """A new mode starts with no clicks."""
        state, store, flt, lang = self._context(*args)
        return self.respond(state.fresh(), store, flt, lang)

    # --- the model: clicks, boxes, text ------------------------------------------------------------------

    def _rgb(self, store: DatasetStore, state: ReviewState, lang: str) -> tuple[StoredImage, np.ndarray]:
        if state.image_id is None:
            raise gr.Error(t(lang, "review_no_image"))
        image = store.image(state.image_id)
        rgb = self.images.get(image)
        if rgb is None:
            raise gr.Error(t(lang, "review_missing", path=image.path))
        return image, rgb

    def on_canvas(self, state, dataset, state_f, class_f, min_s, max_s, mode, polarity, cls, lang,
                  evt: gr.SelectData) -> dict:
        state, store, flt, lang = self._context(state, dataset, state_f, class_f, min_s, max_s, lang)
        if evt is None or evt.index is None or state.image_id is None:
            return self.respond(state, store, flt, lang)
        image, rgb = self._rgb(store, state, lang)
        scale = view_scale(image)
        x, y = (min(max(float(v) / scale, 0.0), dim - 1.0) for v, dim in zip(evt.index[:2], (image.width, image.height),
                                                                               strict=True))
        if mode == "select":
            return self.respond(replace(state.fresh(), selected=_instance_at(image, x, y)), store, flt, lang)
        if mode == "add_box":
            return self._box_click(state, store, flt, lang, image, rgb, x, y, cls)
        return self._click(state, store, flt, lang, image, rgb, x, y, int(polarity), mode, cls)

    def _click(self, state: ReviewState, store: DatasetStore, flt: ImageFilter, lang: str, image: StoredImage,
               rgb: np.ndarray, x: float, y: float, label: int, mode: str, cls: str | None) -> dict:
        """A click of a series: refine with every click so far and save the result at once."""
        if mode == "fix_clicks" and state.target is None:
            target = self._need_selected(state, lang)
            state = replace(state, target=target, base=image.instance(target).counts)
        if mode == "add_clicks" and state.target is None and not cls:
            raise gr.Error(t(lang, "review_pick_class"))
        points, labels = [*state.points, [x, y]], [*state.labels, label]
        prior = rle_to_mask({"size": [image.height, image.width], "counts": state.base}) if state.base else None
        start = time.perf_counter()
        try:
            inst = self.service.refine(rgb, points, labels, mask=prior)
        except Sam3StudioError as exc:
            raise failure(lang, exc) from None
        if not inst.mask.any():
            raise gr.Error(t(lang, "review_empty_mask"))
        state = replace(state, points=points, labels=labels)
        try:
            if state.target is None:
                after = store.add_instance(image.id, state.version, cls, mask=inst.mask, score=None, origin="clicks")
                state = replace(state, target=after.instances[-1].id)
            else:
                store.update_instance(image.id, state.target, state.version, mask=inst.mask, origin="clicks")
        except VersionConflict:
            gr.Warning(t(lang, "review_conflict"))
            return self.respond(state.fresh(), store, flt, lang, t(lang, "review_conflict"))
        except Sam3StudioError as exc:
            raise failure(lang, exc) from None
        done = t(lang, "review_clicked", id=state.target, n=len(points), seconds=time.perf_counter() - start)
        return self.respond(replace(state, selected=state.target), store, flt, lang, done)

    def _box_click(self, state: ReviewState, store: DatasetStore, flt: ImageFilter, lang: str, image: StoredImage,
                   rgb: np.ndarray, x: float, y: float, cls: str | None) -> dict:
        """First click: a corner. Second: the box; SAM 3 finds the object like it, and the best match is added."""
        if state.corner is None:
            return self.respond(replace(state.fresh(), corner=(x, y), selected=state.selected), store, flt, lang,
                                t(lang, "review_corner"))
        if not cls:
            raise gr.Error(t(lang, "review_pick_class"))
        (x0, y0), box = state.corner, None
        box = [min(x0, x), min(y0, y), max(x0, x), max(y0, y)]
        state = state.fresh()
        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
            return self.respond(state, store, flt, lang, t(lang, "review_box_small"))
        try:
            seg = self.service.segment(rgb, cls, SegmentOptions(score_threshold=0.01, boxes=[box], box_labels=[1]))
        except Sam3StudioError as exc:
            raise failure(lang, exc) from None
        best = _best_box_match(seg.boxes, box)
        if best is None:
            return self.respond(state, store, flt, lang, t(lang, "review_box_none"))
        return self._change(state, store, flt, lang,
                            lambda: store.add_instance(image.id, state.version, cls, mask=seg.masks[best],
                                                       score=float(seg.scores[best]), origin="box"),
                            t(lang, "review_added", n=1, cls=cls))

    def on_add_text(self, state, dataset, state_f, class_f, min_s, max_s, prompt, threshold, cls, lang) -> dict:
        """Segment the image by ``prompt``; add what no instance covers yet, as class ``cls``
        (or the class the prompt names)."""
        state, store, flt, lang = self._context(state, dataset, state_f, class_f, min_s, max_s, lang)
        image, rgb = self._rgb(store, state, lang)
        prompt = (prompt or "").strip() or cls
        if not prompt:
            raise gr.Error(t(lang, "review_pick_class"))
        cls = prompt if prompt in store.classes else cls
        if not cls:
            raise gr.Error(t(lang, "review_pick_class"))
        try:
            seg = self.service.segment(rgb, prompt, SegmentOptions(score_threshold=float(threshold or 0.5)))
        except Sam3StudioError as exc:
            raise failure(lang, exc) from None
        keep = new_results(image.instances, seg.masks)
        items = [{"class_id": cls, "mask": seg.masks[k], "score": float(seg.scores[k]), "origin": "text"} for k in keep]
        if not items:
            return self.respond(state.fresh(), store, flt, lang, t(lang, "review_text_none", found=len(seg)))
        return self._change(state.fresh(), store, flt, lang,
                            lambda: store.add_instances(image.id, state.version, items),
                            t(lang, "review_added", n=len(items), cls=cls))


def _instance_at(image: StoredImage, x: float, y: float) -> int | None:
    """The smallest instance whose mask (or box) holds the pixel, else None."""
    xi, yi = int(x), int(y)
    hits = []
    for inst in image.instances:
        mask = inst.mask()
        inside = bool(mask[yi, xi]) if mask is not None else (inst.box[0] <= x < inst.box[2] and inst.box[1] <= y < inst.box[3])
        if inside:
            hits.append((inst.area, inst.id))
    return min(hits)[1] if hits else None


def _best_box_match(boxes: np.ndarray, box: list[float], min_iou: float = 0.3) -> int | None:
    if not len(boxes):
        return None
    b = np.asarray(box, np.float32)
    x1 = np.maximum(boxes[:, 0], b[0])
    y1 = np.maximum(boxes[:, 1], b[1])
    x2 = np.minimum(boxes[:, 2], b[2])
    y2 = np.minimum(boxes[:, 3], b[3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    iou = inter / np.maximum(areas + (b[2] - b[0]) * (b[3] - b[1]) - inter, 1e-6)
    k = int(np.argmax(iou))
    return k if iou[k] >= min_iou else None


def review_tab(ctx: UiContext) -> list[Relabel]:
    """Build the Review tab when the server serves datasets (inside the page's ``gr.Tabs()``); else nothing."""
    if ctx.datasets is None or not len(ctx.datasets):
        return []
    tab = ReviewTab(ctx)
    tab.wire()
    return tab.relabels()
