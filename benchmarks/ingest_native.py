"""CPU of ClickHouse-side OTLP decoding per insert query: the fixed cost and the cost per item.

In-process chDB, merges stopped (their CPU would land on whichever insert runs next). For traces and
logs, interleaved rounds of:

- `insert`: what the writer runs (`NativeDecoder.write`: one `INSERT ... SELECT ... FROM file(...,
  'Protobuf')` with the check and the mapping);
- `staging + MV`: the same check and mapping as a materialized view on a `Null` table that takes the
  decoded requests (`INSERT INTO staging SELECT * FROM file(...)`), the idea being that the view's
  query is set up once instead of per insert;
- `decode only`: the requests decoded into a `Null` table (the floor of any ClickHouse-side path).

Each is timed with one small request (8 items: the fixed cost) and with 20 requests of 1,000 items;
medians of the rounds. CPU is the process's (all threads), so only ratios within one run compare.

`--crossover` instead times the writer's two ways of committing one group of raw requests (what
`OTEL_AI_INGEST_NATIVE_MIN_ITEMS` chooses between: ClickHouse's `INSERT ... SELECT` per target table,
or the Python reference mapping plus its columnar insert), alternating, per signal and group size; for
metrics per mix of metric types, since a metrics group pays one insert query per table it has points
for. It prints CPU per item of both, their ratio and the group size where they cost the same.

    .venv/bin/python benchmarks/ingest_native.py [--rounds 5]
    .venv/bin/python benchmarks/ingest_native.py --crossover [--rounds 3] [--sizes 500,1000,...]
        [--mixes traces,logs,gauge,gauge+sum,gauge+sum+histogram,all]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ingest import build_logs, build_metrics, build_request, machine  # noqa: E402
from ingest.mapping import Rows  # noqa: E402
from ingest.native import _FALLBACK, METRIC_TABLES, NATIVE_SIGNALS, NativeDecoder, _sql_string, _varint  # noqa: E402
from ingest.otlp import SIGNALS  # noqa: E402
from ingest.service import _raw_request  # noqa: E402
from ingest.writer import BatchWriter, _Pending  # noqa: E402
from otel_ai.settings import Settings  # noqa: E402
from store import Store  # noqa: E402
from store.migrations import migrate  # noqa: E402


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _staging(store: Store, dec: NativeDecoder, signal: str) -> Callable[[list[bytes]], None]:
    """A Null table of decoded requests with the writer's check and mapping as a materialized view."""
    sig = NATIVE_SIGNALS[signal]
    target = sig.targets[0]  # traces and logs: one table
    columns = [r[0] for r in store.query(f"SELECT name FROM system.columns WHERE database = currentDatabase() "
                                         f"AND table = '{target.table}'").rows]
    names = [c for c in target.select if c in columns]
    store.command(f"CREATE TABLE stage_{signal} ({sig.structure}) ENGINE = Null")
    requests = f"(SELECT * FROM stage_{signal} WHERE throwIf(NOT {sig.check}, '{_FALLBACK}') = 0)"
    store.command(
        f"CREATE MATERIALIZED VIEW stage_{signal}_mv TO `{target.table}` AS SELECT "
        + ", ".join(f"{target.select[c]} AS `{c}`" for c in names)
        + f" FROM {requests} {target.join}"
    )
    data = dec.dir / f"stage-{signal}.bin"

    def insert(bodies: list[bytes]) -> None:
        data.write_bytes(b"".join(_varint(len(b)) + b for b in bodies))
        source = f"file({_sql_string(str(data))}, 'Protobuf', {_sql_string(sig.structure)})"
        before = store.query(f"SELECT count() FROM `{target.table}`").rows[0][0]
        store.command(f"INSERT INTO stage_{signal} SELECT * FROM {source}", settings=dec._settings(sig))
        assert store.query(f"SELECT count() FROM `{target.table}`").rows[0][0] > before, "the view wrote nothing"

    return insert


def _decode_only(store: Store, dec: NativeDecoder, signal: str) -> Callable[[list[bytes]], None]:
    sig = NATIVE_SIGNALS[signal]
    store.command(f"CREATE TABLE null_{signal} ({sig.structure}) ENGINE = Null")
    data = dec.dir / f"null-{signal}.bin"

    def insert(bodies: list[bytes]) -> None:
        data.write_bytes(b"".join(_varint(len(b)) + b for b in bodies))
        source = f"file({_sql_string(str(data))}, 'Protobuf', {_sql_string(sig.structure)})"
        store.command(f"INSERT INTO null_{signal} SELECT * FROM {source}", settings=dec._settings(sig))

    return insert


