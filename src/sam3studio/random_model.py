"""The ``random`` model source: the full-size SAM 3 architecture with untrained weights.

For benchmarks and for trying the interface without the gated checkpoint: speed and memory do not
depend on weight values, but masks are meaningless. The tokenizer is a small byte-level BPE trained
on a fixed word list (every byte has a token, so any text tokenizes), the same one the tiny test
checkpoints in `sam3studio.testing` use.
"""

from __future__ import annotations

import json
import logging
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

__all__ = ["UNTRAINED_FLAG", "build_random_model", "build_tokenizer", "is_untrained", "mark_untrained", "video_processor"]

# A config attribute (saved in config.json) that says the weights were never trained: the `random` source and
# the tiny test checkpoints of `sam3studio.testing`. The UI reads it to say so and to lower its default threshold.
UNTRAINED_FLAG = "sam3studio_untrained"
# Untrained weights score every query near 0.3: interfaces that pick a threshold for the user (the web UI, the
# agent command) start here for such a model, so that its first answer shows masks at all.
UNTRAINED_THRESHOLD = 0.25


def mark_untrained(config: Any) -> Any:
    """Set `UNTRAINED_FLAG` on a transformers config and on its detector sub-config (a ``sam3_video`` one)."""
    setattr(config, UNTRAINED_FLAG, True)
    detector = getattr(config, "detector_config", None)
    if detector is not None:
        setattr(detector, UNTRAINED_FLAG, True)
    return config


def is_untrained(model: Any) -> bool:
    """Whether ``model``'s config carries `UNTRAINED_FLAG` (random weights: its masks mean nothing)."""
    return bool(getattr(getattr(model, "config", None), UNTRAINED_FLAG, False))

# Words that get whole-word BPE merges; anything else still tokenizes (byte fallback).
_CORPUS_WORDS = (
    "a an the of in on with and person people man woman child dog cat bird horse sheep cow elephant bear "
    "zebra giraffe car bus truck bicycle motorcycle airplane train boat rocket astronaut coffee cup mug "
    "table chair sofa bed plant tree flower red green blue yellow white black orange purple brown gray "
    "wooden metal glass plastic leftmost rightmost center top bottom small large big flying clothes crack "
    "rust road sign traffic light window door wheel face hand head"
).split()


def build_tokenizer():
    """A small CLIP byte-level BPE tokenizer (`transformers.CLIPTokenizer`) trained on a fixed word list.

    Every byte has a token, so any text (Chinese too) tokenizes; common visual words are single tokens.
    Deterministic: the same vocabulary on every call.
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"),
                                 behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    bpe.train_from_iterator([" ".join(_CORPUS_WORDS)] * 3, trainer)
    trained = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = dict(trained["vocab"])
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):  # CLIP's base alphabet: bytes, and bytes + </w>
        for token in (ch, ch + "</w>"):
            vocab.setdefault(token, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    return CLIPTokenizer(vocab=vocab, merges=merges)


def video_processor(tokenizer, image_size: int | None = None):
    """A `Sam3VideoProcessor` (image and video processors at ``image_size``; full size when None)."""
    from transformers import Sam3ImageProcessor, Sam3VideoProcessor
    from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

    size = {"height": image_size, "width": image_size} if image_size else None
    kwargs = {"size": size} if size else {}
    return Sam3VideoProcessor(image_processor=Sam3ImageProcessor(**kwargs), video_processor=Sam2VideoVideoProcessor(**kwargs),
                              tokenizer=tokenizer)


def build_random_model(device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    """Full-size `Sam3Model` with random weights and a `Sam3Processor` with the synthetic tokenizer."""
    import torch
    from transformers import Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor

    warnings.warn(
        "model source 'random': full-size SAM 3 with UNTRAINED weights. Masks are meaningless; "
        "use it only to measure speed and memory.",
        stacklevel=4,
    )
    log.warning("Loading SAM 3 with random weights: results are meaningless (benchmarks only)")
    tokenizer = build_tokenizer()
    config = mark_untrained(Sam3Config())
    with torch.device(device):
        model = Sam3Model(config)
    model = model.to(dtype=dtype).eval()
    processor = Sam3Processor(image_processor=Sam3ImageProcessor(), tokenizer=tokenizer)
    return model, processor
