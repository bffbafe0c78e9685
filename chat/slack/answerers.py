"""Who answers a Slack question: the agent in this process, or a running `serve` over its HTTP API.

- `LocalAgent`: `agent.ask` over a store this process holds (HTTP mode inside serve, or
  `otel-ai slack --data/--clickhouse-url`); each thread's conversation is kept in `slack_threads`.
- `RemoteAgent`: `POST {server}/api/ask` with `conversation_id` = the thread's id (`otel-ai slack
  --server URL`), for when serve holds the embedded data directory (one process per chDB directory).
  The server keeps conversations in memory (its limit), so a serve restart forgets threads.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

import httpx

from agent import AgentError
from agent.answer import Answer
from chat.slack.threads import SlackThreads, thread_key
from otel_ai.auth import client_headers
from otel_ai.context import QUERY_WAIT_SECONDS
from otel_ai.settings import Settings
from store import Store, StoreBusy, StorePool


class Answerer(Protocol):
    async def answer(self, question: str, channel: str, thread_ts: str) -> Answer:
        """The answer in the thread's conversation; AgentError carries a reason fit for the user."""


class LocalAgent:
    """`queries`: the bounded pool the answers run on (serve's, as for /api/ask and the chat), so that a
    question never holds up the handle `store` keeps for the scorer and the threads' memory; all busy for
    `wait` seconds is a "busy" answer. Without it, answers run on `store`."""

    def __init__(self, settings: Settings, store: Store, queries: StorePool | None = None,
                 wait: float = QUERY_WAIT_SECONDS) -> None:
        self.settings = settings
        self.store = store
        self.queries = queries
        self.wait = wait
        self.threads = SlackThreads(store)

    async def answer(self, question: str, channel: str, thread_ts: str) -> Answer:
        from agent import ask  # lazy: pydantic-ai's import costs ~1 s

        conversation = await self.threads.get(channel, thread_ts)
        if self.queries is None:
            answer = await ask(question, store=self.store, settings=self.settings, conversation=conversation)
        else:
            async with contextlib.AsyncExitStack() as stack:
                try:  # waits on the event loop, not in a thread (StorePool.wait_handle)
                    handle = await stack.enter_async_context(self.queries.wait_handle(self.wait))
                except StoreBusy as exc:
                    raise AgentError(f"the server is busy ({exc})") from None
                answer = await ask(question, store=handle, settings=self.settings, conversation=conversation,
                                   spare=self.queries)
        await self.threads.save(channel, thread_ts, conversation)
        return answer


class RemoteAgent:
    def __init__(self, server_url: str, timeout: float = 600.0) -> None:
        self.server_url = server_url.rstrip("/")
        self.timeout = timeout

    async def answer(self, question: str, channel: str, thread_ts: str) -> Answer:
        body = {"question": question, "conversation_id": thread_key(channel, thread_ts)}
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.post(f"{self.server_url}/api/ask", json=body, headers=client_headers())
        except httpx.HTTPError as exc:
            raise AgentError(f"cannot reach otel-ai at {self.server_url} ({type(exc).__name__})") from exc
        if response.status_code in (400, 503):
            raise AgentError(str(response.json().get("error") or response.text[:300]))
        response.raise_for_status()
        return Answer.model_validate(response.json())
