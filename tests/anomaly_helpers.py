"""Small generated telemetry for anomaly tests: frontend → checkout → payment (+ an uninstrumented db),
written straight into the exporter tables (the scorer only reads them), with an optional planted fault."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from store import Store

SPAN_COLUMNS = ["Timestamp", "TraceId", "SpanId", "ParentSpanId", "SpanName", "SpanKind", "ServiceName", "Duration",
                "StatusCode", "SpanAttributes"]


def _id(rng: random.Random, nbytes: int) -> str:
    return rng.getrandbits(8 * nbytes).to_bytes(nbytes, "big").hex()


def shop_spans(start: float, windows: int, per_window: int = 30, seed: int = 0, window_seconds: int = 30,
               fault: str | None = None, fault_from: int = 0, fault_to: int = 0) -> list[tuple]:
    """Traces GET /checkout (frontend) → PlaceOrder (checkout) → Charge (payment) → SELECT (payment → db).

    fault='payment_latency' makes payment's own work 8x slower in windows [fault_from, fault_to);
    fault='checkout_errors' makes checkout fail 60% of requests there; fault='payment_down' makes payment
    unreachable (checkout's calls fail, payment reports nothing)."""
    rng = random.Random(seed)
    rows: list[tuple] = []
    for w in range(windows):
        faulty = fault is not None and fault_from <= w < fault_to
        for _ in range(per_window):
            t = start + w * window_seconds + rng.random() * (window_seconds - 1)
            tid = _id(rng, 16)
            fe, fe_c, co, co_c, pay, pay_db = (_id(rng, 8) for _ in range(6))
            db = int(rng.lognormvariate(-5.5, 0.2) * 1e9)
            pay_self = int(rng.lognormvariate(-4.0, 0.2) * 1e9 * (8 if faulty and fault == "payment_latency" else 1))
            pay_d = pay_self + db
            co_d = pay_d + int(rng.lognormvariate(-4.5, 0.2) * 1e9)
            fe_d = co_d + int(rng.lognormvariate(-5.0, 0.2) * 1e9)
            down = faulty and fault == "payment_down"
            co_err = down or (faulty and fault == "checkout_errors" and rng.random() < 0.6)
            status = "Error" if co_err else "Unset"
            rows += [
                (t, tid, fe, "", "GET /checkout", "Server", "frontend", fe_d, status, {"http.route": "/checkout"}),
                (t, tid, fe_c, fe, "PlaceOrder", "Client", "frontend", co_d + 500_000, status, {}),
                (t, tid, co, fe_c, "PlaceOrder", "Server", "checkout", co_d, status, {}),
                (t, tid, co_c, co, "Charge", "Client", "checkout", pay_d + 300_000, "Error" if down else "Unset",
                 {"server.address": "payment"}),
            ]
            if not down:  # payment_down: connection refused, payment sees nothing
                rows += [
                    (t, tid, pay, co_c, "Charge", "Server", "payment", pay_d, "Unset", {}),
                    (t, tid, pay_db, pay, "SELECT payments", "Client", "payment", db, "Unset",
                     {"db.system": "postgresql"}),
                ]
    return rows


def insert_spans(store: Store, rows: list[tuple]) -> None:
    data = [[datetime.fromtimestamp(r[0], UTC) for r in rows]] + [[r[i] for r in rows] for i in range(1, 10)]
    store.insert("otel_traces", SPAN_COLUMNS, data)


def insert_logs(store: Store, rows: list[tuple[float, str, str, int]]) -> None:
    """(time, service, body, severity number) rows."""
    store.insert(
        "otel_logs",
        ["Timestamp", "ServiceName", "Body", "SeverityNumber", "SeverityText"],
        [[datetime.fromtimestamp(r[0], UTC) for r in rows], [r[1] for r in rows], [r[2] for r in rows],
         [r[3] for r in rows], ["ERROR" if r[3] >= 17 else "INFO" for r in rows]],
    )


def insert_gauges(store: Store, rows: list[tuple[float, str, str, float]]) -> None:
    """(time, service, metric name, value) gauge points."""
    store.insert(
        "otel_metrics_gauge",
        ["TimeUnix", "ServiceName", "MetricName", "Value"],
        [[datetime.fromtimestamp(r[0], UTC) for r in rows], [r[1] for r in rows], [r[2] for r in rows],
         [r[3] for r in rows]],
    )


TOPOLOGY_COLUMNS = SPAN_COLUMNS + ["ResourceAttributes", "Links.TraceId", "Links.SpanId", "Links.TraceState",
                                   "Links.Attributes"]
NODES = {"web": "node-a", "orders": "node-b", "pricing": "node-c", "billing": "node-c", "reports": "node-c"}


def topology_telemetry(start: float, windows: int, per_window: int = 20, seed: int = 0, window_seconds: int = 30,
                       fault: str | None = None, fault_from: int = 0, fault_to: int = 0
                       ) -> tuple[list[tuple], list[tuple]]:
    """(spans, gauges) of web → orders (publishes to topic 'order-events', consumed by billing through span links)
    and web → pricing, with services placed on nodes (`k8s.node.name`) and a CPU gauge per service.

    fault='flood': orders publishes 10 messages per order instead of 1, so billing falls behind (slow);
    fault='noisy': reports (a batch job on node-c) burns CPU, its neighbours pricing and billing slow down."""
    rng = random.Random(seed)
    spans: list[tuple] = []
    gauges: list[tuple] = []

    def res(svc: str) -> dict[str, str]:
        return {"service.name": svc, "k8s.node.name": NODES[svc]}

    def span(t: float, tid: str, sid: str, parent: str, name: str, kind: str, svc: str, dur: float,
             attrs: dict | None = None, link: tuple[str, str] | None = None) -> tuple:
        links = ([link[0]], [link[1]], [""], [{}]) if link else ([], [], [], [])
        return (t, tid, sid, parent, name, kind, svc, int(dur * 1e9), "Unset", attrs or {}, res(svc), *links)

    for w in range(windows):
        faulty = fault is not None and fault_from <= w < fault_to
        starved = 5.0 if faulty and fault == "noisy" else 1.0  # CPU-starved work takes 5x as long
        messages = 10 if faulty and fault == "flood" else 1
        for _ in range(per_window):
            t = start + w * window_seconds + rng.random() * (window_seconds - 2)
            tid = _id(rng, 16)
            web, web_o, orders, web_p, pricing = (_id(rng, 8) for _ in range(5))
            price = rng.lognormvariate(-4.6, 0.2) * starved
            order = rng.lognormvariate(-4.0, 0.2)
            spans += [
                span(t, tid, web, "", "GET /buy", "Server", "web", order + price + 0.004),
                span(t, tid, web_p, web, "GetPrice", "Client", "web", price + 0.001, {"server.address": "pricing"}),
                span(t, tid, pricing, web_p, "GetPrice", "Server", "pricing", price),
                span(t, tid, web_o, web, "PlaceOrder", "Client", "web", order + 0.001, {"server.address": "orders"}),
                span(t, tid, orders, web_o, "PlaceOrder", "Server", "orders", order),
            ]
            for _m in range(messages):
                pub = _id(rng, 8)
                spans.append(span(t, tid, pub, orders, "orders publish", "Producer", "orders", 0.0005,
                                  {"messaging.destination.name": "order-events", "server.address": "kafka"}))
                work = rng.lognormvariate(-3.5, 0.2) * starved
                if faulty and fault == "flood":
                    work += rng.uniform(0.4, 1.2)  # queued behind the flood
                spans.append(span(t + 0.01, _id(rng, 16), _id(rng, 8), "", "orders process", "Consumer", "billing",
                                  work, {"messaging.destination.name": "order-events"}, link=(tid, pub)))
        if w % 3 == 0:  # a daily batch job, a few spans
            spans.append(span(start + w * window_seconds + 1, _id(rng, 16), _id(rng, 8), "", "POST /report", "Server",
                              "reports", rng.lognormvariate(-3.0, 0.2)))
        for svc in NODES:
            for k in range(3):  # a gauge every 10 s
                cpu = 0.1 + rng.gauss(0, 0.01)
                if faulty and fault == "noisy" and svc == "reports":
                    cpu = 0.98
                gauges.append((start + w * window_seconds + 10 * k + 5, svc, "k8s.pod.cpu.utilization", cpu,
                               res(svc)))
    return spans, gauges


def insert_topology(store: Store, spans: list[tuple], gauges: list[tuple]) -> None:
    data = [[datetime.fromtimestamp(r[0], UTC) for r in spans]] + [[r[i] for r in spans]
                                                                    for i in range(1, len(TOPOLOGY_COLUMNS))]
    store.insert("otel_traces", TOPOLOGY_COLUMNS, data)
    store.insert(
        "otel_metrics_gauge",
        ["TimeUnix", "ServiceName", "MetricName", "Value", "ResourceAttributes"],
        [[datetime.fromtimestamp(r[0], UTC) for r in gauges]] + [[r[i] for r in gauges] for i in range(1, 5)],
    )
