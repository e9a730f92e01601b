"""`LexiconTranslator`: Chinese prompts become English noun phrases, offline, with a shipped lexicon.

Pipeline for a prompt that contains CJK characters (anything else passes through unchanged):

1. NFKC normalisation (full-width letters and digits become ASCII) and traditional → simplified
   Chinese with OpenCC (``t2s``).
2. Runs of Chinese are segmented with jieba, whose dictionary gets every lexicon and grammar word
   (a user dictionary, high frequency so ours win). A jieba token that is not one of our words is
   split again by longest match over our words; characters left over form the unknown words.
   Runs of Latin letters and digits are kept as English words.
3. Rules turn the token list into an English noun phrase (see `_Phrase` and docs/chinese.md).

Unknown words are reported in ``Translation.unknown`` and kept out of the query; the query never
contains CJK characters. A prompt with no understood word at all raises `InputError`.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sam3studio.errors import InputError
from sam3studio.prompts import Translation
from sam3studio.translate.lexicon import (
    CONJUNCTIONS,
    MEASURE_WORDS,
    MODIFIER_ORDER,
    POSTPOSITIONS,
    PREPOSITIONS,
    WEAR_WORDS,
    WITH_WORDS,
    Entry,
    grammar_words,
    load_lexicon,
)

__all__ = ["LexiconTranslator", "contains_cjk", "CJK_RE"]

# Han ideographs (with extensions and compatibility forms), kana, Hangul, bopomofo.
_CJK_CLASS = ("\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u3190-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
              "\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f")
CJK_RE = re.compile(f"[{_CJK_CLASS}]")
_RUNS = re.compile(f"([{_CJK_CLASS}]+)|([A-Za-z0-9][A-Za-z0-9'\\-]*)")
_JIEBA_FREQ = 2_000_000  # well above jieba's common words (的: ~318k), so lexicon words win splits
_RANK = {kind: i for i, kind in enumerate(MODIFIER_ORDER)}
_NOUNISH = ("noun", "english")


def contains_cjk(text: str) -> bool:
    """True if ``text`` holds any Chinese, Japanese or Korean character."""
    return CJK_RE.search(text) is not None


def _cache_dir() -> str:
    """Where jieba keeps its dictionary cache: the user cache, never the package folder."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "sam3studio" / "jieba"
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return str(path)
    except OSError:
        pass
    return tempfile.gettempdir()


@dataclass
class _Tok:
    text: str  # Chinese (simplified) or English as typed
    kind: str  # a lexicon kind, or: english, skip, wear, with, post, prep, conj, de, unknown
    english: str = ""
    alone: str = ""
    relation: str = ""  # for words that can be postpositions ("上面" → "on")


@dataclass
class _Phrase:
    """An English noun phrase under construction: modifiers, a (compound) head, trailing phrases."""

    mods: list[_Tok] = field(default_factory=list)
    nouns: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)

    def render(self) -> str:
        mods = sorted(self.mods, key=lambda t: _RANK.get(t.kind, -1))  # stable: English modifiers first
        words = [m.english for m in mods]
        nouns = list(self.nouns)
        if not nouns and mods:
            # No noun: the last modifier typed becomes the head in its standalone form (木头 → "wood").
            last = self.mods[-1]
            if last.alone:
                words = [m.english for m in mods if m is not last] + [last.alone]
        return " ".join(w for w in (*words, *nouns, *self.after) if w)


