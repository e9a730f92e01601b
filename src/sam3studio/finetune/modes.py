"""What trains in each mode, and LoRA adapters through ``peft``.

- ``heads``: the DETR encoder and decoder (with the box head and the presence token), the score head
  (``dot_product_scoring``) and the mask decoder. The vision encoder (ViT + FPN neck), the text encoder
  with its projection, and the geometry (exemplar box) encoder stay frozen, bit for bit.
- ``lora``: the heads, plus LoRA adapters on the attention projections of the vision encoder's last
  layers and of every text-encoder layer. On save the adapters are merged into the weights
  (``merge_and_unload``), so the checkpoint is a plain one of the source's architecture.
- ``all``: every parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["HEAD_MODULES", "TrainableModel", "prepare_model"]

HEAD_MODULES = ("detr_encoder", "detr_decoder", "dot_product_scoring", "mask_decoder")
FROZEN_IN_HEADS = ("vision_encoder", "text_encoder", "text_projection", "geometry_encoder")
_VIT_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_TEXT_ATTENTION = ("q_proj", "k_proj", "v_proj", "out_proj")


@dataclass
class TrainableModel:
    """The model being trained (``peft``-wrapped in ``lora`` mode) and what trains in it."""

    model: Any  # the Sam3Model (with LoRA layers injected in lora mode): what forward passes run on
    wrapper: Any  # the peft model in lora mode, else the same as ``model``
    mode: str
    lora_layers: list[int]

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def param_groups(self) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
        """Trainable parameters of the heads, and the others (encoders in ``all``, adapters in ``lora``)."""
        heads, others = [], []
        for name, p in self.trainable().items():
            (heads if name.split(".")[0] in HEAD_MODULES else others).append(p)
        return heads, others

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().to("cpu", copy=True) for n, p in self.trainable().items()}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        params = self.trainable()
        unknown = sorted(set(state) - set(params))
        if unknown or len(state) != len(params):
            raise ValueError(f"saved training state does not fit this model ({len(unknown)} unknown tensors)")
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value)

    def set_train(self) -> None:
        """Training mode for what trains; frozen encoders stay in eval mode (no dropout in them)."""
        self.model.train()
        if self.mode == "heads":
            for name in FROZEN_IN_HEADS:
                getattr(self.model, name).eval()

    def merged(self) -> Any:
        """The plain model to save: LoRA adapters merged into their weights (other modes: the model)."""
        if self.mode != "lora":
            return self.model
        return self.wrapper.merge_and_unload()


def vision_layer_count(model: Any) -> int:
    return len(model.vision_encoder.backbone.layers)


def prepare_model(model: Any, mode: str, lora_rank: int = 8, lora_alpha: float = 16.0,
                  lora_layers: int | None = None) -> TrainableModel:
    """Freeze what does not train in ``mode``; in ``lora`` mode inject adapters (``peft``) first."""
    for p in model.parameters():
        p.requires_grad_(mode == "all")
    if mode == "all":
        return TrainableModel(model, model, mode, [])
    wrapper, adapted = model, []
    if mode == "lora":
        wrapper, adapted = _inject_lora(model, lora_rank, lora_alpha, lora_layers)
    for name in HEAD_MODULES:
        for p in getattr(model, name).parameters():
            p.requires_grad_(True)
    return TrainableModel(model, wrapper, mode, adapted)


def _inject_lora(model: Any, rank: int, alpha: float, layers: int | None) -> tuple[Any, list[int]]:
    from peft import LoraConfig, get_peft_model

    n = vision_layer_count(model)
    count = min(n, layers if layers is not None else max(1, n // 8))
    adapted = list(range(n - count, n))
    vit = "|".join(str(i) for i in adapted)
    targets = (rf"vision_encoder\.backbone\.layers\.({vit})\.attention\.({'|'.join(_VIT_ATTENTION)})"
               rf"|text_encoder\.text_model\.encoder\.layers\.\d+\.self_attn\.({'|'.join(_TEXT_ATTENTION)})")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets, bias="none")
    wrapper = get_peft_model(model, config)
    return wrapper, adapted
