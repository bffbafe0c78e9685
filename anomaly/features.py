"""Per-entity, per-window features computed in ClickHouse.

An entity is (service, operation, span_kind): operation '' with kind 'service' is the service as a
whole (its incoming requests); 'server' entities are the operations a service serves (Server and
Consumer spans, or local roots); 'client' entities are the calls a service makes (Client and Producer
spans), so a slow or failing dependency shows up on the caller even when it is not instrumented.

Everything heavy (grouping, quantiles, joins) runs in SQL; Python only assembles the rows into a
dense matrix with NaN for what a source did not report (no logs, no metrics, no children).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from store import Store
from store.severity import ERROR, SEVERITY

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Feature:
    """One feature: how it is shown to a person, and how it is transformed before normalisation."""

    name: str
    label: str
    unit: str  # "s", "ratio", "count", "bytes", "share", "per_request"
    transform: str = "none"  # "log1p" for counts, "logms" for durations in seconds, "none"
    upward_only: bool = True  # only increases are anomalous (latency, errors); False: both directions
    floor: float = 0.05  # minimal scale (in transformed units) so a constant history is not infinitely sharp
    rel_floor: float = 0.0  # minimal scale relative to |center|
    min_delta: float = 0.0  # raw changes smaller than this are never anomalous (latency: seconds)


FEATURES: list[Feature] = [
    Feature("requests", "request count", "count", "log1p", upward_only=False, floor=0.25),
    Feature("error_ratio", "error ratio", "ratio", floor=0.02),
    Feature("p50", "p50", "s", "logms", floor=0.12, min_delta=0.02),
    Feature("p95", "p95", "s", "logms", floor=0.15, min_delta=0.05),
    Feature("p99", "p99", "s", "logms", floor=0.2, min_delta=0.05),
    Feature("self_p95", "self time p95", "s", "logms", floor=0.15, min_delta=0.05),
    Feature("calls_per_request", "downstream calls per request", "per_request", upward_only=False,
            floor=0.1, rel_floor=0.1),
    Feature("downstream_shift", "downstream call mix shift", "share", floor=0.05),
    Feature("error_logs", "error logs", "count", "log1p", floor=0.4),
    Feature("new_templates", "new log templates", "count", "log1p", floor=0.5),
    Feature("cpu", "CPU", "ratio", floor=0.03, rel_floor=0.05),
    Feature("memory", "memory", "bytes", upward_only=True, floor=1.0, rel_floor=0.05),
]
FEATURE_NAMES = [f.name for f in FEATURES]
FEATURE_INDEX = {f.name: i for i, f in enumerate(FEATURES)}
N_FEATURES = len(FEATURES)

Entity = tuple[str, str, str]  # (service, operation, span_kind: 'service' | 'server' | 'client')

# Metric names (regex, case-insensitive) read as CPU and memory where the telemetry has them.
CPU_METRIC = r"(?i)cpu.*(utili[sz]ation|usage|percent|load)"
MEMORY_METRIC = r"(?i)mem.*(usage|utili[sz]ation|rss|used|heap|working_set)"

_IN = "(SpanKind IN ('Server', 'Consumer') OR ParentSpanId = '')"
_OUT = "SpanKind IN ('Client', 'Producer')"


def entity_label(entity: Entity) -> str:
    """`service` or `service/operation` (client calls as `service→operation`) for explanations."""
    service, operation, kind = entity
    if not operation:
        return service
    return f"{service}→{operation}" if kind == "client" else f"{service}/{operation}"


def to_epoch(ts: datetime | float | int) -> float:
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        return ts.timestamp()
    return float(ts)


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


@dataclass
class FeatureTable:
    """Rows of (entity, window start) with a value per feature (NaN = not reported)."""

    window_seconds: int
    entities: list[Entity] = field(default_factory=list)
    entity_idx: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    window: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # epoch seconds
    values: np.ndarray = field(default_factory=lambda: np.zeros((0, N_FEATURES)))
    # per row: {callee: calls} for service rows (downstream shares); empty for other rows
    calls: list[dict[str, float]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.window)

    def entity_of(self, row: int) -> Entity:
        return self.entities[int(self.entity_idx[row])]

    def select(self, mask: np.ndarray) -> FeatureTable:
        return self.take(np.flatnonzero(mask))

    def take(self, idx: np.ndarray) -> FeatureTable:
        return FeatureTable(
            window_seconds=self.window_seconds,
            entities=self.entities,
            entity_idx=self.entity_idx[idx],
            window=self.window[idx],
            values=self.values[idx],
            calls=[self.calls[i] for i in idx],
        )

    def windows(self) -> np.ndarray:
        return np.unique(self.window)

    def by_window(self) -> list[FeatureTable]:
        """One table per window, in time order."""
        order = np.argsort(self.window, kind="stable")
        _, starts = np.unique(self.window[order], return_index=True)
        return [self.take(chunk) for chunk in np.split(order, starts[1:])] if len(order) else []

    def rows_by_entity(self) -> dict[Entity, np.ndarray]:
        out: dict[Entity, np.ndarray] = {}
        order = np.argsort(self.entity_idx, kind="stable")
        ids, starts = np.unique(self.entity_idx[order], return_index=True)
        bounds = list(starts) + [len(order)]
        for k, e in enumerate(ids):
            out[self.entities[int(e)]] = order[bounds[k] : bounds[k + 1]]
        return out

    def concat(self, other: FeatureTable) -> FeatureTable:
        """Rows of both tables (entity lists merged)."""
        entities = sorted(set(self.entities) | set(other.entities))
        index = {e: i for i, e in enumerate(entities)}
        remap = [np.array([index[e] for e in t.entities], dtype=np.int64) for t in (self, other)]
        return FeatureTable(
            window_seconds=self.window_seconds,
            entities=entities,
            entity_idx=np.concatenate([remap[0][self.entity_idx] if len(self) else np.zeros(0, dtype=np.int64),
                                       remap[1][other.entity_idx] if len(other) else np.zeros(0, dtype=np.int64)]),
            window=np.concatenate([self.window, other.window]),
            values=np.concatenate([self.values, other.values]),
            calls=self.calls + other.calls,
        )

    @classmethod
    def from_records(
        cls, window_seconds: int, records: dict[tuple[Entity, int], dict[str, float]],
        calls: dict[tuple[Entity, int], dict[str, float]] | None = None,
    ) -> FeatureTable:
        """Build from {(entity, window_start): {feature: value}} (used by tests and generators)."""
        calls = calls or {}
        entities = sorted({e for e, _ in records})
        index = {e: i for i, e in enumerate(entities)}
        keys = sorted(records, key=lambda k: (k[1], index[k[0]]))
        values = np.full((len(keys), N_FEATURES), np.nan)
        for r, key in enumerate(keys):
            for name, v in records[key].items():
                values[r, FEATURE_INDEX[name]] = _finite(v)
        return cls(
            window_seconds=window_seconds,
            entities=entities,
            entity_idx=np.array([index[e] for e, _ in keys], dtype=np.int64),
            window=np.array([w for _, w in keys], dtype=np.int64),
            values=values,
            calls=[dict(calls.get(k, {})) for k in keys],
        )


def _finite(v: object) -> float:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) else math.nan


def _bounds(start: float, end: float, column: str = "Timestamp") -> str:
    return (
        f"{column} >= fromUnixTimestamp64Milli(toInt64({int(start * 1000)})) "
        f"AND {column} < fromUnixTimestamp64Milli(toInt64({int(end * 1000)}))"
    )


def _ws(column: str, window_seconds: int) -> str:
    return f"intDiv(toUnixTimestamp64Milli({column}), {window_seconds * 1000}) * {window_seconds}"


def _safe_query(store: Store, sql: str, what: str) -> list[tuple]:
    """A source that is missing or malformed (no metrics tables, odd types) must not stop scoring."""
    try:
        return store.query(sql).rows
    except Exception as exc:  # noqa: BLE001 - one source failing leaves its features NaN
        log.warning("anomaly features: %s unavailable: %s", what, str(exc).splitlines()[0][:300])
        return []


def span_sql(start: float, end: float, w: int) -> str:
    """Request count, errors and duration quantiles per service (incoming), per operation and per call."""
    return f"""
