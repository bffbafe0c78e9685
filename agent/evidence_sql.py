"""The analyst's own read-only queries (run through the SQL guard as `run_sql` calls, so they are
evidence like any model-written SQL): per-operation self time and errors in the window versus the
baseline, and the cross-service call graph with each client call's target.

Self time = a span's duration minus its direct children's durations: the time a service spent
itself rather than waiting on what it called. It is what separates "slow because payment is
slow" from "slow itself".

Spans are joined to their parents on cityHash64(TraceId, SpanId): a UInt64 key costs about half
the CPU of the two strings (a collision among 10 million spans has odds near 1 in 10^6).
"""

from __future__ import annotations

from agent.deps import Window


def _t(value: object) -> str:
    from tools.timewindow import ch_time

    return ch_time(value)  # type: ignore[arg-type]


# The fields a client span's callee is named by, most specific first (OTel semantic conventions).
PEER_EXPR = (
    "coalesce(nullIf(SpanAttributes['peer.service'], ''), nullIf(SpanAttributes['server.address'], ''), "
    "nullIf(SpanAttributes['net.peer.name'], ''), nullIf(SpanAttributes['rpc.service'], ''), "
    "nullIf(SpanAttributes['db.system'], ''), nullIf(SpanAttributes['messaging.destination.name'], ''), '')"
)


def span_stats_sql(w: Window) -> str:
    """Per (service, operation, kind): counts, latency, self time and errors, window vs baseline."""
    return f"""
WITH spans AS (
    SELECT cityHash64(TraceId, SpanId) AS k, if(ParentSpanId = '', 0, cityHash64(TraceId, ParentSpanId)) AS pk,
           ServiceName, SpanName, SpanKind, Duration, StatusCode, StatusMessage,
           Timestamp >= {_t(w.start)} AS cur, {PEER_EXPR} AS peer,
           SpanAttributes['messaging.destination.name'] AS destination
    FROM otel_traces
    WHERE Timestamp >= {_t(w.baseline_start)} AND Timestamp < {_t(w.end)}
), children AS (
    SELECT pk AS k, sum(Duration) AS child_ns, count() AS child_n,
           countIf(StatusCode = 'Error') AS child_errors
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


def call_graph_sql(w: Window) -> str:
    """Cross-service edges (caller -> callee) seen in the window or the baseline."""
    return f"""
WITH spans AS (
    SELECT cityHash64(TraceId, SpanId) AS k, cityHash64(TraceId, ParentSpanId) AS pk, ServiceName, SpanName,
           Timestamp >= {_t(w.start)} AS cur
    FROM otel_traces
    WHERE Timestamp >= {_t(w.baseline_start)} AND Timestamp < {_t(w.end)}
)
SELECT p.ServiceName AS caller, p.SpanName AS caller_operation, c.ServiceName AS callee,
       c.SpanName AS callee_operation, countIf(c.cur) AS n, countIf(NOT c.cur) AS n_base
FROM spans AS c INNER JOIN spans AS p ON c.pk = p.k
WHERE c.ServiceName != p.ServiceName
GROUP BY caller, caller_operation, callee, callee_operation
ORDER BY n + n_base DESC
LIMIT 2000
"""


def log_stats_sql(w: Window) -> str:
    """Warning/error log lines per service, window vs baseline, with an example body."""
    return f"""
SELECT ServiceName AS service,
    countIf(Timestamp >= {_t(w.start)} AND SeverityNumber >= 17) AS errors,
    countIf(Timestamp < {_t(w.start)} AND SeverityNumber >= 17) AS errors_base,
    countIf(Timestamp >= {_t(w.start)} AND SeverityNumber BETWEEN 13 AND 16) AS warnings,
    countIf(Timestamp < {_t(w.start)} AND SeverityNumber BETWEEN 13 AND 16) AS warnings_base,
    countIf(Timestamp >= {_t(w.start)}) AS n, countIf(Timestamp < {_t(w.start)}) AS n_base,
    anyIf(Body, Timestamp >= {_t(w.start)} AND SeverityNumber >= 17) AS error_example,
    anyIf(Body, Timestamp >= {_t(w.start)} AND SeverityNumber BETWEEN 13 AND 16) AS warning_example
FROM otel_logs
WHERE Timestamp >= {_t(w.baseline_start)} AND Timestamp < {_t(w.end)}
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
WHERE TimeUnix >= {_t(w.baseline_start)} AND TimeUnix < {_t(w.end)} AND service != ''
    AND match(MetricName, '{RESOURCE_METRIC_RE}')
GROUP BY service, metric
ORDER BY service, metric
LIMIT 2000
"""
