"""``sam3studio drift``: has what the model answers per prompt shifted? Reads the server's drift store.

The current window (default: the last 24 h) is compared with the window just before it (default: the 7 days
before) or with a saved baseline (`sam3studio eval --save-baseline`, or ``--save-baseline`` here), prompt by
prompt, with the population-stability index of the presence score, the top score and the instance count.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sam3studio.cli.common import DebugOpt, console, fail

if TYPE_CHECKING:
    from rich.table import Table

    from sam3studio.observability.drift import PromptDrift

__all__ = ["drift_command"]

MAX_ROWS = 40
_STYLE = {"drift": "bold red", "watch": "yellow", "stable": "green", "too_few": "dim", "new": "cyan", "gone": "dim"}


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="minutes")


def _until(text: str | None) -> float:
    if text is None:
        return time.time()
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--until {text!r}: give an ISO time such as 2026-05-01T12:00 (UTC unless it says)") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _table(rows: list[PromptDrift], title: str) -> Table:
    from rich.table import Table

    table = Table(title=title, caption="PSI: < 0.1 alike, 0.1-0.25 worth watching, > 0.25 shifted; a status counts "
                  "only a PSI beyond what chance reaches at these sample sizes")
    for col in ("prompt", "ref. images", "images", "PSI presence", "PSI top score", "PSI instances", "status"):
        table.add_column(col, justify="left" if col in ("prompt", "status") else "right", overflow="fold")
    for r in rows[:MAX_ROWS]:
        table.add_row(r.prompt, str(r.reference_n), str(r.current_n), _fmt(r.psi["presence"]), _fmt(r.psi["top_score"]),
                      _fmt(r.psi["instances"]), f"[{_STYLE[r.status]}]{r.status}[/]")
    return table


def drift_command(
    current: Annotated[str, typer.Option("--current", help="The window to check, ending at --until: 90m, 24h, 7d, "
                                         "2w.")] = "24h",
    reference: Annotated[str, typer.Option("--reference", help="The window just before it to compare with (ignored "
                                           "with --baseline).")] = "7d",
    baseline: Annotated[Path | None, typer.Option("--baseline", help="Compare with this saved baseline instead "
                                                  "(from `sam3studio eval --save-baseline` or --save-baseline).",
                                                  show_default=False)] = None,
    until: Annotated[str | None, typer.Option("--until", help="End of the current window, ISO time [default: now].",
                                              show_default=False)] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="The server's data dir [default: "
                                                  "SAM3STUDIO_DATA_DIR or ~/.cache/sam3studio].",
                                                  show_default=False)] = None,
    threshold: Annotated[float, typer.Option("--threshold", help="PSI at or above which a prompt has drifted.")] = 0.25,
    min_count: Annotated[int, typer.Option("--min-count", help="Fewest images on each side for a verdict.")] = 30,
    prompts: Annotated[list[str] | None, typer.Option("--prompt", help="Only this prompt (repeatable).",
                                                      show_default=False)] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON to this file "
                                                  "('-': standard output, instead of the table).",
                                                  show_default=False)] = None,
    save_baseline: Annotated[Path | None, typer.Option("--save-baseline", help="Write the current window as a "
                                                       "baseline file.", show_default=False)] = None,
    fail_on_drift: Annotated[bool, typer.Option("--fail-on-drift", help="Exit with code 1 when a prompt drifted "
                                                "(for cron jobs and CI).")] = False,
    debug: DebugOpt = False,
) -> None:
    """Compare per-prompt score distributions of two windows (or a baseline) with a population-stability index."""
    from sam3studio.observability.drift import Distributions, compare, normalize_prompt, parse_duration
    from sam3studio.observability.store import DB_NAME, DriftStore

    try:
        end = _until(until)
        start = end - parse_duration(current)
        if not threshold > 0 or min_count < 1:
            raise ValueError("--threshold must be > 0 and --min-count at least 1")
        if data_dir is None:
            from sam3studio.settings import Settings

            data_dir = Settings().data_dir
        path = Path(data_dir).expanduser() / DB_NAME
        if not path.is_file():
            raise ValueError(f"no drift data at {path} (`sam3studio serve` records it there unless SAM3STUDIO_DRIFT=false)")
        store = DriftStore(path, flush_s=0)
        cur = store.window(start, end)
        if baseline is not None:
            ref, ref_desc = Distributions.load_baseline(baseline), {"baseline": str(baseline)}
        else:
            ref_start = start - parse_duration(reference)
            ref, ref_desc = store.window(ref_start, start), {"start": _iso(ref_start), "end": _iso(start)}
        rows = compare(ref, cur, threshold=threshold, min_count=min_count,
                       prompts=[normalize_prompt(p) for p in prompts] if prompts else None)
        store.close()
        if save_baseline is not None:
            cur.save_baseline(save_baseline, source=f"drift store {path}, {_iso(start)} to {_iso(end)}")
    except (ValueError, OSError) as exc:
        raise fail(str(exc), debug, code=2) from None
    report: dict[str, Any] = {"current": {"start": _iso(start), "end": _iso(end)}, "reference": ref_desc,
                              "threshold": threshold, "min_count": min_count, "prompts": [r.to_dict() for r in rows]}
    if json_out is not None:
        text = json.dumps(report, indent=2, ensure_ascii=False)
        if str(json_out) == "-":
            typer.echo(text)
        else:
            json_out.write_text(text + "\n", encoding="utf-8")
    if json_out is None or str(json_out) != "-":
        against = f"baseline {baseline}" if baseline is not None else f"{ref_desc['start']} to {ref_desc['end']}"
        console.print(_table(rows, f"sam3studio drift: {_iso(start)} to {_iso(end)} against {against}"))
        counts = {s: sum(r.status == s for r in rows) for s in _STYLE}
        summary = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in counts.items() if n)
        console.print(f"{len(rows)} prompt(s): {summary}" + (f" (first {MAX_ROWS} shown)" if len(rows) > MAX_ROWS else "")
                      if rows else "No prompt was recorded in either window.", highlight=False)
    if fail_on_drift and any(r.status == "drift" for r in rows):
        raise typer.Exit(1)
