"""The tables a model may query, with their columns, as compact text for a system prompt."""

from __future__ import annotations

from collections import defaultdict

from store import Store
from tools.sql import TELEMETRY_TABLES, query

NOTES = """Notes: Timestamp columns are UTC DateTime64(9); Duration is UInt64 NANOSECONDS (divide by 1e6 for ms).
StatusCode is 'Error' / 'Ok' / 'Unset'. Attributes are Map(String, String): SpanAttributes['http.route'],
ResourceAttributes['k8s.pod.name']. Parent/child: child.ParentSpanId = parent.SpanId within one TraceId.
Logs: SeverityNumber >= 17 is error level. Metrics: MetricName/MetricUnit, Value, TimeUnix; sums have
IsMonotonic and AggregationTemporality (2 = cumulative). otel_traces_1m: spans per minute (Minute) and
ServiceName, SpanName, Entry (1 = server/consumer/root span), kept current at ingest: sum(Calls), sum(Errors),
sum(DurationSum), max(DurationMax), quantilesMerge(0.5, 0.9, 0.95, 0.99)(DurationQuantiles): fast for
counts, rates and latency over long ranges. Only SELECT over these tables is allowed; no
table functions, system tables or SETTINGS; results are capped at 10,000 rows (LIMIT 200 by default)."""

# Long nested types add little for a model: show their shape only.
_MAX_TYPE = 60


def describe_tables(store: Store) -> str:
    """`table: col Type, col Type, ...` for every table the SQL guard allows that exists, plus notes."""
    rows = query(store, "SELECT table, name, type FROM system.columns WHERE database = currentDatabase() "
                        "ORDER BY table, position").rows
    columns: dict[str, list[str]] = defaultdict(list)
    for table, name, type_ in rows:
        if table in TELEMETRY_TABLES:
            short = type_ if len(type_) <= _MAX_TYPE else type_[: _MAX_TYPE - 1] + "…"
            columns[table].append(f"{name} {short}")
    if not columns:
        return "No telemetry tables yet (the otel_* tables appear once the schema is migrated).\n" + NOTES
    lines = [f"{table}: {', '.join(cols)}" for table, cols in sorted(columns.items())]
    return "\n".join(lines) + "\n" + NOTES
