"""The data engine: label a folder with the model, review and correct it, export it for training.

    store.py    DatasetStore: one SQLite file per dataset folder (schema version, migrations), images with
                review states and versions, instances as COCO RLE, paged lists, version-checked changes
    label.py    label_dataset: the model's proposals for every new image (batch's Worker / Ray engine), resumable
    importer.py import_labels: start or extend a dataset from COCO or YOLO labels
    export.py   export_dataset: COCO, YOLO, Pascal VOC, Label Studio, CVAT; splits.py: train/val/test
    shapes.py   one polygon per instance; Label Studio's brush RLE
    review.py   what the review UI and the REST API share: the datasets a server serves (by id), views
    render.py   an image with its instances drawn (colour per class, ids)

A "work" package: it imports the engine and the leaves (and batch's per-image work), never the service or an
edge. Importing it imports neither torch nor gradio.
"""

from __future__ import annotations

from sam3studio.dataset.store import (
    REVIEWED,
    STATES,
    DatasetError,
    DatasetNotFound,
    DatasetStore,
    ImageFilter,
    StoredImage,
    StoredInstance,
    VersionConflict,
    parse_classes,
)

__all__ = ["REVIEWED", "STATES", "DatasetError", "DatasetNotFound", "DatasetStore", "ImageFilter", "StoredImage",
           "StoredInstance", "VersionConflict", "parse_classes"]
