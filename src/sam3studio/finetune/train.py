"""The training loop: one `_Run` per fine-tune, from prepared data and a loaded model to the saved checkpoint.

Per epoch ``e`` every random choice comes from generators seeded with ``(seed, e)``: the image order, each
image's view (``heads``) and its sampled hard negatives, dropout and augmentation. Together with the state
saved after each epoch, a resumed run therefore repeats exactly what an uninterrupted one would have done.

A step takes ``batch_size`` images; each brings all its positive prompts and up to ``negatives`` absent
ones, and every (image, prompt) pair is one row of the detector's batch (vision features repeated per
prompt, as SAM 3 runs several prompts on one image). AdamW, linear warm-up then cosine decay
(transformers' ``get_cosine_schedule_with_warmup``), gradient clipping, gradient accumulation, and autocast
in the compute dtype; weights and optimizer state stay float32.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cachetools import LRUCache

from sam3studio.evaluation.metrics import evaluate
from sam3studio.evaluation.predictions import predict
from sam3studio.finetune.augment import HEADS_VIEWS, Augmenter, PromptTarget, apply_view, model_targets
from sam3studio.finetune.cache import CachedVisionModel, FeatureCache, pixel_key, store_features, vision_output
from sam3studio.finetune.checkpoint import SourceInfo, load_best, save_best, save_checkpoint, save_state
from sam3studio.finetune.config import FinetuneConfig
from sam3studio.finetune.data import ImageTargets, TrainingData, image_targets
from sam3studio.finetune.loss import SetLoss
from sam3studio.finetune.modes import TrainableModel
from sam3studio.finetune.report import gains, headline, monitored, write_report
from sam3studio.finetune.vit import hidden_before, vision_from_hidden
from sam3studio.io.images import load_image

__all__ = ["FinetuneEvent", "FinetuneResult", "Run"]

MAX_TEXT_TOKENS = 32
ENCODE_CHUNK = 4  # images per vision pass while filling the cache
DECODED_CACHE_BYTES = 512 * 1024 * 1024  # decoded training images kept between epochs


@dataclass
class FinetuneEvent:
    """Progress of a fine-tune, for a progress bar (``kind``: note, prepare, eval, start, step, epoch, done)."""

    kind: str
    message: str = ""
    epoch: int = 0
    epochs: int = 0
    step: int = 0  # micro-steps done in the whole run (prepare: items done)
    steps: int = 0  # micro-steps in the whole run (prepare: items to do)
    loss: float | None = None
    metrics: dict[str, float | None] | None = None


@dataclass
class FinetuneResult:
    out: Path
    report: dict[str, Any]

    @property
    def improved(self) -> bool:
        return bool(self.report["improved"])


@dataclass
class _Plan:
    """One epoch's draws: image order, and per image its view and prompts."""

    order: list[int]
    views: dict[int, str | None]
    prompts: dict[int, list[str]]


