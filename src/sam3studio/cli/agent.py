"""`sam3studio agent`: a language model calls SAM 3 in a loop to answer a query a noun phrase cannot express."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
    quiet_libraries,
)
from sam3studio.errors import InputError, ModelSourceError, Sam3StudioError
from sam3studio.random_model import UNTRAINED_THRESHOLD


def agent_command(
    image: Annotated[Path, typer.Argument(help="The image file.", show_default=False)],
    query: Annotated[str, typer.Argument(help="What to find, in words: 'the person second from the left holding "
                                              "an umbrella'.", show_default=False)],
    llm_base_url: Annotated[str, typer.Option("--llm-base-url", envvar="SAM3STUDIO_LLM_BASE_URL", show_default=False,
                                              help="The OpenAI-compatible API root, e.g. http://localhost:8000/v1 "
                                                   "(vLLM) or http://localhost:11434/v1 (Ollama).")],
    llm_model: Annotated[str, typer.Option("--llm-model", envvar="SAM3STUDIO_LLM_MODEL", show_default=False,
                                           help="The model name the endpoint serves.")],
    llm_api_key: Annotated[str | None, typer.Option("--llm-api-key", envvar="SAM3STUDIO_LLM_API_KEY", show_default=False,
                                                    help="API key for the endpoint (local servers need none). "
                                                         "Prefer the env: argv is visible to other users.")] = None,
    max_turns: Annotated[int, typer.Option("--max-turns", min=1, max=100, help="Most LLM calls.")] = 10,
    time_budget: Annotated[float, typer.Option("--time-budget", min=1, help="Seconds the whole run may take.")] = 300.0,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for result.json, result.overlay.png, trace.json.")]
    = Path("sam3studio-agent"),
    threshold: Annotated[float | None, typer.Option("--threshold", "-t", min=0.01, max=1.0, show_default=False,
                                                    help="SAM 3 detection score threshold [default: 0.5; 0.25 for a "
                                                         "model with untrained weights].")] = None,
    text_only: Annotated[bool, typer.Option("--text-only", help="Send no images (for models without vision).")] = False,
    model: ModelOpt = "facebook/sam3",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    translator: TranslatorOpt = "lexicon",
    debug: DebugOpt = False,
) -> None:
    """Answer a query about an image with an LLM (any OpenAI-compatible endpoint) that calls SAM 3 as tools."""
    quiet_libraries(debug)
    from sam3studio.io.images import load_image
    from sam3studio.llm.agent import AgentError, run_agent
    from sam3studio.loading import load_segmenter

    try:
        rgb = load_image(image)
    except InputError as exc:
        raise fail(str(exc), debug, code=2) from None
    with console.status(f"Loading SAM 3 from [bold]{model}[/] …"):
        try:
            segmenter = load_segmenter(model, device=device, dtype=dtype, translator=translator)
        except (ModelSourceError, InputError) as exc:
            raise fail(str(exc), debug) from None
    if threshold is None:
        threshold = UNTRAINED_THRESHOLD if segmenter.untrained else 0.5
        if segmenter.untrained:
            err_console.print(f"The model has untrained weights: detection threshold {threshold} (--threshold to set "
                              "another).")
    try:
        with console.status(f"Asking [bold]{llm_model}[/] …"):
            result = run_agent(rgb, query, segmenter=segmenter, llm_base_url=llm_base_url, llm_model=llm_model,
                               llm_api_key=llm_api_key, max_turns=max_turns, time_budget_s=time_budget, out_dir=out,
                               threshold=threshold, vision=not text_only, source=str(image))
    except AgentError as exc:
        raise fail(f"{exc} (trace: {out / 'trace.json'})", debug) from None
    except InputError as exc:
        raise fail(str(exc), debug, code=2) from None
    except Sam3StudioError as exc:
        raise fail(str(exc), debug) from None
    if result.outcome == "no_mask":
        why = f": {result.reason}" if result.reason else ""
        console.print(f"No object answers the query{why} ({result.turns} turns).", highlight=False)
    else:
        console.print(f"Selected {len(result.selected_ids)} instance(s), ids {result.selected_ids} "
                      f"({result.turns} turns, {result.elapsed_s:.1f} s).", highlight=False)
    console.print(f"Wrote {result.files['result']}, {result.files['overlay']} and {result.files['trace']}",
                  highlight=False)
