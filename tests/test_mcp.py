"""The MCP server: the SDK's own client against `sam3studio mcp` (stdio and streamable HTTP) and `serve`'s /mcp,
on the tiny checkpoint (image + refine + video); plus the pieces (path policy, input kinds, polygon budget)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import httpx2
import numpy as np
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from PIL import Image

from _server import free_port, running_server
from conftest import make_test_video
from sam3studio.errors import InputError
from sam3studio.llm.contract import CountOutput, JobResultOutput, RefineOutput, SegmentOutput
from sam3studio.llm.inputs import PathPolicy, _kind
from sam3studio.masks import polygons
from sam3studio.results import rle_to_mask

SCRIPT = str(Path(sys.executable).with_name("sam3studio"))
KEY = "k" * 24
LOW = 0.01  # the tiny model's scores are low: find something
TOOLS = {"segment", "count", "refine", "track_video", "job_status", "job_result"}


@pytest.fixture(scope="module")
def files(tmp_path_factory, cat_photo):
    d = tmp_path_factory.mktemp("mcp")
    cat = d / "cat.png"
    Image.fromarray(cat_photo).save(cat)
    huge = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(huge, format="PNG")  # 100 MP, a few KB
    return {"dir": d, "cat": cat, "cat_b64": base64.b64encode(cat.read_bytes()).decode(),
            "huge_b64": base64.b64encode(huge.getvalue()).decode(),
            "video": make_test_video(d / "clip.mp4", n=6, width=96, height=64, fps=6)}


def _env(**extra: str) -> dict[str, str]:
    return {"PYTHONPATH": os.environ.get("PYTHONPATH", ""), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
            **extra}


def _text(result) -> str:
    return result.content[0].text


def _http_client(key: str | None = KEY) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(headers={"X-API-Key": key} if key else {}, timeout=httpx2.Timeout(30, read=300))


# ---------------------------------------------------------------------------- the checks every transport shares
async def _segment_checks(c: Client, image: str, shape: tuple[int, int]) -> None:
    h, w = shape
    r = await c.call_tool("segment", {"image": image, "prompts": ["cat"], "threshold": LOW, "mask_format": "rle"})
    assert not r.is_error, _text(r)
    out = SegmentOutput.model_validate(r.structured_content)
    assert (out.width, out.height) == (w, h) and out.instances and out.no_match is False
    assert out.prompts[0].no_match is False and out.prompts[0].count == len(out.instances)
    for inst in out.instances:
        assert rle_to_mask(inst.mask.model_dump()).shape == (h, w)  # masks decode to the image size
        assert inst.box == inst.box_xyxy and all(0 <= v <= 1 for v in inst.box_normalized)
    assert "found" in _text(r) and r.content[1].type == "image"  # a summary, and the marked picture
    assert Image.open(io.BytesIO(base64.b64decode(r.content[1].data))).size == (w, h)

    r = await c.call_tool("segment", {"image": image, "prompts": "cat, dog", "threshold": LOW, "mask_format": "polygon",
                                      "max_polygon_points": 12, "max_instances": 2, "annotate": False})
    out = SegmentOutput.model_validate(r.structured_content)
    assert len(out.instances) == 2 and out.truncated and len(r.content) == 1
    assert all(sum(len(p) for p in inst.mask) <= 2 * 12 for inst in out.instances)

    r = await c.call_tool("segment", {"image": image, "prompts": ["cat"], "threshold": 1.0})  # nothing scores 1.0
    assert not r.is_error
    out = r.structured_content
    assert out["no_match"] is True and out["instances"] == [] and out["prompts"][0]["no_match"] is True
    assert "no match" in _text(r)

    r = await c.call_tool("count", {"image": image, "prompts": ["cat", "dog"], "threshold": LOW})
    counted = CountOutput.model_validate(r.structured_content)
    assert counted.total == sum(p.count for p in counted.prompts) > 0 and "'cat'" in _text(r)


async def _bad_input_checks(c: Client, image: str, files) -> None:
    cases = {
        "missing file": ({"image": str(files["dir"] / "nope.png"), "prompts": ["cat"]}, "no such file"),
        "private URL": ({"image": "http://127.0.0.1:9/cat.png", "prompts": ["cat"]}, "not a public address"),
        "metadata URL": ({"image": "http://169.254.169.254/latest/meta-data", "prompts": ["cat"]}, "not a public"),
        "100 MP": ({"image": files["huge_b64"], "prompts": ["cat"]}, "pixels"),
        "empty prompts": ({"image": image, "prompts": []}, "prompts is empty"),
        "blank prompt": ({"image": image, "prompts": [" "]}, "prompt"),
        "bad base64": ({"image": "data:image/png;base64,@@not-base64@@", "prompts": ["cat"]}, "not valid base64"),
        "not an image": ({"image": base64.b64encode(b"hello " * 20).decode(), "prompts": ["cat"]}, "not a readable"),
        "bad threshold": ({"image": image, "prompts": ["cat"], "threshold": 5}, "threshold"),
        "bad format": ({"image": image, "prompts": ["cat"], "mask_format": "jpeg"}, "mask_format"),
        "no budget": ({"image": image, "prompts": ["cat"], "timeout_s": 0.001}, "did not finish within timeout_s"),
    }
    for name, (args, expected) in cases.items():
        r = await c.call_tool("segment", args)
        assert r.is_error, name
        assert expected in _text(r), (name, _text(r))
        assert "Traceback" not in _text(r) and "\n" not in _text(r), name  # one sentence, no traceback
    r = await c.call_tool("refine", {"image": image})
    assert r.is_error and "points" in _text(r)
    r = await c.call_tool("job_status", {"job_id": "0" * 32})
    assert r.is_error and "no video job" in _text(r)
    r = await c.call_tool("count", {"image": image, "prompts": ["cat"]})  # the server still answers
    assert not r.is_error


async def _video_checks(c: Client, video: str) -> str:
    r = await c.call_tool("track_video", {"video": video, "prompts": ["red box", "zebra"], "threshold": LOW,
                                          "max_frames": 3})
    assert not r.is_error, _text(r)
    job_id = r.structured_content["job_id"]
    deadline = time.monotonic() + 240
    while True:
        r = await c.call_tool("job_status", {"job_id": job_id, "wait_s": 30})
        assert not r.is_error, _text(r)
        if r.structured_content["state"] not in ("queued", "running") or time.monotonic() > deadline:
            break
    assert r.structured_content["state"] == "done", r.structured_content
    r = await c.call_tool("job_result", {"job_id": job_id, "max_tracks": 1})
    assert not r.is_error, _text(r)
    out = JobResultOutput.model_validate(r.structured_content)
    assert out.frames_processed == 3 and [p.text for p in out.prompts] == ["red box", "zebra"]
    assert len(out.tracks) <= 1 and out.truncated == (out.tracks_total > 1)
    assert out.no_match == (out.tracks_total == 0)
    return job_id


# ---------------------------------------------------------------------------- stdio
def test_stdio_lists_and_calls_every_tool(tiny_video_checkpoint, files, cat_photo, tmp_path):
    params = StdioServerParameters(command=SCRIPT, args=["mcp", "--model", str(tiny_video_checkpoint), "--device", "cpu",
                                                         "--data-dir", str(tmp_path / "jobs")], env=_env())

    async def scenario() -> None:
        async with Client(params, read_timeout_seconds=300) as c:
            listed = (await c.list_tools()).tools
            assert {t.name for t in listed} == TOOLS
            for tool in listed:
                assert tool.input_schema["type"] == "object" and tool.output_schema and tool.description
            image = str(files["cat"])  # a local path: the caller is the local user
            await _segment_checks(c, image, cat_photo.shape[:2])
            seg = (await c.call_tool("segment", {"image": image, "prompts": ["cat"], "threshold": LOW,
                                                 "mask_format": "rle", "max_instances": 1})).structured_content
            r = await c.call_tool("refine", {"image": image, "points": [[200, 150]], "box": seg["instances"][0]["box"],
                                             "mask": seg["instances"][0]["mask"], "mask_format": "rle", "label": "cat"})
            assert not r.is_error, _text(r)
            refined = RefineOutput.model_validate(r.structured_content)
            assert refined.instance.prompt == "cat" and rle_to_mask(refined.instance.mask.model_dump()).shape == (300, 451)
            await _bad_input_checks(c, image, files)
            job_id = await _video_checks(c, str(files["video"]))
            r = await c.call_tool("job_result", {"job_id": job_id})
            assert Path(r.structured_content["files"]["overlay.mp4"]).is_file()  # stdio: where the files are

    asyncio.run(scenario())
    assert (tmp_path / "jobs" / "jobs.sqlite3").is_file()  # the jobs lived in the folder given, not serve's


def _rpc(proc: subprocess.Popen, message: dict) -> None:
    proc.stdin.write(json.dumps(message) + "\n")
    proc.stdin.flush()


def test_stdout_carries_only_the_protocol(tiny_checkpoint, files, tmp_path):
    """Raw JSON-RPC over the pipes: every byte on stdout is a protocol message; the model's loading, logs and
    library warnings go to stderr. Without --data-dir the jobs' temporary folder is gone after exit."""
    proc = subprocess.Popen([SCRIPT, "mcp", "--model", str(tiny_checkpoint), "--device", "cpu", "--debug",
                             "--allow-path", str(files["dir"])],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **_env(TMPDIR=str(tmp_path))})
    try:
        _rpc(proc, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}}})
        _rpc(proc, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        _rpc(proc, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "count", "arguments": {"image": str(files["cat"]), "prompts": ["cat"], "threshold": LOW}}})
        _rpc(proc, {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {  # outside --allow-path
            "name": "count", "arguments": {"image": "/etc/hostname", "prompts": ["cat"]}}})
        answers = {}
        while len(answers) < 3:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()[-3000:]
            message = json.loads(line)  # anything else on stdout fails here
            assert message["jsonrpc"] == "2.0"
            if "id" in message:
                answers[message["id"]] = message
        assert answers[1]["result"]["serverInfo"]["name"] == "sam3studio"
        assert answers[2]["result"]["isError"] is False and answers[2]["result"]["structuredContent"]["total"] > 0
        assert answers[3]["result"]["isError"] is True and "outside the folders" in answers[3]["result"]["content"][0]["text"]
    finally:
        proc.stdin.close()
        proc.wait(30)
    assert proc.returncode == 0
    assert "Model ready" in proc.stderr.read()  # --debug logs went to stderr
    assert not list(tmp_path.glob("sam3studio-mcp-*"))


