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
