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

from sam3studio.errors import InputError, ModelSourceError, TrackerUnavailable

__all__ = ["MAX_POINTS", "LoadedTracker", "load_tracker", "validate_clicks", "ClickPrompt"]

MAX_POINTS = 64
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


@dataclass(frozen=True)
class ClickPrompt:
    """Validated refinement inputs, in original pixels."""

    points: np.ndarray | None  # (n, 2) float64
    labels: np.ndarray | None  # (n,) int64, 1 positive / 0 negative
    box: np.ndarray | None  # (4,) float64 XYXY
    mask: np.ndarray | None  # (H, W) bool

    @property
    def multimask(self) -> bool:
        """SAM's rule: one click alone is ambiguous, so predict 3 masks and keep the best."""
        return self.points is not None and len(self.points) == 1 and self.box is None and self.mask is None


def _finite_array(value: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numbers, got {value!r}"[:300]) from None
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} must be finite numbers")
    return arr


def validate_clicks(points: Any, point_labels: Any, box: Any, mask: Any, width: int, height: int) -> ClickPrompt:
    """Check refinement inputs against an image of ``width`` x ``height``; raise `InputError` with the reason."""
    from sam3studio.core import validate_boxes

    pts = labels = box_arr = mask_arr = None
    if points is not None and len(points) > 0:
        if point_labels is None:
            raise InputError("points were given without point_labels (one label per point: 1 positive, 0 negative)")
        pts = _finite_array(points, "points")
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise InputError(f"points must be a list of [x, y] pairs, got shape {tuple(pts.shape)}")
        if len(pts) > MAX_POINTS:
            raise InputError(f"at most {MAX_POINTS} points per refinement, got {len(pts)}")
        lab = np.asarray(point_labels, dtype=object).reshape(-1) if not isinstance(point_labels, (str, bytes)) else None
        if lab is None or len(lab) != len(pts):
            n = "a string" if lab is None else len(lab)
            raise InputError(f"point_labels must have one label per point: {len(pts)} points, {n} labels")
        if any(isinstance(v, bool) or v not in (0, 1) for v in lab.tolist()):
            raise InputError(f"point_labels must be 1 (positive) or 0 (negative), got {lab.tolist()!r}"[:300])
        labels = lab.astype(np.int64)
        for x, y in pts:
            if not (0 <= x <= width and 0 <= y <= height):
                raise InputError(f"point ({x:g}, {y:g}) is outside the {width}x{height} image")
    elif point_labels is not None and len(point_labels) > 0:
        raise InputError("point_labels were given without points")
    if box is not None:
        arr = _finite_array(box, "box")
        if arr.shape != (4,):
            raise InputError(f"box must be [x1, y1, x2, y2], got shape {tuple(arr.shape)}")
        box_arr = validate_boxes([arr.tolist()], None, width, height)[0][0].astype(np.float64)
    if mask is not None:
        mask_arr = np.asarray(mask)
        if mask_arr.dtype != bool:
            if mask_arr.dtype.kind not in "uif" or not np.isin(mask_arr, (0, 1)).all():
                raise InputError("mask must be boolean (or 0/1)")
            mask_arr = mask_arr.astype(bool)
        if mask_arr.shape != (height, width):
            raise InputError(f"mask is {mask_arr.shape[1] if mask_arr.ndim == 2 else '?'}x"
                             f"{mask_arr.shape[0] if mask_arr.ndim == 2 else '?'}, the image is {width}x{height}")
    if pts is None and box_arr is None:
        raise InputError("refinement needs at least one point (with its label) or a box")
    return ClickPrompt(pts, labels, box_arr, mask_arr)


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
    import warnings

    import torch
    from transformers import AutoConfig, Sam3ImageProcessor, Sam3TrackerConfig, Sam3TrackerProcessor

    from sam3studio.model import RANDOM_SOURCE, load_error, resolve_checkpoint

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
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*instantiate a model of type.*")
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
