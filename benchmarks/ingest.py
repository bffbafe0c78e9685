"""Ingest throughput: pre-serialized OTLP/gRPC trace exports into a real `otel-ai serve`.

    .venv/bin/python benchmarks/ingest.py [--seconds 20] [--streams 8] [--spans 1000] [--profile]

Starts `otel-ai serve` (anomaly scorer off) on a fresh data directory, then this process sends
pre-serialized ExportTraceServiceRequests (~1,000 spans, ~10 attributes each, 4 resources) on
several concurrent gRPC streams for a fixed time. Reports spans/s acknowledged (a request is only
acknowledged after its rows are committed), p50/p99 export latency, checks after a SIGTERM that
every acknowledged span is in the table, and compares with parse-only (protobuf decode of the same
bytes in one process) and parse+map baselines. `--profile` profiles the server-side pipeline
(decode, map, columnar insert) in-process and prints where the time goes.
"""

from __future__ import annotations

import argparse
import cProfile
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
from pathlib import Path

import grpc
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


def baselines(bodies: list[bytes], spans: int, rounds: int = 3) -> tuple[float, float]:
    """Single-process spans/s of protobuf decode alone, and of decode + mapping to columns."""
    started = time.perf_counter()
    for _ in range(rounds):
        for body in bodies:
            ExportTraceServiceRequest.FromString(body)
    parse = rounds * len(bodies) * spans / (time.perf_counter() - started)
    started = time.perf_counter()
    for body in bodies:
        traces_rows(ExportTraceServiceRequest.FromString(body))
    mapped = len(bodies) * spans / (time.perf_counter() - started)
    return parse, mapped


def send(endpoint: str, bodies: list[bytes], spans: int, streams: int, seconds: float) -> tuple[int, list[float], int]:
    """Closed-loop senders; returns (spans acknowledged, latencies in s, failed requests)."""
    stop = threading.Event()
    acked = [0] * streams
    failed = [0] * streams
    latencies: list[list[float]] = [[] for _ in range(streams)]

    def stream(k: int) -> None:
        channel = grpc.insecure_channel(endpoint, options=[("grpc.max_send_message_length", 64 << 20)])
        export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                                     request_serializer=None, response_deserializer=None)
        i = k
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                response = ExportTraceServiceResponse.FromString(export(bodies[i % len(bodies)], timeout=60))
                latencies[k].append(time.perf_counter() - t0)
                acked[k] += spans - response.partial_success.rejected_spans
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--spans", type=int, default=1000, help="spans per request")
    parser.add_argument("--distinct", type=int, default=40, help="distinct pre-serialized requests")
    parser.add_argument("--profile", action="store_true", help="also profile the pipeline in-process")
    args = parser.parse_args()

    start_ns = time.time_ns() - 3600 * 10**9
    bodies = [build_request(k, args.spans, start_ns).SerializeToString() for k in range(args.distinct)]
    print(f"machine: {machine()}")
    print(f"request: {args.spans} spans, {len(bodies[0]) / 1024:.0f} KiB serialized; {args.streams} gRPC streams, "
          f"{args.seconds:.0f}s after {args.warmup:.0f}s warm-up")
    parse_rate, map_rate = baselines(bodies, args.spans)
    print(f"baseline parse-only (1 process): {parse_rate:,.0f} spans/s; parse+map to columns: {map_rate:,.0f} spans/s")

    workdir = Path(tempfile.mkdtemp(prefix="otel-ai-bench-"))
    try:
        (workdir / "data").mkdir()
        # The anomaly scorer is switched off so the figures are ingest's alone.
        srv = make_server(workdir / "data", workdir / "serve.log", {"OTEL_AI_ANOMALY_ENABLED": "false"}).start()
        try:
            warm_acked = send(srv.otlp_grpc_endpoint, bodies, args.spans, args.streams, args.warmup)[0]
            assert srv.proc is not None
            server_cpu, client_cpu = cpu_seconds(srv.proc.pid), time.process_time()
            acked, latencies, failed = send(srv.otlp_grpc_endpoint, bodies, args.spans, args.streams, args.seconds)
            server_cpu, client_cpu = cpu_seconds(srv.proc.pid) - server_cpu, time.process_time() - client_cpu
        finally:
            code = srv.stop()
        total = query_data_dir(workdir / "data", "SELECT count() AS n FROM otel_traces")[0]["n"]
        rate = acked / args.seconds
        lat = sorted(latencies)
        p50 = statistics.median(lat) * 1000 if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else float("nan")
        print(f"end to end (ack after commit): {rate:,.0f} spans/s, {len(lat)} requests, {failed} failed; "
              f"export latency p50 {p50:.0f} ms, p99 {p99:.0f} ms")
        print(f"ratio to parse-only: {rate / parse_rate:.3f}; to parse+map: {rate / map_rate:.2f}")
        if acked:
            per_span = server_cpu / acked * 1e6
            print(f"CPU per acknowledged span: server {per_span:.1f} us ({server_cpu / args.seconds:.2f} cores busy), "
                  f"client {client_cpu / acked * 1e6:.1f} us; server CPU alone caps 2 idle cores at "
                  f"{2e6 / per_span:,.0f} spans/s")
        verdict = "every acknowledged span is stored" if total >= warm_acked + acked else "ACKNOWLEDGED SPANS MISSING"
        print(f"stored after SIGTERM (exit {code}): {total:,} spans for {warm_acked + acked:,} acknowledged "
              f"(warm-up included): {verdict}")
        print(f"machine after: load average {os.getloadavg()[0]:.2f}")
        if args.profile:
            print(profile_pipeline(bodies[:20], args.spans, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