# ---------------------------------------------------------------------------- streamable HTTP
@contextlib.contextmanager
def _mcp_http(model: Path, *args: str, env: dict[str, str] | None = None):
    port = free_port()
    proc = subprocess.Popen([SCRIPT, "mcp", "--http", "--port", str(port), "--model", str(model), "--device", "cpu", *args],
                            env={**os.environ, **_env(), **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the MCP server did not start"
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_http_transport_with_key_and_allowed_folder(tiny_checkpoint, files, cat_photo, tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes(files["cat"].read_bytes())
    (files["dir"] / "escape.png").unlink(missing_ok=True)
    (files["dir"] / "escape.png").symlink_to(outside)  # inside by name, outside once resolved
    with _mcp_http(tiny_checkpoint, "--allow-path", str(files["dir"]), env={"SAM3STUDIO_API_KEY": KEY}) as url:
        refused = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"

        async def scenario() -> None:
            async with _http_client() as hc, Client(streamable_http_client(url, http_client=hc)) as c:
                assert {t.name for t in (await c.list_tools()).tools} == TOOLS
                await _segment_checks(c, files["cat_b64"], cat_photo.shape[:2])  # base64 over HTTP
                r = await c.call_tool("count", {"image": str(files["cat"]), "prompts": ["cat"]})  # under --allow-path
                assert not r.is_error, _text(r)
                for path in (str(outside), f"file://{outside}", str(files["dir"] / "escape.png")):
                    r = await c.call_tool("count", {"image": path, "prompts": ["cat"]})
                    assert r.is_error and "outside the folders" in _text(r), path
                await _bad_input_checks(c, files["cat_b64"], files)

        asyncio.run(scenario())


def test_serve_mounts_mcp_behind_the_api_key_with_its_own_jobs(tiny_video_checkpoint, files):
    """With the UI mounted at / (which takes every path no route before it answers)."""
    with running_server(tiny_video_checkpoint, extra_env={"SAM3STUDIO_API_KEY": KEY}) as base:
        assert httpx.post(f"{base}/mcp", json={}).status_code == 401
        video_b64 = "data:video/mp4;base64," + base64.b64encode(files["video"].read_bytes()).decode()

        async def scenario() -> str:
            async with _http_client() as hc, Client(streamable_http_client(f"{base}/mcp", http_client=hc)) as c:
                assert {t.name for t in (await c.list_tools()).tools} == TOOLS
                r = await c.call_tool("segment", {"image": files["cat_b64"], "prompts": ["cat"], "threshold": LOW})
                assert not r.is_error and r.structured_content["instances"], _text(r)
                r = await c.call_tool("segment", {"image": str(files["cat"]), "prompts": ["cat"]})
                assert r.is_error and "local paths are not accepted" in _text(r)
                return await _video_checks(c, video_b64)

        job_id = asyncio.run(scenario())
        job = httpx.get(f"{base}/api/v1/videos/{job_id}", headers={"X-API-Key": KEY})  # serve's own job store
        assert job.status_code == 200 and job.json()["state"] == "done"


# ---------------------------------------------------------------------------- pieces
def test_path_policy(tmp_path):
    inside = tmp_path / "in"
    inside.mkdir()
    (inside / "a.png").write_bytes(b"x")
    (tmp_path / "b.png").write_bytes(b"x")
    stdio = PathPolicy.for_transport("stdio")
    assert stdio.check(str(tmp_path / "b.png"), "image") == (tmp_path / "b.png").resolve()
    limited = PathPolicy.for_transport("stdio", [inside])
    assert limited.check(str(inside / "a.png"), "image").name == "a.png"
    for policy, raw, message in [(limited, str(tmp_path / "b.png"), "outside the folders"),
                                 (limited, str(inside / ".." / "b.png"), "outside the folders"),
                                 (limited, str(inside / "none.png"), "no such file"),
                                 (PathPolicy.for_transport("HTTP"), str(inside / "a.png"), "not accepted over HTTP")]:
        with pytest.raises(InputError, match=message):
            policy.check(raw, "image")


@pytest.mark.parametrize(("value", "kind"), [
    ("https://example.com/a.png", "url"), ("HTTP://example.com/a.png", "url"), ("data:image/png;base64,AAAA", "data"),
    ("file:///tmp/a%20b.png", "path"), ("photos/cat.png", "path"), ("iVBORw0KGgo" + "A" * 80, "base64"),
])
def test_input_kinds(value, kind):
    got, text = _kind(value, PathPolicy.for_transport("stdio"))
    assert got == kind
    if value.startswith("file://"):
        assert text == "/tmp/a b.png"


def test_input_kind_refuses_other_schemes():
    with pytest.raises(InputError, match="unsupported URL scheme 'ftp'"):
        _kind("ftp://example.com/a.png", PathPolicy())


def test_polygon_point_budget():
    mask = np.zeros((200, 300), bool)
    yy, xx = np.mgrid[:200, :300]
    mask[((yy - 100) ** 2 + (xx - 100) ** 2) < 80 ** 2] = True  # a disc: many contour points
    mask[20:30, 250:260] = True  # a small square: dropped first when the budget is tight
    full = polygons(mask)
    assert sum(len(p) for p in full) // 2 > 100 and len(full) == 2
    for budget in (64, 8, 5, 3):
        kept = polygons(mask, max_points=budget)
        assert kept and sum(len(p) for p in kept) // 2 <= budget
        xs = np.array(kept[0][0::2])
        assert xs.max() - xs.min() > 60  # the disc, the largest part, always comes first
    assert len(polygons(mask, max_points=64)) == 2 and len(polygons(mask, max_points=3)) == 1


def test_serve_mounts_mcp_unless_switched_off(segmenter):
    from sam3studio.api import create_app
    from sam3studio.settings import Settings

    def paths(app) -> list[str]:
        return [getattr(r, "path", "") for r in app.router.routes]

    assert "/mcp" in paths(create_app(Settings(ui=False), segmenter=segmenter))
    assert "/mcp" not in paths(create_app(Settings(ui=False, mcp=False), segmenter=segmenter))
