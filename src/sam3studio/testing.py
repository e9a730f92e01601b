"""Tiny SAM 3 checkpoints for tests and examples, built locally with no download.

`make_tiny_checkpoint` writes a complete transformers checkpoint directory (config, random
weights, a small byte-level BPE CLIP tokenizer, processor config) with ``save_pretrained``, so
tests load it through the same `sam3studio.load_segmenter(path)` users call:

>>> from sam3studio.testing import make_tiny_checkpoint
>>> from sam3studio import load_segmenter
>>> path = make_tiny_checkpoint("/tmp/tiny-sam3")         # doctest: +SKIP
>>> seg = load_segmenter(str(path), device="cpu")         # doctest: +SKIP

The model is about 0.3 M parameters: ViT hidden 32 (2 layers), image 224, CLIP text hidden 32,
DETR encoder/decoder with 1 layer and 5 queries. Its masks are meaningless but deterministic
for a given ``seed``.
"""

from __future__ import annotations

from pathlib import Path

from sam3studio.random_model import build_tokenizer, mark_untrained, video_processor

TINY_IMAGE_SIZE = 224

def tiny_config(vocab_size: int = 1000, bos_token_id: int = 0, eos_token_id: int = 1, initializer_range: float = 0.1):
    """The tiny `Sam3Config` (the sizes transformers' own SAM 3 tests use, with 1 DETR layer)."""
    from transformers import Sam3Config

    def sub(**kw):
        return {"initializer_range": initializer_range, **kw}

    return Sam3Config(
        vision_config=sub(
            backbone_config=sub(
                model_type="sam3_vit_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, image_size=TINY_IMAGE_SIZE, patch_size=14, window_size=8,
                global_attn_indexes=[0, 1], pretrain_image_size=TINY_IMAGE_SIZE,
            ),
            fpn_hidden_size=32, scale_factors=[2.0, 1.0], backbone_feature_sizes=[[32, 32], [16, 16]],
        ),
        text_config=sub(
            model_type="clip_text_model", vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=32, projection_dim=32,
            bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=eos_token_id,
        ),
        geometry_encoder_config=sub(hidden_size=32, num_layers=1, num_attention_heads=4, intermediate_size=64),
        detr_encoder_config=sub(hidden_size=32, num_layers=1, num_attention_heads=4, intermediate_size=64),
        detr_decoder_config=sub(hidden_size=32, num_layers=1, num_queries=5, num_attention_heads=4,
                                intermediate_size=64),
        mask_decoder_config=sub(hidden_size=32, num_upsampling_stages=2, num_attention_heads=4),
        initializer_range=initializer_range,
    )


def tiny_lite_text_config(**kwargs):
    """The tiny config with SAM 3 LiteText's lighter (RepMixer) text encoder instead of CLIP's."""
    from transformers import Sam3LiteTextConfig

    base = tiny_config(**kwargs).to_dict()
    text = base["text_config"]
    vision = {**base["vision_config"], "model_type": "sam3_vision_model"}
    return Sam3LiteTextConfig(
        vision_config=vision,
        text_config={
            "vocab_size": text["vocab_size"], "hidden_size": 32, "intermediate_size": 64, "projection_dim": 32,
            "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 32,
            "repmixer_kernel_size": 3, "bos_token_id": text["bos_token_id"], "eos_token_id": text["eos_token_id"],
        },
        **{k: base[k] for k in ("geometry_encoder_config", "detr_encoder_config", "detr_decoder_config",
                                "mask_decoder_config", "initializer_range")},
    )


ARCHITECTURES = ("sam3", "sam3_lite_text")


def make_tiny_checkpoint(path: str | Path, seed: int = 0, architecture: str = "sam3") -> Path:
    """Write a tiny SAM 3 checkpoint (model + processor) to ``path`` and return the path.

    The directory loads with ``load_segmenter(str(path))`` exactly like a downloaded checkpoint.
    The same ``seed`` gives the same weights. ``architecture="sam3_lite_text"`` writes a
    SAM 3 LiteText checkpoint (same processor, lighter text encoder).
    """
    import torch
    import transformers
    from transformers import Sam3ImageProcessor, Sam3Processor

    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    make_config = tiny_config if architecture == "sam3" else tiny_lite_text_config
    config = make_config(
        vocab_size=max(1000, len(tokenizer)),
        bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    model_cls = transformers.Sam3Model if architecture == "sam3" else transformers.Sam3LiteTextModel
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config).eval()
    mark_untrained(model.config)  # the UI says so (and lowers its default threshold)
    model.save_pretrained(path)
    image_processor = Sam3ImageProcessor(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE})
    Sam3Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(path)
    return path


