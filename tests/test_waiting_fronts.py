"""Chat and Slack callers waiting for a store handle must not take threads others need.

With one pooled handle held by a long query, dozens of chat `/sql` messages and Slack questions wait for it
(up to 10 s, then "busy"). They used to wait inside `asyncio.to_thread`, i.e. in the event loop's default
executor (min(32, cores + 4) threads: 6 here), which the chat's history, sign-in and Slack's thread memory
also use: a chat sign-in then waited for the crowd. Now they wait on the event loop (StorePool.wait_handle),
and `/healthz` and a chat sign-in each answer in under 2 s meanwhile. A real serve, the chat driven over its
socket.io protocol as the browser drives it, Slack events signed and answered through the fake Slack API.
The chat's ordinary questions (the analyst's path) wait the same way and get only the busy message.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Awaitable, Iterator
from datetime import UTC, datetime

import httpx
import pytest
import socketio

from otel_ai.context import QUERY_WAIT_SECONDS
from tests.fakes.slack_api import FakeSlack
from tests.fixtures.server import ServerProcess, running, store_spans_to_multiply
from tests.fixtures.slack import fake_slack, mention, message_text, new_ts, signature_headers, slack_env  # noqa: F401

CHANNEL = "C0WAITING"
ALICE = "U0ALICE"
WAITERS = 12  # of each kind: together four times the default executor's threads on 2 cores
BUSY = "The server is busy"


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory, fake_slack: FakeSlack) -> Iterator[ServerProcess]:  # noqa: F811
    env = slack_env(fake_slack, OTEL_AI_SQL_CONCURRENCY="1", OTEL_AI_ANOMALY_ENABLED="false",
                    OTEL_AI_SQL_MAX_EXECUTION_TIME="60",
                    OTEL_AI_SLACK_ALLOWED_CHANNELS=CHANNEL, OTEL_AI_SLACK_ALLOWED_USERS=ALICE)
    with running(tmp_path_factory.mktemp("waiting"), env) as server:
        yield server


@functools.cache
def store_slow_spans(base: str) -> dict[str, str]:
    """40 spans to multiply into a long query, stored once per serve; returns that query's body for /api/sql."""
    store_spans_to_multiply(base, first_trace=2000)
    # 15-25 s on one core (more under load): longer than a waiter's 10 s
    return {"sql": "SELECT sum(cityHash64(toString(x), toString(y))) AS s FROM otel_traces "
                   "ARRAY JOIN range(5000) AS x ARRAY JOIN range(5000) AS y WHERE SpanName = 'slow'"}


async def pool_stats(client: httpx.AsyncClient) -> dict[str, int]:
    """/healthz's view of the query pool: handles in use and callers waiting for one."""
    r = await client.get(f"{client.base_url}/healthz")
    assert r.status_code == 200, r.text
    return r.json()["queries"]


async def hold_the_only_handle(client: httpx.AsyncClient, slow: dict[str, str]) -> asyncio.Task[httpx.Response]:
    """Start the long query through /api/sql and return once it holds the pool's only handle."""
    holder = asyncio.create_task(client.post("/api/sql", json=slow))
    while (await pool_stats(client))["busy"] < 1:
        assert not holder.done(), holder.result().text
    return holder


async def timed(request: Awaitable[httpx.Response]) -> float:
    """Seconds a request took to get its 200 (inf past 5 s)."""
    started = time.monotonic()
    try:
        r = await asyncio.wait_for(request, 5)
    except TimeoutError:
        return float("inf")
    assert r.status_code == 200, r.text
    return time.monotonic() - started


