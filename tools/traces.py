"""Trace analytics, the questions SREs ask: what changed, where the time goes, what the slow spans share.

Every function discovers services, operations and attributes from the data (nothing assumes a call
graph or names), runs its SQL read-only (tools.sql.query) and returns a ToolResult whose rows are the
full numbers and whose summary is a compact, fenced digest for a model. Durations are nanoseconds in
storage and milliseconds in results (`*_ms`); ratios are percentages (`*_pct`).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import defaultdict
from typing import Any

from store import Store
from tools.common import ENTRY, ERROR, in_either, in_window, logged_query, run_tool, tool_args
from tools.result import ToolResult
from tools.rollup import (
    QUANTILES,
    ROLLUP_TABLE,
    SKETCH_ERROR,
    longest_span_sql,
    merge_quantiles,
    merge_sketch,
    span_minutes,
)
from tools.sql import literal
from tools.timewindow import TimeWindow, ch_time, utc

# A span that may receive a remote call: OpenTelemetry gives client, producer and internal spans local parents.
REMOTE_CHILD = ("SpanKind NOT IN ('Client', 'Producer', 'Internal', "
                "'SPAN_KIND_CLIENT', 'SPAN_KIND_PRODUCER', 'SPAN_KIND_INTERNAL')")
NS_PER_MS = 1_000_000
# Spans of a trace may start before/after the window its entry span sits in: by at most this much,
# and by at least TRACE_SLACK_MIN (or twice the longest span seen) when the spans' durations are known.
TRACE_SLACK = dt.timedelta(minutes=5)
TRACE_SLACK_MIN = dt.timedelta(minutes=1)
MAX_GROUPS = 500


def trace_slack(longest_ns: float | None) -> dt.timedelta:
    """How far around a window to look for the other spans of its traces, given the longest span seen."""
    if longest_ns is None or math.isnan(longest_ns):
        return TRACE_SLACK
    return min(TRACE_SLACK, max(TRACE_SLACK_MIN, dt.timedelta(microseconds=2 * float(longest_ns) / 1000)))


def longest_span(sql: list[str], store: Store, start: dt.datetime, end: dt.datetime) -> float:
    """The longest duration (ns) of the spans that started in [start, end), from the per-minute rollup."""
    return float(logged_query(sql, store, longest_span_sql(TimeWindow(start=start, end=end))).scalar() or 0)


def _filters(service: str | None, operation: str | None, prefix: str = "") -> str:
    parts = []
    if service:
        parts.append(f"{prefix}ServiceName = {literal(service)}")
    if operation:
        parts.append(f"{prefix}SpanName = {literal(operation)}")
    return "".join(f" AND {p}" for p in parts)


def _ms(ns: float | None) -> float | None:
    return None if ns is None or (isinstance(ns, float) and math.isnan(ns)) else round(float(ns) / NS_PER_MS, 3)


def _pct(part: float, whole: float) -> float | None:
    return round(100.0 * part / whole, 3) if whole else None


def _ratio(now: float | None, before: float | None) -> float | None:
    return round(now / before, 3) if now is not None and before else None


# ---------------------------------------------------------------- service overview


OVERVIEW_UNITS = {
    "rate_per_s": "/s", "base_rate_per_s": "/s", "error_pct": "%", "base_error_pct": "%", "error_pct_delta": "%",
    "p50_ms": "ms", "p95_ms": "ms", "p99_ms": "ms", "base_p50_ms": "ms", "base_p95_ms": "ms", "base_p99_ms": "ms",
    "p95_ratio": "x",
}


def _overview_sql(window: TimeWindow, baseline: TimeWindow) -> str:
    """Per (service, operation), and per (service, entry-or-not) for the service rows, from whole minutes of
    the rollup and the raw spans of the partial minutes (tools.rollup)."""
    return f"""SELECT ServiceName AS service, SpanName AS operation, entry, grouping(SpanName) AS service_level,
        sumIf(n, period = 1) AS calls, sumIf(n_err, period = 1) AS errors, {merge_quantiles(1)} AS q,
        sumIf(n, period = 0) AS base_calls, sumIf(n_err, period = 0) AS base_errors, {merge_quantiles(0)} AS bq
    FROM ({span_minutes({1: window, 0: baseline})})
    GROUP BY GROUPING SETS ((ServiceName, SpanName), (ServiceName, entry))
    ORDER BY calls DESC LIMIT {4 * MAX_GROUPS}"""


_P50, _P90, _P95, _P99 = (QUANTILES.index(q) for q in (0.5, 0.9, 0.95, 0.99))


def _overview_row(r: dict[str, Any], window: TimeWindow, baseline: TimeWindow) -> dict[str, Any]:
    q, bq = r["q"], r["bq"]
    calls, base = int(r["calls"]), int(r["base_calls"])
    row = {
        "calls": calls,
        "rate_per_s": round(calls / window.seconds, 4),
        "error_pct": _pct(r["errors"], calls),
        "p50_ms": _ms(q[_P50]) if calls else None,
        "p95_ms": _ms(q[_P95]) if calls else None,
        "p99_ms": _ms(q[_P99]) if calls else None,
        "base_calls": base,
        "base_rate_per_s": round(base / baseline.seconds, 4),
        "base_error_pct": _pct(r["base_errors"], base),
        "base_p50_ms": _ms(bq[_P50]) if base else None,
        "base_p95_ms": _ms(bq[_P95]) if base else None,
        "base_p99_ms": _ms(bq[_P99]) if base else None,
    }
    row["p95_ratio"] = _ratio(row["p95_ms"], row["base_p95_ms"])
    row["error_pct_delta"] = (
        round(row["error_pct"] - row["base_error_pct"], 3)
        if row["error_pct"] is not None and row["base_error_pct"] is not None
        else None
    )
    return row


def _change_score(row: dict[str, Any]) -> float:
    """How much a row moved: p95 ratio and error-rate increase, weighted by traffic."""
    ratio = row.get("p95_ratio") or 1.0
    err = row.get("error_pct_delta") or 0.0
    return (max(ratio, 1.0) - 1.0) * 10 + max(err, 0.0) + (5.0 if not row.get("base_calls") else 0.0)


def _describe_overview(row: dict[str, Any], label: str) -> str:
    def f(v: float | None, unit: str = "") -> str:
        return "n/a" if v is None else f"{v:.4g}{unit}"

    return (
        f"{label}: {f(row['rate_per_s'])}/s (baseline {f(row['base_rate_per_s'])}/s), errors {f(row['error_pct'], '%')}"
        f" (baseline {f(row['base_error_pct'], '%')}), p95 {f(row['p95_ms'], ' ms')} (baseline "
        f"{f(row['base_p95_ms'], ' ms')}{', x' + f(row['p95_ratio']) if row['p95_ratio'] else ''}), "
        f"p99 {f(row['p99_ms'], ' ms')}"
    )


def service_overview(store: Store, window: TimeWindow, baseline: TimeWindow | None = None) -> ToolResult:
    """Rate, error % and p50/p95/p99 per service and operation in `window` against `baseline`.

    rows: one per (service, operation); details['services']: one per service, over its entry spans
    (server/consumer/root; all spans for services that have none)."""
    baseline = baseline or window.baseline()
    args = tool_args(window=window, baseline=baseline)

    def body(sql: list[str]) -> ToolResult:
        both = logged_query(sql, store, _overview_sql(window, baseline)).dicts()
        ops = [r for r in both if not r["service_level"]][:MAX_GROUPS]
        svcs = [r for r in both if r["service_level"]]
        by_service: dict[str, dict[str, Any]] = {}
        for r in sorted(svcs, key=lambda r: not r["entry"]):  # entry spans first
            by_service.setdefault(r["service"], r)
        services = [
            {"service": name, "entry_spans_only": bool(r["entry"]), **_overview_row(r, window, baseline)}
            for name, r in sorted(by_service.items())
        ]
        rows = [
            {"service": r["service"], "operation": r["operation"], **_overview_row(r, window, baseline)} for r in ops
        ]
        if not rows:
            return ToolResult.build("service_overview", args, sql, [], [],
                                    notes=[f"no spans between {baseline.start:%H:%M:%S} and {window.end:%H:%M:%S} UTC"])
        services.sort(key=_change_score, reverse=True)
        findings = [f"window {window.label()} vs baseline {baseline.label()}", "services (entry spans):"]
        findings += ["  " + _describe_overview(s, s["service"]) for s in services[:20]]
        movers = sorted((r for r in rows if r["calls"] >= 5 and _change_score(r) >= 2),
                        key=_change_score, reverse=True)[:10]
        if movers:
            findings.append("operations that changed most:")
            findings += ["  " + _describe_overview(r, f"{r['service']} {r['operation']}") for r in movers]
        columns = list(rows[0].keys())
        return ToolResult.build(
            "service_overview", args, sql, columns, rows, findings=findings, units=OVERVIEW_UNITS,
            details={"services": services, "chart": {"x": "service", "y": "p95_ms", "kind": "bar"}},
            table_columns=["service", "operation", "calls", "error_pct", "base_error_pct", "p95_ms", "base_p95_ms"],
        )

    return run_tool("service_overview", args, body)


# ---------------------------------------------------------------- requests per minute

SERIES_UNITS = {"avg_ms": "ms", "error_pct": "%"}
MAX_SERIES_ROWS = 20_000
RECENT_BIN_SECONDS = 10  # the last minutes' bins: a minute of evidence is six of them


def entry_series(store: Store, window: TimeWindow, service: str | None = None,
                 recent: dt.datetime | None = None) -> ToolResult:
    """Per service (or only `service`) and minute: entry requests, failed ones, error % and mean latency, from
    the per-minute rollup (whole minutes; the partial last minute as far as it goes). From `recent` (a whole
    minute) on, RECENT_BIN_SECONDS bins from the spans themselves: a symptom younger than two minutes shows
    as a handful of bins, not as one or two minutes. `seconds` gives each row's bin length."""
    args = tool_args(window=window, service=service, recent=recent.isoformat() if recent else None)

    def body(sql: list[str]) -> ToolResult:
        flt = f" AND ServiceName = {literal(service)}" if service else ""
        split = recent if recent is not None and window.start < recent < window.end else window.end
        fine = "" if split >= window.end else f"""
            UNION ALL
            SELECT ServiceName AS service, toStartOfInterval(Timestamp, INTERVAL {RECENT_BIN_SECONDS} SECOND)
                AS minute, {RECENT_BIN_SECONDS} AS seconds, count() AS calls, countIf({ERROR}) AS errors,
                round(100 * errors / calls, 3) AS error_pct, round(avg(Duration) / {NS_PER_MS}, 3) AS avg_ms
            FROM otel_traces
            WHERE {ENTRY} AND Timestamp >= {ch_time(split)} AND Timestamp < {ch_time(window.end)}{flt}
            GROUP BY service, minute"""
        rows = logged_query(sql, store, f"""SELECT * FROM (
            SELECT ServiceName AS service, Minute AS minute, 60 AS seconds, sum(Calls) AS calls,
                sum(Errors) AS errors, round(100 * errors / calls, 3) AS error_pct,
                round(sum(DurationSum) / calls / {NS_PER_MS}, 3) AS avg_ms
            FROM {ROLLUP_TABLE}
            WHERE Entry = 1 AND Minute >= {ch_time(utc(window.start).replace(second=0, microsecond=0))}
              AND Minute < {ch_time(split)}{flt}
            GROUP BY service, minute{fine})
            ORDER BY service, minute LIMIT {MAX_SERIES_ROWS}""").dicts()
        if not rows:
            return ToolResult.build("entry_series", args, sql, [], [],
                                    notes=[f"no entry spans in {window.label()}"])
        return ToolResult.build("entry_series", args, sql, list(rows[0]), rows, units=SERIES_UNITS,
                                findings=[f"requests per minute, {window.label()}" + (
                                    f"; per {RECENT_BIN_SECONDS} s from {split:%H:%M} UTC" if fine else "")])

    return run_tool("entry_series", args, body)