def tiny_video_config(vocab_size: int = 1000, bos_token_id: int = 0, eos_token_id: int = 1):
    """A tiny `Sam3VideoConfig`: detector and tracker with hidden size 128 on a 224 px, 16x16-patch image.

    The tracker in transformers needs what the tiny image config leaves out: four FPN levels (it uses
    the first three), a memory encoder output of 64 channels (its memory attention reads 64-channel
    keys), and a hidden size above that (object pointers are split into 64-channel tokens).
    """
    from transformers import Sam3VideoConfig

    hidden = 128
    det = tiny_config(vocab_size=vocab_size, bos_token_id=bos_token_id, eos_token_id=eos_token_id).to_dict()
    vision = det["vision_config"]
    vision.update(scale_factors=[4.0, 2.0, 1.0, 0.5], fpn_hidden_size=hidden,
                  backbone_feature_sizes=[[64, 64], [32, 32], [16, 16]])
    det["text_config"]["projection_dim"] = hidden
    for name in ("geometry_encoder_config", "detr_encoder_config", "detr_decoder_config", "mask_decoder_config"):
        det[name]["hidden_size"] = hidden
    tracker = {
        "model_type": "sam3_tracker_video", "vision_config": vision, "image_size": TINY_IMAGE_SIZE,
        "prompt_encoder_config": {"hidden_size": hidden, "image_size": TINY_IMAGE_SIZE, "patch_size": 14,
                                  "mask_input_channels": 16},
        "mask_decoder_config": {"hidden_size": hidden, "mlp_dim": 128, "num_hidden_layers": 1, "num_attention_heads": 4,
                                "iou_head_hidden_dim": hidden},
        "memory_attention_hidden_size": hidden, "memory_attention_num_layers": 1,
        "memory_attention_feed_forward_hidden_size": 128, "memory_encoder_hidden_size": hidden,
        "memory_encoder_output_channels": 64, "mask_downsampler_embed_dim": hidden, "memory_fuser_embed_dim": hidden,
        "memory_fuser_intermediate_dim": 128,
    }
    return Sam3VideoConfig(detector_config=det, tracker_config=tracker, low_res_mask_size=64)


def make_tiny_video_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny SAM 3 video checkpoint (`Sam3VideoModel` + `Sam3VideoProcessor`, about 4 M parameters).

    It has the layout of the real ``facebook/sam3`` (a ``sam3_video`` checkpoint), so it serves all three
    uses: ``load_segmenter(str(path))`` (image segmentation and click refinement: the tracker loads
    from it on the first ``refine``) and ``sam3studio.video.load_video_segmenter(str(path))``.
    """
    import torch
    from transformers import Sam3VideoModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = tiny_video_config(
        vocab_size=max(1000, len(tokenizer)),
        bos_token_id=tokenizer.convert_tokens_to_ids("<|startoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sam3VideoModel(config).eval()
    mark_untrained(model.config)
    model.save_pretrained(path)
    video_processor(tokenizer, TINY_IMAGE_SIZE).save_pretrained(path)
    return path


SHAPES = ("circle", "square", "triangle")


def _shape_mask(kind: str, cx: float, cy: float, r: float, height: int, width: int):
    import numpy as np

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    if kind == "square":
        return (np.abs(xx - cx) <= r * 0.85) & (np.abs(yy - cy) <= r * 0.85)
    # an upward triangle: below the two slanted edges, above the base
    return (yy <= cy + r * 0.8) & (yy >= cy - r + 1.8 * np.abs(xx - cx))


def make_shapes_dataset(
    out_dir: str | Path,
    n_images: int,
    seed: int = 0,
    categories: tuple[str, ...] = ("circle", "square"),
    heights: tuple[int, int] = (110, 150),
    widths: tuple[int, int] = (140, 200),
    objects: tuple[int, int] = (1, 3),
    split: str = "images",
    noise: float = 25.0,
    radius: tuple[float, float] = (0.09, 0.2),
) -> Path:
    """Write a labelled dataset of coloured shapes on noisy backgrounds; return its COCO JSON path.

    Each image (PNG, random size in ``heights`` x ``widths``) has a random number of objects in
    ``objects``, each a shape of one of ``categories`` (``circle``, ``square``, ``triangle``) in a random
    colour, so that shape, not colour, tells the categories apart; ``radius`` is an object's size as a fraction
    of the image's shorter side and ``noise`` the background's pixel noise (standard deviation, 0-255 scale).
    Objects do not overlap. Annotations
    are COCO instances with compressed RLE masks; images go to ``out_dir/split/`` and the JSON to
    ``out_dir/split.json``, whose ``file_name`` entries (``split/00001.png``) are relative to ``out_dir``,
    the JSON's own folder (so no images folder needs to be given). Deterministic for a ``seed``.
    """
    import json

    import numpy as np
    from PIL import Image
    from pycocotools import mask as mask_utils

    unknown = sorted(set(categories) - set(SHAPES))
    if unknown:
        raise ValueError(f"unknown shapes {unknown}; choose from {SHAPES}")
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    image_dir = out_dir / split
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id in range(1, n_images + 1):
        h, w = int(rng.integers(heights[0], heights[1] + 1)), int(rng.integers(widths[0], widths[1] + 1))
        base = rng.integers(40, 200, size=3)
        pixels = np.clip(base + rng.normal(0, noise, size=(h, w, 3)), 0, 255)
        taken = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(objects[0], objects[1] + 1))):
            for _attempt in range(30):
                r = float(rng.uniform(*radius) * min(h, w))
                cx, cy = float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r))
                cat = int(rng.integers(len(categories)))
                mask = _shape_mask(categories[cat], cx, cy, r, h, w)
                if mask.sum() > 20 and not (mask & taken).any():
                    break
            else:
                continue
            taken |= mask
            colour = rng.integers(0, 256, size=3)
            pixels[mask] = np.clip(colour + rng.normal(0, 12, size=(int(mask.sum()), 3)), 0, 255)
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": cat + 1, "iscrowd": 0,
                "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
                "area": float(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            })
        name = f"{image_id:05d}.png"
        Image.fromarray(pixels.astype(np.uint8)).save(image_dir / name)
        images.append({"id": image_id, "file_name": f"{split}/{name}", "width": w, "height": h})
    path = out_dir / f"{split}.json"
    path.write_text(json.dumps({
        "images": images, "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(categories)],
    }))
    return path
