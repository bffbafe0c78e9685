"""Simulator cost: how fast backdated history is made, and how fast it lands in a real `otel-ai serve`.

    .venv/bin/python benchmarks/sim.py [--minutes 60] [--rate 3] [--serve-minutes 20] [--protocol grpc]

1. Generation: `--minutes` of history at `--rate` flows/s into the SDK's in-memory exporters (the
   same SDK spans/log records/metric data the OTLP exporters would encode): wall time and process CPU.
2. End to end (`--serve-minutes` > 0): `otel-ai serve` on a fresh data directory (its own process),
   the simulator sends `--serve-minutes` of history over OTLP; after SIGTERM the stored rows are
   counted and compared with what the exporters had acknowledged.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from sim.emit import Exporters  # noqa: E402
from sim.runner import run_simulation  # noqa: E402
from tests.fixtures.server import make_server, query_data_dir  # noqa: E402
from tests.test_sim_model import MemoryMetrics  # noqa: E402


def conditions() -> str:
    load = os.getloadavg()
    return (f"{os.cpu_count()} CPUs, load average {load[0]:.1f}, Python {platform.python_version()}, "
            f"{platform.machine()}")


def generation(minutes: int, rate: float) -> None:
    exporters = Exporters(InMemorySpanExporter(), InMemoryLogRecordExporter(), MemoryMetrics())
    wall, cpu = time.monotonic(), time.process_time()
    result = run_simulation("paymentSlow", history=timedelta(minutes=minutes), live=timedelta(0), rate=rate,
                            exporters=exporters)
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    s = result.sent
    print(f"generation: {minutes} min at {rate} flows/s -> {result.traces} traces, {s['spans']} spans, "
          f"{s['logs']} logs, {s['metrics']} metric points in {wall:.1f} s wall / {cpu:.1f} s CPU "
          f"({s['spans'] / cpu:,.0f} spans per CPU second; {minutes * 60 / wall:.0f}x real time)")


def end_to_end(minutes: int, rate: float, protocol: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="otel-ai-bench-sim-"))
    srv = make_server(tmp / "data", tmp / "serve.log", env={"OTEL_AI_ANOMALY_ENABLED": "false"})
    (tmp / "data").mkdir()
    try:
        srv.start()
        endpoint = f"http://{srv.otlp_grpc_endpoint}" if protocol == "grpc" else srv.otlp_http_url
        wall = time.monotonic()
        result = run_simulation("paymentSlow", endpoint=endpoint, protocol=protocol,
                                history=timedelta(minutes=minutes), live=timedelta(0), rate=rate)
        wall = time.monotonic() - wall
        srv.stop()
        rows = query_data_dir(srv.data_dir, "SELECT (SELECT count() FROM otel_traces) AS spans,"
                              " (SELECT count() FROM otel_logs) AS logs, (SELECT count() FROM otel_metrics_gauge)"
                              " + (SELECT count() FROM otel_metrics_sum) + (SELECT count() FROM otel_metrics_histogram)"
                              " AS metrics")[0]
        stored = {k: int(v) for k, v in rows.items()}
        s = result.sent
        items = s["spans"] + s["logs"] + s["metrics"]
        print(f"end to end ({protocol}): {minutes} min of history at {rate} flows/s: {s} sent in {wall:.1f} s "
              f"({s['spans'] / wall:,.0f} spans/s, {items / wall:,.0f} items/s, {minutes * 60 / wall:.0f}x real "
              f"time); stored {stored}; {'all stored' if stored == s else 'MISMATCH'}; failed {result.failed}")
    finally:
        srv.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=int, default=60)
    p.add_argument("--rate", type=float, default=3.0)
    p.add_argument("--serve-minutes", type=int, default=20)
    p.add_argument("--protocol", choices=["grpc", "http/protobuf"], default="grpc")
    args = p.parse_args()
    print(conditions())
    generation(args.minutes, args.rate)
    if args.serve_minutes > 0:
        end_to_end(args.serve_minutes, args.rate, args.protocol)
    print(conditions())


if __name__ == "__main__":
    main()
