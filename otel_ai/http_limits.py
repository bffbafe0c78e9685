"""A cap on request bodies for serve's HTTP app (chat, `/api/*`, Slack), before any route reads one.

Starlette reads a whole body into memory when a route asks for it (`request.body()`, `request.json()`,
a pydantic body), and some routes are open without a login (Chainlit's `/set-session-cookie`,
`/login`): one 400 MB POST grew serve by 1.8 GB. So every body is counted here as it arrives and
refused with 413 once it passes `http_max_request_bytes`; a declared Content-Length over the cap is
refused before a byte of the body is read. A body must also arrive within `http_body_timeout_seconds`
(408 after): uvicorn waits for body bytes for ever, so clients sending a byte every few seconds each kept
a connection, its file descriptor and a task open for as long as they liked. OTLP on the main port
(`/v1/*`) is left to ingest, which has its own, larger body and in-flight limits.
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

OTLP_PREFIX = "/v1/"


async def _refuse(send: Send, status: int, error: str) -> None:
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class LimitRequestBody:
    """ASGI middleware: reads each HTTP request's body (at most `max_bytes`, within `timeout` seconds)
    before the app runs, then hands it over in one message; 413 above the cap, 408 when it is too slow,
    400 for a malformed Content-Length."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float = 30.0,
                 exempt: tuple[str, ...] = (OTLP_PREFIX,)) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.exempt = exempt

    def _too_large(self) -> str:
        return (f"request body over {self.max_bytes:,} bytes (OTEL_AI_HTTP_MAX_REQUEST_BYTES): "
                "send a smaller request")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        declared = [v for k, v in scope.get("headers", []) if k.lower() == b"content-length"]
        if declared:
            try:
                size = int(declared[0])
            except ValueError:
                size = -1
            if size < 0 or len(set(declared)) > 1:
                await _refuse(send, 400, "malformed Content-Length header")
                return
            if size > self.max_bytes:
                await _refuse(send, 413, self._too_large())
                return
        chunks: list[bytes] = []
        total = 0
        try:
            async with asyncio.timeout(self.timeout):  # one deadline for the whole body, not per chunk
                while True:
                    message = await receive()
                    if message["type"] != "http.request":  # the client went away: nobody to answer
                        return
                    chunk = message.get("body", b"")
                    total += len(chunk)
                    if total > self.max_bytes:  # chunked, or more than declared
                        break
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await _refuse(send, 408, f"request body not complete after {self.timeout:g} s "
                                     f"(OTEL_AI_HTTP_BODY_TIMEOUT_SECONDS; {total:,} bytes arrived): send the "
                                     "body without pauses")
            return
        if total > self.max_bytes:
            await _refuse(send, 413, self._too_large())
            return
        whole: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            return await receive()  # after the body: only http.disconnect

        await self.app(scope, replay, send)
