"""`otel-ai sql "SELECT ..." [--server URL] [--data DIR] [--json]`: run SQL through the agent's guard.

A refused query exits 1 with the reason. When `--server` is given, or the `otel-ai serve` at the
configured host and port holds our store, the query goes to its `POST /api/sql`; else it runs here.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from otel_ai.commands.common import add_data_option, settings_from_args, terminal_text
from otel_ai.commands.remote import Server, ServerError, find_server, open_store
from otel_ai.settings import Settings
from store import StoreError
from tools.result import format_cell


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sql", help="run one read-only SELECT through the SQL guard")
    p.add_argument("query", help='e.g. "SELECT ServiceName, count() FROM otel_traces GROUP BY ServiceName"')
    p.add_argument("--server", help="URL of a running otel-ai serve (e.g. http://127.0.0.1:8000)")
    p.add_argument("--json", action="store_true", help="print {columns, rows, sql} as JSON")
    add_data_option(p)
    p.set_defaults(func=run)


class Refused(Exception):
    """The guard or ClickHouse turned the query down; the message is the reason."""


def via_server(server: Server, sql: str) -> dict[str, Any]:
    try:
        return server.call("POST", "/api/sql", json={"sql": sql})
    except ServerError as exc:
        if exc.status == 400:  # the guard's or ClickHouse's reason
            raise Refused(str(exc)) from None
        raise StoreError(str(exc)) from None


def locally(settings: Settings, sql: str) -> dict[str, Any]:
    from tools.sql import run_sql

    store = open_store(settings, "`otel-ai sql`", "pass --server URL of the otel-ai serve that holds it")
    try:
        result = run_sql(store, sql)
    finally:
        store.close()
    if not result.ok:
        raise Refused(result.error or "query failed")
    return {"columns": result.columns, "rows": result.rows, "sql": result.sql[0]}


def table(columns: list[str], rows: list[dict[str, Any]]) -> str:
    """Aligned plain text; cells are shortened like the model's view of the same result, and their
    control characters shown as escapes (telemetry must not drive the terminal)."""
    cells = [[terminal_text(format_cell(r.get(c), 60)) for c in columns] for r in rows]
    columns = [terminal_text(c) for c in columns]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    server = find_server(settings, args.server)
    try:
        body = via_server(server, args.query) if server else locally(settings, args.query)
    except Refused as exc:
        print(terminal_text(f"refused: {exc}" if not str(exc).startswith(("refused", "query failed")) else str(exc)),
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body, default=str))
    else:
        print(table(body["columns"], body["rows"]))
    return 0
