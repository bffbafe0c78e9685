"""Slack end to end: a real `otel-ai serve` holding simulator data, Slack HTTP mode on, a fake Slack Web API.

Events API payloads and slash commands are posted to /slack/events signed as Slack signs them;
what the app sends back to Slack (replies, updates, reactions, file uploads, response_url posts) is
recorded by the fake Web API and checked against the simulator's ground truth.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.slack_api import FakeSlack, FakeSocketMode
from tests.fixtures.server import ServerProcess, running
from tests.fixtures.slack import (
    BOT_TOKEN,
    SIGNING_SECRET,
    direct_message,
    event_body,
    mention,
    message_text,
    new_ts,
    post_signed,
    signature_headers,
    slack_env,
    slash_command,
)

SCENARIO = "paymentSlow"
CHANNEL = "C0INCIDENTS"
DM_CHANNEL = "D0ALICEDM"
ALICE = "U0ALICE"
MALLORY = "U0MALLORY"
PUBLIC_URL = "http://otel-ai.example.test:8000"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class SlackServe:
    server: ServerProcess
    truth: dict[str, Any]


def run_simulator(endpoint: str) -> dict[str, Any]:
    """The real simulator over OTLP/gRPC into the server; returns its ground truth."""
    done = subprocess.run(
        [sys.executable, "-m", "otel_ai", "sim", "--scenario", SCENARIO, "--endpoint", endpoint,
         "--history", "20m", "--live", "0", "--seed", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout[done.stdout.index("{"):])["ground_truth"]


@pytest.fixture(scope="module")
def slack_serve(tmp_path_factory: pytest.TempPathFactory, fake_slack: FakeSlack) -> Iterator[SlackServe]:
    env = slack_env(fake_slack, OTEL_AI_SLACK_ALLOWED_CHANNELS=f"{CHANNEL},{DM_CHANNEL}",
                    OTEL_AI_SLACK_ALLOWED_USERS=ALICE, OTEL_AI_PUBLIC_URL=PUBLIC_URL)
    with running(tmp_path_factory.mktemp("slack-serve"), env) as server:
        truth = run_simulator(server.otlp_grpc_endpoint)
        yield SlackServe(server, truth)


def answer_section(update: dict[str, Any]) -> str:
    """The answer and root causes only: the blocks before the evidence divider."""
    blocks = update["blocks"] if isinstance(update["blocks"], list) else json.loads(update["blocks"])
    end = next((i for i, b in enumerate(blocks) if b["type"] == "divider"), len(blocks))
    return message_text({"blocks": blocks[:end]})


def question_for(truth: dict[str, Any]) -> str:
    """The user's question from the scenario's symptom, e.g. "checkout is slow — why?"."""
    return f"{truth['symptom']} — why?"


def in_thread(fake: FakeSlack, method: str, thread_ts: str, channel: str = CHANNEL) -> list[dict[str, Any]]:
    return [c.args for c in fake.calls_to(method)
            if c.args.get("channel", c.args.get("channel_id")) == channel and c.args.get("thread_ts") == thread_ts]


def answered(fake: FakeSlack, thread_ts: str, channel: str = CHANNEL) -> list[dict[str, Any]]:
    """chat.update calls that replaced this thread's "looking…" replies with an answer."""
    placeholders = {c.result.get("ts") for c in fake.calls_to("chat.postMessage")
                    if c.args.get("channel") == channel and c.args.get("thread_ts") == thread_ts}
    return [c.args for c in fake.calls_to("chat.update")
            if c.args.get("channel") == channel and c.args.get("ts") in placeholders
            and "Looking into it" not in str(c.args.get("text"))]


