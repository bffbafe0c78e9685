"""A fake Slack Web API on 127.0.0.1: the methods otel-ai's Slack app calls, recorded for assertions.

Speaks the real wire protocol slack_sdk uses: `POST /api/<method>` with a Bearer token and the
arguments as query string, form or JSON body; `{"ok": true, ...}` answers. It also serves the
upload URLs handed out by files.getUploadURLExternal and slash-command `response_url`s.
Point the app at it with SLACK_API_URL=`fake.api_url` (slack_sdk's base_url).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

BOT_USER_ID = "UBOT0001"
BOT_ID = "BBOT0001"
TEAM_ID = "T0000TEAM"


SECTION_TEXT_MAX = 3000
MAX_BLOCKS = 50


def block_errors(blocks: Any) -> list[str]:  # noqa: ANN401 - whatever the app sent
    """Slack's Block Kit limits that the app's messages must respect (Slack answers invalid_blocks)."""
    if blocks is None:
        return []
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    errors = [] if len(blocks) <= MAX_BLOCKS else [f"{len(blocks)} blocks (max {MAX_BLOCKS})"]
    for i, block in enumerate(blocks):
        kind = block.get("type")
        texts = []
        if kind == "section":
            texts = [block.get("text")] if "text" in block else block.get("fields", [])
            if not texts:
                errors.append(f"[{i}] section without text or fields")
        elif kind == "context":
            texts = block.get("elements", [])
            if not 1 <= len(texts) <= 10:
                errors.append(f"[{i}] context with {len(texts)} elements (1 to 10)")
        elif kind == "header":
            texts = [block.get("text")]
            if len((block.get("text") or {}).get("text", "")) > 150:
                errors.append(f"[{i}] header longer than 150")
        elif kind != "divider":
            errors.append(f"[{i}] unsupported block type {kind!r}")
        for text in texts:
            body = (text or {}).get("text", "")
            if (text or {}).get("type") not in ("mrkdwn", "plain_text"):
                errors.append(f"[{i}] text object of type {(text or {}).get('type')!r}")
            if not body.strip() or len(body) > SECTION_TEXT_MAX:
                errors.append(f"[{i}] text of {len(body)} characters (1 to {SECTION_TEXT_MAX})")
    return errors


@dataclass
class Call:
    """One request the app made: the API method (or 'upload'/'response'), its arguments, the token used."""

    method: str
    args: dict[str, Any]
    token: str | None
    body: bytes = b""
    result: dict[str, Any] = field(default_factory=dict)


@dataclass
class FakeSlack:
    """The server plus everything it received; thread-safe, usable from the test process."""

    token: str = "xoxb-test-token"
    app_token: str = "xapp-1-test-app-token"
    socket_url: str | None = None  # what apps.connections.open hands out (a FakeSocketMode's ws_url)
    calls: list[Call] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        """What slack_sdk wants as base_url (ends with a slash)."""
        return f"{self.base_url}/api/"

    def response_url(self, name: str = "cmd") -> str:
        return f"{self.base_url}/response/{name}"

    def start(self) -> FakeSlack:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                length = int(self.headers.get("Content-Length") or 0)
                fake._handle(self, self.rfile.read(length))

            def do_GET(self) -> None:  # noqa: N802
                fake._handle(self, b"")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, ANN401
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-slack").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- recording -------------------------------------------------------------------------

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()
            self.uploads.clear()

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def wait_for(self, predicate: Callable[[FakeSlack], Any], timeout: float = 60.0) -> Any:  # noqa: ANN401
        """Poll until `predicate(self)` is truthy and return it; fail with the calls seen so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate(self)
            if result:
                return result
            time.sleep(0.1)
        seen = [(c.method, {k: str(v)[:200] for k, v in c.args.items()}) for c in list(self.calls)]
        raise AssertionError(f"fake Slack: condition not met in {timeout}s; calls: {seen}")

    # -- protocol --------------------------------------------------------------------------

    def _handle(self, req: BaseHTTPRequestHandler, body: bytes) -> None:
        parts = urlsplit(req.path)
        args: dict[str, Any] = dict(parse_qsl(parts.query))
        ctype = req.headers.get("Content-Type", "")
        auth = req.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        path = parts.path
        if path.startswith("/upload/"):
            file_id = path.rsplit("/", 1)[1]
            with self._lock:
                self.uploads[file_id] = body
                self.calls.append(Call("upload", {"file_id": file_id}, token, body))
            return self._send(req, 200, b"OK - 1", "text/plain")
        if body and "json" in ctype:
            args.update(json.loads(body))
        elif body and "x-www-form-urlencoded" in ctype:
            args.update(parse_qsl(body.decode()))
        if path.startswith("/response/"):
            errors = block_errors(args.get("blocks"))
            with self._lock:
                self.calls.append(Call("response", {"name": path.rsplit("/", 1)[1], **args}, token, body,
                                       {"errors": errors}))
            return self._send(req, 400, b"invalid_blocks", "text/plain") if errors else \
                self._send(req, 200, b"ok", "text/plain")
        if not path.startswith("/api/"):
            return self._send(req, 404, b"not found", "text/plain")
        method = path.removeprefix("/api/")
        token = token or args.pop("token", None)
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if token != (self.app_token if method == "apps.connections.open" else self.token):
            result = {"ok": False, "error": "invalid_auth"}
        elif handler is None:
            result = {"ok": False, "error": "unknown_method"}
        elif errors := block_errors(args.get("blocks")):
            result = {"ok": False, "error": "invalid_blocks", "response_metadata": {"messages": errors}}
        else:
            result = {"ok": True, **handler(args)}
        with self._lock:
            self.calls.append(Call(method, args, token, body, result))
        return self._json(req, result)

    def _send(self, req: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str) -> None:
        req.send_response(status)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    def _json(self, req: BaseHTTPRequestHandler, payload: dict[str, Any]) -> None:
        self._send(req, 200, json.dumps(payload).encode(), "application/json; charset=utf-8")

    def _ts(self) -> str:
        # a "9" prefix keeps the fake's message ts apart from the ones tests make up for user messages
        return f"{int(time.time())}.9{next(self._ids):05d}"

    def _m_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": "https://fake.slack.com/", "team": "fake", "user": "otel-ai", "team_id": TEAM_ID,
                "user_id": BOT_USER_ID, "bot_id": BOT_ID, "is_enterprise_install": False}

    def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:  # noqa: N802 - Slack's name
        ts = self._ts()
        return {"channel": args.get("channel"), "ts": ts,
                "message": {"text": args.get("text", ""), "ts": ts, "bot_id": BOT_ID, "user": BOT_USER_ID}}

    def _m_apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        assert self.socket_url, "start a FakeSocketMode and set FakeSlack.socket_url first"
        return {"url": self.socket_url}

    def _m_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        return {"message_ts": self._ts()}

    def _m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"channel": args.get("channel"), "ts": args.get("ts"), "text": args.get("text", "")}

    def _m_reactions_add(self, args: dict[str, Any]) -> dict[str, Any]:
        return {}

    def _m_files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        file_id = f"F{next(self._ids):08d}"
        return {"upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    def _m_files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        files = json.loads(args.get("files") or "[]")
        return {"files": [{"id": f["id"], "title": f.get("title")} for f in files]}


class FakeSocketMode:
    """Slack's Socket Mode WebSocket on loopback: says hello, pushes envelopes, records the app's acks.

    Protocol as Slack's: `{"type": "hello"}` on connect; envelopes `{"envelope_id", "type":
    "events_api"|"slash_commands", "payload", "accepts_response_payload"}`; the app answers each
    with `{"envelope_id": ..., "payload"?: ...}`.
    """

    def __init__(self) -> None:
        self.acks: list[dict[str, Any]] = []
        self.connections = 0
        self._sockets: list[Any] = []
        self._loop: Any = None
        self._port = 0
        self._ready = threading.Event()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self._port}/link"

    def start(self) -> FakeSocketMode:
        threading.Thread(target=self._run, daemon=True, name="fake-slack-socket").start()
        if not self._ready.wait(10):
            raise RuntimeError("fake Socket Mode server did not start")
        return self

    def _run(self) -> None:
        import asyncio

        from aiohttp import WSMsgType, web

        async def link(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            self.connections += 1
            self._sockets.append(ws)
            await ws.send_json({"type": "hello", "num_connections": 1,
                                "connection_info": {"app_id": "A0OTELAI"}, "debug_info": {"host": "fake"}})
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self.acks.append(json.loads(msg.data))
            self._sockets.remove(ws)
            return ws

        async def main() -> None:
            app = web.Application()
            app.router.add_get("/link", link)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._ready.set()
            await asyncio.Event().wait()

        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(main())

    def send(self, envelope_type: str, payload: dict[str, Any]) -> str:
        """Push one envelope to the connected app; returns its envelope_id."""
        import asyncio

        envelope_id = f"env-{time.monotonic_ns()}"
        message = {"envelope_id": envelope_id, "type": envelope_type, "payload": payload,
                   "accepts_response_payload": envelope_type == "slash_commands", "retry_attempt": 0}
        if not self._sockets:
            raise AssertionError("no Socket Mode connection to send to")
        asyncio.run_coroutine_threadsafe(self._sockets[-1].send_json(message), self._loop).result(10)
        return envelope_id
