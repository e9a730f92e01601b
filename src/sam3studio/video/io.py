"""Video input: probe before decoding, enforce limits, and decode frames one at a time with PyAV.

Sources: a video file (MP4, MOV, MKV, WebM, AVI, animated GIF: anything FFmpeg demuxes), or a folder
of frames (JPEG/PNG/WebP/..., in natural name order, at ``fps`` frames per second). Frames are decoded
as they are needed and never all held at once.

Orientation: phones store frames as the sensor saw them and say in the stream's display matrix how a
player turns them. A quarter turn (90, 180, 270 degrees) is applied to every decoded frame, so frames
are tracked, sized and drawn as a player shows them (`VideoInfo.width`/``height`` are the displayed
size, ``rotation`` the turn applied); any other rotation, or a mirrored matrix, is refused at probe time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sam3studio.errors import InputError, InputTooLargeError
from sam3studio.io.images import IMAGE_SUFFIXES, load_image

__all__ = ["VIDEO_SUFFIXES", "VideoInfo", "VideoLimits", "iter_frames", "plan_frames", "plan_video", "probe_video"]

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif", ".m4v"})
DEFAULT_FOLDER_FPS = 25.0


@dataclass(frozen=True)
class VideoLimits:
    """What a video may be at most; beyond it `probe_video` (or decoding, if the metadata lied) refuses it."""

    max_frames: int = 10_000  # frames to process (after start/end/stride)
    max_duration_s: float = 600.0
    max_pixels: int = 3840 * 2160  # per frame
    max_bytes: int = 2 * 1024**3

    def __post_init__(self) -> None:
        if min(self.max_frames, self.max_duration_s, self.max_pixels, self.max_bytes) <= 0:
            raise ValueError("video limits must be positive")


@dataclass(frozen=True)
class VideoInfo:
    path: str
    kind: str  # "file" or "folder"
    width: int
    height: int
    fps: float
    frame_count: int | None  # from the container (may be an estimate) or the folder listing
    duration_s: float | None
    codec: str | None = None
    rotation: int = 0  # counter-clockwise quarter turn applied to every decoded frame (the display matrix's)

    def to_dict(self) -> dict:
        return {"path": self.path, "kind": self.kind, "width": self.width, "height": self.height,
                "fps": round(self.fps, 4), "frame_count": self.frame_count,
                "duration_s": None if self.duration_s is None else round(self.duration_s, 4), "codec": self.codec,
                "rotation": self.rotation}


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _folder_frames(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)


def _open(path: Path):
    import av

    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path.name}: not a readable video ({_av_reason(exc)})") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"{path.name}: the file has no video stream")
    return container


def _av_reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _display_rotation(frame, name: str) -> int:
    """The counter-clockwise quarter turn a player applies to ``frame`` (0, 90, 180 or 270), from its display
    matrix; `InputError` for a rotation that is not a quarter turn or a mirrored picture."""
    import struct

    matrix = frame.side_data.get("DISPLAYMATRIX") if frame.side_data else None
    if matrix is None:
        return 0
    a, b, _, c, d = struct.unpack("9i", bytes(matrix))[:5]
    if a * d - b * c < 0:
        raise InputError(f"{name}: the video's display matrix mirrors the picture; only rotations by quarter turns are "
                         "supported: re-encode it upright (e.g. `ffmpeg -i in.mp4 out.mp4` applies it)")
    degrees = float(frame.rotation or 0) % 360
    turn = round(degrees / 90) % 4 * 90
    if abs(degrees - turn) > 0.5 and abs(degrees - turn - 360) > 0.5:
        raise InputError(f"{name}: the video is to be shown rotated by {degrees:g} degrees; only quarter turns are "
                         "supported: re-encode it upright (e.g. `ffmpeg -i in.mp4 out.mp4` applies the rotation)")
    return turn


def _first_frame_rotation(container, stream, name: str) -> int:
    import av

    try:
        frame = next(iter(container.decode(stream)), None)
    except (av.FFmpegError, ValueError) as exc:
        raise InputError(f"{name}: the video could not be decoded ({_av_reason(exc)})") from None
    if frame is None:
        raise InputError(f"{name}: the video has no decodable frames")
    return _display_rotation(frame, name)


def probe_video(source: str | Path, limits: VideoLimits = VideoLimits(), fps: float = DEFAULT_FOLDER_FPS) -> VideoInfo:
    """Read size, frame rate, frame count and duration without decoding frames; enforce ``limits``.

    Raises `InputError` for a missing, unreadable or malformed source and `InputTooLargeError` beyond
    the limits (bytes, pixels per frame, duration).
    """
    path = Path(source)
    if path.is_dir():
        frames = _folder_frames(path)
        if not frames:
            raise InputError(f"{path}: the folder has no image frames ({', '.join(sorted(IMAGE_SUFFIXES))})")
        first = load_image(frames[0], max_pixels=limits.max_pixels)
        h, w = first.shape[:2]
        info = VideoInfo(str(path), "folder", w, h, fps, len(frames), len(frames) / fps)
    elif path.is_file():
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise InputTooLargeError(f"{path.name} is {size} bytes; the limit is {limits.max_bytes}")
        if size == 0:
            raise InputError(f"{path.name} is empty")
        container = _open(path)
        try:
            stream = container.streams.video[0]
            ctx = stream.codec_context
            w, h = int(ctx.width or 0), int(ctx.height or 0)
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            rate_f = float(rate) if rate else 0.0
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            count = int(stream.frames) if stream.frames else None
            if count is None and duration and rate_f:
                count = int(round(duration * rate_f))
            codec = ctx.name
            if not w or not h:
                raise InputError(f"{path.name}: the video stream has no frame size")
            if w * h > limits.max_pixels:  # before decoding the first frame
                raise InputTooLargeError(f"{path.name}: frames are {w}x{h}, more than the limit of "
                                         f"{limits.max_pixels} pixels")
            rotation = _first_frame_rotation(container, stream, path.name)
        finally:
            container.close()
        if rotation in (90, 270):
            w, h = h, w
        info = VideoInfo(str(path), "file", w, h, rate_f or DEFAULT_FOLDER_FPS, count, duration, codec, rotation)
    else:
        raise InputError(f"{source}: no such file or folder")
    if info.width * info.height > limits.max_pixels:
        raise InputTooLargeError(f"{path.name}: frames are {info.width}x{info.height}, more than the limit of "
                                 f"{limits.max_pixels} pixels")
    if info.duration_s is not None and info.duration_s > limits.max_duration_s:
        raise InputTooLargeError(f"{path.name} lasts {info.duration_s:.1f} s; the limit is {limits.max_duration_s:.0f} s "
                                 "(use --start/--end to process a part)")
    return info


def plan_frames(info: VideoInfo, start: float | None = None, end: float | None = None, stride: int = 1,
                max_frames: int | None = None) -> int | None:
    """How many frames `iter_frames` will yield with these options (None when the frame count is unknown)."""
    if info.frame_count is None:
        return None
    first = 0 if start is None else math.ceil(start * info.fps - 1e-9)
    stop = info.frame_count if end is None else min(info.frame_count, math.ceil(end * info.fps - 1e-9))
    n = max(0, math.ceil((stop - first) / stride)) if stop > first else 0
    return n if max_frames is None else min(n, max_frames)


def plan_video(video: str | Path, limits: VideoLimits, start: float | None = None, end: float | None = None,
               stride: int = 1, max_frames: int | None = None) -> tuple[VideoInfo, int | None]:
    """Check the options, probe the video within ``limits`` and count the frames a run will process.

    Raises `InputError` for bad options or an unreadable video, `InputTooLargeError` beyond the limits
    (including more than ``limits.max_frames`` frames to process). Every entry point (library, CLI,
    jobs) calls this before any frame is decoded.
    """
    check_options(start, end, stride, max_frames)
    info = probe_video(video, limits)
    expected = plan_frames(info, start, end, stride, max_frames)
    if expected is not None and expected > limits.max_frames:
        raise InputTooLargeError(f"{Path(info.path).name}: {expected} frames to process; the limit is "
                                 f"{limits.max_frames} (use stride, start/end or max frames)")
    return info, expected


def check_options(start: float | None, end: float | None, stride: int, max_frames: int | None) -> None:
    if stride < 1:
        raise InputError(f"stride must be 1 or more, got {stride}")
    if start is not None and start < 0:
        raise InputError(f"start must be 0 or more seconds, got {start}")
    if end is not None and end <= (start or 0):
        raise InputError(f"end ({end} s) must be after start ({start or 0} s)")
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be 1 or more, got {max_frames}")


def iter_frames(info: VideoInfo, *, start: float | None = None, end: float | None = None, stride: int = 1,
                max_frames: int | None = None, limits: VideoLimits = VideoLimits()) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield ``(frame_index, timestamp_s, rgb)`` for the selected frames, decoding one at a time.

    ``start`` (inclusive) and ``end`` (exclusive) are seconds; ``stride`` keeps every n-th selected
    frame; ``max_frames`` stops after that many. A source that yields more frames than
    ``limits.max_frames`` raises `InputTooLargeError` (its metadata understated it).
    """
    check_options(start, end, stride, max_frames)
    yielded = 0
    selected = 0
    for index, timestamp, get_rgb in _raw_frames(info, limits):
        if start is not None and timestamp < start - 1e-6:
            continue
        if end is not None and timestamp >= end - 1e-6:
            break
        selected += 1
        if (selected - 1) % stride:
            continue
        if max_frames is not None and yielded >= max_frames:
            break
        if yielded >= limits.max_frames:
            raise InputTooLargeError(f"{Path(info.path).name}: more than {limits.max_frames} frames to process; "
                                     "use --stride, --start/--end or --max-frames")
        yielded += 1
        yield index, timestamp, get_rgb()


