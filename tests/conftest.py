"""Shared fixtures: one tiny SAM 3 checkpoint per session, loaded through the public path."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings

import numpy as np
import pytest

from _browser import browser, page  # noqa: E402, F401  (Chromium fixtures for every browser test)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach a model hub
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore", message=".*OpenCV.*")


# Servers started by tests (in-process, at import time of a test module, or `serve` subprocesses) keep their job
# store out of the user's ~/.cache: set before any test module is imported, removed at the end of the session.
_DATA_DIR = tempfile.mkdtemp(prefix="sam3studio-test-data-")
os.environ["SAM3STUDIO_DATA_DIR"] = _DATA_DIR


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_DATA_DIR, ignore_errors=True)


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


@pytest.fixture(scope="session")
def tiny_video_checkpoint(tmp_path_factory):
    """A tiny `Sam3VideoModel` checkpoint, written once per test session."""
    from sam3studio.testing import make_tiny_video_checkpoint

    return make_tiny_video_checkpoint(tmp_path_factory.mktemp("tiny-sam3-video"), seed=0)


def make_test_video(path, n: int = 24, width: int = 160, height: int = 120, fps: int = 12, codec: str = "libx264"):
    """A synthetic video written with PyAV: a red rectangle moving right over a still green one."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p" if codec != "gif" else "rgb8"
        for i in range(n):
            img = np.full((height, width, 3), 30, np.uint8)
            x = (10 + 4 * i) % max(1, width - 30)
            img[height // 3: height // 3 + height // 3, x: x + 30] = (220, 40, 40)
            img[10:40, width - 60: width - 20] = (40, 200, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
