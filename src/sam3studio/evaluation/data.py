"""Ground truth for evaluation: COCO and SA-Co annotation files become one `EvalDataset`.

Both formats end up in the same in-memory shape:

- ``images``: the real images (id, file name, width, height);
- ``categories``: what is asked for (id, name, and the ``prompt`` text the model receives);
- ``asked``: per image, the category ids asked on it. COCO asks every category on every image
  (a category without instances on an image is a negative); SA-Co asks exactly the noun phrases
  listed for that image, positives and negatives;
- ``annotations``: COCO-style instance dicts (``image_id``, ``category_id``, ``bbox`` XYWH,
  optional ``segmentation`` as polygons or RLE, ``area``, ``iscrowd``).

Errors in the files raise `EvalDataError` (an `InputError`) with one sentence naming the file and
the offending entry. Only the standard library, numpy and pycocotools are used here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sam3studio.errors import InputError

__all__ = [
    "EvalCategory",
    "EvalDataError",
    "EvalDataset",
    "EvalImage",
    "detect_format",
    "load_coco_gt",
    "load_gt",
    "load_mapping",
    "load_saco_gt",
    "normalize_prompt",
]

# The separators `sam3studio.prompts.parse_prompts` splits on; a category name containing one must
# still reach the model as a single prompt.
_SEPARATORS = re.compile(r"[,，、;；]")


class EvalDataError(InputError):
    """A ground-truth, mapping or predictions file is missing or malformed."""


@dataclass(frozen=True)
class EvalImage:
    id: int
    file_name: str
    width: int
    height: int


@dataclass(frozen=True)
class EvalCategory:
    id: int
    name: str
    prompt: str


@dataclass
class EvalDataset:
    """Images, categories, the (image, category) pairs asked, and instance annotations."""

    format: str  # "coco" or "saco"
    images: list[EvalImage]
    categories: list[EvalCategory]
    annotations: list[dict[str, Any]]
    asked: dict[int, list[int]]
    images_dir: Path | None = None
    source: str = ""
    # SA-Co pairs whose instances are not exhaustively annotated: excluded from instance-level F1
    # and cgF1 (as the SA-Co evaluator does), kept for presence and AP.
    non_exhaustive: set[tuple[int, int]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._image_by_id = {im.id: im for im in self.images}
        self._cat_by_id = {c.id: c for c in self.categories}

    # ------------------------------------------------------------------ access
    def image(self, image_id: int) -> EvalImage:
        return self._image_by_id[image_id]

    def category(self, category_id: int) -> EvalCategory:
        return self._cat_by_id[category_id]

    def image_path(self, image: EvalImage) -> Path:
        base = self.images_dir if self.images_dir is not None else Path(".")
        return base / image.file_name

    @property
    def has_masks(self) -> bool:
        """True when every annotation has a segmentation (polygons or RLE), so mask AP is defined."""
        return bool(self.annotations) and all(a.get("segmentation") for a in self.annotations)

    def pairs(self) -> list[tuple[int, int]]:
        """Every (image id, category id) asked, in image order."""
        return [(im.id, c) for im in self.images for c in self.asked.get(im.id, [])]

    def positive_pairs(self) -> set[tuple[int, int]]:
        """Pairs with at least one non-crowd instance."""
        return {(a["image_id"], a["category_id"]) for a in self.annotations if not a.get("iscrowd", 0)}

    def subset(self, limit: int | None) -> EvalDataset:
        """The first ``limit`` images with their annotations (all of them when ``limit`` is None)."""
        if limit is None or limit >= len(self.images):
            return self
        if limit < 1:
            raise EvalDataError(f"--limit must be at least 1, got {limit}")
        images = self.images[:limit]
        keep = {im.id for im in images}
        return replace(
            self,
            images=images,
            annotations=[a for a in self.annotations if a["image_id"] in keep],
            asked={k: v for k, v in self.asked.items() if k in keep},
            non_exhaustive={p for p in self.non_exhaustive if p[0] in keep},
        )

    def with_mapping(self, mapping: Mapping[str, str]) -> EvalDataset:
        """Replace the prompt of each category whose name is a key of ``mapping``."""
        names = {c.name for c in self.categories}
        unknown = sorted(set(mapping) - names)
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:5])
            raise EvalDataError(f"mapping names {len(unknown)} categor{'y' if len(unknown) == 1 else 'ies'} "
                                f"not in the ground truth: {shown}")
        cats = [replace(c, prompt=normalize_prompt(mapping[c.name], f"mapping[{c.name!r}]")) if c.name in mapping else c
                for c in self.categories]
        return replace(self, categories=cats)

    def summary(self) -> dict[str, Any]:
        pairs = self.pairs()
        return {
            "format": self.format,
            "source": self.source,
            "images": len(self.images),
            "categories": len(self.categories),
            "pairs": len(pairs),
            "positive_pairs": len(self.positive_pairs() & set(pairs)),
            "annotations": len(self.annotations),
            "has_masks": self.has_masks,
        }

    # ------------------------------------------------------------------ pycocotools
    def coco_dict(self) -> dict[str, Any]:
        """The ground truth as a COCO dataset dict (what `pycocotools.coco.COCO` indexes)."""
        return {
            "images": [{"id": im.id, "file_name": im.file_name, "width": im.width, "height": im.height}
                       for im in self.images],
            "categories": [{"id": c.id, "name": c.name} for c in self.categories],
            "annotations": [dict(a) for a in self.annotations],
        }


# ---------------------------------------------------------------------------- helpers
def normalize_prompt(text: Any, where: str) -> str:
    """One prompt string as the model will read it: separators become spaces, whitespace collapses."""
    if not isinstance(text, str):
        raise EvalDataError(f"{where} must be a string, got {type(text).__name__}")
    out = " ".join(_SEPARATORS.sub(" ", text).split())
    if not out:
        raise EvalDataError(f"{where} is empty")
    return out


def _read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise EvalDataError(f"{what} {path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise EvalDataError(f"{what} {path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise EvalDataError(f"{what} {path}: malformed JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None


def _list_of_dicts(data: Mapping[str, Any], key: str, src: str, required: bool = True) -> list[dict[str, Any]]:
    value = data.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise EvalDataError(f"{src}: '{key}' must be a list of objects")
    return value


def _need(entry: Mapping[str, Any], key: str, types: type | tuple[type, ...], where: str) -> Any:
    if key not in entry:
        raise EvalDataError(f"{where} has no '{key}'")
    value = entry[key]
    if not isinstance(value, types) or isinstance(value, bool):
        raise EvalDataError(f"{where}: '{key}' has the wrong type ({type(value).__name__})")
    return value


def _size(entry: Mapping[str, Any], where: str) -> tuple[int, int]:
    w = _need(entry, "width", (int, float), where)
    h = _need(entry, "height", (int, float), where)
    if w <= 0 or h <= 0 or int(w) != w or int(h) != h:
        raise EvalDataError(f"{where}: width and height must be positive integers, got {w}x{h}")
    return int(w), int(h)


def _check_annotation(ann: dict[str, Any], image: EvalImage, where: str) -> dict[str, Any]:
    """Validate one instance and return a clean COCO annotation (area filled in when missing)."""
    from pycocotools import mask as mask_utils

    out: dict[str, Any] = {"iscrowd": int(bool(ann.get("iscrowd", 0)))}
    segm = ann.get("segmentation")
    bbox = ann.get("bbox")
    if segm:
        if isinstance(segm, dict):
            size = segm.get("size")
            if not isinstance(segm.get("counts"), (list, str)) or not isinstance(size, list) or len(size) != 2:
                raise EvalDataError(f"{where}: RLE segmentation needs 'size' [h, w] and 'counts'")
            if [int(size[0]), int(size[1])] != [image.height, image.width]:
                raise EvalDataError(f"{where}: mask size {size[1]}x{size[0]} (w x h) differs from the image's "
                                    f"{image.width}x{image.height}")
            rle = mask_utils.frPyObjects(segm, image.height, image.width) if isinstance(segm["counts"], list) else segm
        elif isinstance(segm, list) and all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in segm):
            rle = mask_utils.merge(mask_utils.frPyObjects(segm, image.height, image.width))
        else:
            raise EvalDataError(f"{where}: 'segmentation' must be polygons [[x, y, ...]] or an RLE dict")
        if isinstance(rle.get("counts"), bytes):
            rle = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        out["segmentation"] = rle
        if bbox is None:
            bbox = [float(v) for v in mask_utils.toBbox(dict(rle, counts=rle["counts"].encode("ascii")))]
        area = ann.get("area")
        if area is None:
            area = float(mask_utils.area(dict(rle, counts=rle["counts"].encode("ascii"))))
    else:
        area = ann.get("area")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
        raise EvalDataError(f"{where} needs a 'bbox' [x, y, w, h] or a 'segmentation'")
    if bbox[2] < 0 or bbox[3] < 0:
        raise EvalDataError(f"{where}: bbox width and height must not be negative, got {bbox}")
    out["bbox"] = [float(v) for v in bbox]
    out["area"] = float(area) if area is not None else float(bbox[2] * bbox[3])
    return out


# ---------------------------------------------------------------------------- loaders
def load_mapping(path: str | Path) -> dict[str, str]:
    """A JSON object ``{"category name": "prompt", ...}``."""
    data = _read_json(path, "mapping file")
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise EvalDataError(f"mapping file {path}: must be a JSON object of category name -> prompt strings")
    return data


def detect_format(data: Any) -> str:
    """``"saco"`` when image entries carry a ``text_input`` noun phrase, else ``"coco"``."""
    images = data.get("images") if isinstance(data, dict) else None
    if isinstance(images, list) and any(isinstance(im, dict) and "text_input" in im for im in images):
        return "saco"
    return "coco"


def load_gt(path: str | Path, images_dir: str | Path | None = None, format: str = "auto",
            mapping: Mapping[str, str] | None = None) -> EvalDataset:
    """Load COCO or SA-Co ground truth; ``format="auto"`` looks for SA-Co's ``text_input``."""
    if format not in ("auto", "coco", "saco"):
        raise EvalDataError(f"format must be auto, coco or saco, got {format!r}")
    data = _read_json(path, "ground truth")
    fmt = detect_format(data) if format == "auto" else format
    loader = _parse_saco if fmt == "saco" else _parse_coco
    ds = loader(data, str(path), images_dir)
    return ds.with_mapping(mapping) if mapping else ds


