"""Aggregates for the questions SREs ask besides "why": a measure by service or operation, a measure over
time, one period against another, the versions each service ran, and logs by service, severity or text.

Measures are computed exactly in ClickHouse (quantileExactInclusive, as `service_stats`), over a
service's entry spans (server/consumer spans or trace roots; all its spans when it has none) or over
the spans of an operation, so an answer's numbers can be checked with one SQL query. Names come from
the data; nothing here knows a service, an operation or a metric.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from store import Store
from store.severity import SEVERITY, level_of
from tools.common import ENTRY, ERROR, in_either, in_window, logged_query, run_tool, tool_args
from tools.logs import MASK_RE
from tools.result import ToolResult
from tools.sql import TELEMETRY_TABLES, literal
from tools.timewindow import TimeWindow, ch_time

# measure -> (SQL over a group's spans, unit, words a person uses)
MEASURES: dict[str, tuple[str, str, str]] = {
    "p50_ms": ("quantileExactInclusive(0.5)(Duration) / 1e6", "ms", "median (p50) latency"),
    "p90_ms": ("quantileExactInclusive(0.9)(Duration) / 1e6", "ms", "p90 latency"),
    "p95_ms": ("quantileExactInclusive(0.95)(Duration) / 1e6", "ms", "p95 latency"),
    "p99_ms": ("quantileExactInclusive(0.99)(Duration) / 1e6", "ms", "p99 latency"),
    "avg_ms": ("avg(Duration) / 1e6", "ms", "average latency"),
    "max_ms": ("max(Duration) / 1e6", "ms", "maximum latency"),
    "error_pct": (f"100 * countIf({ERROR}) / count()", "%", "error rate"),
    "errors": (f"countIf({ERROR})", "", "failed requests"),
    "requests": ("count()", "", "requests"),
    "rate_per_s": ("count() / {seconds}", "/s", "throughput"),
}
# Operations with fewer spans than this in the window are left out of "slowest operations" (one slow
# call is not an operation's latency).
MIN_CALLS = 5
MAX_ROWS = 50


def measure_sql(measure: str, seconds: float) -> str:
    """The SQL expression of `measure` over a group's spans in a window `seconds` long."""
    return MEASURES[measure][0].replace("{seconds}", f"{max(seconds, 1e-9):.6f}")


def label(measure: str) -> str:
    return MEASURES[measure][2]


def unit(measure: str) -> str:
    return MEASURES[measure][1]


def _num(value: Any) -> float | None:  # noqa: ANN401
    if value is None:
        return None
    f = float(value)
    return None if math.isnan(f) or math.isinf(f) else f


def _scope(service: str | None, operation: str | None) -> str:
    return (f" AND ServiceName = {literal(service)}" if service else "") + (
        f" AND SpanName = {literal(operation)}" if operation else "")


