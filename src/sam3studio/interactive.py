"""Click and box refinement of one object with SAM 3's tracker (`Sam3TrackerModel`).

SAM 3 ships two heads on one vision backbone: the concept detector (`Sam3Model`, text and exemplar
boxes, every matching object) and the tracker (`Sam3TrackerModel`, SAM 1/2-style points, a box
and a mask prompt for one object). In the released checkpoint (``facebook/sam3``, a ``sam3_video``
checkpoint) both read the same backbone weights (``detector_model.vision_encoder.backbone.*``;
transformers' own loader maps the tracker's backbone from those keys), and each has its own FPN
neck. So the tracker is loaded here *without* its backbone: its neck runs on the backbone output
that the `Segmenter` already cached for the image. One copy of the ViT in memory, one backbone pass
per image whether the user types a prompt, draws a box or clicks.

A checkpoint with a tracker of its own (``sam3_tracker``) keeps its own backbone: its weights are
not known to be the detector's.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sam3studio.errors import ModelSourceError, TrackerUnavailable
from sam3studio.model import RANDOM_SOURCE, load_error, resolve_checkpoint, silence_expected_warnings
from sam3studio.validation import ClickPrompt

__all__ = ["LoadedTracker", "load_tracker", "mask_digest", "mask_to_logits", "processor_inputs", "tracker_embeddings"]

# Checkpoints whose tracker shares the detector's backbone, and those with a backbone of their own.
_SHARED_TYPES = {"sam3_video", "sam3_lite_text_video"}
_OWN_BACKBONE_TYPES = {"sam3_tracker", "sam3_tracker_video"}
# transformers 5.x registers a renaming for sam3_tracker that should strip the ``tracker_model.``
# prefix of a sam3_video checkpoint, but it is not applied (the mask decoder and prompt encoder
# load as "missing" and stay random). Passing the same renaming explicitly fixes it; harmless once
# transformers fixes its own (the prefix is gone by then and the pattern no longer matches).
TRACKER_KEY_MAPPING = {r"^tracker_model\.(.+)": r"\1"}
# SAM 2's convention for turning a binary mask into mask-prompt logits (sigmoid_scale/bias_for_mem_enc).
_MASK_LOGIT_SCALE, _MASK_LOGIT_BIAS = 20.0, -10.0


@dataclass
class LoadedTracker:
    model: Any  # Sam3TrackerModel (without its backbone when shared)
    processor: Any  # Sam3TrackerProcessor
    shared_backbone: bool
    source: str


def mask_digest(mask: np.ndarray) -> str:
    return hashlib.blake2b(np.packbits(mask).tobytes() + str(mask.shape).encode(), digest_size=16).hexdigest()


def mask_to_logits(mask: np.ndarray, size: tuple[int, int]):
    """A binary mask at original resolution as the tracker's mask prompt: ``(1, 1, h, w)`` logits of ±10."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    small = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)
    return small * _MASK_LOGIT_SCALE + _MASK_LOGIT_BIAS


def probability_to_logit(p: float) -> float:
    return math.log(p / (1 - p))


# ---------------------------------------------------------------------------- loading
def _tracker_classes():
    from transformers import Sam3TrackerModel

    class Sam3TrackerWithoutBackbone(Sam3TrackerModel):
        """`Sam3TrackerModel` minus the ViT backbone: fed with the detector's cached backbone output.

        The backbone's checkpoint keys are ignored, so its weights are never read.
        """

        _keys_to_ignore_on_load_unexpected = [*Sam3TrackerModel._keys_to_ignore_on_load_unexpected,
                                              r"^vision_encoder\.backbone\."]

        def __init__(self, config):
            super().__init__(config)
            del self.vision_encoder.backbone

    # transformers applies its checkpoint renamings only to classes defined in transformers (a class
    # defined elsewhere counts as remote code and loads with none); this one is Sam3TrackerModel minus a
    # module, so it takes the same renamings. `load_tracker` refuses a load that left weights missing.
    Sam3TrackerWithoutBackbone.__module__ = Sam3TrackerModel.__module__
    return Sam3TrackerModel, Sam3TrackerWithoutBackbone