def ask_in_thread(serve: SlackServe, fake: FakeSlack, body: bytes, thread_ts: str, expected_updates: int,
                  channel: str = CHANNEL) -> dict[str, Any]:
    """Post a signed event; it is acknowledged before the agent answers (Slack retries an ack later than
    3 s), then answered by updating the "looking…" reply in place."""
    before = len(answered(fake, thread_ts, channel))
    response = post_signed(serve.server.http_url, body)
    assert response.status_code == 200, response.text
    assert len(answered(fake, thread_ts, channel)) == before, "the HTTP ack must not wait for the answer"

    def enough(f: FakeSlack) -> list[dict[str, Any]] | None:
        updates = answered(f, thread_ts, channel)
        return updates if len(updates) >= expected_updates else None

    return fake.wait_for(enough, 240)[expected_updates - 1]


# -- signatures: checked before anything runs ------------------------------------------------------------


def test_url_verification_answered_with_the_challenge(slack_serve: SlackServe) -> None:
    body = json.dumps({"token": "legacy", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                       "type": "url_verification"}).encode()
    response = post_signed(slack_serve.server.http_url, body)
    assert response.status_code == 200
    assert response.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}
    unsigned = httpx.post(f"{slack_serve.server.http_url}/slack/events", content=body,
                          headers={"Content-Type": "application/json"})
    assert unsigned.status_code == 401


def test_bad_missing_or_stale_signatures_get_401_and_nothing_runs(slack_serve: SlackServe,
                                                                  fake_slack: FakeSlack) -> None:
    url = slack_serve.server.http_url
    before = len(fake_slack.calls)
    body = mention("why is everything slow?", CHANNEL, ALICE, new_ts())
    command = slash_command("why is everything slow?", CHANNEL, ALICE, fake_slack.response_url("bad-sig"))
    stale = int(time.time()) - 6 * 60
    attempts = [
        ({"X-Slack-Signature": "v0=" + "0" * 64}, body, "application/json"),  # wrong
        (signature_headers(body, secret="not-the-secret"), body, "application/json"),  # wrong secret
        (signature_headers(body, timestamp=stale), body, "application/json"),  # stale but correctly signed
        (signature_headers(command, timestamp=stale), command, "application/x-www-form-urlencoded"),
        ({"X-Slack-Signature": "v0=" + "0" * 64}, command, "application/x-www-form-urlencoded"),
    ]
    for headers, payload, ctype in attempts:
        assert post_signed(url, payload, ctype, headers).status_code == 401
    missing = httpx.post(f"{url}/slack/events", content=body, headers={"Content-Type": "application/json"})
    assert missing.status_code == 401
    tampered = post_signed(url, body, headers=signature_headers(body.replace(b"slow", b"fast")))
    assert tampered.status_code == 401
    time.sleep(2.0)  # anything started in the background would have called Slack by now
    assert fake_slack.calls[before:] == []


# -- answers ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def first_thread(slack_serve: SlackServe, fake_slack: FakeSlack) -> tuple[str, dict[str, Any]]:
    """A mention in the incident channel, answered in its thread: (thread ts, the answer's chat.update)."""
    truth = slack_serve.truth
    ts = new_ts()
    update = ask_in_thread(slack_serve, fake_slack, mention(question_for(truth), CHANNEL, ALICE, ts), ts, 1)
    return ts, update


def test_mention_is_acknowledged_and_answered_in_the_thread(slack_serve: SlackServe, fake_slack: FakeSlack,
                                                            first_thread: tuple[str, dict[str, Any]]) -> None:
    ts, update = first_thread
    truth = slack_serve.truth
    reactions = [c.args for c in fake_slack.calls_to("reactions.add") if c.args.get("timestamp") == ts]
    assert reactions and reactions[0]["channel"] == CHANNEL and reactions[0]["name"] == "eyes"
    [looking] = in_thread(fake_slack, "chat.postMessage", ts)
    assert "Looking into it" in looking["text"]
    text = message_text(update)
    assert f"1. *{truth['root_cause_service']}*" in answer_section(update), "the top-ranked root cause"
    assert "Root causes" in text and "confidence" in text
    assert "```" in text, "evidence SQL is shown in code blocks"
    assert f"{PUBLIC_URL}/?conversation=slack-{CHANNEL}-{ts}" in text
    for method in ("chat.postMessage", "chat.update", "reactions.add"):
        assert all(c.token == BOT_TOKEN for c in fake_slack.calls_to(method))


