"""Outputs of a tracking run, written while frames arrive: JSON lines, an overlay MP4, mask PNGs, a summary.

A video can be long, so nothing here keeps frames in memory: every sink writes a frame as soon as it
gets it, and `write_tracking` drives a `TrackingRun` once through all of them. What a run leaves in
``out_dir``:

- ``frames.jsonl``: one line per processed frame (`FrameResult.to_dict`, masks as COCO RLE), flushed
  per frame so a run that is stopped, interrupted or killed keeps every line it wrote.
- ``overlay.mp4``: the frames with coloured masks and ``"prompt #id"`` labels, H.264 (yuv420p). A
  frame's timestamp in the MP4 is its index in the source video, so ``--stride`` or ``--start`` keep
  real-time playback speed (frames are held longer instead of the video playing faster).
- ``masks/frame_000123/track_0005.png``: optional binary masks, one 8-bit PNG (0 or 255) per track
  per frame. Per-track files rather than one label map per frame: no limit on track ids or overlap
  (tracks may overlap; a label map would have to pick one), and each file is a plain mask any tool
  reads. Frames with no instance get no folder (``frames.jsonl`` lists every processed frame).
- ``ytvis.json``: optional (format ``ytvis``): every track in YouTube-VIS layout (`sam3studio.video.ytvis`),
  written when the run ends, for `sam3studio eval` and other video-instance tools.
- ``summary.json``: written last, atomically: video info, prompts with their track counts (``count``), per-track
  summaries, frames processed, ``completed`` (false when the run was stopped, interrupted or failed)
  and timings.

This module knows nothing of terminals or HTTP: the CLI and the API's video jobs both call
`write_tracking` and show progress their own way through the ``progress`` callback.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sam3studio.io.files import atomic_write_json
from sam3studio.video.results import FrameResult, summarize_tracks
from sam3studio.video.ytvis import YTVIS_NAME, YtvisSink

__all__ = [
    "FORMATS",
    "FrameOverlay",
    "FramesJsonlSink",
    "MaskPngSink",
    "OverlayVideoSink",
    "SummaryWriter",
    "write_tracking",
]

FORMATS = ("jsonl", "summary", "mp4", "masks", "ytvis")
"""Every output `write_tracking` knows (``masks`` may also be asked for with ``masks=True``)."""

JSONL_NAME = "frames.jsonl"
SUMMARY_NAME = "summary.json"
OVERLAY_NAME = "overlay.mp4"
MASKS_DIR = "masks"

DEFAULT_FPS = 25.0
"""Used for the overlay when the source video reports no usable frame rate."""


class FrameSink(Protocol):
    """Anything that takes frames one at a time and must be closed (also after an interruption)."""

    def write(self, frame: FrameResult) -> None: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------- JSON lines
class FramesJsonlSink:
    """One JSON object per line per frame; the file is flushed after every frame.

    Flushing hands each line to the operating system, so a stopped, interrupted or killed process
    keeps every frame written so far (an fsync per frame would cost far more than it protects against:
    only a power cut loses OS-buffered data).
    """

    def __init__(self, path: str | Path, include_masks: bool = True) -> None:
        self.path = Path(path)
        self.include_masks = include_masks
        self.frames = 0
        self._fh = self.path.open("w", encoding="utf-8")

    def write(self, frame: FrameResult) -> None:
        self._fh.write(json.dumps(frame.to_dict(include_masks=self.include_masks), ensure_ascii=False,
                                  separators=(",", ":")) + "\n")
        self._fh.flush()
        self.frames += 1

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> FramesJsonlSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- overlay MP4
def _ascii_label(prompt: str, queries: Mapping[str, str] | None) -> str | None:
    """The label text for a prompt, or None when there is no ASCII form (OpenCV fonts draw only ASCII)."""
    if prompt.isascii():
        return prompt
    query = (queries or {}).get(prompt)
    if query and query.isascii():
        return query
    return None


class FrameOverlay:
    """Draws a frame's masks and ``"prompt #id"`` labels (supervision), colours by track id: the overlay MP4's
    pictures, and the UI editor's frame view."""

    def __init__(self, width: int, height: int, *, queries: Mapping[str, str] | None = None, alpha: float = 0.5) -> None:
        self.width, self.height = int(width), int(height)
        self.queries = dict(queries or {})
        self.alpha = alpha
        self._annotators: tuple[Any, Any] | None = None

    def render(self, frame: FrameResult) -> np.ndarray:
        """The annotated ``(H, W, 3)`` uint8 RGB frame (``frame.image``, or black when it has none)."""
        import supervision as sv

        from sam3studio.render import PALETTE

        if frame.image is not None:
            image = np.asarray(frame.image)
            if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
                raise ValueError(f"frame {frame.index}: image is {image.shape} {image.dtype}, expected "
                                 f"({self.height}, {self.width}, 3) uint8")
        else:  # a frame without pixels still shows its masks, on black
            image = np.zeros((self.height, self.width, 3), np.uint8)
        if not frame.instances:
            return image
        if self._annotators is None:
            lookup = sv.ColorLookup.CLASS
            # supervision's resolution-based text size, kept readable on small videos
            scale = max(0.35, sv.calculate_optimal_text_scale((self.width, self.height)))
            self._annotators = (sv.MaskAnnotator(color=PALETTE, opacity=self.alpha, color_lookup=lookup),
                                sv.LabelAnnotator(color=PALETTE, color_lookup=lookup, text_scale=scale,
                                                  text_thickness=1 if scale < 0.8 else 2,
                                                  text_padding=max(3, round(8 * scale)), smart_position=True))
        mask_annotator, label_annotator = self._annotators
        insts = frame.instances
        detections = sv.Detections(
            xyxy=np.array([inst.box for inst in insts], dtype=np.float32).reshape(-1, 4),
            mask=np.stack([np.asarray(inst.mask, dtype=bool) for inst in insts]),
            confidence=np.array([inst.score for inst in insts], dtype=np.float32),
            class_id=np.array([inst.track_id for inst in insts], dtype=int),
        )
        labels = []
        for inst in insts:
            text = _ascii_label(inst.prompt, self.queries)
            labels.append(f"{text} #{inst.track_id}" if text else f"#{inst.track_id}")
        scene = np.ascontiguousarray(image[..., ::-1])  # RGB -> BGR copy for supervision/OpenCV
        scene = mask_annotator.annotate(scene, detections)
        scene = label_annotator.annotate(scene, detections, labels=labels)
        return np.ascontiguousarray(scene[..., ::-1])


