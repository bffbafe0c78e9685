"""Storage footprint of the exporter schema: bytes on disk per span, log record and metric point.

Feeds the ClickHouse sizing in docs/deployment.md. Writes realistic synthetic telemetry (a dozen
services, ~10 span attributes with mixed cardinality, events on errors, log lines with ids, gauge
points) into a fresh embedded store with the real migrations, merges parts, and reads
system.parts. Run: `.venv/bin/python benchmarks/storage.py [--spans 300000]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta

from otel_ai.settings import Settings
from store import Store
from store.migrations import migrate

SERVICES = ["frontend", "checkout", "cart", "payment", "shipping", "currency", "email", "ad", "recommendation",
            "product-catalog", "quote", "fraud-detection"]
OPS = ["GET /api/products", "POST /api/cart", "grpc.oteldemo.CartService/GetCart", "SELECT products",
       "redis GET", "POST /api/checkout", "grpc.oteldemo.PaymentService/Charge", "kafka publish orders"]


def _hex(rng: random.Random, n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def spans(rng: random.Random, n: int, start: datetime) -> tuple[list[str], list[list]]:
    cols = ["Timestamp", "TraceId", "SpanId", "ParentSpanId", "SpanName", "SpanKind", "ServiceName",
            "ResourceAttributes", "ScopeName", "ScopeVersion", "SpanAttributes", "Duration", "StatusCode",
            "StatusMessage", "Events.Timestamp", "Events.Name", "Events.Attributes"]
    data: list[list] = [[] for _ in cols]
    trace, parent = _hex(rng, 32), ""
    for i in range(n):
        if i % 8 == 0:
            trace, parent = _hex(rng, 32), ""
        svc = SERVICES[rng.randrange(len(SERVICES))]
        ts = start + timedelta(microseconds=i * 300 + rng.randrange(300))
        err = rng.random() < 0.02
        span_id = _hex(rng, 16)
        attrs = {
            "http.request.method": rng.choice(["GET", "POST"]), "http.route": rng.choice(OPS),
            "http.response.status_code": "500" if err else "200", "server.address": f"{svc}.svc",
            "network.peer.address": f"10.0.{rng.randrange(8)}.{rng.randrange(250)}",
            "user_agent.original": "python-requests/2.32", "app.user.id": str(rng.randrange(5000)),
            "app.product.id": f"OLJCESPC{rng.randrange(100):02d}", "app.cart.items.count": str(rng.randrange(9)),
            "thread.id": str(rng.randrange(64)),
        }
        row = [ts, trace, span_id, parent, rng.choice(OPS), rng.choice(["Server", "Client", "Internal"]), svc,
               {"service.name": svc, "service.version": "2.0.2", "host.name": f"{svc}-{rng.randrange(3)}",
                "telemetry.sdk.language": "python"},
               "opentelemetry.instrumentation.requests", "0.52b0", attrs,
               int(rng.lognormvariate(15, 1.2)), "Error" if err else "Unset", "upstream failed" if err else "",
               [ts] if err else [], ["exception"] if err else [],
               [{"exception.type": "TimeoutError", "exception.message": "deadline exceeded"}] if err else []]
        parent = span_id
        for c, v in zip(data, row, strict=True):
            c.append(v)
    return cols, data


def logs(rng: random.Random, n: int, start: datetime) -> tuple[list[str], list[list]]:
    cols = ["Timestamp", "TraceId", "SpanId", "SeverityText", "SeverityNumber", "ServiceName", "Body",
            "ResourceAttributes", "LogAttributes"]
    data: list[list] = [[] for _ in cols]
    for i in range(n):
        svc = SERVICES[rng.randrange(len(SERVICES))]
        sev = rng.choices(["INFO", "WARN", "ERROR"], [90, 8, 2])[0]
        body = rng.choice([f"order {_hex(rng, 8)} placed for user {rng.randrange(5000)}",
                           f"cart {_hex(rng, 8)} has {rng.randrange(9)} items",
                           f"payment declined: card ending {rng.randrange(10000):04d}",
                           f"request completed in {rng.randrange(900)} ms"])
        row = [start + timedelta(microseconds=i * 500), _hex(rng, 32), _hex(rng, 16), sev,
               {"INFO": 9, "WARN": 13, "ERROR": 17}[sev], svc, body,
               {"service.name": svc, "host.name": f"{svc}-{rng.randrange(3)}"}, {"logger": f"{svc}.handler"}]
        for c, v in zip(data, row, strict=True):
            c.append(v)
    return cols, data


def gauges(rng: random.Random, n: int, start: datetime) -> tuple[list[str], list[list]]:
    cols = ["ServiceName", "MetricName", "MetricUnit", "Attributes", "ResourceAttributes", "StartTimeUnix",
            "TimeUnix", "Value"]
    data: list[list] = [[] for _ in cols]
    names = ["process.cpu.utilization", "process.memory.usage", "http.server.active_requests", "runtime.gc.count"]
    for i in range(n):
        svc = SERVICES[i % len(SERVICES)]
        ts = start + timedelta(seconds=10 * (i // 48))
        row = [svc, names[(i // 12) % 4], "1", {"state": rng.choice(["idle", "used"])},
               {"service.name": svc, "host.name": f"{svc}-0"}, start, ts, rng.random() * 100]
        for c, v in zip(data, row, strict=True):
            c.append(v)
    return cols, data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", type=int, default=300_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    directory = tempfile.mkdtemp(prefix="otel-ai-storage-")
    store = Store.connect(f"chdb://{directory}", "otel")
    migrate(store, Settings(clickhouse_url=f"chdb://{directory}", ttl_days=0))
    start = datetime.now(UTC) - timedelta(hours=1)
    counts = {"otel_traces": args.spans, "otel_logs": args.spans // 2, "otel_metrics_gauge": args.spans // 2}
    t0 = time.perf_counter()
    for table, gen in (("otel_traces", spans), ("otel_logs", logs), ("otel_metrics_gauge", gauges)):
        total = counts[table]
        for offset in range(0, total, 50_000):
            cols, data = gen(rng, min(50_000, total - offset), start + timedelta(seconds=offset // 1000))
            store.insert(table, cols, data)
        store.command(f"OPTIMIZE TABLE {table} FINAL")
    elapsed = time.perf_counter() - t0
    print(f"# storage footprint (chDB {store.query('SELECT version()').scalar()}, {platform.machine()}, "
          f"{os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; generate+insert+merge {elapsed:.0f}s)")
    print("| table | rows | bytes on disk / row | uncompressed / row | ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for table in counts:
        rows, disk, raw = store.query(
            "SELECT sum(rows), sum(bytes_on_disk), sum(data_uncompressed_bytes) FROM system.parts "
            "WHERE database = 'otel' AND table = {t:String} AND active", parameters={"t": table}).rows[0]
        print(f"| {table} | {rows} | {disk / rows:.0f} B | {raw / rows:.0f} B | {raw / disk:.1f}x |")
    store.close()


if __name__ == "__main__":
    main()
