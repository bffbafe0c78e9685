"""Conversation memory per Slack thread, persisted in the `slack_threads` table.

A thread is keyed by channel + thread_ts (the ts of the message that opened it). The agent's
`Conversation` is stored as JSON after every answer, so a follow-up in the thread keeps its context
even after `serve` or `otel-ai slack` restarts. A small in-process cache (bounded, newest kept)
saves a read per follow-up; the table stays the source of truth.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from datetime import UTC, datetime

from agent import Conversation
from store import Store

CACHE_LIMIT = 512


def thread_key(channel: str, thread_ts: str) -> str:
    """The conversation id of a Slack thread (also what the chat UI link opens)."""
    return f"slack-{channel}-{thread_ts}"


class SlackThreads:
    """Load and save the agent conversation of a thread."""

    def __init__(self, store: Store, cache_limit: int = CACHE_LIMIT) -> None:
        self.store = store
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._limit = cache_limit

    def _remember(self, key: str, data: str) -> None:
        self._cache[key] = data
        self._cache.move_to_end(key)
        while len(self._cache) > self._limit:
            self._cache.popitem(last=False)

    def _load(self, key: str) -> str | None:
        if key in self._cache:
            return self._cache[key]
        rows = self.store.query(
            "SELECT argMax(conversation, updated) FROM slack_threads WHERE key = {key:String} GROUP BY key",
            parameters={"key": key},
        ).rows
        return rows[0][0] if rows else None

    async def get(self, channel: str, thread_ts: str) -> Conversation:
        """The thread's conversation, or a new one with the thread's id."""
        key = thread_key(channel, thread_ts)
        data = await asyncio.to_thread(self._load, key)
        return Conversation.from_json(data) if data else Conversation(id=key)

    def _save(self, key: str, channel: str, thread_ts: str, data: str) -> None:
        self.store.insert(
            "slack_threads",
            ["key", "channel", "thread_ts", "conversation", "updated"],
            [[key], [channel], [thread_ts], [data], [datetime.now(UTC)]],
        )
        self._remember(key, data)

    async def save(self, channel: str, thread_ts: str, conversation: Conversation) -> None:
        key = thread_key(channel, thread_ts)
        await asyncio.to_thread(self._save, key, channel, thread_ts, conversation.to_json())