SELECT ws, svc, op, dir, count() AS n, countIf(StatusCode = 'Error') AS errors,
       quantiles(0.5, 0.95, 0.99)(Duration) AS q
FROM (
    SELECT {_ws('Timestamp', w)} AS ws, ServiceName AS svc, SpanName AS op,
           multiIf({_IN}, 'server', {_OUT}, 'client', 'internal') AS dir, StatusCode, Duration
    FROM otel_traces WHERE {_bounds(start, end)}
)
WHERE dir != 'internal'
GROUP BY GROUPING SETS ((ws, svc, op, dir), (ws, svc, dir))
HAVING NOT (op = '' AND dir = 'client')
"""


def self_time_sql(start: float, end: float, w: int) -> str:
    """Time a service spends itself per request: its local roots minus its outgoing (Client) calls.

    Aggregated per (trace, service) so internal spans between the server span and its calls do not
    matter; per operation only when the trace entered the service once (unambiguous)."""
    return f"""
SELECT ws, svc, op, quantiles(0.95)(self_ns)[1] AS self_p95
FROM (
    SELECT {_ws('t0', w)} AS ws, svc, if(roots = 1, root_op, '') AS op1, self_ns
    FROM (
        SELECT TraceId, ServiceName AS svc, min(Timestamp) AS t0,
               countIf({_IN}) AS roots, anyIf(SpanName, {_IN}) AS root_op,
               greatest(toInt64(sumIf(Duration, {_IN})) - toInt64(sumIf(Duration, SpanKind = 'Client')), 0)
                   / greatest(roots, 1) AS self_ns
        FROM otel_traces WHERE {_bounds(start, end)}
        GROUP BY TraceId, svc
        HAVING roots >= 1
    )
)
ARRAY JOIN if(op1 = '', [''], [op1, '']) AS op
GROUP BY ws, svc, op
"""


def calls_sql(start: float, end: float, w: int) -> str:
    """Outgoing calls per (window, caller, callee). The callee is the service of the child span when it
    is instrumented, else the peer attributes (peer.service, db.system, server.address) or the span name."""
    return f"""
