"""When answering fails, the Slack user gets a short message; the details go to the server log only.

The Slack handlers run in-process here against the fake Slack Web API and a real store; the
failures are real ones (an unreachable model, a store missing the Slack table), not stubs.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid

import pytest

from chat.slack import blocks
from chat.slack.answerers import LocalAgent, RemoteAgent
from chat.slack.bolt_app import SlackBot, web_client
from otel_ai.settings import Settings
from store import Store, StorePool
from tests.fakes.llm import closed_port_url
from tests.fakes.slack_api import BOT_USER_ID, FakeSlack
from tests.fixtures.slack import BOT_TOKEN, message_text, new_ts


def mention_event(channel: str, ts: str) -> dict[str, str]:
    return {"type": "app_mention", "channel": channel, "user": "U0ALICE", "ts": ts,
            "text": f"<@{BOT_USER_ID}> why is checkout slow?"}


def answer_update(fake: FakeSlack, channel: str) -> str:
    [update] = [c.args for c in fake.calls_to("chat.update") if c.args.get("channel") == channel]
    return message_text(update)


def settings_for(store: Store, fake: FakeSlack, **extra: object) -> Settings:
    return Settings(clickhouse_url=f"chdb://{store.url.path}", database=store.database, slack_bot_token=BOT_TOKEN,
                    slack_api_url=fake.api_url, **extra)


def test_internal_error_is_a_short_message_with_a_reference(
    root_store: Store, fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    # a database without otel-ai's migrations: reading the thread's memory fails inside the handler
    store = root_store.with_database(f"t_nomig_{uuid.uuid4().hex[:8]}")
    settings = settings_for(store, fake_slack)
    bot = SlackBot(settings, LocalAgent(settings, store))
    with caplog.at_level(logging.ERROR, logger="chat.slack"):
        asyncio.run(bot.on_message(mention_event("C0BROKEN", new_ts()), web_client(settings), "Ev-broken"))
    text = answer_update(fake_slack, "C0BROKEN")
    found = re.search(r"ref ([0-9a-f]{8})", text)
    assert found and "Sorry, something went wrong" in text and "server log" in text
    assert "slack_threads" not in text and "Traceback" not in text
    [record] = [r for r in caplog.records if found.group(1) in r.getMessage()]
    assert record.exc_info is not None and "slack_threads" in str(record.exc_info[1])
    assert BOT_TOKEN not in caplog.text


def test_unreachable_model_is_explained_in_one_line(store: Store, fake_slack: FakeSlack) -> None:
    settings = settings_for(store, fake_slack, model="openai:gpt-4o-mini", openai_base_url=closed_port_url(),
                            openai_api_key="sk-test-not-a-real-key")
    bot = SlackBot(settings, LocalAgent(settings, store))
    asyncio.run(bot.on_message(mention_event("C0NOMODEL", new_ts()), web_client(settings), "Ev-nomodel"))
    text = answer_update(fake_slack, "C0NOMODEL")
    assert text.startswith("Sorry, I could not answer that:") and "gpt-4o-mini" in text
    assert "sk-test-not-a-real-key" not in text and "Traceback" not in text


def test_model_setting_error_is_explained_in_one_line(store: Store, fake_slack: FakeSlack) -> None:
    settings = settings_for(store, fake_slack, model="anthropic:claude-x", anthropic_api_key=None)
    bot = SlackBot(settings, LocalAgent(settings, store))
    asyncio.run(bot.on_message(mention_event("C0NOKEY", new_ts()), web_client(settings), "Ev-nokey"))
    text = answer_update(fake_slack, "C0NOKEY")
    assert text.startswith("Sorry, I could not answer that: model anthropic:claude-x needs an API key")
    assert "Traceback" not in text and "ref " not in text


def test_unreachable_server_in_remote_mode_is_explained(fake_slack: FakeSlack) -> None:
    """`otel-ai slack --server URL` with nothing listening there."""
    url = closed_port_url("")
    settings = Settings(slack_bot_token=BOT_TOKEN, slack_api_url=fake_slack.api_url)
    bot = SlackBot(settings, RemoteAgent(url, timeout=5))
    asyncio.run(bot.on_message(mention_event("C0NOSERVER", new_ts()), web_client(settings), "Ev-noserver"))
    expected = f"Sorry, I could not answer that: cannot reach otel-ai at {url} (ConnectError)"
    assert answer_update(fake_slack, "C0NOSERVER") == f"{expected}\n{expected}"  # text, then the section


def test_refused_blocks_fall_back_to_the_answer_as_text(fake_slack: FakeSlack) -> None:
    """Slack answers invalid_blocks for a message beyond its limits: the answer must still arrive."""
    settings = Settings(slack_bot_token=BOT_TOKEN, slack_api_url=fake_slack.api_url)
    bot = SlackBot(settings, RemoteAgent("http://127.0.0.1:9"))
    too_many = blocks.Rendered(text="payment is slow", blocks=[blocks.section(f"part {i}") for i in range(51)],
                               full_text="*payment* is slow: p95 20 ms -> 2.5 s")
    asyncio.run(bot.update(web_client(settings), "C0BLOCKS", "1.900001", too_many))
    [refused, sent] = [c for c in fake_slack.calls_to("chat.update") if c.args.get("channel") == "C0BLOCKS"]
    assert refused.result["error"] == "invalid_blocks" and "51 blocks" in str(refused.result)
    assert sent.result["ok"] and sent.args["text"] == "*payment* is slow: p95 20 ms -> 2.5 s"
    assert not sent.args.get("blocks")


def test_answers_run_on_the_servers_query_pool(store: Store, fake_slack: FakeSlack) -> None:
    """As for /api/ask and the chat: a question takes a handle of the bounded pool (and may borrow its other
    idle one per tool call), never the handle serve keeps for the scorer, and gives it back."""
    settings = settings_for(store, fake_slack)
    pool = StorePool(store, 2)
    try:
        bot = SlackBot(settings, LocalAgent(settings, store, queries=pool))
        asyncio.run(bot.on_message(mention_event("C0POOL", new_ts()), web_client(settings), "Ev-pool"))
        assert pool._all, "the answer ran on no handle of the pool"
        assert all(pool.acquire(timeout=0) for _ in range(2)), "a handle was not given back"
    finally:
        pool.close()
    assert not answer_update(fake_slack, "C0POOL").startswith("Sorry")


def test_a_busy_server_is_a_short_message(store: Store, fake_slack: FakeSlack) -> None:
    settings = settings_for(store, fake_slack)
    pool = StorePool(store, 1)
    held = pool.acquire(timeout=0)  # another question holds the only handle
    try:
        bot = SlackBot(settings, LocalAgent(settings, store, queries=pool, wait=0.1))
        asyncio.run(bot.on_message(mention_event("C0BUSY", new_ts()), web_client(settings), "Ev-busy"))
    finally:
        pool.release(held)
        pool.close()
    text = answer_update(fake_slack, "C0BUSY")
    assert text.startswith("Sorry, I could not answer that: the server is busy") and "try again" in text
    assert "Traceback" not in text and "ref " not in text