def test_chart_uploaded_as_png_into_the_thread(slack_serve: SlackServe, fake_slack: FakeSlack,
                                               first_thread: tuple[str, dict[str, Any]]) -> None:
    ts, _ = first_thread
    completes = fake_slack.wait_for(lambda f: in_thread(f, "files.completeUploadExternal", ts), 120)
    files = [f for c in completes for f in json.loads(c["files"])]
    pngs = [fake_slack.uploads[f["id"]] for f in files if fake_slack.uploads.get(f["id"], b"").startswith(PNG_MAGIC)]
    assert pngs, f"no PNG among the files uploaded to the thread: {files}"
    assert all(len(png) > 1000 for png in pngs)
    asked = {c.args["file_id"] for c in fake_slack.calls_to("upload")}
    assert {f["id"] for f in files} <= asked


def test_follow_up_in_the_thread_keeps_context_across_a_restart(
    slack_serve: SlackServe, fake_slack: FakeSlack, first_thread: tuple[str, dict[str, Any]]
) -> None:
    """A follow-up that names nothing ("and in the last 10 minutes?") is answered about the thread's subject."""
    ts, _ = first_thread
    fake_slack.wait_for(lambda f: in_thread(f, "files.completeUploadExternal", ts), 120)
    slack_serve.server.restart()  # the thread's conversation must come back from the store
    truth = slack_serve.truth
    follow_up = "and in the last 10 minutes?"
    update = ask_in_thread(slack_serve, fake_slack, mention(follow_up, CHANNEL, ALICE, new_ts(), thread_ts=ts), ts, 2)
    assert truth["root_cause_service"] in answer_section(update)
    replies = in_thread(fake_slack, "chat.postMessage", ts)
    assert len(replies) == 2 and all(r["thread_ts"] == ts for r in replies)
    # control: the same words opening a new thread have no subject, so they cannot name the root cause
    fresh = new_ts()
    alone = ask_in_thread(slack_serve, fake_slack, mention(follow_up, CHANNEL, ALICE, fresh), fresh, 1)
    assert truth["root_cause_service"] not in answer_section(alone)


def test_direct_message_answered_in_a_thread(slack_serve: SlackServe, fake_slack: FakeSlack) -> None:
    ts = new_ts()
    truth = slack_serve.truth
    body = direct_message(question_for(truth), DM_CHANNEL, ALICE, ts)
    update = ask_in_thread(slack_serve, fake_slack, body, ts, 1, channel=DM_CHANNEL)
    assert truth["root_cause_service"] in message_text(update)
    # Slack delivers an event again when it thinks the ack was late: the same event_id is answered once
    retry = post_signed(slack_serve.server.http_url, body, headers={"X-Slack-Retry-Num": "1",
                                                                    "X-Slack-Retry-Reason": "http_timeout"})
    assert retry.status_code == 200
    fake_slack.wait_for(lambda f: in_thread(f, "files.completeUploadExternal", ts, DM_CHANNEL), 120)
    time.sleep(1.0)
    assert len(in_thread(fake_slack, "chat.postMessage", ts, DM_CHANNEL)) == 1


def test_slash_command_answered_through_response_url(slack_serve: SlackServe, fake_slack: FakeSlack) -> None:
    truth = slack_serve.truth
    body = slash_command(question_for(truth), CHANNEL, ALICE, fake_slack.response_url("cmd1"))
    response = post_signed(slack_serve.server.http_url, body, "application/x-www-form-urlencoded")
    assert response.status_code == 200 and "Looking into it" in response.text
    assert not [c for c in fake_slack.calls_to("response") if c.args["name"] == "cmd1"], "ack before the answer"
    responses = fake_slack.wait_for(lambda f: [c.args for c in f.calls_to("response") if c.args["name"] == "cmd1"],
                                    240)
    assert responses[0]["response_type"] == "in_channel"
    assert truth["root_cause_service"] in message_text(responses[0])
    # a command has no thread: its charts go to the channel itself
    fake_slack.wait_for(lambda f: [c for c in f.calls_to("files.completeUploadExternal")
                                   if c.args.get("channel_id") == CHANNEL and not c.args.get("thread_ts")], 120)


