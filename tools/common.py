"""Helpers shared by the analytics tools: record the SQL they run, turn engine errors into results."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from store import QueryResult, Store
from tools.result import ToolResult
from tools.sql import error_message, query
from tools.timewindow import TimeWindow

ERROR = "StatusCode IN ('Error', 'STATUS_CODE_ERROR')"
# A span that receives work for its service: server/consumer kind, or a trace root. Migration 030's
# Entry column is this test too (tests/test_tools_rollup.py checks they agree).
ENTRY = "(SpanKind IN ('Server', 'Consumer', 'SPAN_KIND_SERVER', 'SPAN_KIND_CONSUMER') OR ParentSpanId = '')"


def tool_args(**kw: Any) -> dict[str, Any]:  # noqa: ANN401
    """A tool's arguments as JSON-friendly values (windows as {start, end}), Nones dropped."""
    return {k: (v.model_dump() if isinstance(v, TimeWindow) else v) for k, v in kw.items() if v is not None}


def run_tool(name: str, args: dict[str, Any], body: Callable[[list[str]], ToolResult]) -> ToolResult:
    """Run a tool body that logs its SQL into the list it gets; engine errors become ok=False results."""
    sql: list[str] = []
    try:
        return body(sql)
    except Exception as exc:
        return ToolResult.failure(name, args, f"query failed: {error_message(exc)}", sql=sql)


def logged_query(sql_log: list[str], store: Store, sql: str) -> QueryResult:
    """Run the tools' own SQL read-only and keep it as evidence."""
    sql_log.append(sql)
    return query(store, sql)


def in_either(window: TimeWindow, baseline: TimeWindow, column: str = "Timestamp") -> str:
    """`column` in the window or in the baseline (one scan serves both)."""
    return f"(({window.sql_filter(column)}) OR ({baseline.sql_filter(column)}))"


def in_window(window: TimeWindow, column: str = "Timestamp") -> str:
    """The window as a parenthesised boolean, for countIf/quantileIf splits."""
    return f"({window.sql_filter(column)})"
