"""``sam3studio finetune``: adapt SAM 3 to your own labelled data, with an honest before/after comparison.

Exit codes: 0 done (also when the result is not better than the base model: the command says so loudly
and ``report.json`` has ``"improved": false``); 1 a model that does not load or a failure mid-run;
2 bad input or settings, found before any training (missing images, no masks, an empty validation split,
an unwritable --out, a run that will not fit in memory, ...); 130 stopped with Ctrl-C (the last finished
epoch is saved: run the same command with --resume).

Heavy imports (torch, transformers, the finetune package) happen inside the command.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sam3studio.cli.common import DebugOpt, DeviceOpt, DtypeOpt, ModelOpt, console, err_console, fail, quiet_libraries

if TYPE_CHECKING:
    from sam3studio.finetune import FinetuneEvent

__all__ = ["finetune_command"]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


class _Bar:
    """Turns `FinetuneEvent`s into a Rich progress bar (steps, loss, validation AP, ETA) and log lines."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TextColumn("val AP {task.fields[ap]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False)
        self.task: Any = None
        self.prep: Any = None

    def __call__(self, e: FinetuneEvent) -> None:
        p = self.progress
        if e.kind == "note":
            p.console.print(f"[dim]{e.message}[/]", highlight=False)
        elif e.kind == "prepare":
            if self.prep is None:
                self.prep = p.add_task(e.message, total=e.steps, loss="-", ap="-")
            p.update(self.prep, completed=e.step)
        elif e.kind == "eval":
            p.console.print(f"[dim]{e.message} …[/]", highlight=False)
        elif e.kind == "start":
            ap = _fmt((e.metrics or {}).get("mask AP"))
            p.console.print(f"zero-shot on the validation split: mask AP {ap}, AP50 "
                            f"{_fmt((e.metrics or {}).get('mask AP50'))}", highlight=False)
            self.task = p.add_task(f"epoch {e.epoch + 1}/{e.epochs}", total=e.steps, completed=e.step, loss="-", ap=ap)
        elif e.kind == "step" and self.task is not None:
            p.update(self.task, completed=e.step, loss=f"{e.loss:.3f}", description=f"epoch {e.epoch}/{e.epochs}")
        elif e.kind == "epoch" and self.task is not None:
            m = e.metrics or {}
            p.update(self.task, completed=e.step, ap=_fmt(m.get("mask AP")))
            p.console.print(f"epoch {e.epoch}/{e.epochs}: loss {e.loss:.4f}, val mask AP {_fmt(m.get('mask AP'))}, "
                            f"AP50 {_fmt(m.get('mask AP50'))}, cgF1 {_fmt(m.get('cgF1'))}", highlight=False)


