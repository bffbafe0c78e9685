"""Benchmark: `ask("why is checkout slow?")` with the built-in analyst on N stored spans (default
10 million), end to end, and where the time goes.

The spans are generated INSIDE ClickHouse (INSERT ... SELECT FROM numbers(), the benchmark's own
setup through Store.command): 6-span traces frontend -> checkout -> {payment (via a client span),
cart}, checkout -> its database, with parent/child durations that add up, spread over `--hours`
(default 24) ending now; in the last 10 minutes payment's Charge gains ~800 ms of self time. The
answer must name payment, so the benchmark times a full diagnosis, not a short-cut.

    .venv/bin/python benchmarks/agent.py [--spans 10000000] [--hours 24] [--repeat 3] [--data DIR]
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent import ask_sync  # noqa: E402
from otel_ai.settings import Settings  # noqa: E402
from store import Store  # noqa: E402
from store.migrations import migrate  # noqa: E402

SPANS_PER_TRACE = 6
# pos: 0 frontend server, 1 checkout server, 2 checkout client -> payment, 3 payment server,
#      4 cart server, 5 checkout database client (2, 4 and 5 are children of checkout's server span)
GENERATE = """
INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, SpanKind, ServiceName,
                         ResourceAttributes, SpanAttributes, Duration, StatusCode)
SELECT ts AS Timestamp,
    leftPad(lower(hex(cityHash64(trace))), 32, '0') AS TraceId,
    lower(hex(cityHash64(trace, pos))) AS SpanId,
    multiIf(pos = 0, '', pos = 1, lower(hex(cityHash64(trace, 0))), pos IN (2, 4, 5),
            lower(hex(cityHash64(trace, 1))), lower(hex(cityHash64(trace, 2)))) AS ParentSpanId,
    arrayElement(['GET /api/checkout', 'PlaceOrder', 'payment.Payment/Charge', 'payment.Payment/Charge',
                  'cart.Cart/GetCart', 'SELECT orders'], pos + 1) AS SpanName,
    if(pos IN (2, 5), 'Client', 'Server') AS SpanKind,
    arrayElement(['frontend', 'checkout', 'checkout', 'payment', 'cart', 'checkout'], pos + 1) AS ServiceName,
    map('service.name', ServiceName, 'k8s.pod.name', concat(ServiceName, '-', toString(trace % 3)))
        AS ResourceAttributes,
    map('rpc.service', if(pos IN (2, 3), 'payment.Payment', ''), 'db.system', if(pos = 5, 'postgresql', ''),
        'customer.tier', if(trace % 7 = 0, 'gold', 'free')) AS SpanAttributes,
    toUInt64(multiIf(pos = 0, pay + cart + db + 27e6, pos = 1, pay + cart + db + 22e6, pos = 2, pay + 1e6,
                     pos = 3, pay, pos = 4, cart, db)) AS Duration,
    if(cityHash64(trace, pos, 7) % 500 = 0, 'Error', 'Unset') AS StatusCode
FROM (
    SELECT number, intDiv(number, {per_trace}) AS trace, number % {per_trace} AS pos,
        toDateTime64({end_s}, 9, 'UTC') - toIntervalNanosecond(toUInt64(({total} - number) * {ns_per_span})) AS ts,
        toFloat64(15e6 + cityHash64(trace, 1) % 10000000
                  + if(ts >= toDateTime64({fault_s}, 9, 'UTC'), 600e6 + cityHash64(trace, 9) % 400000000, 0)) AS pay,
        toFloat64(8e6 + cityHash64(trace, 2) % 4000000) AS cart,
        toFloat64(3e6 + cityHash64(trace, 3) % 2000000) AS db
    FROM numbers({start}, {count}))
"""


def generate(store: Store, total: int, end: dt.datetime, hours: float, chunk: int = 2_000_000) -> float:
    t0 = time.perf_counter()
    fault = end - dt.timedelta(minutes=10)
    for start in range(0, total, chunk):
        store.command(GENERATE.format(
            end_s=int(end.timestamp()), fault_s=int(fault.timestamp()), total=total,
            ns_per_span=int(hours * 3600e9 / total), per_trace=SPANS_PER_TRACE, start=start,
            count=min(chunk, total - start)))
    store.command("OPTIMIZE TABLE otel_traces FINAL")
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=10_000_000)
    parser.add_argument("--hours", type=float, default=24.0, help="time the spans are spread over, ending now")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", help="chDB directory (default: a temporary one, removed afterwards)")
    args = parser.parse_args()

    data = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="otel-ai-bench-agent-"))
    settings = Settings(clickhouse_url=f"chdb://{data}", database="bench_agent", openai_api_key=None)
    store = Store.from_settings(settings)
    try:
        migrate(store, settings)
        store.command("TRUNCATE TABLE otel_traces")
        end = dt.datetime.now(dt.UTC).replace(microsecond=0)
        gen_s = generate(store, args.spans, end, args.hours)
        stored = store.query("SELECT count() FROM otel_traces").scalar()
        print(f"machine: {platform.machine()} {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}, "
              f"python {platform.python_version()}")
        print(f"stored {stored:,} spans over {args.hours:g} h in {gen_s:.1f} s (generation, not timed below)")

        question = "why is checkout slow?"
        runs = []
        for i in range(args.repeat + 1):
            t0 = time.perf_counter()
            answer = ask_sync(question, store=store, settings=settings)
            wall = time.perf_counter() - t0
            top = answer.root_causes[0] if answer.root_causes else None
            label = "cold (first ask in the process)" if i == 0 else f"warm run {i}"
            print(f"{label}: {wall:.3f} s end to end; root cause: "
                  f"{top.service + '/' + str(top.operation) + ' ' + top.kind if top else 'none'}")
            if i:
                runs.append((wall, answer))
        if not runs or not runs[0][1].root_causes or runs[0][1].root_causes[0].service != "payment":
            print("ERROR: the analyst did not name payment", file=sys.stderr)
            return 1
        median_wall = statistics.median(w for w, _ in runs)
        print(f"\nmedian warm end to end: {median_wall:.3f} s (target < 1.5 s)")
        print("where the time goes (median over warm runs, seconds):")
        keys = sorted({k for _, a in runs for k in a.timings}, key=lambda k: (not k.startswith("tool:"), k))
        for key in keys:
            values = [a.timings.get(key, 0.0) for _, a in runs]
            print(f"  {key:32s} {statistics.median(values):8.3f}")
        print("\nanswer:\n" + runs[0][1].answer)
        return 0
    finally:
        store.close()
        if not args.data:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