class ChatSession:
    """One chat tab as the browser drives it: sign in (POST /auth/header), connect over socket.io, send a
    message, collect what the chat sends back."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.sio = socketio.AsyncClient(reconnection=False)
        self.outputs: list[str] = []
        self.names: list[str] = []  # of the steps and messages in `outputs`, in the same order
        self.thread_id = str(uuid.uuid4())
        self.sio.on("new_message", self._on_message)

    async def _on_message(self, step: dict) -> None:
        self.outputs.append(str(step.get("output") or ""))
        self.names.append(str(step.get("name")))

    async def open(self, client: httpx.AsyncClient) -> None:
        r = await client.post(f"{self.base}/auth/header")
        assert r.status_code == 200, r.text
        cookie = "; ".join(f"{k}={v}" for k, v in r.cookies.items())
        await self.sio.connect(self.base, headers={"Cookie": cookie}, transports=["websocket"],
                               socketio_path="/ws/socket.io", auth={
                                   "clientType": "webapp", "sessionId": str(uuid.uuid4()),
                                   "threadId": self.thread_id, "userEnv": "{}", "chatProfile": None})
        await self.sio.emit("connection_successful")

    async def send(self, text: str) -> None:
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        await self.sio.emit("client_message", {"message": {
            "id": str(uuid.uuid4()), "threadId": self.thread_id, "createdAt": now, "output": text,
            "type": "user_message", "name": "User"}, "fileReferences": None})

    def ours(self) -> list[str]:
        """What the app itself sent: `outputs` without Chainlit's empty wrapper steps around its handlers."""
        return [o for n, o in zip(self.names, self.outputs, strict=True) if n not in ("on_chat_start", "on_message")]

    def reply(self) -> str | None:
        """The console's answer: the table ("N rows."), the busy message, or an error."""
        return next((o for o in self.outputs if BUSY in o or " rows." in o or "went wrong" in o), None)


def slack_busy(fake: FakeSlack, ts: str) -> str | None:
    """The text that replaced this question's "looking…" reply, once it has."""
    placeholders = {c.result.get("ts") for c in fake.calls_to("chat.postMessage")
                    if c.args.get("channel") == CHANNEL and c.args.get("thread_ts") == ts}
    done = [message_text(c.args) for c in fake.calls_to("chat.update")
            if c.args.get("ts") in placeholders and "Looking into it" not in str(c.args.get("text"))]
    return done[-1] if done else None


async def probe(client: httpx.AsyncClient, sent: float, holder: asyncio.Task[httpx.Response], health: list[float],
                sign_in: list[float]) -> int:
    """One look while the crowd waits: how long /healthz took (into `health`), how long a chat sign-in took
    (into `sign_in`, only while the crowd surely waits: from 3 s after it asked until 2 s before it gives up,
    with the long query still holding the handle); returns how many callers wait for the pool."""
    started = time.monotonic()
    waiting = (await pool_stats(client))["waiting"]
    health.append(time.monotonic() - started)
    started = time.monotonic()
    took = await timed(client.post("/auth/header"))
    if sent + 3 < started < sent + QUERY_WAIT_SECONDS - 2 and not holder.done():
        sign_in.append(took)
    return waiting


