"""Training data for fine-tuning: COCO / SA-Co JSON or a Roboflow folder, checked before any training.

The files are read by `sam3studio.evaluation.data` (the loader `sam3studio eval` uses), so train and
validation splits are `EvalDataset`s: the validation split goes straight to the evaluator. On top of
that this module:

- finds the splits of a Roboflow-style export (``train/_annotations.coco.json``, ``valid/...``) and drops
  Roboflow's placeholder category (the dataset's own name, parent of every real category, unannotated);
- holds out a seeded 15% of the training images when no validation split is given;
- checks everything that would otherwise fail mid-run: missing image files, image sizes that differ
  from the JSON, annotations without masks, zero annotations, an empty validation split;
- turns one image into `ImageTargets`: its prompts (every category asked on it: positives and hard
  negatives) and, per positive prompt, the instance masks as a boolean ``(n, H, W)`` array.

Errors are `FinetuneDataError` (an `InputError`) with one sentence naming the file and the entry.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sam3studio.errors import InputError
from sam3studio.evaluation.data import EvalDataError, EvalDataset, EvalImage, load_gt

__all__ = ["FinetuneDataError", "ImageTargets", "TrainingData", "check_images", "image_targets", "load_training_data",
           "split_dataset"]

ROBOFLOW_ANNOTATIONS = "_annotations.coco.json"
ROBOFLOW_VAL_FOLDERS = ("valid", "val", "validation")
DEFAULT_VAL_FRACTION = 0.15


class FinetuneDataError(InputError):
    """Training or validation data that cannot be trained on (missing files, no masks, empty splits)."""


@dataclass
class TrainingData:
    """The train and validation splits, and what was decided about them (printed and reported)."""

    train: EvalDataset
    val: EvalDataset
    val_source: str  # "given", "roboflow" or "held out"
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"train": self.train.summary(), "val": self.val.summary(), "val_source": self.val_source,
                "notes": list(self.notes)}


@dataclass
class ImageTargets:
    """One training image: its prompts and, for each positive one, its instances' RLE masks.

    Masks stay run-length encoded until `decode` (a few hundred full-resolution images would not fit).
    """

    image: EvalImage
    path: Path
    prompts: list[str]  # one per category asked on the image, in the dataset's category order
    instances: dict[str, list[dict[str, Any]]]  # prompt -> RLEs; prompts without instances are hard negatives

    @property
    def negatives(self) -> list[str]:
        return [p for p in self.prompts if p not in self.instances]

    @property
    def positives(self) -> list[str]:
        return [p for p in self.prompts if p in self.instances]

    def decode(self) -> dict[str, np.ndarray]:
        """Prompt -> ``(n, H, W)`` bool masks of its instances."""
        return {p: np.stack([_decode(r) for r in rles]) for p, rles in self.instances.items()}


# ---------------------------------------------------------------------------- loading
def _roboflow_split(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        path = folder / name / ROBOFLOW_ANNOTATIONS
        if path.is_file():
            return path
    return None


def _roboflow_placeholders(paths: list[Path]) -> set[str]:
    """Names of Roboflow's placeholder categories: a supercategory of others, never annotated itself."""
    names: dict[int, str] = {}
    parents: set[str] = set()
    used: set[int] = set()
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return set()  # load_gt reports the problem precisely
        for c in data.get("categories") or []:
            if isinstance(c, dict) and isinstance(c.get("id"), int) and isinstance(c.get("name"), str):
                names[c["id"]] = c["name"]
                if c.get("supercategory") not in (None, "none", c["name"]):
                    parents.add(str(c["supercategory"]))
        used.update(a.get("category_id") for a in data.get("annotations") or [] if isinstance(a, dict))
    return {name for cid, name in names.items() if name in parents and cid not in used}


def _drop_categories(ds: EvalDataset, names: set[str]) -> EvalDataset:
    drop = {c.id for c in ds.categories if c.name in names}
    if not drop:
        return ds
    return replace(ds, categories=[c for c in ds.categories if c.id not in drop],
                   asked={k: [c for c in v if c not in drop] for k, v in ds.asked.items()})


def split_dataset(ds: EvalDataset, fraction: float = DEFAULT_VAL_FRACTION, seed: int = 0) -> tuple[EvalDataset, EvalDataset]:
    """A seeded split by image: ``fraction`` of the images (at least one) to validation, the rest to training."""
    if not 0 < fraction < 1:
        raise FinetuneDataError(f"the validation fraction must be between 0 and 1, got {fraction}")
    if len(ds.images) < 2:
        raise FinetuneDataError(f"{ds.source}: {len(ds.images)} image cannot be split into training and validation; "
                                "give a validation file with --val")
    ids = [im.id for im in ds.images]
    random.Random(seed).shuffle(ids)
    n_val = max(1, round(len(ids) * fraction))
    val_ids = set(ids[:n_val])

    def part(keep: set[int]) -> EvalDataset:
        return replace(ds, images=[im for im in ds.images if im.id in keep],
                       annotations=[a for a in ds.annotations if a["image_id"] in keep],
                       asked={k: v for k, v in ds.asked.items() if k in keep},
                       non_exhaustive={p for p in ds.non_exhaustive if p[0] in keep})

    return part(set(ids) - val_ids), part(val_ids)


