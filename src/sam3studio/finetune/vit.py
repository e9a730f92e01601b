"""SAM 3's vision encoder split at a layer, for the ``lora`` feature cache.

In ``lora`` mode only the last vision layers carry adapters, so everything below the first adapted layer
is frozen: its output is cached per image view (at full size 72 x 72 x 1024 values, about 10.6 MB per
view in bf16) and each step runs only the adapted layers, the FPN neck and the heads.

transformers has no entry point that starts the ViT at a given layer, so `hidden_before` and
`vision_from_hidden` repeat the steps of ``Sam3ViTModel.forward`` and ``Sam3VisionModel.forward`` (patch
and position embeddings, the pre-norm, the layers on a ``(B, h, w, C)`` grid, then the neck);
tests/test_finetune.py checks that the two halves give exactly what ``get_vision_features`` gives.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["hidden_bytes_per_view", "hidden_before", "vision_from_hidden"]


def _grid(vision_model: Any, pixel_values: torch.Tensor) -> tuple[int, int]:
    patch = vision_model.config.backbone_config.patch_size
    return pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch


def hidden_before(vision_model: Any, pixel_values: torch.Tensor, layer: int) -> torch.Tensor:
    """The ViT's hidden state entering layer ``layer``: ``(B, h, w, C)``."""
    backbone = vision_model.backbone
    h, w = _grid(vision_model, pixel_values)
    hidden = backbone.embeddings(pixel_values)
    hidden = backbone.layer_norm(hidden.view(hidden.shape[0], h, w, hidden.shape[-1]))
    for block in backbone.layers[:layer]:
        hidden = block(hidden)
    return hidden


def vision_from_hidden(vision_model: Any, hidden: torch.Tensor, layer: int) -> Any:
    """The vision encoder's output (``Sam3VisionEncoderOutput``) from `hidden_before` ``(B, h, w, C)``."""
    from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

    for block in vision_model.backbone.layers[layer:]:
        hidden = block(hidden)
    b, h, w, c = hidden.shape
    fpn, position = vision_model.neck(hidden.permute(0, 3, 1, 2))
    return Sam3VisionEncoderOutput(last_hidden_state=hidden.reshape(b, h * w, c), fpn_hidden_states=fpn,
                                   fpn_position_encoding=position)


def hidden_bytes_per_view(config: Any, dtype: torch.dtype) -> int:
    b = config.vision_config.backbone_config
    return (b.image_size // b.patch_size) ** 2 * b.hidden_size * torch.empty(0, dtype=dtype).element_size()
