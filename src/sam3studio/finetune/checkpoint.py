"""The source checkpoint (what it is, before loading), the fine-tuned checkpoint, and the resumable state.

Output: a checkpoint directory in the source's own architecture and dtype, loadable by every entry point
(``load_segmenter(DIR)``, ``--model DIR``):

- an image source (``sam3``, ``sam3_lite_text``, or ``random``): the trained detector, ``save_pretrained``,
  with the source's processor (tokenizer included);
- a ``sam3_video`` source (``facebook/sam3``): the source's video model with its detector replaced by the
  trained one, and the source's video processor, so refine and track keep working (the tracker itself is
  not trained; in ``heads`` mode the vision encoder it shares is unchanged).

Resumable state (``OUT/.finetune``): ``state.pt`` after every epoch (trainable weights, optimizer,
scheduler, history, the zero-shot report, early-stopping counters) and ``best.safetensors`` (trainable
weights of the best epoch), each written atomically so a kill never leaves half a file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sam3studio.errors import ModelSourceError
from sam3studio.io.files import atomic_write
from sam3studio.model import RANDOM_SOURCE, load_error, resolve_checkpoint

__all__ = ["SourceInfo", "inspect_source", "load_best", "load_state", "model_fingerprint", "save_best", "save_checkpoint",
           "save_state"]

IMAGE_TYPES = ("sam3", "sam3_lite_text")
VIDEO_TYPES = ("sam3_video",)
STATE_VERSION = 1


@dataclass
class SourceInfo:
    """What the source checkpoint is: read from its config alone."""

    source: str
    model_type: str
    dtype: torch.dtype
    config: Any  # the detector's config (a sam3_video source: its detector_config)
    model_cls: Any  # the detector class that trains
    load_from: str | None  # path or hub id (None for 'random')

    @property
    def is_video(self) -> bool:
        return self.model_type in VIDEO_TYPES


def inspect_source(source: str) -> SourceInfo:
    """Read the source's config (no weights) and refuse what cannot be fine-tuned and saved back."""
    import transformers

    source = (source or "").strip()
    if source == RANDOM_SOURCE:
        config = transformers.Sam3Config()
        return SourceInfo(source, "sam3", torch.float32, config, transformers.Sam3Model, None)
    load_from, local = resolve_checkpoint(source)
    try:
        config = transformers.AutoConfig.from_pretrained(load_from)
    except Exception as exc:
        raise load_error(exc, source, local) from exc
    model_type = config.model_type
    if model_type not in IMAGE_TYPES + VIDEO_TYPES:
        raise ModelSourceError(f"cannot fine-tune '{source}': model_type {model_type!r} is not one of "
                               f"{', '.join(IMAGE_TYPES + VIDEO_TYPES)} (a SAM 3 detector, or facebook/sam3's video model)")
    dtype = getattr(config, "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    if not isinstance(dtype, torch.dtype):
        dtype = torch.float32
    if model_type == "sam3_video":
        det = config.detector_config
        config = det if not isinstance(det, dict) else transformers.Sam3Config(**det)
        model_cls = transformers.Sam3Model
    else:
        model_cls = transformers.Sam3Model if model_type == "sam3" else transformers.Sam3LiteTextModel
    return SourceInfo(source, model_type, dtype, config, model_cls, load_from)


def model_fingerprint(info: SourceInfo, model: Any, compute_dtype: torch.dtype, image_size: Any) -> str:
    """A key of the vision encoder's weights (sampled), its config, the input size and the compute dtype."""
    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps([info.source, str(compute_dtype), str(image_size), info.config.vision_config.to_dict()],
                        sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, t in model.vision_encoder.state_dict().items():
            flat = t.detach().reshape(-1)
            sample = torch.cat([flat[:2048], flat[-2048:]]).float().cpu()
            h.update(name.encode())
            h.update(sample.numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(model: Any, processor: Any, info: SourceInfo, out: Path) -> None:
    """Write the trained detector ``model`` (plain, LoRA merged) to ``out`` as described in the module docstring."""
    out.mkdir(parents=True, exist_ok=True)
    model = model.to(dtype=info.dtype)
    if not info.is_video:
        model.save_pretrained(out)
        processor.save_pretrained(out)
        return
    from transformers import Sam3VideoModel, Sam3VideoProcessor

    try:
        video = Sam3VideoModel.from_pretrained(info.load_from, dtype=info.dtype)
        video_processor = Sam3VideoProcessor.from_pretrained(info.load_from)
    except Exception as exc:
        raise ModelSourceError(f"could not reload the video model of '{info.source}' to save the fine-tune: {exc}") from exc
    video.detector_model.load_state_dict(model.state_dict(), strict=True)
    video.save_pretrained(out)
    video_processor.save_pretrained(out)


# ---------------------------------------------------------------------------- resumable state
def _torch_save(path: Path, obj: Any) -> None:
    atomic_write(path, lambda fh: torch.save(obj, fh))


def save_state(folder: Path, state: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _torch_save(folder / "state.pt", {"version": STATE_VERSION, **state})


def load_state(folder: Path) -> dict[str, Any] | None:
    path = folder / "state.pt"
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("version") != STATE_VERSION:
        raise ModelSourceError(f"{path} was written by another version of sam3studio; start a new run in another --out")
    return state


def save_best(folder: Path, weights: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save

    folder.mkdir(parents=True, exist_ok=True)
    data = save({k: v.contiguous() for k, v in weights.items()})
    atomic_write(folder / "best.safetensors", lambda fh: fh.write(data))


def load_best(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "best.safetensors")