# ---------------------------------------------------------------- latency breakdown

# Traces per cohort: the most recent ones (the state the question is about, and a narrow range to scan).
SAMPLE_TRACES = 2000


def latency_breakdown(
    store: Store,
    window: TimeWindow,
    service: str,
    operation: str | None = None,
    baseline: TimeWindow | None = None,
) -> ToolResult:
    """Where the time goes in slow traces of `service` (entry spans >= the window's p90) against normal
    ones (the baseline's traces, or the window's below-median ones when the baseline is empty): self time
    (duration minus children's durations) per service and operation, per trace."""
    baseline = baseline or window.baseline()
    args = tool_args(window=window, service=service, operation=operation, baseline=baseline)
    name = "latency_breakdown"

    def body(sql: list[str]) -> ToolResult:
        if not service:
            return ToolResult.failure(name, args, "a service is required (see service_overview for the names)")
        w = in_window(window)
        base_where = f"1 = 1{_filters(service, operation)} AND {in_either(window, baseline)}"
        stats = logged_query(sql, store, f"""SELECT {ENTRY} AS entry, countIf({w}) AS n_w, countIf(NOT {w}) AS n_b,
            quantileIf(0.9)(Duration, {w}) AS p90_w, quantileIf(0.5)(Duration, {w}) AS p50_w,
            avgIf(Duration, {w}) AS avg_w, avgIf(Duration, NOT {w}) AS avg_b
            FROM otel_traces WHERE {base_where} GROUP BY entry ORDER BY entry DESC""").dicts()
        stat = next((s for s in stats if s["entry"] and s["n_w"]), None) or next((s for s in stats if s["n_w"]), None)
        if stat is None:
            return ToolResult.build(name, args, sql, [], [], notes=[
                f"no spans of service {service!r}{' operation ' + repr(operation) if operation else ''} "
                f"in {window.label()}: check the names with service_overview"])
        entry_cond = ENTRY if stat["entry"] else "1 = 1"
        p90 = int(stat["p90_w"])
        if stat["n_b"] >= 20:
            normal_cond = f"NOT {w}"
            normal_label = f"baseline traces ({baseline.label()})"
        else:
            normal_cond = f"{w} AND Duration <= {int(stat['p50_w'])}"
            normal_label = "window traces at or below the median"
        # The traces of each cohort's most recent entry spans: they sit in a few minutes, and the scan below
        # then reads those minutes instead of the whole window and baseline.
        picks = f"SELECT TraceId, Timestamp FROM otel_traces WHERE {base_where} AND {entry_cond} AND "
        recent = f"ORDER BY Timestamp DESC, TraceId LIMIT {SAMPLE_TRACES}"
        slow_picks = f"{picks}{w} AND Duration >= {p90} {recent}"
        normal_picks = f"{picks}{normal_cond} {recent}"
        slow_ids, normal_ids = (f"SELECT TraceId FROM ({p})" for p in (slow_picks, normal_picks))
        # Each cohort's time range: its entry spans, give or take twice the longest span of any service
        # around then (a caller may have started that long before its call, minutes for a batch job).
        slack = trace_slack(longest_span(sql, store, baseline.start - TRACE_SLACK, window.end))
        entries = logged_query(sql, store, " UNION ALL ".join(
            f"SELECT min(Timestamp), max(Timestamp), count() FROM ({p})" for p in (slow_picks, normal_picks)))
        span_range = "(" + (" OR ".join(
            f"(Timestamp >= {ch_time(utc(lo) - slack)} AND Timestamp < {ch_time(utc(hi) + slack)})"
            for lo, hi, n in entries.rows if n) or "0") + ")"
        # Self time without a self-join: every span adds its duration under its own id and subtracts it
        # under its parent's id; per (trace, span id) the sum is duration minus the children's durations.
        # One set of trace ids for the scan (two sets cost a second lookup per span); the second
        # grouping set counts each cohort's traces in the same pass.
        result = logged_query(sql, store, f"""SELECT cohort, service, operation, count() AS spans,
                sum(greatest(self_ns, 0)) AS self_ns, uniqExact(TraceId) AS traces,
                grouping(service, operation) = 0 AS per_operation
            FROM (SELECT TraceId, e.1 AS span, any(cohort) AS cohort, sum(e.2) AS self_ns,
                         anyIf(ServiceName, e.3 = 1) AS service, anyIf(SpanName, e.3 = 1) AS operation,
                         max(e.3) AS is_span
                  FROM (SELECT TraceId, ServiceName, SpanName,
                               if(TraceId IN ({slow_ids}), 'slow', 'normal') AS cohort,
                               arrayJoin([(SpanId, toInt64(Duration), toUInt8(1)),
                                          (ParentSpanId, -toInt64(Duration), toUInt8(0))]) AS e
                        FROM otel_traces
                        WHERE {span_range} AND TraceId IN ({slow_ids} UNION ALL {normal_ids}))
                  GROUP BY TraceId, span HAVING is_span = 1)
            GROUP BY GROUPING SETS ((cohort, service, operation), (cohort))""").dicts()
        n = {r["cohort"]: int(r["traces"]) for r in result if not r["per_operation"]}
        result = [r for r in result if r["per_operation"]]
        n_slow, n_norm = n.get("slow", 0), n.get("normal", 0)
        agg: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for r in result:
            key = (r["service"], r["operation"])
            agg[key][f"{r['cohort']}_self"] += r["self_ns"]
            agg[key][f"{r['cohort']}_spans"] += r["spans"]
        slow_total = sum(v["slow_self"] for v in agg.values()) or 1.0
        rows = []
        for (svc, op), v in agg.items():
            slow_ms = v["slow_self"] / n_slow / NS_PER_MS if n_slow else None
            norm_ms = v["normal_self"] / n_norm / NS_PER_MS if n_norm else None
            rows.append({
                "service": svc,
                "operation": op,
                "slow_self_ms": round(slow_ms, 3) if slow_ms is not None else None,
                "normal_self_ms": round(norm_ms, 3) if norm_ms is not None else None,
                "delta_ms": round((slow_ms or 0.0) - (norm_ms or 0.0), 3),
                "slow_share_pct": round(100.0 * v["slow_self"] / slow_total, 2),
                "slow_spans_per_trace": round(v["slow_spans"] / n_slow, 2) if n_slow else None,
                "normal_spans_per_trace": round(v["normal_spans"] / n_norm, 2) if n_norm else None,
            })
        rows.sort(key=lambda r: r["delta_ms"], reverse=True)
        by_svc: dict[str, dict[str, float]] = defaultdict(lambda: {"slow": 0.0, "normal": 0.0})
        for r in rows:
            by_svc[r["service"]]["slow"] += r["slow_self_ms"] or 0.0
            by_svc[r["service"]]["normal"] += r["normal_self_ms"] or 0.0
        services = sorted(
            ({"service": s, "slow_self_ms": round(v["slow"], 3), "normal_self_ms": round(v["normal"], 3),
              "delta_ms": round(v["slow"] - v["normal"], 3)} for s, v in by_svc.items()),
            key=lambda r: r["delta_ms"], reverse=True)
        target = f"{service}{' ' + operation if operation else ''}"
        findings = [
            f"{target}: {n_slow} slow traces (entry span >= p90 {_ms(p90)} ms in {window.label()}) vs {n_norm} "
            f"normal ({normal_label}); avg entry duration {_ms(stat['avg_w'])} ms now vs "
            f"{_ms(stat['avg_b']) if stat['n_b'] else 'n/a'} ms baseline",
            "self time per trace by service (slow vs normal, ms): " + "; ".join(
                f"{s['service']} {s['slow_self_ms']:.4g} vs {s['normal_self_ms']:.4g} ({s['delta_ms']:+.4g})"
                for s in services[:8]),
        ]
        if rows and rows[0]["delta_ms"] > 0:
            top = rows[0]
            findings.append(f"largest increase: {top['service']} {top['operation']} +{top['delta_ms']:.4g} ms "
                            f"self time per slow trace ({top['slow_share_pct']:.3g}% of slow-trace time)")
        return ToolResult.build(
            name, args, sql, list(rows[0].keys()) if rows else [], rows, findings=findings,
            units={"slow_self_ms": "ms", "normal_self_ms": "ms", "delta_ms": "ms", "slow_share_pct": "%"},
            details={"services": services, "slow_traces": n_slow, "normal_traces": n_norm,
                     "slow_threshold_ms": _ms(p90), "chart": {"x": "service", "y": "delta_ms", "kind": "bar"}},
        )

    return run_tool(name, args, body)