# -- allow-lists ------------------------------------------------------------------------------------------


def test_allow_lists_refuse_other_channels_and_users(slack_serve: SlackServe, fake_slack: FakeSlack) -> None:
    url = slack_serve.server.http_url
    for channel, user in (("C0RANDOM", ALICE), (CHANNEL, MALLORY)):
        ts = new_ts()
        assert post_signed(url, mention("why is checkout slow?", channel, user, ts)).status_code == 200
        refusal = fake_slack.wait_for(
            lambda f, ts=ts: [c.args for c in f.calls_to("chat.postEphemeral") if c.args.get("thread_ts") == ts], 30)
        assert refusal[0]["user"] == user and "Sorry" in refusal[0]["text"]
        assert not in_thread(fake_slack, "chat.postMessage", ts, channel)
        assert not [c for c in fake_slack.calls_to("reactions.add") if c.args.get("timestamp") == ts]
    body = slash_command("why is checkout slow?", CHANNEL, MALLORY, fake_slack.response_url("mallory"))
    response = post_signed(url, body, "application/x-www-form-urlencoded")
    assert response.status_code == 200 and "not on otel-ai's list of allowed users" in response.text
    time.sleep(1.0)
    assert not [c for c in fake_slack.calls_to("response") if c.args["name"] == "mallory"]


def test_bot_messages_and_other_events_are_ignored(slack_serve: SlackServe, fake_slack: FakeSlack) -> None:
    before = len(fake_slack.calls)
    ts = new_ts()
    body = event_body({"type": "message", "channel_type": "im", "subtype": "bot_message", "bot_id": "B0OTHER",
                       "text": "why is checkout slow?", "ts": ts, "channel": DM_CHANNEL})
    assert post_signed(slack_serve.server.http_url, body).status_code == 200
    time.sleep(1.5)
    assert [c for c in fake_slack.calls[before:] if c.method != "auth.test"] == []


def test_tokens_never_logged(slack_serve: SlackServe) -> None:
    log = slack_serve.server.log()
    assert "/slack/events" in log or "Slack HTTP mode on" in log
    assert BOT_TOKEN not in log and SIGNING_SECRET not in log


# -- Socket Mode: the same app over Slack's WebSocket, `otel-ai slack` in its own process ---------------------


@contextlib.contextmanager
def socket_mode_app(serve: SlackServe, fake: FakeSlack, socket: FakeSocketMode, log_path: Path,
                    *args: str) -> Iterator[None]:
    """Run `otel-ai slack ARGS` until it is connected to the fake Socket Mode server; SIGTERM after."""
    env = {k: v for k, v in serve.server.env.items() if k != "SLACK_SIGNING_SECRET"}
    env["SLACK_APP_TOKEN"] = fake.app_token
    connected = socket.connections
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "otel_ai", "slack", *args], env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while socket.connections == connected:
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log_path.read_text()
    text = log_path.read_text()
    assert BOT_TOKEN not in text and fake.app_token not in text