class LexiconTranslator:
    """Translate Chinese prompts to English noun phrases with the shipped lexicon (the default translator).

    Callable as a `sam3studio.prompts.Translator`: ``LexiconTranslator()("红色的汽车")`` gives
    ``Translation(query="red car")``. English prompts come back unchanged without loading anything.
    Thread-safe; jieba and the lexicon load once, on the first Chinese prompt.

    ``extra`` adds or overrides entries: ``{"皮卡丘": ("pikachu", "noun")}``.
    """

    def __init__(self, extra: dict[str, tuple[str, str]] | None = None) -> None:
        self._extra = dict(extra or {})
        self._lock = threading.Lock()
        self._ready = False
        self._lexicon: dict[str, Entry] = {}
        self._grammar: frozenset[str] = frozenset()
        self._known: frozenset[str] = frozenset()
        self._max_len = 1
        self._jieba: Any = None
        self._opencc: Any = None

    # ------------------------------------------------------------------ loading
    def _load(self) -> None:
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            import jieba
            import opencc

            jieba.setLogLevel(logging.WARNING)
            lexicon = dict(load_lexicon())
            for zh, (en, kind) in self._extra.items():
                lexicon[zh] = Entry(zh, en, kind)
            grammar = grammar_words()
            tokenizer = jieba.Tokenizer()
            tokenizer.tmp_dir = _cache_dir()
            for word in (*lexicon, *grammar):
                tokenizer.add_word(word, freq=_JIEBA_FREQ)
            self._lexicon = lexicon
            self._grammar = grammar
            self._known = frozenset(lexicon) | grammar
            self._max_len = max(len(w) for w in self._known)
            self._opencc = opencc.OpenCC("t2s")
            self._jieba = tokenizer
            self._ready = True

    def warm_up(self) -> LexiconTranslator:
        """Load jieba, OpenCC and the lexicon now instead of on the first Chinese prompt."""
        self._load()
        return self

    # ------------------------------------------------------------------ public
    def __call__(self, text: str) -> Translation:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InputError("the prompt is not valid Unicode text (it holds a lone surrogate)") from None
        if not contains_cjk(text):
            return Translation(query=text)
        self._load()
        normalized = self._opencc.convert(unicodedata.normalize("NFKC", text))
        tokens, unknown = self._tokenize(normalized)
        query = " ".join(self._translate(tokens).split())
        query = " ".join(CJK_RE.sub(" ", query).split())  # belt and braces: never send CJK to the model
        if not query:
            words = "', '".join(unknown) or text
            raise InputError(f"could not translate the prompt '{text}': '{words}' is not in the Chinese lexicon; "
                             "write it in English or use a translation model (--translator)")
        return Translation(query=query, unknown=tuple(unknown))

    def segment(self, text: str) -> list[str]:
        """The words a (simplified) Chinese text is split into, as the rules see them."""
        self._load()
        tokens, _ = self._tokenize(self._opencc.convert(unicodedata.normalize("NFKC", text)))
        return [t.text for t in tokens]

    # ------------------------------------------------------------------ tokens
    def _split_known(self, word: str) -> list[tuple[str, bool]]:
        """Longest match over our words; characters left over are merged into unknown pieces."""
        out: list[tuple[str, bool]] = []
        i = 0
        while i < len(word):
            for j in range(min(len(word), i + self._max_len), i, -1):
                if word[i:j] in self._known:
                    out.append((word[i:j], True))
                    i = j
                    break
            else:
                if out and not out[-1][1]:
                    out[-1] = (out[-1][0] + word[i], False)
                else:
                    out.append((word[i], False))
                i += 1
        return out

    def _tokenize(self, text: str) -> tuple[list[_Tok], list[str]]:
        pieces: list[tuple[str, bool]] = []  # (word, known); English words count as known
        for match in _RUNS.finditer(text):
            han, latin = match.groups()
            if latin:
                pieces.append((latin, True))
                continue
            for word in self._jieba.cut(han, HMM=True):
                if word in self._known:
                    pieces.append((word, True))
                else:
                    split = self._split_known(word)
                    if any(not known for _, known in split) and all(
                            not known or (len(w) == 1 and w not in self._lexicon) for w, known in split):
                        split = [(word, False)]  # "叽里咕噜" is one unknown word, not 叽 + 里 + 咕噜
                    for piece in split:
                        if not piece[1] and pieces and not pieces[-1][1]:
                            pieces[-1] = (pieces[-1][0] + piece[0], False)  # one unknown word, not several
                        else:
                            pieces.append(piece)
        tokens: list[_Tok] = []
        unknown: list[str] = []
        for index, (word, known) in enumerate(pieces):
            if not known:
                if word not in unknown:
                    unknown.append(word)
                continue
            if word in MEASURE_WORDS and index > 0 and pieces[index - 1][0].isdigit():
                continue  # "3个苹果", "2杯咖啡": a measure word after a number
            if word.isdigit() and index + 1 < len(pieces) and pieces[index + 1][0] in MEASURE_WORDS:
                continue
            tok = self._classify(word)
            if tok.kind != "skip":
                tokens.append(tok)
        return tokens, unknown

    def _classify(self, word: str) -> _Tok:
        if not contains_cjk(word):
            return _Tok(word, "english", word)
        if word == "的":
            return _Tok(word, "de")
        entry = self._lexicon.get(word)
        relation = POSTPOSITIONS.get(word, "")
        if entry is not None:
            return _Tok(word, entry.kind, entry.english, entry.alone, relation)
        if word in WEAR_WORDS:
            return _Tok(word, "wear", WEAR_WORDS[word])
        if word in WITH_WORDS:
            return _Tok(word, "with", WITH_WORDS[word])
        if relation:
            return _Tok(word, "post", relation=relation)
        if word in PREPOSITIONS:
            return _Tok(word, "prep")
        if word in CONJUNCTIONS:
            return _Tok(word, "conj", CONJUNCTIONS[word])
        return _Tok(word, "skip")  # 的-like particles, quantities, measure words, "all", "in the picture"

    # ------------------------------------------------------------------ rules
    def _translate(self, tokens: list[_Tok]) -> str:
        """Split on conjunctions ("猫和狗" → "cat and dog"), translate each noun phrase."""
        out: list[str] = []
        current: list[_Tok] = []
        joiner = ""
        for tok in [*tokens, _Tok("", "conj", "")]:
            if tok.kind != "conj":
                current.append(tok)
                continue
            rendered = _noun_phrase(current)
            if rendered:
                out.extend([joiner, rendered] if out else [rendered])
            joiner = tok.english or "and"
            current = []
        return " ".join(out)


