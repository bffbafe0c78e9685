"""Ingest throughput: pre-serialized OTLP/gRPC exports into a real `otel-ai serve`, per decoder and signal.

    .venv/bin/python benchmarks/ingest.py [--seconds 20] [--streams 8] [--spans 1000]
        [--decoders clickhouse,python] [--signals traces,logs,metrics] [--big 100000] [--profile]

For each decoder (`OTEL_AI_INGEST_DECODER`: `clickhouse` decodes OTLP inside ClickHouse, `python` is
the reference mapper) one `otel-ai serve` (anomaly scorer off, fresh data directory) receives, signal
after signal, pre-serialized export requests (~1,000 items, ~10 attributes each, 4 resources) on
several concurrent gRPC streams for a fixed time. A request counts only once acknowledged, which is
after its rows are committed. Reports items/s, p50/p99 export latency, the server's CPU time per item
(from /proc: comparable on a shared machine, unlike wall time), the ratio to protobuf-parse-only of
the same bytes in this process, and the latency of one `--big`-item request; after a SIGTERM it checks
that every acknowledged item is in its table. Decoders run one after the other in the same
invocation, so their ratio is measured under the same conditions (the load average is printed).
`--profile` profiles the Python pipeline's stages in-process.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import os
import platform
import pstats
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest.mapping import traces_rows  # noqa: E402
from tests.fixtures.server import make_server, query_data_dir  # noqa: E402

SERVICES = ("frontend", "checkout", "payments", "inventory")
ROUTES = ("GET /api/cart", "POST /api/checkout", "GET /api/products", "POST /api/pay", "GET /health")


def build_request(seed: int, spans: int, start_ns: int) -> ExportTraceServiceRequest:
    """A realistic export: 4 resources, spans in traces of 10, ~10 attributes of mixed types each."""
    req = ExportTraceServiceRequest()
    per_resource = spans // len(SERVICES)
    n = seed * spans
    for r, service in enumerate(SERVICES):
        rs = req.resource_spans.add()
        for key, value in (("service.name", service), ("service.version", "1.4.2"), ("host.name", f"node-{r}"),
                           ("telemetry.sdk.language", "python"), ("deployment.environment", "bench")):
            rs.resource.attributes.add(key=key, value=AnyValue(string_value=value))
        ss = rs.scope_spans.add()
        ss.scope.name, ss.scope.version = "opentelemetry.instrumentation.flask", "0.48b0"
        for i in range(per_resource):
            n += 1
            trace_no = n // 10 + 1  # ids are never all zeros (those spans would be rejected)
            span = ss.spans.add(
                trace_id=trace_no.to_bytes(16, "big"), span_id=n.to_bytes(8, "big"),
                parent_span_id=(n - 1).to_bytes(8, "big") if n % 10 else b"",
                name=ROUTES[i % len(ROUTES)], kind=2 if n % 10 == 0 else 3,
                start_time_unix_nano=start_ns + n * 1000, end_time_unix_nano=start_ns + n * 1000 + 50_000 + i * 7,
            )
            attrs = span.attributes
            attrs.add(key="http.method", value=AnyValue(string_value="GET" if i % 2 else "POST"))
            attrs.add(key="http.route", value=AnyValue(string_value=ROUTES[i % len(ROUTES)]))
            attrs.add(key="http.status_code", value=AnyValue(int_value=200 if i % 50 else 500))
            attrs.add(key="net.peer.name", value=AnyValue(string_value=f"10.0.{r}.{i % 250}"))
            attrs.add(key="user_agent.original", value=AnyValue(string_value="Mozilla/5.0 (X11; Linux x86_64)"))
            attrs.add(key="customer.id", value=AnyValue(string_value=f"cust-{(n * 7919) % 100_000}"))
            attrs.add(key="cart.items", value=AnyValue(int_value=i % 12))
            attrs.add(key="cache.hit", value=AnyValue(bool_value=bool(i % 3)))
            attrs.add(key="db.duration_ms", value=AnyValue(double_value=(i % 97) * 0.37))
            attrs.add(key="thread.name", value=AnyValue(string_value=f"worker-{i % 8}"))
            if i % 50 == 0:
                span.status.code, span.status.message = 2, "upstream timeout"
    return req


def _resource(target: Message, r: int, service: str) -> None:  # noqa: ANN001
    for key, value in (("service.name", service), ("service.version", "1.4.2"), ("host.name", f"node-{r}"),
                       ("telemetry.sdk.language", "python"), ("deployment.environment", "bench")):
        target.attributes.add(key=key, value=AnyValue(string_value=value))  # type: ignore[attr-defined]


def build_logs(seed: int, records: int, start_ns: int) -> ExportLogsServiceRequest:
    """4 resources of log records with a text body, trace context and ~10 attributes of mixed types."""
    req = ExportLogsServiceRequest()
    n = seed * records
    for r, service in enumerate(SERVICES):
        rl = req.resource_logs.add()
        _resource(rl.resource, r, service)
        sl = rl.scope_logs.add()
        sl.scope.name = "app.logger"
        for i in range(records // len(SERVICES)):
            n += 1
            rec = sl.log_records.add(
                time_unix_nano=start_ns + n * 1000, observed_time_unix_nano=start_ns + n * 1000 + 10,
                severity_number=9 if i % 20 else 17, severity_text="INFO" if i % 20 else "ERROR",
                trace_id=(n // 10 + 1).to_bytes(16, "big"), span_id=n.to_bytes(8, "big"), flags=1,
            )
            rec.body.string_value = f"{ROUTES[i % len(ROUTES)]} served in {i % 97 * 0.37:.2f} ms for cust-{n % 1000}"
            attrs = rec.attributes
            attrs.add(key="http.route", value=AnyValue(string_value=ROUTES[i % len(ROUTES)]))
            attrs.add(key="http.status_code", value=AnyValue(int_value=200 if i % 50 else 500))
            attrs.add(key="customer.id", value=AnyValue(string_value=f"cust-{(n * 7919) % 100_000}"))
            attrs.add(key="cache.hit", value=AnyValue(bool_value=bool(i % 3)))
            attrs.add(key="db.duration_ms", value=AnyValue(double_value=(i % 97) * 0.37))
            attrs.add(key="thread.name", value=AnyValue(string_value=f"worker-{i % 8}"))
            attrs.add(key="code.function", value=AnyValue(string_value="handle_request"))
            attrs.add(key="code.lineno", value=AnyValue(int_value=100 + i % 50))
            attrs.add(key="net.peer.name", value=AnyValue(string_value=f"10.0.{r}.{i % 250}"))
            attrs.add(key="log.logger", value=AnyValue(string_value="app.requests"))
    return req


_BOUNDS = (0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000)  # the SDKs' default


def build_metrics(seed: int, points: int, start_ns: int, kinds: tuple[str, ...] = ("sum", "gauge"),
                  ) -> ExportMetricsServiceRequest:
    """4 resources of metrics of 25 points each (~5 attributes), the metric types `kinds` taking turns (by
    default monotonic sums and gauges)."""
    req = ExportMetricsServiceRequest()
    per_metric = 25
    for r, service in enumerate(SERVICES):
        rm = req.resource_metrics.add()
        _resource(rm.resource, r, service)
        sm = rm.scope_metrics.add()
        sm.scope.name = "app.meter"
        for m in range(points // len(SERVICES) // per_metric):
            kind = kinds[m % len(kinds)]
            metric = sm.metrics.add(name=f"app.{kind}.{m}", unit="ms", description="benchmark metric")
            data = getattr(metric, kind)
            if kind in ("sum", "histogram", "exponential_histogram"):
                data.aggregation_temporality = 2
            if kind == "sum":
                data.is_monotonic = True
            for i in range(per_metric):
                at = start_ns + (seed * 1000 + i) * 10**6
                dp = data.data_points.add(start_time_unix_nano=start_ns, time_unix_nano=at)
                v = (i * 7 + m) * 0.5
                if kind in ("gauge", "sum"):
                    dp.as_double = v
                elif kind == "histogram":
                    dp.count, dp.sum, dp.min, dp.max = 100 + i, v * 100, 0.5, v + 1
                    dp.explicit_bounds.extend(_BOUNDS)
                    dp.bucket_counts.extend([(i + b) % 13 for b in range(len(_BOUNDS) + 1)])
                elif kind == "exponential_histogram":
                    dp.count, dp.sum, dp.scale, dp.zero_count, dp.min, dp.max = 100 + i, v * 100, 3, 1, 0.5, v + 1
                    dp.positive.offset = 10
                    dp.positive.bucket_counts.extend([(i + b) % 7 for b in range(20)])
                else:  # summary
                    dp.count, dp.sum = 100 + i, v * 100
                    for q in (0.5, 0.9, 0.99):
                        dp.quantile_values.add(quantile=q, value=v * q)
                for key, value in (("http.route", ROUTES[i % len(ROUTES)]), ("host", f"node-{r}"),
                                   ("region", "eu-west-1"), ("status", "ok" if i % 9 else "error")):
                    dp.attributes.add(key=key, value=AnyValue(string_value=value))
                dp.attributes.add(key="shard", value=AnyValue(int_value=i % 4))
    return req


@dataclasses.dataclass(frozen=True)
class Workload:
    """One signal's requests and how to send and count them."""

    signal: str
    table: str
    noun: str
    method: str
    request: type[Message]
    response: type[Message]
    rejected: str
    build: Callable[[int, int, int], Message]


