"""Request-body limits on every route, over real HTTP (uvicorn): 413 at limit + 1 byte with or without
Content-Length, bodies at the limit pass, nothing past the limit is kept, and the server's memory stays flat.

Bodies are generated chunk by chunk and written to a raw socket (``Transfer-Encoding: chunked``), never
built in memory; the client stops at the byte it is testing and reads the answer, so a server that waited
for the rest of the body would time out here.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from starlette.responses import JSONResponse
from starlette.routing import Route

from sam3studio.api import create_app
from sam3studio.api.limits import DEFAULT_LIMIT, FORM_OVERHEAD, GRADIO_UPLOAD
from sam3studio.settings import Settings

CHUNK = 64 * 1024
BOUNDARY = "sam3studio-test-boundary"
MB = 1024 * 1024


@dataclass(frozen=True)
class Part:
    name: str
    size: int
    filename: str | None = None

    def head(self) -> bytes:
        disposition = f'form-data; name="{self.name}"' + (f'; filename="{self.filename}"' if self.filename else "")
        return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()


def _filler(n: int) -> Iterator[bytes]:
    while n > 0:
        piece = min(CHUNK, n)
        yield b"a" * piece
        n -= piece


def multipart(parts: list[Part]) -> tuple[int, Iterator[bytes]]:
    """(size, chunks) of a multipart body whose parts hold ``size`` filler bytes each."""
    end = f"--{BOUNDARY}--\r\n".encode()
    size = sum(len(p.head()) + p.size + 2 for p in parts) + len(end)

    def chunks() -> Iterator[bytes]:
        for p in parts:
            yield p.head()
            yield from _filler(p.size)
            yield b"\r\n"
        yield end

    return size, chunks()


def multipart_of_size(total: int, file_field: str, file_size: int, fields: tuple[str, ...] = (),
                      files: bool = False) -> Iterator[bytes]:
    """A multipart body of exactly ``total`` bytes: one file part of ``file_size`` and ``fields`` sharing the rest
    (text fields, or file parts with ``files``)."""
    def parts(sizes):
        return [Part(file_field, file_size, "f.bin"),
                *(Part(f, n, f"pad{i}.bin" if files else None) for i, (f, n) in enumerate(zip(fields, sizes, strict=True)))]

    base, _ = multipart(parts([0] * len(fields)))
    rest = total - base
    assert rest >= 0 and (rest == 0 or fields)
    sizes = [rest // max(1, len(fields))] * len(fields)
    if fields:
        sizes[-1] += rest - sum(sizes)
    size, chunks = multipart(parts(sizes))
    assert size == total
    return chunks


def json_of_size(total: int) -> Iterator[bytes]:
    """A JSON object of exactly ``total`` bytes (valid JSON: whitespace before the closing brace)."""
    head = b'{"prompt": "cat"'
    yield head
    yield from _filler_spaces(total - len(head) - 1)
    yield b"}"


def _filler_spaces(n: int) -> Iterator[bytes]:
    while n > 0:
        piece = min(CHUNK, n)
        yield b" " * piece
        n -= piece


def endless(head: bytes = b"") -> Iterator[bytes]:
    yield head
    while True:
        yield b"a" * CHUNK


def endless_files(field: str, size: int) -> Iterator[bytes]:
    """File parts of ``size`` bytes each, without end (every file under a per-file limit, the sum over any)."""
    for i in range(10**6):
        yield Part(field, size, f"f{i}.bin").head()
        yield from _filler(size)
        yield b"\r\n"


def over_body(path: str, content_type: str) -> Iterator[bytes]:
    if content_type == JSON:
        return endless(b'{"prompt": "')
    if path == GRADIO_UPLOAD:  # Gradio refuses one file over its own per-file limit first; many small ones add up
        return endless_files("files", MB)
    return endless(Part("video" if path.endswith(("/videos", "/sessions")) else "image", 0, "f.bin").head())


def send(port: int, path: str, content_type: str, chunks: Iterator[bytes], *, count: int | None = None,
         length: int | None = None, finish: bool = True, timeout: float = 30.0) -> tuple[int, dict, int]:
    """POST ``chunks`` (at most ``count`` body bytes) and read the answer: (status, JSON body or {}, bytes sent).

    Chunked unless ``length`` is given (then sent as Content-Length). ``finish=False`` leaves the body
    unfinished: the answer must come without the rest.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n{framing}\r\n\r\n".encode())
    sent = 0
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        for chunk in chunks:
            if count is not None:
                chunk = chunk[: count - sent]
            if not chunk:
                if count is not None and sent >= count:
                    break
                continue
            sock.sendall(chunk if length is not None else b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        if finish and length is None:
            sock.sendall(b"0\r\n\r\n")
    answer = b""
    with contextlib.suppress(ConnectionResetError):
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _content_length(answer):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    try:
        payload = json.loads(body[: _content_length(answer)] or b"{}")
    except ValueError:
        payload = {"raw": body[:200].decode("latin-1")}
    return status, payload, sent


def _content_length(answer: bytes) -> int:
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


async def _echo_length(request):
    """A route added after the limits were written, reading its whole body: the default limit covers it."""
    return JSONResponse({"bytes": len(await request.body())})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real uvicorn server of the whole app (API and Gradio UI), small limits, no model needed."""
    import uvicorn

    tmp = tmp_path_factory.mktemp("limits")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADIO_TEMP_DIR", str(tmp / "gradio"))
        settings = Settings(model=str(tmp / "no-model"), device="cpu", ui=True, max_upload_mb=1, max_video_mb=2,
                            data_dir=tmp / "data")
        app = create_app(settings)
        app.router.routes.insert(0, Route("/api/v1/later", _echo_length, methods=["POST"]))  # "added later"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=srv.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while not srv.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        try:
            yield port, app, tmp
        finally:
            srv.should_exit = True
            thread.join(timeout=15)


JSON, FORM = "application/json", f"multipart/form-data; boundary={BOUNDARY}"
# (path, content type, how to build a body of exactly n bytes that the route then reads to the end)
ROUTES = {
    "segment-json": ("/api/v1/segment", JSON, json_of_size),
    "refine-json": ("/api/v1/refine", JSON, json_of_size),
    "segment-form": ("/api/v1/segment", FORM, lambda n: multipart_of_size(n, "image", MB, ("prompts",) * 4)),
    "refine-form": ("/api/v1/refine", FORM, lambda n: multipart_of_size(n, "image", MB, ("label",) * 4)),
    "videos-form": ("/api/v1/videos", FORM, lambda n: multipart_of_size(n, "video", 2 * MB, ("prompts",) * 4)),
    "gradio-upload": (GRADIO_UPLOAD, FORM, lambda n: multipart_of_size(n, "files", 2 * MB, ("files",) * 2, files=True)),
    "videos-json": ("/api/v1/videos", JSON, json_of_size),  # a video_url request: small
    "sessions-form": ("/api/v1/sessions", FORM, lambda n: multipart_of_size(n, "video", 2 * MB, ("pad",) * 4)),
    "sessions-json": ("/api/v1/sessions", JSON, json_of_size),  # a video_url or job_id request: small
    "later-route": ("/api/v1/later", JSON, json_of_size),  # a route of its own, not in the table: the default
}


def _limit(app, path: str, content_type: str) -> int:
    return app.state.body_limits.limit_for(path, content_type.split(";")[0])[0]


@pytest.mark.parametrize("route", ROUTES)
def test_a_body_one_byte_over_the_limit_is_refused_at_that_byte_without_content_length(server, route):
    port, app, _ = server
    path, ctype, _ = ROUTES[route]
    limit = _limit(app, path, ctype)
    status, body, sent = send(port, path, ctype, over_body(path, ctype), count=limit + 1, finish=False)
    assert sent == limit + 1
    assert status == 413 and body["error"]["code"] == "too_large", body
    assert str(limit) in body["error"]["message"] and body["error"]["request_id"]  # the API's envelope


@pytest.mark.parametrize("route", ROUTES)
def test_a_declared_length_over_the_limit_is_refused_before_any_byte(server, route):
    port, app, _ = server
    path, ctype, _ = ROUTES[route]
    limit = _limit(app, path, ctype)
    status, body, sent = send(port, path, ctype, iter(()), length=limit + 1)
    assert sent == 0 and status == 413 and body["error"]["code"] == "too_large"


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
@pytest.mark.parametrize("route", ROUTES)
def test_a_body_at_the_limit_reaches_the_route(server, route, framing):
    port, app, _ = server
    path, ctype, build = ROUTES[route]
    limit = _limit(app, path, ctype)
    status, body, sent = send(port, path, ctype, build(limit), length=limit if framing == "content-length" else None)
    assert sent == limit
    assert status != 413 and status < 500, (status, body)  # the route read it all and answered for itself


def test_gradio_keeps_no_partial_file_of_a_refused_upload(server):
    port, app, tmp = server
    limit = _limit(app, GRADIO_UPLOAD, FORM)

    def files() -> set:
        return {p for p in (tmp / "gradio").rglob("*") if p.is_file()}

    before = files()
    status, _, _ = send(port, GRADIO_UPLOAD, FORM, over_body(GRADIO_UPLOAD, FORM), count=limit + 1, finish=False)
    assert status == 413
    assert files() == before  # the parts it was spooling were deleted, not left in Gradio's upload folder


def test_info_reports_the_limit_of_every_route(server):
    import httpx

    port, app, _ = server
    info = httpx.get(f"http://127.0.0.1:{port}/api/v1/info", timeout=30).json()
    table = info["body_limits"]
    assert table == app.state.body_limits.table() and table["default"] == DEFAULT_LIMIT
    limits = {(r["path"], r["content_type"]): r["limit"] for r in table["routes"]}
    assert limits[("/api/v1/segment", "multipart/form-data")] == MB + FORM_OVERHEAD
    assert limits[("/api/v1/segment", "application/json")] == -(-MB * 4 // 3) + FORM_OVERHEAD
    assert limits[("/api/v1/videos", "multipart/form-data")] == 2 * MB + FORM_OVERHEAD
    assert limits[("/api/v1/sessions", "multipart/form-data")] == 2 * MB + FORM_OVERHEAD
    assert limits[(GRADIO_UPLOAD, None)] == 2 * MB + FORM_OVERHEAD  # the Video tab's limit: the largest
    assert info["limits"]["max_video_mb"] == 2 and info["limits"]["min_free_disk_mb"] == 1024


def _vm(pid: int, key: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


@pytest.mark.slow
def test_large_bodies_without_content_length_leave_the_servers_memory_flat(tiny_checkpoint, tmp_path):
    """A real `serve` process: 150 MB streamed to each upload route without Content-Length; its peak RSS
    (VmHWM) grows by little more than the largest limit it holds in memory, and nothing is left on disk."""
    import httpx

    from _server import PROCESSES, running_server

    env = {"SAM3STUDIO_MAX_VIDEO_MB": "40", "SAM3STUDIO_DATA_DIR": str(tmp_path / "data"), "TMPDIR": str(tmp_path),
           "GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    with running_server(tiny_checkpoint, extra_env=env) as url:
        pid, port = PROCESSES[url].pid, int(url.rsplit(":", 1)[1])
        httpx.get(f"{url}/", timeout=60)  # the UI's first page, so its one-off allocations are done
        before = _vm(pid, "VmHWM")
        files_before = {p for p in tmp_path.rglob("*") if p.is_file()}
        for path, ctype in [("/api/v1/segment", JSON), ("/api/v1/segment", FORM), ("/api/v1/videos", FORM),
                            (GRADIO_UPLOAD, FORM)]:
            status, body, sent = send(port, path, ctype, over_body(path, ctype), count=150 * MB, finish=False,
                                      timeout=60)
            assert status == 413 and body["error"]["code"] == "too_large", (path, status, body)
            assert sent < 150 * MB  # the server closed the connection: the rest was never read
        growth = _vm(pid, "VmHWM") - before
        assert httpx.get(f"{url}/api/v1/health", timeout=10).status_code == 200
        leftovers = {p for p in tmp_path.rglob("*") if p.is_file()} - files_before
    assert growth < 120, f"peak RSS grew by {growth:.0f} MB"
    assert {p for p in leftovers if "data" not in p.relative_to(tmp_path).parts} == set()  # no spooled part left