class OverlayVideoSink:
    """Annotated H.264 MP4 (libx264, yuv420p, through PyAV): coloured masks and ``"prompt #id"`` labels.

    Colours follow track ids (``supervision`` colour lookup by class, with ``class_id = track_id``), so
    an object keeps its colour for the whole video. OpenCV's fonts are ASCII-only: a non-ASCII prompt is
    labelled with its English query from ``queries`` (prompt text -> model query) when there is one,
    else with ``"#id"`` alone.

    yuv420p stores colour at half resolution and so needs an even width and height: an odd-sized video
    is padded by one pixel on the right and/or bottom, repeating the edge pixels (padding rather than
    cropping keeps every source pixel; the encoded size is `encoded_size`).

    Frame timestamps: the MP4's time base is ``1/fps`` and a frame's timestamp is its index in the
    source video minus the first written one, so a strided or trimmed run plays at real-time speed.

    `close` flushes the encoder and writes the MP4 index; call it on every exit path (`write_tracking`
    does, also on Ctrl-C) so a partial run leaves a playable file. With ``faststart`` the index is moved
    to the front at close, which lets browsers start playing before the download ends.
    """

    def __init__(self, path: str | Path, fps: float | None, width: int, height: int, *,
                 queries: Mapping[str, str] | None = None, alpha: float = 0.5, crf: int = 23,
                 preset: str = "veryfast", faststart: bool = True) -> None:
        import av

        if width < 1 or height < 1:
            raise ValueError(f"video size must be positive, got {width}x{height}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.encoded_size = (self.width + self.width % 2, self.height + self.height % 2)
        if fps is None or not math.isfinite(fps) or fps <= 0:
            fps = DEFAULT_FPS
        self.rate = Fraction(fps).limit_denominator(1001)  # 29.97 -> 2997/100, 30000/1001 stays exact
        self.queries = dict(queries or {})
        self.alpha = alpha
        self.frames = 0
        self._first_index: int | None = None
        self._last_pts = -1
        self._closed = False
        options = {"movflags": "+faststart"} if faststart else {}
        self._container = av.open(str(self.path), mode="w", format="mp4", options=options)
        try:
            self._stream = self._container.add_stream("libx264", rate=self.rate)
            self._stream.width, self._stream.height = self.encoded_size
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": str(int(crf)), "preset": preset}
        except BaseException:
            self._container.close()
            raise
        self._overlay = FrameOverlay(self.width, self.height, queries=self.queries, alpha=alpha)

    def render(self, frame: FrameResult) -> np.ndarray:
        """The annotated ``(H, W, 3)`` uint8 RGB frame (at the source size, before padding)."""
        return self._overlay.render(frame)

    def write(self, frame: FrameResult) -> None:
        import av

        if self._closed:
            raise ValueError(f"{self.path}: the overlay video is closed")
        rgb = self.render(frame)
        pad_w, pad_h = self.encoded_size[0] - self.width, self.encoded_size[1] - self.height
        if pad_w or pad_h:
            rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        if self._first_index is None:
            self._first_index = int(frame.index)
        pts = max(int(frame.index) - self._first_index, self._last_pts + 1)  # strictly increasing for the muxer
        video_frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        video_frame.pts = pts
        video_frame.time_base = 1 / self.rate
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)
        self._last_pts = pts
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()

    def __enter__(self) -> OverlayVideoSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------- mask PNGs
