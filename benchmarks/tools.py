"""Benchmark: each analytics tool on N synthetic spans (default 10 million) against a bare scan.

The spans are generated INSIDE ClickHouse (INSERT ... SELECT FROM numbers(), the benchmark's own
setup through Store.command, not the guarded path): 5-span traces over 8 services and 3 operations
each, one hour of data ending now, 1% errors, a few low-cardinality attributes. Every tool then runs
on the last 15 minutes against the 15 minutes before, and is compared with a bare scan of the same
columns over the same rows (`max()` of each column: the I/O floor for that query).

    .venv/bin/python benchmarks/tools.py [--spans 10000000] [--repeat 3] [--data DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from otel_ai.settings import Settings  # noqa: E402
from store import Store  # noqa: E402
from store.migrations import migrate  # noqa: E402
from tools.logs import log_patterns  # noqa: E402
from tools.metrics import resource_metrics  # noqa: E402
from tools.result import ToolResult  # noqa: E402
from tools.sql import QUERY_SETTINGS, run_sql  # noqa: E402
from tools.timewindow import TimeWindow  # noqa: E402
from tools.traces import (  # noqa: E402
    attribute_comparison,
    exemplar_traces,
    latency_breakdown,
    service_map,
    service_overview,
    trace_waterfall,
)

SPANS_PER_TRACE = 5
SERVICES = ["frontend", "checkout", "cart", "payment", "shipping", "inventory", "auth", "search"]

GENERATE = """
INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName,
                         ResourceAttributes, SpanAttributes, Duration, StatusCode)
SELECT
    toDateTime64({end_s}, 9, 'UTC') - toIntervalNanosecond(toUInt64(({total} - number) * {ns_per_span}))
        + toIntervalMillisecond(pos * 2) AS Timestamp,
    leftPad(lower(hex(cityHash64(trace))), 32, '0') AS TraceId,
    lower(hex(cityHash64(trace, pos))) AS SpanId,
    multiIf(pos = 0, '', pos <= 2, lower(hex(cityHash64(trace, 0))), lower(hex(cityHash64(trace, 2)))) AS ParentSpanId,
    concat('op-', toString(pos), '-', toString(trace % 3)) AS SpanName,
    if(pos IN (0, 1, 2), 'Server', 'Client') AS SpanKind,
    arrayElement({services}, 1 + ((pos * 3 + trace % 2) % {n_services})) AS ServiceName,
    map('service.name', ServiceName, 'k8s.pod.name', concat(ServiceName, '-', toString(trace % 4)),
        'service.version', if(trace % 10 = 0, 'v2', 'v1')) AS ResourceAttributes,
    map('http.route', concat('/r', toString(trace % 20)), 'region', arrayElement(['eu', 'us', 'ap'], 1 + trace % 3),
        'customer.tier', if(trace % 7 = 0, 'gold', 'free')) AS SpanAttributes,
    toUInt64((multiIf(pos = 0, 120, pos = 2, 60, 20) + (cityHash64(number) % 40)) * 1000000
        * if(trace % 10 = 0 AND pos = 2, 4, 1)) AS Duration,
    if(cityHash64(number, 7) % 100 = 0, 'Error', 'Unset') AS StatusCode
FROM (SELECT number, intDiv(number, {per_trace}) AS trace, number % {per_trace} AS pos
      FROM numbers({start}, {count}))