SELECT {_ws('c.Timestamp', w)} AS ws, c.ServiceName AS svc,
       if(ch.child_svc != '' AND ch.child_svc != c.ServiceName, ch.child_svc,
          coalesce(nullIf(c.SpanAttributes['peer.service'], ''), nullIf(c.SpanAttributes['db.system'], ''),
                   nullIf(c.SpanAttributes['messaging.destination.name'], ''),
                   nullIf(c.SpanAttributes['server.address'], ''), c.SpanName)) AS callee,
       count() AS calls
FROM (
    SELECT Timestamp, TraceId, SpanId, ServiceName, SpanName, SpanAttributes
    FROM otel_traces WHERE {_bounds(start, end)} AND {_OUT}
) AS c
LEFT JOIN (
    SELECT TraceId, ParentSpanId, any(ServiceName) AS child_svc
    FROM otel_traces WHERE {_bounds(start - 60, end + 60)} AND ParentSpanId != ''
    GROUP BY TraceId, ParentSpanId
) AS ch ON c.TraceId = ch.TraceId AND c.SpanId = ch.ParentSpanId
GROUP BY ws, svc, callee
"""


def logs_sql(start: float, end: float, w: int, template_lookback: float) -> str:
    """Error logs and new log templates (numbers and ids masked) per service and window. A template is
    new when the service did not log it in the lookback before the window."""
    template = (
        "cityHash64(left(replaceRegexpAll(Body, '[0-9a-fA-F]{8,}|[0-9]+(\\\\.[0-9]+)?|\"[^\"]*\"', '#'), 160))"
    )
    error = f"({SEVERITY} >= {ERROR})"
    return f"""
SELECT ws, svc, sum(errors) AS error_logs, sum(new_t) AS new_templates
FROM (
    SELECT {_ws('Timestamp', w)} AS ws, ServiceName AS svc, countIf({error}) AS errors, 0 AS new_t
    FROM otel_logs WHERE {_bounds(start, end)}
    GROUP BY ws, svc
    UNION ALL
    SELECT {_ws('first', w)} AS ws, svc, 0 AS errors, count() AS new_t
    FROM (
        SELECT ServiceName AS svc, {template} AS t, min(Timestamp) AS first
        FROM otel_logs WHERE {_bounds(start - template_lookback, end)}
        GROUP BY svc, t
    )
    WHERE first >= fromUnixTimestamp64Milli(toInt64({int(start * 1000)}))
    GROUP BY ws, svc
)
GROUP BY ws, svc
"""


def metrics_sql(start: float, end: float, w: int) -> str:
    """Average CPU and memory gauges per service and window (non-finite points ignored)."""
    bounds = _bounds(start, end, "TimeUnix")
    return f"""
SELECT ws, svc, avgIf(Value, match(MetricName, '{CPU_METRIC}')) AS cpu,
       avgIf(Value, match(MetricName, '{MEMORY_METRIC}')) AS memory
