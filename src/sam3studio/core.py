"""The engine: SAM 3 model outputs become `Segmentation` results.

`Segmenter.segment(image, prompts)` is the easy call (numpy in, numpy out). Under it:

1. The image is decoded and hashed; its vision features come from an LRU cache keyed by the
   hash of the decoded pixels, so a new prompt or a moved threshold never re-runs the vision
   encoder (the expensive part: ~75% of the model).
2. Text features are cached per prompt string.
3. All prompts not yet seen on this image go through the DETR encoder/decoder and mask head in
   batched passes (vision features broadcast along the batch), ``prompt_batch_size`` at a time.
4. The raw per-prompt outputs (model space: query logits, presence logit, normalised boxes,
   low-resolution mask logits) are cached, so re-thresholding and refinement run only
   post-processing.
5. Post-processing filters by score *before* upsampling, upsamples only the kept masks to the
   original resolution in chunks, and maps normalised XYXY boxes to pixels.

Model space: SAM 3 resizes every image to a square (1008x1008 for the real model) without
keeping the aspect ratio, so normalised box coordinates and the square low-resolution masks map
to the full original image by independent x and y scaling.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from cachetools import LRUCache

from sam3studio import interactive
from sam3studio.cleanup import CleanupOptions
from sam3studio.errors import InputError, ModelSourceError, TrackerUnavailable
from sam3studio.interactive import (
    mask_digest,
    mask_to_logits,
    probability_to_logit,
    processor_inputs,
    tracker_embeddings,
)
from sam3studio.io.images import ImageInput, load_image
from sam3studio.model import LoadedModel, inference_context
from sam3studio.prompts import Translation, Translator, identity_translator, parse_prompts
from sam3studio.results import Instance, PromptResult, Segmentation
from sam3studio.validation import validate_boxes, validate_clicks

MAX_TEXT_TOKENS = 32  # SAM 3's text encoder context (the processor pads to this length)
DEFAULT_MAX_INSTANCES = 100
# Queries scoring below this are dropped from the raw cache: no threshold a user can set reaches them.
MIN_SCORE_THRESHOLD = 0.01
_UPSAMPLE_CHUNK_PIXELS = 64_000_000  # bound on float32 elements upsampled at once (~256 MB)
BOX_ONLY_QUERY = "visual"  # the text SAM 3's processor pairs with exemplar boxes when no prompt is given


@dataclass(frozen=True)
class _Geometry:
    """Exemplar boxes as the model reads them: normalised (cx, cy, w, h) and labels 1/0."""

    boxes: torch.Tensor  # (N, 4) float32
    labels: torch.Tensor  # (N,) int64
    signature: str  # part of the prediction cache key


def _geometry(boxes: np.ndarray, labels: np.ndarray, width: int, height: int) -> _Geometry:
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    cxcywh = np.stack([(x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height], axis=1)
    signature = hashlib.sha1(np.round(cxcywh, 6).tobytes() + labels.tobytes()).hexdigest()[:16]
    return _Geometry(torch.tensor(cxcywh, dtype=torch.float32), torch.tensor(labels, dtype=torch.int64), signature)

__all__ = ["Segmenter", "SegmenterStats", "MIN_SCORE_THRESHOLD", "DEFAULT_MAX_INSTANCES"]


@dataclass
class SegmenterStats:
    """Counters of the work actually done; cache behaviour is visible here."""

    vision_encoder_calls: int = 0
    text_encoder_calls: int = 0
    head_passes: int = 0
    image_cache_hits: int = 0
    image_cache_misses: int = 0  # images whose features had to be computed
    text_cache_hits: int = 0
    text_cache_misses: int = 0
    prediction_cache_hits: int = 0
    prediction_cache_misses: int = 0  # (image, prompt) pairs that went through the heads
    tracker_loads: int = 0
    refine_passes: int = 0
    batched_images: int = 0  # images encoded by `encode_images`


@dataclass
class _ImageEntry:
    vision: Any  # Sam3VisionEncoderOutput on the model device
    height: int
    width: int
    tracker_embeddings: list | None = None  # the click tracker's features, computed on first refine


@dataclass
class _RawPrediction:
    """One prompt on one image in model space, already filtered to queries >= MIN_SCORE_THRESHOLD."""

    scores: torch.Tensor  # (q,) float32: sigmoid(query logit) * presence
    boxes: torch.Tensor  # (q, 4) float32, normalised XYXY in [0, 1]
    mask_logits: torch.Tensor  # (q, h, w) model dtype, on the model device
    presence: float

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.scores, self.boxes, self.mask_logits)) + 64


@dataclass
class _Timer:
    timings: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, start: float) -> float:
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + (now - start)
        return now


def _image_key(rgb: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.asarray(rgb.shape, np.int64).tobytes())
    h.update(np.ascontiguousarray(rgb).data)
    return h.hexdigest()


def _validate_thresholds(score_threshold: float, mask_threshold: float, max_instances: int | None) -> None:
    if not isinstance(score_threshold, (int, float)) or not MIN_SCORE_THRESHOLD <= score_threshold <= 1:
        raise InputError(f"score_threshold must be between {MIN_SCORE_THRESHOLD} and 1, got {score_threshold!r}")
    if not isinstance(mask_threshold, (int, float)) or not 0 < mask_threshold < 1:
        raise InputError(f"mask_threshold must be strictly between 0 and 1, got {mask_threshold!r}")
    if max_instances is not None and (not isinstance(max_instances, int) or max_instances < 1):
        raise InputError(f"max_instances must be a positive integer or None, got {max_instances!r}")


class Segmenter:
    """Text-prompted instance segmentation with SAM 3 on one device.

    Build it once with `sam3studio.load_segmenter` (or from a model and processor you built) and
    call `segment` many times; it is thread-safe (calls are serialised on the model).
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        source: str = "",
        architecture: str | None = None,
        compiled: bool = False,
        image_cache_size: int = 4,
        text_cache_size: int = 512,
        prediction_cache_mb: int = 512,
        prompt_batch_size: int = 8,
        translator: Translator | None = None,
        tracker: Any = None,
    ) -> None:
        if prompt_batch_size < 1:
            raise ValueError(f"prompt_batch_size must be >= 1, got {prompt_batch_size}")
        self.model = model
        self.processor = processor
        params = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
        self.device = torch.device(device) if device is not None else (params.device if params is not None
                                                                        else torch.device("cpu"))
        self.dtype = dtype or (params.dtype if params is not None else torch.float32)
        self.source = source
        self.architecture = architecture or type(model).__name__
        self.compiled = compiled
        self.prompt_batch_size = prompt_batch_size
        self.translator: Translator = translator or identity_translator
        self.stats = SegmenterStats()
        self._lock = threading.RLock()
        self._images: LRUCache = LRUCache(maxsize=max(1, image_cache_size))
        self._text: LRUCache = LRUCache(maxsize=max(1, text_cache_size))
        self._predictions: LRUCache = LRUCache(
            maxsize=max(1, prediction_cache_mb) * 1024 * 1024, getsizeof=lambda p: p.nbytes
        )
        # Click refinement: the tracker (`sam3studio.interactive.LoadedTracker`) is loaded on first use.
        self._tracker = tracker
        self._tracker_error: Exception | None = None
        # (image key, mask digest) -> the low-resolution logits that made a mask `refine` returned
        self._refined_logits: LRUCache = LRUCache(maxsize=64)

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, **options: Any) -> Segmenter:
        return cls(
            loaded.model,
            loaded.processor,
            device=loaded.device,
            dtype=loaded.dtype,
            source=loaded.source,
            architecture=loaded.architecture,
            compiled=loaded.compiled,
            **options,
        )

    # ------------------------------------------------------------------ public API
    def info(self) -> dict[str, str]:
        return {
            "source": self.source,
            "architecture": self.architecture,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "compiled": "torch.compile (vision encoder)" if self.compiled else "eager",
        }

    def clear_cache(self) -> None:
        with self._lock:
            self._images.clear()
            self._text.clear()
            self._predictions.clear()
            self._refined_logits.clear()

    def cache_info(self) -> dict[str, dict[str, int]]:
        """Per cache: ``entries``, ``capacity`` (entries; bytes for the prediction cache) and, for the
        prediction cache, ``bytes`` held."""
        return {"image": {"entries": len(self._images), "capacity": int(self._images.maxsize)},
                "text": {"entries": len(self._text), "capacity": int(self._text.maxsize)},
                "prediction": {"entries": len(self._predictions), "capacity": int(self._predictions.maxsize),
                               "bytes": int(self._predictions.currsize)}}

    @property
    def tracker_loaded(self) -> bool:
        return self._tracker is not None

    def refine(
        self,
        image: ImageInput,
        points: Sequence[Sequence[float]] | np.ndarray | None = None,
        point_labels: Sequence[int] | None = None,
        box: Sequence[float] | None = None,
        mask: np.ndarray | None = None,
        mask_threshold: float = 0.5,
        prompt: str = "object",
    ) -> Instance:
        """One object from clicks and/or a box, as SAM 1 and 2 do it (SAM 3's tracker head).

        Args:
            image: as in `segment`; an image already segmented is not encoded again.
            points: clicks ``[[x, y], ...]`` in original pixels; ``point_labels`` gives one label per
                click, 1 (part of the object) or 0 (not part of it).
            box: ``[x1, y1, x2, y2]`` around the object, in original pixels.
            mask: the object's current mask (``(H, W)`` bool), e.g. an instance from `segment` or
                the previous `refine`, to correct it with further clicks.
            mask_threshold: probability above which a pixel belongs to the mask.
            prompt: the label the returned instance carries.

        Returns:
            An `Instance` whose score is SAM's predicted IoU of the mask and whose box bounds it.
            One click alone predicts three candidate masks and keeps the best, as SAM does.
        """
        if not isinstance(mask_threshold, (int, float)) or not 0 < mask_threshold < 1:
            raise InputError(f"mask_threshold must be strictly between 0 and 1, got {mask_threshold!r}")
        rgb = load_image(image)
        height, width = rgb.shape[:2]
        clicks = validate_clicks(points, point_labels, box, mask, width, height)
        key = _image_key(rgb)
        with self._lock:
            tracker = self._ensure_tracker()
            entry = self._image_features(key, rgb, _Timer())
            mask_out, score = self._refine_pass(tracker, key, entry, rgb, clicks, mask_threshold)
        area = int(mask_out.sum())
        ys, xs = np.nonzero(mask_out)
        bbox = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)) if area else (0.0,) * 4
        return Instance(id=0, prompt=prompt, prompt_index=0, score=score, box=bbox, area=area,
                        area_ratio=area / float(height * width), mask=mask_out)

    def segment(
        self,
        image: ImageInput,
        prompts: str | Sequence[str] | None = None,
        score_threshold: float = 0.5,
        mask_threshold: float = 0.5,
        cleanup: CleanupOptions | None = None,
        max_instances: int | None = DEFAULT_MAX_INSTANCES,
        boxes: Sequence[Sequence[float]] | np.ndarray | None = None,
        box_labels: Sequence[int] | None = None,
        refine: CleanupOptions | None = None,
    ) -> Segmentation:
        """Find every instance of each prompt in ``image``.

        Args:
            image: a path, bytes, PIL image or ``(H, W, 3)`` uint8 RGB array.
            prompts: ``"dog, red car"`` (comma-separated) or ``["dog", "red car"]``.
            score_threshold: keep instances whose score (query probability x presence) exceeds it.
            mask_threshold: probability above which a pixel belongs to a mask.
            cleanup: optional mask clean-up (`CleanupOptions`: fill holes, drop islands, smooth edges).
            max_instances: keep at most this many instances, highest scores first.
            boxes: exemplar boxes, XYXY in original pixels: "objects like this one". With prompts they
                refine every prompt; without, SAM 3 finds objects like the positive boxes alone.
            box_labels: one per box, 1 (positive, default) or 0 (negative: "not like this").
            refine: deprecated name of ``cleanup`` (warns; "refine" is click refinement now).

        Returns:
            A `Segmentation` at the original resolution: boolean masks, XYXY pixel boxes, and per
            prompt SAM 3's presence score and instance count.
        """
        if refine is not None:
            warnings.warn("segment(refine=...) is deprecated; use cleanup=CleanupOptions(...)", DeprecationWarning,
                          stacklevel=2)
            if cleanup is not None:
                raise InputError("give cleanup= only (refine= is its deprecated name)")
            cleanup = refine
        timer = _Timer(dict.fromkeys(("decode", "image_encoding", "prompts", "postprocess"), 0.0))
        start = t = time.perf_counter()
        if prompts is None and boxes is not None:
            texts, translations = [BOX_ONLY_QUERY], [Translation(query=BOX_ONLY_QUERY)]
        else:
            texts = parse_prompts(prompts)
            translations = [self.translator(t) for t in texts]
        queries = [tr.query for tr in translations]
        _validate_thresholds(score_threshold, mask_threshold, max_instances)
        if box_labels is not None and boxes is None:
            raise InputError("box_labels given without boxes")
        rgb = load_image(image)
        geometry = None
        if boxes is not None:
            box_arr, labels = validate_boxes(boxes, box_labels, rgb.shape[1], rgb.shape[0])
            geometry = _geometry(box_arr, labels, rgb.shape[1], rgb.shape[0])
        key = _image_key(rgb)
        t = timer.add("decode", t)
        with self._lock:
            raw = self._predict(key, rgb, queries, timer, geometry)
        t = time.perf_counter()
        seg = self._postprocess(raw, texts, translations, rgb.shape[0], rgb.shape[1], score_threshold,
                                mask_threshold, max_instances)
        if cleanup is not None and not cleanup.is_noop and len(seg):
            seg.masks = cleanup.apply(seg.masks)
        t = timer.add("postprocess", t)
        timer.timings["total"] = t - start
        seg.timings = timer.timings
        return seg

    def has_image(self, image: ImageInput) -> bool:
        """Whether ``image``'s vision features are cached (no vision pass would run for it)."""
        return _image_key(load_image(image)) in self._images

    def reserve_image_cache(self, size: int) -> None:
        """Let the image cache hold at least ``size`` images (a batch must not evict what its requests need)."""
        with self._lock:
            if size > self._images.maxsize:
                bigger: LRUCache = LRUCache(maxsize=size)
                for key in list(self._images.keys()):  # oldest first: the LRU order survives
                    bigger[key] = self._images[key]
                self._images = bigger

    def encode_images(self, images: Sequence[ImageInput]) -> int:
        """Encode the images not yet cached in one batched vision pass; return how many were encoded.

        Later `segment` or `refine` calls on these images start from the cache. `VisionBatcher` calls
        this for concurrent requests (vision batching); a batch is at most the image cache's size.
        """
        rgbs = [load_image(image) for image in images]
        with self._lock:
            todo: dict[str, np.ndarray] = {}
            for rgb in rgbs:
                key = _image_key(rgb)
                if key in self._images:
                    self.stats.image_cache_hits += 1
                else:
                    todo.setdefault(key, rgb)
            items = list(todo.items())[: self._images.maxsize]
            if not items:
                return 0
            pixel_values = self.processor.image_processor(images=[rgb for _, rgb in items], return_tensors="pt")["pixel_values"]
            pixel_values = pixel_values.to(self.device, self.dtype)
            with inference_context(self.device, self.dtype):
                vision = self.model.get_vision_features(pixel_values=pixel_values)
            self.stats.vision_encoder_calls += 1
            self.stats.batched_images += len(items)
            self.stats.image_cache_misses += len(items)
            for i, (key, rgb) in enumerate(items):
                # Cloned, so one cached image does not keep the whole batch's tensors alive.
                one = type(vision)(
                    last_hidden_state=vision.last_hidden_state[i : i + 1].clone(),
                    fpn_hidden_states=tuple(x[i : i + 1].clone() for x in vision.fpn_hidden_states),
                    fpn_position_encoding=tuple(x[i : i + 1].clone() if x.shape[0] == len(items) else x
                                                for x in vision.fpn_position_encoding),
                )
                self._images[key] = _ImageEntry(vision=one, height=rgb.shape[0], width=rgb.shape[1])
            return len(items)

    # ------------------------------------------------------------------ click refinement
    def _ensure_tracker(self) -> Any:
        if self._tracker is None:
            if self._tracker_error is not None:  # a checkpoint without a tracker does not grow one: ask once
                raise self._tracker_error
            if not self.source:
                raise ModelSourceError("this Segmenter was built without a checkpoint source; pass tracker= to refine")
            try:
                self._tracker = interactive.load_tracker(self.source, self.device, self.dtype)
            except TrackerUnavailable as exc:
                self._tracker_error = exc
                raise
            self.stats.tracker_loads += 1
        return self._tracker

    def _refine_pass(self, tracker: Any, key: str, entry: _ImageEntry, rgb: np.ndarray, clicks: Any,
                     mask_threshold: float) -> tuple[np.ndarray, float]:
        model, processor = tracker.model, tracker.processor
        height, width = rgb.shape[:2]
        with inference_context(self.device, self.dtype):
            if entry.tracker_embeddings is None:
                if tracker.shared_backbone:
                    grid = model.prompt_encoder.image_embedding_size
                    entry.tracker_embeddings = tracker_embeddings(model, entry.vision.last_hidden_state, grid)
                else:
                    pixels = processor.image_processor(images=rgb, return_tensors="pt")["pixel_values"]
                    entry.tracker_embeddings = model.get_image_embeddings(pixels.to(self.device, self.dtype))
            inputs = {k: v.to(self.device) for k, v in processor_inputs(processor, clicks, height, width).items()}
            if clicks.mask is not None:
                prior = self._refined_logits.get((key, mask_digest(clicks.mask)))
                if prior is None:
                    prior = mask_to_logits(clicks.mask, model.prompt_encoder.mask_input_size)
                inputs["input_masks"] = prior.to(self.device, self.dtype)
            out = model(image_embeddings=entry.tracker_embeddings, multimask_output=clicks.multimask, **inputs)
        self.stats.refine_passes += 1
        ious = out.iou_scores[0, 0].float()
        best = int(torch.argmax(ious))
        low = out.pred_masks[:, :, best : best + 1].float()  # (1, 1, 1, h, w) logits
        masks = processor.post_process_masks(low.cpu(), [[height, width]],
                                             mask_threshold=probability_to_logit(mask_threshold))
        result = masks[0][0, 0].numpy().astype(bool)
        self._refined_logits[(key, mask_digest(result))] = low[0].cpu()
        return result, float(np.clip(float(ious[best]), 0.0, 1.0))

    # ------------------------------------------------------------------ model passes
    def _predict(self, key: str, rgb: np.ndarray, queries: list[str], timer: _Timer,
                 geometry: _Geometry | None = None) -> list[_RawPrediction]:
        sig = geometry.signature if geometry is not None else ""
        missing = [q for q in dict.fromkeys(queries) if (key, q, sig) not in self._predictions]
        self.stats.prediction_cache_hits += len(queries) - len(missing)
        self.stats.prediction_cache_misses += len(missing)
        results: dict[str, _RawPrediction] = {q: self._predictions[(key, q, sig)] for q in queries if q not in missing}
        if missing:
            entry = self._image_features(key, rgb, timer)
            t = time.perf_counter()
            for i in range(0, len(missing), self.prompt_batch_size):
                chunk = missing[i : i + self.prompt_batch_size]
                for q, pred in zip(chunk, self._run_heads(entry, chunk, geometry), strict=True):
                    self._predictions[(key, q, sig)] = pred
                    results[q] = pred
            timer.add("prompts", t)
        return [results[q] for q in queries]

    def _image_features(self, key: str, rgb: np.ndarray, timer: _Timer) -> _ImageEntry:
        entry = self._images.get(key)
        if entry is not None:
            self.stats.image_cache_hits += 1
            return entry
        self.stats.image_cache_misses += 1
        t = time.perf_counter()
        pixel_values = self.processor.image_processor(images=rgb, return_tensors="pt")["pixel_values"]
        pixel_values = pixel_values.to(self.device, self.dtype)
        with inference_context(self.device, self.dtype):
            vision = self.model.get_vision_features(pixel_values=pixel_values)
        self.stats.vision_encoder_calls += 1
        entry = _ImageEntry(vision=vision, height=rgb.shape[0], width=rgb.shape[1])
        self._images[key] = entry
        timer.add("image_encoding", t)
        return entry

    def _text_features(self, queries: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(len(queries), 32, D)`` projected text features and their ``(len(queries), 32)`` mask."""
        missing = [q for q in queries if q not in self._text]
        self.stats.text_cache_hits += len(queries) - len(missing)
        self.stats.text_cache_misses += len(missing)
        if missing:
            tok = self.processor.tokenizer
            for q in missing:
                n = len(tok(q)["input_ids"])
                if n > MAX_TEXT_TOKENS:
                    raise InputError(f"prompt {q!r} is {n} tokens long; SAM 3 reads at most {MAX_TEXT_TOKENS}")
            enc = tok(missing, padding="max_length", max_length=MAX_TEXT_TOKENS, return_tensors="pt")
            input_ids = enc["input_ids"].to(self.device)
            attention_mask = enc["attention_mask"].to(self.device)
            with inference_context(self.device, self.dtype):
                feats = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output
            self.stats.text_encoder_calls += 1
            for j, q in enumerate(missing):
                self._text[q] = (feats[j : j + 1], attention_mask[j : j + 1])
        pairs = [self._text[q] for q in queries]
        return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])

    def _run_heads(self, entry: _ImageEntry, queries: list[str], geometry: _Geometry | None = None) -> list[_RawPrediction]:
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        text, text_mask = self._text_features(queries)
        k = len(queries)
        vision = entry.vision
        fpn = vision.fpn_hidden_states
        batched_vision = type(vision)(
            fpn_hidden_states=tuple(x.expand(k, *x.shape[1:]) for x in fpn),
            fpn_position_encoding=tuple(x.expand(k, *x.shape[1:]) for x in vision.fpn_position_encoding),
        )
        extra = {}
        autocast = contextlib.nullcontext()
        if geometry is not None:
            n = len(geometry.labels)
            boxes = geometry.boxes.to(self.device)
            if self.device.type == "cpu" and self.dtype == torch.bfloat16:
                # SAM 3 pools box features with torchvision's roi_align, fed float16 when the features are
                # bf16, which CPU autocast refuses ("Unexpected floating ScalarType"). The weights are bf16
                # already, so this pass runs in plain bf16 (as transformers' docs run bf16), without autocast.
                autocast = torch.autocast("cpu", enabled=False)
                boxes = boxes.to(self.dtype)
            extra = {"input_boxes": boxes[None].expand(k, n, 4),
                     "input_boxes_labels": geometry.labels.to(self.device)[None].expand(k, n)}
        with inference_context(self.device, self.dtype), autocast:
            out = self.model(
                vision_embeds=batched_vision,
                text_embeds=BaseModelOutputWithPooling(pooler_output=text),
                attention_mask=text_mask,
                **extra,
            )
        self.stats.head_passes += 1
        presence = torch.sigmoid(out.presence_logits.float()).reshape(k)
        scores = torch.sigmoid(out.pred_logits.float()) * presence[:, None]
        preds = []
        for j in range(k):
            keep = scores[j] >= MIN_SCORE_THRESHOLD
            preds.append(
                _RawPrediction(
                    scores=scores[j][keep].clone(),
                    boxes=out.pred_boxes[j][keep].float().clone(),
                    mask_logits=out.pred_masks[j][keep].clone(),
                    presence=float(presence[j]),
                )
            )
        return preds

    # ------------------------------------------------------------------ post-processing
    def _postprocess(
        self,
        raw: list[_RawPrediction],
        texts: list[str],
        translations: list,
        height: int,
        width: int,
        score_threshold: float,
        mask_threshold: float,
        max_instances: int | None,
    ) -> Segmentation:
        # Select first (cheap, on scores), upsample only what is kept.
        picks: list[tuple[int, int, float]] = []  # (prompt index, query index, score)
        for p, pred in enumerate(raw):
            s = pred.scores
            idx = torch.nonzero(s > score_threshold).flatten()
            idx = idx[torch.argsort(s[idx], descending=True, stable=True)]
            picks.extend((p, int(i), float(s[i])) for i in idx)
        if max_instances is not None and len(picks) > max_instances:
            best = sorted(range(len(picks)), key=lambda i: -picks[i][2])[:max_instances]
            picks = [picks[i] for i in sorted(best)]

        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        bounds = scale.clone()
        masks = np.zeros((len(picks), height, width), dtype=bool)
        boxes = np.zeros((len(picks), 4), dtype=np.float32)
        if picks:
            mh, mw = raw[picks[0][0]].mask_logits.shape[-2:]
            chunk = max(1, _UPSAMPLE_CHUNK_PIXELS // max(1, height * width))
            for start in range(0, len(picks), chunk):
                group = picks[start : start + chunk]
                low = torch.stack([raw[p].mask_logits[q] for p, q, _ in group]).float()
                if low.shape[-2:] != (mh, mw):
                    raise RuntimeError(f"inconsistent mask sizes from the model: {tuple(low.shape)}")
                prob = torch.sigmoid(low)[None]
                up = F.interpolate(prob, size=(height, width), mode="bilinear", align_corners=False)[0]
                masks[start : start + len(group)] = (up > mask_threshold).cpu().numpy()
            box_t = torch.stack([raw[p].boxes[q].cpu() for p, q, _ in picks]) * scale
            boxes = torch.minimum(box_t.clamp(min=0), bounds).numpy()

        # Drop instances whose mask vanished at this mask threshold: nothing to show or export.
        nonempty = masks.reshape(len(picks), -1).any(axis=1) if picks else np.zeros(0, bool)
        prompt_ids = np.array([p for p, _, _ in picks], dtype=np.int64)[nonempty]
        scores = np.array([s for _, _, s in picks], dtype=np.float32)[nonempty]
        counts = np.bincount(prompt_ids, minlength=len(texts))
        prompt_results = [
            PromptResult(text=text, query=tr.query, presence_score=raw[i].presence, count=int(counts[i]),
                         unknown_words=tuple(tr.unknown))
            for i, (text, tr) in enumerate(zip(texts, translations, strict=True))
        ]
        return Segmentation(
            width=width,
            height=height,
            prompts=prompt_results,
            masks=masks[nonempty],
            boxes=boxes[nonempty],
            scores=np.clip(scores, 0.0, 1.0),
            prompt_ids=prompt_ids,
        )
