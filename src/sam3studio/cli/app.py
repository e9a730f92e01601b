"""The ``sam3studio`` command line (Typer + Rich): one module per command, registered here.

Each command module holds its Typer wiring (arguments, options, output) and calls the library; the work
itself lives in its own package (`batch`, `video`, `evaluation`, `bench`, `translate`, ...). Command
modules import `sam3studio.cli.common`, never this module.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from sam3studio import __version__
from sam3studio.cli import agent, batch, bench, drift, info, mcp, prompt, segment, serve, track
from sam3studio.cli import eval as eval_
from sam3studio.cli.common import console, err_console

app = typer.Typer(
    name="sam3studio",
    help="Segment anything by text with SAM 3: type 'dog' or 'red car', get every matching object.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



def _print_version(value: bool) -> None:
    if value:
        console.print(f"sam3studio {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                help="Show the version and exit.")] = False) -> None:
    """Segment anything by text with SAM 3: type 'dog' or 'red car', get every matching object."""


app.command()(segment.segment)
app.command()(serve.serve)
app.command()(info.info)
app.command("eval")(eval_.eval_command)
app.command("prompt")(prompt.prompt_command)
app.command("batch")(batch.batch_command)
app.command("track")(track.track_command)
app.command("bench")(bench.bench_command)
app.command("mcp")(mcp.mcp_command)
app.command("agent")(agent.agent_command)
app.command("drift")(drift.drift_command)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - interactive
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