# ---------------------------------------------------------------- attribute comparison

MAX_VALUES_PER_KEY = 50
# The spans compared against (not slow / not failing) are hash-sampled down to about this many; the
# target spans are always all kept, so rare causes are not sampled away. Proportions stay unbiased.
SAMPLE_OTHER_SPANS = 100_000
# Per-operation slowness thresholds are inlined into the scan; beyond this many operations the rarest are left out.
MAX_THRESHOLDS = 2000


def _index_of(column: str, values: list[str]) -> str:
    """Position of `column`'s value in `values` (len(values) when absent). On a LowCardinality column
    ClickHouse evaluates it once per distinct value, not once per row."""
    positions = ", ".join(str(i) for i in range(len(values)))
    return (f"transform({column}, [{', '.join(literal(v) for v in values)}], "
            f"CAST([{positions}] AS Array(UInt32)), toUInt32({len(values)}))")


def _threshold_expr(thresholds: list[tuple[Any, ...]]) -> str:
    """Each span's threshold from rows (service, operation, threshold_ns, ...), as integer lookups: keyed
    by the (service, operation) tuple, the lookup took 0.17 s of CPU on 2.5 M spans; this way 0.02 s."""
    services = sorted({str(t[0]) for t in thresholds})
    operations = sorted({str(t[1]) for t in thresholds})
    s_pos = {v: i for i, v in enumerate(services)}
    o_pos = {v: i for i, v in enumerate(operations)}
    stride = len(operations) + 1
    keys = ", ".join(str(s_pos[str(t[0])] * stride + o_pos[str(t[1])]) for t in thresholds)
    limits = ", ".join(str(int(t[2])) for t in thresholds)
    key = f"toUInt64({_index_of('ServiceName', services)}) * {stride} + {_index_of('SpanName', operations)}"
    return (f"transform({key}, CAST([{keys}] AS Array(UInt64)), CAST([{limits}] AS Array(UInt64)), "
            "toUInt64(-1))")


