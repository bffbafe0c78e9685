"""Benchmark: `ask("why is checkout slow?")` with the built-in analyst on N stored spans (default
10 million), end to end, and where the time goes.

The spans are generated INSIDE ClickHouse (INSERT ... SELECT FROM numbers(), the benchmark's own
setup through Store.command): 6-span traces frontend -> checkout -> {payment (via a client span),
cart}, checkout -> its database, with parent/child durations that add up, spread over `--hours`
(default 24) ending now; in the last 10 minutes payment's Charge gains ~800 ms of self time. The
answer must name payment, so the benchmark times a full diagnosis, not a short-cut. Then, unless
--no-cli, what a user types: `otel-ai ask` as a new process on the embedded store, and `otel-ai ask
--server` against a running `serve` holding the same data.

    .venv/bin/python benchmarks/agent.py [--spans 10000000] [--hours 24] [--repeat 3] [--data DIR [--reuse]] [--no-cli]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent import ask_sync  # noqa: E402
from benchmarks.tools import clear_spans  # noqa: E402
from otel_ai.settings import Settings  # noqa: E402
from store import Store, StorePool  # noqa: E402
from store.migrations import migrate  # noqa: E402

SPANS_PER_TRACE = 6
DATABASE = "bench_agent"
QUESTION = "why is checkout slow?"
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
    parser.add_argument("--no-cli", action="store_true",
                        help="skip the `otel-ai ask` runs (a new process; against a running serve)")
    parser.add_argument("--reuse", action="store_true",
                        help="with --data: keep spans generated by an earlier run (the window then ends at them)")
    args = parser.parse_args()

    data = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="otel-ai-bench-agent-"))
    settings = Settings(clickhouse_url=f"chdb://{data}", database=DATABASE, openai_api_key=None)
    store = Store.from_settings(settings)
    try:
        migrate(store, settings)
        stored = store.query("SELECT count() FROM otel_traces").scalar()
        gen_s = 0.0
        if not (args.reuse and stored == args.spans):
            clear_spans(store)
            end = dt.datetime.now(dt.UTC).replace(microsecond=0)
            gen_s = generate(store, args.spans, end, args.hours)
            stored = store.query("SELECT count() FROM otel_traces").scalar()
        print(f"machine: {platform.machine()} {os.cpu_count()} cpus, load {os.getloadavg()[0]:.2f}, "
              f"python {platform.python_version()}")
        print(f"stored {stored:,} spans over {args.hours:g} h in {gen_s:.1f} s (generation, not timed below)")

        question = QUESTION
        spare = StorePool(store, 1)  # a second handle, as serve's pool and `otel-ai ask` give an answer
        runs = []
        cpus: list[float] = []
        for i in range(args.repeat + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            answer = ask_sync(question, store=store, settings=settings, spare=spare)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            top = answer.root_causes[0] if answer.root_causes else None
            label = "cold (first ask in the process)" if i == 0 else f"warm run {i}"
            print(f"{label}: {wall:.3f} s end to end, {cpu:.3f} s CPU (chDB threads included); root cause: "
                  f"{top.service + '/' + str(top.operation) + ' ' + top.kind if top else 'none'}")
            if i:
                runs.append((wall, answer))
                cpus.append(cpu)
        if not runs or not runs[0][1].root_causes or runs[0][1].root_causes[0].service != "payment":
            print("ERROR: the analyst did not name payment", file=sys.stderr)
            return 1
        median_wall = statistics.median(w for w, _ in runs)
        print(f"\nmedian warm end to end: {median_wall:.3f} s wall, {statistics.median(cpus):.3f} s CPU "
              "(target < 1.5 s)")
        print("where the time goes (median over warm runs, seconds):")
        keys = sorted({k for _, a in runs for k in a.timings}, key=lambda k: (not k.startswith("tool:"), k))
        for key in keys:
            values = [a.timings.get(key, 0.0) for _, a in runs]
            print(f"  {key:32s} {statistics.median(values):8.3f}")
        print("\nanswer:\n" + runs[0][1].answer)
        spare.close()
        store.close()  # one process per data directory: the CLI and serve below open it themselves
        if not args.no_cli:
            ok = cli_runs(data, args.repeat)
            ok = server_runs(data, args.repeat) and ok
            if not ok:
                return 1
        return 0
    finally:
        store.close()
        if not args.data:
            shutil.rmtree(data, ignore_errors=True)


CLI = [sys.executable, "-m", "otel_ai"]


def _names_payment(output: str) -> bool:
    causes = json.loads(output).get("root_causes") or []
    return bool(causes) and causes[0]["service"] == "payment"


def timed_asks(args: list[str], repeat: int, warm_up: bool = False) -> list[float] | None:
    """Wall seconds of `otel-ai ask ... --json` runs that name payment (None when one fails or does not)."""
    walls = []
    for i in range(repeat + int(warm_up)):
        t0 = time.perf_counter()
        out = subprocess.run([*CLI, "ask", QUESTION, "--json", *args], capture_output=True, text=True, timeout=300)
        if i or not warm_up:
            walls.append(time.perf_counter() - t0)
        if out.returncode or not _names_payment(out.stdout):
            print(f"ERROR: otel-ai ask {' '.join(args)} failed or did not name payment: {out.stderr[-2000:]}",
                  file=sys.stderr)
            return None
    return walls


def _report(label: str, walls: list[float]) -> None:
    print(f"{label}: {', '.join(f'{w:.2f}' for w in walls)} s (median {statistics.median(walls):.2f} s; "
          f"load {os.getloadavg()[0]:.2f})")


def cli_runs(data: Path, repeat: int) -> bool:
    """`otel-ai ask --data DIR`: a fresh process each time (imports, opening the store, the diagnosis)."""
    walls = timed_asks(["--data", str(data), "--database", DATABASE], repeat)
    if walls:
        _report("\n`otel-ai ask` as a new process on the embedded store", walls)
    return walls is not None


def server_runs(data: Path, repeat: int) -> bool:
    """`otel-ai ask --server URL` against a running `serve` holding the data (scorer off): what a user of
    a running deployment waits for, from the command to the printed answer."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OTEL_AI_ANOMALY_ENABLED": "false"}
    log = data.parent / f"{data.name}-serve.log"
    with open(log, "w") as log_file:
        serve = subprocess.Popen([*CLI, "serve", "--data", str(data), "--database", DATABASE, "--port", str(port),
                                  "--otlp-grpc-port", "0", "--otlp-http-port", "0"], env=env, stdout=log_file,
                                 stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"{url}/healthz", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            print(f"ERROR: serve did not start, see {log}", file=sys.stderr)
            return False
        walls = timed_asks(["--server", url], repeat, warm_up=True)  # the first ask warms the server
        if walls:
            _report("`otel-ai ask --server` against a running serve", walls)
        return walls is not None
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)


if __name__ == "__main__":
    sys.exit(main())
