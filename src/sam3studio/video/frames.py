"""Random access to the frames of a video file or frame folder, decoding lazily (for sessions).

`iter_frames` (video.io) streams a video once, front to back. A session needs more: frame ``i`` on
demand (the frame a user clicks on), forward runs from any frame, and backward runs. `FrameReader`
gives that without ever holding the whole video:

- At open it decodes the video once without converting pixels, to count the frames, check their
  size and the limits, and note each frame's presentation timestamp (``pts``).
- ``get(i)`` returns frame ``i`` as ``(H, W, 3)`` uint8 RGB. A small LRU of decoded frames (bounded
  in bytes) serves repeats; a request just after the decoder's position decodes on; any other seeks
  to the keyframe before it (PyAV ``seek``) and decodes forward. A seek lands a block of frames ending
  at ``i`` in the cache, so a backward run costs one seek per block, not per frame.
- Where seeking cannot be trusted (no timestamps, or a seek that lands after the frame asked for) the
  reader decodes from the start instead: slower, never wrong.

Folders of images are read one file per frame (in natural name order, as `iter_frames` reads them).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from sam3studio.errors import InputError, InputTooLargeError
from sam3studio.io.images import load_image
from sam3studio.video.io import VideoInfo, VideoLimits, _av_reason, _folder_frames, _open, probe_video

__all__ = ["FrameReader", "open_frames"]

DEFAULT_CACHE_BYTES = 256 * 1024 * 1024
MAX_CACHED_FRAMES = 64


def open_frames(source: str | Path, limits: VideoLimits | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES) -> FrameReader:
    """Probe ``source`` within ``limits`` and index its frames (`InputError` / `InputTooLargeError`)."""
    limits = limits or VideoLimits()
    return FrameReader(probe_video(source, limits), limits, cache_bytes=cache_bytes)


class FrameReader:
    """Frame ``i`` of a video on demand; see the module docstring. Thread-safe (one lock)."""

    def __init__(self, info: VideoInfo, limits: VideoLimits, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.info = info
        self.limits = limits
        self.width, self.height = info.width, info.height
        frame_bytes = max(1, info.width * info.height * 3)
        self.cache_frames = int(min(MAX_CACHED_FRAMES, max(2, cache_bytes // frame_bytes)))
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._container: Any = None
        self._decoder: Any = None
        self._next = 0  # index of the frame the open decoder yields next
        self.seeks = 0  # counters, for tests and benchmarks
        self.decoded = 0
        if info.kind == "folder":
            self._paths = _folder_frames(Path(info.path))
            self.timestamps = [i / info.fps for i in range(len(self._paths))]
            self._pts: list[int | None] = []
            self._seekable = False
        else:
            self._paths = []
            self._scan()
        self.count = len(self.timestamps)
        if self.count > limits.max_frames:
            raise InputTooLargeError(f"{Path(info.path).name}: {self.count} frames; the limit is {limits.max_frames}")

    # ------------------------------------------------------------------ open
    def _scan(self) -> None:
        """Decode every frame once (no pixel conversion): count, timestamps, pts, sizes."""
        import av

        name = Path(self.info.path).name
        container = _open(Path(self.info.path))
        pts: list[int | None] = []
        times: list[float] = []
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            self._time_base = stream.time_base
            try:
                for frame in container.decode(stream):
                    if len(pts) >= self.limits.max_frames:
                        raise InputTooLargeError(f"{name}: more than {self.limits.max_frames} frames; the limit is "
                                                 f"{self.limits.max_frames}")
                    if (frame.width, frame.height) != (self.width, self.height):
                        raise InputError(f"{name}: frame size changed from {self.width}x{self.height} to "
                                         f"{frame.width}x{frame.height} mid-video; all frames must have one size")
                    pts.append(frame.pts)
                    t = frame.time
                    times.append(len(times) / self.info.fps if t is None or math.isnan(t) else float(t))
            except av.FFmpegError as exc:
                where = "could not be decoded" if not pts else f"decoding failed after frame {len(pts) - 1}"
                raise InputError(f"{name}: the video {where} ({_av_reason(exc)})") from None
        finally:
            container.close()
        if not pts:
            raise InputError(f"{name}: the video has no decodable frames")
        t0 = times[0]
        self.timestamps = [t - t0 for t in times]
        self._pts = pts
        known = [p for p in pts if p is not None]
        self._seekable = len(known) == len(pts) and all(a < b for a, b in zip(known, known[1:], strict=False))
        self._index_of_pts = {p: i for i, p in enumerate(pts) if p is not None}

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return self.count

    def get(self, index: int) -> np.ndarray:
        """Frame ``index`` as a read-only ``(H, W, 3)`` uint8 RGB array."""
        if not 0 <= index < self.count:
            raise IndexError(f"frame {index} is outside 0..{self.count - 1}")
        with self._lock:
            rgb = self._cache.get(index)
            if rgb is not None:
                self._cache.move_to_end(index)
                return rgb
            if self.info.kind == "folder":
                rgb = load_image(self._paths[index], max_pixels=self.limits.max_pixels)
                if rgb.shape[:2] != (self.height, self.width):
                    raise InputError(f"{self._paths[index].name}: frame size differs from the first frame's "
                                     f"{self.width}x{self.height}; all frames must have one size")
                return self._keep(index, rgb)
            return self._decode_to(index)

    def _keep(self, index: int, rgb: np.ndarray) -> np.ndarray:
        rgb = np.ascontiguousarray(rgb)
        rgb.flags.writeable = False
        self._cache[index] = rgb
        self._cache.move_to_end(index)
        while len(self._cache) > self.cache_frames:
            self._cache.popitem(last=False)
        return rgb

    def _decode_to(self, index: int) -> np.ndarray:
        # Decode on when the frame is just ahead; else start a block that ends at `index`.
        if self._decoder is None or not self._next <= index < self._next + self.cache_frames:
            self._position(max(0, index - self.cache_frames + 1))
        while True:
            try:
                frame = next(self._decoder)
            except StopIteration:
                self._reset()
                raise InputError(f"{Path(self.info.path).name}: frame {index} could not be decoded") from None
            i = self._frame_index(frame)
            self._next = i + 1
            self.decoded += 1
            if i < index - self.cache_frames + 1:
                continue
            rgb = self._keep(i, frame.to_ndarray(format="rgb24"))
            if i >= index:
                if i != index:  # a frame the scan saw is missing now: never guess
                    self._reset()
                    raise InputError(f"{Path(self.info.path).name}: frame {index} could not be decoded")
                return rgb

    def _frame_index(self, frame: Any) -> int:
        if self._seekable and frame.pts in self._index_of_pts:
            return self._index_of_pts[frame.pts]
        return self._next

    def _position(self, index: int) -> None:
        """Leave the decoder so that the next frame it yields is at or before ``index``."""
        import av

        if self._container is None:
            self._container = _open(Path(self.info.path))
        stream = self._container.streams.video[0]
        if index == 0 or not self._seekable:
            self._restart()
            return
        try:
            self._container.seek(int(self._pts[index]), stream=stream, backward=True, any_frame=False)
        except av.FFmpegError:
            self._restart()
            return
        self.seeks += 1
        decoder = self._container.decode(stream)
        try:
            first = next(decoder)
        except (StopIteration, av.FFmpegError):
            self._restart()
            return
        i = self._index_of_pts.get(first.pts)
        if i is None or i > index:  # landed after the frame (or somewhere unknown): decode from the start
            self._restart()
            return
        self._decoder = _chain(first, decoder)
        self._next = i

    def _restart(self) -> None:
        self._reset()
        self._container = _open(Path(self.info.path))
        self._decoder = self._container.decode(self._container.streams.video[0])
        self._next = 0

    def _reset(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container, self._decoder, self._next = None, None, 0

    def close(self) -> None:
        """Close the decoder and drop the cached frames (the reader can be used again: it reopens)."""
        with self._lock:
            self._reset()
            self._cache.clear()


def _chain(first: Any, rest: Any):
    yield first
    yield from rest
