"""The Slack app: a slack-bolt `AsyncApp` over the same agent as the chat UI and the CLI.

`@otel-ai why is checkout slow?` in a channel (or any message in a DM) gets an immediate
acknowledgement (an :eyes: reaction and a "looking…" reply in the thread), then that reply is
updated in place with the answer in Block Kit; charts follow as PNG files in the same thread.
Follow-ups in the thread continue the thread's agent conversation (persisted, see threads.py).
`/otel-ai <question>` answers through the command's response_url.

The same app serves HTTP mode (mount.py, signatures verified by bolt) and Socket Mode (socket.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import re
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from agent import AgentError
from agent.answer import Answer
from chat.slack import blocks
from chat.slack.answerers import Answerer
from chat.slack.threads import thread_key
from otel_ai.settings import Settings

log = logging.getLogger("chat.slack")

ACK_REACTION = "eyes"
LOOKING = "Looking into it… (otel-ai is querying your telemetry)"
HELP = "Ask me about your services, e.g. `@otel-ai why is checkout slow?` or `/otel-ai which service has errors?`"
MAX_CHARTS = 3
_MENTION = re.compile(r"<@[A-Z0-9]+(\|[^>]*)?>")


def parse_list(value: str | None) -> set[str]:
    """A comma/space separated allow-list setting; empty means everyone."""
    return {v for v in re.split(r"[,\s]+", value or "") if v}


def question_text(text: str) -> str:
    """The question in a Slack message: mentions removed, Slack's escaping undone."""
    return html.unescape(_MENTION.sub("", text or "")).strip()


def web_client(settings: Settings, token: str | None = None) -> AsyncWebClient:
    """A Web API client with the bot token, aimed at settings.slack_api_url when set (tests, proxies)."""
    bot = token or (settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None)
    kwargs: dict[str, Any] = {"token": bot}
    if settings.slack_api_url:
        kwargs["base_url"] = settings.slack_api_url.rstrip("/") + "/"
    return AsyncWebClient(**kwargs)


def render_chart(figure: dict[str, Any]) -> bytes:
    """Plotly JSON -> PNG (kaleido; slow on first use, so callers run it in a thread)."""
    import plotly.graph_objects as go

    from tools.charts import render_png

    return render_png(go.Figure(figure))