def attribute_comparison(
    store: Store,
    window: TimeWindow,
    service: str | None = None,
    operation: str | None = None,
    target: str = "slow",
) -> ToolResult:
    """Attribute values (span and resource attributes, service, operation, kind) over-represented among
    slow or failing spans against the rest. A span is slow when it exceeds its own operation's baseline
    p95 (the window's p90 when the baseline has fewer than 20 spans of that operation)."""
    name = "attribute_comparison"
    args = tool_args(window=window, service=service, operation=operation, target=target)
    if target not in ("slow", "error"):
        return ToolResult.failure(name, args, "target must be 'slow' or 'error'")
    baseline = window.baseline()

    def body(sql: list[str]) -> ToolResult:
        flt = _filters(service, operation)
        notes: list[str] = []
        if target == "error":
            hit = ERROR
            total = logged_query(sql, store, f"SELECT count() FROM otel_traces WHERE {window.sql_filter()}{flt}"
                                 ).scalar() or 0
        else:
            # Thresholds first (one small row per operation, from the per-minute rollup's sketches, raised by their
            # error so that spans at the quantile itself never count as slow), then one scan of the window: a
            # join of the spans to their thresholds would read the attribute maps of every span.
            thresholds = logged_query(sql, store, f"""SELECT ServiceName, SpanName,
                    if(sumIf(n, period = 0) >= 20, {merge_sketch(0)}[{_P95 + 1}],
                       {merge_sketch(1)}[{_P90 + 1}]) / {1 - SKETCH_ERROR} AS threshold,
                    sumIf(n, period = 1) AS spans
                FROM ({span_minutes({1: window, 0: baseline}, flt)})
                GROUP BY ServiceName, SpanName HAVING spans > 0 ORDER BY spans DESC, ServiceName, SpanName""").rows
            total = sum(int(n) for *_, n in thresholds)
            if len(thresholds) > MAX_THRESHOLDS:  # keeps the query text within ClickHouse's max_query_size
                skipped = thresholds[MAX_THRESHOLDS:]
                notes.append(f"{len(skipped)} least frequent operations ({sum(int(n) for *_, n in skipped)} spans) "
                             "were not compared for slowness")
                thresholds = thresholds[:MAX_THRESHOLDS]
            hit = f"Duration > {_threshold_expr(thresholds)}" if thresholds else "0"
        modulus = max(1, math.ceil(total / SAMPLE_OTHER_SPANS))
        # Hashing columns the scan reads anyway (reading SpanId only to hash it cost ~10% of the query).
        sample = f"cityHash64(Timestamp, Duration) % {modulus} = 0" if modulus > 1 else "1"
        cols = "ServiceName, SpanName, SpanKind, StatusCode, SpanAttributes, ResourceAttributes"
        source = (f"SELECT {cols}, {hit} AS hit FROM otel_traces "
                  f"WHERE {window.sql_filter()}{flt} AND ({hit} OR {sample})")
        pairs = """arrayConcat(
                [('', '*', '*'), ('span', 'service.name', toString(ServiceName)),
                 ('span', 'span.name', toString(SpanName)),
                 ('span', 'span.kind', toString(SpanKind)), ('span', 'status', toString(StatusCode))],
                arrayMap((k, v) -> ('span', toString(k), leftUTF8(v, 100)),
                    mapKeys(SpanAttributes), mapValues(SpanAttributes)),
                arrayFilter(x -> x.2 != 'service.name', arrayMap((k, v) -> ('resource', toString(k), leftUTF8(v, 100)),
                    mapKeys(ResourceAttributes), mapValues(ResourceAttributes))))"""
        data = logged_query(sql, store, f"""SELECT scope, key, value, target, rest FROM (
                SELECT p.1 AS scope, p.2 AS key, p.3 AS value, countIf(hit) AS target, countIf(NOT hit) AS rest,
                       count() OVER (PARTITION BY p.1, p.2) AS cardinality
                FROM ({source}) ARRAY JOIN {pairs} AS p GROUP BY scope, key, value)
            WHERE cardinality <= {MAX_VALUES_PER_KEY} OR key = '*'
            ORDER BY target DESC LIMIT 20000""").dicts()
        totals = next((r for r in data if r["key"] == "*"), None)
        label = "slow" if target == "slow" else "failing"
        if not totals or not totals["target"]:
            return ToolResult.build(name, args, sql, [], [], notes=[
                f"no {label} spans{' of ' + service if service else ''} in {window.label()} "
                f"({totals['rest'] if totals else 0} other spans): nothing to compare", *notes])
        t_all, r_all = int(totals["target"]), int(totals["rest"])
        rows = []
        for r in data:
            if r["key"] == "*" or (target == "error" and r["key"] == "status"):
                continue  # the totals row; for errors, status is the definition of the target
            t_pct = 100.0 * r["target"] / t_all
            r_pct = 100.0 * r["rest"] / r_all if r_all else 0.0
            rows.append({
                "scope": r["scope"], "key": r["key"], "value": r["value"],
                "target_spans": int(r["target"]), "other_spans": int(r["rest"]),
                "target_pct": round(t_pct, 3), "other_pct": round(r_pct, 3), "diff_pct": round(t_pct - r_pct, 3),
                "lift": round(t_pct / r_pct, 3) if r_pct else None,
            })
        rows = [r for r in rows if r["diff_pct"] > 0]
        rows.sort(key=lambda r: (r["diff_pct"], r["target_spans"]), reverse=True)
        rows = rows[:100]
        findings = [f"{t_all} {label} spans vs {r_all} others in {window.label()}"
                    + (f" (others: 1 in {modulus} sampled)" if modulus > 1 else "")]
        findings += [
            f"{r['key']}={r['value']!r}: {r['target_pct']:.3g}% of {label} spans vs {r['other_pct']:.3g}% of others"
            for r in rows[:8]
        ]
        return ToolResult.build(
            name, args, sql, list(rows[0].keys()) if rows else [], rows, findings=findings, notes=notes,
            units={"target_pct": "%", "other_pct": "%", "diff_pct": "%", "lift": "x"},
            details={"target_spans": t_all, "other_spans": r_all, "sample_1_in": modulus},
            table_columns=["key", "value", "target_pct", "other_pct", "target_spans", "other_spans"],
        )

    return run_tool(name, args, body)


