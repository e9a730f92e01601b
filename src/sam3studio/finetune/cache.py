"""The vision-feature cache of ``heads`` fine-tuning, and a model wrapper that reads it.

In ``heads`` mode the vision encoder (ViT and FPN neck) is frozen and is almost all of the compute, so
its output is computed once per image view and reused every epoch. What is kept is exactly what the
detector reads: the FPN levels but the last (SAM 3's detector drops that one), in the compute dtype.
At full size that is 256 x (288² + 144² + 72²) values, about 56 MB per view in bf16
(`feature_bytes_per_view`). The sine position encodings depend only on the shapes and are kept once.

Entries are keyed by a hash of the model-input pixels (after the processor's resize and normalisation,
in the compute dtype), so training and validation find the same entry for the same view whoever made
it. On disk each entry is one safetensors file, written atomically; a ``cache.json`` fingerprint
(checkpoint, config, dtype) empties the folder when the model changes.

`CachedVisionModel` wraps the model for `sam3studio.core.Segmenter`: its ``get_vision_features`` answers
from the cache, so validation in ``heads`` mode runs only the heads, as training does.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from sam3studio.io.files import atomic_write, atomic_write_json

__all__ = ["CachedVisionModel", "FeatureCache", "feature_bytes_per_view", "feature_levels", "pixel_key"]


def feature_levels(config: Any) -> list[tuple[int, int, int]]:
    """``(channels, height, width)`` of each FPN level the detector reads, from a `Sam3Config`."""
    vision = config.vision_config
    backbone = vision.backbone_config
    grid = backbone.image_size // backbone.patch_size
    return [(vision.fpn_hidden_size, int(grid * s), int(grid * s)) for s in vision.scale_factors[:-1]]


def feature_bytes_per_view(config: Any, dtype: torch.dtype) -> int:
    element = torch.empty(0, dtype=dtype).element_size()
    return sum(c * h * w for c, h, w in feature_levels(config)) * element


def pixel_key(pixel_values: torch.Tensor) -> str:
    """A content key of one model-input image ``(3, S, S)``."""
    h = hashlib.blake2b(digest_size=16)
    t = pixel_values.detach().cpu().contiguous()
    h.update(str((tuple(t.shape), str(t.dtype))).encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes())
    return h.hexdigest()


class FeatureCache:
    """Vision features per model-input image: ``put(key, levels)``, ``get(key) -> levels``.

    ``folder=None`` keeps entries in memory; otherwise one safetensors file per entry under ``folder``.
    Levels are ``(C, H, W)`` tensors (no batch dimension), stored on the CPU.
    """

    def __init__(self, folder: str | Path | None, fingerprint: str) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.fingerprint = fingerprint
        self._memory: dict[str, tuple[torch.Tensor, ...]] = {}
        self.position: tuple[torch.Tensor, ...] | None = None  # (1, C, H, W) per level, shared by every entry
        if self.folder is not None:
            meta = self.folder / "cache.json"
            if self.folder.exists():
                try:
                    same = json.loads(meta.read_text())["fingerprint"] == fingerprint
                except (OSError, ValueError, KeyError, TypeError):
                    same = False
                if not same:
                    shutil.rmtree(self.folder)
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(meta, {"fingerprint": fingerprint})
            if (self.folder / "position.safetensors").is_file():
                from safetensors.torch import load_file

                loaded = load_file(self.folder / "position.safetensors")
                self.position = tuple(loaded[f"level{i}"] for i in range(len(loaded)))

    def set_position(self, position: tuple[torch.Tensor, ...]) -> None:
        """The position encodings, ``(1, C, H, W)`` per level (the same for every image)."""
        self.position = tuple(p[:1].detach().cpu().contiguous() for p in position)
        if self.folder is not None:
            from safetensors.torch import save

            data = save({f"level{i}": t for i, t in enumerate(self.position)})
            atomic_write(self.folder / "position.safetensors", lambda fh: fh.write(data))

    def _path(self, key: str) -> Path:
        assert self.folder is not None
        return self.folder / f"{key}.safetensors"

    def __contains__(self, key: str) -> bool:
        return key in self._memory if self.folder is None else self._path(key).is_file()

    def put(self, key: str, levels: tuple[torch.Tensor, ...]) -> None:
        levels = tuple(t.detach().to("cpu").contiguous() for t in levels)
        if self.folder is None:
            self._memory[key] = levels
            return
        from safetensors.torch import save

        data = save({f"level{i}": t for i, t in enumerate(levels)})
        atomic_write(self._path(key), lambda fh: fh.write(data))

    def get(self, key: str) -> tuple[torch.Tensor, ...]:
        if self.folder is None:
            return self._memory[key]
        from safetensors.torch import load_file

        loaded = load_file(self._path(key))
        return tuple(loaded[f"level{i}"] for i in range(len(loaded)))

    def nbytes(self) -> int:
        if self.folder is None:
            return sum(t.numel() * t.element_size() for levels in self._memory.values() for t in levels)
        return sum(p.stat().st_size for p in self.folder.glob("*.safetensors") if p.name != "position.safetensors")

    def remove(self) -> None:
        self._memory.clear()
        if self.folder is not None and self.folder.exists():
            shutil.rmtree(self.folder)


def vision_output(levels: list[torch.Tensor], position: tuple[torch.Tensor, ...]) -> Any:
    """A `Sam3VisionEncoderOutput` the detector accepts as ``vision_embeds``, from batched cached levels.

    The detector reads every FPN level but the last; an empty placeholder stands in for that one.
    """
    from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

    b = levels[0].shape[0]
    placeholder = levels[0].new_zeros(b, levels[0].shape[1], 0, 0)
    return Sam3VisionEncoderOutput(
        fpn_hidden_states=(*levels, placeholder),
        fpn_position_encoding=(*(p.expand(b, *p.shape[1:]) for p in position), placeholder),
    )


class CachedVisionModel:
    """A SAM 3 model whose ``get_vision_features`` reads a `FeatureCache` (an image not in it is computed).

    ``start_layer=None``: the cache holds the detector's FPN levels (``heads``). Otherwise it holds the ViT's
    hidden state entering ``start_layer`` (``lora``), and the layers from there on and the neck run here.
    Everything else goes to the wrapped model, so `sam3studio.core.Segmenter` runs on it unchanged.
    """

    def __init__(self, model: Any, cache: FeatureCache, start_layer: int | None = None) -> None:
        self.model = model
        self.cache = cache
        self.start_layer = start_layer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def get_vision_features(self, pixel_values: torch.Tensor, **kwargs: Any) -> Any:
        keys = [pixel_key(p) for p in pixel_values]
        if not all(k in self.cache for k in keys) or (self.start_layer is None and self.cache.position is None):
            return self.model.get_vision_features(pixel_values=pixel_values, **kwargs)
        device = pixel_values.device
        per_level = [torch.stack(ts).to(device) for ts in zip(*(self.cache.get(k) for k in keys), strict=True)]
        if self.start_layer is not None:
            from sam3studio.finetune.vit import vision_from_hidden

            return vision_from_hidden(self.model.vision_encoder, per_level[0], self.start_layer)
        return vision_output(per_level, tuple(p.to(device) for p in self.cache.position))


def store_features(cache: FeatureCache, vision: Any, keys: list[str]) -> None:
    """Put each image of a batched vision output into ``cache`` (and its position encodings, once)."""
    used = vision.fpn_hidden_states[:-1]
    if cache.position is None:
        cache.set_position(tuple(vision.fpn_position_encoding[:-1]))
    for i, key in enumerate(keys):
        cache.put(key, tuple(level[i] for level in used))
