"""Make the CJK fallback font shipped in src/sam3studio/assets/fonts/ (a subset of Noto Sans CJK SC Regular).

The web page (when the browser has no CJK font) and the overlay labels of `sam3studio.render` use it. It keeps
ASCII, Latin-1, general punctuation, arrows, CJK punctuation, full-width forms, the 6,763 hanzi of GB 2312
(the characters of everyday simplified Chinese) and every character of the UI's Chinese texts: about 2.9 MB,
against 19 MB for the collection it comes from.

The source is Debian's fonts-noto-cjk package (SIL Open Font License 1.1, which allows subsetting and
shipping with software; the licence travels with the font as OFL.txt):

    apt-get download fonts-noto-cjk && dpkg-deb -x fonts-noto-cjk_*.deb noto
    python tools/subset_cjk_font.py noto/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc

fontTools (a dependency of matplotlib) does the subsetting.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTCollection

from sam3studio.render import CJK_FONT
from sam3studio.ui.i18n import TEXTS

SC_FACE = "Noto Sans CJK SC"


def gb2312_hanzi() -> set[int]:
    """The hanzi of GB 2312 (rows 16-87 of its 94 x 94 table)."""
    chars = set()
    for hi in range(0xB0, 0xF8):
        for lo in range(0xA1, 0xFF):
            try:
                chars.add(ord(bytes([hi, lo]).decode("gb2312")))
            except UnicodeDecodeError:
                pass
    return chars


def code_points() -> set[int]:
    ranges = [(0x20, 0x7F), (0xA0, 0x100), (0x2000, 0x2070), (0x2190, 0x2200), (0x3000, 0x3040), (0xFF00, 0xFFF0)]
    chars = {c for lo, hi in ranges for c in range(lo, hi)} | gb2312_hanzi()
    return chars | {ord(c) for c in json.dumps(TEXTS["zh"], ensure_ascii=False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("collection", type=Path, help="NotoSansCJK-Regular.ttc from Debian's fonts-noto-cjk")
    parser.add_argument("--out", type=Path, default=CJK_FONT)
    args = parser.parse_args()
    fonts = TTCollection(str(args.collection)).fonts
    font = next(f for f in fonts if f["name"].getDebugName(1) == SC_FACE)
    options = subset.Options()
    options.layout_features = ["*"]
    options.name_IDs = ["*"]
    options.name_languages = ["*"]
    options.notdef_outline = True
    options.hinting = False
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=sorted(code_points()))
    subsetter.subset(font)
    font.save(str(args.out))
    print(f"{args.out}: {args.out.stat().st_size / 1e6:.1f} MB, {len(font.getBestCmap())} characters")


if __name__ == "__main__":
    main()
