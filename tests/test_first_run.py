"""What a newcomer meets first: the API's error envelope with the UI mounted, offline docs pages, no alarming
library warnings, and a test suite that leaves the user's home alone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from _server import server_url  # noqa: F401  (module-scoped fixture)
from sam3studio.api import create_app
from sam3studio.settings import Settings

TESTS = Path(__file__).resolve().parent


@pytest.fixture(params=[True, False], ids=["with-ui", "api-only"])
def client(request, tiny_checkpoint, segmenter, tmp_path):
    settings = Settings(model=str(tiny_checkpoint), device="cpu", dtype="float32", ui=request.param,
                        data_dir=tmp_path / "data")
    with TestClient(create_app(settings, segmenter=segmenter)) as c:
        yield c


@pytest.mark.parametrize("method, path, status, code, allow", [
    ("GET", "/api/v1/segment", 405, "method_not_allowed", "POST"),
    ("PUT", "/api/v1/refine", 405, "method_not_allowed", "POST"),
    ("DELETE", "/api/v1/health", 405, "method_not_allowed", "GET"),
    ("PATCH", "/api/v1/videos/0123", 405, "method_not_allowed", "DELETE, GET"),
    ("GET", "/api/v1/nope", 404, "not_found", None),
    ("POST", "/api/v1/segment/extra", 404, "not_found", None),
    ("GET", "/api/v1", 404, "not_found", None),
])
def test_wrong_methods_and_unknown_routes_answer_in_the_envelope(client, method, path, status, code, allow):
    resp = client.request(method, path)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json()["error"]["code"] == code
    assert set(resp.json()) == {"error"}
    if allow is not None:
        assert resp.headers["allow"] == allow


def test_the_fallback_is_not_in_the_openapi_document(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if "{path}" in p]
    assert "/api/v1/segment" in paths


def _references(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)


@pytest.mark.parametrize("page_path", ["/docs", "/redoc"])
def test_docs_pages_reference_only_this_server_and_every_asset_loads(client, page_path):
    html = client.get(page_path)
    assert html.status_code == 200
    refs = _references(html.text)
    assert len(refs) >= 2  # the script and the favicon at least
    for ref in refs:
        assert not urlsplit(ref).netloc, f"{page_path} loads {ref} from another host"
        asset = client.get(urljoin(page_path, ref))
        assert asset.status_code == 200, ref
        assert len(asset.content) > 1000, ref
    assert "fonts.googleapis" not in html.text and "cdn.jsdelivr" not in html.text


@pytest.mark.slow
@pytest.mark.parametrize("page_path", ["/docs", "/redoc"])
def test_docs_pages_render_in_a_browser_without_leaving_the_server(page, server_url, page_path):  # noqa: F811
    """Every request the browser makes for the docs page goes to the server itself (no CDN, font or favicon)."""
    requested: list[str] = []
    page.on("request", lambda req: requested.append(req.url))
    page.goto(server_url + page_path)
    if page_path == "/docs":
        page.wait_for_selector(".swagger-ui .opblock-tag", timeout=60_000)
        assert "/api/v1/segment" in page.locator(".swagger-ui").inner_text()
    else:
        page.wait_for_selector("redoc-api-content, .api-content, [role=navigation]", timeout=60_000)
        assert "segment" in page.content().lower()
    page.wait_for_load_state("networkidle")
    foreign = [u for u in requested if not u.startswith(server_url) and not u.startswith(("data:", "blob:"))]
    assert requested and not foreign, foreign


@pytest.mark.slow
def test_loading_the_tracker_from_the_full_checkpoint_prints_no_alarming_warning(tiny_video_checkpoint):
    """transformers warns that a sam3_video checkpoint instantiating a tracker 'can yield errors': expected here."""
    code = ("import numpy as np; from sam3studio import load_segmenter; "
            f"seg = load_segmenter({str(tiny_video_checkpoint)!r}, device='cpu'); "
            "seg.refine(np.zeros((40, 50, 3), np.uint8), points=[[10, 10]], point_labels=[1]); print('ok')")
    env = {k: v for k, v in os.environ.items() if k != "TRANSFORMERS_VERBOSITY"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")
    assert "instantiate a model of type" not in proc.stderr
    assert "can yield errors" not in proc.stderr


@pytest.mark.slow
def test_collecting_the_tests_writes_nothing_to_the_users_home(tmp_path):
    """Some test modules build an app at import time; none of it may land in ~/.cache (HOME is a fresh folder)."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    env.pop("SAM3STUDIO_DATA_DIR", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           str(TESTS / "test_fuzz_api.py"), str(TESTS / "test_api.py")],
                          capture_output=True, text=True, env=env, cwd=TESTS.parent, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "test_every_operation" in proc.stdout  # the module that builds its app at import was collected
    assert not (home / ".cache" / "sam3studio").exists()
    written = [p for p in home.rglob("*") if "sam3studio" in str(p)]
    assert not written, written


def test_a_server_answers_docs_from_itself(server_url):  # noqa: F811
    html = httpx.get(server_url + "/docs", timeout=30).text
    assert all(not urlsplit(ref).netloc for ref in _references(html))