def measure_by(
    store: Store, window: TimeWindow, measure: str = "p95_ms", by: str = "service", service: str | None = None,
    limit: int = 20,
) -> ToolResult:
    """`measure` per service (entry spans) or per operation (its spans, at least MIN_CALLS of them), highest
    first, with requests, error %, throughput and p50/p95/p99 beside it: the table and bar chart behind
    "p95 by service", "error rate per service", "slowest operations"."""
    name = "measure_by"
    args = tool_args(window=window, measure=measure, by=by, service=service, limit=limit)
    if measure not in MEASURES:
        return ToolResult.failure(name, args, f"unknown measure {measure!r} (known: {', '.join(MEASURES)})")
    if by not in ("service", "operation"):
        return ToolResult.failure(name, args, "by must be 'service' or 'operation'")
    limit = max(1, min(int(limit), MAX_ROWS))
    cols = ("requests", "error_pct", "rate_per_s", "p50_ms", "p95_ms", "p99_ms")
    wanted = [measure, *[c for c in cols if c != measure]]

    def body(sql: list[str]) -> ToolResult:
        exprs = ", ".join(f"{measure_sql(m, window.seconds)} AS {m}" for m in wanted)
        if by == "service":
            got = logged_query(sql, store, f"""SELECT ServiceName AS service, toUInt8{ENTRY} AS entry, {exprs}
                FROM otel_traces WHERE {window.sql_filter()}{_scope(service, None)}
                GROUP BY service, entry""").dicts()
            # a service's entry spans when it has any, else all its spans
            picked: dict[str, dict[str, Any]] = {}
            has_entry = {r["service"] for r in got if r["entry"]}
            for r in got:
                if bool(r["entry"]) == (r["service"] in has_entry):
                    picked[r["service"]] = r
            groups = list(picked.values())
            if any(r["service"] not in has_entry for r in groups):
                # services without entry spans: all their spans, measured together
                rest = [r["service"] for r in groups if r["service"] not in has_entry]
                whole = logged_query(sql, store, f"""SELECT ServiceName AS service, 0 AS entry, {exprs}
                    FROM otel_traces WHERE {window.sql_filter()} AND ServiceName IN ({', '.join(map(literal, rest))})
                    GROUP BY service""").dicts()
                groups = [r for r in groups if r["service"] in has_entry] + whole
        else:
            # failures are counted wherever they are (a rarely called endpoint that fails is news); a rate or a
            # percentile needs a few calls to mean anything
            having = "errors > 0" if measure == "errors" else f"count() >= {MIN_CALLS}"
            groups = logged_query(sql, store, f"""SELECT ServiceName AS service, SpanName AS operation, {exprs}
                FROM otel_traces WHERE {window.sql_filter()}{_scope(service, None)}
                GROUP BY service, operation HAVING {having}""").dicts()
        rows = []
        for g in groups:
            row: dict[str, Any] = {"service": g["service"]}
            if by == "operation":
                row["operation"] = g["operation"]
            row.update({m: _num(g[m]) for m in wanted})
            row["requests"] = int(row["requests"] or 0)
            rows.append(row)
        rows.sort(key=lambda r: (-(r[measure] if r[measure] is not None else -math.inf),
                                 r["service"], r.get("operation", "")))
        rows = rows[:limit]
        scope = f" of {service}" if service else ""
        if not rows:
            return ToolResult.build(name, args, sql, [], [], notes=[f"no spans{scope} in {window.label()}"])
        what = ("entry spans per service" if by == "service" else f"operations{scope} with failed spans"
                if measure == "errors" else f"operations{scope} with >= {MIN_CALLS} calls")
        findings = [f"{label(measure)} per {by} in {window.label()} ({what}), highest first"]
        findings += [f"{r['service']}{' ' + r['operation'] if by == 'operation' else ''}: "
                     f"{label(measure)} {fmt(measure, r[measure])} over {r['requests']} requests" for r in rows[:10]]
        x = "service" if by == "service" else "operation"
        return ToolResult.build(
            name, args, sql, list(rows[0].keys()), rows, findings=findings,
            units={m: unit(m) for m in wanted if unit(m)},
            details={"measure": measure, "by": by, "chart": {"x": x, "y": measure, "kind": "bar"}},
        )

    return run_tool(name, args, body)


def fmt(measure: str, value: float | None) -> str:
    """A measure as an answer states it (the same figure the tool's rows hold, rounded for reading)."""
    if value is None:
        return "n/a"
    u = unit(measure)
    if measure in ("requests", "errors"):
        return f"{int(value)}"
    if u == "%":
        return f"{value:.2f}%"
    if u == "/s":
        return f"{value:.3g}/s"
    return f"{value:.1f} ms" if value < 10_000 else f"{value / 1000:.2f} s"


def step_for(window: TimeWindow) -> int:
    """Seconds per point of a time series: one a minute up to an hour, then about 60 points."""
    seconds = window.seconds
    if seconds <= 3600:
        return 60
    return int(math.ceil(seconds / 60 / 60) * 60)


