"""The evidence queries, read-only, window versus baseline. The analyst runs them through the SQL guard as
`run_sql` calls, so they are evidence like any model-written SQL; the root-cause hints run them too.
Per-operation self time and errors, the cross-service call graph with the gap between caller and callee,
problem log templates and who logged first, resource gauges.

Self time = a span's duration minus its direct children's durations: the time a service spent
itself rather than waiting on what it called. It is what separates "slow because payment is
slow" from "slow itself".

Spans are joined to their parents on cityHash64(TraceId, SpanId): a UInt64 key costs about half
the CPU of the two strings (a collision among 10 million spans has odds near 1 in 10^6).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from anomaly.signals import MIN_SEQUENCE_SPANS, MIN_SLOWER_MS, SEQUENCE_AS_A_RULE, SLOWER_RATIO
from store.severity import ERROR, SEVERITY, WARN


class Window(Protocol):
    """The analysed window [start, end) and its baseline [baseline_start, baseline_end). The baseline ends at
    `start`, or earlier when the time just before the window is already part of the incident: the minutes
    between are then read by neither."""

    start: datetime
    end: datetime
    baseline_start: datetime
    baseline_end: datetime


def _t(value: datetime) -> str:
    """A ClickHouse DateTime64(9, 'UTC') literal."""
    utc = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return f"toDateTime64('{utc.strftime('%Y-%m-%d %H:%M:%S.%f')}', 9, 'UTC')"


def _read(w: Window, column: str = "Timestamp") -> str:
    """`column` in the baseline or the window (one scan; `column >= start` tells which)."""
    span = f"{column} >= {_t(w.baseline_start)} AND {column} < {_t(w.end)}"
    if w.baseline_end < w.start:
        span += f" AND NOT ({column} >= {_t(w.baseline_end)} AND {column} < {_t(w.start)})"
    return span


# The fields a client span's callee is named by, most specific first (OTel semantic conventions).
PEER_EXPR = (
    "coalesce(nullIf(SpanAttributes['peer.service'], ''), nullIf(SpanAttributes['server.address'], ''), "
    "nullIf(SpanAttributes['net.peer.name'], ''), nullIf(SpanAttributes['rpc.service'], ''), "
    "nullIf(SpanAttributes['db.system'], ''), nullIf(SpanAttributes['messaging.destination.name'], ''), '')"
)


# The window's calls (self time, trace) of an operation slower than its baseline p95 self time, as
# anomaly.signals.slower_share counts them (written twice in span_stats: ClickHouse computes it once).
SLOW_CALLS = f"""arrayFilter(
        x -> x.1 / 1e6 > greatest({SLOWER_RATIO} * self_q_base_ms[2], self_q_base_ms[2] + {MIN_SLOWER_MS}),
        groupArrayIf(tuple(greatest(toInt64(s.Duration) - toInt64(c.child_ns), 0), s.trace), s.cur))"""


def span_stats_sql(w: Window) -> str:
    """Per (service, operation, kind): counts, latency, self time and errors, window vs baseline;
    `slow_calls` slower than the baseline's p95 self time, from `slow_traces` of its window `traces`: a loop
    in one request repeats one pause over all its calls."""
    return f"""