def load_coco_gt(path: str | Path, images_dir: str | Path | None = None,
                 mapping: Mapping[str, str] | None = None) -> EvalDataset:
    """COCO instances JSON: ``images``, ``annotations`` (masks or boxes) and ``categories``.

    Every category is asked on every image; its name is the prompt unless ``mapping`` says otherwise.
    ``images_dir`` defaults to the folder of ``path``.
    """
    return load_gt(path, images_dir, "coco", mapping)


def load_saco_gt(path: str | Path, images_dir: str | Path | None = None,
                 mapping: Mapping[str, str] | None = None) -> EvalDataset:
    """SA-Co (SA-Co/Gold, SA-Co/Silver) JSON: each ``images`` entry is one (image, noun phrase) pair
    with ``text_input``; annotations point at the pair's id. Pairs without annotations are negatives.
    """
    return load_gt(path, images_dir, "saco", mapping)


def _images_dir(path: str, images_dir: str | Path | None) -> Path:
    return Path(images_dir) if images_dir is not None else Path(path).parent


def _parse_coco(data: Any, src: str, images_dir: str | Path | None) -> EvalDataset:
    if not isinstance(data, dict):
        raise EvalDataError(f"{src}: a COCO file must be a JSON object with images, annotations and categories")
    raw_images = _list_of_dicts(data, "images", src)
    raw_cats = _list_of_dicts(data, "categories", src)
    raw_anns = _list_of_dicts(data, "annotations", src, required=False)
    if not raw_images:
        raise EvalDataError(f"{src}: 'images' is empty")
    if not raw_cats:
        raise EvalDataError(f"{src}: 'categories' is empty")
    images: list[EvalImage] = []
    for i, im in enumerate(raw_images):
        where = f"{src}: images[{i}]"
        image_id = _need(im, "id", int, where)
        w, h = _size(im, where)
        images.append(EvalImage(image_id, _need(im, "file_name", str, where), w, h))
    if len({im.id for im in images}) != len(images):
        raise EvalDataError(f"{src}: image ids are not unique")
    cats: list[EvalCategory] = []
    for i, c in enumerate(raw_cats):
        where = f"{src}: categories[{i}]"
        name = _need(c, "name", str, where)
        cats.append(EvalCategory(_need(c, "id", int, where), name, normalize_prompt(name, f"{where}.name")))
    if len({c.id for c in cats}) != len(cats):
        raise EvalDataError(f"{src}: category ids are not unique")
    by_id = {im.id: im for im in images}
    cat_ids = {c.id for c in cats}
    anns: list[dict[str, Any]] = []
    for i, a in enumerate(raw_anns):
        where = f"{src}: annotations[{i}]"
        image_id = _need(a, "image_id", int, where)
        cat_id = _need(a, "category_id", int, where)
        if image_id not in by_id:
            raise EvalDataError(f"{where}: image_id {image_id} is not in 'images'")
        if cat_id not in cat_ids:
            raise EvalDataError(f"{where}: category_id {cat_id} is not in 'categories'")
        ann = _check_annotation(a, by_id[image_id], where)
        anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat_id, **ann})
    all_cats = [c.id for c in cats]
    return EvalDataset("coco", images, cats, anns, {im.id: list(all_cats) for im in images},
                       images_dir=_images_dir(src, images_dir), source=src)


