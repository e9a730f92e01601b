"""Shared fixtures: one tiny SAM 3 checkpoint per session, loaded through the public path."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach a model hub
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore", message=".*OpenCV.*")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    from sam3studio.testing import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny-sam3"), seed=0)


@pytest.fixture
def segmenter(tiny_checkpoint):
    """A fresh float32 segmenter per test (empty caches, zeroed stats)."""
    from sam3studio import load_segmenter

    return load_segmenter(str(tiny_checkpoint), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def cat_photo() -> np.ndarray:
    """A real photo (scikit-image's Chelsea the cat), 300x451 RGB: non-square on purpose."""
    from skimage import data

    return data.chelsea()


@pytest.fixture(scope="session")
def astronaut_photo() -> np.ndarray:
    from skimage import data

    return data.astronaut()
