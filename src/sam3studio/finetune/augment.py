"""Image views and augmentation that keep masks aligned, and targets in SAM 3's model space.

- ``heads`` mode trains on fixed views (`HEADS_VIEWS`: the image and its horizontal flip) because their
  vision features are computed once and cached.
- ``lora`` and ``all`` run the vision encoder every step, so each step draws a fresh augmentation
  (`Augmenter`: horizontal flip, scale jitter with a small shift, colour jitter), applied to the image
  and its instance masks together by torchvision's ``transforms.v2``.

Model space: SAM 3 resizes every image to a square without keeping the aspect ratio, so a target box is
the mask's box normalised by the image's width and height (``cx, cy, w, h`` in [0, 1], as the DETR losses
take it) and a target mask is the instance mask resized to the model's low-resolution mask size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["HEADS_VIEWS", "Augmenter", "PromptTarget", "apply_view", "model_targets"]

HEADS_VIEWS = ("orig", "hflip")
MIN_INSTANCE_PIXELS = 4  # an instance pushed (almost) out of the frame by augmentation no longer counts


@dataclass
class PromptTarget:
    """One prompt on one image view, in model space; no boxes means the prompt is absent (presence 0)."""

    boxes: torch.Tensor  # (n, 4) float32, normalised cx, cy, w, h
    masks: torch.Tensor  # (n, h, w) float16 soft masks in [0, 1] at the model's mask resolution

    @property
    def present(self) -> bool:
        return len(self.boxes) > 0


def apply_view(rgb: np.ndarray, masks: dict[str, np.ndarray], view: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One of `HEADS_VIEWS` applied to an ``(H, W, 3)`` image and its ``(n, H, W)`` masks."""
    if view == "orig":
        return rgb, masks
    if view == "hflip":
        return np.ascontiguousarray(rgb[:, ::-1]), {p: np.ascontiguousarray(m[:, :, ::-1]) for p, m in masks.items()}
    raise ValueError(f"unknown view {view!r}; expected one of {HEADS_VIEWS}")


class Augmenter:
    """Random flip, scale jitter (0.75-1.25 with up to 10% shift) and brightness, contrast and saturation jitter;
    masks follow the pixels.

    Draws from torch's global generator: the training loop seeds it per epoch, so runs repeat.
    """

    def __init__(self, scale: tuple[float, float] = (0.75, 1.25), translate: float = 0.1, colour: float = 0.3) -> None:
        from torchvision import tv_tensors
        from torchvision.transforms import v2

        self._tv = tv_tensors
        self.transform = v2.Compose([
            v2.RandomHorizontalFlip(0.5),
            v2.RandomApply([v2.RandomAffine(degrees=0.0, translate=(translate, translate), scale=scale,
                                            fill={tv_tensors.Image: 114, tv_tensors.Mask: 0})], p=0.8),
            # no hue jitter: its HSV round trip cost more than the rest of a tiny-model step
            v2.ColorJitter(brightness=colour, contrast=colour, saturation=colour),
        ])

    def __call__(self, rgb: np.ndarray, masks: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        prompts = list(masks)
        counts = [len(masks[p]) for p in prompts]
        h, w = rgb.shape[:2]
        stacked = np.concatenate([masks[p] for p in prompts]) if prompts else np.zeros((0, h, w), bool)
        image = self._tv.Image(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1))
        out_image, out_masks = self.transform(image, self._tv.Mask(torch.from_numpy(stacked)))
        out_rgb = out_image.permute(1, 2, 0).numpy()
        out_np = out_masks.numpy().astype(bool)
        result: dict[str, np.ndarray] = {}
        start = 0
        for p, n in zip(prompts, counts, strict=True):
            kept = [m for m in out_np[start : start + n] if m.sum() >= MIN_INSTANCE_PIXELS]
            start += n
            if kept:
                result[p] = np.stack(kept)
        return np.ascontiguousarray(out_rgb), result


def model_targets(prompts: list[str], masks: dict[str, np.ndarray], mask_size: tuple[int, int]) -> dict[str, PromptTarget]:
    """Every prompt's `PromptTarget` for one image view (absent prompts get empty targets)."""
    from torchvision.ops import box_convert, masks_to_boxes

    empty = PromptTarget(torch.zeros(0, 4), torch.zeros(0, *mask_size, dtype=torch.float16))
    out: dict[str, PromptTarget] = {}
    for p in prompts:
        m = masks.get(p)
        if m is None or not len(m):
            out[p] = empty
            continue
        t = torch.from_numpy(np.ascontiguousarray(m))
        h, w = t.shape[-2:]
        boxes = masks_to_boxes(t).float()
        boxes[:, 2:] += 1  # masks_to_boxes gives the last pixel; a box ends after it
        boxes = boxes / torch.tensor([w, h, w, h], dtype=torch.float32)
        small = F.interpolate(t[None].float(), size=mask_size, mode="bilinear", antialias=True, align_corners=False)[0]
        out[p] = PromptTarget(box_convert(boxes.clamp(0, 1), "xyxy", "cxcywh"), small.clamp(0, 1).half())
    return out
