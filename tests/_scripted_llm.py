"""A scripted OpenAI-compatible chat endpoint on 127.0.0.1, for testing the agent with the real `openai` client.

Each POST to ``/v1/chat/completions`` takes the next step of the script (the last one repeats): a step
is a `Step`, or a function of the request body returning one. Every request body is kept in
``requests`` for the test to inspect.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Step:
    """One answer: tool calls ``(name, arguments)`` (arguments a dict, or a raw string sent as is), plain
    ``content``, or an HTTP error ``status`` with ``error`` as the message."""

    calls: list[tuple[str, dict[str, Any] | str]] = field(default_factory=list)
    content: str | None = None
    status: int = 200
    error: str = "scripted error"


def call(name: str, arguments: dict[str, Any] | str | None = None) -> Step:
    return Step(calls=[(name, {} if arguments is None else arguments)])


def last_tool_result(body: dict[str, Any]) -> dict[str, Any]:
    """The JSON of the newest tool message in a request."""
    for message in reversed(body["messages"]):
        if message["role"] == "tool":
            return json.loads(message["content"])
    raise AssertionError("no tool message in the request")


def _completion(step: Step, n: int) -> dict[str, Any]:
    tool_calls = [{"id": f"call_{n}_{i}", "type": "function",
                   "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}
                  for i, (name, args) in enumerate(step.calls)]
    message: dict[str, Any] = {"role": "assistant", "content": step.content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": 0, "model": "scripted",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool_calls else "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class ScriptedLLM:
    """``with ScriptedLLM([...]) as llm:`` serves on a free loopback port; ``llm.url`` is the API root (…/v1)."""

    def __init__(self, script: list[Step | Callable[[dict[str, Any]], Step]]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                with outer._lock:
                    outer.requests.append(body)
                    n = len(outer.requests)
                    step = outer.script[min(n, len(outer.script)) - 1]
                step = step(body) if callable(step) else step
                if step.status != 200:
                    self._send(step.status, {"error": {"message": step.error, "type": "scripted", "code": None}})
                    return
                self._send(200, _completion(step, n))

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ScriptedLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