def test_socket_mode_next_to_serve_and_on_its_own(slack_serve: SlackServe, fake_slack: FakeSlack,
                                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    """`otel-ai slack --server URL` asks the running serve; with serve stopped, `--data DIR` opens the store."""
    truth = slack_serve.truth
    socket = FakeSocketMode().start()
    fake_slack.socket_url = socket.ws_url
    logs = tmp_path_factory.mktemp("socket")
    with socket_mode_app(slack_serve, fake_slack, socket, logs / "remote.log", "--server",
                         slack_serve.server.http_url):
        ts = new_ts()
        envelope = socket.send("events_api", json.loads(mention(question_for(truth), CHANNEL, ALICE, ts)))
        update = fake_slack.wait_for(lambda f: answered(f, ts) or None, 240)[0]
        assert truth["root_cause_service"] in message_text(update)
        assert {"envelope_id": envelope} in socket.acks
        assert f"{PUBLIC_URL}/?conversation=slack-{CHANNEL}-{ts}" in message_text(update)

    slack_serve.server.stop()  # one process per chDB directory: now `otel-ai slack` may open it
    try:
        with socket_mode_app(slack_serve, fake_slack, socket, logs / "local.log", "--data",
                             str(slack_serve.server.data_dir)):
            command = {"command": "/otel-ai", "text": question_for(truth), "channel_id": CHANNEL, "user_id": ALICE,
                       "response_url": fake_slack.response_url("socket-cmd"), "trigger_id": "1.socket"}
            envelope = socket.send("slash_commands", command)
            responses = fake_slack.wait_for(
                lambda f: [c.args for c in f.calls_to("response") if c.args["name"] == "socket-cmd"], 240)
            assert truth["root_cause_service"] in message_text(responses[0])
            [ack] = [a for a in socket.acks if a["envelope_id"] == envelope]
            assert "Looking into it" in ack["payload"]["text"]
    finally:
        slack_serve.server.start()  # the module's serve is shared: later tests need it back


def _sql(serve: SlackServe, sql: str) -> list[dict[str, Any]]:
    response = httpx.post(f"{serve.server.http_url}/api/sql", json={"sql": sql}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["rows"]


def _pngs_in_thread(fake: FakeSlack, ts: str) -> list[bytes]:
    completes = fake.wait_for(lambda f: in_thread(f, "files.completeUploadExternal", ts), 120)
    files = [f for c in completes for f in json.loads(c["files"])]
    return [fake.uploads[f["id"]] for f in files if fake.uploads.get(f["id"], b"").startswith(PNG_MAGIC)]


def test_everyday_questions_answered_in_slack_with_their_charts(slack_serve: SlackServe,
                                                                 fake_slack: FakeSlack) -> None:
    """Besides "why": a measure by service (table + bar chart), the slowest traces (ids that exist, slowest
    first) and a series over time (line chart), each in its own thread, with a PNG chart."""
    ts = new_ts()
    update = ask_in_thread(slack_serve, fake_slack, mention("Show p95 latency by service", CHANNEL, ALICE, ts), ts, 1)
    text = answer_section(update)
    services = {r["s"] for r in _sql(slack_serve, "SELECT DISTINCT ServiceName AS s FROM otel_traces")}
    assert sum(s in text for s in services) >= 3 and "p95" in text.lower(), text
    assert _pngs_in_thread(fake_slack, ts)

    ts = new_ts()
    update = ask_in_thread(slack_serve, fake_slack,
                           mention("show me the slowest traces in the last 15 minutes", CHANNEL, ALICE, ts), ts, 1)
    ids = list(dict.fromkeys(re.findall(r"\b[0-9a-f]{32}\b", answer_section(update))))
    assert len(ids) >= 3, answer_section(update)
    listed = ", ".join(f"'{i}'" for i in ids)
    rows = _sql(slack_serve, f"SELECT TraceId AS t, max(Duration) AS d FROM otel_traces WHERE TraceId IN ({listed}) "
                             "GROUP BY t")
    assert {r["t"] for r in rows} == set(ids), "every listed trace exists"
    longest = {r["t"]: int(r["d"]) for r in rows}
    assert longest[ids[0]] == max(longest.values()), "slowest first"

    ts = new_ts()
    ask_in_thread(slack_serve, fake_slack, mention("p95 latency of checkout over the last 20 minutes", CHANNEL, ALICE,
                                                   ts), ts, 1)
    assert _pngs_in_thread(fake_slack, ts)
