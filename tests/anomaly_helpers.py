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
