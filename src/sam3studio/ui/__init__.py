"""The Gradio 6 web UI, mounted at ``/`` by `sam3studio.api`: ``from sam3studio.ui import build_ui``.

It calls the same `SegmentService` as the REST API, in-process; it never calls the API over HTTP.

    app.py        build_ui: the page frame (intro, language switch, model banner), the tabs in `TABS`,
                  relabelling on a language switch, the page's language on load
    common.py     what tabs share: UiContext (service, settings, run folders, first language, the
                  language switch, the video job runner), Relabel rows, failure(), segment_events()
    image_tab.py  the Image tab (ImageTab; its state is one ImageState in a gr.State)
    video_tab.py  the Video tab (VideoTab: jobs of the shared JobRunner)
    marks.py      what the user drew on the image canvas (Marks), drawing and describing it (no Gradio)
    i18n.py       every word of the page in English and Chinese; how a page picks its language

Adding a tab (say, Review):

1. Write ``ui/review_tab.py`` with a builder ``review_tab(ctx: UiContext) -> list[Relabel]`` that
   opens ``with gr.Tab(t(ctx.first_lang, "tab_review"), id="review", elem_id="review-tab")``,
   creates its components in the page's first language, wires its events and returns one `Relabel`
   row per component whose words change with the language (`texts(label=..., info=...)` for a
   ``gr.update``, `plain(key)` for a Markdown block, a function of ``(lang, value)`` with
   ``keeps="name"`` for a component whose value must survive the switch). As in the other tabs,
   a class can hold the components (attributes) and handlers (methods), and handlers return a dict
   keyed by the components they change; state lives in a ``gr.State`` holding a dataclass.
   A handler that speaks takes ``ctx.language`` as an input and raises ``gr.Error`` (for a library
   error: `failure(lang, exc)`); one that runs the image model passes ``**segment_events(settings)``.
2. Add its words to both languages of ``ui/i18n.py`` (same keys: a test checks).
3. Add ``review_tab`` to `TABS` in ``ui/app.py`` (the order there is the order on the page).

A tab module imports `ui.common`, `ui.i18n`, `ui.marks` and the library, never `ui.app` or another tab.
"""

from sam3studio.ui.app import build_ui

__all__ = ["build_ui"]
