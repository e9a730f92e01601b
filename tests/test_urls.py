"""Tests for the SSRF-guarded URL fetcher; all traffic stays on local servers at 127.0.0.1."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sam3studio.errors import InputError, InputTooLargeError
from sam3studio.io.urls import FetchPolicy, UrlFetchError, UrlForbiddenError, check_address, fetch_url

PNG_BYTES = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


# --------------------------------------------------------------------------------------------- local server


SLOW_BYTES = 300  # /slow's body, a byte every 0.1 s: 30 s unless the client gives up


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.connections = 0
        self.requests: list[tuple[str, str]] = []  # (path, Host header)
        self.sent = 0  # body bytes written by the streaming endpoints
        self.done = threading.Event()  # set when a streaming endpoint stops writing

    @property
    def port(self) -> int:
        return self.server_address[1]

    def verify_request(self, request, client_address) -> bool:  # counts every accepted TCP connection
        self.connections += 1
        return True


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, chunks: Iterator[bytes], headers: dict[str, str], chunked: bool) -> None:
        self.send_response(200)
        for key, value in headers.items():
            self.send_header(key, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in chunks:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                self.wfile.flush()
                self.server.sent += len(chunk)
        except OSError:
            pass
        finally:
            self.close_connection = True
            self.server.done.set()

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        port = self.server.port
        self.server.requests.append((self.path, self.headers.get("Host", "")))
        path = self.path
        if path == "/img":
            self._send(200, PNG_BYTES, {"Content-Type": "image/png"})
        elif path == "/r1":
            self._send(302, headers={"Location": "/r2"})
        elif path == "/r2":
            self._send(301, headers={"Location": "r3?x=1"})
        elif path == "/r3?x=1":
            self._send(307, headers={"Location": f"http://public.test:{port}/img"})
        elif path.startswith("/loop/"):
            n = int(path.rsplit("/", 1)[1])
            self._send(308, headers={"Location": f"/loop/{n + 1}"})
        elif path == "/to-literal":
            self._send(302, headers={"Location": f"http://127.0.0.1:{port}/img"})
        elif path == "/to-localhost":
            self._send(302, headers={"Location": f"http://localhost:{port}/img"})
        elif path == "/to-ftp":
            self._send(302, headers={"Location": "ftp://public.test/img"})
        elif path == "/no-location":
            self._send(302)
        elif path == "/missing":
            self._send(404, b"not here")
        elif path == "/declared-huge":
            self._stream(iter([b"x" * 1024]), {"Content-Length": str(10**9)}, chunked=False)
        elif path == "/chunked-huge":
            self._stream((b"x" * 65536 for _ in range(800)), {}, chunked=True)  # 50 MiB if nobody stops it
        elif path == "/slow":

            def dribble() -> Iterator[bytes]:
                for _ in range(SLOW_BYTES):  # a byte every 0.1 s: no single read ever times out
                    yield b"x"
                    time.sleep(0.1)

            self._stream(dribble(), {"Content-Length": "1000"}, chunked=False)
        else:
            self._send(500)


@pytest.fixture()
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=2)


def _resolver(table: dict[str, list[str]]) -> Callable[[str, int], list[str]]:
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    return resolve


LOCAL = _resolver({"public.test": ["127.0.0.1"], "images.example.com": ["127.0.0.1"], "localhost": ["127.0.0.1"]})
EXEMPT = FetchPolicy(allowed_hosts=frozenset({"public.test", "images.example.com"}), timeout=5.0)


# --------------------------------------------------------------------------------------------- check_address


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "fec0::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b::7f00:1",
        "64:ff9b::a00:1",
        "2002:7f00:1::",
        "2002:a9fe:a9fe::",
        "2001:db8::1",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
    ],
)
def test_check_address_refuses_non_public(ip: str) -> None:
    with pytest.raises(UrlForbiddenError, match="not a public address"):
        check_address(ip)


@pytest.mark.parametrize("ip", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_check_address_allows_public(ip: str) -> None:
    check_address(ip)


@pytest.mark.parametrize("text", ["", "not-an-ip", "1.2.3.4.5", "::g"])
def test_check_address_rejects_garbage(text: str) -> None:
    with pytest.raises(UrlForbiddenError):
        check_address(text)


def test_error_types_map_to_input_errors() -> None:
    assert issubclass(UrlForbiddenError, UrlFetchError)
    assert issubclass(UrlFetchError, InputError)
    assert issubclass(InputTooLargeError, InputError)


# --------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("ftp://example.com/a.png", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("gopher://example.com/", "http or https"),
        ("javascript:alert(1)", "http or https"),
        ("example.com/a.png", "http or https"),
        ("http://user:pw@example.com/a.png", "user name or password"),
        ("http://user@example.com/a.png", "user name or password"),
        ("http:///a.png", "no host"),
        ("http://localhost/", "'localhost' resolves to 127.0.0.1"),
        ("http://[::1]/", "::1"),
        ("http://[::ffff:127.0.0.1]/", "127.0.0.1"),
        ("http://2130706433/", "127.0.0.1"),
        ("http://0x7f000001/", "127.0.0.1"),
        ("http://0177.0.0.1/", "127.0.0.1"),
        ("http://127.1/", "127.0.0.1"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://[fe80::1]:8080/", "fe80::1"),
        ("http://private.test/", "'private.test' resolves to 10.0.0.5"),
        ("http://mixed.test/", "'mixed.test' resolves to 192.168.0.7"),
    ],
)
def test_fetch_refuses(url: str, match: str) -> None:
    resolver = _resolver(
        {"localhost": ["127.0.0.1"], "private.test": ["10.0.0.5"], "mixed.test": ["93.184.216.34", "192.168.0.7"]}
    )
    with pytest.raises(UrlForbiddenError, match=match):
        fetch_url(url, resolver=resolver)


def test_localhost_refused_with_default_resolver() -> None:
    with pytest.raises(UrlForbiddenError, match="not a public address"):
        fetch_url("http://localhost/")


def test_refusal_happens_before_connecting(server: _Server) -> None:
    for url in (f"http://127.0.0.1:{server.port}/img", f"http://public.test:{server.port}/img"):
        with pytest.raises(UrlForbiddenError):
            fetch_url(url, resolver=LOCAL)
    time.sleep(0.05)
    assert server.connections == 0
    assert server.requests == []


def test_invalid_port_is_an_input_error() -> None:
    with pytest.raises(UrlFetchError, match="not a valid URL"):
        fetch_url("http://example.com:99999/")


def test_unresolvable_host() -> None:
    with pytest.raises(UrlFetchError, match="could not be resolved") as info:
        fetch_url("http://nowhere.test/", resolver=LOCAL)
    assert not isinstance(info.value, UrlForbiddenError)


# --------------------------------------------------------------------------------------------- fetching


def test_fetch_literal_ip_with_allow_private(server: _Server) -> None:
    assert fetch_url(f"http://127.0.0.1:{server.port}/img", FetchPolicy(allow_private=True)) == PNG_BYTES
    assert server.requests == [("/img", f"127.0.0.1:{server.port}")]


def test_fetch_connects_to_validated_ip_with_original_host_header(server: _Server) -> None:
    calls: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        calls.append((host, port))
        return ["127.0.0.1"]

    url = f"http://Images.Example.com:{server.port}/img"
    assert fetch_url(url, EXEMPT, resolver=resolver) == PNG_BYTES
    assert calls == [("images.example.com", server.port)]  # resolved once, never again by urllib3
    assert server.requests == [("/img", f"images.example.com:{server.port}")]


def test_redirect_chain_relative_and_absolute(server: _Server) -> None:
    assert fetch_url(f"http://public.test:{server.port}/r1", EXEMPT, resolver=LOCAL) == PNG_BYTES
    assert [path for path, _ in server.requests] == ["/r1", "/r2", "/r3?x=1", "/img"]


@pytest.mark.parametrize(
    ("path", "error", "match"),
    [
        ("/to-literal", UrlForbiddenError, "127.0.0.1"),
        ("/to-localhost", UrlForbiddenError, "'localhost' resolves to 127.0.0.1"),
        ("/to-ftp", UrlForbiddenError, "http or https"),
        ("/no-location", UrlFetchError, "no Location"),
    ],
)
def test_redirect_revalidated_at_every_hop(server: _Server, path: str, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        fetch_url(f"http://public.test:{server.port}{path}", EXEMPT, resolver=LOCAL)
    assert [p for p, _ in server.requests] == [path]  # the private target was never requested


def test_too_many_redirects(server: _Server) -> None:
    policy = FetchPolicy(allowed_hosts=frozenset({"public.test"}), max_redirects=3, timeout=5.0)
    with pytest.raises(UrlFetchError, match="too many redirects"):
        fetch_url(f"http://public.test:{server.port}/loop/0", policy, resolver=LOCAL)
    assert [p for p, _ in server.requests] == ["/loop/0", "/loop/1", "/loop/2", "/loop/3"]


def test_zero_redirects_allowed(server: _Server) -> None:
    policy = FetchPolicy(allowed_hosts=frozenset({"public.test"}), max_redirects=0, timeout=5.0)
    with pytest.raises(UrlFetchError, match="too many redirects"):
        fetch_url(f"http://public.test:{server.port}/r1", policy, resolver=LOCAL)


def test_http_error_status(server: _Server) -> None:
    with pytest.raises(UrlFetchError, match="404") as info:
        fetch_url(f"http://public.test:{server.port}/missing", EXEMPT, resolver=LOCAL)
    assert not isinstance(info.value, UrlForbiddenError)


def test_declared_content_length_too_large(server: _Server) -> None:
    policy = FetchPolicy(allowed_hosts=frozenset({"public.test"}), max_bytes=100_000, timeout=5.0)
    with pytest.raises(InputTooLargeError, match="1000000000 bytes, more than the limit of 100000 bytes"):
        fetch_url(f"http://public.test:{server.port}/declared-huge", policy, resolver=LOCAL)


def test_chunked_body_too_large_stops_early(server: _Server) -> None:
    policy = FetchPolicy(allowed_hosts=frozenset({"public.test"}), max_bytes=100_000, timeout=5.0)
    with pytest.raises(InputTooLargeError, match="limit of 100000 bytes"):
        fetch_url(f"http://public.test:{server.port}/chunked-huge", policy, resolver=LOCAL)
    assert server.done.wait(timeout=3), "server kept writing after the client gave up"
    assert server.sent < 20 * 1024 * 1024  # far less than the 50 MiB the server would have sent


def test_body_exactly_at_limit_is_fine(server: _Server) -> None:
    policy = FetchPolicy(allowed_hosts=frozenset({"public.test"}), max_bytes=len(PNG_BYTES), timeout=5.0)
    assert fetch_url(f"http://public.test:{server.port}/img", policy, resolver=LOCAL) == PNG_BYTES
    small = FetchPolicy(allowed_hosts=frozenset({"public.test"}), max_bytes=len(PNG_BYTES) - 1, timeout=5.0)
    with pytest.raises(InputTooLargeError):
        fetch_url(f"http://public.test:{server.port}/img", small, resolver=LOCAL)


def test_slow_server_hits_total_deadline(server: _Server) -> None:
    policy = FetchPolicy(allowed_hosts=frozenset({"public.test"}), timeout=0.5)
    with pytest.raises(UrlFetchError, match="timed out"):
        fetch_url(f"http://public.test:{server.port}/slow", policy, resolver=LOCAL)
    # The server was still dribbling its body: the fetch's one deadline ended it, not the end of the body.
    assert server.sent < SLOW_BYTES


def test_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(UrlFetchError, match="could not connect") as info:
        fetch_url(f"http://127.0.0.1:{port}/img", FetchPolicy(allow_private=True, timeout=2.0))
    assert not isinstance(info.value, UrlForbiddenError)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a test certificate")
def test_https_uses_original_host_for_sni_and_verifies_certificate(server: _Server, tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
         "-subj", "/CN=images.example.com", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=20,
    )  # fmt: skip
    seen: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: seen.append(name)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with pytest.raises(UrlFetchError, match="TLS") as info:  # self-signed: not trusted, and no raw ssl error escapes
        fetch_url(f"https://images.example.com:{server.port}/img", EXEMPT, resolver=LOCAL)
    assert not isinstance(info.value, UrlForbiddenError)
    assert seen == ["images.example.com"]
    assert server.requests == []
