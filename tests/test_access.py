"""Access control and faults: API key, UI credentials, Gradio's file routes, out-of-memory, disconnects."""

from __future__ import annotations

import io
import socket
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import ValidationError

from sam3studio.api import create_app
from sam3studio.cli.serve import access_warnings
from sam3studio.service import SegmentService
from sam3studio.settings import Settings

KEY = "k" * 8 + "-test-key-0123456789"


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def cat_png(cat_photo):
    return _png(cat_photo)


@pytest.fixture
def settings(tiny_checkpoint):
    return Settings(model=str(tiny_checkpoint), device="cpu", dtype="float32", ui=False)


def _with(settings: Settings, changes: dict) -> Settings:
    """A validated copy (``model_copy`` would skip validation and keep secrets as plain strings)."""
    return Settings(**{**settings.model_dump(), **changes})


def _post(client, png, headers=None):
    return client.post("/api/v1/segment", files={"image": ("cat.png", png, "image/png")},
                       data={"prompt": "cat", "threshold": "0.05"}, headers=headers or {})


def _error(resp, status, code):
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code
    return resp.json()["error"]["message"]


# ---------------------------------------------------------------------------- API key
def test_api_key_is_required_when_set(settings, segmenter, cat_png):
    keyed = _with(settings, {"api_key": KEY})
    with TestClient(create_app(keyed, segmenter=segmenter)) as c:
        assert "X-API-Key" in _error(_post(c, cat_png), 401, "unauthorized")
        resp = _post(c, cat_png, {"X-API-Key": KEY[:-1] + "x"})
        _error(resp, 401, "unauthorized")
        assert resp.headers["WWW-Authenticate"] == "Bearer"
        _error(_post(c, cat_png, {"Authorization": "Bearer nope"}), 401, "unauthorized")
        _error(c.get("/api/v1/info"), 401, "unauthorized")

        assert _post(c, cat_png, {"X-API-Key": KEY}).status_code == 200
        assert _post(c, cat_png, {"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert c.get("/api/v1/info", headers={"X-API-Key": KEY}).status_code == 200
        # Probes stay open for orchestrators; they reveal nothing.
        assert c.get("/api/v1/health").status_code == 200
        assert c.get("/api/v1/ready").status_code == 200

        spec = c.get("/openapi.json").json()
        assert {"APIKeyHeader", "HTTPBearer"} <= set(spec["components"]["securitySchemes"])
        assert "401" in spec["paths"]["/api/v1/segment"]["post"]["responses"]


def test_without_a_key_the_api_is_open(settings, segmenter, cat_png):
    with TestClient(create_app(settings, segmenter=segmenter)) as c:
        assert _post(c, cat_png).status_code == 200
        assert "securitySchemes" not in c.get("/openapi.json").json().get("components", {})


@pytest.mark.parametrize(("field", "value", "message"), [
    ("api_key", "short", "at least 16 characters"),
    ("ui_auth", "nopassword", "user:password"),
    ("ui_auth", ":pw", "user:password"),
])
def test_weak_or_malformed_credentials_are_refused(field, value, message):
    with pytest.raises(ValidationError, match=message):
        Settings(**{field: value})


def test_empty_credentials_mean_off(monkeypatch):
    monkeypatch.setenv("SAM3STUDIO_API_KEY", "")
    monkeypatch.setenv("SAM3STUDIO_UI_AUTH", "")
    s = Settings()
    assert s.api_key is None and s.ui_credentials() is None


def test_secrets_do_not_leak_into_reprs_or_info(settings, segmenter):
    keyed = _with(settings, {"api_key": KEY, "ui_auth": "admin:pa55word"})
    assert KEY not in repr(keyed) and "pa55word" not in repr(keyed)
    with TestClient(create_app(keyed, segmenter=segmenter)) as c:
        assert KEY not in c.get("/api/v1/info", headers={"X-API-Key": KEY}).text


def test_start_up_warns_about_open_access_beyond_loopback():
    assert access_warnings(Settings(host="127.0.0.1")) == []
    open_all = access_warnings(Settings(host="0.0.0.0"))
    assert len(open_all) == 2 and "API key" in open_all[0] and "UI credentials" in open_all[1]
    assert access_warnings(Settings(host="0.0.0.0", api_key=KEY, ui_auth="a:b")) == []
    assert access_warnings(Settings(host="0.0.0.0", api_key=KEY, ui=False)) == []
    only_ui = access_warnings(Settings(host="0.0.0.0", api_key=KEY))
    assert len(only_ui) == 1 and "Gradio API" in only_ui[0]


# ---------------------------------------------------------------------------- the UI's routes
@pytest.mark.slow
def test_ui_credentials_guard_the_ui_and_its_api(settings, segmenter):
    guarded = _with(settings, {"ui": True, "ui_auth": "admin:pa55word"})
    with TestClient(create_app(guarded, segmenter=segmenter)) as c:
        assert c.get("/config").status_code == 401
        assert c.get("/gradio_api/info").status_code == 401
        assert c.post("/login", data={"username": "admin", "password": "wrong"}).status_code == 400
        assert c.get("/config").status_code == 401
        assert c.post("/login", data={"username": "admin", "password": "pa55word"}).status_code == 200
        assert c.get("/config").status_code == 200
        assert c.get("/api/v1/health").status_code == 200


@pytest.mark.slow
def test_gradio_file_routes_serve_no_outside_file_and_no_active_content(settings, segmenter, tmp_path):
    ui = _with(settings, {"ui": True, "max_upload_mb": 1, "max_video_mb": 2})
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    with TestClient(create_app(ui, segmenter=segmenter)) as c:
        for path in ("/etc/passwd", str(secret), "../../etc/passwd"):
            resp = c.get(f"/gradio_api/file={path}")
            assert resp.status_code in (403, 404) and "do not serve" not in resp.text and "root:" not in resp.text
        for name, body, ctype in [("x.html", b"<script>alert(1)</script>", "text/html"),
                                  ("x.svg", b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
                                   "image/svg+xml")]:
            up = c.post("/gradio_api/upload", files={"files": (name, body, ctype)})
            assert up.status_code == 200, up.text
            served = c.get(f"/gradio_api/file={up.json()[0]}")
            assert served.status_code == 200
            # Served back as a download, never rendered as a page in our origin.
            assert served.headers["content-type"] == "application/octet-stream"
            assert served.headers["content-disposition"].startswith("attachment")
        # One file limit for the page: the largest a tab accepts (the Video tab's); the image tab checks its own.
        fits = c.post("/gradio_api/upload", files={"files": ("x.mp4", b"0" * (2 * 1024 * 1024), "video/mp4")})
        assert fits.status_code == 200, fits.text
        too_big = c.post("/gradio_api/upload", files={"files": ("x.mp4", b"0" * (2 * 1024 * 1024 + 1), "video/mp4")})
        assert too_big.status_code == 413


# ---------------------------------------------------------------------------- faults
@pytest.mark.parametrize("error", ["torch", "python"])
def test_out_of_memory_fails_one_request_and_the_next_succeeds(settings, segmenter, cat_png, monkeypatch, error):
    import torch

    service = SegmentService(settings, segmenter=segmenter)
    cleared = []
    real_segment, real_clear = segmenter.segment, segmenter.clear_cache

    def oom_once(*args, **kwargs):
        monkeypatch.setattr(segmenter, "segment", real_segment)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB") if error == "torch" else MemoryError()

    monkeypatch.setattr(segmenter, "segment", oom_once)
    monkeypatch.setattr(segmenter, "clear_cache", lambda: (cleared.append(1), real_clear()))
    with TestClient(create_app(settings, service=service), raise_server_exceptions=False) as c:
        resp = _post(c, cat_png)
        assert "out of memory" in _error(resp, 503, "out_of_memory")
        assert int(resp.headers["Retry-After"]) >= 1
        assert cleared == [1]
        assert service.gate.active == 0 and service.gate.waiting == 0  # the slot was given back
        assert _post(c, cat_png).status_code == 200


def _serve(app):
    """Run ``app`` with uvicorn on a free loopback port in a thread; return (url, server, thread)."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server, thread


@pytest.mark.slow
def test_a_client_that_leaves_while_queued_gives_its_place_up(settings, segmenter, cat_png, monkeypatch):
    import httpx

    service = SegmentService(_with(settings, {"max_concurrent": 1, "max_queue": 4}), segmenter=segmenter)
    calls = []
    real_segment = segmenter.segment
    monkeypatch.setattr(segmenter, "segment", lambda *a, **k: (calls.append(1), real_segment(*a, **k))[1])
    url, server, thread = _serve(create_app(service.settings, service=service))
    try:
        with service.gate.admit():  # the model is busy with someone else's request
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{url}/api/v1/segment", files={"image": ("cat.png", cat_png, "image/png")},
                           data={"prompt": "cat"}, timeout=httpx.Timeout(10, read=1.0))
            # The client has hung up: its request leaves the queue while the model is still busy.
            deadline = time.monotonic() + 10
            while service.gate.waiting and time.monotonic() < deadline:
                time.sleep(0.05)
            assert service.gate.waiting == 0
        assert calls == []  # its work never ran
        ok = httpx.post(f"{url}/api/v1/segment", files={"image": ("cat.png", cat_png, "image/png")},
                        data={"prompt": "cat"}, timeout=30)
        assert ok.status_code == 200 and calls == [1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
