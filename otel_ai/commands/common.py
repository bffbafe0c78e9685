"""Options shared by several subcommands."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime

from otel_ai.settings import Settings, load_settings

# Characters a terminal acts on rather than shows: C0 controls but newline and tab (ESC starts colour,
# cursor moves, OSC 8 links and OSC 52 clipboard writes; CR overwrites a line), DEL, C1 controls
# (U+009B is a one-character CSI) and the bidi overrides that reorder what is shown ("Trojan Source").
_TERMINAL_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def terminal_text(text: str) -> str:
    """`text` safe to print on a terminal: every control character it contains is shown as an escape
    (`\\x1b`, `\\u202e`) instead of acting. Telemetry (span names, log lines, status messages) is
    written by whoever exports it and reaches answers, tables and anomaly lists verbatim."""
    return _TERMINAL_CONTROLS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def add_data_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help="embedded data directory (same as OTEL_AI_CLICKHOUSE_URL=chdb://DIR)")
    parser.add_argument("--clickhouse-url", help="ClickHouse URL (chdb://DIR or http(s)://user:pass@host:8123/db)")
    parser.add_argument("--database", help="database holding the otel_* tables (default: otel)")


def settings_from_args(args: argparse.Namespace, **overrides: object) -> Settings:
    url = getattr(args, "clickhouse_url", None)
    if getattr(args, "data", None):
        url = f"chdb://{args.data}"
    return load_settings(clickhouse_url=url, database=getattr(args, "database", None), **overrides)


def iso_time(text: str, option: str, hint: str = "an ISO time like 2026-11-28T14:06") -> datetime:
    """An ISO time given to `option`, read as UTC when it names no zone."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad {option} {text!r}: use {hint}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