def _raw_frames(info: VideoInfo, limits: VideoLimits):
    """Every frame of the source as ``(index, timestamp, lazy_rgb)``; pixels are converted only when asked."""
    if info.kind == "folder":
        for i, path in enumerate(_folder_frames(Path(info.path))):
            yield i, i / info.fps, (lambda p=path: _check_size(load_image(p, max_pixels=limits.max_pixels), info))
        return
    import av

    container = _open(Path(info.path))
    turns = info.rotation // 90  # np.rot90 turns counter-clockwise, as the display matrix does
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        index = 0
        t0: float | None = None
        try:
            for frame in container.decode(stream):
                t = frame.time
                if t is None or math.isnan(t):
                    t = index / info.fps
                t0 = t if t0 is None else t0
                t -= t0  # timestamps from the first frame (some containers start later than 0)
                yield index, float(t), (lambda f=frame: _check_size(np.rot90(f.to_ndarray(format="rgb24"), turns), info))
                index += 1
        except av.FFmpegError as exc:
            if index == 0:
                raise InputError(f"{Path(info.path).name}: the video could not be decoded ({_av_reason(exc)})") from None
            raise InputError(f"{Path(info.path).name}: decoding failed after frame {index - 1} ({_av_reason(exc)})") from None
        if index == 0:
            raise InputError(f"{Path(info.path).name}: the video has no decodable frames")
    finally:
        container.close()


def _check_size(rgb: np.ndarray, info: VideoInfo) -> np.ndarray:
    if rgb.shape[:2] != (info.height, info.width):
        raise InputError(f"{Path(info.path).name}: frame size changed from {info.width}x{info.height} to "
                         f"{rgb.shape[1]}x{rgb.shape[0]} mid-video; all frames must have one size")
    return np.ascontiguousarray(rgb)
