"""What the page adds to Gradio's own: a script, a style sheet, the theme's font list, the font they load.

`page_options()` are keyword arguments of ``gr.mount_gradio_app`` (Gradio 6 takes a page's ``js``, ``css``
and ``theme`` there, not in ``gr.Blocks``); `FONTS_URL` and `FONTS_DIR` are where the web app serves the
CJK fallback font from (`sam3studio.api` mounts them).

``page.js`` is hand-written because Gradio 6.31 has no event for either thing it does: Enter in a
slider's number box (the slider re-runs on blur and pointer-up only), and the pointer on the masks of a
``gr.AnnotatedImage`` (only its legend chips answer hover and click). It forwards both to Gradio's own
events, so every handler stays in Python.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import gradio as gr

from sam3studio.render import CJK_FONT

HERE = Path(__file__).resolve().parent
FONTS_DIR = CJK_FONT.parent
FONTS_URL = "/ui-fonts"  # page.css names it relative to the page ("ui-fonts/..."), so a proxy's prefix is kept
CJK_FAMILY = "sam3studio CJK"


@lru_cache(maxsize=1)
def theme() -> gr.themes.Base:
    """Gradio's default theme, both its font lists ending with the shipped CJK font (declared in page.css)."""
    cjk = gr.themes.Font(CJK_FAMILY)
    return gr.themes.Default(
        font=(gr.themes.LocalFont("Source Sans Pro", weights=(400, 600)), "ui-sans-serif", "system-ui", "sans-serif", cjk),
        font_mono=(gr.themes.LocalFont("IBM Plex Mono", weights=(400, 600)), "ui-monospace", "Consolas", "monospace", cjk))


def page_options() -> dict[str, Any]:
    return {"js": (HERE / "page.js").read_text(encoding="utf-8"), "css": (HERE / "page.css").read_text(encoding="utf-8"),
            "theme": theme()}
