"""What root-cause ranking needs to know beyond synchronous parent/child calls, all read from the telemetry.

- Asynchronous edges: a producer's messages reach consumers through a broker, so the consumer span is
  linked to (OTel span links) or shares the destination name with the producer span, not a child of it.
  Load flows along these edges (a flood of messages slows the consumers) but slowness never flows back.
- Placement: services sharing a node or host (`k8s.node.name`, else `host.name` resource attributes)
  compete for its CPU, so one service burning CPU explains its neighbours getting slower.
- Unreachable peers: a caller's failing client spans with no child span, whose peer name is a service
  that is instrumented (it reported in the lookback), mean that service was not reached at all.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from anomaly.features import _bounds, _safe_query, calls_sql, to_epoch
from store import Store

_NODE = ("coalesce(nullIf(ResourceAttributes['k8s.node.name'], ''), nullIf(ResourceAttributes['host.name'], ''), "
         "'')")
_PEER = ("coalesce(nullIf(SpanAttributes['peer.service'], ''), nullIf(SpanAttributes['server.address'], ''), "
         "nullIf(SpanAttributes['net.peer.name'], ''), '')")


@dataclass
class Topology:
    """Edges and placement of the services active around one time range."""

    calls: dict[tuple[str, str], int] = field(default_factory=dict)  # synchronous caller → callee
    messages: dict[tuple[str, str], int] = field(default_factory=dict)  # producer → consumer service
    nodes: dict[str, set[str]] = field(default_factory=dict)  # service → nodes/hosts it runs on
    # (caller, client operation) → (peer service, calls in range, failed calls without a child span)
    unreached: dict[tuple[str, str], tuple[str, int, int]] = field(default_factory=dict)
    # caller → callee (service, peer or destination): call rate in the range / rate in the lookback before
    surge: dict[tuple[str, str], float] = field(default_factory=dict)
    destinations: dict[tuple[str, str], str] = field(default_factory=dict)  # (producer, consumer) → destination

    def load_ratio(self, caller: str, callee: str) -> float:
        """How much the caller's calls or messages to `callee` grew against the lookback (1 = unchanged)."""
        direct = self.surge.get((caller, callee), 0.0)
        dest = self.destinations.get((caller, callee))
        return max(direct, self.surge.get((caller, dest), 0.0) if dest else 0.0)

    def downstream(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for caller, callee in self.calls:
            out[caller].add(callee)
        return out

    def upstream(self) -> dict[str, set[str]]:
        """Callers and producers of each service (both carry load to it)."""
        out: dict[str, set[str]] = defaultdict(set)
        for caller, callee in list(self.calls) + list(self.messages):
            out[callee].add(caller)
        return out

    def neighbours(self, service: str) -> set[str]:
        mine = self.nodes.get(service, set())
        return {s for s, n in self.nodes.items() if s != service and n & mine}


def messaging_sql(start: float, end: float, lookback: float) -> str:
    """Producer → consumer services: consumer spans linked to producer spans, plus producers and consumers
    of the same messaging destination (instrumentations that do not link)."""
    return f"""
SELECT p.svc, c.svc, '' AS dest, count() AS n
FROM (
    SELECT ServiceName AS svc, l_tid, l_sid
    FROM otel_traces ARRAY JOIN Links.TraceId AS l_tid, Links.SpanId AS l_sid
    WHERE {_bounds(start, end)} AND SpanKind = 'Consumer'
) AS c
INNER JOIN (
    SELECT TraceId, SpanId, ServiceName AS svc
    FROM otel_traces WHERE {_bounds(start - lookback, end)} AND SpanKind = 'Producer'
) AS p ON c.l_tid = p.TraceId AND c.l_sid = p.SpanId
WHERE p.svc != c.svc
GROUP BY p.svc, c.svc
UNION ALL
SELECT p.svc, c.svc, p.dest, p.n
FROM (
    SELECT ServiceName AS svc, SpanAttributes['messaging.destination.name'] AS dest, count() AS n
    FROM otel_traces WHERE {_bounds(start, end)} AND SpanKind = 'Producer' AND dest != ''
    GROUP BY svc, dest
) AS p
INNER JOIN (
    SELECT DISTINCT ServiceName AS svc,
           coalesce(nullIf(SpanAttributes['messaging.destination.name'], ''),
                    nullIf(SpanAttributes['messaging.source.name'], ''), '') AS dest
    FROM otel_traces WHERE {_bounds(start - lookback, end)} AND SpanKind = 'Consumer'
) AS c ON p.dest = c.dest
WHERE p.svc != c.svc AND c.dest != ''
"""


def nodes_sql(start: float, end: float) -> str:
    """Service → node or host, from the resource attributes of spans and gauges."""
    return f"""
SELECT svc, node FROM (
    SELECT DISTINCT ServiceName AS svc, {_NODE} AS node FROM otel_traces WHERE {_bounds(start, end)}
    UNION ALL
    SELECT DISTINCT ServiceName AS svc, {_NODE} AS node FROM otel_metrics_gauge
    WHERE {_bounds(start, end, 'TimeUnix')}
)
WHERE svc != '' AND node != ''
GROUP BY svc, node
"""


def unreached_sql(start: float, end: float, lookback: float) -> str:
    """Client calls per (caller, operation, peer) and how many failed without reaching anything (no child
    span), where the peer name is a service that reported spans in the lookback (first DNS label too)."""
    return f"""
SELECT c.svc, c.op, k.svc AS peer, count() AS n, countIf(c.failed AND ch.has_child = 0) AS unreached
FROM (
    SELECT TraceId, SpanId, ServiceName AS svc, SpanName AS op, StatusCode = 'Error' AS failed,
           {_PEER} AS peer
    FROM otel_traces WHERE {_bounds(start, end)} AND SpanKind IN ('Client', 'Producer')
) AS c
INNER JOIN (
    SELECT DISTINCT ServiceName AS svc FROM otel_traces WHERE {_bounds(start - lookback, end)}
) AS k ON k.svc = c.peer OR k.svc = splitByChar('.', c.peer)[1]
LEFT JOIN (
    SELECT TraceId, ParentSpanId, 1 AS has_child
    FROM otel_traces WHERE {_bounds(start - 60, end + 60)} AND ParentSpanId != ''
    GROUP BY TraceId, ParentSpanId
) AS ch ON c.TraceId = ch.TraceId AND c.SpanId = ch.ParentSpanId
WHERE k.svc != c.svc
GROUP BY c.svc, c.op, peer
"""


def topology(store: Store, start: object, end: object, lookback: float = 900.0) -> Topology:
    """Calls, message flows, placement and unreached peers in [start, end) (sources missing → left empty)."""
    s, e = to_epoch(start), to_epoch(end)  # type: ignore[arg-type]
    topo = Topology()
    w = max(int(e - s) + 1, 1)
    calls: dict[tuple[str, str], int] = defaultdict(int)
    for _window, svc, callee, n in _safe_query(store, calls_sql(s, e, w), "call graph"):
        if svc != callee:
            calls[(str(svc), str(callee))] += int(n)
    before: dict[tuple[str, str], int] = defaultdict(int)
    for _window, svc, callee, n in _safe_query(store, calls_sql(s - lookback, s, int(lookback) + 1), "call rates"):
        before[(str(svc), str(callee))] += int(n)
    for edge, n in calls.items():
        if n >= 10:  # a handful of calls is no surge
            topo.surge[edge] = (n / max(e - s, 1.0)) / max(before.get(edge, 0) / lookback, 1.0 / lookback)
    messages: dict[tuple[str, str], int] = defaultdict(int)
    for producer, consumer, dest, n in _safe_query(store, messaging_sql(s, e, lookback), "message flows"):
        messages[(str(producer), str(consumer))] += int(n)
        if dest:
            topo.destinations[(str(producer), str(consumer))] = str(dest)
    # a producer's span names its destination (a topic), not its consumers: the topic is not a service
    topo.messages = dict(messages)
    topo.calls = dict(calls)
    nodes: dict[str, set[str]] = defaultdict(set)
    for svc, node in _safe_query(store, nodes_sql(s, e), "placement"):
        nodes[str(svc)].add(str(node))
    topo.nodes = dict(nodes)
    for svc, op, peer, n, unreached in _safe_query(store, unreached_sql(s, e, lookback), "unreached peers"):
        if int(unreached) > 0:
            topo.unreached[(str(svc), str(op))] = (str(peer), int(n), int(unreached))
    return topo