class MaskPngSink:
    """Binary mask PNGs: ``folder/frame_000123/track_0005.png`` (0 outside, 255 inside, 8-bit grey).

    One file per track per frame rather than a label map per frame: tracks may overlap and their
    ids are unbounded, and a plain mask opens in any tool. Frames without instances get no folder.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.files = 0

    def write(self, frame: FrameResult) -> None:
        from PIL import Image

        if not frame.instances:
            return
        frame_dir = self.folder / f"frame_{int(frame.index):06d}"
        frame_dir.mkdir(exist_ok=True)
        for inst in frame.instances:
            mask = np.asarray(inst.mask, dtype=bool).astype(np.uint8) * 255
            Image.fromarray(mask).save(frame_dir / f"track_{int(inst.track_id):04d}.png", compress_level=1)
            self.files += 1

    def close(self) -> None:
        """Nothing stays open between frames."""


# ---------------------------------------------------------------------------- summary
def _video_dict(video: Any) -> dict[str, Any] | None:
    """`VideoInfo` (or anything with the same fields) as plain JSON-able values."""
    if video is None:
        return None
    if hasattr(video, "to_dict"):
        data = dict(video.to_dict())
    elif dataclasses.is_dataclass(video) and not isinstance(video, type):
        data = dataclasses.asdict(video)
    else:
        data = {k: getattr(video, k) for k in ("width", "height", "fps", "frame_count", "duration_s") if hasattr(video, k)}
    return json.loads(json.dumps(data, default=str))  # Paths, Fractions and numpy numbers -> JSON values


def _prompt_dict(prompt: Any, tracks_per_prompt: Mapping[str, int]) -> dict[str, Any]:
    text = getattr(prompt, "text", str(prompt))
    query = getattr(prompt, "query", None) or text
    return {"text": text, "query": query, "unknown_words": list(getattr(prompt, "unknown_words", ()) or ()),
            "count": int(tracks_per_prompt.get(text, 0))}


class SummaryWriter:
    """Accumulates per-track statistics as frames pass, then builds and writes ``summary.json``.

    The track count of each prompt is counted here from the tracks actually seen, so a stopped run's
    summary agrees with its ``frames.jsonl``; a prompt that matched nothing is listed with 0 tracks.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._tracks = summarize_tracks()
        self._timing_sums: dict[str, float] = {}
        self.first_frame: int | None = None
        self.last_frame: int | None = None
        self._started = time.perf_counter()

    @property
    def frames(self) -> int:
        return self._tracks.frames

    def write(self, frame: FrameResult) -> None:
        self._tracks.add(frame)
        if self.first_frame is None:
            self.first_frame = int(frame.index)
        self.last_frame = int(frame.index)
        for key, seconds in (frame.timings or {}).items():
            self._timing_sums[key] = self._timing_sums.get(key, 0.0) + float(seconds)

    def close(self) -> None:
        """Nothing to release; the summary is written by `finish`."""

    def build(self, *, video: Any = None, prompts: Iterable[Any] = (), completed: bool, stop_reason: str | None = None,
              error: str | None = None, outputs: Mapping[str, str] | None = None,
              elapsed_s: float | None = None) -> dict[str, Any]:
        """The summary as a dict (see the module docstring); ``elapsed_s`` defaults to the time since creation."""
        tracks = [t.to_dict() for t in self._tracks.tracks()]
        per_prompt: dict[str, int] = {}
        for t in tracks:
            per_prompt[t["prompt"]] = per_prompt.get(t["prompt"], 0) + 1
        prompt_rows = [_prompt_dict(p, per_prompt) for p in prompts]
        listed = {row["text"] for row in prompt_rows}
        prompt_rows += [{"text": p, "query": p, "unknown_words": [], "count": n}  # not in run.prompts: still reported
                        for p, n in per_prompt.items() if p not in listed]
        total = time.perf_counter() - self._started if elapsed_s is None else float(elapsed_s)
        n = self.frames
        summary: dict[str, Any] = {
            "completed": bool(completed),
            "stop_reason": stop_reason,
            "video": _video_dict(video),
            "prompts": prompt_rows,
            "frames_processed": n,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "tracks": tracks,
            "timings": {
                "total_s": round(total, 6),
                "frames_per_s": round(n / total, 6) if total > 0 and n else None,
                "mean_per_frame_s": {k: round(v / n, 6) for k, v in sorted(self._timing_sums.items())} if n else {},
            },
            "outputs": dict(outputs or {}),
        }
        if error is not None:
            summary["error"] = error
        return summary

    def finish(self, **kwargs: Any) -> dict[str, Any]:
        """`build` the summary and, when this writer has a path, write it atomically; returns the dict."""
        summary = self.build(**kwargs)
        if self.path is not None:
            atomic_write_json(self.path, summary)
        return summary


