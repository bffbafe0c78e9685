"""`otel-ai slack`: the Slack app in Socket Mode (no public URL needed)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from otel_ai.commands.common import add_data_option, settings_from_args
from otel_ai.commands.remote import ensure_free, find_server


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "slack",
        help="run the Slack app in Socket Mode (SLACK_APP_TOKEN, SLACK_BOT_TOKEN)",
        description="Answer Slack mentions, DMs and /otel-ai over Socket Mode. For HTTP mode, set "
        "SLACK_SIGNING_SECRET and SLACK_BOT_TOKEN for `otel-ai serve` instead (see docs/slack.md).",
    )
    add_data_option(p)
    p.add_argument("--server", help="URL of a running otel-ai serve to send questions to (default: the local "
                   "serve holding --data, if one runs; else this process opens the store)")
    p.add_argument("--public-url", help="URL of the chat UI for 'open in chat' links (OTEL_AI_PUBLIC_URL)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from chat.slack.socket import SlackConfigError, check_tokens, run_socket_mode

    settings = settings_from_args(args, public_url=args.public_url)
    try:
        check_tokens(settings)
    except SlackConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = find_server(settings, args.server)
    if server is None:
        ensure_free(settings, "`otel-ai slack`", "pass --server URL of the otel-ai serve that holds it")
    try:
        asyncio.run(run_socket_mode(settings, server.url if server else None))
    except SlackConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
