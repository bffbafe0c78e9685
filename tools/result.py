"""`ToolResult`: what every tool returns — full rows for charts and a compact, fenced summary for a model.

Telemetry is untrusted input (span names, log bodies and attribute values are written by whoever
sends OTLP). Everything derived from the data goes inside a `<telemetry-data>` block, and any such
marker inside a value is escaped, so a model can be told to treat that block as data, never as
instructions.
"""

from __future__ import annotations

import datetime as dt
import decimal
import ipaddress
import math
import re
import uuid
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

# A model's summary budget: ~2,000 tokens at ~4 characters per token.
DEFAULT_BUDGET_CHARS = 8_000
MAX_CELL_CHARS = 120
OPEN_MARK = "<telemetry-data>"
CLOSE_MARK = "</telemetry-data>"
_MARK_RE = re.compile(r"<(\s*/?\s*telemetry-data)", re.IGNORECASE)


class ToolResult(BaseModel):
    """One tool call's outcome: `summary` for the model, `columns`/`rows` whole for charts and UIs."""

    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    sql: list[str] = Field(default_factory=list)
    summary: str = ""
    columns: list[str] = Field(default_factory=list)
    rows: list[dict[str, Any]] = Field(default_factory=list)
    ok: bool = True
    error: str | None = None
    # Units of numeric columns ("ms", "%", "/s", "bytes"), used for chart axis labels.
    units: dict[str, str] = Field(default_factory=dict)
    # Tool-specific structured extras (e.g. exemplar waterfalls keyed by trace id).
    details: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def failure(cls, name: str, args: dict[str, Any], error: str, sql: Sequence[str] = ()) -> ToolResult:
        """A refused or failed call: the reason goes back to the model so it can correct itself."""
        return cls(
            name=name,
            args=jsonable(args),
            sql=list(sql),
            ok=False,
            error=error,
            summary=f"{name} failed: {escape_markers(error)}",
        )

    @classmethod
    def build(
        cls,
        name: str,
        args: dict[str, Any],
        sql: Sequence[str],
        columns: Sequence[str],
        rows: Sequence[dict[str, Any]],
        findings: Sequence[str] = (),
        notes: Sequence[str] = (),
        units: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
        budget_chars: int = DEFAULT_BUDGET_CHARS,
        table_columns: Sequence[str] | None = None,
    ) -> ToolResult:
        """Assemble a result: findings + a compact table inside the untrusted-data fence, then notes."""
        clean_rows = [{k: jsonable(v) for k, v in r.items()} for r in rows]
        summary = summarize(
            name,
            list(table_columns or columns),
            clean_rows,
            findings=findings,
            notes=notes,
            budget_chars=budget_chars,
        )
        return cls(
            name=name,
            args=jsonable(args),
            sql=list(sql),
            summary=summary,
            columns=list(columns),
            rows=clean_rows,
            units=dict(units or {}),
            details=jsonable(details or {}),
        )


def escape_markers(text: str) -> str:
    """Neutralise any `<telemetry-data>`-like marker inside untrusted text."""
    return _MARK_RE.sub(r"&lt;\1", text)


def jsonable(value: Any) -> Any:  # noqa: ANN401
    """ClickHouse values into JSON-friendly Python (datetimes stay datetimes; pydantic serialises them)."""
    if value is None or isinstance(value, (bool, int, str, dt.datetime, dt.date)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (uuid.UUID, ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if hasattr(value, "model_dump"):
        return jsonable(value.model_dump())
    return str(value)


def format_cell(value: Any, max_chars: int = MAX_CELL_CHARS) -> str:  # noqa: ANN401
    """One value as short single-line text for a model's table."""
    if value is None:
        return ""
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e7:
            text = f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
        else:
            text = f"{value:.3g}"
    elif isinstance(value, dt.datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S")
    elif isinstance(value, (list, dict)):
        text = str(value)
    else:
        text = str(value)
    text = text.replace("\r", " ").replace("\n", "\\n").replace("|", "/")
    if len(text) > max_chars:
        text = text[: max_chars - 1] + "…"
    return escape_markers(text)


def compact_table(columns: Sequence[str], rows: Sequence[dict[str, Any]], budget_chars: int) -> tuple[str, int]:
    """A pipe-separated table of as many leading rows as fit the budget; returns (text, rows shown)."""
    if not rows:
        return "(no rows)", 0
    lines = [" | ".join(columns)]
    used = len(lines[0]) + 1
    shown = 0
    for row in rows:
        line = " | ".join(format_cell(row.get(c)) for c in columns)
        if used + len(line) + 1 > budget_chars and shown > 0:
            break
        lines.append(line)
        used += len(line) + 1
        shown += 1
    return "\n".join(lines), shown


def summarize(
    name: str,
    columns: list[str],
    rows: Sequence[dict[str, Any]],
    findings: Sequence[str] = (),
    notes: Sequence[str] = (),
    budget_chars: int = DEFAULT_BUDGET_CHARS,
) -> str:
    """Findings and the leading rows within `budget_chars`, fenced as untrusted telemetry data."""
    head = "\n".join(escape_markers(f) for f in findings)
    room = max(budget_chars - len(head) - 200, 400)
    table, shown = compact_table(columns, rows, room)
    parts = [f"{name}: {len(rows)} row(s)"]
    body = (head + "\n" if head else "") + table
    parts.append(f"{OPEN_MARK}\n{body}\n{CLOSE_MARK}")
    if shown < len(rows):
        parts.append(f"(showing the first {shown} of {len(rows)} rows; the full result is kept for charts)")
    parts.extend(notes)
    return "\n".join(parts)