def measure_series(
    store: Store, window: TimeWindow, measure: str = "p95_ms", service: str | None = None,
    operation: str | None = None,
) -> ToolResult:
    """`measure` per time step (a minute up to an hour) of a service's entry spans, an operation's spans, or
    every trace's root span: the line chart behind "latency of checkout over the last hour", "errors per
    minute". Counts are per step (`requests`, `errors` per minute at one-minute steps)."""
    name = "measure_series"
    args = tool_args(window=window, measure=measure, service=service, operation=operation)
    if measure not in MEASURES:
        return ToolResult.failure(name, args, f"unknown measure {measure!r} (known: {', '.join(MEASURES)})")
    step = step_for(window)

    def body(sql: list[str]) -> ToolResult:
        if operation:
            scope = _scope(service, operation)
        elif service:
            scope = _scope(service, None) + f" AND {ENTRY}"
        else:
            scope = " AND ParentSpanId = ''"
        got = logged_query(sql, store, f"""SELECT toStartOfInterval(Timestamp, INTERVAL {step} SECOND) AS time,
                {measure_sql(measure, step)} AS {measure}, count() AS requests
            FROM otel_traces WHERE {window.sql_filter()}{scope}
            GROUP BY time ORDER BY time
                WITH FILL FROM toDateTime(toStartOfInterval({ch_time(window.start)}, INTERVAL {step} SECOND), 'UTC')
                TO toDateTime({ch_time(window.end)}, 'UTC') STEP INTERVAL {step} SECOND""").dicts()
        rows = [{"time": r["time"], measure: _num(r[measure]) if r["requests"] else
                 (0.0 if measure in ("requests", "errors", "rate_per_s") else None),
                 "requests": int(r["requests"])} for r in got]
        subject = f"{service} {operation}" if service and operation else service or operation or "all traces"
        values = [r[measure] for r in rows if r[measure] is not None]
        if not values:
            return ToolResult.build(name, args, sql, [], [], notes=[f"no spans of {subject} in {window.label()}"])
        peak = max((r for r in rows if r[measure] is not None), key=lambda r: r[measure])
        findings = [f"{label(measure)} of {subject} every {step // 60} min in {window.label()}: "
                    f"first {fmt(measure, values[0])}, last {fmt(measure, values[-1])}, "
                    f"peak {fmt(measure, peak[measure])} at {peak['time']:%H:%M} UTC"]
        return ToolResult.build(
            name, args, sql, ["time", measure, "requests"], rows, findings=findings,
            units={measure: unit(measure)} if unit(measure) else {},
            details={"measure": measure, "step_s": step, "subject": subject,
                     "chart": {"x": "time", "y": measure, "kind": "line"}},
        )

    return run_tool(name, args, body)


def compare_periods(
    store: Store, window: TimeWindow, reference: TimeWindow, measure: str = "p95_ms", service: str | None = None,
) -> ToolResult:
    """`measure` per service (entry spans) in `window` and in `reference` side by side, with the change:
    "now vs an hour ago", "compared with yesterday", "before 10:30"."""
    name = "compare_periods"
    args = tool_args(window=window, reference=reference, measure=measure, service=service)
    if measure not in MEASURES:
        return ToolResult.failure(name, args, f"unknown measure {measure!r} (known: {', '.join(MEASURES)})")

    def body(sql: list[str]) -> ToolResult:
        now = measure_by(store, window, measure, "service", service, limit=MAX_ROWS)
        before = measure_by(store, reference, measure, "service", service, limit=MAX_ROWS)
        sql += now.sql + before.sql
        for r in (now, before):
            if not r.ok:
                return ToolResult.failure(name, args, r.error or "query failed", sql=sql)
        past = {r["service"]: r for r in before.rows}
        rows = []
        for r in now.rows:
            b = past.get(r["service"], {})
            v, w = r[measure], b.get(measure)
            rows.append({"service": r["service"], "now": v, "before": w,
                         "change_pct": 100.0 * (v - w) / w if v is not None and w else None,
                         "requests_now": r["requests"], "requests_before": b.get("requests", 0)})
        for s, b in past.items():
            if s not in {r["service"] for r in rows}:
                rows.append({"service": s, "now": None, "before": b[measure], "change_pct": None,
                             "requests_now": 0, "requests_before": b["requests"]})
        rows.sort(key=lambda r: -abs(r["change_pct"] or 0))
        if not rows:
            return ToolResult.build(name, args, sql, [], [], notes=[
                f"no spans in {window.label()} nor in {reference.label()}"])
        findings = [f"{label(measure)} in {window.label()} vs {reference.label()}, biggest change first"]
        findings += [f"{r['service']}: {fmt(measure, r['before'])} -> {fmt(measure, r['now'])}"
                     + (f" ({r['change_pct']:+.0f}%)" if r["change_pct"] is not None else "") for r in rows[:10]]
        return ToolResult.build(name, args, sql, list(rows[0].keys()), rows, findings=findings,
                                units={"now": unit(measure), "before": unit(measure), "change_pct": "%"},
                                details={"measure": measure, "chart": {"x": "service", "y": "now", "kind": "bar"}})

    return run_tool(name, args, body)


VERSION_KEYS = ("service.version", "deployment.version", "k8s.deployment.revision", "deployment.id")


