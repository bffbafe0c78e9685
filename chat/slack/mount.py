"""HTTP mode: `POST /slack/events` on serve's FastAPI app (Events API, slash commands, interactivity).

Mounted only when both SLACK_SIGNING_SECRET and SLACK_BOT_TOKEN are set. Bolt verifies every
request's signature (v0 HMAC-SHA256 over timestamp and body, at most 5 minutes old) before any
listener runs: a missing, wrong or stale signature gets 401 and nothing else happens.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, Response

from otel_ai.context import ServerContext

log = logging.getLogger("chat.slack")

EVENTS_PATH = "/slack/events"


def mount(app: FastAPI, ctx: ServerContext) -> None:
    settings = ctx.settings
    if not (settings.slack_signing_secret and settings.slack_bot_token):
        if settings.slack_signing_secret or settings.slack_bot_token:
            missing = "SLACK_BOT_TOKEN" if settings.slack_signing_secret else "SLACK_SIGNING_SECRET"
            log.warning("Slack HTTP mode off: %s is not set (both it and the other one are needed)", missing)
        log.debug("Slack HTTP mode off: set SLACK_SIGNING_SECRET and SLACK_BOT_TOKEN to enable %s", EVENTS_PATH)
        return
    from slack_bolt.adapter.fastapi.async_handler import AsyncSlackRequestHandler

    from chat.slack.answerers import LocalAgent
    from chat.slack.bolt_app import create_app

    secret = settings.slack_signing_secret.get_secret_value()
    bolt, bot = create_app(settings, LocalAgent(settings, ctx.store, queries=ctx.queries), signing_secret=secret)
    ctx.state["slack"] = bot
    handler = AsyncSlackRequestHandler(bolt)

    @app.post(EVENTS_PATH, include_in_schema=False)
    async def slack_events(request: Request) -> Response:
        return await handler.handle(request)

    log.info("Slack HTTP mode on: events, commands and interactivity at %s", EVENTS_PATH)