def _summary(report: dict[str, Any], out: Path) -> None:
    from rich.table import Table

    from sam3studio.finetune.report import headline

    before, after = headline(report["before"]), headline(report["after"])
    table = Table(title=f"sam3studio finetune → {out}", caption=f"validation split; best epoch {report['best_epoch']}")
    for col in ("metric", "before (zero-shot)", "after", "gain"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for k in before:
        table.add_row(k, _fmt(before[k]), _fmt(after[k]), _fmt(report["gain"][k]))
    console.print(table)
    if not report["improved"]:
        err_console.print("[bold red]WARNING: the fine-tuned model is NOT better than the base model on the validation "
                          "split (mask AP did not rise). The checkpoint and report were kept; compare before using it.[/]")
    console.print(f"Wrote the checkpoint and report.json, report.md, training_curves.png to {out}", highlight=False,
                  soft_wrap=True)


def finetune_command(
    train_data: Annotated[Path, typer.Argument(metavar="TRAIN", show_default=False,
                                               help="Training data: COCO instances JSON (masks as RLE or polygons), "
                                                    "SA-Co JSON, or a Roboflow COCO export folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the fine-tuned checkpoint and its report.")],
    val: Annotated[Path | None, typer.Option("--val", help="Validation data (same formats). Default: a seeded 15% "
                                             "of TRAIN is held out.", show_default=False)] = None,
    images: Annotated[Path | None, typer.Option("--images", "-i", help="Folder the file_name entries are in "
                                                "(default: each JSON's folder).", show_default=False)] = None,
    train: Annotated[str, typer.Option("--train", help="What trains: heads (encoders frozen, vision features cached), "
                                       "lora (LoRA adapters + heads), all.")] = "heads",
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training images.")] = 20,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate of the heads (encoders and adapters: 0.3x).")] = 1e-3,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Images per step (default: 4 for heads, "
                                                   "2 for lora and all).", show_default=False)] = None,
    accumulate: Annotated[int, typer.Option("--accumulate", help="Steps whose gradients add up before an update.")] = 1,
    negatives: Annotated[int, typer.Option("--negatives", help="Absent categories trained per image and step "
                                           "(hard negatives: presence 0, no match).")] = 3,
    patience: Annotated[int, typer.Option("--patience", help="Stop after this many epochs without a better "
                                          "validation AP (0: never).")] = 10,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run saved in --out after its last "
                                         "finished epoch.")] = False,
    mapping: Annotated[Path | None, typer.Option("--mapping", help="JSON object mapping category name -> prompt.",
                                                 show_default=False)] = None,
    fmt: Annotated[str, typer.Option("--format", help="Annotation format: auto, coco or saco.")] = "auto",
    cache: Annotated[str, typer.Option("--cache", help="heads: keep vision features on disk, in memory, or off "
                                       "(recomputed each step).")] = "disk",
    keep_cache: Annotated[bool, typer.Option("--keep-cache", help="Keep the feature cache after the run.")] = False,
    lora_rank: Annotated[int, typer.Option("--lora-rank", help="LoRA rank.")] = 8,
    lora_layers: Annotated[int | None, typer.Option("--lora-layers", help="Last vision layers given LoRA adapters "
                                                    "(default: an eighth).", show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every random choice (runs repeat on the CPU).")] = 0,
    model: ModelOpt = "facebook/sam3",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    debug: DebugOpt = False,
) -> None:
    """Fine-tune SAM 3 on your labelled data; reports zero-shot vs fine-tuned on held-out images."""
    from sam3studio.errors import InputError, Sam3StudioError
    from sam3studio.evaluation.data import load_mapping
    from sam3studio.finetune import FinetuneConfig, finetune

    quiet_libraries(debug)
    try:
        cfg = FinetuneConfig(train=train, epochs=epochs, lr=lr, batch_size=batch_size, accumulate=accumulate,
                             negatives=negatives, patience=patience or None, cache=cache, keep_cache=keep_cache,
                             lora_rank=lora_rank, lora_layers=lora_layers, seed=seed, device=device, dtype=dtype)
        cfg.check()
        names = load_mapping(mapping) if mapping is not None else None
    except (Sam3StudioError, ValueError) as exc:
        raise fail(str(exc), debug, code=2) from None
    bar = _Bar()
    try:
        with bar.progress:
            result = finetune(train_data, val, out=out, model=model, images=images, config=cfg, mapping=names,
                              fmt=fmt, resume=resume, on_event=bar)
    except InputError as exc:
        raise fail(str(exc), debug, code=2) from None
    except (Sam3StudioError, ValueError, OSError, RuntimeError) as exc:
        raise fail(str(exc), debug) from None
    except KeyboardInterrupt:
        if (out / ".finetune" / "state.pt").is_file():
            err_console.print("[yellow]Interrupted: the last finished epoch is saved; run the same command with --resume "
                              "to continue.[/]")
        else:
            err_console.print("[yellow]Interrupted before the first epoch: nothing to resume.[/]")
        raise typer.Exit(130) from None
    _summary(result.report, out)