def versions_seen(store: Store, window: TimeWindow, baseline: TimeWindow) -> ToolResult:
    """Per service, the versions its spans carry (OpenTelemetry resource attributes such as service.version)
    in the window and before it, with when each was first and last seen: new versions are deployments."""
    name = "versions_seen"
    args = tool_args(window=window, baseline=baseline)
    keys = ", ".join(literal(k) for k in VERSION_KEYS)

    def body(sql: list[str]) -> ToolResult:
        got = logged_query(sql, store, f"""SELECT ServiceName AS service, key, ResourceAttributes[key] AS version,
                countIf({window.sql_filter()}) AS spans_now, countIf({baseline.sql_filter()}) AS spans_before,
                min(Timestamp) AS first_seen, max(Timestamp) AS last_seen
            FROM otel_traces ARRAY JOIN [{keys}] AS key
            WHERE Timestamp >= {ch_time(baseline.start)} AND Timestamp < {ch_time(window.end)}
              AND ResourceAttributes[key] != ''
            GROUP BY service, key, version ORDER BY service, first_seen LIMIT 500""").dicts()
        rows = []
        for r in got:
            status = "new" if r["spans_now"] and not r["spans_before"] else (
                "gone" if r["spans_before"] and not r["spans_now"] else "steady")
            rows.append({"service": r["service"], "attribute": r["key"], "version": r["version"],
                         "status": status, "spans_now": int(r["spans_now"]), "spans_before": int(r["spans_before"]),
                         "first_seen": r["first_seen"], "last_seen": r["last_seen"]})
        if not rows:
            return ToolResult.build(name, args, sql, [], [], notes=[
                f"no version attributes ({', '.join(VERSION_KEYS)}) on spans in {baseline.start:%H:%M}–"
                f"{window.end:%H:%M} UTC"])
        changed = [r for r in rows if r["status"] != "steady"]
        findings = [f"{len({r['service'] for r in rows})} services report versions; "
                    f"{len(changed)} version changes in {window.label()} against {baseline.label()}"]
        findings += [f"{r['service']} {r['attribute']}={r['version']} {r['status']} (first seen "
                     f"{r['first_seen']:%H:%M:%S} UTC, {r['spans_now']} spans now, {r['spans_before']} before)"
                     for r in changed[:10]]
        rows.sort(key=lambda r: (r["status"] == "steady", r["service"]))
        return ToolResult.build(name, args, sql, list(rows[0].keys()), rows, findings=findings,
                                table_columns=["service", "attribute", "version", "status", "spans_now",
                                               "spans_before", "first_seen"])

    return run_tool(name, args, body)


# every metric type's table, from the one list of telemetry tables
METRIC_POINT_TABLES = tuple(sorted(t for t in TELEMETRY_TABLES if t.startswith("otel_metrics_")))


def telemetry_volume(store: Store, window: TimeWindow, baseline: TimeWindow) -> ToolResult:
    """How much telemetry the window holds, against the baseline: traces, spans and the services sending
    them, log lines, metric points (every metric type), each as a count and per minute ("how many traces in
    the last hour?", "how much data do we get?")."""
    name = "telemetry_volume"
    args = tool_args(window=window, baseline=baseline)
    now, before = in_window(window), in_window(baseline)

    def body(sql: list[str]) -> ToolResult:
        spans = logged_query(sql, store, f"""SELECT uniqExactIf(TraceId, {now}) AS traces,
                uniqExactIf(TraceId, {before}) AS traces_base, countIf({now}) AS spans,
                countIf({before}) AS spans_base, uniqExactIf(ServiceName, {now}) AS services,
                uniqExactIf(ServiceName, {before}) AS services_base
            FROM otel_traces WHERE {in_either(window, baseline)}""").dicts()[0]
        logs = logged_query(sql, store, f"""SELECT countIf({now}) AS n, countIf({before}) AS n_base
            FROM otel_logs WHERE {in_either(window, baseline)}""").dicts()[0]
        points = logged_query(sql, store, " UNION ALL ".join(
            f"SELECT countIf({in_window(window, 'TimeUnix')}) AS n, countIf({in_window(baseline, 'TimeUnix')}) "
            f"AS n_base FROM {table} WHERE {in_either(window, baseline, 'TimeUnix')}"
            for table in METRIC_POINT_TABLES)).dicts()
        minutes = max((window.end - window.start).total_seconds() / 60, 1 / 60)
        minutes_base = max((baseline.end - baseline.start).total_seconds() / 60, 1 / 60)
        counts = [("traces", spans["traces"], spans["traces_base"]), ("spans", spans["spans"], spans["spans_base"]),
                  ("services sending spans", spans["services"], spans["services_base"]),
                  ("log lines", logs["n"], logs["n_base"]),
                  ("metric points", sum(int(p["n"]) for p in points), sum(int(p["n_base"]) for p in points))]
        rows = [{"signal": what, "count": int(n), "per_min": None if what.startswith("services") else
                 round(int(n) / minutes, 1), "count_base": int(n_base), "per_min_base": None if
                 what.startswith("services") else round(int(n_base) / minutes_base, 1)} for what, n, n_base in counts]
        findings = [f"{r['count']} {r['signal']} in {window.label()}" + (
            f" ({r['per_min']}/min; {r['per_min_base']}/min before)" if r["per_min"] is not None else "")
            for r in rows]
        return ToolResult.build(name, args, sql, list(rows[0].keys()), rows, findings=findings,
                                table_columns=["signal", "count", "per_min", "per_min_base"])

    return run_tool(name, args, body)


