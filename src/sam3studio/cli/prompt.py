"""``sam3studio prompt "红色的汽车, 小狗"``: show how each prompt will be sent to the model."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from sam3studio.cli.common import console, fail
from sam3studio.errors import Sam3StudioError
from sam3studio.prompts import parse_prompts
from sam3studio.translate import get_translator

__all__ = ["prompt_command"]


def prompt_command(
    prompts: Annotated[list[str], typer.Argument(help="Prompts, comma-separated or one per argument.", show_default=False)],
    translator: Annotated[str, typer.Option("--translator", help="'lexicon' (offline Chinese lexicon), 'none', or a "
                                            "local MarianMT model folder.", envvar="SAM3STUDIO_TRANSLATOR")] = "lexicon",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show how each prompt will be sent to the model (Chinese is translated to English)."""
    try:
        texts = parse_prompts(prompts)
        translate = get_translator(translator)
    except Sam3StudioError as exc:
        raise fail(str(exc), debug=False, code=2) from None

    rows: list[dict] = []
    for text in texts:
        try:
            tr = translate(text)
            rows.append({"text": text, "query": tr.query, "unknown_words": list(tr.unknown), "error": None})
        except Sam3StudioError as exc:
            rows.append({"text": text, "query": None, "unknown_words": [], "error": str(exc)})
    if as_json:
        print(json.dumps({"translator": translator, "prompts": rows}, ensure_ascii=False, indent=2))
    else:
        table = Table(title="sam3studio prompt → model query")
        for col in ("prompt", "sent to the model", "not understood"):
            table.add_column(col, overflow="fold")
        for row in rows:
            query = escape(row["query"]) if row["query"] is not None else f"[red]{escape(row['error'])}[/]"
            unknown = ", ".join(row["unknown_words"])
            table.add_row(escape(row["text"]), query, f"[bold yellow]{escape(unknown)}[/]" if unknown else "")
        console.print(table)
    if any(row["error"] for row in rows):
        raise typer.Exit(1)
