"""A cap on request bodies for serve's HTTP app (chat, `/api/*`, Slack), before any route reads one.

Starlette reads a whole body into memory when a route asks for it (`request.body()`, `request.json()`,
a pydantic body), and some routes are open without a login (Chainlit's `/set-session-cookie`,
`/login`): one 400 MB POST grew serve by 1.8 GB. So every body is counted here as it arrives and
refused with 413 once it passes `http_max_request_bytes`; a declared Content-Length over the cap is
refused before a byte of the body is read. A body must also arrive within `http_body_timeout_seconds`
(408 after): uvicorn waits for body bytes for ever, so clients sending a byte every few seconds each kept
a connection, its file descriptor and a task open for as long as they liked. OTLP on the main port
(`/v1/*`) is left to ingest, which has its own, larger body and in-flight limits.

Before the body, the request head (request line and headers) must arrive within
`http_header_timeout_seconds` (`HeadDeadlineH11`): uvicorn has no such deadline (`timeout_keep_alive` runs
only between requests and stops at the first byte), so a client sending a header byte every few seconds
kept its connection, file descriptor and task for ever (slowloris).
"""

from __future__ import annotations

import asyncio
import json

import h11
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

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


class HeadDeadlineH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head: `head_timeout` seconds from the
    connection opening, or from the first byte of a later request on it, until its headers are complete;
    then 408 and the connection closes. Reading the body and running the app are not covered (the body
    has `LimitRequestBody`'s deadline). Pass a subclass with `head_timeout` set (`head_deadline_h11`)
    as `uvicorn.Config(http=...)`."""

    head_timeout: float = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()  # a connection that never sends a byte is held no longer than a slow one

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:  # bytes of a new request head (or of nothing but blank lines)
            self._arm_head_deadline()
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # the head is complete (or the connection is failing)
            self._disarm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        body = (f"request headers not complete after {self.head_timeout:g} s "
                "(OTEL_AI_HTTP_HEADER_TIMEOUT_SECONDS): send the request without pauses\n").encode()
        try:  # h11 lets a server answer before the request has arrived (meant for 408)
            self.transport.write(self.conn.send(h11.Response(status_code=408, reason=b"Request Timeout", headers=[
                (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                (b"connection", b"close")])) or b"")
            self.transport.write(self.conn.send(h11.Data(data=body)) or b"")
            self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:  # a response already under way: just close
            pass
        self.transport.close()


def head_deadline_h11(seconds: float) -> type[HeadDeadlineH11]:
    """The protocol class for `uvicorn.Config(http=...)` with a head deadline of `seconds`."""
    return type("HeadDeadlineH11", (HeadDeadlineH11,), {"head_timeout": seconds})