def logs_matching(
    store: Store, window: TimeWindow, service: str | None = None, min_severity: str | None = None,
    text: str | None = None, limit: int = 20, reference: TimeWindow | None = None,
) -> ToolResult:
    """Logs in the window by service, severity and pattern (numbers, ids and hex masked), most frequent first,
    filtered by service, lowest severity ("error": ERROR and above) and text (case-insensitive), with an
    example line and trace id per pattern; details['totals'] counts per service and severity. With a
    `reference` period each row and total also has `before`, its count there ("are these errors new?"), and
    patterns logged only then are listed too (after the window's)."""
    name = "logs_matching"
    args = tool_args(window=window, service=service, min_severity=min_severity, text=text, limit=limit,
                     reference=reference)
    level = level_of(min_severity or "")
    limit = max(1, min(int(limit), MAX_ROWS))
    now = in_window(window)
    both = in_either(window, reference) if reference else now
    counts = f"countIf({now}) AS count" + (f", countIf({in_window(reference)}) AS before" if reference else "")

    def body(sql: list[str]) -> ToolResult:
        flt = f" AND ServiceName = {literal(service)}" if service else ""
        if level:  # the level the record states anywhere: number, text or body (store.severity)
            flt += f" AND {SEVERITY} >= {level}"
        if text:
            flt += f" AND positionCaseInsensitiveUTF8(Body, {literal(text)}) > 0"
        order = "count DESC" + (", before DESC" if reference else "")
        totals = logged_query(sql, store, f"""SELECT ServiceName AS service, upper(SeverityText) AS severity,
                {counts} FROM otel_logs WHERE {both}{flt}
            GROUP BY service, severity ORDER BY {order} LIMIT 200""").dicts()
        got = logged_query(sql, store, f"""SELECT ServiceName AS service, upper(SeverityText) AS severity,
                replaceRegexpAll(leftUTF8(Body, 400), {literal(MASK_RE)}, '<*>') AS pattern, {counts},
                if(count > 0, anyIf(leftUTF8(Body, 300), {now}), any(leftUTF8(Body, 300))) AS example,
                if(count > 0, anyIf(TraceId, TraceId != '' AND {now}), anyIf(TraceId, TraceId != '')) AS trace_id
            FROM otel_logs WHERE {both}{flt}
            GROUP BY service, severity, pattern ORDER BY {order}, service, pattern LIMIT {limit}""").dicts()
        what = " ".join(x for x in (f"from {service}" if service else "",
                                    f"at {min_severity.upper()} or above" if level else "",
                                    f"containing {text!r}" if text else "") if x)
        if not got:
            periods = window.label() + (f" nor in {reference.label()}" if reference else "")
            return ToolResult.build(name, args, sql, [], [], notes=[f"no logs {what} in {periods}".replace(
                "  ", " ")], details={"totals": []})
        keys = ("count", "before") if reference else ("count",)
        rows = [{"service": r["service"], "severity": r["severity"], "pattern": r["pattern"],
                 **{k: int(r[k]) for k in keys}, "example": r["example"], "trace_id": r["trace_id"]} for r in got]
        total = sum(int(t["count"]) for t in totals)
        findings = [f"{total} logs {what} in {window.label()}".replace("  ", " ")]
        if reference:
            findings.append(f"{sum(int(t['before']) for t in totals)} in {reference.label()}")
        findings += [f"{t['service']} {t['severity']}: {t['count']}"
                     + (f" ({t['before']} before)" if reference else "") for t in totals[:10]]
        return ToolResult.build(name, args, sql, list(rows[0].keys()), rows, findings=findings,
                                table_columns=["service", "severity", *keys, "pattern"],
                                details={"totals": [{**t, **{k: int(t[k]) for k in keys}} for t in totals],
                                         "chart": {"x": "pattern", "y": "count", "kind": "bar"}})

    return run_tool(name, args, body)


def shifted(window: TimeWindow, by: dt.timedelta) -> TimeWindow:
    """The same window `by` earlier."""
    return TimeWindow(start=window.start - by, end=window.end - by)
