"""A question is held to MAX_QUESTION_CHARS on every front, and a chat message to the request body limit.

Reading a question costs time on the event loop in proportion to its length (1.3 s a megabyte), and
uvicorn's WebSocket frames were allowed 16 MiB: one chat message could stall serve for everyone. A real
serve, the chat driven over socket.io as the browser drives it (tests/test_waiting_fronts.ChatSession).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from agent import AgentError, ask_sync
from agent.question import MAX_QUESTION_CHARS
from store import Store
from tests.fixtures.server import ServerProcess, running
from tests.test_agent import settings_for
from tests.test_waiting_fronts import ChatSession

LIMIT_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"OTEL_AI_ANOMALY_ENABLED": "false", "OTEL_AI_HTTP_MAX_REQUEST_BYTES": str(LIMIT_BYTES)}
    with running(tmp_path_factory.mktemp("limits"), env) as server:
        yield server


def test_a_question_over_the_limit_is_refused_before_it_is_read(store: Store) -> None:
    started = time.monotonic()
    with pytest.raises(AgentError) as info:
        ask_sync("why is checkout slow? " * 50_000, store=store, settings=settings_for(store))
    assert time.monotonic() - started < 1.0
    assert str(info.value).startswith(f"the question is 1,099,999 characters long; ask in at most "
                                      f"{MAX_QUESTION_CHARS:,}"), info.value
    at_limit = "why is checkout slow" + "?" * (MAX_QUESTION_CHARS - 20)
    ask_sync(at_limit, store=store, settings=settings_for(store))  # the limit itself is allowed


def test_the_api_refuses_a_question_over_the_limit(serve: ServerProcess) -> None:
    r = httpx.post(f"{serve.http_url}/api/ask", json={"question": "x" * (MAX_QUESTION_CHARS + 1)}, timeout=30)
    assert r.status_code == 422 and "at most 4000 characters" in r.text, r.text


def test_a_chat_question_over_the_limit_gets_the_reason(serve: ServerProcess) -> None:
    async def run() -> list[str]:
        async with httpx.AsyncClient(timeout=30) as client:
            chat = ChatSession(serve.http_url)
            await chat.open(client)
            await chat.send("why is checkout slow? " * 2_000)  # 43,999 characters once trimmed: under the frame limit
            deadline = time.monotonic() + 60
            while not any("Could not answer" in o for o in chat.outputs):
                assert time.monotonic() < deadline, chat.outputs
                await asyncio.sleep(0.05)
            await chat.sio.disconnect()
            return chat.outputs

    outputs = asyncio.run(run())
    assert any(f"**Could not answer:** the question is 43,999 characters long; ask in at most "
               f"{MAX_QUESTION_CHARS:,}" in o for o in outputs), outputs


def test_a_chat_message_over_the_body_limit_closes_its_connection_only(serve: ServerProcess) -> None:
    """A frame over OTEL_AI_HTTP_MAX_REQUEST_BYTES ends that socket (WebSocket close 1009, message too big);
    the server and other tabs go on."""

    async def run() -> tuple[bool, bool, int]:
        async with httpx.AsyncClient(timeout=30) as client:
            big, other = ChatSession(serve.http_url), ChatSession(serve.http_url)
            await big.open(client)
            await other.open(client)
            closed = asyncio.Event()
            big.sio.on("disconnect", lambda *_: closed.set())
            await big.send("x" * (2 * LIMIT_BYTES))
            try:
                await asyncio.wait_for(closed.wait(), 30)
            except TimeoutError:
                pass
            was_closed = closed.is_set()  # (before our own disconnect below sets it too)
            health = (await client.get(f"{serve.http_url}/healthz")).status_code
            still = other.sio.connected
            await other.sio.disconnect()
            if big.sio.connected:
                await big.sio.disconnect()
            return was_closed, still, health

    closed, other_connected, health = asyncio.run(run())
    assert closed, "the oversized chat message was accepted"
    assert other_connected and health == 200