WORKLOADS = {
    "traces": Workload("traces", "otel_traces", "spans", "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                       ExportTraceServiceRequest, ExportTraceServiceResponse, "rejected_spans", build_request),
    "logs": Workload("logs", "otel_logs", "log records", "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                     ExportLogsServiceRequest, ExportLogsServiceResponse, "rejected_log_records", build_logs),
    "metrics": Workload("metrics", "otel_metrics_gauge + otel_metrics_sum", "points",
                        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
                        ExportMetricsServiceRequest, ExportMetricsServiceResponse, "rejected_data_points",
                        build_metrics),
}


def machine() -> str:
    load = os.getloadavg()
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import chdb
    import google.protobuf

    return (f"{os.cpu_count()} cores ({cpu}), load average {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}, "
            f"Python {platform.python_version()}, protobuf {google.protobuf.__version__}, chdb {chdb.__version__}")


def parse_only(work: Workload, bodies: list[bytes], items: int, rounds: int = 3) -> float:
    """Single-process items/s of protobuf decode alone (upb, no Python objects): the floor of any decoder."""
    started = time.perf_counter()
    for _ in range(rounds):
        for body in bodies:
            work.request.FromString(body)
    return rounds * len(bodies) * items / (time.perf_counter() - started)


def send(work: Workload, endpoint: str, bodies: list[bytes], items: int, streams: int, seconds: float
         ) -> tuple[int, list[float], int]:
    """Closed-loop senders; returns (items acknowledged, latencies in s, failed requests)."""
    stop = threading.Event()
    acked = [0] * streams
    failed = [0] * streams
    latencies: list[list[float]] = [[] for _ in range(streams)]

    def stream(k: int) -> None:
        channel = grpc.insecure_channel(endpoint, options=[("grpc.max_send_message_length", 64 << 20)])
        export = channel.unary_unary(work.method, request_serializer=None, response_deserializer=None)
        i = k
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                response = work.response.FromString(export(bodies[i % len(bodies)], timeout=60))
                latencies[k].append(time.perf_counter() - t0)
                acked[k] += items - getattr(response.partial_success, work.rejected)  # type: ignore[attr-defined]
            except grpc.RpcError:
                failed[k] += 1
                time.sleep(0.05)
            i += streams
        channel.close()

    threads = [threading.Thread(target=stream, args=(k,), daemon=True) for k in range(streams)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(120)
    return sum(acked), [x for lat in latencies for x in lat], sum(failed)


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process (all its threads) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def profile_pipeline(bodies: list[bytes], spans: int, workdir: Path) -> str:
    """CPU per span of each server-side stage in one process, then the top Python functions of decode+map."""
    from ingest.writer import BatchWriter
    from otel_ai.settings import Settings
    from store import Store
    from store.migrations import migrate

    settings = Settings(clickhouse_url=f"chdb://{workdir / 'profile'}", database="otel")
    store = Store.from_settings(settings)
    migrate(store, settings)
    writer = BatchWriter(store.clone(), max_rows=100_000, max_wait=0)
    n = len(bodies) * spans
    t0 = time.process_time()
    messages = [ExportTraceServiceRequest.FromString(b) for b in bodies]
    t1 = time.process_time()
    rows = [traces_rows(m) for m in messages]
    t2 = time.process_time()
    merged = rows[0]
    for r in rows[1:]:
        for k, v in r.tables["otel_traces"].items():
            merged.tables["otel_traces"][k].extend(v)
    writer.submit(rows[0]).result()  # one insert of every row (table lookup included)
    t3 = time.process_time()
    writer.close()
    profiler = cProfile.Profile()
    profiler.enable()
    for b in bodies[:5]:
        traces_rows(ExportTraceServiceRequest.FromString(b))
    profiler.disable()
    out = io.StringIO()
    out.write(f"CPU per span (in-process, {n:,} spans): protobuf decode {(t1 - t0) / n * 1e6:.1f} us, "
              f"OTLP -> columns {(t2 - t1) / n * 1e6:.1f} us, columnar insert (clickhouse-connect "
              f"serialization + chDB MergeTree write) {(t3 - t2) / n * 1e6:.1f} us\n")
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(8)
    return out.getvalue()


def writer_stats(srv: object) -> dict[str, int]:
    """The writer's counters from /healthz: inserts and requests mapped by ClickHouse / by Python."""
    import httpx

    ingest = httpx.get(f"{srv.http_url}/healthz", timeout=30).json().get("ingest", {})  # type: ignore[attr-defined]
    return {k: int(ingest.get(k, 0)) for k in ("inserts", "decoded_by_clickhouse", "decoded_by_python")}


def run_decoder(decoder: str, args: argparse.Namespace, requests: dict[str, list[bytes]], baseline: dict[str, float],
                workdir: Path) -> dict[str, float]:
    """One serve with `decoder`, every workload in turn; prints a line per signal, returns CPU us per item.

    `clickhouse:N` sets the decoder's threshold (`OTEL_AI_INGEST_NATIVE_MIN_ITEMS`), so thresholds can be
    compared within one run.
    """
    data = Path(tempfile.mkdtemp(prefix=f"data-{decoder.replace(':', '-')}-", dir=workdir))  # a decoder may repeat
    engine, _, min_items = decoder.partition(":")
    env = {"OTEL_AI_ANOMALY_ENABLED": "false", "OTEL_AI_INGEST_DECODER": engine}
    if min_items:
        env["OTEL_AI_INGEST_NATIVE_MIN_ITEMS"] = min_items
    srv = make_server(data, workdir / f"serve-{decoder.replace(':', '-')}.log", env).start()
    acked_total: dict[str, int] = {}
    cpu_per_item: dict[str, float] = {}
    try:
        assert srv.proc is not None
        for name, bodies in requests.items():
            work = WORKLOADS[name]
            warm = send(work, srv.otlp_grpc_endpoint, bodies, args.spans, args.streams, args.warmup)[0]
            load = os.getloadavg()[0]
            counters = writer_stats(srv)
            server_cpu = cpu_seconds(srv.proc.pid)
            acked, latencies, failed = send(work, srv.otlp_grpc_endpoint, bodies, args.spans, args.streams,
                                            args.seconds)
            server_cpu = cpu_seconds(srv.proc.pid) - server_cpu
            counters = {k: v - counters[k] for k, v in writer_stats(srv).items()}
            acked_total[name] = warm + acked
            lat = sorted(latencies)
            p50 = statistics.median(lat) * 1000 if lat else float("nan")
            p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else float("nan")
            per_item = server_cpu / acked * 1e6 if acked else float("nan")
            cpu_per_item[name] = per_item
            print(f"  [{decoder}] {name}: {acked / args.seconds:,.0f} {work.noun}/s acknowledged, {len(lat)} requests, "
                  f"{failed} failed; latency p50 {p50:.0f} ms, p99 {p99:.0f} ms; server CPU {per_item:.1f} us per "
                  f"item ({server_cpu / args.seconds:.2f} cores busy; caps 2 idle cores at {2e6 / per_item:,.0f}/s); "
                  f"ratio to parse-only {acked / args.seconds / baseline[name]:.3f}; load at start {load:.2f}")
            native = counters["decoded_by_clickhouse"]
            print(f"  [{decoder}] {name}: {counters['inserts']} inserts, {acked / max(counters['inserts'], 1):,.0f} "
                  f"{work.noun} per insert; requests mapped by ClickHouse {native}, by Python "
                  f"{counters['decoded_by_python']} (raw requests only)")
        if args.big and "traces" in requests:
            big = build_request(10_000, args.big, time.time_ns() - 1800 * 10**9).SerializeToString()
            channel = grpc.insecure_channel(srv.otlp_grpc_endpoint, options=[("grpc.max_send_message_length", 1 << 30)])
            export = channel.unary_unary(WORKLOADS["traces"].method, request_serializer=None,
                                         response_deserializer=None)
            t0 = time.perf_counter()
            export(big, timeout=120)
            print(f"  [{decoder}] one request of {args.big:,} spans ({len(big) / 2**20:.0f} MiB) acknowledged in "
                  f"{time.perf_counter() - t0:.2f} s")
            channel.close()
            acked_total["traces"] += args.big
    finally:
        code = srv.stop()
    for name in requests:
        tables = ["otel_metrics_gauge", "otel_metrics_sum"] if name == "metrics" else [WORKLOADS[name].table]
        stored = sum(query_data_dir(data, f"SELECT count() AS n FROM {t}")[0]["n"] for t in tables)
        verdict = "every acknowledged item is stored" if stored >= acked_total[name] else "ACKNOWLEDGED ITEMS MISSING"
        print(f"  [{decoder}] {name} after SIGTERM (exit {code}): {stored:,} stored for {acked_total[name]:,} "
              f"acknowledged (warm-up included): {verdict}")
    return cpu_per_item


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--spans", type=int, default=1000, help="items (spans, records, points) per request")
    parser.add_argument("--distinct", type=int, default=40, help="distinct pre-serialized requests")
    parser.add_argument("--decoders", default="clickhouse,python",
                        help="comma-separated; clickhouse:N sets OTEL_AI_INGEST_NATIVE_MIN_ITEMS to N")
    parser.add_argument("--signals", default="traces,logs,metrics")
    parser.add_argument("--big", type=int, default=100_000, help="spans in one big request (0: skip)")
    parser.add_argument("--profile", action="store_true", help="also profile the Python pipeline in-process")
    args = parser.parse_args()

    start_ns = time.time_ns() - 3600 * 10**9
    signals = [s.strip() for s in args.signals.split(",") if s.strip()]
    requests = {name: [WORKLOADS[name].build(k, args.spans, start_ns).SerializeToString()
                       for k in range(args.distinct)] for name in signals}
    print(f"machine: {machine()}")
    sizes = ", ".join(f"{n} {len(b[0]) / 1024:.0f} KiB" for n, b in requests.items())
    print(f"requests: {args.spans} items each ({sizes}); {args.streams} gRPC streams, "
          f"{args.seconds:.0f}s per signal after {args.warmup:.0f}s warm-up")
    baseline = {name: parse_only(WORKLOADS[name], bodies, args.spans) for name, bodies in requests.items()}
    print("parse-only baseline (1 process): " + ", ".join(f"{n} {r:,.0f}/s" for n, r in baseline.items()))
    workdir = Path(tempfile.mkdtemp(prefix="otel-ai-bench-"))
    results: dict[str, dict[str, float]] = {}
    try:
        for decoder in [d.strip() for d in args.decoders.split(",") if d.strip()]:
            results[decoder] = run_decoder(decoder, args, requests, baseline, workdir)
        for decoder in results.keys() - {"python"} if "python" in results else ():
            ratios = ", ".join(f"{n} {results['python'][n] / results[decoder][n]:.2f}x" for n in signals)
            print(f"server CPU per item, python / {decoder} (same run): {ratios}")
        print(f"machine after: load average {os.getloadavg()[0]:.2f}")
        if args.profile and "traces" in requests:
            print(profile_pipeline(requests["traces"][:20], args.spans, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
