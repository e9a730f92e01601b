"""Memory and disk estimates made before anything heavy is loaded, and the refusal when they will not fit.

The model is counted from its config on PyTorch's ``meta`` device (no weights are read). The estimate:

- weights: every parameter in float32 (weights train in float32 whatever the source's dtype);
- optimizer: gradient + AdamW's two moments for each trainable parameter (12 bytes);
- activations kept for the backward pass, per (image, prompt) pair in the heads (the pixel decoder's maps,
  the per-query mask logits, the DETR encoder's tokens and the decoder's cross-attention), plus per image
  the vision-encoder layers that need gradients (every layer in ``all``, the adapted ones in ``lora``;
  attention through PyTorch's fused kernels, which keep no token x token matrix);
- the feature cache, when it is kept in memory;
- a fixed allowance for the process itself (PyTorch, the evaluator, images).

It is an order-of-magnitude figure (docs/finetune.md compares it with measured peaks); it exists to refuse a
run that cannot fit before the first hour of work, not to plan to the last megabyte.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sam3studio.errors import InputTooLargeError
from sam3studio.finetune.cache import feature_levels
from sam3studio.finetune.modes import HEAD_MODULES

__all__ = ["MemoryEstimate", "available_memory", "count_parameters", "estimate_memory", "check_disk"]

GB = 1024**3
PROCESS_ALLOWANCE = int(0.75 * GB)
MB = 1024**2


def size_text(n: float) -> str:
    """``"2.4 GB"`` from a gigabyte up, ``"38 MB"`` below (a small budget or part is not rounded to 0.0 GB)."""
    return f"{n / GB:.1f} GB" if n >= GB else f"{max(n, 0) / MB:.0f} MB"


@dataclass
class MemoryEstimate:
    parts: dict[str, int] = field(default_factory=dict)  # bytes per item
    available: int | None = None
    where: str = "memory"

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        shown = ", ".join(f"{k} {size_text(v)}" for k, v in self.parts.items() if v >= MB)
        return f"about {size_text(self.total)} ({shown})"

    def to_dict(self) -> dict[str, Any]:
        return {"parts_bytes": dict(self.parts), "total_bytes": self.total, "available_bytes": self.available,
                "where": self.where}


def available_memory(device: torch.device) -> tuple[int, str]:
    """Bytes free now on ``device`` (GPU memory for CUDA, else the machine's available RAM)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free), f"free on {device}"
    import psutil

    return int(psutil.virtual_memory().available), "available RAM"


def count_parameters(model_cls: Any, config: Any) -> tuple[int, dict[str, int]]:
    """Total parameters and per top-level module, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = model_cls(config)
    per: dict[str, int] = {}
    for name, p in model.named_parameters():
        top = name.split(".")[0]
        per[top] = per.get(top, 0) + p.numel()
    return sum(per.values()), per


def _head_pair_elements(config: Any) -> int:
    levels = feature_levels(config)
    c0, h0, w0 = levels[0]
    queries = config.detr_decoder_config.num_queries
    enc = config.detr_encoder_config
    dec = config.detr_decoder_config
    tokens = levels[-1][1] * levels[-1][2]
    maps = 4 * sum(c * h * w for c, h, w in levels) + 2 * queries * h0 * w0
    encoder = enc.num_layers * tokens * enc.hidden_size * 10
    decoder = dec.num_layers * (queries * dec.hidden_size * 12 + dec.num_attention_heads * queries * tokens * 2)
    return maps + encoder + decoder


def _vit_layer_elements(config: Any) -> int:
    b = config.vision_config.backbone_config
    tokens = (b.image_size // b.patch_size) ** 2
    return tokens * (b.hidden_size * 12 + b.intermediate_size * 3)


def estimate_memory(model_cls: Any, config: Any, mode: str, *, images_per_step: int, pairs_per_image: float,
                    compute_dtype: torch.dtype, cache_bytes: int = 0, lora_layers: int = 0, lora_rank: int = 8) -> MemoryEstimate:
    """The estimate described in the module docstring, in bytes per part."""
    total, per = count_parameters(model_cls, config)
    if mode == "all":
        trainable = total
    else:
        trainable = sum(per.get(m, 0) for m in HEAD_MODULES)
    if mode == "lora":
        b, t = config.vision_config.backbone_config, config.text_config
        trainable += lora_layers * 4 * lora_rank * 2 * b.hidden_size
        trainable += getattr(t, "num_hidden_layers", 0) * 4 * lora_rank * 2 * getattr(t, "hidden_size", 0)
    act_bytes = 2 if compute_dtype in (torch.bfloat16, torch.float16) else 4
    pairs = max(1, math.ceil(images_per_step * pairs_per_image))
    parts = {
        "weights": 4 * total,
        "optimizer": 12 * trainable,
        "activations": pairs * _head_pair_elements(config) * (act_bytes + 1),
        "process": PROCESS_ALLOWANCE,
    }
    vit_layers = {"all": config.vision_config.backbone_config.num_hidden_layers, "lora": lora_layers}.get(mode, 0)
    if vit_layers:
        parts["activations"] += images_per_step * vit_layers * _vit_layer_elements(config) * (act_bytes + 1)
    if cache_bytes:
        parts["feature cache"] = cache_bytes
    return MemoryEstimate(parts)


def refuse_if_too_big(estimate: MemoryEstimate, available: int, where: str, advice: str) -> None:
    """Raise `InputTooLargeError` with the estimate when it exceeds 90% of ``available``."""
    estimate.available, estimate.where = available, where
    if estimate.total > 0.9 * available:
        raise InputTooLargeError(f"this fine-tune needs {estimate.describe()} but only {size_text(available)} is "
                                 f"{where}; {advice}")


def check_disk(folder: Path, needed: int) -> None:
    """Refuse when the feature cache will not fit on the disk holding ``folder``."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > 0.95 * free:
        raise InputTooLargeError(f"the feature cache needs about {size_text(needed)} but {probe} has {size_text(free)} "
                                 "free; use --cache memory, --cache off, or another --out")