# ---------------------------------------------------------------- waterfalls and exemplars

_TRACE_ID_RE = re.compile(r"^[0-9a-fA-F]{1,64}$")


def _fetch_spans(sql: list[str], store: Store, trace_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    ids = ", ".join(literal(t) for t in trace_ids)
    spans = logged_query(sql, store, f"""SELECT TraceId, SpanId, ParentSpanId, ServiceName, SpanName, SpanKind,
            StatusCode, StatusMessage, Timestamp, Duration FROM otel_traces
        WHERE TraceId IN ({ids})
          AND Timestamp >= (SELECT min(Start) FROM otel_traces_trace_id_ts WHERE TraceId IN ({ids})) - INTERVAL 1 SECOND
          AND Timestamp <= (SELECT max(End) FROM otel_traces_trace_id_ts WHERE TraceId IN ({ids})) + INTERVAL 1 SECOND
        ORDER BY Timestamp LIMIT 20000""").dicts()
    by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in spans:
        by_trace[s["TraceId"]].append(s)
    return {t: _waterfall(v) for t, v in by_trace.items()}


def _waterfall(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Spans in tree order with depth, start offset, self time and the critical path marked."""
    ids = {s["SpanId"] for s in spans}
    children: dict[str, list[dict[str, Any]]] = defaultdict(list)
    roots = []
    for s in spans:
        (children[s["ParentSpanId"]] if s["ParentSpanId"] in ids else roots).append(s)
    t0 = min(utc(s["Timestamp"]) for s in spans)

    def end(s: dict[str, Any]) -> dt.datetime:
        return utc(s["Timestamp"]) + dt.timedelta(microseconds=s["Duration"] / 1000)

    critical: set[str] = set()

    def mark(span: dict[str, Any]) -> None:
        """Walk back from the span's end: the child ending last (within it) is critical, then the child
        ending before that one started, and so on; children outliving the span (async) are not."""
        critical.add(span["SpanId"])
        cursor = end(span)
        for kid in sorted(children.get(span["SpanId"], []), key=end, reverse=True):
            if end(kid) <= cursor:
                mark(kid)
                cursor = utc(kid["Timestamp"])

    if roots:
        mark(min(roots, key=lambda s: utc(s["Timestamp"])))
    out: list[dict[str, Any]] = []

    def visit(s: dict[str, Any], depth: int) -> None:
        kids = sorted(children.get(s["SpanId"], []), key=lambda k: utc(k["Timestamp"]))
        out.append({
            "span_id": s["SpanId"],
            "parent_span_id": s["ParentSpanId"],
            "depth": depth,
            "service": s["ServiceName"],
            "operation": s["SpanName"],
            "kind": s["SpanKind"],
            "status": s["StatusCode"],
            "status_message": s["StatusMessage"],
            "start": utc(s["Timestamp"]),
            "offset_ms": round((utc(s["Timestamp"]) - t0).total_seconds() * 1000, 3),
            "duration_ms": _ms(s["Duration"]),
            "self_ms": _ms(max(s["Duration"] - sum(k["Duration"] for k in kids), 0)),
            "critical": s["SpanId"] in critical,
        })
        for k in kids:
            visit(k, depth + 1)

    for r in sorted(roots, key=lambda s: utc(s["Timestamp"])):
        visit(r, 0)
    return out


def waterfall_text(spans: list[dict[str, Any]], max_lines: int = 40) -> str:
    """A compact indented waterfall: offset, duration, service, operation, status; '*' marks the critical path."""
    lines = []
    for s in spans[:max_lines]:
        status = " ERROR" if s["status"] in ("Error", "STATUS_CODE_ERROR") else ""
        mark = "*" if s["critical"] else " "
        lines.append(f"{mark}{'  ' * min(s['depth'], 12)}+{s['offset_ms']:.1f}ms {s['duration_ms']:.1f}ms "
                     f"(self {s['self_ms']:.1f}) {s['service']} {s['operation']}{status}")
    if len(spans) > max_lines:
        lines.append(f"... {len(spans) - max_lines} more spans")
    return "\n".join(lines)


def trace_waterfall(store: Store, trace_id: str) -> ToolResult:
    """Every span of one trace in tree order: depth, start offset, duration, self time, critical path."""
    name = "trace_waterfall"
    args = {"trace_id": trace_id}
    if not isinstance(trace_id, str) or not _TRACE_ID_RE.match(trace_id.strip()):
        return ToolResult.failure(name, args, f"not a trace id: {str(trace_id)[:80]!r} (expected hex)")
    trace_id = trace_id.strip()

    def body(sql: list[str]) -> ToolResult:
        spans = _fetch_spans(sql, store, [trace_id]).get(trace_id, [])
        if not spans:
            return ToolResult.build(name, args, sql, [], [], notes=[f"trace {trace_id} not found"])
        root = spans[0]
        errors = sum(1 for s in spans if s["status"] in ("Error", "STATUS_CODE_ERROR"))
        services = sorted({s["service"] for s in spans})
        findings = [
            f"trace {trace_id}: {len(spans)} spans, {len(services)} services, root {root['service']} "
            f"{root['operation']} {root['duration_ms']} ms, {errors} error span(s)",
            waterfall_text(spans),
        ]
        return ToolResult.build(
            name, args, sql, list(spans[0].keys()), spans, findings=findings, budget_chars=6000,
            units={"offset_ms": "ms", "duration_ms": "ms", "self_ms": "ms"},
            details={"chart": {"kind": "gantt"}},
            table_columns=["depth", "service", "operation", "duration_ms", "self_ms", "status"],
        )

    return run_tool(name, args, body)


def exemplar_traces(
    store: Store,
    window: TimeWindow,
    service: str | None = None,
    operation: str | None = None,
    kind: str = "slow",
    limit: int = 5,
) -> ToolResult:
    """The slowest (kind='slow') or latest failing (kind='error') traces touching service/operation,
    one row per trace; details['waterfalls'][trace_id] holds each trace's spans (see trace_waterfall)."""
    name = "exemplar_traces"
    args = tool_args(window=window, service=service, operation=operation, kind=kind, limit=limit)
    if kind not in ("slow", "error"):
        return ToolResult.failure(name, args, "kind must be 'slow' or 'error'")
    limit = max(1, min(int(limit), 50))

    def body(sql: list[str]) -> ToolResult:
        flt = _filters(service, operation)
        scope = flt if (service or operation) else " AND ParentSpanId = ''"
        if kind == "slow":
            cond, order = "", "Duration DESC"
        else:
            cond, order = f" AND {ERROR}", "Timestamp DESC"
        picks = logged_query(sql, store, f"""SELECT TraceId AS trace_id, ServiceName AS service, SpanName AS operation,
                Duration AS duration_ns, StatusCode AS status, StatusMessage AS status_message, Timestamp AS time
            FROM otel_traces WHERE {window.sql_filter()}{scope}{cond}
            ORDER BY {order} LIMIT 1 BY TraceId LIMIT {limit}""").dicts()
        if not picks:
            what = "failing" if kind == "error" else "matching"
            return ToolResult.build(name, args, sql, [], [], notes=[f"no {what} spans in {window.label()}"])
        waterfalls = _fetch_spans(sql, store, [p["trace_id"] for p in picks])
        rows = []
        for p in picks:
            spans = waterfalls.get(p["trace_id"], [])
            root = spans[0] if spans else None
            rows.append({
                "trace_id": p["trace_id"],
                "service": p["service"],
                "operation": p["operation"],
                "span_duration_ms": _ms(p["duration_ns"]),
                "status": p["status"],
                "status_message": p["status_message"],
                "time": p["time"],
                "root": f"{root['service']} {root['operation']}" if root else None,
                "trace_duration_ms": root["duration_ms"] if root else None,
                "spans": len(spans),
                "error_spans": sum(1 for s in spans if s["status"] in ("Error", "STATUS_CODE_ERROR")),
            })
        findings = []
        for r in rows[:3]:
            findings.append(f"trace {r['trace_id']} ({r['service']} {r['operation']} {r['span_duration_ms']} ms, "
                            f"{r['status']} {r['status_message'][:80]}):")
            findings.append(waterfall_text(waterfalls.get(r["trace_id"], []), max_lines=15))
        return ToolResult.build(
            name, args, sql, list(rows[0].keys()), rows, findings=findings,
            units={"span_duration_ms": "ms", "trace_duration_ms": "ms"},
            details={"waterfalls": waterfalls,
                     "chart": {"x": "trace_id", "y": "trace_duration_ms", "kind": "bar"}},
            table_columns=["trace_id", "service", "operation", "span_duration_ms", "status", "spans", "error_spans"],
        )

    return run_tool(name, args, body)


# ---------------------------------------------------------------- service map


def service_map(store: Store, window: TimeWindow) -> ToolResult:
    """Caller -> callee edges: a span receiving a remote call (any kind but client, producer and internal,
    which OpenTelemetry gives only to spans with a local parent) whose parent span is in another service,
    with calls, error % and p95 of the callee span; plus calls from client spans to uninstrumented systems
    named by db.system, messaging.system or peer.service."""
    name = "service_map"
    args = tool_args(window=window)

    def body(sql: list[str]) -> ToolResult:
        # A parent starts before its child by at most its own duration: look back as far as the longest
        # span that reaches into the window (the hash join's size follows this range).
        slack = trace_slack(longest_span(sql, store, window.start - TRACE_SLACK, window.end))
        parents = f"Timestamp >= {ch_time(window.start - slack)} AND Timestamp < {ch_time(window.end + slack)}"
        edges = logged_query(sql, store, f"""SELECT p.ServiceName AS caller, c.ServiceName AS callee, 'span' AS via,
                count() AS calls, countIf(c.err) AS errors, quantile(0.95)(c.Duration) AS p95_ns,
                avg(c.Duration) AS avg_ns
            FROM (SELECT cityHash64(TraceId, ParentSpanId) AS k, ServiceName, Duration, {ERROR} AS err
                  FROM otel_traces WHERE {window.sql_filter()} AND ParentSpanId != '' AND {REMOTE_CHILD}) AS c
            INNER JOIN (SELECT cityHash64(TraceId, SpanId) AS k, ServiceName FROM otel_traces WHERE {parents}) AS p
                ON c.k = p.k
            WHERE p.ServiceName != c.ServiceName
            GROUP BY caller, callee ORDER BY calls DESC LIMIT {MAX_GROUPS}""").dicts()
        external = logged_query(sql, store, f"""SELECT ServiceName AS caller, dep AS callee, 'client' AS via,
                count() AS calls, countIf({ERROR}) AS errors, quantile(0.95)(Duration) AS p95_ns,
                avg(Duration) AS avg_ns
            FROM otel_traces
            WHERE {window.sql_filter()} AND SpanKind IN ('Client', 'Producer', 'SPAN_KIND_CLIENT', 'SPAN_KIND_PRODUCER')
            GROUP BY caller, if(SpanAttributes['db.system'] != '', SpanAttributes['db.system'],
                if(SpanAttributes['messaging.system'] != '', SpanAttributes['messaging.system'],
                   SpanAttributes['peer.service'])) AS dep
            HAVING dep != '' ORDER BY calls DESC LIMIT {MAX_GROUPS}""").dicts()
        callees = {e["callee"] for e in edges}
        rows = []
        for e in edges + [x for x in external if x["callee"] not in callees]:
            rows.append({
                "caller": e["caller"], "callee": e["callee"], "via": e["via"], "calls": int(e["calls"]),
                "error_pct": _pct(e["errors"], e["calls"]), "p95_ms": _ms(e["p95_ns"]), "avg_ms": _ms(e["avg_ns"]),
            })
        if not rows:
            return ToolResult.build(name, args, sql, [], [], notes=[
                f"no calls between services in {window.label()} (single-service traces or no data)"])
        services = sorted({r["caller"] for r in rows} | {r["callee"] for r in rows})
        findings = [f"{len(rows)} edges between {len(services)} services/systems in {window.label()}"]
        worst = sorted(rows, key=lambda r: (r["error_pct"] or 0), reverse=True)[:3]
        findings += [f"{r['caller']} -> {r['callee']}: {r['calls']} calls, {r['error_pct']:.3g}% errors, "
                     f"p95 {r['p95_ms']} ms" for r in worst if r["error_pct"]]
        return ToolResult.build(name, args, sql, list(rows[0].keys()), rows, findings=findings,
                                units={"error_pct": "%", "p95_ms": "ms", "avg_ms": "ms"})

    return run_tool(name, args, body)


# ---------------------------------------------------------------- exact statistics of one service

# Statistics `service_stats` computes, in the order it states them.
STATS = ("requests", "errors", "error_pct", "rate_per_s", "avg_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")
STATS_UNITS = {"error_pct": "%", "rate_per_s": "/s", **{k: "ms" for k in STATS if k.endswith("_ms")}}
_STAT_LABELS = {"requests": "requests", "errors": "failed", "error_pct": "error rate", "rate_per_s": "rate",
                "avg_ms": "avg", "p50_ms": "p50", "p90_ms": "p90", "p95_ms": "p95", "p99_ms": "p99", "max_ms": "max"}


def format_stat(key: str, value: float | None) -> str:
    """One statistic as text, exactly as `service_stats` states it (answers quote these strings)."""
    if value is None:
        return "n/a"
    if key in ("requests", "errors"):
        return str(int(value))
    if key == "error_pct":
        return f"{value:.2f}%"
    if key == "rate_per_s":
        return f"{value:.3f}/s"
    return f"{value:.2f} ms"


def _exact_ms(ns: float | None) -> float | None:
    """Milliseconds unrounded (rounding twice could move the last digit an answer states)."""
    return None if ns is None or (isinstance(ns, float) and math.isnan(ns)) else float(ns) / NS_PER_MS


def _stats_line(row: dict[str, Any]) -> str:
    return ", ".join(f"{_STAT_LABELS[k]} {format_stat(k, row.get(k))}" for k in STATS)


def service_stats(
    store: Store,
    window: TimeWindow,
    service: str,
    operation: str | None = None,
    baseline: TimeWindow | None = None,
) -> ToolResult:
    """Exact request count, failed requests, error %, rate, avg/p50/p90/p95/p99/max latency of one service
    (its entry spans: server/consumer/root, as in service_overview; all its spans when it has none) or of
    one operation (its spans of that name), in `window` and in `baseline`.

    Quantiles are exact (quantileExactInclusive: linear interpolation, numpy's default), not sampled."""
    baseline = baseline or window.baseline()
    args = tool_args(window=window, service=service, operation=operation, baseline=baseline)
    name = "service_stats"

    def body(sql: list[str]) -> ToolResult:
        if not service:
            return ToolResult.failure(name, args, "a service is required (see service_overview for the names)")
        group = "1" if operation else ENTRY
        stats = logged_query(sql, store, f"""SELECT {group} AS entry, in_w AS in_window, count() AS requests,
            countIf({ERROR}) AS errors, avg(Duration) AS avg_ns,
            quantilesExactInclusive(0.5, 0.9, 0.95, 0.99)(Duration) AS q, max(Duration) AS max_ns
            FROM otel_traces WHERE 1 = 1{_filters(service, operation)} AND {in_either(window, baseline)}
            GROUP BY entry, {in_window(window)} AS in_w ORDER BY entry DESC, in_window DESC""").dicts()
        has_entry = any(s["entry"] for s in stats)
        rows = []
        for label, win, flag in (("window", window, 1), ("baseline", baseline, 0)):
            s = next((s for s in stats if bool(s["entry"]) == has_entry and bool(s["in_window"]) == bool(flag)),
                     None)
            n = int(s["requests"]) if s else 0
            q = s["q"] if s and n else [None] * 4
            rows.append({
                "period": label, "start": win.start, "end": win.end, "requests": n,
                "errors": int(s["errors"]) if s else 0,
                "error_pct": 100.0 * s["errors"] / n if s and n else None,
                "rate_per_s": n / win.seconds,
                "avg_ms": _exact_ms(s["avg_ns"]) if s and n else None,
                "p50_ms": _exact_ms(q[0]), "p90_ms": _exact_ms(q[1]), "p95_ms": _exact_ms(q[2]),
                "p99_ms": _exact_ms(q[3]), "max_ms": _exact_ms(s["max_ns"]) if s and n else None,
            })
        what = f"{service} operation {operation}" if operation else (
            f"{service} (entry spans)" if has_entry else f"{service} (all spans: it has no entry spans)")
        findings = [f"{what}, window {window.label()}: {_stats_line(rows[0])}",
                    f"{what}, baseline {baseline.label()}: {_stats_line(rows[1])}"]
        notes = [] if rows[0]["requests"] else [
            f"no spans of {what} in {window.label()}: check the names with service_overview"]
        return ToolResult.build(name, args, sql, list(rows[0].keys()), rows, findings=findings, notes=notes,
                                units=STATS_UNITS, details={"service": service, "operation": operation,
                                                            "entry_spans_only": has_entry and not operation},
                                table_columns=["period", *STATS])

    return run_tool(name, args, body)
