"""Chinese prompts for SAM 3, whose text encoder understands English only.

``get_translator("lexicon")`` (the default) translates prompts containing CJK text to English noun
phrases offline with a shipped bilingual lexicon, jieba and OpenCC: ``"红色的汽车"`` → ``"red car"``.
English prompts pass through unchanged. ``get_translator("/path/to/opus-mt-zh-en")`` uses a local
MarianMT model instead; ``get_translator("none")`` sends prompts as typed. See docs/chinese.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sam3studio.errors import ModelSourceError
from sam3studio.prompts import Translation, Translator, identity_translator
from sam3studio.translate.lexicon import Entry, lexicon_stats, load_lexicon
from sam3studio.translate.lexicon_translator import LexiconTranslator, contains_cjk

if TYPE_CHECKING:
    from sam3studio.translate.marian import MarianTranslator

__all__ = [
    "Entry",
    "LexiconTranslator",
    "MarianTranslator",
    "Translation",
    "Translator",
    "contains_cjk",
    "get_translator",
    "lexicon_stats",
    "load_lexicon",
]


def __getattr__(name: str):
    if name == "MarianTranslator":  # keeps `import sam3studio.translate` free of torch/transformers
        from sam3studio.translate.marian import MarianTranslator

        return MarianTranslator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_translator(spec: str | None = None) -> Translator:
    """A translator from a spec: ``None``/``"lexicon"`` (default), ``"none"`` (identity), or a MarianMT folder.

    Raises `ModelSourceError` for a spec that is neither a known name nor an existing directory.
    """
    value = (spec or "lexicon").strip()
    if value.lower() in ("lexicon", "default", "zh", ""):
        return LexiconTranslator()
    if value.lower() in ("none", "off", "identity"):
        return identity_translator
    path = Path(value).expanduser()
    if path.is_dir():
        from sam3studio.translate.marian import MarianTranslator

        return MarianTranslator(path)
    raise ModelSourceError(f"unknown translator '{spec}': use 'lexicon' (default), 'none', "
                           "or the path of a local MarianMT model folder")