WITH spans AS (
    SELECT cityHash64(TraceId, SpanId) AS k, if(ParentSpanId = '', 0, cityHash64(TraceId, ParentSpanId)) AS pk,
           cityHash64(TraceId) AS trace, ServiceName, SpanName, SpanKind, Duration, StatusCode, StatusMessage,
           Timestamp >= {_t(w.start)} AS cur, {PEER_EXPR} AS peer,
           SpanAttributes['messaging.destination.name'] AS destination
    FROM otel_traces
    WHERE {_read(w)}
), children AS (
    SELECT pk AS k, sum(Duration) AS child_ns, count() AS child_n,
           countIf(StatusCode = 'Error') AS child_errors, any(ServiceName) AS child_service
    FROM spans WHERE pk != 0 GROUP BY pk
)
SELECT s.ServiceName AS service, s.SpanName AS operation, s.SpanKind AS kind, any(s.peer) AS peer,
    any(s.destination) AS destination,
    countIf(s.cur) AS n, countIf(NOT s.cur) AS n_base,
    round(avgIf(s.Duration, s.cur) / 1e6, 3) AS avg_ms, round(avgIf(s.Duration, NOT s.cur) / 1e6, 3) AS avg_base_ms,
    round(quantileIf(0.95)(s.Duration, s.cur) / 1e6, 3) AS p95_ms,
    round(quantileIf(0.95)(s.Duration, NOT s.cur) / 1e6, 3) AS p95_base_ms,
    round(avgIf(greatest(toInt64(s.Duration) - toInt64(c.child_ns), 0), s.cur) / 1e6, 3) AS self_ms,
    round(avgIf(greatest(toInt64(s.Duration) - toInt64(c.child_ns), 0), NOT s.cur) / 1e6, 3) AS self_base_ms,
    round(stddevSampIf(greatest(toInt64(s.Duration) - toInt64(c.child_ns), 0), s.cur) / 1e6, 3) AS self_sd_ms,
    round(stddevSampIf(greatest(toInt64(s.Duration) - toInt64(c.child_ns), 0), NOT s.cur) / 1e6, 3) AS self_sd_base_ms,
    arrayMap(q -> round(q / 1e6, 3), quantilesIf(0.25, 0.5, 0.75, 0.9, 0.95)(
        greatest(toInt64(s.Duration) - toInt64(c.child_ns), 0), s.cur)) AS self_q_ms,
    arrayMap(q -> round(q / 1e6, 3), quantilesIf(0.5, 0.95)(
        greatest(toInt64(s.Duration) - toInt64(c.child_ns), 0), NOT s.cur)) AS self_q_base_ms,
    round(maxIf(greatest(toInt64(s.Duration) - toInt64(c.child_ns), 0), NOT s.cur) / 1e6, 3) AS self_max_base_ms,
    length({SLOW_CALLS}) AS slow_calls, length(arrayDistinct(arrayMap(x -> x.2, {SLOW_CALLS}))) AS slow_traces,
    uniqExactIf(s.trace, s.cur) AS traces,
    countIf(s.cur AND c.child_n > 0 AND c.child_service != s.ServiceName) AS remote_n,
    countIf(s.cur AND s.StatusCode = 'Error') AS errors, countIf(NOT s.cur AND s.StatusCode = 'Error') AS errors_base,
    countIf(s.cur AND s.StatusCode = 'Error' AND c.child_errors = 0) AS own_errors,
    countIf(NOT s.cur AND s.StatusCode = 'Error' AND c.child_errors = 0) AS own_errors_base,
    countIf(s.cur AND c.child_n = 0) AS leaf_n,
    countIf(s.cur AND s.StatusCode = 'Error' AND c.child_n = 0) AS leaf_errors,
    round(100 * errors / greatest(n, 1), 2) AS error_pct, round(100 * errors_base / greatest(n_base, 1), 2) AS
        error_base_pct,
    round(100 * own_errors / greatest(n, 1), 2) AS own_error_pct,
    round(100 * own_errors_base / greatest(n_base, 1), 2) AS own_error_base_pct,
    anyIf(s.StatusMessage, s.cur AND s.StatusCode = 'Error') AS error_example
