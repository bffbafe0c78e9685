"""`otel-ai sql "SELECT ..." [--server URL] [--data DIR] [--json]`: run SQL through the agent's guard.

A refused query exits 1 with the reason. When `--server` is given, or a running `otel-ai serve`
holds the embedded data directory, the query goes to its `POST /api/sql`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import httpx

from otel_ai.auth import client_headers
from otel_ai.commands.common import add_data_option, settings_from_args
from otel_ai.settings import Settings
from store import Store, StoreError
from tools.result import format_cell


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sql", help="run one read-only SELECT through the SQL guard")
    p.add_argument("query", help='e.g. "SELECT ServiceName, count() FROM otel_traces GROUP BY ServiceName"')
    p.add_argument("--server", help="URL of a running otel-ai serve (e.g. http://127.0.0.1:8000)")
    p.add_argument("--json", action="store_true", help="print {columns, rows, sql} as JSON")
    add_data_option(p)
    p.set_defaults(func=run)


def server_for_data(settings: Settings) -> str | None:
    """The URL of a local serve (settings host/port) whose store is our embedded data directory."""
    data_dir = settings.data_dir()
    if data_dir is None:
        return None
    url = f"http://{settings.host}:{settings.port}"
    try:
        health = httpx.get(f"{url}/healthz", timeout=2.0, headers=client_headers(settings)).json()
    except (httpx.HTTPError, ValueError):
        return None
    return url if health.get("store") == f"chdb://{data_dir}" else None


class Refused(Exception):
    """The guard or ClickHouse turned the query down; the message is the reason."""


def via_server(url: str, sql: str) -> dict[str, Any]:
    try:
        response = httpx.post(f"{url.rstrip('/')}/api/sql", json={"sql": sql}, timeout=120,
                              headers=client_headers())
    except httpx.HTTPError as exc:
        raise StoreError(f"cannot reach otel-ai at {url}: {exc}") from None
    try:
        body = response.json()
    except ValueError:
        raise StoreError(f"{url} answered {response.status_code}: {response.text[:300]}") from None
    if response.status_code != 200:
        raise Refused(body.get("error") or f"HTTP {response.status_code}")
    return body


def locally(args: argparse.Namespace) -> dict[str, Any]:
    from tools.sql import run_sql

    settings = settings_from_args(args)
    try:
        store = Store.from_settings(settings)
    except StoreError:
        url = server_for_data(settings)
        if url is None:
            raise
        return via_server(url, args.query)
    try:
        result = run_sql(store, args.query)
    finally:
        store.close()
    if not result.ok:
        raise Refused(result.error or "query failed")
    return {"columns": result.columns, "rows": result.rows, "sql": result.sql[0]}


def table(columns: list[str], rows: list[dict[str, Any]]) -> str:
    """Aligned plain text; cells are shortened like the model's view of the same result."""
    cells = [[format_cell(r.get(c), 60) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        body = via_server(args.server, args.query) if args.server else locally(args)
    except Refused as exc:
        print(f"refused: {exc}" if not str(exc).startswith(("refused", "query failed")) else str(exc),
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body, default=str))
    else:
        print(table(body["columns"], body["rows"]))
    return 0