MIXES = {  # metric types per request, in turn
    "gauge": ("gauge",),
    "gauge+sum": ("gauge", "sum"),  # benchmarks/ingest.py's metrics requests
    "gauge+sum+histogram": ("gauge", "sum", "histogram"),  # what an instrumented service's SDK sends
    "all": ("gauge", "sum", "histogram", "exponential_histogram", "summary"),
}


def _fit(sizes: list[int], cpu: list[float]) -> tuple[float, float]:
    """Least squares cpu = fixed + per_item * size (seconds)."""
    n = len(sizes)
    mx, my = sum(sizes) / n, sum(cpu) / n
    slope = sum((x - mx) * (y - my) for x, y in zip(sizes, cpu, strict=True)) / sum((x - mx) ** 2 for x in sizes)
    return my - slope * mx, slope


def crossover(args: argparse.Namespace) -> int:
    """Per signal (metrics: per mix of types) and group size, CPU per item of the writer's two paths."""
    print(f"machine: {machine()}")
    workdir = Path(tempfile.mkdtemp(prefix="otel-ai-crossover-"))
    settings = Settings(clickhouse_url=f"chdb://{workdir / 'data'}", database="otel")
    store = Store.from_settings(settings)
    migrate(store, settings)
    tables = ["otel_traces", "otel_logs", "otel_traces_trace_id_ts", "otel_traces_1m", *METRIC_TABLES.values()]
    for table in tables:  # their CPU would land on whichever insert runs next
        store.command(f"SYSTEM STOP MERGES `{table}`")
    writer = BatchWriter(store.clone(), native=NativeDecoder(workdir / "scratch"))
    sizes = [int(x) for x in args.sizes.split(",")]
    start = time.time_ns() - 600 * 10**9
    for mix in args.mixes.split(","):
        signal = mix if mix in ("traces", "logs") else "metrics"
        per_request = min(1000, min(sizes))
        n_requests = max(sizes) // per_request
        if signal == "traces":
            bodies = [build_request(k, per_request, start).SerializeToString() for k in range(n_requests)]
        elif signal == "logs":
            bodies = [build_logs(k, per_request, start).SerializeToString() for k in range(n_requests)]
        else:
            bodies = [build_metrics(k, per_request, start, MIXES[mix]).SerializeToString()
                      for k in range(n_requests)]
        raws = [_raw_request(SIGNALS[signal], b, "proto") for b in bodies]  # upb parse: the receiver's, not timed
        n_tables = len(BatchWriter._native_tables(signal, [_Pending(Rows(signal=signal), raw=r) for r in raws]))
        cpu: dict[tuple[str, int], list[float]] = {}
        for rnd in range(args.rounds + 1):
            for size in sizes:
                group = raws[: size // per_request]
                for way in ("python", "clickhouse") if rnd % 2 else ("clickhouse", "python"):
                    writer.native_min_items = 0 if way == "clickhouse" else 1 << 62
                    batch = [_Pending(Rows(signal=signal), raw=r) for r in group]
                    before = _cpu()
                    writer._write(batch)
                    spent = _cpu() - before
                    assert all(p.future.result(0).accepted == p.raw.items for p in batch), "items missing"
                    if rnd:  # the first round warms up (schema cache, first parts)
                        cpu.setdefault((way, size), []).append(spent)
                for table in tables:  # no pile of unmerged parts
                    store.command(f"TRUNCATE TABLE `{table}`")
        print(f"{mix} ({signal}, {n_tables} table{'s' if n_tables > 1 else ''}), {per_request} items per request; "
              f"CPU per item, median of {args.rounds} rounds [min-max]; load {os.getloadavg()[0]:.2f}")
        ratios = []
        for size in sizes:
            py, ch = sorted(cpu[("python", size)]), sorted(cpu[("clickhouse", size)])
            ratio = statistics.median(p / c for p, c in zip(cpu[("python", size)], cpu[("clickhouse", size)],
                                                             strict=True))
            ratios.append(ratio)
            print(f"  {size:6} items: python {statistics.median(py) / size * 1e6:6.1f} us "
                  f"[{py[0] / size * 1e6:.1f}-{py[-1] / size * 1e6:.1f}], clickhouse "
                  f"{statistics.median(ch) / size * 1e6:6.1f} us [{ch[0] / size * 1e6:.1f}-{ch[-1] / size * 1e6:.1f}],"
                  f" python/clickhouse {ratio:4.2f} [{py[0] / ch[-1]:.2f}-{py[-1] / ch[0]:.2f}]")
        med = {w: [statistics.median(cpu[(w, n)]) for n in sizes] for w in ("python", "clickhouse")}
        py_fixed, py_item = _fit(sizes, med["python"])
        ch_fixed, ch_item = _fit(sizes, med["clickhouse"])
        fit = (ch_fixed - py_fixed) / (py_item - ch_item) if py_item > ch_item else float("inf")
        cross = "never" if all(r < 1 for r in ratios) else "below the smallest size" if ratios[0] >= 1 else next(
            f"{a:,}-{b:,} items" for a, b, ra, rb in zip(sizes, sizes[1:], ratios, ratios[1:], strict=False)
            if ra < 1 <= rb)
        print(f"  fit: python {py_fixed * 1e3:.1f} ms + {py_item * 1e6:.1f} us/item, clickhouse {ch_fixed * 1e3:.1f} ms"
              f" + {ch_item * 1e6:.1f} us/item: equal at {fit:,.0f} items; measured crossover {cross}")
    print(f"machine after: load average {os.getloadavg()[0]:.2f}")
    writer.close()
    store.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--crossover", action="store_true", help="time the writer's two paths per group size")
    parser.add_argument("--sizes", default="500,1000,2000,5000,10000,20000,50000")
    parser.add_argument("--mixes", default="traces,logs,gauge,gauge+sum,gauge+sum+histogram,all")
    args = parser.parse_args()
    if args.crossover:
        return crossover(args)
    print(f"machine: {machine()}")
    workdir = Path(tempfile.mkdtemp(prefix="otel-ai-native-"))
    settings = Settings(clickhouse_url=f"chdb://{workdir / 'data'}", database="otel")
    store = Store.from_settings(settings)
    migrate(store, settings)
    for table in ("otel_traces", "otel_logs", "otel_traces_trace_id_ts", "otel_traces_1m"):
        store.command(f"SYSTEM STOP MERGES `{table}`")
    start = time.time_ns() - 600 * 10**9
    dec = NativeDecoder(workdir / "scratch")
    for signal, build in (("traces", build_request), ("logs", build_logs)):
        table = NATIVE_SIGNALS[signal].targets[0].table
        columns = {table: [r[0] for r in store.query(f"SELECT name FROM system.columns WHERE database = "
                                                     f"currentDatabase() AND table = '{table}'").rows]}
        small = [build(99, 8, start).SerializeToString()]
        big = [build(k, 1000, start).SerializeToString() for k in range(20)]

        def direct(bodies: list[bytes], signal: str = signal, columns: dict[str, list[str]] = columns) -> None:
            assert None not in dec.write(store, signal, bodies, [0] * len(bodies), columns)

        variants = {"insert": direct, "staging + MV": _staging(store, dec, signal),
                    "decode only": _decode_only(store, dec, signal)}
        times: dict[tuple[str, str], list[float]] = {}
        for rnd in range(args.rounds + 1):
            for name, run in variants.items():
                for size, bodies in (("small", small), ("big", big)):
                    before = _cpu()
                    run(bodies)
                    if rnd:  # the first round warms up (schema cache, first parts)
                        times.setdefault((name, size), []).append(_cpu() - before)
        for name in variants:
            fixed = statistics.median(times[(name, "small")])
            whole = statistics.median(times[(name, "big")])
            print(f"{signal:6} {name:13}: {fixed * 1e3:6.1f} ms per insert of 8 items; 20 x 1,000 items "
                  f"{whole * 1e3:6.1f} ms = {whole / 20_000 * 1e6:5.2f} us/item, "
                  f"{(whole - fixed) / 20_000 * 1e6:5.2f} us/item beyond the fixed cost")
    print(f"machine after: load average {os.getloadavg()[0]:.2f}")
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
