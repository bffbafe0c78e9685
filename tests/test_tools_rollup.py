"""The per-minute span rollup (migration 030, tools/rollup.py) against the raw spans it summarises:
expectations are computed here from the inserted spans, for windows that do and do not fall on minutes."""

from __future__ import annotations

import datetime as dt
import random
import shutil
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from otel_ai.settings import Settings
from store import Store
from store.migrations import discover, migrate
from tests.conftest import new_database
from tests.fixtures.telemetry import Span, insert_spans, root
from tools.common import ENTRY
from tools.rollup import (
    QUANTILES,
    SKETCH_ERROR,
    longest_span_sql,
    merge_quantiles,
    merge_sketch,
    span_minutes,
    whole_minutes,
)
from tools.schema_info import describe_tables
from tools.sql import run_sql
from tools.timewindow import TimeWindow
from tools.traces import service_overview

NOW = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
KINDS = ["Server", "Client", "Internal", "Consumer", "Producer", "SPAN_KIND_SERVER", "Unspecified"]


def make_spans(seed: int, minutes: int = 12) -> list[Span]:
    """Traces at random instants (not on minute boundaries), children of every kind, some failing."""
    rng = random.Random(seed)
    spans = []
    for _ in range(minutes * 40):
        start = NOW - dt.timedelta(seconds=rng.uniform(0, minutes * 60))
        top = root(rng.choice(["web", "api"]), rng.choice(["GET /", "POST /buy"]), start, rng.lognormvariate(4, 1),
                   status="Error" if rng.random() < 0.05 else "Unset")
        spans.append(top)
        for i in range(rng.randint(0, 3)):
            spans.append(top.child(rng.choice(["api", "db", "queue"]), f"op{i}", 1, rng.lognormvariate(3, 1),
                                   kind=rng.choice(KINDS), status="Error" if rng.random() < 0.1 else "Unset"))
    return spans


@pytest.fixture(scope="module")
def spans() -> list[Span]:
    return make_spans(1)


@pytest.fixture(scope="module")
def rstore(root_store: Store, spans: list[Span]) -> Iterator[Store]:
    store = new_database(root_store, prefix="rollup")
    insert_spans(store, spans)
    yield store
    store.close()


WINDOWS = {
    "off the minute": TimeWindow(start=NOW - dt.timedelta(minutes=9, seconds=43), end=NOW - dt.timedelta(seconds=13)),
    "on the minute": TimeWindow(start=NOW - dt.timedelta(minutes=10), end=NOW - dt.timedelta(minutes=2)),
    "inside one minute": TimeWindow(start=NOW - dt.timedelta(minutes=4, seconds=50),
                                    end=NOW - dt.timedelta(minutes=4, seconds=20)),
    "across one boundary": TimeWindow(start=NOW - dt.timedelta(minutes=3, seconds=30),
                                      end=NOW - dt.timedelta(minutes=2, seconds=40)),
}


def expected(spans: list[Span], window: TimeWindow) -> dict[tuple[str, str, int], dict[str, float]]:
    """Per (service, operation, entry): spans, failures, max and quantiles of duration (ns), from Python."""
    groups: dict[tuple[str, str, int], list[Span]] = defaultdict(list)
    for s in spans:
        if window.start <= s.start < window.end:
            entry = int(s.kind in ("Server", "Consumer", "SPAN_KIND_SERVER") or not s.parent_id)
            groups[(s.service, s.name, entry)].append(s)
    out = {}
    for key, group in groups.items():
        ns = np.array([round(s.duration_ms * 1e6) for s in group], dtype=float)
        out[key] = {"n": len(group), "n_err": sum(s.status == "Error" for s in group), "d_max": ns.max(),
                    "d_sum": ns.sum(), "q": [np.percentile(ns, 100 * q) for q in QUANTILES],
                    "q_low": [np.percentile(ns, 100 * q, method="lower") for q in QUANTILES],
                    "q_high": [np.percentile(ns, 100 * q, method="higher") for q in QUANTILES]}
    return out


def test_whole_minutes() -> None:
    on, off = WINDOWS["on the minute"], WINDOWS["off the minute"]
    assert whole_minutes(on) == (on.start, on.end)
    assert whole_minutes(off) == (NOW - dt.timedelta(minutes=9), NOW - dt.timedelta(minutes=1))
    assert whole_minutes(WINDOWS["inside one minute"]) is None
    assert whole_minutes(WINDOWS["across one boundary"]) is None


