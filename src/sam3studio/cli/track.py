"""``sam3studio track``: track every object matching text prompts through a video.

Heavy imports (torch, transformers, PyAV) happen inside the command, so ``sam3studio --help`` stays fast.

Exit codes: 0 done; 1 bad input (missing, unreadable or too-large video), a model that does not load,
or a failure mid-run; 2 bad options (--stride 0, --end before --start, a bad threshold or prompt);
130 stopped with Ctrl-C (what was written is kept; ``summary.json`` says ``"completed": false``).

Ctrl-C: the first press asks the run to stop after the frame being computed (so the overlay MP4 and
the JSON lines end on a whole frame); a second press interrupts at once. Either way the outputs are
closed properly and stay readable.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sam3studio.cli.common import (
    DebugOpt,
    DeviceOpt,
    DtypeOpt,
    ModelOpt,
    TranslatorOpt,
    console,
    err_console,
    fail,
    plural,
    quiet_libraries,
)

if TYPE_CHECKING:
    from rich.progress import Progress, Task, TaskID
    from rich.text import Text

__all__ = ["track_command"]


def _rate_column():
    """A Rich column showing processing speed in frames per second (Rich has none for plain counts)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("? frames/s" if speed is None else f"{speed:.2f} frames/s", style="progress.data.speed")

    return RateColumn()


class _CtrlC:
    """First Ctrl-C: stop after the current frame. Second: raise KeyboardInterrupt at once.

    Installed only in the main thread (Python allows signal handlers nowhere else); elsewhere Ctrl-C
    keeps its default behaviour, which `write_tracking` also handles cleanly.
    """

    def __init__(self, on_first: Any = None) -> None:
        self.requested = False
        self._on_first = on_first
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> _CtrlC:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self._on_first is not None:
            self._on_first()

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False