def _parse_saco(data: Any, src: str, images_dir: str | Path | None) -> EvalDataset:
    if not isinstance(data, dict):
        raise EvalDataError(f"{src}: an SA-Co file must be a JSON object with images and annotations")
    raw_images = _list_of_dicts(data, "images", src)
    raw_anns = _list_of_dicts(data, "annotations", src, required=False)
    if not raw_images:
        raise EvalDataError(f"{src}: 'images' is empty")
    images: list[EvalImage] = []
    image_of_file: dict[str, EvalImage] = {}
    cats: list[EvalCategory] = []
    cat_of_text: dict[str, int] = {}
    pair_of: dict[Any, tuple[int, int]] = {}  # SA-Co pair id -> (image id, category id)
    asked: dict[int, list[int]] = {}
    non_exhaustive: set[tuple[int, int]] = set()
    for i, entry in enumerate(raw_images):
        where = f"{src}: images[{i}]"
        pair_id = _need(entry, "id", (int, str), where)
        if pair_id in pair_of:
            raise EvalDataError(f"{where}: id {pair_id!r} is not unique")
        file_name = _need(entry, "file_name", str, where)
        text = _need(entry, "text_input", str, where)
        w, h = _size(entry, where)
        image = image_of_file.get(file_name)
        if image is None:
            image = image_of_file[file_name] = EvalImage(len(images) + 1, file_name, w, h)
            images.append(image)
        elif (image.width, image.height) != (w, h):
            raise EvalDataError(f"{where}: {file_name} is {w}x{h} here but {image.width}x{image.height} in an earlier entry")
        if text not in cat_of_text:
            cat_of_text[text] = len(cats) + 1
            cats.append(EvalCategory(len(cats) + 1, text, normalize_prompt(text, f"{where}.text_input")))
        cat_id = cat_of_text[text]
        if cat_id in asked.setdefault(image.id, []):
            raise EvalDataError(f"{where}: noun phrase {text!r} is listed twice for {file_name}")
        asked[image.id].append(cat_id)
        pair_of[pair_id] = (image.id, cat_id)
        if entry.get("is_instance_exhaustive", True) is False:
            non_exhaustive.add((image.id, cat_id))
    by_id = {im.id: im for im in images}
    anns: list[dict[str, Any]] = []
    for i, a in enumerate(raw_anns):
        where = f"{src}: annotations[{i}]"
        pair_id = _need(a, "image_id", (int, str), where)
        if pair_id not in pair_of:
            raise EvalDataError(f"{where}: image_id {pair_id!r} is not in 'images'")
        image_id, cat_id = pair_of[pair_id]
        ann = _check_annotation(a, by_id[image_id], where)
        anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat_id, **ann})
    return EvalDataset("saco", images, cats, anns, asked, images_dir=_images_dir(src, images_dir), source=src,
                       non_exhaustive=non_exhaustive)