FROM spans AS s LEFT JOIN children AS c ON s.k = c.k
GROUP BY service, operation, kind
ORDER BY n DESC
LIMIT 2000
"""


# Parent kinds whose span around a call into another service is the call itself, so that the gap between it
# and the callee's span is time on the wire and in queues: client spans, and spans recorded without a kind
# that says so (an internal or unspecified span parenting another service's span is an unmarked client span;
# a server or consumer span around its callee includes its own work).
CALLING_KINDS = "('Client', 'Internal', 'Unspecified')"


def call_graph_sql(w: Window) -> str:
    """Cross-service edges (caller -> callee) seen in the window or the baseline, with the gap between the
    caller's span and the callee's (time on the wire and in queues: a callee whose network is slow makes
    its callers' client spans grow while its own spans do not)."""
    return f"""
WITH spans AS (
    SELECT cityHash64(TraceId, SpanId) AS k, cityHash64(TraceId, ParentSpanId) AS pk, ServiceName, SpanName,
           SpanKind, Duration, Timestamp >= {_t(w.start)} AS cur
    FROM otel_traces
    WHERE {_read(w)}
)
SELECT p.ServiceName AS caller, p.SpanName AS caller_operation, c.ServiceName AS callee,
       c.SpanName AS callee_operation, countIf(c.cur) AS n, countIf(NOT c.cur) AS n_base,
       countIf(c.cur AND p.SpanKind IN {CALLING_KINDS}) AS gap_n,
       countIf(NOT c.cur AND p.SpanKind IN {CALLING_KINDS}) AS gap_n_base,
       arrayMap(q -> round(q / 1e6, 3), quantilesIf(0.25, 0.5, 0.75, 0.9, 0.95)(
           greatest(toInt64(p.Duration) - toInt64(c.Duration), 0), c.cur AND p.SpanKind IN {CALLING_KINDS}))
           AS gap_q_ms,
       arrayMap(q -> round(q / 1e6, 3), quantilesIf(0.5, 0.95)(
           greatest(toInt64(p.Duration) - toInt64(c.Duration), 0), NOT c.cur AND p.SpanKind IN {CALLING_KINDS}))
           AS gap_q_base_ms
FROM spans AS c INNER JOIN spans AS p ON c.pk = p.k
WHERE c.ServiceName != p.ServiceName
GROUP BY caller, caller_operation, callee, callee_operation
ORDER BY n + n_base DESC
LIMIT 2000
"""


def log_stats_sql(w: Window) -> str:
    """Warning/error log lines per service, window vs baseline, with an example body (severity as
    store.severity reads it: a level stated only in the body counts)."""
    return f"""
SELECT service,
    countIf(Timestamp >= {_t(w.start)} AND severity >= {ERROR}) AS errors,
    countIf(Timestamp < {_t(w.start)} AND severity >= {ERROR}) AS errors_base,
    countIf(Timestamp >= {_t(w.start)} AND severity >= {WARN} AND severity < {ERROR}) AS warnings,
    countIf(Timestamp < {_t(w.start)} AND severity >= {WARN} AND severity < {ERROR}) AS warnings_base,
    countIf(Timestamp >= {_t(w.start)}) AS n, countIf(Timestamp < {_t(w.start)}) AS n_base,
    anyIf(Body, Timestamp >= {_t(w.start)} AND severity >= {ERROR}) AS error_example,
    anyIf(Body, Timestamp >= {_t(w.start)} AND severity >= {WARN} AND severity < {ERROR}) AS warning_example
FROM (
    SELECT ServiceName AS service, Timestamp, Body, {SEVERITY} AS severity FROM otel_logs
    WHERE {_read(w)}
)
GROUP BY service
ORDER BY errors DESC
LIMIT 500
"""


# Gauges that tell whether a service is saturated (CPU, memory, heap, pools, queues, lag), by name.
RESOURCE_METRIC_RE = "(?i)(cpu|memory|mem\\\\.|heap|gc|lag|queue|pool|thread|saturation|utilization|load)"


# Infrastructure receivers (kubeletstats, docker) often leave service.name empty: name the service
# by its deployment, container or pod instead (matched to trace service names by the analyst).
METRIC_SERVICE = (
    "if(ServiceName != '', ServiceName, coalesce(nullIf(ResourceAttributes['k8s.deployment.name'], ''), "
    "nullIf(ResourceAttributes['k8s.container.name'], ''), nullIf(ResourceAttributes['container.name'], ''), "
    "ResourceAttributes['k8s.pod.name']))"
)


def resource_gauges_sql(w: Window) -> str:
    """Resource gauges per service and metric: window vs baseline average, peak, first/last value and the
    level a quarter of the window reached (p75: a resource pinned for minutes, whatever its last sample)."""
    return f"""
SELECT {METRIC_SERVICE} AS service, MetricName AS metric, any(MetricUnit) AS unit,
    avgIf(Value, TimeUnix >= {_t(w.start)}) AS avg, avgIf(Value, TimeUnix < {_t(w.start)}) AS avg_base,
    maxIf(Value, TimeUnix >= {_t(w.start)}) AS max, maxIf(Value, TimeUnix < {_t(w.start)}) AS max_base,
    argMinIf(Value, TimeUnix, TimeUnix >= {_t(w.start)}) AS first,
    argMaxIf(Value, TimeUnix, TimeUnix >= {_t(w.start)}) AS last,
    quantileExactIf(0.75)(Value, TimeUnix >= {_t(w.start)}) AS p75,
    countIf(TimeUnix >= {_t(w.start)}) AS n, countIf(TimeUnix < {_t(w.start)}) AS n_base,
    groupUniqArray(coalesce(nullIf(ResourceAttributes['k8s.node.name'], ''), ResourceAttributes['host.name']))
        AS nodes
FROM otel_metrics_gauge
WHERE {_read(w, "TimeUnix")} AND service != ''
    AND match(MetricName, '{RESOURCE_METRIC_RE}')
GROUP BY service, metric
ORDER BY service, metric
LIMIT 2000
"""


# A log line counts as a problem when its severity says so (WARN and above, wherever the record states it) or,
# for lines logged with no or a low severity, when its text names an error: stack traces often carry none.
def problem_log(severity: str = SEVERITY) -> str:
    """PROBLEM_LOG with the line's severity given (a query that has already computed it)."""
    return f"({severity} >= {WARN} OR match(Body, '(?i)(exception|\\\\berror\\\\b|traceback)'))"


PROBLEM_LOG = problem_log()
# A line's template: its first line, with identifiers (UUIDs, hex ids) and numbers masked, so the same
# statement with other values falls together (a cheap drain-style template, computed by ClickHouse).
LOG_TEMPLATE = (
    "substring(replaceRegexpAll(replaceRegexpAll(splitByChar('\\n', Body)[1], "
    "'[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}|\\\\b[0-9a-fA-F]*[0-9][0-9a-fA-F]*[a-fA-F][0-9a-fA-F]*\\\\b"
    "|\\\\b[0-9a-fA-F]*[a-fA-F][0-9a-fA-F]*[0-9][0-9a-fA-F]*\\\\b', '<id>'), '[0-9]+', '<n>'), 1, 240)"
)


def log_templates_sql(w: Window) -> str:
    """Problem log templates per service, window vs baseline: a statement that appears or surges when the
    fault starts is the service's own account of it (errors that exist only in logs, a changed code path)."""
    return f"""
SELECT service, {LOG_TEMPLATE} AS template, max(level) AS severity,
    countIf(Timestamp >= {_t(w.start)}) AS n, countIf(Timestamp < {_t(w.start)}) AS n_base,
    uniqIf(TraceId, Timestamp >= {_t(w.start)} AND TraceId != '') AS traces,
    minIf(Timestamp, Timestamp >= {_t(w.start)}) AS first_seen,
    anyIf(Body, Timestamp >= {_t(w.start)}) AS example
FROM (
    SELECT ServiceName AS service, Timestamp, TraceId, Body, {SEVERITY} AS level FROM otel_logs
    WHERE {_read(w)}
)
WHERE {problem_log('level')}
GROUP BY service, template
HAVING n > 0
ORDER BY n DESC
LIMIT 500
"""


# At most this many spans per service and side are read for log sequences (each carries its statements).
MAX_SEQUENCE_SPANS = 20_000
# Statements logged at least this often in the baseline are candidates for "stopped being logged".
MIN_STATEMENT_BASE_LINES = 5


def log_statements_sql(w: Window) -> str:
    """Routine (non-problem) log templates per service that were logged steadily in the baseline: one that
    stops while the service is still called as often says its code now takes another path (an exception
    thrown before the line, a wrong value sending it down another branch). `operation`: the one whose spans
    logged it most in the baseline (lines joined to spans by span id; only traces that have log lines are
    read, so a store without them pays nothing)."""
    return f"""
SELECT l.ServiceName AS service, {LOG_TEMPLATE} AS template,
    countIf(l.Timestamp >= {_t(w.start)}) AS n, countIf(l.Timestamp < {_t(w.start)}) AS n_base,
    anyIf(Body, l.Timestamp < {_t(w.start)}) AS example,
    topKIf(1)(o.SpanName, l.Timestamp < {_t(w.start)} AND o.SpanName != '')[1] AS operation
FROM otel_logs AS l LEFT JOIN (
    SELECT cityHash64(TraceId, SpanId) AS k, SpanName FROM otel_traces
    WHERE {_read(w)} AND TraceId IN (
        SELECT TraceId FROM otel_logs
        WHERE {_read(w)} AND SpanId != '')
) AS o ON cityHash64(l.TraceId, l.SpanId) = o.k
WHERE {_read(w, "l.Timestamp")} AND NOT {PROBLEM_LOG}
GROUP BY service, template
HAVING n_base >= {MIN_STATEMENT_BASE_LINES}
ORDER BY n_base DESC
LIMIT 2000
"""


def log_sequences_sql(w: Window) -> str:
    """Statements that, as a rule, follow another statement in the same span (C at least as often as A in all
    but a few of the baseline's spans), with the spans in the window where C no longer keeps up with A: an
    exception thrown, or a branch taken, between the two. Unlike a statement that stops altogether, this
    holds when the request mix changes how often the operation runs: each span is its own control. A window
    span that logs a statement never seen beside A in the baseline, or as many lines per A line as the
    typical baseline span, took the path of another kind of value (another product, route or train,
    templated apart, in place of C): it counts as no break. Only lines with span ids are read, and at most
    MAX_SEQUENCE_SPANS spans per service in the window and as many in the baseline (a sample, in the order
    the span keys hash to: memory stays bounded on a busy service); `tested` is how many pairs of the
    service were looked at (they are many). A fault is often noticed after it began, so the baseline may
    end in spans it already broke: `early` counts the baseline's last spans, after the last one that kept
    the pair, and the rule is judged without them (`n_base`, `broken_base` leave them out). Without a fault
    a rule leaves no such run; a break in every call makes it exactly the spans after the fault's onset."""
    return f"""
SELECT * FROM (
SELECT service, any(ts[p.1]) AS template, any(ts[p.2]) AS follows,
    any(spans_now) AS n, n - countIf(cur) - any(excused_now) + countIf(cur AND excused) AS broken,
    greatest(minIf(from_end, NOT cur), 1) - 1 AS early,
    any(spans_base) - early AS n_base, n_base - countIf(NOT cur) AS broken_base,
    count() OVER (PARTITION BY service) AS tested
FROM (
    SELECT *, countIf(cur AND excused) OVER (PARTITION BY service, hs[a]) AS excused_now
    FROM (
        SELECT *, cur AND (NOT arrayAll(h -> has(seen, h), hs) OR lines_per_a >= typical) AS excused
        FROM (
            SELECT service, cur, ts, hs, ks, a, arraySum(ks) / ks[a] AS lines_per_a,
                countIf(cur) OVER w AS spans_now, countIf(NOT cur) OVER w AS spans_base,
                count() OVER (PARTITION BY service, hs[a], cur ORDER BY span_t DESC ROWS UNBOUNDED PRECEDING)
                    AS from_end,
                groupUniqArrayArrayIf(hs, NOT cur) OVER w AS seen, medianIf(lines_per_a, NOT cur) OVER w AS typical
            FROM (
                SELECT service, min(t) AS span_t, span_t >= {_t(w.start)} AS cur, groupArray(template) AS ts,
                    groupArray(h) AS hs, groupArray(k) AS ks
                FROM (
                    SELECT ServiceName AS service, cityHash64(TraceId, SpanId) AS span,
                        {LOG_TEMPLATE} AS template, cityHash64(template) AS h, count() AS k, min(Timestamp) AS t
                    FROM otel_logs
                    WHERE {_read(w)} AND SpanId != ''
                        AND NOT {PROBLEM_LOG}
                    GROUP BY service, span, template
                )
                GROUP BY service, span
                LIMIT {MAX_SEQUENCE_SPANS} BY service, cur
            )
            ARRAY JOIN arrayEnumerate(hs) AS a
            WINDOW w AS (PARTITION BY service, hs[a])
        )
    )
)
ARRAY JOIN arrayFilter(p -> p.2 != p.1 AND ks[p.2] >= ks[p.1], arrayMap(j -> (a, j), arrayEnumerate(hs))) AS p
GROUP BY service, hs[p.1], hs[p.2]
HAVING n >= {MIN_SEQUENCE_SPANS} AND n_base >= {MIN_SEQUENCE_SPANS} AND broken_base <= {SEQUENCE_AS_A_RULE} * n_base
)
WHERE broken > 0
ORDER BY broken / n DESC, n DESC
LIMIT 1000
"""


def log_order_sql(w: Window) -> str:
    """In traces where several services log problems in the window, which service logged first: a callee
    fails before its callers report the failure, so the first to complain is nearer the cause."""
    return f"""
SELECT service, count() AS traces, countIf(t = first_t) AS first, countIf(services > 1) AS shared,
    countIf(t = first_t AND services > 1) AS first_shared
FROM (
    SELECT TraceId, ServiceName AS service, min(Timestamp) AS t,
        min(min(Timestamp)) OVER (PARTITION BY TraceId) AS first_t,
        count() OVER (PARTITION BY TraceId) AS services
    FROM otel_logs
    WHERE Timestamp >= {_t(w.start)} AND Timestamp < {_t(w.end)} AND TraceId != '' AND {PROBLEM_LOG}
    GROUP BY TraceId, service
)
GROUP BY service
ORDER BY first_shared DESC, traces DESC
LIMIT 500
"""


# The queries the per-service evidence (anomaly.signals.service_evidence) reads, in its arguments' order.
EVIDENCE_QUERIES = ("span_stats", "call_graph", "log_templates", "log_stats", "log_order", "log_statements",
                    "log_sequences")