def track_command(
    video: Annotated[Path, typer.Argument(help="Video file (MP4, MOV, MKV, WebM, AVI, GIF) or a folder of frames.",
                                          show_default=False)],
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="What to track; repeat or comma-separate.",
                                              show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: frames.jsonl, summary.json, overlay.mp4, "
                                      "masks/.")] = Path("sam3studio-track"),
    stride: Annotated[int, typer.Option("--stride", help="Process every N-th frame.")] = 1,
    start: Annotated[float | None, typer.Option("--start", help="Start at this many seconds (inclusive).",
                                                show_default=False)] = None,
    end: Annotated[float | None, typer.Option("--end", help="Stop at this many seconds (exclusive).",
                                              show_default=False)] = None,
    max_frames: Annotated[int | None, typer.Option("--max-frames", help="Process at most N frames.",
                                                   show_default=False)] = None,
    threshold: Annotated[float, typer.Option("--threshold", "-t", help="Detection score threshold.")] = 0.5,
    masks: Annotated[bool, typer.Option("--masks", help="Also write one PNG mask per track per frame "
                                        "(masks/frame_000123/track_0005.png).")] = False,
    no_video: Annotated[bool, typer.Option("--no-video", help="Do not write the overlay MP4.")] = False,
    ytvis: Annotated[bool, typer.Option("--ytvis", help="Also write ytvis.json: the tracks in YouTube-VIS layout "
                                        "(for `sam3studio eval` and other tools).")] = False,
    model: ModelOpt = "facebook/sam3",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    translator: TranslatorOpt = "lexicon",
    debug: DebugOpt = False,
) -> None:
    """Track objects matching text prompts through a video: per-frame JSON lines, an overlay MP4, a summary."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from sam3studio.errors import InputError, ModelSourceError, Sam3StudioError
    from sam3studio.prompts import parse_prompts
    from sam3studio.video.io import VideoLimits, check_options, plan_video
    quiet_libraries(debug)

    # Options first (exit 2): nothing is opened or loaded for a typo.
    try:
        queries = parse_prompts(prompt)
        check_options(start, end, stride, max_frames)
        if not 0 < threshold <= 1:
            raise InputError(f"--threshold must be in (0, 1], got {threshold}")
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {out}: exists and is not a folder")
    except (Sam3StudioError, ValueError) as exc:
        raise fail(_option_message(str(exc)), debug, code=2) from None

    # Then the video (exit 1), before the model: a corrupt or too-large file fails in a second, not after loading.
    limits = VideoLimits()
    try:
        info, planned = plan_video(video, limits, start, end, stride, max_frames)
        if planned == 0:
            raise InputError(f"{video.name}: no frames between --start and --end (the video lasts "
                             f"{info.duration_s or 0:.2f} s)")
    except (Sam3StudioError, ValueError, OSError) as exc:
        raise fail(str(exc), debug) from None

    from sam3studio.video import load_video_segmenter
    from sam3studio.video.sinks import write_tracking

    with console.status(f"Loading SAM 3 (video) from [bold]{escape(model)}[/] …"):
        try:
            segmenter = load_video_segmenter(model, device=device, dtype=dtype, translator=translator)
        except (ModelSourceError, InputError, ValueError, OSError) as exc:
            raise fail(str(exc), debug) from None
    seg_info = segmenter.info()
    console.print(f"Model [bold]{escape(seg_info['source'])}[/] on {seg_info['device']} ({seg_info['dtype']})",
                  highlight=False)
    try:
        run = segmenter.track(video, queries, score_threshold=threshold, start=start, end=end, stride=stride,
                              max_frames=max_frames, limits=limits)
    except (Sam3StudioError, ValueError, OSError) as exc:
        raise fail(str(exc), debug) from None
    for p in run.prompts:
        if p.query != p.text or p.unknown_words:
            note = f" [yellow](not understood: {escape(', '.join(p.unknown_words))})[/]" if p.unknown_words else ""
            console.print(f"Prompt [bold]{escape(p.text)}[/] → {escape(p.query or '')}{note}", highlight=False)
    v = run.video
    fps_text = f"{v.fps:.2f} fps" if v.fps else "unknown fps"
    console.print(f"Video {escape(video.name)}: {v.width}x{v.height}, {fps_text}, "
                  f"{'? frames' if v.frame_count is None else plural(v.frame_count, 'frame')}; processing "
                  f"{'?' if run.expected_frames is None else run.expected_frames}", highlight=False)

    formats = ["jsonl", "summary"] + ([] if no_video else ["mp4"]) + (["ytvis"] if ytvis else [])
    progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("frames"), _rate_column(), TimeElapsedColumn(), TextColumn("ETA"),
                        TimeRemainingColumn(), console=console)
    task = progress.add_task("Tracking", total=run.expected_frames)
    done = 0

    def on_frame(n: int, total: int | None) -> None:
        nonlocal done
        done = n
        progress.update(task, completed=n, total=total)

    ctrl_c = _CtrlC(on_first=lambda: _stopping(progress, task))
    try:
        with progress, ctrl_c:
            summary = write_tracking(run, out, formats=formats, masks=masks, progress=on_frame,
                                     should_stop=lambda: ctrl_c.requested)
    except KeyboardInterrupt:
        err_console.print(f"Interrupted after {plural(done, 'frame')}: partial output kept in {escape(str(out))} "
                          "(summary.json has \"completed\": false)", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    except (Sam3StudioError, ValueError, OSError) as exc:
        raise fail(f"{exc} (output so far kept in {out})", debug) from None
    finally:
        run.close()

    if not summary["completed"]:  # first Ctrl-C: stopped between frames
        err_console.print(f"Stopped after {plural(summary['frames_processed'], 'frame')}: partial output kept in "
                          f"{escape(str(out))} (summary.json has \"completed\": false)", highlight=False, soft_wrap=True)
        raise typer.Exit(130)
    console.print(_final_line(summary, out), highlight=False, soft_wrap=True)


def _option_message(message: str) -> str:
    """Library messages name options as keywords (``stride must be ...``); on the command line they are flags."""
    for name in ("stride", "start", "end", "max_frames"):
        if message.startswith(f"{name} ") or message.startswith(f"{name}("):
            return f"--{name.replace('_', '-')}{message[len(name):]}"
    return message


def _stopping(progress: Progress, task: TaskID) -> None:
    progress.update(task, description="[yellow]Stopping after this frame (Ctrl-C again to stop now)[/]")


def _final_line(summary: dict[str, Any], out: Path) -> str:
    from rich.markup import escape

    per_prompt = ", ".join(f"{escape(p['text'])}: {plural(p['count'], 'track')}"
                           for p in summary["prompts"])
    files = ", ".join(escape(name) + ("/" if name == "masks" else "") for name in summary["outputs"].values())
    secs = summary["timings"]["total_s"]
    return (f"Tracked {plural(summary['frames_processed'], 'frame')} in {secs:.1f} s — {per_prompt} → "
            f"{escape(str(out))} ({files})")
