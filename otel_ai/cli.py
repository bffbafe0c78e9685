"""The `otel-ai` command line: one subcommand module per verb under otel_ai/commands/."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from store import StoreError

# Each module defines `register(subparsers)`, which adds its parser and sets `func(args) -> int`.
COMMANDS = ["serve", "db", "slack", "otel_demo", "anomalies", "sim", "demo", "sql", "eval", "ask", "models"]


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with `argv` naming a command, only that command's module is imported (each pulls in its
    own dependencies: `ask --server` needs neither the simulator nor the store's server), else all, for
    the help and the error that list them."""
    parser = argparse.ArgumentParser(
        prog="otel-ai",
        description="AI-native observability: OTLP into ClickHouse, anomalies, and answers with evidence.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    first = next((a.replace("-", "_") for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")), "")
    for name in [first] if first in COMMANDS else COMMANDS:
        importlib.import_module(f"otel_ai.commands.{name}").register(sub)
    return parser


# Commands that run until stopped narrate what they do (receivers bound, model restored) at INFO; the
# others print their result and only warnings besides, unless -v.
LONG_RUNNING = {"serve", "demo", "slack", "sim", "otel-demo"}


def setup_logging(command: str | None, verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.INFO if command in LONG_RUNNING else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request (health polls) is not news


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    setup_logging(args.command, args.verbose)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `otel-ai ask ... | head -3`: the reader left; no traceback, nothing more to write
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a writer the pipe stopped


if __name__ == "__main__":
    sys.exit(main())
