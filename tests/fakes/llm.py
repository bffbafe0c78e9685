"""Fake LLM servers on 127.0.0.1 speaking the OpenAI-compatible chat completions API (with tool
calls, streamed or not) and the Ollama API (/api/tags, /api/pull, /api/version, /api/chat and its
OpenAI-compatible /v1). Tests and evals drive the real pydantic-ai HTTP clients against them.

A "brain" decides each reply from the request body: `ScriptedBrain` calls a fixed list of tools
(only those the request offers), then answers through the `final_result` output tool (or text).
Every request body is recorded in `server.requests` for assertions.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# A reply is an assistant message: {"content": str|None, "tool_calls": [{"name":..., "arguments": {...}}]}
Brain = Callable[[dict[str, Any]], dict[str, Any]]


def closed_port_url(path: str = "/v1") -> str:
    """A URL on 127.0.0.1 where nothing listens (an unreachable model)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Tool results in an OpenAI-style or Ollama-style request body."""
    return [m for m in body.get("messages", []) if m.get("role") == "tool"]


def offered_tools(body: dict[str, Any]) -> list[str]:
    return [t.get("function", {}).get("name", "") for t in body.get("tools") or []]


class ScriptedBrain:
    """Call `calls` in order (skipping tools the request does not offer), then give a final answer.

    `final(body)` returns the `final_result` arguments (answer, root_causes, follow_ups); the
    default quotes the start of every tool result so tests can see what the model was shown.
    """

    def __init__(
        self,
        calls: list[tuple[str, dict[str, Any]]] | None = None,
        final: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.calls = calls or []
        self.final = final or self.default_final

    @staticmethod
    def default_final(body: dict[str, Any]) -> dict[str, Any]:
        seen = [str(m.get("content", ""))[:300] for m in tool_messages(body)]
        return {"answer": "Fake model saw " + str(len(seen)) + " tool results.\n\n" + "\n".join(seen)}

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        offered = offered_tools(body)
        done = sum(len(m.get("tool_calls") or []) for m in body.get("messages", []) if m.get("role") == "assistant")
        plan = [c for c in self.calls if c[0] in offered]
        if done < len(plan):
            name, args = plan[done]
            return {"content": None, "tool_calls": [{"name": name, "arguments": args}]}
        final = self.final(body)
        if "final_result" in offered:
            return {"content": None, "tool_calls": [{"name": "final_result", "arguments": final}]}
        return {"content": final["answer"], "tool_calls": []}


class FakeLLMServer:
    """An OpenAI-compatible chat completions server (`/v1/chat/completions`, `/v1/models`).

    `fail_status` makes every completion fail with that HTTP status (fallback tests);
    `api_key` (when set) is required as a Bearer token, as a hosted API would.
    """

    def __init__(
        self,
        brain: Brain | None = None,
        model: str = "fake-model",
        api_key: str | None = None,
        fail_status: int | None = None,
    ) -> None:
        self.brain = brain or ScriptedBrain()
        self.model = model
        self.api_key = api_key
        self.fail_status = fail_status
        self.requests: list[dict[str, Any]] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> FakeLLMServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # noqa: ANN401 - keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802
                server.handle(self, "GET", None)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                server.handle(self, "POST", json.loads(raw) if raw else {})

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def v1_url(self) -> str:
        return f"{self.url}/v1"

    # --- protocol --------------------------------------------------------------------------
    def handle(self, h: BaseHTTPRequestHandler, method: str, body: dict[str, Any] | None) -> None:
        path = h.path.split("?")[0]
        if self.api_key is not None and path.startswith("/v1") and h.headers.get("Authorization") != (
            f"Bearer {self.api_key}"
        ):
            return send_json(h, 401, {"error": {"message": "Incorrect API key provided",
                                                "type": "invalid_request_error", "code": "invalid_api_key"}})
        if method == "GET" and path == "/v1/models":
            return send_json(h, 200, {"object": "list", "data": [{"id": self.model, "object": "model"}]})
        if method == "POST" and path == "/v1/chat/completions":
            assert body is not None
            self.requests.append(body)
            if self.fail_status:
                return send_json(h, self.fail_status, {"error": {"message": "fake upstream failure",
                                                                 "type": "server_error"}})
            return self.chat_completion(h, body)
        return send_json(h, 404, {"error": {"message": f"no route {method} {path}"}})

    def chat_completion(self, h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        reply = self.brain(body)
        calls = [
            {"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function",
             "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
            for c in reply.get("tool_calls") or []
        ]
        message: dict[str, Any] = {"role": "assistant", "content": reply.get("content")}
        if calls:
            message["tool_calls"] = calls
        prompt_tokens = len(json.dumps(body.get("messages", []))) // 4
        completion_tokens = max(1, len(json.dumps(message)) // 4)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        finish = "tool_calls" if calls else "stop"
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time())
        if not body.get("stream"):
            return send_json(h, 200, {
                "id": ident, "object": "chat.completion", "created": created, "model": body.get("model", self.model),
                "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage,
            })
        delta: dict[str, Any] = {"role": "assistant", "content": reply.get("content")}
        if calls:
            delta["tool_calls"] = [{"index": i, **c} for i, c in enumerate(calls)]
        chunks = [
            {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
            {"choices": [], "usage": usage},
        ]
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.end_headers()
        for chunk in chunks:
            full = {"id": ident, "object": "chat.completion.chunk", "created": created,
                    "model": body.get("model", self.model), **chunk}
            h.wfile.write(f"data: {json.dumps(full)}\n\n".encode())
        h.wfile.write(b"data: [DONE]\n\n")
        h.wfile.flush()


class FakeOllamaServer(FakeLLMServer):
    """The Ollama API: /api/version, /api/tags, /api/pull (streamed NDJSON), /api/chat, and /v1."""

    def __init__(self, brain: Brain | None = None, models: list[str] | None = None,
                 pullable: list[str] | None = None, fail_status: int | None = None) -> None:
        super().__init__(brain=brain, model="llama3.2", fail_status=fail_status)
        self.models = list(models if models is not None else ["llama3.2:latest"])
        self.pullable = set(pullable if pullable is not None else ["qwen2.5:0.5b"])

    def handle(self, h: BaseHTTPRequestHandler, method: str, body: dict[str, Any] | None) -> None:
        path = h.path.split("?")[0]
        if method == "GET" and path == "/":
            return send_text(h, 200, "Ollama is running")
        if method == "GET" and path == "/api/version":
            return send_json(h, 200, {"version": "0.6.0-fake"})
        if method == "GET" and path == "/api/tags":
            return send_json(h, 200, {"models": [
                {"name": m, "model": m, "modified_at": "2026-01-01T00:00:00Z", "size": 2_000_000_000,
                 "details": {"family": "llama", "parameter_size": "3.2B", "quantization_level": "Q4_K_M"}}
                for m in self.models]})
        if method == "POST" and path == "/api/pull":
            return self.pull(h, (body or {}).get("model") or (body or {}).get("name", ""))
        if method == "POST" and path == "/api/chat":
            assert body is not None
            self.requests.append(body)
            if not self.known(body.get("model", "")):
                return send_json(h, 404, {"error": f"model \"{body.get('model')}\" not found, try pulling it first"})
            reply = self.brain(body)
            return send_json(h, 200, {
                "model": body.get("model"), "created_at": "2026-01-01T00:00:00Z",
                "message": {"role": "assistant", "content": reply.get("content") or "",
                            "tool_calls": [{"function": {"name": c["name"], "arguments": c["arguments"]}}
                                           for c in reply.get("tool_calls") or []]},
                "done": True, "done_reason": "stop", "prompt_eval_count": 10, "eval_count": 5,
            })
        if method == "POST" and path == "/v1/chat/completions" and body is not None and not self.known(
            body.get("model", "")
        ):
            self.requests.append(body)
            return send_json(h, 404, {"error": {"message": f"model \"{body.get('model')}\" not found, try pulling it "
                                                "first", "type": "api_error"}})
        return super().handle(h, method, body)

    def known(self, name: str) -> bool:
        return name in self.models or f"{name}:latest" in self.models

    def pull(self, h: BaseHTTPRequestHandler, name: str) -> None:
        if name not in self.pullable:
            return send_json(h, 500, {"error": "pull model manifest: file does not exist"})
        h.send_response(200)
        h.send_header("Content-Type", "application/x-ndjson")
        h.end_headers()
        for event in ({"status": "pulling manifest"},
                      {"status": "downloading", "digest": "sha256:fake", "total": 100, "completed": 50},
                      {"status": "downloading", "digest": "sha256:fake", "total": 100, "completed": 100},
                      {"status": "success"}):
            h.wfile.write((json.dumps(event) + "\n").encode())
            h.wfile.flush()
        self.models.append(name)


def send_json(h: BaseHTTPRequestHandler, status: int, payload: object) -> None:
    data = json.dumps(payload).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


def send_text(h: BaseHTTPRequestHandler, status: int, text: str) -> None:
    data = text.encode()
    h.send_response(status)
    h.send_header("Content-Type", "text/plain")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)
