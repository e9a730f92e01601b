"""Build a ready `Segmenter` from a checkpoint source: the one call every entry point uses.

It sits above `sam3studio.model` (sources, device, dtype, weights) and `sam3studio.core` (the
engine), so neither of those needs the other's loader.
"""

from __future__ import annotations

from typing import Any

from sam3studio.core import Segmenter
from sam3studio.model import DEFAULT_SOURCE, load_model
from sam3studio.translate import get_translator

__all__ = ["load_segmenter"]


def load_segmenter(
    source: str = DEFAULT_SOURCE, device: str = "auto", dtype: str = "auto", translator: Any = "lexicon",
    compile: bool = False, **options: Any
) -> Segmenter:
    """Load SAM 3 from ``source`` and wrap it in a `sam3studio.core.Segmenter`.

    ``translator`` turns prompts into English queries: ``"lexicon"`` (default: Chinese prompts are
    translated offline, English passes unchanged), ``"none"``, a local MarianMT folder, or a callable.
    ``compile`` compiles the vision encoder with ``torch.compile`` (the first image compiles).
    ``options`` go to the `Segmenter` constructor (cache sizes, prompt batch size).
    """
    if translator is None or isinstance(translator, str):
        translator = get_translator(translator)
    loaded = load_model(source, device=device, dtype=dtype, compile=compile)
    return Segmenter.from_loaded(loaded, translator=translator, **options)
