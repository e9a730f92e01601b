"""Property tests (Hypothesis) for the parsers that take user input: only documented exceptions escape.

* `parse_prompts`: a list of non-empty, trimmed, distinct prompts within the limits, or `InputError`.
* `load_image`: an ``(H, W, 3)`` uint8 RGB array within the pixel limit, or `InputError` /
  `InputTooLargeError`, for arbitrary bytes and for truncated or bit-flipped files of every format.
* `LexiconTranslator`: a `Translation` whose query holds no CJK, or `InputError`.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from sam3studio.errors import InputError, InputTooLargeError
from sam3studio.io.images import load_image
from sam3studio.prompts import Translation, parse_prompts
from sam3studio.translate import LexiconTranslator, contains_cjk, load_lexicon

# Pillow warns (and goes on) about corrupt EXIF blocks and short TIFF reads in mutated files.
pytestmark = pytest.mark.filterwarnings("ignore:(Corrupt EXIF data|Truncated File Read):UserWarning")

_SETTINGS = settings(max_examples=250, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ---------------------------------------------------------------------------- prompts
_SEPARATORS = ",，、;；"
_SEPARATOR_RE = re.compile(f"[{_SEPARATORS}]")
# Separators, every kind of whitespace str.split() knows, CJK, Latin, and anything else.
_PROMPT_ALPHABET = st.one_of(
    st.sampled_from(list(_SEPARATORS)),
    st.sampled_from(list(" \t\n\r\x0b\x0c\x1c\x85\xa0\u1680\u2000\u2028\u202f\u3000")),
    st.sampled_from(list("猫狗红色的汽车人和、ｄｏｇ")),
    st.characters(codec="ascii"),
    st.characters(),  # no lone surrogates: Hypothesis leaves category Cs out by default
)
_PROMPT_TEXT = st.text(_PROMPT_ALPHABET, max_size=60)
# Huge strings: a short piece repeated, so they cost little to draw.
_HUGE_TEXT = st.builds(lambda piece, n: piece * n, st.text(_PROMPT_ALPHABET, min_size=1, max_size=6),
                       st.integers(1_000, 50_000))
_PROMPTS_INPUT = st.one_of(
    st.none(),
    _PROMPT_TEXT,
    _HUGE_TEXT,
    st.lists(st.one_of(_PROMPT_TEXT, _HUGE_TEXT), max_size=40),
    st.lists(_PROMPT_TEXT, max_size=5).map(tuple),
    st.lists(st.one_of(_PROMPT_TEXT, st.integers(), st.none(), st.binary(max_size=4)), min_size=1, max_size=4),
    st.binary(max_size=8),
    st.integers(),
)


@pytest.mark.slow
@_SETTINGS
@given(prompts=_PROMPTS_INPUT, max_prompts=st.integers(1, 64), max_chars=st.integers(1, 300))
def test_parse_prompts_returns_clean_prompts_or_raises_input_error(prompts, max_prompts, max_chars):
    try:
        out = parse_prompts(prompts, max_prompts=max_prompts, max_chars=max_chars)
    except InputError as exc:
        assert str(exc)
        return
    assert isinstance(out, list) and 1 <= len(out) <= max_prompts
    assert len(set(out)) == len(out)
    for prompt in out:
        assert isinstance(prompt, str) and prompt
        assert prompt == prompt.strip() and "  " not in prompt and len(prompt) <= max_chars
        assert not _SEPARATOR_RE.search(prompt)
    joined = " ".join((prompts,) if isinstance(prompts, str) else prompts)
    assert all(word in joined for prompt in out for word in prompt.split())


# ---------------------------------------------------------------------------- images
_MAX_PIXELS = 200_000  # bounds what a mutated header may make the decoder allocate
_MAX_BYTES = 1 << 20


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _seed_images() -> list[bytes]:
    rng = np.random.default_rng(1)
    rgb = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 256, (10, 9, 4), dtype=np.uint8))
    gray = rgb.convert("L")
    pal = rgb.convert("P")
    g16 = Image.fromarray(rng.integers(0, 65536, (8, 8), dtype=np.uint16))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate
    frames = [rgb.convert("P"), gray.convert("P")]
    return [
        _encode(rgb, "PNG"), _encode(rgba, "PNG"), _encode(pal, "PNG", transparency=0), _encode(g16, "PNG"),
        _encode(rgb, "JPEG", quality=80, exif=exif.tobytes()), _encode(rgb, "JPEG", progressive=True),
        _encode(rgb.convert("CMYK"), "JPEG"), _encode(gray, "JPEG"),
        _encode(rgb, "WEBP", quality=80), _encode(rgba, "WEBP", lossless=True),
        _encode(frames[0], "GIF", save_all=True, append_images=frames[1:]), _encode(gray, "GIF"),
        _encode(rgb, "TIFF"), _encode(rgb, "TIFF", compression="tiff_lzw"), _encode(rgb.convert("1"), "TIFF"),
        _encode(rgb.convert("CMYK"), "TIFF"), _encode(g16, "TIFF"),
        _encode(rgb, "BMP"), _encode(pal, "BMP"), _encode(rgb.convert("1"), "BMP"),
    ]


_SEEDS = _seed_images()


@st.composite
def _mutated_images(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "set", "insert", "delete"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if op == "truncate":
            del data[pos:]
        elif op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":  # header fields: 0x00 / 0xff make sizes and counts extreme
            data[pos] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, draw(st.integers(0, 255))]))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[pos:pos + draw(st.integers(1, 8))]
    return bytes(data)


_MAGICS = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"GIF89a", b"II*\x00", b"MM\x00*",
           b"BM", b"P6\n", b"%PDF-", b"\x00\x00\x01\x00"]
_IMAGE_BYTES = st.one_of(
    st.binary(max_size=2048),
    st.builds(lambda magic, rest: magic + rest, st.sampled_from(_MAGICS), st.binary(max_size=512)),
    _mutated_images(),
)


def _check_image_result(data) -> None:
    try:
        arr = load_image(data, max_pixels=_MAX_PIXELS, max_bytes=_MAX_BYTES)
    except InputError as exc:  # InputTooLargeError included
        assert str(exc)
        return
    assert isinstance(arr, np.ndarray) and arr.dtype == np.uint8
    assert arr.ndim == 3 and arr.shape[2] == 3 and arr.shape[0] >= 1 and arr.shape[1] >= 1
    assert arr.shape[0] * arr.shape[1] <= _MAX_PIXELS


def test_seed_images_all_decode():
    """The mutation seeds are valid images in every allowed format (else the fuzzing below is vacuous)."""
    for data in _SEEDS:
        arr = load_image(data)
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3


@pytest.mark.slow
@settings(_SETTINGS, max_examples=500)  # about 1 ms each
@given(data=_IMAGE_BYTES)
def test_load_image_on_arbitrary_and_mutated_bytes(data):
    _check_image_result(data)


@pytest.mark.slow
@settings(_SETTINGS, max_examples=60)
@given(data=_mutated_images(), wrap=st.sampled_from(["bytes", "bytearray", "memoryview", "file"]))
def test_load_image_input_types_agree(data, wrap):
    source = {"bytes": data, "bytearray": bytearray(data), "memoryview": memoryview(data),
              "file": io.BytesIO(data)}[wrap]
    _check_image_result(source)


@settings(_SETTINGS, max_examples=50)
@given(width=st.integers(1, 1200), height=st.integers(1, 1200))
def test_load_image_pixel_limit_is_input_too_large(width, height):
    # A valid header that claims more pixels than allowed: refused before decoding, as InputTooLargeError.
    data = _encode(Image.new("L", (width, height)), "PNG")
    assume(width * height != _MAX_PIXELS)
    if width * height > _MAX_PIXELS:
        with pytest.raises(InputTooLargeError):
            load_image(data, max_pixels=_MAX_PIXELS)
    else:
        assert load_image(data, max_pixels=_MAX_PIXELS).shape == (height, width, 3)


# ---------------------------------------------------------------------------- translator
_TRANSLATOR = LexiconTranslator()
_WORDS = sorted(load_lexicon())[::7] + ["的", "和", "或", "穿", "戴", "带", "在", "上面", "没有", "个", "3", "两"]
_ZH_TEXT = st.lists(
    st.one_of(
        st.sampled_from(_WORDS),
        st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),  # any Han character
        st.sampled_from(list("，、；,; \u3000ＡＢｃ１２")),
        st.text(st.characters(codec="ascii"), max_size=4),
        st.characters(),  # no lone surrogates (category Cs): see the regression test below
    ),
    max_size=12,
).map("".join)


@pytest.mark.slow
@_SETTINGS
@given(text=st.one_of(_ZH_TEXT, st.text(max_size=40)))
def test_lexicon_translator_returns_translation_or_input_error(text):
    try:
        out = _TRANSLATOR(text)
    except InputError as exc:
        assert contains_cjk(text) and str(exc)  # English passes through; only Chinese can fail
        return
    assert isinstance(out, Translation) and isinstance(out.query, str)
    assert isinstance(out.unknown, tuple) and all(isinstance(w, str) and w for w in out.unknown)
    if contains_cjk(text):
        assert out.query and out.query == " ".join(out.query.split()) and not contains_cjk(out.query)
    else:
        assert out == Translation(query=text)


def test_lexicon_translator_lone_surrogate_is_input_error():
    with pytest.raises(InputError):
        _TRANSLATOR("猫\ud800")


# ---------------------------------------------------------------------------- COCO RLE (a /refine request's mask)
@_SETTINGS
@given(counts=st.one_of(st.text(st.characters(min_codepoint=32, max_codepoint=130), max_size=40),
                        st.binary(max_size=40),
                        st.lists(st.integers(-5, 3000), max_size=12)),
       height=st.integers(0, 60), width=st.integers(0, 60))
def test_rle_to_mask_decodes_or_raises_value_error_never_crashes(counts, height, width):
    """Arbitrary counts: a mask of the declared size, or ValueError. (Unchecked, pycocotools aborts the process.)"""
    from sam3studio.results import rle_to_mask

    try:
        mask = rle_to_mask({"size": [height, width], "counts": counts})
    except ValueError:
        return
    assert mask.shape == (height, width) and mask.dtype == bool


@_SETTINGS
@given(mask=st.integers(1, 40).flatmap(lambda h: st.integers(1, 40).flatmap(
    lambda w: st.lists(st.booleans(), min_size=h * w, max_size=h * w).map(lambda v: np.array(v).reshape(h, w)))))
def test_rle_round_trip_through_the_checked_decoder(mask):
    from sam3studio.results import mask_to_rle, rle_to_mask

    rle = mask_to_rle(mask)
    np.testing.assert_array_equal(rle_to_mask(rle, shape=mask.shape), mask)
    with pytest.raises(ValueError, match="the mask is"):
        rle_to_mask(rle, shape=(mask.shape[0] + 1, mask.shape[1]))


@pytest.mark.parametrize("counts", ["0" * 7 + "1", "1" * 5000, "PP", "0ol?ol?", "0" * 7 + "~"])
def test_malformed_rle_strings_are_refused(counts):
    from sam3studio.results import rle_to_mask

    with pytest.raises(ValueError, match="RLE"):
        rle_to_mask({"size": [300, 451], "counts": counts}, shape=(300, 451))


def test_a_string_pycocotools_misreads_is_decoded_by_the_format():
    """pycocotools' 32-bit parser reads this as runs covering twice the mask (and would overrun its buffer);
    by the format it is runs [0, 135300, 0, 0]: the whole 451x300 mask."""
    from sam3studio.results import rle_to_mask

    assert rle_to_mask({"size": [300, 451], "counts": "0TTT40lkkkooO"}, shape=(300, 451)).all()


def _reference_counts(data: bytes) -> list[int] | None:
    """pycocotools' rleFrString written plainly, with Python's unbounded ints (None: malformed)."""
    counts: list[int] = []
    p = 0
    while p < len(data):
        x = k = 0
        more = True
        while more:
            if p >= len(data) or not 0 <= data[p] - 48 < 64 or k >= 7:
                return None
            c = data[p] - 48
            x |= (c & 0x1F) << (5 * k)
            more, p, k = bool(c & 0x20), p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        counts.append(x + counts[-2] if len(counts) > 2 else x)
    return None if any(v < 0 for v in counts) else counts


@_SETTINGS
@given(data=st.binary(max_size=30) | st.lists(st.integers(44, 114), max_size=30).map(bytes))
def test_vectorised_rle_reader_matches_the_plain_one(data):
    from sam3studio.results import _compressed_counts

    try:
        got = [int(v) for v in _compressed_counts(data, 10**15)]
    except ValueError:
        got = None
    assert got == _reference_counts(data)