class SlackBot:
    """What the Slack handlers do, independent of how events arrive (HTTP or Socket Mode)."""

    def __init__(self, settings: Settings, answerer: Answerer, chat_base: str | None = None) -> None:
        self.settings = settings
        self.answerer = answerer
        # a wildcard bind address is no place to browse to: say localhost (set OTEL_AI_PUBLIC_URL for others)
        host = "localhost" if settings.host in ("0.0.0.0", "::", "") else settings.host
        self.chat_base = settings.public_url or chat_base or f"http://{host}:{settings.port}"
        self.allowed_channels = parse_list(settings.slack_allowed_channels)
        self.allowed_users = parse_list(settings.slack_allowed_users)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # per thread: lock, questions holding it

    def refusal(self, channel: str | None, user: str | None) -> str | None:
        """Why this channel/user may not ask, or None when allowed."""
        if self.allowed_users and user not in self.allowed_users:
            return "Sorry, you are not on otel-ai's list of allowed users. Ask your otel-ai admin for access."
        if self.allowed_channels and channel not in self.allowed_channels:
            return "Sorry, otel-ai is not enabled in this channel. Ask your otel-ai admin to allow it."
        return None

    def first_time(self, event_id: str | None) -> bool:
        """False for an event Slack delivers again (retries after a slow ack)."""
        if not event_id:
            return True
        if event_id in self._seen:
            return False
        self._seen[event_id] = None
        while len(self._seen) > 1000:
            self._seen.popitem(last=False)
        return True

    @contextlib.asynccontextmanager
    async def thread_turn(self, key: str) -> AsyncIterator[None]:
        """One question at a time per thread, so a follow-up sees the previous turn; the lock is
        dropped when no question of that thread is waiting, so the table stays small."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def run_agent(self, question: str, channel: str, thread_ts: str) -> Answer | blocks.Rendered:
        """The agent's answer in the thread's conversation (saved after), or a short message when it failed."""
        try:
            return await self.answerer.answer(question, channel, thread_ts)
        except AgentError as exc:  # a user-fit reason (model unreachable, bad model setting)
            log.warning("slack: the agent could not answer: %s", exc)
            return blocks.notice(f"Sorry, I could not answer that: {exc}")
        except Exception:
            return self.failure("answering a Slack question")

    async def on_message(self, event: dict[str, Any], client: AsyncWebClient, event_id: str | None) -> None:
        """A mention or a DM: acknowledge, answer in the thread, upload charts."""
        if not self.first_time(event_id):
            return
        channel, user, ts = event.get("channel", ""), event.get("user"), event.get("ts", "")
        thread_ts = event.get("thread_ts") or ts
        reason = self.refusal(channel, user)
        if reason:
            log.info("slack: refused request from user %s in channel %s", user, channel)
            await client.chat_postEphemeral(channel=channel, user=user or "", text=reason, thread_ts=thread_ts)
            return
        question = question_text(event.get("text", ""))
        if not question:
            await client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=HELP)
            return
        try:
            await client.reactions_add(channel=channel, timestamp=ts, name=ACK_REACTION)
        except Exception as exc:  # already reacted, missing scope: the reply below still acknowledges
            log.warning("slack: reactions.add failed: %s", exc)
        looking = blocks.notice(LOOKING)
        placeholder = await client.chat_postMessage(
            channel=channel, thread_ts=thread_ts, text=looking.text, blocks=looking.blocks
        )
        async with self.thread_turn(thread_key(channel, thread_ts)):
            answer = await self.run_agent(question, channel, thread_ts)
        if isinstance(answer, blocks.Rendered):
            await self.update(client, channel, placeholder["ts"], answer)
            return
        rendered = blocks.answer_blocks(answer, self.link(channel, thread_ts))
        await self.update(client, channel, placeholder["ts"], rendered)
        await self.upload(client, channel, thread_ts, answer, rendered)

    async def on_command(self, command: dict[str, Any], ack: AsyncAck, respond: AsyncRespond,
                         client: AsyncWebClient) -> None:
        """`/otel-ai <question>`: an ephemeral ack at once, the answer through response_url."""
        channel, user = command.get("channel_id", ""), command.get("user_id")
        reason = self.refusal(channel, user)
        if reason:
            log.info("slack: refused command from user %s in channel %s", user, channel)
            await ack(text=reason)
            return
        question = question_text(command.get("text", ""))
        if not question:
            await ack(text=HELP)
            return
        await ack(text=f"{LOOKING}\n> {blocks.escape(question)}")
        # A command has no thread: it starts a conversation of its own (still openable in the chat UI).
        pseudo_ts = f"cmd-{uuid.uuid4().hex[:12]}"
        answer = await self.run_agent(question, channel, pseudo_ts)
        if isinstance(answer, blocks.Rendered):
            await respond(text=answer.text, blocks=answer.blocks, response_type="ephemeral")
            return
        rendered = blocks.answer_blocks(answer, self.link(channel, pseudo_ts))
        header = blocks.context(f"<@{user}> asked: {blocks.escape(question)}")
        sent = await respond(text=rendered.text, blocks=[header, *rendered.blocks], response_type="in_channel")
        if sent.status_code != 200:
            log.warning("slack: response_url refused the answer's blocks (%s %s); sending text only",
                        sent.status_code, sent.body)
            await respond(text=rendered.full_text, response_type="in_channel")
        await self.upload(client, channel, None, answer, rendered)

    async def update(self, client: AsyncWebClient, channel: str, ts: str, rendered: blocks.Rendered) -> None:
        """Replace the "looking…" reply; if Slack refuses the blocks, the answer still arrives as text."""
        try:
            await client.chat_update(channel=channel, ts=ts, text=rendered.text, blocks=rendered.blocks)
        except SlackApiError as exc:
            if exc.response.get("error") != "invalid_blocks":
                raise
            log.warning("slack: Slack refused the answer's blocks (%s); sending text only",
                        exc.response.get("response_metadata"))
            await client.chat_update(channel=channel, ts=ts, text=rendered.full_text, blocks=[])

    def link(self, channel: str, thread_ts: str) -> str:
        """The chat UI URL of this thread's conversation."""
        return blocks.chat_url(self.chat_base, thread_key(channel, thread_ts))

    def failure(self, doing: str) -> blocks.Rendered:
        """Log the exception with a reference; the user sees a short message with the same reference."""
        ref = uuid.uuid4().hex[:8]
        log.exception("slack: error %s (ref %s)", doing, ref)
        return blocks.notice(f"Sorry, something went wrong while answering (ref {ref}). "
                             "The details are in the otel-ai server log.")

    async def upload(self, client: AsyncWebClient, channel: str, thread_ts: str | None, answer: Answer,
                     rendered: blocks.Rendered) -> None:
        """Charts as PNG and the full evidence (when cut short) into the thread, files upload v2."""
        files = []
        for i, chart in enumerate(answer.charts[:MAX_CHARTS], 1):
            try:
                png = await asyncio.to_thread(render_chart, chart.figure)
            except Exception:
                log.exception("slack: could not render chart %r", chart.title)
                continue
            files.append({"file": png, "filename": f"otel-ai-chart-{i}.png", "title": chart.title})
        files += [{"file": f.content, "filename": f.filename, "title": f.title} for f in rendered.files]
        if not files:
            return
        try:
            await client.files_upload_v2(file_uploads=files, channel=channel, thread_ts=thread_ts)
        except Exception as exc:
            log.warning("slack: uploading %d file(s) to %s failed: %s", len(files), channel, exc)


def create_app(settings: Settings, answerer: Answerer, signing_secret: str | None = None,
               chat_base: str | None = None) -> tuple[AsyncApp, SlackBot]:
    """The bolt app with its listeners; HTTP mode passes the signing secret, Socket Mode does not need it."""
    bot = SlackBot(settings, answerer, chat_base)
    app = AsyncApp(
        token=settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None,
        signing_secret=signing_secret or "",
        request_verification_enabled=bool(signing_secret),
        process_before_response=False,
        name="otel-ai",
    )
    # every Web API client bolt makes per request copies this one's base_url (tests, proxies)
    app.client.base_url = web_client(settings).base_url

    @app.event("app_mention")
    async def app_mention(event: dict[str, Any], body: dict[str, Any], client: AsyncWebClient) -> None:
        await bot.on_message(event, client, body.get("event_id"))

    @app.event("message")
    async def direct_message(event: dict[str, Any], body: dict[str, Any], client: AsyncWebClient) -> None:
        if event.get("channel_type") != "im" or event.get("subtype") or event.get("bot_id"):
            return
        await bot.on_message(event, client, body.get("event_id"))

    @app.command("/otel-ai")
    async def slash(command: dict[str, Any], ack: AsyncAck, respond: AsyncRespond, client: AsyncWebClient) -> None:
        await bot.on_command(command, ack, respond, client)

    return app, bot
