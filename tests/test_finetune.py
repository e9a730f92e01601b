"""`sam3studio.finetune` and `sam3studio finetune` on the tiny checkpoint and synthetic shape data.

Data: `sam3studio.testing.make_shapes_dataset` (coloured circles and squares on noisy backgrounds, COCO
RLE masks). Every run here is short (a few small images, a few epochs) so the file stays within about
two minutes on two cores; the figures each test relies on are stated next to it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from sam3studio.finetune import FinetuneConfig, FinetuneConfigError, FinetuneDataError, OutputFolderError, finetune
from sam3studio.testing import make_shapes_dataset, make_tiny_checkpoint

runner = CliRunner()
SMALL = {"heights": (56, 72), "widths": (64, 88)}  # small images: every run below stays fast


def weights(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ft-tiny"), seed=0)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ft-shapes")
    train = make_shapes_dataset(root, 24, seed=1, split="train", objects=(1, 2), radius=(0.2, 0.32), **SMALL)
    val = make_shapes_dataset(root, 8, seed=2, split="val", objects=(1, 2), radius=(0.2, 0.32), **SMALL)
    return train, val


@pytest.fixture(scope="module")
def heads_run(ckpt, shapes, tmp_path_factory):
    """One default-mode (heads) run shared by the tests that read its output."""
    out = tmp_path_factory.mktemp("ft-heads") / "out"
    cfg = FinetuneConfig(epochs=8, batch_size=2, patience=None, dtype="float32")
    return finetune(shapes[0], shapes[1], out=out, model=str(ckpt), config=cfg)
