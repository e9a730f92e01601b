"""The web UI's own resources: a session's download folders go when the session ends (Gradio's unload, fired
when the browser's heartbeat connection closes), the image tab refuses images over the upload limit although
Gradio's page-wide file limit is the Video tab's, and large results are shown subsampled, masks one at a time."""

from __future__ import annotations

import socket
import threading
import time
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from PIL import Image

from sam3studio.api import create_app
from sam3studio.results import RLEMasks
from sam3studio.settings import Settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ui(tiny_checkpoint, tmp_path_factory):
    """The whole app with its UI, served by uvicorn in this process (the heartbeat needs a real connection)."""
    import uvicorn

    from sam3studio import load_segmenter

    tmp = tmp_path_factory.mktemp("ui")
    settings = Settings(model=str(tiny_checkpoint), device="cpu", ui=True, max_upload_mb=1, max_video_mb=5,
                        data_dir=tmp / "data")
    app = create_app(settings, segmenter=load_segmenter(str(tiny_checkpoint), device="cpu", dtype="float32"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    blocks = next(r.app.blocks for r in app.router.routes if hasattr(getattr(r, "app", None), "blocks"))
    fns = {f.api_name: f.fn for f in blocks.fns.values()}
    unload = next(f.fn for f in blocks.fns.values() if any(t[1] == "unload" for t in f.targets))
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}", fns=fns, ctx=unload.__self__, tmp=tmp)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def _png(path, array):
    Image.fromarray(array).save(path)
    return str(path)


def test_a_sessions_download_folders_go_when_its_browser_tab_closes(ui, cat_photo):
    session = "sessiona1b2c3"
    request = SimpleNamespace(session_hash=session)
    out = ui.fns["segment"](_png(ui.tmp / "cat.png", cat_photo), "cat", 0.1, 0.5, 0, 0, 0, "en", "text", None,
                            request=request)
    downloads = next(v for k, v in out.items() if getattr(k, "elem_id", None) == "downloads")
    folder = ui.ctx.run_dirs.root / session
    assert downloads and all(str(p).startswith(str(folder)) for p in downloads)  # the session's own folder
    other = ui.ctx.run_dirs.new("sessionother")
    # What a browser does: hold the heartbeat stream open, then close the tab (the connection ends).
    with httpx.stream("GET", f"{ui.url}/gradio_api/heartbeat/{session}", timeout=30) as stream:
        next(stream.iter_lines())
    deadline = time.monotonic() + 60
    while folder.exists():  # the unload handler runs in the background once Gradio sees the stream end
        assert time.monotonic() < deadline, "the session's folder was not removed after its heartbeat ended"
        time.sleep(0.05)
    assert other.exists()  # another session's folders stay


def test_the_image_tab_refuses_images_over_the_upload_limit(ui):
    """Gradio's one file limit is the video limit (5 MB here); an image over max_upload_mb (1 MB) still fails,
    when the tab decodes it, with the limit named."""
    import gradio as gr

    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)  # about 1.4 MB as PNG
    path = _png(ui.tmp / "big.png", noise)
    with pytest.raises(gr.Error, match="over the limit of 1048576"):
        ui.fns["segment"](path, "cat", 0.1, 0.5, 0, 0, 0, "en", "text", None)
    assert httpx.get(f"{ui.url}/config", timeout=30).json()["max_file_size"] == 5 * 1024 * 1024  # the Video tab's


def test_a_large_result_is_shown_subsampled_with_masks_decoded_one_at_a_time(ui, monkeypatch):
    import sam3studio.ui.image_tab as image_tab

    monkeypatch.setattr(image_tab, "DISPLAY_PIXELS", 20_000)  # as a 40 MP photo is to the real 4 MP
    rgb = np.full((300, 400, 3), 128, np.uint8)
    rgb[100:200, 150:250] = (220, 40, 40)
    out = ui.fns["segment"](_png(ui.tmp / "plain.png", rgb), "cat", 0.05, 0.5, 0, 0, 0, "en", "text", None)
    shown, annotations = next(v for k, v in out.items() if getattr(k, "elem_id", None) == "result")
    state = next(v for k, v in out.items() if type(v).__name__ == "ImageState")
    assert isinstance(state.base.masks, RLEMasks)  # the tab's segmentation never held the dense stack
    assert shown.shape == (100, 134, 3)  # step 3: 120 000 pixels / 20 000 -> ceil(sqrt(6))
    assert len(annotations) == len(state.base) > 0
    mask, label = annotations[0]
    assert mask.shape == shown.shape[:2] and label.endswith("(#0)")
    np.testing.assert_array_equal(mask.astype(bool), state.base.masks[0][::3, ::3])
