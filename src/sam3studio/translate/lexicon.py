"""The bilingual lexicon of visual concepts (``data/lexicon.tsv``) and the grammar words of the rules."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

__all__ = ["Entry", "KINDS", "load_lexicon", "lexicon_stats"]

# Kinds of content words in the TSV. Modifier kinds are listed in the order English puts them before
# a noun ("leftmost big running rusty striped round red wooden table").
MODIFIER_ORDER = ("position", "size", "action", "state", "texture", "shape", "color", "material")
KINDS = ("noun", "place", *MODIFIER_ORDER)


@dataclass(frozen=True)
class Entry:
    """One lexicon line: a Chinese word, its English, its kind, and the English used alone.

    ``alone`` is the form used when the word is the whole phrase (木头 → "wood", 木头桌子 → "wooden
    table"); it defaults to ``english``.
    """

    chinese: str
    english: str
    kind: str
    alone: str = ""

    @property
    def standalone(self) -> str:
        return self.alone or self.english


def _parse(text: str, origin: str) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip("\r\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) not in (3, 4) or not all(c.strip() for c in cols):
            raise ValueError(f"{origin}:{number}: expected 'chinese<TAB>english<TAB>kind[<TAB>alone]', got {raw!r}")
        zh, en, kind = (c.strip() for c in cols[:3])
        if kind not in KINDS:
            raise ValueError(f"{origin}:{number}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
        if zh in entries:
            raise ValueError(f"{origin}:{number}: {zh!r} is listed twice")
        entries[zh] = Entry(zh, en, kind, cols[3].strip() if len(cols) == 4 else "")
    return entries


@lru_cache(maxsize=1)
def load_lexicon() -> dict[str, Entry]:
    """The shipped lexicon, Chinese word → `Entry` (simplified characters)."""
    text = resources.files("sam3studio.translate").joinpath("data/lexicon.tsv").read_text(encoding="utf-8")
    return _parse(text, "lexicon.tsv")


def lexicon_stats() -> dict[str, int]:
    """Number of Chinese entries per kind, plus ``english_nouns``: distinct English nouns."""
    lex = load_lexicon()
    stats = {kind: sum(1 for e in lex.values() if e.kind == kind) for kind in KINDS}
    stats["english_nouns"] = len({e.english for e in lex.values() if e.kind == "noun"})
    return stats


# ---------------------------------------------------------------------------- grammar words
# Words the rules handle themselves (they are added to jieba's dictionary too).
SKIP_WORDS = frozenset(
    "的 地 了 着 之 是 为 被 把 呢 吧 啊 呀 哦 请 帮 帮我 找 找出 找到 找出来 标出 标记 分割 分割出 检测 识别 圈出 选出 抠出 "
    "所有 全部 所有的 全部的 每个 每一个 各个 各种 一些 一点 很多 许多 好多 多个 几个 若干 一堆 一群 一排 一对 "
    "这 那 这个 那个 这些 那些 这里 那里 其中 "
    "图中 图里 图片 图片中 图片里 图像 图像中 照片 照片中 照片里 画面 画面中 画面里 场景中 "
    "很 非常 特别 超级 比较 有点 有些 十分 相当 挺 真 太 更 最为 稍微".split()
)
NUMBERS = "一二两三四五六七八九十几多每某半"
MEASURE_WORDS = (
    "个 只 条 张 辆 把 位 头 匹 棵 朵 块 件 双 对 群 台 架 艘 本 支 根 盘 碗 杯 瓶 片 堆 些 名 座 栋 间 扇 盏 顶 副 颗 粒 "
    "串 束 列 部 枚 道 处 套 份 包 袋 盒 箱 罐 桶 层 排 行 种 点 株 尾 口 只只 幅 面".split()
)
# 穿/戴 clauses: "穿白衣服的人" → "person in white clothes", "戴帽子的人" → "person wearing hat".
WEAR_WORDS = {
    **dict.fromkeys("穿 穿着 身穿 穿了 穿上".split(), "in"),
    **dict.fromkeys("戴 戴着 戴了 佩戴 戴上".split(), "wearing"),
}
WITH_WORDS = {
    **dict.fromkeys("有 带 带有 带着 长着 拥有 具有 附有 装有 有着".split(), "with"),
    **dict.fromkeys("没有 没 没戴 没穿 没带 不带 无".split(), "without"),
}
# A postposition after a noun makes a relation: "桌子上的杯子" → "cup on table".
POSTPOSITIONS = {
    **dict.fromkeys("上 上面 上边 之上 顶上".split(), "on"),
    **dict.fromkeys("上方".split(), "above"),
    **dict.fromkeys("里 里面 里边 内 内部 中 之中 当中 中间".split(), "in"),
    **dict.fromkeys("下 下面 下边 底下 之下 下部 底部".split(), "under"),
    **dict.fromkeys("下方".split(), "below"),
    **dict.fromkeys("旁 旁边 边 边上 附近 身边 身旁 一旁 侧面".split(), "next to"),
    **dict.fromkeys("前 前面 前边 前方".split(), "in front of"),
    **dict.fromkeys("后 后面 后边 后方 背后 后头".split(), "behind"),
    **dict.fromkeys("左边 左侧 左面 左方".split(), "left of"),
    **dict.fromkeys("右边 右侧 右面 右方".split(), "right of"),
    **dict.fromkeys("之间".split(), "between"),
    **dict.fromkeys("周围 四周 周边".split(), "around"),
    **dict.fromkeys("对面".split(), "across from"),
    **dict.fromkeys("外 外面 外边 之外".split(), "outside"),
}
PREPOSITIONS = frozenset("在 位于 处于 放在 于 从 朝 向 往 到".split())
CONJUNCTIONS = {**dict.fromkeys("和 与 跟 及 以及 还有 和和".split(), "and"), **dict.fromkeys("或 或者".split(), "or")}


def quantity_words() -> frozenset[str]:
    """Number + measure word pairs ("一只", "两辆", "这些") that are dropped."""
    return frozenset(n + m for n in NUMBERS + "这那" for m in MEASURE_WORDS)


def grammar_words() -> frozenset[str]:
    return frozenset(SKIP_WORDS | quantity_words() | set(MEASURE_WORDS) | set(WEAR_WORDS) | set(WITH_WORDS) | set(POSTPOSITIONS)
                     | PREPOSITIONS | set(CONJUNCTIONS))
