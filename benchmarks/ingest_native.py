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

    .venv/bin/python benchmarks/ingest_native.py [--rounds 5]
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

from benchmarks.ingest import build_logs, build_request, machine  # noqa: E402
from ingest.native import _FALLBACK, NATIVE_SIGNALS, NativeDecoder, _sql_string, _varint  # noqa: E402
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
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
