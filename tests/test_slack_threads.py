"""Thread memory: conversations persisted per Slack thread; one question at a time per thread."""

from __future__ import annotations

import asyncio

from agent import Conversation
from chat.slack.answerers import RemoteAgent
from chat.slack.bolt_app import SlackBot
from chat.slack.threads import SlackThreads, thread_key
from otel_ai.settings import Settings
from store import Store


def test_conversation_survives_a_new_process_view(store: Store) -> None:
    async def scenario() -> Conversation:
        first = SlackThreads(store)
        conversation = await first.get("C1", "1700000000.000100")
        assert conversation.id == thread_key("C1", "1700000000.000100") and conversation.turns == []
        conversation.turns.append({"question": "why is checkout slow?", "answer": "payment"})
        conversation.context = {"services": ["checkout"]}
        await first.save("C1", "1700000000.000100", conversation)
        conversation.turns.append({"question": "and errors?", "answer": "none"})
        await first.save("C1", "1700000000.000100", conversation)
        # a fresh reader (no cache), as after a restart, sees the newest version
        return await SlackThreads(store).get("C1", "1700000000.000100")

    restored = asyncio.run(scenario())
    assert [t["question"] for t in restored.turns] == ["why is checkout slow?", "and errors?"]
    assert restored.context == {"services": ["checkout"]}
    other = asyncio.run(SlackThreads(store).get("C1", "1700000000.000999"))
    assert other.turns == []


def test_questions_in_one_thread_take_turns() -> None:
    bot = SlackBot(Settings(), RemoteAgent("http://127.0.0.1:9"))
    order: list[str] = []

    async def turn(key: str, name: str, hold: float) -> None:
        async with bot.thread_turn(key):
            order.append(f"{name} in")
            await asyncio.sleep(hold)
            order.append(f"{name} out")

    async def scenario() -> None:
        await asyncio.gather(turn("t1", "a", 0.05), turn("t1", "b", 0.0), turn("t2", "c", 0.01))

    asyncio.run(scenario())
    assert order.index("a out") < order.index("b in")  # same thread: b waits for a
    assert order.index("c in") < order.index("a out")  # another thread does not wait
    assert bot._locks == {}


def test_chat_links_use_the_public_url_else_a_browsable_address() -> None:
    remote = RemoteAgent("http://127.0.0.1:9")
    assert SlackBot(Settings(public_url="https://otel.example.com/"), remote).link("C1", "1.2") == \
        "https://otel.example.com/?conversation=slack-C1-1.2"
    assert SlackBot(Settings(host="0.0.0.0", port=8000, public_url=None), remote).link("C1", "1.2") == \
        "http://localhost:8000/?conversation=slack-C1-1.2"
    assert SlackBot(Settings(host="10.0.0.5", port=9000, public_url=None), remote).link("D1", "cmd-ab") == \
        "http://10.0.0.5:9000/?conversation=slack-D1-cmd-ab"
