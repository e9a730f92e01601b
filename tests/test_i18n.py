"""The UI's two languages: complete catalogues, and how a page's language is chosen."""

from __future__ import annotations

import re
import string

import pytest

from sam3studio.ui import i18n


def _fields(value) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(value) if name} if isinstance(value, str) else set()


def test_both_languages_have_every_key_with_compatible_fields():
    en, zh = i18n.TEXTS["en"], i18n.TEXTS["zh"]
    assert set(en) == set(zh)
    for key in en:
        # Chinese may leave a field out (it has no plural "s"), never need one English does not pass.
        assert _fields(zh[key]) <= _fields(en[key]), key
        assert _fields(zh[key]) >= _fields(en[key]) - {"plural"}, key
        assert type(en[key]) is type(zh[key]), key
    assert len(en["headers"]) == len(zh["headers"])


def test_chinese_catalogue_is_chinese():
    cjk = re.compile(r"[\u4e00-\u9fff]")
    # Every Chinese string a person reads has Chinese characters in it (the query arrow is language-neutral).
    untranslated = [k for k, v in i18n.TEXTS["zh"].items() if k != "query" and not cjk.search(str(v))]
    assert untranslated == []
    assert all(v != i18n.TEXTS["en"][k] for k, v in i18n.TEXTS["zh"].items() if k != "query")


@pytest.mark.parametrize(("header", "expected"), [
    ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
    ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
    ("zh-TW", "zh"),
    ("fr-FR,fr;q=0.9,zh;q=0.5", "zh"),       # first supported one by weight
    ("en;q=0.2, zh;q=0.7", "zh"),
    ("zh;q=0, en;q=0.1", "en"),              # q=0 means "not acceptable"
    ("de-DE", "en"),
    ("", "en"),
    (None, "en"),
    ("zh;q=abc", "en"),
])
def test_browser_language(header, expected):
    assert i18n.from_accept_language(header) == expected


def test_setting_overrides_the_browser():
    assert i18n.pick_language("auto", "zh-CN") == "zh"
    assert i18n.pick_language("en", "zh-CN") == "en"
    assert i18n.pick_language("zh", "en-US") == "zh"
    assert i18n.pick_language(None, None) == "en"


def test_text_formats_and_falls_back_to_english():
    assert i18n.text("zh", "run") == "分割"
    assert i18n.text("zh-CN", "run") == "分割"
    assert i18n.text("xx", "run") == "Segment"
    assert "0.30" in i18n.text("zh", "no_match", text="猫", query="", presence=0.3, threshold=0.5)
