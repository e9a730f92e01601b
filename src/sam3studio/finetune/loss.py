"""SAM 3's set loss for one batch of (image view, prompt) pairs.

Each pair's queries are matched one to one to its instances by the Hungarian algorithm on
classification, L1 and GIoU costs; then

- classification: sigmoid focal loss on every query's logit (matched queries 1, the rest 0);
- boxes: L1 + GIoU between matched queries and their instances;
- masks: BCE + dice between matched queries' mask logits and their instances' masks;
- presence: BCE of the prompt's presence logit against "has at least one instance".

Hard negatives (prompts absent from the image) have no instances: no query is matched, every query's
classification target is 0 and the presence target is 0, which is what keeps "no match" honest.

The matcher and the classification and box losses are transformers' Deformable-DETR pieces
(``loss_deformable_detr``: the sigmoid-focal Hungarian matcher and ``ImageLoss``, with one class);
dice is transformers' ``dice_loss``. Written here: the adaptation of SAM 3's outputs (one logit per
query, XYXY boxes) to those pieces, the mask BCE on matched queries and the presence BCE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import box_convert
from transformers.loss.loss_deformable_detr import DeformableDetrHungarianMatcher, DeformableDetrImageLoss
from transformers.loss.loss_for_object_detection import dice_loss

from sam3studio.finetune.augment import PromptTarget

__all__ = ["LossWeights", "SetLoss"]


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (the matcher uses class, bbox and giou as its costs)."""

    cls: float = 2.0
    bbox: float = 5.0
    giou: float = 2.0
    mask: float = 5.0
    dice: float = 5.0
    presence: float = 2.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


class SetLoss:
    """``loss(outputs, targets) -> {"loss": total, "cls": ..., ...}`` for SAM 3 outputs of a batch of pairs."""

    def __init__(self, weights: LossWeights | None = None, focal_alpha: float = 0.25) -> None:
        self.weights = weights or LossWeights()
        matcher = DeformableDetrHungarianMatcher(class_cost=self.weights.cls, bbox_cost=self.weights.bbox,
                                                 giou_cost=self.weights.giou)
        self.criterion = DeformableDetrImageLoss(matcher, num_classes=1, focal_alpha=focal_alpha, losses=["labels", "boxes"])

    def __call__(self, outputs, targets: Sequence[PromptTarget]) -> dict[str, torch.Tensor]:
        logits = outputs.pred_logits.float()[..., None]  # (B, Q, 1): one class, "matches the prompt"
        boxes = box_convert(outputs.pred_boxes.float(), "xyxy", "cxcywh")
        device = logits.device
        dets = [{"class_labels": torch.zeros(len(t.boxes), dtype=torch.int64, device=device),
                 "boxes": t.boxes.to(device)} for t in targets]
        preds = {"logits": logits, "pred_boxes": boxes}
        indices = self.criterion.matcher(preds, dets)
        num = max(1.0, float(sum(len(t.boxes) for t in targets)))
        parts = self.criterion.get_loss("labels", preds, dets, indices, num)
        if any(len(i) for i, _ in indices):
            parts.update(self.criterion.get_loss("boxes", preds, dets, indices, num))
            parts.update(self._mask_losses(outputs.pred_masks, targets, indices, num))
        else:  # a batch of hard negatives only: nothing to regress
            zero = logits.sum() * 0
            parts.update(loss_bbox=zero, loss_giou=zero, loss_mask=zero, loss_dice=zero)
        present = torch.tensor([float(t.present) for t in targets], device=device)
        presence = F.binary_cross_entropy_with_logits(outputs.presence_logits.float().reshape(-1), present)
        w = self.weights
        named = {"cls": parts["loss_ce"], "bbox": parts["loss_bbox"], "giou": parts["loss_giou"],
                 "mask": parts["loss_mask"], "dice": parts["loss_dice"], "presence": presence}
        total = sum(getattr(w, k) * v for k, v in named.items())
        return {"loss": total, **named}

    @staticmethod
    def _mask_losses(pred_masks: torch.Tensor, targets: Sequence[PromptTarget], indices, num: float) -> dict[str, torch.Tensor]:
        src = torch.cat([pred_masks[b, i] for b, (i, _) in enumerate(indices)]).float()  # (M, h, w) logits
        tgt = torch.cat([t.masks[j].to(src.device) for t, (_, j) in zip(targets, indices, strict=True)]).float()
        if tgt.shape[-2:] != src.shape[-2:]:
            tgt = F.interpolate(tgt[None], size=src.shape[-2:], mode="bilinear", align_corners=False)[0]
        src, tgt = src.flatten(1), tgt.flatten(1)
        bce = F.binary_cross_entropy_with_logits(src, tgt, reduction="none").mean(1).sum() / num
        return {"loss_mask": bce, "loss_dice": dice_loss(src, tgt, num)}