def load_tracker(source: str, device: Any, dtype: Any, share_backbone: bool = True) -> LoadedTracker:
    """Load SAM 3's tracker from ``source`` (the detector's checkpoint), on ``device`` in ``dtype``.

    With ``share_backbone`` and a ``sam3_video`` checkpoint the backbone is left out (the caller
    provides its output). Raises `ModelSourceError` when the checkpoint has no tracker.
    """
    import torch
    from transformers import AutoConfig, Sam3ImageProcessor, Sam3TrackerConfig, Sam3TrackerProcessor


    silence_expected_warnings()
    full_cls, shared_cls = _tracker_classes()
    if source == RANDOM_SOURCE:
        cls = shared_cls if share_backbone else full_cls
        with torch.device(device):
            model = cls(Sam3TrackerConfig())
        model = model.to(dtype=dtype).eval()
        return LoadedTracker(model, Sam3TrackerProcessor(image_processor=Sam3ImageProcessor()), share_backbone, source)
    load_from, local = resolve_checkpoint(source)
    try:
        model_type = AutoConfig.from_pretrained(load_from).model_type
    except Exception as exc:
        raise load_error(exc, source, local) from exc
    if model_type not in _SHARED_TYPES | _OWN_BACKBONE_TYPES:
        raise TrackerUnavailable(
            f"the checkpoint '{source}' (model_type {model_type!r}) has no SAM 3 tracker, which click and box "
            "refinement needs; load the full checkpoint (facebook/sam3, model_type 'sam3_video')"
        )
    shared = share_backbone and model_type in _SHARED_TYPES
    try:
        model, info = (shared_cls if shared else full_cls).from_pretrained(
            load_from, dtype=dtype, key_mapping=TRACKER_KEY_MAPPING, output_loading_info=True)
        processor = Sam3TrackerProcessor.from_pretrained(load_from)
    except Exception as exc:
        raise load_error(exc, source, local, what="the SAM 3 tracker") from exc
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise ModelSourceError(f"the SAM 3 tracker in '{source}' is incomplete: {len(missing)} weights are missing "
                               f"(first: {missing[0]})")
    return LoadedTracker(model.to(device=device, dtype=dtype).eval(), processor, shared, source)


def tracker_embeddings(tracker: Any, backbone_hidden: Any, grid: tuple[int, int]) -> list:
    """The tracker's image embeddings from the ViT backbone's output ``(1, h*w, C)``.

    The same computation as `Sam3TrackerModel.get_image_embeddings` (its vision encoder's neck,
    the mask decoder's projections of the two finest levels, the no-memory embedding), starting
    after the backbone.
    """
    b = backbone_hidden.shape[0]
    spatial = backbone_hidden.view(b, grid[0], grid[1], -1).permute(0, 3, 1, 2)
    fpn, _ = tracker.vision_encoder.neck(spatial)
    maps = list(fpn)
    maps[0] = tracker.mask_decoder.conv_s0(maps[0])
    maps[1] = tracker.mask_decoder.conv_s1(maps[1])
    maps = [m.flatten(2).permute(2, 0, 1) for m in maps]
    maps[-1] = maps[-1] + tracker.no_memory_embedding
    # As in transformers: the neck has one level more than backbone_feature_sizes, and zip drops it.
    sizes = tracker.backbone_feature_sizes
    return [m.permute(1, 2, 0).view(b, -1, *size) for m, size in zip(maps, sizes, strict=False)]


def processor_inputs(processor: Any, prompt: ClickPrompt, height: int, width: int) -> dict:
    """Points and box normalised by the tracker processor (the documented path), as model kwargs."""
    kwargs: dict[str, Any] = {"original_sizes": [[height, width]], "return_tensors": "pt"}
    if prompt.points is not None:
        kwargs["input_points"] = [[prompt.points.tolist()]]
        kwargs["input_labels"] = [[prompt.labels.tolist()]]
    if prompt.box is not None:
        kwargs["input_boxes"] = [[prompt.box.tolist()]]
    enc = processor(**kwargs)
    return {k: enc[k] for k in ("input_points", "input_labels", "input_boxes") if k in enc}
