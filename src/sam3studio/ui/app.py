"""The page: its frame (intro, language switch, model banner), the tabs in `TABS`, relabelling and page load."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr

from sam3studio.dataset.review import DatasetRegistry
from sam3studio.jobs import JobRunner
from sam3studio.random_model import UNTRAINED_THRESHOLD
from sam3studio.service import SegmentService
from sam3studio.sessions import SessionManager
from sam3studio.ui.common import Relabel, UiContext, display_source, plain
from sam3studio.ui.i18n import LANGUAGES, normalize, pick_language
from sam3studio.ui.i18n import text as t
from sam3studio.ui.image_tab import image_tab
from sam3studio.ui.review_tab import review_tab
from sam3studio.ui.video_tab import video_tab

BANNER_POLL_S = 2.0  # how often a page asks for the banner while the model loads

# The tabs in page order: each builds its tab from the context and returns its relabel rows.
TABS: tuple[Callable[[UiContext], list[Relabel]], ...] = (image_tab, video_tab, review_tab)


def model_banner(service: SegmentService, lang: str) -> str:
    """The line under the intro: the model and where it runs (an untrained one said loudly), loading, or why not."""
    state = service.info()
    if state["ready"]:
        m = state["model"]
        fields = {"source": display_source(m["source"]), "device": m["device"], "dtype": m["dtype"]}
        if getattr(service.segmenter, "untrained", False):
            return t(lang, "banner_untrained", threshold=UNTRAINED_THRESHOLD, **fields)
        return t(lang, "banner_ready", **fields)
    if state["error"]:
        return t(lang, "banner_error", error=state["error"])
    return t(lang, "banner_loading")


def relabel_handler(labelled: Sequence[Relabel]) -> Callable[..., dict[Any, Any]]:
    """The language switch's handler: every row of ``labelled`` in a language, as a dict keyed by component.

    Its inputs are the language and then the current value of each row with ``keeps``, in row order.
    """
    kept = [row for row in labelled if row.keeps]

    def relabel(lang: str, *values: Any) -> dict[Any, Any]:
        """Every label, hint and button of the page in ``lang`` (the outputs of `labelled`)."""
        lang = normalize(lang)
        current = iter(values)
        return {row.component: row.update(lang, next(current, None)) if row.keeps else row.update(lang)
                for row in labelled}

    # Gradio names the endpoint's parameters after the function's: "lang" and each kept row's name.
    param = inspect.Parameter
    relabel.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [param("lang", param.POSITIONAL_OR_KEYWORD, annotation=str),
         *(param(row.keeps, param.POSITIONAL_OR_KEYWORD, default=None) for row in kept)])
    return relabel


def build_ui(service: SegmentService, jobs: JobRunner | None = None, datasets: DatasetRegistry | None = None,
             sessions: SessionManager | None = None) -> gr.Blocks:
    """The Blocks app. Every handler goes through ``service`` (shared admission gate, limits).

    The Video tab submits to ``jobs``, the same `JobRunner` as ``POST /api/v1/videos`` (one worker,
    one bounded queue); without one, a runner on ``settings.data_dir`` is started on the first video.
    The Review tab shows ``datasets`` (the same registry as ``/api/v1/datasets``); without any it is left out.
    Its editor opens video sessions in ``sessions``, the manager of ``/api/v1/sessions`` (made on first
    use when not given).

    Every word on the page comes from `sam3studio.ui.i18n`; the language switch relabels the page in
    place, and a page opens in ``settings.lang`` or, when that is "auto", the browser's language.
    """
    settings = service.settings
    first_lang = pick_language(settings.lang)  # what the page is built in, before the browser is known
    with gr.Blocks(title="sam3studio", delete_cache=(3600, 7200)) as demo:
        with gr.Row(equal_height=True):
            intro = gr.Markdown(t(first_lang, "intro"), elem_id="intro")
            lang_radio = gr.Radio([(name, code) for code, name in LANGUAGES.items()], value=first_lang,
                                  label=t(first_lang, "language"), elem_id="language", scale=0, min_width=240)
        banner = gr.Markdown(model_banner(service, first_lang), elem_id="model-banner")
        ctx = UiContext(service, language=lang_radio, first_lang=first_lang, jobs=jobs, datasets=datasets,
                        sessions=sessions)
        labelled = [Relabel(intro, plain("intro")),
                    Relabel(lang_radio, lambda lang: gr.update(value=lang, label=t(lang, "language"))),
                    Relabel(banner, lambda lang: model_banner(service, lang))]
        with gr.Tabs(selected="review" if datasets else None):  # a server given datasets opens on Review
            for tab in TABS:
                labelled += tab(ctx)
        relabel = relabel_handler(labelled)
        components = [row.component for row in labelled]

        def on_load(request: gr.Request) -> dict[Any, Any]:
            """A page opens in --lang, or with "auto" in the browser's language."""
            return relabel(pick_language(settings.lang, request.headers.get("accept-language") if request else None))

        lang_radio.input(relabel, [lang_radio, *(row.source for row in labelled if row.keeps)], components,
                         api_name="language", queue=False)
        demo.load(on_load, None, components, api_name=False, queue=False)
        demo.unload(ctx.end_session)  # the session's download folders go when its tab closes

        # While the model loads, the banner asks again every few seconds, so it turns into "ready" (or the
        # reason it failed, or the untrained-model warning) without a reload.
        watch = gr.Timer(BANNER_POLL_S, active=service.loading or not (service.ready or service.load_error))

        def poll_banner(lang: str) -> dict[Any, Any]:
            done = service.ready or bool(service.load_error)
            return {banner: model_banner(service, normalize(lang)), watch: gr.Timer(active=not done)}

        watch.tick(poll_banner, [lang_radio], [banner, watch], api_name=False, queue=False, show_progress="hidden")
    # Bounded like the API: beyond running + waiting requests, Gradio answers "queue full" at once.
    demo.queue(max_size=settings.max_concurrent + settings.max_queue)
    return demo