def test_entry_column_is_the_tools_entry_test(rstore: Store) -> None:
    raw = rstore.query(f"SELECT ServiceName, SpanName, toUInt8{ENTRY} AS e, count() FROM otel_traces "
                       "GROUP BY ServiceName, SpanName, e ORDER BY ServiceName, SpanName, e").rows
    rolled = rstore.query("SELECT ServiceName, SpanName, Entry, sum(Calls) FROM otel_traces_1m "
                          "GROUP BY ServiceName, SpanName, Entry ORDER BY ServiceName, SpanName, Entry").rows
    assert rolled == raw
    assert {r[2] for r in raw} == {0, 1}


@pytest.mark.parametrize("label", WINDOWS)
def test_span_minutes_equal_the_raw_spans(rstore: Store, spans: list[Span], label: str) -> None:
    window = WINDOWS[label]
    rows = rstore.query(f"""SELECT ServiceName, SpanName, entry, sum(n), sum(n_err), max(d_max), sum(d_sum),
            {merge_quantiles(1)}, {merge_sketch(1)} FROM ({span_minutes({1: window})})
            GROUP BY ServiceName, SpanName, entry""").rows
    want = expected(spans, window)
    assert want, "the window should hold spans"
    got = {(s, o, int(e)): (n, err, mx, sm, q, dd) for s, o, e, n, err, mx, sm, q, dd in rows}
    assert set(got) == set(want)
    for key, (n, err, mx, sm, q, dd) in got.items():
        w = want[key]
        assert (n, err) == (w["n"], w["n_err"]), key
        assert mx == w["d_max"] and sm == w["d_sum"], key
        assert q == pytest.approx(w["q"], rel=1e-6), key
        # the sketch: a duration next to the quantile's rank, truncated to 8 significant bits
        for value, low, high in zip(dd, w["q_low"], w["q_high"], strict=True):
            assert low * (1 - SKETCH_ERROR) <= value <= high, key


@pytest.mark.parametrize("label", WINDOWS)
def test_longest_span_is_the_raw_maximum(rstore: Store, spans: list[Span], label: str) -> None:
    window = WINDOWS[label]
    inside = [round(s.duration_ms * 1e6) for s in spans if window.start <= s.start < window.end]
    assert rstore.query(longest_span_sql(window)).scalar() == max(inside)


def test_service_overview_off_the_minute_counts_every_span(rstore: Store, spans: list[Span]) -> None:
    window = WINDOWS["off the minute"]
    result = service_overview(rstore, window)
    assert result.ok, result.error
    now, before = expected(spans, window), expected(spans, window.baseline())
    calls: dict[tuple[str, str], int] = defaultdict(int)
    base: dict[tuple[str, str], int] = defaultdict(int)
    for (s, o, _), w in now.items():
        calls[(s, o)] += w["n"]
    for (s, o, _), w in before.items():
        base[(s, o)] += w["n"]
    assert {(r["service"], r["operation"]): (r["calls"], r["base_calls"]) for r in result.rows} == {
        k: (calls.get(k, 0), base.get(k, 0)) for k in set(calls) | set(base)}


def test_migration_backfills_spans_stored_before_it(root_store: Store, tmp_path: Path) -> None:
    """An existing store gets the rollup of the spans it already holds, and new spans then flow in once."""
    older = tmp_path / "migrations"
    older.mkdir()
    for m in discover():
        if m.version < 30:
            shutil.copy(m.path, older / m.path.name)
    store = root_store.with_database(f"backfill_{random.randrange(1 << 30):08x}")
    settings = Settings(clickhouse_url=f"chdb://{root_store.url.path}", database=store.database)
    migrate(store, settings, directory=older)
    assert "otel_traces_1m" not in store.tables()
    first, second = make_spans(2, minutes=3), make_spans(3, minutes=3)
    insert_spans(store, first)
    migrate(store, settings)
    insert_spans(store, second)
    migrate(store, settings)  # nothing left to apply: the backfill does not run again
    assert store.query("SELECT sum(Calls), sum(Errors) FROM otel_traces_1m").rows == [
        (len(first) + len(second), sum(s.status == "Error" for s in first + second))]
    store.command(f"DROP DATABASE {store.database}")
    store.close()


def test_models_can_query_the_rollup_through_the_sql_guard(rstore: Store, spans: list[Span]) -> None:
    """The schema notes offer otel_traces_1m to models: the guarded path runs what they describe."""
    result = run_sql(rstore, "SELECT ServiceName, sum(Calls) AS calls, quantilesMerge(0.5, 0.9, 0.95, 0.99)"
                             "(DurationQuantiles)[3] AS p95 FROM otel_traces_1m GROUP BY ServiceName")
    assert result.ok, result.error
    counts: dict[str, int] = defaultdict(int)
    for s in spans:
        counts[s.service] += 1
    assert {r["ServiceName"]: r["calls"] for r in result.rows} == counts
    assert "otel_traces_1m" in describe_tables(rstore)
