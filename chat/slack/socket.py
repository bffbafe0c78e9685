"""Socket Mode: `otel-ai slack` connects out to Slack over a WebSocket, so no public URL is needed.

Needs SLACK_APP_TOKEN (xapp-..., connections:write) and SLACK_BOT_TOKEN (xoxb-...). Questions go
to a running `serve` over its HTTP API when a server URL is given (chDB allows one process per data
directory, so this is the way next to a serve holding the embedded store); otherwise this process
opens the store itself.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from otel_ai.settings import Settings
from store import Store, StorePool

log = logging.getLogger("chat.slack")


class SlackConfigError(RuntimeError):
    """Tokens missing or malformed: a message for the user, never the token itself."""


def check_tokens(settings: Settings) -> tuple[str, str]:
    """(app token, bot token) or a clear error naming what is missing."""
    missing = [name for name, value in (("SLACK_APP_TOKEN", settings.slack_app_token),
                                         ("SLACK_BOT_TOKEN", settings.slack_bot_token)) if not value]
    if missing:
        raise SlackConfigError(
            f"{' and '.join(missing)} not set: Socket Mode needs an app-level token (xapp-..., scope "
            "connections:write) and the bot token (xoxb-...); see docs/slack.md"
        )
    assert settings.slack_app_token and settings.slack_bot_token
    app_token = settings.slack_app_token.get_secret_value()
    if not app_token.startswith("xapp-"):
        raise SlackConfigError("SLACK_APP_TOKEN must be an app-level token starting with xapp- (see docs/slack.md)")
    return app_token, settings.slack_bot_token.get_secret_value()


async def run_socket_mode(settings: Settings, server_url: str | None = None) -> None:
    """Connect, answer until SIGINT/SIGTERM, then close the socket (and the store if opened here)."""
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
    from slack_sdk.errors import SlackApiError

    from chat.slack.answerers import Answerer, LocalAgent, RemoteAgent
    from chat.slack.bolt_app import create_app
    from store.migrations import migrate

    app_token, _ = check_tokens(settings)
    store = None if server_url else Store.from_settings(settings)
    queries: StorePool | None = None
    try:
        answerer: Answerer
        if store is None:
            assert server_url
            answerer = RemoteAgent(server_url)
            log.info("Slack questions go to %s/api/ask", server_url)
        else:
            migrate(store, settings)
            queries = StorePool(store, settings.sql_concurrency)
            answerer = LocalAgent(settings, store, queries=queries)
        app, _bot = create_app(settings, answerer, chat_base=server_url)
        handler = AsyncSocketModeHandler(app, app_token)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            # check both tokens first: the socket client itself would retry a refused app token forever
            checks = (("SLACK_BOT_TOKEN", app.client.auth_test), ("SLACK_APP_TOKEN", handler.client.issue_new_wss_url))
            for name, check in checks:
                try:
                    await check()
                except SlackApiError as exc:
                    raise SlackConfigError(f"Slack refused {name} ({exc.response.get('error')}): "
                                           "copy it again from the app's settings (see docs/slack.md)") from None
            await handler.connect_async()
            print("otel-ai Slack app connected (Socket Mode); Ctrl-C to stop", flush=True)
            await stop.wait()
        finally:
            await handler.close_async()
    finally:
        if queries is not None:
            queries.close()
        if store is not None:
            store.close()