# ---------------------------------------------------------------------------- driver
def _queries(prompts: Iterable[Any]) -> dict[str, str]:
    return {p.text: p.query for p in prompts if getattr(p, "query", None)}


def write_tracking(
    run: Any,
    out_dir: str | Path,
    formats: Iterable[str] = ("jsonl", "summary", "mp4"),
    masks: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Iterate ``run`` (a `TrackingRun`) once, feed every asked-for sink, and return the summary dict.

    ``formats`` picks outputs from `FORMATS` (``masks=True`` adds ``"masks"``). ``progress(done, total)``
    is called after every frame (``total`` is ``run.expected_frames``, possibly None). ``should_stop()``
    is asked before each frame is pulled from the run; when it returns True the run stops there.

    An earlier run's ``summary.json`` and ``overlay.mp4`` in ``out_dir`` are deleted first, so a reader
    never takes them for this run's; mask PNGs from an earlier run are not (write to a fresh folder).
    On every exit path the run is closed, the sinks are closed (the MP4 stays playable) and the summary
    is written last, atomically, with ``"completed": false`` unless the run ended by itself. A
    KeyboardInterrupt is re-raised after that; any other exception is recorded as ``"error"`` in the
    summary and re-raised. The summary's ``outputs`` maps each written format to its file or folder
    name inside ``out_dir``.
    """
    wanted = list(dict.fromkeys([*formats, *(["masks"] if masks else [])]))
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown output format(s) {', '.join(map(repr, unknown))}: choose from {', '.join(FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    video = getattr(run, "video", None)
    total = getattr(run, "expected_frames", None)
    # An earlier run's summary or overlay must not pass for this run's while it runs (or when this one
    # writes none); frames.jsonl is truncated when opened. Mask PNGs of an earlier run are left alone.
    for name in (SUMMARY_NAME, OVERLAY_NAME):
        (out / name).unlink(missing_ok=True)
    summary = SummaryWriter(out / SUMMARY_NAME if "summary" in wanted else None)
    outputs: dict[str, str] = {}
    sinks: list[FrameSink] = []
    overlay: OverlayVideoSink | None = None

    started = time.perf_counter()
    done = 0
    stop_reason: str | None = None
    error: BaseException | None = None
    try:
        if "jsonl" in wanted:
            sinks.append(FramesJsonlSink(out / JSONL_NAME))
            outputs["jsonl"] = JSONL_NAME
        if "masks" in wanted:
            sinks.append(MaskPngSink(out / MASKS_DIR))
            outputs["masks"] = MASKS_DIR
        if "ytvis" in wanted:
            (out / YTVIS_NAME).unlink(missing_ok=True)
            sinks.append(YtvisSink(out / YTVIS_NAME, Path(str(getattr(video, "path", None) or out.name)).stem or "video",
                                   getattr(video, "width", 0) or 0, getattr(video, "height", 0) or 0,
                                   getattr(run, "file_names", None)))
            outputs["ytvis"] = YTVIS_NAME
        frames = iter(run)
        while True:
            if should_stop is not None and should_stop():
                stop_reason = "stopped"
                break
            try:
                frame = next(frames)
            except StopIteration:
                break
            if "mp4" in wanted and overlay is None:  # opened at the first frame: its size is the truth
                overlay = OverlayVideoSink(out / OVERLAY_NAME, getattr(video, "fps", None), frame.width, frame.height,
                                           queries=_queries(getattr(run, "prompts", None) or ()))
                sinks.append(overlay)
                outputs["mp4"] = OVERLAY_NAME
            for sink in sinks:
                sink.write(frame)
            summary.write(frame)  # last: the summary counts only frames every output has
            done += 1
            if progress is not None:
                progress(done, total)
    except KeyboardInterrupt as exc:
        stop_reason, error = "interrupted", exc
    except BaseException as exc:
        stop_reason, error = "error", exc
    finally:
        close_error = _close_all(run, [*sinks, summary])
        if close_error is not None and error is None:
            stop_reason, error = "error", close_error
        if "summary" in wanted:
            outputs["summary"] = SUMMARY_NAME
        message = None
        if error is not None and not isinstance(error, KeyboardInterrupt):
            message = str(error) or type(error).__name__
        result = summary.finish(video=video, prompts=getattr(run, "prompts", None) or (), completed=stop_reason is None,
                                stop_reason=stop_reason, error=message, outputs=outputs,
                                elapsed_s=time.perf_counter() - started)
    if error is not None:
        raise error
    return result


def _close_all(run: Any, sinks: list[FrameSink]) -> BaseException | None:
    """Close the run and every sink even when one of them fails; return the first failure."""
    first: BaseException | None = None
    for closeable in (run, *sinks):
        close = getattr(closeable, "close", None)
        if close is None:
            continue
        try:
            close()
        except Exception as exc:  # keep closing the others: each one left open may lose data
            first = first or exc
    return first