"""


def clear_spans(store: Store) -> None:
    """Empty the spans and the tables their materialized views feed (trace-id lookup, per-minute rollup)."""
    for table in ("otel_traces", "otel_traces_trace_id_ts", "otel_traces_1m"):
        store.command(f"TRUNCATE TABLE {table}")


def generate(store: Store, total: int, end: dt.datetime, chunk: int = 1_000_000) -> float:
    t0 = time.perf_counter()
    services = "[" + ", ".join(f"'{s}'" for s in SERVICES) + "]"
    for start in range(0, total, chunk):
        store.command(GENERATE.format(
            end_s=int(end.timestamp()), total=total, ns_per_span=int(3600e9 / total), per_trace=SPANS_PER_TRACE,
            services=services, n_services=len(SERVICES), start=start, count=min(chunk, total - start)))
    store.command("OPTIMIZE TABLE otel_traces FINAL")
    return time.perf_counter() - t0


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float, object]:
    """Median wall seconds and median CPU seconds of the whole process (chDB runs in-process, so its
    threads count): CPU time barely depends on what else the machine runs, wall time does."""
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), out


def bare_scan(store: Store, columns: list[str], where: str) -> Callable[[], object]:
    sql = f"SELECT {', '.join(f'max({c})' for c in columns)} FROM otel_traces WHERE {where}"
    return lambda: store.query(sql, settings=QUERY_SETTINGS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", help="chDB directory to use (default: a temporary one, removed after)")
    parser.add_argument("--only", help="run only the tools whose name contains this text")
    args = parser.parse_args()

    data = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="otel-ai-bench-"))
    store = Store.connect(f"chdb://{data}", "bench")
    migrate(store, Settings(clickhouse_url=f"chdb://{data}", database="bench", ttl_days=0))
    end = dt.datetime.now(dt.UTC).replace(microsecond=0)
    have = store.query("SELECT count() FROM otel_traces").scalar()
    if have != args.spans:
        clear_spans(store)
        gen = generate(store, args.spans, end)
        print(f"generated {args.spans:,} spans in {gen:.1f} s (with the materialized views' inserts)")
    sizes = dict(store.query("""SELECT table, formatReadableSize(sum(data_compressed_bytes)) || ', ' ||
        toString(sum(rows)) || ' rows' FROM system.parts WHERE active AND database = currentDatabase()
        AND table IN ('otel_traces', 'otel_traces_1m') GROUP BY table""").rows)
    print(f"stored: spans {sizes.get('otel_traces')}; per-minute rollup {sizes.get('otel_traces_1m')}")
    end = store.query("SELECT max(Timestamp) FROM otel_traces").scalar().replace(tzinfo=dt.UTC) + dt.timedelta(
        seconds=1)
    window = TimeWindow(start=end - dt.timedelta(minutes=15), end=end)
    baseline = window.baseline()
    in_window = store.query(f"SELECT count() FROM otel_traces WHERE {window.sql_filter()}").scalar()

    both = f"({window.sql_filter()}) OR ({baseline.sql_filter()})"
    slow_trace = exemplar_traces(store, window, limit=1).rows[0]["trace_id"]
    cases: list[tuple[str, Callable[[], ToolResult], list[str], str]] = [
        ("service_overview", lambda: service_overview(store, window, baseline),
         ["ServiceName", "SpanName", "SpanKind", "ParentSpanId", "Duration", "StatusCode", "Timestamp"], both),
        ("latency_breakdown", lambda: latency_breakdown(store, window, "frontend", baseline=baseline),
         ["TraceId", "SpanId", "ParentSpanId", "ServiceName", "SpanName", "Duration", "Timestamp"], both),
        ("attribute_comparison", lambda: attribute_comparison(store, window, target="slow"),
         ["ServiceName", "SpanName", "SpanKind", "StatusCode", "SpanAttributes", "ResourceAttributes", "Duration"],
         window.sql_filter()),
        ("attribute_comparison(error)", lambda: attribute_comparison(store, window, target="error"),
         ["ServiceName", "SpanName", "SpanKind", "StatusCode", "SpanAttributes", "ResourceAttributes"],
         window.sql_filter()),
        ("exemplar_traces", lambda: exemplar_traces(store, window, kind="slow", limit=5),
         ["TraceId", "ServiceName", "SpanName", "Duration", "StatusCode", "ParentSpanId"], window.sql_filter()),
        ("trace_waterfall", lambda: trace_waterfall(store, slow_trace),
         ["TraceId", "SpanId", "ParentSpanId", "Duration"], window.sql_filter()),
        ("service_map", lambda: service_map(store, window),
         ["TraceId", "SpanId", "ParentSpanId", "ServiceName", "Duration", "StatusCode", "SpanKind"],
         window.sql_filter()),
        ("run_sql (p95 by service)", lambda: run_sql(
            store, f"SELECT ServiceName, quantile(0.95)(Duration) FROM otel_traces WHERE {window.sql_filter()} "
                   "GROUP BY ServiceName"), ["ServiceName", "Duration"], window.sql_filter()),
        ("log_patterns (no logs)", lambda: log_patterns(store, window, baseline), ["Timestamp"], "1 = 0"),
        ("resource_metrics (no metrics)", lambda: resource_metrics(store, window, baseline), ["Timestamp"], "1 = 0"),
    ]
    load = os.getloadavg()
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, load {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}, "
          f"python {platform.python_version()}, chDB {store.query('SELECT version()').scalar()}")
    print(f"data: {args.spans:,} spans ({args.spans // SPANS_PER_TRACE:,} traces, 1 h); window 15 min = "
          f"{in_window:,} spans, baseline 15 min before; median of {args.repeat} runs")
    print("| tool | wall (s) | CPU (s) | bare scan wall (s) | bare scan CPU (s) | CPU ratio | rows |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    failures = 0
    for name, fn, columns, where in cases:
        if args.only and args.only not in name:
            continue
        fn()  # warm-up (marks caches, first-use costs)
        took, cpu, result = timed(fn, args.repeat)
        scan, scan_cpu, _ = timed(bare_scan(store, columns, where), args.repeat)
        assert isinstance(result, ToolResult)
        if not result.ok:
            failures += 1
            print(f"| {name} | FAILED: {result.error} | | | | | |")
            continue
        ratio = cpu / scan_cpu if scan_cpu else float("nan")
        print(f"| {name} | {took:.3f} | {cpu:.3f} | {scan:.3f} | {scan_cpu:.3f} | {ratio:.1f}x | {len(result.rows)} |")
    store.close()
    if not args.data:
        shutil.rmtree(data, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