FROM (
    SELECT {_ws('TimeUnix', w)} AS ws, ServiceName AS svc, MetricName, Value
    FROM otel_metrics_gauge WHERE {bounds} AND isFinite(Value)
    UNION ALL
    SELECT {_ws('TimeUnix', w)} AS ws, ServiceName AS svc, MetricName, Value
    FROM otel_metrics_sum WHERE {bounds} AND isFinite(Value) AND IsMonotonic = false
)
WHERE match(MetricName, '{CPU_METRIC}') OR match(MetricName, '{MEMORY_METRIC}')
GROUP BY ws, svc
"""


def compute_features(
    store: Store,
    start: datetime | float,
    end: datetime | float,
    window_seconds: int = 30,
    template_lookback_seconds: float = 3600.0,
    max_operations_per_service: int = 50,
) -> FeatureTable:
    """Features of every entity active in [start, end), one row per (entity, window)."""
    w = int(window_seconds)
    s = math.floor(to_epoch(start) / w) * w
    e = math.ceil(to_epoch(end) / w) * w
    records: dict[tuple[Entity, int], dict[str, float]] = defaultdict(dict)
    calls: dict[tuple[Entity, int], dict[str, float]] = defaultdict(dict)

    for ws, svc, op, direction, n, errors, q in _safe_query(store, span_sql(s, e, w), "spans"):
        kind = "service" if op == "" else direction
        rec = records[((svc, op, kind), int(ws))]
        rec["requests"] = float(n)
        rec["error_ratio"] = errors / n if n else math.nan
        for name, v in zip(("p50", "p95", "p99"), q, strict=False):
            rec[name] = _finite(v) / 1e9
    for ws, svc, op, self_p95 in _safe_query(store, self_time_sql(s, e, w), "self time"):
        key = ((svc, op, "server" if op else "service"), int(ws))
        if key in records:
            records[key]["self_p95"] = _finite(self_p95) / 1e9
    for ws, svc, callee, n in _safe_query(store, calls_sql(s, e, w), "downstream calls"):
        key = ((svc, "", "service"), int(ws))
        if key in records:
            calls[key][str(callee)] = float(n)
    for ws, svc, error_logs, new_templates in _safe_query(
        store, logs_sql(s, e, w, template_lookback_seconds), "logs"
    ):
        key = ((svc, "", "service"), int(ws))
        if key in records:
            records[key]["error_logs"] = float(error_logs)
            records[key]["new_templates"] = float(new_templates)
    for ws, svc, cpu, memory in _safe_query(store, metrics_sql(s, e, w), "metrics"):
        if not svc:
            continue
        # a service reporting resources but no spans in this window (a batch job, a quiet consumer) still
        # gets its row: CPU burnt with no traffic is exactly what starves its neighbours
        rec = records[((svc, "", "service"), int(ws))]
        rec["cpu"] = _finite(cpu)
        rec["memory"] = _finite(memory)

    for key, rec in records.items():
        if key[0][2] != "service":
            continue
        c = calls.get(key)
        total = sum(c.values()) if c else 0.0
        rec["calls_per_request"] = total / rec["requests"] if rec.get("requests") else math.nan
        rec.setdefault("error_logs", 0.0)  # no error log in a window is a real 0, not a missing value
        rec.setdefault("new_templates", 0.0)
    records = _limit_operations(records, max_operations_per_service)
    table = FeatureTable.from_records(w, records, calls)
    return table


def _limit_operations(
    records: dict[tuple[Entity, int], dict[str, float]], limit: int
) -> dict[tuple[Entity, int], dict[str, float]]:
    """Keep each service's busiest operations so a high-cardinality span name cannot explode the model."""
    volume: dict[Entity, float] = defaultdict(float)
    for (entity, _), rec in records.items():
        volume[entity] += rec.get("requests", 0.0)
    per_service: dict[str, list[Entity]] = defaultdict(list)
    for entity in volume:
        if entity[2] != "service":
            per_service[entity[0]].append(entity)
    keep = {e for e in volume if e[2] == "service"}
    for ents in per_service.values():
        keep.update(sorted(ents, key=lambda x: (-volume[x], x))[:limit])
    return {k: v for k, v in records.items() if k[0] in keep}


def downstream_shift(calls: dict[str, float], reference: dict[str, float]) -> float:
    """Total variation distance between this window's call mix and the reference mix (0 = same)."""
    total = sum(calls.values())
    if total <= 0 or not reference:
        return math.nan
    keys = set(calls) | set(reference)
    return 0.5 * sum(abs(calls.get(k, 0.0) / total - reference.get(k, 0.0)) for k in keys)


def call_graph(store: Store, start: datetime | float, end: datetime | float) -> dict[tuple[str, str], int]:
    """Caller service → callee (service or uninstrumented peer) with call counts, from parent/child spans."""
    s, e = to_epoch(start), to_epoch(end)
    w = max(int(e - s) + 1, 1)
    edges: dict[tuple[str, str], int] = defaultdict(int)
    for _window, svc, callee, n in _safe_query(store, calls_sql(s, e, w), "call graph"):
        if svc != callee:
            edges[(str(svc), str(callee))] += int(n)
    return dict(edges)
