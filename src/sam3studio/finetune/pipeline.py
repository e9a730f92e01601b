"""`finetune`: every check first (settings, output folder, data, images, source, memory), then the run."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from sam3studio.errors import InputError
from sam3studio.finetune.cache import FeatureCache, feature_bytes_per_view, feature_levels
from sam3studio.finetune.checkpoint import inspect_source, load_state, model_fingerprint
from sam3studio.finetune.config import FinetuneConfig, FinetuneConfigError
from sam3studio.finetune.data import TrainingData, check_images, image_targets, load_training_data
from sam3studio.finetune.memory import available_memory, check_disk, count_parameters, estimate_memory, refuse_if_too_big
from sam3studio.finetune.modes import prepare_model, vision_layer_count
from sam3studio.finetune.train import MAX_TEXT_TOKENS, FinetuneEvent, FinetuneResult, Run
from sam3studio.finetune.vit import hidden_bytes_per_view
from sam3studio.model import load_model, resolve_device, resolve_dtype

__all__ = ["OutputFolderError", "finetune"]

WORK = ".finetune"


class OutputFolderError(InputError):
    """``--out`` cannot be written, holds something else, or has nothing to resume."""


def _check_out(out: Path, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"--out {out} is a file, not a folder")
    state = out / WORK / "state.pt"
    if resume:
        if not state.is_file():
            done = (out / "report.json").is_file()
            raise OutputFolderError(f"--out {out}: nothing to resume ("
                                    + ("that fine-tune finished; its report is report.json)" if done else "no saved run in it)"))
    elif out.exists() and any(out.iterdir()):
        hint = "pass --resume to continue it" if state.is_file() else "choose an empty or new folder"
        raise OutputFolderError(f"--out {out} is not empty; {hint}")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputFolderError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None


# Below this size a training step is bound by per-operation overhead, which autocast adds to: on the tiny
# checkpoint a heads epoch took 4.5 s in float32 and 6.5 s under bf16 autocast (docs/finetune.md).
SMALL_MODEL_PARAMS = 50_000_000


def _compute_dtype(name: str, device: torch.device, n_params: int) -> torch.dtype:
    """``auto``: bf16 autocast where the device has bf16 matrix units (as for inference), float32 for small models."""
    dtype = resolve_dtype(name, device)
    if (name or "auto").lower() == "auto" and n_params < SMALL_MODEL_PARAMS:
        return torch.float32
    if dtype == torch.float16 and device.type != "cuda":
        raise FinetuneConfigError("float16 training needs a CUDA GPU; use --dtype bfloat16 or float32")
    return dtype


def _data_key(data: TrainingData, source: str) -> str:
    blob = json.dumps([source, data.train.coco_dict(), data.val.coco_dict(),
                       [c.prompt for c in data.train.categories], [c.prompt for c in data.val.categories]],
                      sort_keys=True, default=str)
    return hashlib.blake2b(blob.encode(), digest_size=12).hexdigest()


def _check_prompts(processor: Any, translator: Any, data: TrainingData) -> None:
    tok = processor.tokenizer
    for ds in (data.train, data.val):
        for c in ds.categories:
            query = translator(c.prompt).query
            n = len(tok(query)["input_ids"])
            if n > MAX_TEXT_TOKENS:
                raise InputError(f"{ds.source}: category {c.name!r} is {n} tokens long as a prompt; SAM 3 reads at most "
                                 f"{MAX_TEXT_TOKENS} (shorten it with --mapping)")


def _memory_plan(cfg: FinetuneConfig, info: Any, data: TrainingData, device: torch.device, dtype: torch.dtype,
                 saved_batch: tuple[int, int] | None = None) -> dict[str, Any]:
    """Estimate memory and disk, refuse what will not fit, and return the figures for the report.

    With the default batch size, a batch that does not fit is split into smaller steps whose gradients
    add up (the same images per update); ``saved_batch`` (a resumed run's split) is kept as it was.
    """
    items = image_targets(data.train)
    pairs = sum(len(it.positives) + min(cfg.negatives, len(it.negatives)) for it in items) / max(1, len(items))
    cached = cfg.train in ("heads", "lora") and cfg.cache != "off"
    views = 2 * len(items) + len(data.val.images) if cached else 0
    per_view = (feature_bytes_per_view if cfg.train == "heads" else hidden_bytes_per_view)(info.config, dtype)
    n_layers = info.config.vision_config.backbone_config.num_hidden_layers
    lora_layers = min(n_layers, cfg.lora_layers or max(1, n_layers // 8))
    if cfg.memory_budget_gb is not None:
        available, where = int(cfg.memory_budget_gb * 1024**3), "allowed (memory budget)"
    else:
        available, where = available_memory(device)

    def estimate(images: int):
        return estimate_memory(info.model_cls, info.config, cfg.train, images_per_step=images, pairs_per_image=pairs,
                               compute_dtype=dtype, cache_bytes=views * per_view if cfg.cache == "memory" else 0,
                               lora_layers=lora_layers, lora_rank=cfg.lora_rank)

    images, accumulate = saved_batch or (cfg.images_per_step, cfg.accumulate)
    est = estimate(images)
    while saved_batch is None and cfg.batch_size is None and images > 1 and est.total > 0.9 * available:
        images, accumulate = images // 2, accumulate * 2
        est = estimate(images)
    advice = ("lower --batch-size (with --accumulate to keep the images per update), use --cache disk, "
              "or --train heads" if cfg.train != "heads" else "lower --batch-size or --negatives, or use --cache disk")
    refuse_if_too_big(est, available, where, advice)
    return {"memory_estimate": est.to_dict(), "images_per_step": images, "accumulate": accumulate,
            "feature_cache": {"mode": cfg.cache if cached else "off", "views": views,
                              "bytes_per_view": per_view, "bytes": views * per_view}}


def finetune(
    train: str | Path,
    val: str | Path | None = None,
    *,
    out: str | Path,
    model: str = "facebook/sam3",
    images: str | Path | None = None,
    config: FinetuneConfig | None = None,
    mapping: Mapping[str, str] | None = None,
    fmt: str = "auto",
    resume: bool = False,
    on_event: Callable[[FinetuneEvent], None] | None = None,
) -> FinetuneResult:
    """Fine-tune SAM 3 from ``model`` on labelled data and write a checkpoint and report to ``out``.

    ``train`` / ``val``: COCO instance or SA-Co JSON (``train`` may be a Roboflow export folder; without
    ``val`` a seeded 15% of the training images is held out). ``images``: the folder of their
    ``file_name`` entries. ``config``: what trains and how (`FinetuneConfig`). ``resume``: continue the
    run saved in ``out`` after its last finished epoch. ``on_event`` receives `FinetuneEvent`s.

    Every input is checked before training starts; problems raise `InputError` subclasses (or
    `ModelSourceError`) with one sentence. Ctrl-C (KeyboardInterrupt) leaves the last finished epoch
    resumable. Returns the report (also in ``out/report.json``).
    """
    run = prepare_run(train, val, out=out, model=model, images=images, config=config, mapping=mapping, fmt=fmt,
                      resume=resume, on_event=on_event)
    run.prepare()
    return run.run()


def prepare_run(
    train: str | Path,
    val: str | Path | None = None,
    *,
    out: str | Path,
    model: str = "facebook/sam3",
    images: str | Path | None = None,
    config: FinetuneConfig | None = None,
    mapping: Mapping[str, str] | None = None,
    fmt: str = "auto",
    resume: bool = False,
    on_event: Callable[[FinetuneEvent], None] | None = None,
) -> Run:
    """Every check of `finetune`, then the model loaded and prepared: a `Run` ready to ``prepare()`` and ``run()``."""
    from sam3studio.translate import get_translator

    cfg = config or FinetuneConfig()
    cfg.check()
    out = Path(out)
    emit = on_event or (lambda _e: None)
    _check_out(out, resume)
    data = load_training_data(train, val, images, mapping, fmt, cfg.val_fraction, cfg.seed)
    check_images(data.train)
    check_images(data.val)
    info = inspect_source(model)
    device = resolve_device(cfg.device)
    dtype = _compute_dtype(cfg.dtype, device, count_parameters(info.model_cls, info.config)[0])
    data_key = _data_key(data, info.source)
    saved = load_state(out / WORK) if resume else None
    extra = _memory_plan(cfg, info, data, device, dtype,
                         (saved["images_per_step"], saved["accumulate"]) if saved is not None else None)
    if cfg.cache == "disk" and cfg.train in ("heads", "lora"):
        check_disk(out, extra["feature_cache"]["bytes"])
    if extra["images_per_step"] != cfg.images_per_step:
        data.notes.append(f"{cfg.images_per_step} images per step would not fit in memory: {extra['images_per_step']} "
                          f"per step, {extra['accumulate']} steps per update")
    if saved is not None:
        changed = cfg.differences(saved["config"])
        if changed:
            raise FinetuneConfigError(f"--resume with other settings than the saved run: {'; '.join(changed)}")
        if saved["data_key"] != data_key:
            raise FinetuneConfigError("--resume with other data (or another --model) than the saved run")
    if info.is_video and cfg.train != "heads":
        emit(FinetuneEvent("note", message="the video tracker shares the vision encoder, which this mode changes: "
                                           "check tracking on the result"))

    for note in data.notes:  # after every check: an error stays the only line printed
        emit(FinetuneEvent("note", message=note))
    torch.manual_seed(cfg.seed)  # the 'random' source's weights, and nothing else random before the run
    emit(FinetuneEvent("note", message=f"loading {info.source}"))
    loaded = load_model(info.source, device=str(device), dtype="float32")
    translator = get_translator("lexicon")
    _check_prompts(loaded.processor, translator, data)
    tm = prepare_model(loaded.model, cfg.train, cfg.lora_rank, cfg.lora_alpha, cfg.lora_layers)
    cache = None
    if cfg.train in ("heads", "lora") and cfg.cache != "off":
        size = loaded.processor.image_processor.size
        layer = tm.lora_layers[0] if tm.lora_layers else None
        fingerprint = model_fingerprint(info, loaded.model, dtype, size) + f"-start{layer}"
        cache = FeatureCache(out / WORK / "cache" if cfg.cache == "disk" else None, fingerprint)
    levels = feature_levels(info.config)
    extra["trainable_parameters"] = sum(p.numel() for p in tm.trainable().values())
    extra["lora_vision_layers"] = tm.lora_layers
    extra["vision_layers"] = vision_layer_count(loaded.model)
    run = Run(cfg, data, info, tm, loaded.processor, translator, device, dtype, out, cache, levels[0][1:], emit,
              data_key, extra)
    if saved is not None:
        run.restore(saved)
        emit(FinetuneEvent("note", message=f"resuming after epoch {saved['epoch']}"))
    return run

