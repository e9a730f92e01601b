"""Fine-tuning settings: one dataclass, checked before anything is loaded."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sam3studio.errors import InputError
from sam3studio.finetune.loss import LossWeights

__all__ = ["CACHE_MODES", "DEFAULT_BATCH", "DEFAULT_LR", "RESUME_FREE", "TRAIN_MODES", "FinetuneConfig", "FinetuneConfigError"]

TRAIN_MODES = ("heads", "lora", "all")
CACHE_MODES = ("disk", "memory", "off")
# The heads' learning rate; encoders (``all``) and LoRA adapters train at ``encoder_lr_scale`` of it, as
# DETR-style detectors fine-tune their backbone more gently than their heads (docs/finetune.md).
DEFAULT_LR = 1e-3
# Images per step: small batches give the set-prediction heads more steps per epoch, which on a few
# hundred images matters more than a smoother gradient (docs/finetune.md has the figures).
DEFAULT_BATCH = {"heads": 4, "lora": 2, "all": 2}
# Settings a resumed run may change: they do not alter what is computed.
RESUME_FREE = ("cache", "keep_cache", "memory_budget_gb")


class FinetuneConfigError(InputError):
    """A fine-tuning setting is out of range, or a resumed run's settings differ from the first run's."""


@dataclass
class FinetuneConfig:
    """What to train and how (see docs/finetune.md for each setting's role)."""

    train: str = "heads"  # heads | lora | all
    epochs: int = 20
    lr: float = DEFAULT_LR  # the heads' learning rate
    encoder_lr_scale: float = 0.3  # encoders (all) and LoRA adapters (lora) train at lr x this
    batch_size: int | None = None  # images per step (each brings all its prompts); None: DEFAULT_BATCH of the mode
    accumulate: int = 1  # micro-batches per optimizer step
    warmup: float = 0.05  # fraction of the optimizer steps spent warming up linearly
    weight_decay: float = 1e-4
    clip: float = 1.0  # gradient norm clipping (0: off)
    seed: int = 0
    patience: int | None = 10  # epochs without a better validation AP before stopping (None: never)
    negatives: int = 3  # hard-negative prompts per image and step (0: none)
    cache: str = "disk"  # heads mode: vision features on disk, in memory, or recomputed (off)
    keep_cache: bool = False  # keep the feature cache after a successful run
    device: str = "auto"
    dtype: str = "auto"  # compute dtype under autocast; weights train in float32 and save in the source's dtype
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_layers: int | None = None  # last N vision layers adapted (None: an eighth of them, at least one)
    val_fraction: float = 0.15  # held out when no validation split is given
    score_threshold: float = 0.5  # for the presence and cgF1 numbers of the reports
    memory_budget_gb: float | None = None  # None: what the device has available now
    loss: LossWeights = field(default_factory=LossWeights)

    @property
    def images_per_step(self) -> int:
        return self.batch_size if self.batch_size is not None else DEFAULT_BATCH.get(self.train, 2)

    def check(self) -> None:
        """Raise `FinetuneConfigError` for any setting out of range."""
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise FinetuneConfigError(message)

        need(self.train in TRAIN_MODES, f"--train must be one of {', '.join(TRAIN_MODES)}, got {self.train!r}")
        need(self.cache in CACHE_MODES, f"--cache must be one of {', '.join(CACHE_MODES)}, got {self.cache!r}")
        need(isinstance(self.epochs, int) and self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}")
        need(0 < self.lr < 1, f"--lr must be in (0, 1), got {self.lr}")
        need(0 < self.encoder_lr_scale <= 10, f"the encoder learning-rate scale must be in (0, 10], got {self.encoder_lr_scale}")
        need(self.batch_size is None or self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}")
        need(self.accumulate >= 1, f"--accumulate must be at least 1, got {self.accumulate}")
        need(0 <= self.warmup < 1, f"--warmup must be a fraction in [0, 1), got {self.warmup}")
        need(self.weight_decay >= 0, f"weight decay must not be negative, got {self.weight_decay}")
        need(self.clip >= 0, f"--clip must not be negative, got {self.clip}")
        need(self.patience is None or self.patience >= 1, f"--patience must be at least 1, got {self.patience}")
        need(self.negatives >= 0, f"--negatives must not be negative, got {self.negatives}")
        need(self.lora_rank >= 1, f"--lora-rank must be at least 1, got {self.lora_rank}")
        need(self.lora_layers is None or self.lora_layers >= 1, f"--lora-layers must be at least 1, got {self.lora_layers}")
        need(0 < self.val_fraction < 1, f"the validation fraction must be in (0, 1), got {self.val_fraction}")
        need(0 < self.score_threshold <= 1, f"the score threshold must be in (0, 1], got {self.score_threshold}")
        need(self.memory_budget_gb is None or self.memory_budget_gb > 0, "the memory budget must be positive")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["images_per_step"] = self.images_per_step
        return out

    def differences(self, saved: dict[str, Any]) -> list[str]:
        """Settings of ``saved`` (a first run's `to_dict`) that this one changes, except `RESUME_FREE`."""
        mine = self.to_dict()
        return [f"{k} {saved.get(k)!r} -> {v!r}" for k, v in mine.items() if k not in RESUME_FREE and saved.get(k) != v]