def load_training_data(train: str | Path, val: str | Path | None = None, images: str | Path | None = None,
                       mapping: Mapping[str, str] | None = None, fmt: str = "auto",
                       val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = 0) -> TrainingData:
    """Load the splits (see the module docstring) and check them; raises `FinetuneDataError`.

    ``train`` is a COCO / SA-Co JSON file or a Roboflow export folder; ``images`` the folder the
    ``file_name`` entries are in (default: each JSON's own folder, as for ``eval``).
    """
    train = Path(train)
    notes: list[str] = []
    if images is not None and not Path(images).is_dir():
        raise FinetuneDataError(f"--images {images}: no such folder")
    try:
        if train.is_dir():
            if images is not None:
                raise FinetuneDataError(f"{train} is a Roboflow folder (its images are next to each split's JSON); "
                                        "drop --images")
            train_json = _roboflow_split(train, ("train",))
            if train_json is None:
                raise FinetuneDataError(f"{train} is a folder but has no train/{ROBOFLOW_ANNOTATIONS} "
                                        "(a Roboflow COCO export); give a COCO JSON file instead")
            val_json = Path(val) if val is not None else _roboflow_split(train, ROBOFLOW_VAL_FOLDERS)
            placeholders = _roboflow_placeholders([p for p in (train_json, val_json) if p is not None])
            train_ds = _drop_categories(load_gt(train_json, None, fmt, None), placeholders)
            val_ds = _drop_categories(load_gt(val_json, None, fmt, None), placeholders) if val_json else None
            if placeholders:
                notes.append(f"dropped Roboflow's placeholder categor{'y' if len(placeholders) == 1 else 'ies'} "
                             f"{', '.join(sorted(placeholders))} (parent of the real ones, never annotated)")
            val_source = "given" if val is not None else "roboflow"
        else:
            train_ds = load_gt(train, images, fmt, None)
            val_ds = load_gt(val, images, fmt, None) if val is not None else None
            val_source = "given"
        if mapping:
            train_ds = train_ds.with_mapping(mapping)
            val_ds = val_ds.with_mapping(mapping) if val_ds is not None else None
    except EvalDataError as exc:
        raise FinetuneDataError(str(exc)) from None
    if val_ds is None:
        train_ds, val_ds = split_dataset(train_ds, val_fraction, seed)
        val_source = "held out"
        notes.append(f"no validation split given: held out {len(val_ds.images)} of "
                     f"{len(train_ds.images) + len(val_ds.images)} training images ({val_fraction:.0%}, seed {seed})")
    data = TrainingData(train_ds, val_ds, val_source, notes)
    check_data(data)
    return data


# ---------------------------------------------------------------------------- checks
def check_data(data: TrainingData) -> None:
    """What must hold before training starts (files and images are checked by `check_images`)."""
    train, val = data.train, data.val
    if not train.annotations:
        raise FinetuneDataError(f"{train.source}: no annotations to train on")
    if not val.images:
        raise FinetuneDataError(f"{val.source}: the validation split has no images")
    if not val.annotations:
        raise FinetuneDataError(f"{val.source}: the validation split has no annotations, so mask AP is undefined")
    for ds in (train, val):
        for a in ds.annotations:
            if not a.get("segmentation") and not a.get("iscrowd"):
                raise FinetuneDataError(f"{ds.source}: annotation {a['id']} (image {a['image_id']}) has a box but no "
                                        "mask; fine-tuning needs instance masks (polygons or RLE)")
    train_prompts = {c.prompt for c in train.categories}
    unseen = sorted({c.prompt for c in val.categories} - train_prompts)
    if unseen:
        data.notes.append(f"validation prompts never trained on: {', '.join(unseen[:5])}")
    if not any(train.asked.values()):
        raise FinetuneDataError(f"{train.source}: no category is asked on any image")


def check_images(ds: EvalDataset) -> None:
    """Every image exists and has the size its JSON entry says (headers only: no decoding)."""
    from PIL import Image, UnidentifiedImageError

    missing = [ds.image_path(im) for im in ds.images if not ds.image_path(im).is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise FinetuneDataError(f"image {missing[0]}: no such file{more} (set the images folder with --images)")
    for im in ds.images:
        path = ds.image_path(im)
        try:
            with Image.open(path) as opened:
                size = opened.size
        except (OSError, UnidentifiedImageError):
            raise FinetuneDataError(f"image {path}: not a readable image") from None
        if size != (im.width, im.height):
            raise FinetuneDataError(f"image {path} is {size[0]}x{size[1]} but {ds.source} says {im.width}x{im.height} "
                                    "(masks would not line up)")


# ---------------------------------------------------------------------------- targets
def _decode(rle: dict[str, Any]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    coded = {"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(coded).astype(bool)


def image_targets(ds: EvalDataset) -> list[ImageTargets]:
    """Per image of ``ds``: the prompts asked on it and its non-crowd instances (crowd regions are skipped)."""
    by_image: dict[int, dict[int, list[dict[str, Any]]]] = {}
    for a in ds.annotations:
        if not a.get("iscrowd") and a.get("segmentation") and a.get("area", 1) > 0:
            by_image.setdefault(a["image_id"], {}).setdefault(a["category_id"], []).append(a["segmentation"])
    out = []
    for image in ds.images:
        by_cat = by_image.get(image.id, {})
        prompts: list[str] = []
        instances: dict[str, list[dict[str, Any]]] = {}
        for cat_id in ds.asked.get(image.id, []):
            prompt = ds.category(cat_id).prompt
            if prompt not in prompts:
                prompts.append(prompt)
            if cat_id in by_cat:  # categories sharing a prompt share its instances
                instances.setdefault(prompt, []).extend(by_cat[cat_id])
        out.append(ImageTargets(image, ds.image_path(image), prompts, instances))
    return out