# ---------------------------------------------------------------------------- phrase rules
def _is_relation(tok: _Tok, previous: _Tok | None) -> bool:
    """A position word right after a noun is a relation ("桌子上面" → "on table"), else a modifier."""
    return bool(tok.relation) and previous is not None and previous.kind in (*_NOUNISH, "place")


def _simple_phrase(tokens: list[_Tok]) -> _Phrase:
    """Modifiers and nouns with no 的: "大红色木头桌子", "桌子上杯子", "red 汽车"."""
    phrase = _Phrase()
    previous: _Tok | None = None
    last_mod = max((i for i, t in enumerate(tokens) if t.kind in _RANK), default=-1)
    for index, tok in enumerate(tokens):
        if tok.kind == "english" and index < last_mod:
            phrase.mods.append(tok)  # "big 红色 car": an English word before a Chinese modifier is a modifier
            previous = tok
            continue
        if tok.kind in ("post",) or _is_relation(tok, previous):
            if phrase.nouns:
                located = " ".join([m.english for m in sorted(phrase.mods, key=lambda t: _RANK.get(t.kind, -1))]
                                   + phrase.nouns)
                phrase = _Phrase(after=[*phrase.after, f"{tok.relation} {located}"])
        elif tok.kind in _NOUNISH:
            phrase.nouns.append(tok.english)
        elif tok.kind == "place":
            phrase.after.append(tok.english)
        elif tok.kind in _RANK:
            phrase.mods.append(tok)
        # prep, wear/with without an object, "de": nothing to add here
        previous = tok
    return phrase


def _clause(tokens: list[_Tok], head: _Phrase, prefix: list[str]) -> bool:
    """Apply one modifier clause (the words before a 的) to the head phrase; True for a 穿/戴 clause."""
    first = tokens[0]
    actions = [i for i, t in enumerate(tokens) if t.kind == "action"]
    if first.english == "without" and len(tokens) > 1 and tokens[1].kind == "wear":
        tokens = [first, *tokens[2:]]  # "没有戴口罩的人" → "person without mask"
    if first.kind in ("wear", "with"):
        later = [i for i, t in enumerate(tokens) if i and t.kind in ("wear", "with", "action")]
        if later:  # "戴头盔骑摩托车的人", "戴帽子穿红衣服的人": clauses in a row
            wears = _clause(tokens[: later[0]], head, prefix)
            return _clause(tokens[later[0]:], head, prefix) or wears
        obj = _simple_phrase(tokens[1:])
        if obj.nouns or obj.after:
            head.after.append(f"{first.english} {obj.render()}")
        elif first.english == "with":
            head.mods.extend(obj.mods)  # "带花纹的地毯" → "patterned rug"
        elif obj.mods:
            head.after.append(f"{first.english} {obj.render()}")
        return first.kind == "wear"
    if actions:
        verb = tokens[actions[0]]
        rest = tokens[actions[0] + 1:]
        extra = _simple_phrase([t for t in rest if t.kind != "prep"])
        tail = extra.render()
        # Words before the verb (a place: "天上飞的鸟", "在草地上跑的狗") are dropped: the participle says it.
        if tail and extra.nouns and not extra.after and rest[0].kind == "prep":
            head.after.append(f"{verb.english} at {tail}")  # "停在路边的汽车" → "car parked at roadside"
        elif tail and (extra.nouns or extra.after):
            head.after.append(f"{verb.english} {tail}")  # "骑自行车的人" → "person riding bicycle"
        elif " " in verb.english:
            head.after.append(verb.english)  # "打电话的人" → "person talking on the phone"
        else:
            head.mods.extend([verb, *extra.mods])  # "天上飞的鸟" → "flying bird"
        return False
    inner = _simple_phrase([t for t in tokens if t.kind != "prep"])
    if inner.after and not inner.nouns:
        # A place: "桌子上面的杯子" → "cup on table".
        head.after.extend(inner.after)
        head.mods.extend(inner.mods)
    elif inner.nouns:
        prefix.append(inner.render())  # a possessor or a compound: "汽车的轮胎" → "car tire"
    else:
        head.mods.extend(inner.mods)
    return False


def _noun_phrase(tokens: list[_Tok]) -> str:
    """One noun phrase: clauses ending in 的 modify the head, the words after the last 的."""
    segments: list[list[_Tok]] = [[]]
    for tok in tokens:
        if tok.kind == "de":
            segments.append([])
        else:
            segments[-1].append(tok)
    if tokens and tokens[-1].kind == "de":  # "红色的", "穿白衣服的": no head noun typed
        clauses, head = segments[:-1], _Phrase()
    else:
        clauses, head = segments[:-1], _simple_phrase(segments[-1])
    own_mods, own_after = head.mods, head.after
    head.mods, head.after = [], []
    prefix: list[str] = []
    wears = False
    for clause in clauses:
        if clause:
            wears = _clause(clause, head, prefix) or wears
    head.mods.extend(own_mods)  # keep the typed order: the last modifier typed may become the head
    head.after.extend(own_after)
    head.nouns[:0] = prefix
    if wears and not head.nouns:
        head.nouns = ["person"]  # "穿红衣服的" → "person in red clothes"
    return head.render()