def test_waiting_chat_and_slack_callers_leave_health_and_sign_in_alone(serve: ServerProcess,
                                                                      fake_slack: FakeSlack) -> None:  # noqa: F811
    """Measured before the change: with 24 waiters of each kind, a chat sign-in took 44 s (only 6 callers
    could wait at once, the rest queued in the executor with the sign-in); /healthz (a sync route, on
    Starlette's own threads) stayed fast either way."""
    slow = store_slow_spans(serve.http_url)

    async def load() -> tuple[list[str | None], list[str | None], list[float], list[float], int]:
        async with httpx.AsyncClient(base_url=serve.http_url, timeout=60,
                                     limits=httpx.Limits(max_connections=200)) as client:
            sessions = [ChatSession(serve.http_url) for _ in range(WAITERS)]
            await asyncio.gather(*(s.open(client) for s in sessions))  # signed in and connected, before the load
            holder = await hold_the_only_handle(client, slow)
            sent = time.monotonic()
            await asyncio.gather(*(s.send("/sql SELECT count() AS n FROM otel_traces") for s in sessions))
            questions = [new_ts() for _ in range(WAITERS)]
            for ts in questions:
                body = mention("which services are failing?", CHANNEL, ALICE, ts)
                r = await client.post("/slack/events", content=body, headers={
                    "Content-Type": "application/json", **signature_headers(body)})
                assert r.status_code == 200, r.text
            health: list[float] = []
            sign_in: list[float] = []  # while the crowd waits: after its own messages are stored, before "busy"
            waiting = 0
            deadline = time.monotonic() + 180
            while not (all(s.reply() for s in sessions) and all(slack_busy(fake_slack, ts) for ts in questions)):
                assert time.monotonic() < deadline, "the waiting callers were not all answered within 180 s"
                waiting = max(waiting, await probe(client, sent, holder, health, sign_in))
            held = await holder
            assert held.status_code == 200, held.text
            for s in sessions:
                await s.sio.disconnect()
            chat = [s.reply() for s in sessions]
            return chat, [slack_busy(fake_slack, ts) for ts in questions], health, sign_in, waiting

    chat, slack, health, sign_in, waiting = asyncio.run(load())
    assert max(health) < 2.0, sorted(health)[-5:]
    assert len(sign_in) >= 3 and max(sign_in) < 2.0, sign_in
    # the crowd really waited, all at once, and was told the server is busy as before (after QUERY_WAIT_SECONDS)
    assert waiting >= 2 * WAITERS, waiting
    assert sum(BUSY in (r or "") for r in chat) >= WAITERS // 2, chat
    assert sum("the server is busy" in (r or "") for r in slack) >= WAITERS // 2, slack


def test_chat_questions_waiting_for_a_handle_get_busy_and_leave_the_server_alone(serve: ServerProcess) -> None:
    """The chat's ordinary question path (the analyst on `ServerContext.query_handle()`): with the only pooled
    handle held past the wait limit, every asker is told the server is busy, nothing more (no investigation
    starts), after about QUERY_WAIT_SECONDS. Meanwhile /healthz and a chat sign-in answer in under 2 s: the
    askers wait on the event loop, not in the loop's default executor (6 threads here) that sign-in also
    needs, nor blocking the loop itself."""
    slow = store_slow_spans(serve.http_url)
    busy = f"**{BUSY}:** 1 queries are already running: try again in a few seconds"

    async def load() -> tuple[list[list[str]], list[float], list[float], float, int]:
        async with httpx.AsyncClient(base_url=serve.http_url, timeout=60,
                                     limits=httpx.Limits(max_connections=200)) as client:
            sessions = [ChatSession(serve.http_url) for _ in range(WAITERS)]
            await asyncio.gather(*(s.open(client) for s in sessions))
            holder = await hold_the_only_handle(client, slow)
            sent = time.monotonic()
            await asyncio.gather(*(s.send("which services are failing?") for s in sessions))
            health: list[float] = []
            sign_in: list[float] = []
            waiting = 0
            deadline = sent + QUERY_WAIT_SECONDS + 60
            while not all(s.ours() for s in sessions):  # each asker's first message (busy, or a run started)
                assert time.monotonic() < deadline, [s.outputs for s in sessions]
                waiting = max(waiting, await probe(client, sent, holder, health, sign_in))
            answered = time.monotonic() - sent  # by when every asker had been told
            assert not holder.done(), "the long query ended before the askers gave up: make it longer"
            held = await holder
            assert held.status_code == 200, held.text
            for s in sessions:
                await s.sio.disconnect()
            return [s.ours() for s in sessions], health, sign_in, answered, waiting

    outputs, health, sign_in, answered, waiting = asyncio.run(load())
    assert max(health) < 2.0, sorted(health)[-5:]
    assert len(sign_in) >= 3 and max(sign_in) < 2.0, sign_in
    assert waiting >= WAITERS, waiting  # they all waited for the pool at once
    assert all(out == [busy] for out in outputs), outputs  # the busy message alone: no investigation step
    assert QUERY_WAIT_SECONDS - 0.5 < answered < QUERY_WAIT_SECONDS + 30, answered
