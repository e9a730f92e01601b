"""Start `sam3studio serve` in a subprocess for end-to-end tests (Gradio client, real browser)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest

READY_TIMEOUT_S = 120.0
PROCESSES: dict[str, subprocess.Popen] = {}  # url -> the running `serve` process, for tests that kill it
LOGS: dict[str, IO[bytes]] = {}  # url -> its combined stdout and stderr so far, for tests that read the log


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _console_script() -> str:
    script = Path(sys.executable).with_name("sam3studio")
    return str(script) if script.exists() else "sam3studio"


@contextlib.contextmanager
def running_server(model_dir: str | os.PathLike, timeout_s: float = READY_TIMEOUT_S,
                   extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """Run `sam3studio serve --model DIR` on a free loopback port; yield its base URL once /api/v1/ready is 200.

    The process is always stopped afterwards (killed if it does not exit); its log is printed when
    start-up fails or the body of the ``with`` raises.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1",
           **(extra_env or {})}
    log = tempfile.TemporaryFile(mode="w+b")
    proc = subprocess.Popen(
        [_console_script(), "serve", "--model", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )

    def dump_log(reason: str) -> None:
        log.flush()
        log.seek(0)
        text = log.read().decode("utf-8", "replace")
        print(f"--- sam3studio serve ({reason}; exit code {proc.poll()}) log ---\n{text}\n--- end of log ---", file=sys.stderr)

    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                dump_log("exited during start-up")
                raise RuntimeError(f"sam3studio serve exited with code {proc.returncode} before it was ready")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/api/v1/ready", timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                dump_log("not ready in time")
                raise TimeoutError(f"sam3studio serve was not ready within {timeout_s:.0f} s")
            time.sleep(0.5)
        PROCESSES[url] = proc
        LOGS[url] = log
        try:
            yield url
        except BaseException:
            dump_log("test failed")
            raise
    finally:
        PROCESSES.pop(url, None)
        LOGS.pop(url, None)
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


@pytest.fixture(scope="module")
def server_url(tiny_checkpoint) -> Iterator[str]:
    """Base URL of a `sam3studio serve` subprocess on the tiny checkpoint, shared by one test module."""
    with running_server(tiny_checkpoint) as url:
        yield url
