"""Tests for `sam3studio.io.images.load_image`: every input type, colour mode, EXIF orientation,
format allow-list, size limits, decompression bombs and corrupt input."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from sam3studio.errors import InputError, InputTooLargeError
from sam3studio.io.images import IMAGE_SUFFIXES, is_image_path, load_image

# --------------------------------------------------------------------------- helpers


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def blocks(mode: str, colours: list, block: int = 8) -> Image.Image:
    """A ``block`` x ``block*len(colours)`` image: one flat square per colour (JPEG-friendly)."""
    if mode == "I;16":  # Pillow's paste() mangles I;16 values >= 32768, so build from an array
        return Image.fromarray(np.repeat(np.array(colours, np.uint16), block)[None].repeat(block, axis=0))
    img = Image.new(mode, (block * len(colours), block))
    for i, colour in enumerate(colours):
        img.paste(colour, (i * block, 0, (i + 1) * block, block))
    return img


def block_centres(rgb: np.ndarray, n: int, block: int = 8) -> np.ndarray:
    """The RGB value at the centre of each of ``n`` blocks, as an ``(n, 3)`` int array."""
    c = block // 2
    return np.array([rgb[c, i * block + c] for i in range(n)], dtype=int)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


# A fixed, non-square RGB picture with every byte value mixed in.
PICTURE = np.random.default_rng(1234).integers(0, 256, size=(12, 17, 3), dtype=np.uint8)
PICTURE_PNG = encode(Image.fromarray(PICTURE), "PNG")


@pytest.fixture(scope="module")
def bomb_png() -> bytes:
    """A valid 1-bit 20000x20000 PNG (400 megapixels) that is under 50 kB on disk."""
    w = h = 20_000
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)  # 1-bit grayscale
    idat = zlib.compress(bytes((1 + w // 8) * h), 9)  # every row: filter byte 0 + zero bits
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    assert len(data) < 100_000
    return data


# --------------------------------------------------------------------------- input types


def _write(tmp_path: Path, data: bytes, name: str = "picture.png") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


INPUT_KINDS = {
    "str_path": lambda tmp: str(_write(tmp, PICTURE_PNG)),
    "pathlib_path": lambda tmp: _write(tmp, PICTURE_PNG),
    "bytes": lambda tmp: PICTURE_PNG,
    "bytearray": lambda tmp: bytearray(PICTURE_PNG),
    "memoryview": lambda tmp: memoryview(PICTURE_PNG),
    "bytesio": lambda tmp: io.BytesIO(PICTURE_PNG),
    "open_file_rb": lambda tmp: open(_write(tmp, PICTURE_PNG), "rb"),
    "pil_rgb": lambda tmp: Image.fromarray(PICTURE),
    "pil_lazy_open": lambda tmp: Image.open(io.BytesIO(PICTURE_PNG)),
    "pil_rgba_opaque": lambda tmp: Image.fromarray(PICTURE).convert("RGBA"),
    "array_hw3": lambda tmp: PICTURE.copy(),
    "array_hw3_noncontiguous": lambda tmp: np.asfortranarray(PICTURE),
    "array_hw4_opaque": lambda tmp: np.dstack([PICTURE, np.full(PICTURE.shape[:2], 255, np.uint8)]),
    "array_float64_unit": lambda tmp: PICTURE.astype(np.float64) / 255.0,
    "array_float32_unit": lambda tmp: PICTURE.astype(np.float32) / 255.0,
    "array_float64_0_255": lambda tmp: PICTURE.astype(np.float64),
    "array_int64": lambda tmp: PICTURE.astype(np.int64),
}


@pytest.mark.parametrize("kind", list(INPUT_KINDS))
def test_every_input_type_gives_the_same_rgb(kind, tmp_path):
    source = INPUT_KINDS[kind](tmp_path)
    try:
        out = load_image(source)
    finally:
        if hasattr(source, "close") and not isinstance(source, Image.Image):
            source.close()
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.uint8
    assert out.shape == (12, 17, 3)
    np.testing.assert_array_equal(out, PICTURE)


GRAY = np.random.default_rng(7).integers(0, 256, size=(9, 14), dtype=np.uint8)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: GRAY.copy(), id="array_hw"),
        pytest.param(lambda: GRAY.astype(np.float64) / 255.0, id="array_hw_float"),
        pytest.param(lambda: Image.fromarray(GRAY, mode="L"), id="pil_L"),
        pytest.param(lambda: encode(Image.fromarray(GRAY, mode="L"), "PNG"), id="png_L"),
        pytest.param(lambda: (GRAY.astype(np.uint16) * 257), id="array_hw_uint16"),
        pytest.param(lambda: encode(Image.fromarray(GRAY.astype(np.uint16) * 257), "PNG"), id="png_I16"),
    ],
)
def test_grayscale_inputs_replicate_to_three_channels(make):
    out = load_image(make())
    assert out.shape == (9, 14, 3) and out.dtype == np.uint8
    for ch in range(3):
        np.testing.assert_array_equal(out[..., ch], GRAY)


def test_rgba_array_composites_on_white_like_an_rgba_file():
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., :3] = (10, 200, 30)
    rgba[:, :2, 3] = 255  # opaque
    rgba[:, 2:4, 3] = 0  # fully transparent: must read as white, not the hidden colour
    rgba[:, 4:, 3] = 128  # half
    from_array = load_image(rgba)
    from_file = load_image(encode(Image.fromarray(rgba, mode="RGBA"), "PNG"))
    np.testing.assert_array_equal(from_array[:, :2], np.broadcast_to([10, 200, 30], (4, 2, 3)))
    np.testing.assert_array_equal(from_array[:, 2:4], np.full((4, 2, 3), 255))
    assert np.abs(from_array.astype(int) - from_file.astype(int)).max() <= 1
    np.testing.assert_allclose(from_array[0, 4], [132, 228, 142], atol=1)


def test_float_arrays_nan_and_out_of_range_are_clipped():
    arr = np.array([[[np.nan, -3.0, 2.0], [0.0, 0.5, 1.0]]], np.float64)  # max > 1: read as 0..255
    np.testing.assert_array_equal(load_image(arr), [[[0, 0, 2], [0, 0, 1]]])
    unit = np.array([[[0.0, 0.2, 1.0]]], np.float32)
    np.testing.assert_array_equal(load_image(unit), [[[0, 51, 255]]])


# --------------------------------------------------------------------------- colour modes

WHITE = (255, 255, 255)

COLOUR_CASES = [
    # id, build image, format, save kwargs, expected RGB per block, tolerance
    ("RGB_png", lambda: blocks("RGB", [(255, 0, 0), (0, 255, 0), (0, 0, 255), (17, 99, 201)]), "PNG", {},
     [(255, 0, 0), (0, 255, 0), (0, 0, 255), (17, 99, 201)], 0),
    ("RGB_jpeg", lambda: blocks("RGB", [(255, 0, 0), (0, 255, 0), (0, 0, 255), (128, 128, 128)], 16), "JPEG",
     {"quality": 95}, [(255, 0, 0), (0, 255, 0), (0, 0, 255), (128, 128, 128)], 12),
    ("RGB_bmp", lambda: blocks("RGB", [(1, 2, 3), (250, 128, 7)]), "BMP", {}, [(1, 2, 3), (250, 128, 7)], 0),
    ("RGB_webp_lossless", lambda: blocks("RGB", [(1, 2, 3), (250, 128, 7)]), "WEBP", {"lossless": True},
     [(1, 2, 3), (250, 128, 7)], 0),
    ("RGB_tiff", lambda: blocks("RGB", [(1, 2, 3), (250, 128, 7)]), "TIFF", {}, [(1, 2, 3), (250, 128, 7)], 0),
    ("L_png", lambda: blocks("L", [0, 77, 200, 255]), "PNG", {},
     [(0, 0, 0), (77, 77, 77), (200, 200, 200), WHITE], 0),
    ("L_jpeg", lambda: blocks("L", [0, 128, 255], 16), "JPEG", {"quality": 95},
     [(0, 0, 0), (128, 128, 128), WHITE], 4),
    ("1bit_png", lambda: blocks("1", [0, 1]), "PNG", {}, [(0, 0, 0), WHITE], 0),
    ("CMYK_jpeg", lambda: blocks("CMYK", [(0, 255, 255, 0), (0, 0, 0, 0), (0, 0, 0, 255), (255, 0, 255, 0)], 16),
     "JPEG", {"quality": 95}, [(255, 0, 0), WHITE, (0, 0, 0), (0, 255, 0)], 12),
    ("LA_png", lambda: blocks("LA", [(100, 255), (100, 0), (0, 0), (0, 255)]), "PNG", {},
     [(100, 100, 100), WHITE, WHITE, (0, 0, 0)], 0),
    ("RGBA_png", lambda: blocks("RGBA", [(10, 20, 30, 255), (10, 20, 30, 0), (0, 0, 0, 0), (0, 0, 0, 128)]), "PNG", {},
     [(10, 20, 30), WHITE, WHITE, (127, 127, 127)], 1),
    ("RGBA_webp_lossless", lambda: blocks("RGBA", [(10, 20, 30, 255), (10, 20, 30, 0)]), "WEBP", {"lossless": True},
     [(10, 20, 30), WHITE], 0),
    ("I16_png", lambda: blocks("I;16", [0, 32768, 65535, 257 * 100]), "PNG", {},
     [(0, 0, 0), (128, 128, 128), WHITE, (100, 100, 100)], 0),
    ("I16_tiff", lambda: blocks("I;16", [0, 32768, 65535]), "TIFF", {}, [(0, 0, 0), (128, 128, 128), WHITE], 0),
    ("I32_tiff", lambda: blocks("I", [0, 32768, 65535]), "TIFF", {}, [(0, 0, 0), (128, 128, 128), WHITE], 0),
    ("F_tiff", lambda: blocks("F", [0.0, 0.5, 1.0]), "TIFF", {}, [(0, 0, 0), (128, 128, 128), WHITE], 0),
]


def _palette_with_transparency() -> tuple[Image.Image, dict]:
    img = Image.new("P", (24, 8), 0)
    img.putpalette([10, 20, 30, 200, 0, 0, 0, 0, 250] + [0] * (256 * 3 - 9))
    img.paste(1, (8, 0, 16, 8))
    img.paste(2, (16, 0, 24, 8))
    return img, {"transparency": 0}


def _palette_opaque() -> tuple[Image.Image, dict]:
    img, _ = _palette_with_transparency()
    return img, {}


COLOUR_CASES += [
    ("P_transparent_png", _palette_with_transparency, "PNG", None, [WHITE, (200, 0, 0), (0, 0, 250)], 0),
    ("P_opaque_png", _palette_opaque, "PNG", None, [(10, 20, 30), (200, 0, 0), (0, 0, 250)], 0),
    ("P_transparent_gif", _palette_with_transparency, "GIF", None, [WHITE, (200, 0, 0), (0, 0, 250)], 0),
]


@pytest.mark.parametrize(("build", "fmt", "kwargs", "expected", "tol"),
                         [pytest.param(*case[1:], id=case[0]) for case in COLOUR_CASES])
def test_colour_modes_decode_to_8bit_rgb(build, fmt, kwargs, expected, tol):
    built = build()
    img, kwargs = built if kwargs is None else (built, kwargs)
    data = encode(img, fmt, **kwargs)
    with Image.open(io.BytesIO(data)) as check:
        assert check.format == fmt  # the file really is what the case claims
    out = load_image(data)
    assert out.dtype == np.uint8
    assert out.shape == (img.height, img.width, 3)
    got = block_centres(out, len(expected), img.height)
    assert np.abs(got - np.array(expected)).max() <= tol, f"got {got.tolist()}, expected {expected}"


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_16bit_is_scaled_not_clipped_across_the_full_range(mode):
    values = np.arange(0, 65536, 257, dtype=np.uint16).reshape(16, 16)  # exactly 0..255 after scaling
    img = Image.fromarray(values) if mode == "I;16" else Image.fromarray(values.astype(np.int32))
    assert img.mode == mode
    out = load_image(encode(img, "PNG" if mode == "I;16" else "TIFF"))
    np.testing.assert_array_equal(out[..., 0], np.arange(256).reshape(16, 16))
    np.testing.assert_array_equal(load_image(img)[..., 1], np.arange(256).reshape(16, 16))


def test_pil_image_inputs_in_every_mode_match_file_inputs():
    for _, build, fmt, kwargs, _, _ in COLOUR_CASES:
        built = build()
        img, kwargs = built if kwargs is None else (built, kwargs)
        if fmt != "PNG":
            continue
        from_pil = load_image(Image.open(io.BytesIO(encode(img, fmt, **kwargs))))
        from_bytes = load_image(encode(img, fmt, **kwargs))
        np.testing.assert_array_equal(from_pil, from_bytes)


# --------------------------------------------------------------------------- EXIF orientation

# What each EXIF orientation does to the stored pixels to give the displayed image.
ORIENT_NUMPY = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _oriented_source() -> np.ndarray:
    """40 wide x 20 tall, gray, with a red block in the top-left and a smaller blue block top-right."""
    arr = np.full((20, 40, 3), 128, np.uint8)
    arr[0:8, 0:10] = (255, 0, 0)
    arr[0:4, 34:40] = (0, 0, 255)
    return arr


def _red_centroid(rgb: np.ndarray) -> tuple[float, float]:
    mask = (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)
    ys, xs = np.nonzero(mask)
    return float(ys.mean()), float(xs.mean())


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation, fmt, tmp_path):
    src = _oriented_source()
    exif = Image.Exif()
    exif[0x0112] = orientation
    kwargs = {"quality": 95} if fmt == "JPEG" else {}
    data = encode(Image.fromarray(src), fmt, exif=exif, **kwargs)
    with Image.open(io.BytesIO(data)) as check:
        assert check.getexif().get(0x0112) == orientation
        reference = np.asarray(ImageOps.exif_transpose(check).convert("RGB"))

    displayed_hw = (40, 20) if orientation >= 5 else (20, 40)
    expected = ORIENT_NUMPY[orientation](src)
    assert expected.shape[:2] == displayed_hw
    tol = 10 if fmt == "JPEG" else 0

    path = tmp_path / f"o{orientation}.{fmt.lower()}"
    path.write_bytes(data)
    for source in (data, path, io.BytesIO(data), Image.open(io.BytesIO(data))):
        out = load_image(source)
        assert out.shape == (*displayed_hw, 3)
        assert np.abs(out.astype(int) - reference.astype(int)).mean() <= tol
        assert np.abs(out.astype(int) - expected.astype(int)).mean() <= tol
        if fmt == "PNG":
            np.testing.assert_array_equal(out, expected)
        ey, ex = _red_centroid(expected)
        oy, ox = _red_centroid(out)
        assert abs(ey - oy) < 1.5 and abs(ex - ox) < 1.5


def test_broken_exif_orientation_value_keeps_the_image():
    exif = Image.Exif()
    exif[0x0112] = 42  # not a valid orientation
    data = encode(Image.fromarray(PICTURE), "PNG", exif=exif)
    np.testing.assert_array_equal(load_image(data), PICTURE)


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("fmt", "mode", "kwargs"),
    [
        ("ICO", "RGB", {"sizes": [(16, 16)]}),
        ("PPM", "RGB", {}),
        ("PPM", "1", {}),  # PBM
        ("PPM", "L", {}),  # PGM
        ("TGA", "RGB", {}),
        ("PCX", "RGB", {}),
        ("EPS", "RGB", {}),
    ],
)
def test_readable_but_disallowed_formats_are_refused(fmt, mode, kwargs, tmp_path):
    img = Image.new(mode, (16, 16))
    try:
        data = encode(img, fmt, **kwargs)
    except (OSError, KeyError) as exc:  # e.g. EPS needs Ghostscript to be saved
        pytest.skip(f"Pillow cannot write {fmt}: {exc}")
    with Image.open(io.BytesIO(data)) as check:
        detected = check.format
    assert detected not in {"JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "MPO"}
    for source in (data, _write(tmp_path, data, "x.bin"), io.BytesIO(data)):
        with pytest.raises(InputError, match=rf"unsupported image format '{detected}'") as info:
            load_image(source)
        assert not isinstance(info.value, InputTooLargeError)


def _frames() -> list[Image.Image]:
    return [blocks("RGB", [(255, 0, 0)] * 2), blocks("RGB", [(0, 0, 255)] * 2), blocks("RGB", [(0, 255, 0)] * 2)]


@pytest.mark.parametrize(
    ("fmt", "kwargs"),
    [("GIF", {}), ("TIFF", {}), ("WEBP", {"lossless": True}), ("PNG", {})],  # PNG: APNG
)
def test_multi_frame_files_give_the_first_frame(fmt, kwargs):
    first, *rest = _frames()
    data = encode(first, fmt, save_all=True, append_images=rest, **kwargs)
    with Image.open(io.BytesIO(data)) as check:
        assert getattr(check, "n_frames", 1) == 3
    out = load_image(data)
    assert out.shape == (8, 16, 3)
    assert np.abs(out.astype(int) - np.array([255, 0, 0])).max() <= 2


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a.jpg", True), ("a.JPEG", True), ("b.png", True), ("c.Tiff", True), ("d.webp", True), ("e.gif", True),
     ("f.bmp", True), ("g.ico", False), ("h.ppm", False), ("i.txt", False), ("noext", False), ("png", False)],
)
def test_is_image_path(name, expected):
    assert is_image_path(Path(name)) is expected
    assert (Path(name).suffix.lower() in IMAGE_SUFFIXES) is expected


# --------------------------------------------------------------------------- limits


def _byte_sources(data: bytes, tmp_path: Path) -> dict:
    return {"bytes": data, "path": _write(tmp_path, data), "str": str(_write(tmp_path, data, "s.png")),
            "bytesio": io.BytesIO(data)}


@pytest.mark.parametrize("kind", ["bytes", "path", "str", "bytesio"])
def test_max_bytes_is_inclusive(kind, tmp_path):
    n = len(PICTURE_PNG)
    np.testing.assert_array_equal(load_image(_byte_sources(PICTURE_PNG, tmp_path)[kind], max_bytes=n), PICTURE)
    with pytest.raises(InputTooLargeError, match=str(n - 1)):
        load_image(_byte_sources(PICTURE_PNG, tmp_path)[kind], max_bytes=n - 1)


def test_file_object_is_read_no_further_than_the_limit():
    asked = []

    class CountingReader(io.BytesIO):
        def read(self, size=-1):
            asked.append(size)
            return super().read(size)

    reader = CountingReader(PICTURE_PNG + bytes(10_000))
    with pytest.raises(InputTooLargeError):
        load_image(reader, max_bytes=len(PICTURE_PNG))
    assert asked == [len(PICTURE_PNG) + 1]


SQUARE = np.random.default_rng(3).integers(0, 256, size=(100, 100, 3), dtype=np.uint8)
SQUARE_PNG = encode(Image.fromarray(SQUARE), "PNG")

PIXEL_SOURCES = {
    "bytes": lambda tmp: SQUARE_PNG,
    "path": lambda tmp: _write(tmp, SQUARE_PNG),
    "bytesio": lambda tmp: io.BytesIO(SQUARE_PNG),
    "jpeg_bytes": lambda tmp: encode(Image.fromarray(SQUARE), "JPEG"),
    "pil": lambda tmp: Image.fromarray(SQUARE),
    "pil_lazy": lambda tmp: Image.open(io.BytesIO(SQUARE_PNG)),
    "array_hw3": lambda tmp: SQUARE,
    "array_hw": lambda tmp: SQUARE[..., 0],
    "array_hw4": lambda tmp: np.dstack([SQUARE, SQUARE[..., :1]]),
}


@pytest.mark.parametrize("kind", list(PIXEL_SOURCES))
def test_max_pixels_is_inclusive(kind, tmp_path):
    out = load_image(PIXEL_SOURCES[kind](tmp_path), max_pixels=10_000)
    assert out.shape == (100, 100, 3)
    with pytest.raises(InputTooLargeError, match="10000|limit") as info:
        load_image(PIXEL_SOURCES[kind](tmp_path), max_pixels=9_999)
    assert "9999" in str(info.value)


def test_max_pixels_counts_displayed_not_stored_shape_for_non_square():
    img = Image.fromarray(np.zeros((10, 30, 3), np.uint8))
    assert load_image(encode(img, "PNG"), max_pixels=300).shape == (10, 30, 3)
    with pytest.raises(InputTooLargeError):
        load_image(encode(img, "PNG"), max_pixels=299)


@pytest.mark.parametrize("max_pixels", [10_000, 50_000_000, 300_000_000])  # error path, default, warning path
@pytest.mark.parametrize("kind", ["bytes", "path", "bytesio"])
def test_decompression_bomb_is_refused_before_decoding(bomb_png, max_pixels, kind, tmp_path, monkeypatch):
    def no_decoding(self, *args, **kwargs):
        raise AssertionError("the bomb's pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    source = {"bytes": bomb_png, "path": _write(tmp_path, bomb_png, "bomb.png"), "bytesio": io.BytesIO(bomb_png)}[kind]
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(InputTooLargeError, match="too many pixels|over the limit"):
        load_image(source, max_pixels=max_pixels)
    assert Image.MAX_IMAGE_PIXELS == before  # the global guard is restored


def test_bomb_header_is_really_a_20000_square_png(bomb_png, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with Image.open(io.BytesIO(bomb_png)) as img:  # header only; nothing decoded
        pass
    assert img.format == "PNG" and img.size == (20_000, 20_000) and img.mode == "1"


def test_pil_bomb_is_refused_by_size_without_decoding(bomb_png, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    img = Image.open(io.BytesIO(bomb_png))  # lazy: nothing decoded yet
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded"))
    with pytest.raises(InputTooLargeError, match="400000000"):
        load_image(img)


# --------------------------------------------------------------------------- corrupt input


def _truncated(fmt: str) -> bytes:
    data = encode(Image.fromarray(np.random.default_rng(5).integers(0, 256, (64, 64, 3), dtype=np.uint8)), fmt)
    return data[: len(data) // 2]


CORRUPT_MSG = "corrupt or truncated|not a readable image"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_truncated_files_are_refused(fmt, tmp_path):
    data = _truncated(fmt)
    for source in (data, _write(tmp_path, data, "t.img"), io.BytesIO(data)):
        with pytest.raises(InputError, match=CORRUPT_MSG):
            load_image(source)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_a_process_wide_load_truncated_is_left_alone_and_reported(monkeypatch, caplog):
    """Another library may turn Pillow's LOAD_TRUNCATED_IMAGES on for the whole process. Switching it off
    around each decode is not thread-safe, so it is left as it is and a warning says what it means."""
    import sam3studio.io.images as images

    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    monkeypatch.setattr(images, "_warned_truncated", False)
    with caplog.at_level("WARNING", logger="sam3studio.io.images"):
        load_image(_truncated("PNG"))
        load_image(_truncated("JPEG"))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert "LOAD_TRUNCATED_IMAGES" in caplog.records[0].getMessage()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_lazy_pil_image_is_refused(fmt):
    img = Image.open(io.BytesIO(_truncated(fmt)))
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_image(img)


def test_decoding_never_touches_pillow_globals_or_warning_filters(bomb_png, monkeypatch):
    """Many threads decode (good files, bombs, truncated files) while one watches Pillow's process-wide settings:
    they never change, and no call enters warnings.catch_warnings (neither is thread-safe)."""
    import threading
    import warnings

    entered: list[int] = []
    real_catch = warnings.catch_warnings
    monkeypatch.setattr(warnings, "catch_warnings", lambda *a, **k: (entered.append(1), real_catch(*a, **k))[1])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 123_456_789)
    good = encode(Image.fromarray(np.zeros((32, 48, 3), np.uint8)), "PNG")
    inputs = [good, bomb_png, _truncated("JPEG"), _truncated("PNG")] * 25
    seen: set = set()
    done = threading.Event()

    def watch():
        while not done.is_set():
            seen.add((Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES))

    errors: list[BaseException] = []

    def decode(items):
        for data in items:
            try:
                load_image(data, max_pixels=1_000_000)
            except InputError:
                pass
            except BaseException as exc:  # would end the thread silently
                errors.append(exc)

    watcher = threading.Thread(target=watch)
    workers = [threading.Thread(target=decode, args=(inputs[i::4],)) for i in range(4)]
    watcher.start()
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    done.set()
    watcher.join(10)
    assert errors == [] and entered == []
    assert seen == {(123_456_789, False)}


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(np.random.default_rng(9).bytes(2048), id="random"),
        pytest.param(b"\x00" * 64, id="zeros"),
        pytest.param(b"hello, I am a text file\n", id="text"),
        pytest.param(b"\x89PNG\r\n\x1a\n", id="png_signature_only"),
        pytest.param(b"\xff\xd8\xff", id="jpeg_soi_only"),
        pytest.param(b"GIF89a", id="gif_magic_only"),
    ],
)
def test_garbage_bytes_are_refused(data, tmp_path):
    for source in (data, _write(tmp_path, data, "g.png"), io.BytesIO(data)):
        with pytest.raises(InputError, match=CORRUPT_MSG):
            load_image(source)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the broken TIFF tags
def test_mutated_files_only_ever_raise_input_error():
    rng = np.random.default_rng(11)
    originals = [encode(Image.fromarray(PICTURE), fmt) for fmt in ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")]
    accepted = 0
    for data in originals:
        for _ in range(40):
            buf = bytearray(data)
            for pos in rng.integers(0, len(buf), size=rng.integers(1, 5)):
                buf[pos] = int(rng.integers(0, 256))
            if rng.random() < 0.3:
                buf = buf[: int(rng.integers(1, len(buf)))]
            try:
                out = load_image(bytes(buf), max_pixels=1_000_000)
            except InputError:
                continue
            assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
            accepted += 1
    assert accepted < 40 * len(originals)


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "path", "bytesio"])
def test_empty_input(kind, tmp_path):
    source = {"bytes": b"", "bytearray": bytearray(), "path": _write(tmp_path, b"", "empty.png"),
              "bytesio": io.BytesIO()}[kind]
    with pytest.raises(InputError, match="empty"):
        load_image(source)


@pytest.mark.parametrize("make", [lambda tmp: tmp / "missing.png", lambda tmp: str(tmp / "nope" / "x.jpg"),
                                  lambda tmp: tmp], ids=["path", "str", "directory"])
def test_missing_path(make, tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_image(make(tmp_path))


@pytest.mark.parametrize("value", [5, 3.5, None, [1, 2, 3], [[0, 0, 0]], {"a": 1}, object()],
                         ids=["int", "float", "None", "list", "nested_list", "dict", "object"])
def test_unsupported_input_types(value):
    with pytest.raises(InputError, match="unsupported image input") as info:
        load_image(value)
    assert type(value).__name__ in str(info.value)


def test_text_mode_file_object_is_refused_not_taken_as_a_path(tmp_path):
    target = _write(tmp_path, PICTURE_PNG)
    # Were the text read back taken as a file name, this would load the picture at `target`.
    with pytest.raises(InputError, match="binary"):
        load_image(io.StringIO(str(target)))


@pytest.mark.parametrize(
    ("shape", "match"),
    [((4, 5, 2), "shape"), ((4, 5, 1), "shape"), ((4, 5, 5), "shape"), ((4, 5, 3, 1), "shape"), ((5,), "shape"),
     ((), "shape"), ((0, 5, 3), "empty"), ((5, 0, 3), "empty"), ((0, 5), "empty"), ((0, 0, 4), "empty")],
)
def test_bad_array_shapes(shape, match):
    with pytest.raises(InputError, match=match):
        load_image(np.zeros(shape, np.uint8))


def test_errors_are_value_errors_for_callers_that_catch_those():
    with pytest.raises(ValueError):
        load_image(b"")
    with pytest.raises(ValueError):
        load_image(PICTURE_PNG, max_bytes=1)
    assert issubclass(InputTooLargeError, InputError)
