"""Prompt parsing: ``"dog, red car"`` becomes ``["dog", "red car"]``, with precise errors."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sam3studio.errors import InputError

MAX_PROMPTS = 32
MAX_PROMPT_CHARS = 200
MAX_PROMPT_TOKENS = 32  # SAM 3's text encoder context: a longer prompt is refused by the engine, whatever its characters

# ASCII comma, full-width comma, ideographic comma and semicolons separate prompts.
_SEPARATORS = re.compile(r"[,，、;；]")

__all__ = ["MAX_PROMPTS", "MAX_PROMPT_CHARS", "MAX_PROMPT_TOKENS", "Translation", "Translator", "identity_translator",
           "parse_prompts"]


@dataclass(frozen=True)
class Translation:
    """What a prompt becomes before it reaches the model.

    ``query`` is the text the model sees; ``unknown`` lists words the translator did not understand
    (they are reported to the user, never silently dropped).
    """

    query: str
    unknown: tuple[str, ...] = ()


# A translator maps one parsed prompt to the model's query (e.g. Chinese to English noun phrases).
Translator = Callable[[str], Translation]


def identity_translator(text: str) -> Translation:
    return Translation(query=text)


def parse_prompts(
    prompts: str | Sequence[str] | None,
    *,
    max_prompts: int = MAX_PROMPTS,
    max_chars: int = MAX_PROMPT_CHARS,
) -> list[str]:
    """Split, trim and de-duplicate prompts, keeping their order.

    A string is split on commas; a list is taken item by item (each item may hold commas too).
    Raises `InputError` for no prompt, an empty item, too many prompts, or a prompt too long.
    """
    if prompts is None:
        raise InputError("no prompt given: pass at least one text prompt such as 'dog'")
    if isinstance(prompts, str):
        items = [prompts]
    elif isinstance(prompts, Sequence) and all(isinstance(p, str) for p in prompts):
        items = list(prompts)
    else:
        raise InputError(f"prompts must be a string or a list of strings, got {type(prompts).__name__}")
    if not items or all(not p.strip() for p in items):
        raise InputError("prompt is empty: type what to find, for example 'dog' or 'red car'")
    out: list[str] = []
    for index, item in enumerate(items):
        # Stray separators ("dog, cat,") are forgiven; an empty list item is not.
        parts = [part for part in (" ".join(p.split()) for p in _SEPARATORS.split(item)) if part]
        if not parts:
            raise InputError(f"prompt {index + 1} is empty: type what to find, for example 'dog' or 'red car'")
        for part in parts:
            try:
                part.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: not text any tokenizer can take
                raise InputError(f"prompt {index + 1} is not valid Unicode text (it holds a lone surrogate)") from None
            if len(part) > max_chars:
                raise InputError(f"prompt is {len(part)} characters long; the limit is {max_chars}")
            if part not in out:
                out.append(part)
    if len(out) > max_prompts:
        raise InputError(f"{len(out)} prompts given; the limit is {max_prompts} per image")
    return out