@dataclass
class Run:
    """A fine-tune in progress (built by `sam3studio.finetune.finetune`)."""

    cfg: FinetuneConfig
    data: TrainingData
    info: SourceInfo
    tm: TrainableModel
    processor: Any
    translator: Any
    device: torch.device
    compute_dtype: torch.dtype
    out: Path
    cache: FeatureCache | None  # heads: FPN levels per view; lora: the ViT state entering the first adapted layer
    mask_size: tuple[int, int]
    on_event: Callable[[FinetuneEvent], None]
    data_key: str
    extra: dict[str, Any] = field(default_factory=dict)  # memory estimate, cache figures: copied to the report

    def __post_init__(self) -> None:
        self.work = self.out / ".finetune"
        self.items: list[ImageTargets] = image_targets(self.data.train)
        self.criterion = SetLoss(self.cfg.loss)
        # lora with a cache starts the ViT at its first adapted layer; fixed views then, as in heads mode
        self.cache_layer = self.tm.lora_layers[0] if self.cfg.train == "lora" and self.cache is not None else None
        self.fixed_views = self.cfg.train == "heads" or self.cache_layer is not None
        self.augment = None if self.fixed_views else Augmenter()
        self.view_keys: dict[tuple[int, str], str] = {}
        self.targets: dict[tuple[int, str], dict[str, PromptTarget]] = {}
        self.text: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._decoded: LRUCache = LRUCache(maxsize=DECODED_CACHE_BYTES, getsizeof=lambda a: a.nbytes)
        self.batch = self.extra.get("images_per_step", self.cfg.images_per_step)
        self.accumulate = self.extra.get("accumulate", self.cfg.accumulate)
        self.micro_steps = math.ceil(len(self.items) / self.batch)
        opt_steps = math.ceil(self.micro_steps / self.accumulate) * self.cfg.epochs
        heads, others = self.tm.param_groups()
        self._params = heads + others
        groups = [{"params": heads, "lr": self.cfg.lr}]
        if others:
            groups.append({"params": others, "lr": self.cfg.lr * self.cfg.encoder_lr_scale})
        self.optimizer = torch.optim.AdamW(groups, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        from transformers import get_cosine_schedule_with_warmup

        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, int(self.cfg.warmup * opt_steps), opt_steps)
        fp16 = self.compute_dtype == torch.float16 and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16)
        self.state: dict[str, Any] = {"epoch": 0, "history": [], "best_epoch": 0, "best_score": None, "stale": 0,
                                      "elapsed": 0.0, "before": None, "best_report": None, "stopped_early": False}

    # ------------------------------------------------------------------ helpers
    def _event(self, kind: str, **kw: Any) -> None:
        kw.setdefault("steps", self.micro_steps * self.cfg.epochs)
        self.on_event(FinetuneEvent(kind, epochs=self.cfg.epochs, **kw))

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.compute_dtype in (torch.bfloat16, torch.float16) and self.device.type in ("cpu", "cuda"):
            return torch.autocast(self.device.type, dtype=self.compute_dtype)
        return contextlib.nullcontext()

    def _seed(self, epoch: int) -> int:
        return self.cfg.seed * 1_000_003 + epoch

    def _image(self, i: int) -> np.ndarray:
        rgb = self._decoded.get(i)
        if rgb is None:
            rgb = self._decoded[i] = load_image(self.items[i].path)
        return rgb

    def _query(self, prompt: str) -> str:
        return self.translator(prompt).query

    def _pixels(self, rgb: np.ndarray) -> torch.Tensor:
        """``(1, 3, S, S)`` model input, cast exactly as `Segmenter` casts it (so cache keys agree)."""
        pv = self.processor.image_processor(images=rgb, return_tensors="pt")["pixel_values"]
        return pv.to(self.device, self.compute_dtype)

    def _tokens(self, queries: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.processor.tokenizer(queries, padding="max_length", max_length=MAX_TEXT_TOKENS, return_tensors="pt")
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def _text_features(self, queries: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self._tokens(queries)
        return self.tm.model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output, mask

    # ------------------------------------------------------------------ preparation
    def prepare(self) -> None:
        """Fixed views: their targets, and their features into the cache; ``heads``: text features once."""
        if not self.fixed_views:
            return
        if self.cfg.train == "heads":
            queries = sorted({self._query(p) for it in self.items for p in it.prompts})
            with torch.no_grad(), self._autocast():
                feats, mask = self._text_features(queries)
            self.text = {q: (feats[i : i + 1].detach(), mask[i : i + 1]) for i, q in enumerate(queries)}
        todo: list[tuple[str, torch.Tensor]] = []
        total = len(self.items) + len(self.data.val.images)
        for i, item in enumerate(self.items):
            rgb, masks = load_image(item.path), item.decode()
            for view in HEADS_VIEWS:
                vrgb, vmasks = apply_view(rgb, masks, view)
                pv = self._pixels(vrgb)
                key = self.view_keys[(i, view)] = pixel_key(pv)
                self.targets[(i, view)] = model_targets(item.prompts, vmasks, self.mask_size)
                if self.cache is not None and key not in self.cache:
                    todo.append((key, pv))
            todo = self._flush(todo, force=False)
            self._event("prepare", message="caching vision features", step=i + 1, steps=total)
        for j, image in enumerate(self.data.val.images):
            pv = self._pixels(load_image(self.data.val.image_path(image)))
            key = pixel_key(pv)
            if self.cache is not None and key not in self.cache:
                todo.append((key, pv))
            todo = self._flush(todo, force=False)
            self._event("prepare", message="caching vision features", step=len(self.items) + j + 1, steps=total)
        self._flush(todo, force=True)

    def _flush(self, todo: list[tuple[str, torch.Tensor]], force: bool) -> list[tuple[str, torch.Tensor]]:
        if self.cache is None or not todo or (len(todo) < ENCODE_CHUNK and not force):
            return todo
        pixels, keys = torch.cat([pv for _, pv in todo]), [k for k, _ in todo]
        with torch.no_grad(), self._autocast():
            if self.cache_layer is None:
                store_features(self.cache, self.tm.model.get_vision_features(pixel_values=pixels), keys)
            else:
                hidden = hidden_before(self.tm.model.vision_encoder, pixels, self.cache_layer)
                for key, h in zip(keys, hidden, strict=True):
                    self.cache.put(key, (h,))
        return []

    # ------------------------------------------------------------------ one step
    def _plan(self, epoch: int) -> _Plan:
        g = torch.Generator().manual_seed(self._seed(epoch))
        order = torch.randperm(len(self.items), generator=g).tolist()
        views: dict[int, str | None] = {}
        prompts: dict[int, list[str]] = {}
        for i in order:
            item = self.items[i]
            views[i] = HEADS_VIEWS[int(torch.randint(len(HEADS_VIEWS), (1,), generator=g))] if self.fixed_views else None
            negs = item.negatives
            picked = {negs[j] for j in torch.randperm(len(negs), generator=g)[: self.cfg.negatives].tolist()} if negs else set()
            prompts[i] = [p for p in item.prompts if p in item.instances or p in picked]
        return _Plan(order, views, prompts)

    def _heads_inputs(self, batch: list[int], plan: _Plan) -> tuple[Any, torch.Tensor, torch.Tensor, list[PromptTarget]]:
        rows = [(b, p) for b, i in enumerate(batch) for p in plan.prompts[i]]
        if self.cache is not None:
            per_image = [self.cache.get(self.view_keys[(i, plan.views[i])]) for i in batch]
            levels = [torch.stack(ts).to(self.device) for ts in zip(*per_image, strict=True)]
            position = self.cache.position
        else:  # no cache: the frozen encoder runs here, without gradients
            pvs = []
            for i in batch:
                rgb, _ = apply_view(self._image(i), {}, plan.views[i])
                pvs.append(self._pixels(rgb))
            with torch.no_grad(), self._autocast():
                vision = self.tm.model.get_vision_features(pixel_values=torch.cat(pvs))
            levels = list(vision.fpn_hidden_states[:-1])
            position = tuple(p[:1] for p in vision.fpn_position_encoding[:-1])
        idx = torch.tensor([b for b, _ in rows], device=self.device)
        vision_in = vision_output([lv.index_select(0, idx) for lv in levels], tuple(p.to(self.device) for p in position))
        text = torch.cat([self.text[self._query(p)][0] for _, p in rows])
        mask = torch.cat([self.text[self._query(p)][1] for _, p in rows])
        targets = [self.targets[(batch[b], plan.views[batch[b]])][p] for b, p in rows]
        return vision_in, text, mask, targets

    def _encoder_inputs(self, batch: list[int], plan: _Plan) -> tuple[Any, torch.Tensor, torch.Tensor, list[PromptTarget]]:
        """``all``, and ``lora`` without a cache: a fresh augmentation of each image, the encoder with gradients."""
        targets, pvs = [], []
        for i in batch:
            item = self.items[i]
            rgb, masks = self.augment(self._image(i), item.decode())
            targets.append(model_targets(plan.prompts[i], masks, self.mask_size))
            pvs.append(self._pixels(rgb))
        vision = self.tm.model.get_vision_features(pixel_values=torch.cat(pvs))
        return self._rows(vision, batch, plan, targets)

    def _cached_hidden_inputs(self, batch: list[int], plan: _Plan) -> tuple[Any, torch.Tensor, torch.Tensor, list[PromptTarget]]:
        """``lora`` with a cache: the ViT from its first adapted layer on, for each image's fixed view."""
        keys = [self.view_keys[(i, plan.views[i])] for i in batch]
        hidden = torch.stack([self.cache.get(k)[0] for k in keys]).to(self.device)
        vision = vision_from_hidden(self.tm.model.vision_encoder, hidden, self.cache_layer)
        return self._rows(vision, batch, plan, [self.targets[(i, plan.views[i])] for i in batch])

    def _rows(self, vision: Any, batch: list[int], plan: _Plan,
              targets: list[dict[str, PromptTarget]]) -> tuple[Any, torch.Tensor, torch.Tensor, list[PromptTarget]]:
        """One detector row per (image, prompt): vision features repeated, text features computed (with gradients)."""
        rows = [(b, p) for b, i in enumerate(batch) for p in plan.prompts[i]]
        idx = torch.tensor([b for b, _ in rows], device=self.device)
        levels = [lv.index_select(0, idx) for lv in vision.fpn_hidden_states[:-1]]
        vision_in = vision_output(levels, tuple(p[:1] for p in vision.fpn_position_encoding[:-1]))
        queries = list(dict.fromkeys(self._query(p) for _, p in rows))
        feats, mask = self._text_features(queries)
        pick = torch.tensor([queries.index(self._query(p)) for _, p in rows], device=self.device)
        return vision_in, feats.index_select(0, pick), mask.index_select(0, pick), [targets[b][p] for b, p in rows]

    def _forward(self, batch: list[int], plan: _Plan) -> dict[str, torch.Tensor]:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        with self._autocast():
            if self.cfg.train == "heads":
                inputs = self._heads_inputs
            else:
                inputs = self._encoder_inputs if self.cache_layer is None else self._cached_hidden_inputs
            vision, text, mask, targets = inputs(batch, plan)
            outputs = self.tm.model(vision_embeds=vision, text_embeds=BaseModelOutputWithPooling(pooler_output=text),
                                    attention_mask=mask)
        return self.criterion(outputs, targets)

    # ------------------------------------------------------------------ epochs
    def _step(self, batch: list[int], plan: _Plan, group: int, update: bool) -> dict[str, float]:
        """One micro-batch forward and backward; ``update``: then clip and take the optimizer step."""
        losses = self._forward(batch, plan)
        self.scaler.scale(losses["loss"] / group).backward()
        if update:
            self.scaler.unscale_(self.optimizer)
            if self.cfg.clip:
                torch.nn.utils.clip_grad_norm_(self._params, self.cfg.clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return {name: float(value.detach()) for name, value in losses.items()}

    def train_epoch(self, epoch: int) -> dict[str, float]:
        plan = self._plan(epoch)
        torch.manual_seed(self._seed(epoch))  # dropout and augmentation
        batches = [plan.order[i : i + self.batch] for i in range(0, len(plan.order), self.batch)]
        acc = self.accumulate
        sums: dict[str, float] = {}
        self.tm.set_train()
        self.optimizer.zero_grad(set_to_none=True)
        for k, batch in enumerate(batches):
            group = min(acc, len(batches) - (k // acc) * acc)  # micro-batches in this optimizer step
            losses = self._step(batch, plan, group, update=(k + 1) % acc == 0 or k + 1 == len(batches))
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value
            self._event("step", epoch=epoch, step=(epoch - 1) * self.micro_steps + k + 1, loss=sums["loss"] / (k + 1))
        return {name: value / len(batches) for name, value in sums.items()}

    def time_steps(self, n: int) -> list[float]:
        """Seconds of each of ``n`` training steps (forward, backward, optimizer) on epoch 1's draws (benchmarks)."""
        plan = self._plan(1)
        torch.manual_seed(self._seed(1))
        self.tm.set_train()
        times = []
        for k in range(n):
            batch = [plan.order[(k * self.batch + j) % len(plan.order)] for j in range(self.batch)]
            t0 = time.perf_counter()
            self._step(batch, plan, 1, update=True)
            times.append(time.perf_counter() - t0)
        return times

    def validate(self) -> dict[str, Any]:
        """The project's evaluator on the validation split; returns `EvalReport.to_dict()`."""
        from sam3studio.core import Segmenter

        self.tm.model.eval()
        model = self.tm.model
        if self.cache is not None:
            model = CachedVisionModel(model, self.cache, self.cache_layer)
        segmenter = Segmenter(model, self.processor, device=self.device, dtype=self.compute_dtype,
                              translator=self.translator, source=self.info.source)
        report = evaluate(self.data.val, predict(segmenter, self.data.val), score_threshold=self.cfg.score_threshold)
        return report.to_dict()

    def _save_state(self) -> None:
        save_state(self.work, {**self.state, "config": self.cfg.to_dict(), "data_key": self.data_key,
                               "images_per_step": self.batch, "accumulate": self.accumulate,
                               "trainable": self.tm.trainable_state(), "optimizer": self.optimizer.state_dict(),
                               "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict()})

    def restore(self, saved: dict[str, Any]) -> None:
        self.tm.load_trainable_state(saved["trainable"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        self.state = {k: saved[k] for k in self.state}

    def run(self) -> FinetuneResult:
        """Zero-shot evaluation (unless resumed past it), the epochs, then the checkpoint and the report."""
        start = time.perf_counter() - self.state["elapsed"]
        if self.state["before"] is None:
            self._event("eval", message="zero-shot evaluation")
            self.state["before"] = self.validate()
            self.state["elapsed"] = time.perf_counter() - start
            self._save_state()
        self._event("start", epoch=self.state["epoch"], step=self.state["epoch"] * self.micro_steps,
                    metrics=headline(self.state["before"]))
        for epoch in range(self.state["epoch"] + 1, self.cfg.epochs + 1):
            t0 = time.perf_counter()
            losses = self.train_epoch(epoch)
            report = self.validate()
            self._end_epoch(epoch, losses, report, time.perf_counter() - t0)
            self.state["elapsed"] = time.perf_counter() - start
            self._save_state()
            self._event("epoch", epoch=epoch, step=epoch * self.micro_steps, loss=losses["loss"],
                        metrics=headline(report))
            if self.cfg.patience is not None and self.state["stale"] >= self.cfg.patience:
                self.state["stopped_early"] = True
                self._event("note", message=f"early stop: no better validation AP for {self.cfg.patience} epochs")
                break
        return self.finish(time.perf_counter() - start)

    def _end_epoch(self, epoch: int, losses: dict[str, float], report: dict[str, Any], seconds: float) -> None:
        score = monitored(report)
        st = self.state
        st["epoch"] = epoch
        st["history"].append({"epoch": epoch, "loss": losses["loss"], "losses": losses, "seconds": seconds,
                              "lr": self.scheduler.get_last_lr()[0], "val": headline(report)})
        if st["best_score"] is None or score > st["best_score"]:
            st["best_score"], st["best_epoch"], st["best_report"], st["stale"] = score, epoch, report, 0
            save_best(self.work, self.tm.trainable_state())
        else:
            st["stale"] += 1

    def finish(self, wall_s: float) -> FinetuneResult:
        """Save the best epoch's weights as a checkpoint of the source's kind, write the report, clean up."""
        self._event("note", message=f"saving the checkpoint of epoch {self.state['best_epoch']}")
        self.tm.load_trainable_state(load_best(self.work))
        save_checkpoint(self.tm.merged(), self.processor, self.info, self.out)
        st = self.state
        before, after = st["before"], st["best_report"]
        report = {
            "format": "sam3studio-finetune-report", "version": 1,
            "source": self.info.source, "architecture": self.info.model_type,
            "dtype": str(self.info.dtype).removeprefix("torch."), "output": str(self.out), "device": str(self.device),
            "compute_dtype": str(self.compute_dtype).removeprefix("torch."),
            "settings": self.cfg.to_dict(), "data": self.data.summary(), "notes": list(self.data.notes),
            "before": before, "after": after, "gain": gains(before, after),
            "improved": monitored(after) > monitored(before), "best_epoch": st["best_epoch"],
            "epochs_run": st["epoch"], "stopped_early": st["stopped_early"], "history": st["history"],
            "wall_s": wall_s, **self.extra,
        }
        if self.cache is not None and not self.cfg.keep_cache:
            self.cache.remove()
        for name in ("state.pt", "best.safetensors"):
            (self.work / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.work.rmdir() if not any(self.work.iterdir()) else None
        write_report(report, self.out)
        self._event("done", epoch=st["epoch"], metrics=headline(after))
        return FinetuneResult(self.out, report)


def remove_work(out: Path) -> None:
    shutil.rmtree(out / ".finetune", ignore_errors=True)
