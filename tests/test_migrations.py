"""Migrations on real chDB: the exporter's schema exactly, idempotence, checksum refusal, reset, TTL, CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from otel_ai.settings import Settings
from store import Store
from store.migrations import (
    MIGRATIONS_TABLE,
    MigrationChecksumError,
    MigrationError,
    discover,
    migrate,
    migrations_dir,
    reset,
    set_retention,
    status,
)

MAP = "Map(LowCardinality(String), String)"
LC = "LowCardinality(String)"
Z = "CODEC(ZSTD(1))"
D8 = "CODEC(Delta(8), ZSTD(1))"

# The OpenTelemetry Collector ClickHouse exporter's default tables as ClickHouse reports them in
# system.columns (Nested flattened to Array columns): (name, type, codec), in column order.
_METRIC_HEAD = [
    ("ResourceAttributes", MAP, Z), ("ResourceSchemaUrl", "String", Z), ("ScopeName", "String", Z),
    ("ScopeVersion", "String", Z), ("ScopeAttributes", MAP, Z), ("ScopeDroppedAttrCount", "UInt32", Z),
    ("ScopeSchemaUrl", "String", Z), ("ServiceName", LC, Z), ("MetricName", "String", Z),
    ("MetricDescription", "String", Z), ("MetricUnit", "String", Z), ("Attributes", MAP, Z),
    ("StartTimeUnix", "DateTime64(9)", D8), ("TimeUnix", "DateTime64(9)", D8),
]
_EXEMPLARS = [
    ("Exemplars.FilteredAttributes", f"Array({MAP})", Z), ("Exemplars.TimeUnix", "Array(DateTime64(9))", Z),
    ("Exemplars.Value", "Array(Float64)", Z), ("Exemplars.SpanId", "Array(String)", Z),
    ("Exemplars.TraceId", "Array(String)", Z),
]
_HIST_TAIL = [("Flags", "UInt32", Z), ("Min", "Float64", Z), ("Max", "Float64", Z),
              ("AggregationTemporality", "Int32", Z)]
EXPECTED_COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "otel_traces": [
        ("Timestamp", "DateTime64(9)", D8), ("TraceId", "String", Z), ("SpanId", "String", Z),
        ("ParentSpanId", "String", Z), ("TraceState", "String", Z), ("SpanName", LC, Z), ("SpanKind", LC, Z),
        ("ServiceName", LC, Z), ("ResourceAttributes", MAP, Z), ("ScopeName", "String", Z),
        ("ScopeVersion", "String", Z), ("SpanAttributes", MAP, Z), ("Duration", "UInt64", Z),
        ("StatusCode", LC, Z), ("StatusMessage", "String", Z),
        ("Events.Timestamp", "Array(DateTime64(9))", Z), ("Events.Name", f"Array({LC})", Z),
        ("Events.Attributes", f"Array({MAP})", Z), ("Links.TraceId", "Array(String)", Z),
        ("Links.SpanId", "Array(String)", Z), ("Links.TraceState", "Array(String)", Z),
        ("Links.Attributes", f"Array({MAP})", Z),
    ],
    "otel_traces_trace_id_ts": [
        ("TraceId", "String", Z), ("Start", "DateTime", "CODEC(Delta(4), ZSTD(1))"),
        ("End", "DateTime", "CODEC(Delta(4), ZSTD(1))"),
    ],
    "otel_logs": [
        ("Timestamp", "DateTime64(9)", D8), ("TimestampTime", "DateTime", ""), ("TraceId", "String", Z),
        ("SpanId", "String", Z), ("TraceFlags", "UInt8", ""), ("SeverityText", LC, Z), ("SeverityNumber", "UInt8", ""),
        ("ServiceName", LC, Z), ("Body", "String", Z), ("ResourceSchemaUrl", LC, Z), ("ResourceAttributes", MAP, Z),
        ("ScopeSchemaUrl", LC, Z), ("ScopeName", "String", Z), ("ScopeVersion", LC, Z), ("ScopeAttributes", MAP, Z),
        ("LogAttributes", MAP, Z), ("EventName", "String", Z),
    ],
    "otel_metrics_gauge": [*_METRIC_HEAD, ("Value", "Float64", Z), ("Flags", "UInt32", Z), *_EXEMPLARS],
    "otel_metrics_sum": [
        *_METRIC_HEAD, ("Value", "Float64", Z), ("Flags", "UInt32", Z), *_EXEMPLARS,
        ("AggregationTemporality", "Int32", Z), ("IsMonotonic", "Bool", "CODEC(Delta(1), ZSTD(1))"),
    ],
    "otel_metrics_histogram": [
        *_METRIC_HEAD, ("Count", "UInt64", D8), ("Sum", "Float64", Z), ("BucketCounts", "Array(UInt64)", Z),
        ("ExplicitBounds", "Array(Float64)", Z), *_EXEMPLARS, *_HIST_TAIL,
    ],
    "otel_metrics_exponential_histogram": [
        *_METRIC_HEAD, ("Count", "UInt64", D8), ("Sum", "Float64", Z), ("Scale", "Int32", Z),
        ("ZeroCount", "UInt64", Z), ("PositiveOffset", "Int32", Z), ("PositiveBucketCounts", "Array(UInt64)", Z),
        ("NegativeOffset", "Int32", Z), ("NegativeBucketCounts", "Array(UInt64)", Z), *_EXEMPLARS, *_HIST_TAIL,
    ],
    "otel_metrics_summary": [
        *_METRIC_HEAD, ("Count", "UInt64", D8), ("Sum", "Float64", Z),
        ("ValueAtQuantiles.Quantile", "Array(Float64)", Z), ("ValueAtQuantiles.Value", "Array(Float64)", Z),
        ("Flags", "UInt32", Z),
    ],
}
_METRIC_KEYS = ("toDate(TimeUnix)", "ServiceName, MetricName, Attributes, toUnixTimestamp64Nano(TimeUnix)")
# partition key, sorting key, primary key, TTL time expression
EXPECTED_KEYS = {
    "otel_traces": ("toDate(Timestamp)", "ServiceName, SpanName, toDateTime(Timestamp)", None, "toDateTime(Timestamp)"),
    "otel_traces_trace_id_ts": ("toDate(Start)", "TraceId, Start", None, "toDateTime(Start)"),
    "otel_logs": ("toDate(TimestampTime)", "ServiceName, TimestampTime, Timestamp", "ServiceName, TimestampTime",
                  "TimestampTime"),
    **{t: (*_METRIC_KEYS, None, "toDateTime(TimeUnix)") for t in EXPECTED_COLUMNS if t.startswith("otel_metrics")},
}
_MAP_INDEXES = [("idx_res_attr_key", "mapKeys(ResourceAttributes)"),
                ("idx_res_attr_value", "mapValues(ResourceAttributes)")]
_SCOPE_INDEXES = [("idx_scope_attr_key", "mapKeys(ScopeAttributes)"),
                  ("idx_scope_attr_value", "mapValues(ScopeAttributes)")]
EXPECTED_INDEXES = {
    "otel_traces": [
        ("idx_trace_id", "bloom_filter(0.001)", "TraceId", 1),
        *[(n, "bloom_filter(0.01)", e, 1) for n, e in _MAP_INDEXES],
        ("idx_span_attr_key", "bloom_filter(0.01)", "mapKeys(SpanAttributes)", 1),
        ("idx_span_attr_value", "bloom_filter(0.01)", "mapValues(SpanAttributes)", 1),
        ("idx_duration", "minmax", "Duration", 1),
    ],
    "otel_traces_trace_id_ts": [("idx_trace_id", "bloom_filter(0.01)", "TraceId", 1)],
    "otel_logs": [
        ("idx_trace_id", "bloom_filter(0.001)", "TraceId", 1),
        *[(n, "bloom_filter(0.01)", e, 1) for n, e in _MAP_INDEXES + _SCOPE_INDEXES],
        ("idx_log_attr_key", "bloom_filter(0.01)", "mapKeys(LogAttributes)", 1),
        ("idx_log_attr_value", "bloom_filter(0.01)", "mapValues(LogAttributes)", 1),
        ("idx_body", "tokenbf_v1(32768, 3, 0)", "Body", 8),
    ],
    **{
        t: [
            *[(n, "bloom_filter(0.01)", e, 1) for n, e in _MAP_INDEXES + _SCOPE_INDEXES],
            ("idx_attr_key", "bloom_filter(0.01)", "mapKeys(Attributes)", 1),
            ("idx_attr_value", "bloom_filter(0.01)", "mapValues(Attributes)", 1),
        ]
        for t in EXPECTED_COLUMNS if t.startswith("otel_metrics")
    },
}


def _fresh(root_store: Store) -> Store:
    return root_store.with_database(f"m_{uuid.uuid4().hex[:12]}")


def _settings(store: Store, **kw: object) -> Settings:
    return Settings(clickhouse_url=f"chdb://{store.url.path}", database=store.database, **kw)


def _copy_migrations(tmp_path: Path) -> Path:
    d = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), d)
    return d


@pytest.mark.parametrize("table", sorted(EXPECTED_COLUMNS))
def test_exporter_tables_match_exporter_schema(store: Store, table: str) -> None:
    cols = store.query(
        "SELECT name, type, compression_codec FROM system.columns WHERE database = currentDatabase() "
        "AND table = {t:String} ORDER BY position", parameters={"t": table},
    ).rows
    assert [tuple(c) for c in cols] == EXPECTED_COLUMNS[table]
    row = store.query(
        "SELECT engine, partition_key, sorting_key, primary_key, engine_full FROM system.tables "
        "WHERE database = currentDatabase() AND name = {t:String}", parameters={"t": table},
    ).dicts()[0]
    partition, sorting, primary, ttl_expr = EXPECTED_KEYS[table]
    assert row["engine"] == "MergeTree"
    assert (row["partition_key"], row["sorting_key"], row["primary_key"]) == (partition, sorting, primary or sorting)
    assert f"TTL {ttl_expr} + toIntervalDay(7) " in row["engine_full"]
    assert row["engine_full"].endswith("SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1")
    indexes = store.query(
        "SELECT name, type_full, expr, granularity FROM system.data_skipping_indices "
        "WHERE database = currentDatabase() AND table = {t:String}", parameters={"t": table},
    ).rows
    assert [tuple(i) for i in indexes] == EXPECTED_INDEXES[table]


def test_logs_timestamp_time_defaults_from_timestamp(store: Store) -> None:
    row = store.query(
        "SELECT default_kind, default_expression FROM system.columns WHERE database = currentDatabase() "
        "AND table = 'otel_logs' AND name = 'TimestampTime'"
    ).rows[0]
    assert tuple(row) == ("DEFAULT", "toDateTime(Timestamp)")


def test_trace_id_materialized_view_fills_lookup(store: Store) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)  # recent: inside the 7-day TTL
    t1 = t0 + timedelta(seconds=4)
    store.insert("otel_traces", ["Timestamp", "TraceId", "SpanId", "ServiceName", "SpanName"],
                 [[t0, t1, t0], ["a" * 32, "a" * 32, ""], ["1" * 16, "2" * 16, "3" * 16], ["s"] * 3, ["op"] * 3])
    rows = store.query("SELECT TraceId, min(Start), max(End) FROM otel_traces_trace_id_ts GROUP BY TraceId").rows
    assert [(r[0], r[1].replace(tzinfo=UTC), r[2].replace(tzinfo=UTC)) for r in rows] == [("a" * 32, t0, t1)]
    mv = store.query("SELECT engine FROM system.tables WHERE database = currentDatabase() "
                     "AND name = 'otel_traces_trace_id_ts_mv'").scalar()
    assert mv == "MaterializedView"


def test_fresh_apply_records_every_file_and_reapply_is_noop(root_store: Store) -> None:
    db = _fresh(root_store)
    files = discover()
    assert [m.version for m in files][:3] == [1, 2, 3]
    applied = migrate(db, _settings(db))
    assert applied == [f"{m.version:03d}" for m in files]
    assert set(EXPECTED_COLUMNS) | {MIGRATIONS_TABLE, "otel_traces_trace_id_ts_mv"} <= set(db.tables())
    recorded = db.query(f"SELECT version, name, checksum FROM {MIGRATIONS_TABLE} ORDER BY version").rows
    assert [tuple(r) for r in recorded] == [(m.version, m.name, m.checksum) for m in files]
    assert migrate(db, _settings(db)) == []
    assert db.query(f"SELECT count() FROM {MIGRATIONS_TABLE}").scalar() == len(files)
    assert {s.state for s in status(db)} == {"applied"}


def test_pending_migration_is_applied_later(root_store: Store, tmp_path: Path) -> None:
    d = _copy_migrations(tmp_path)
    db = _fresh(root_store)
    migrate(db, _settings(db), directory=d)
    (d / "099_extra.sql").write_text("CREATE TABLE IF NOT EXISTS extra (x UInt8) ENGINE = MergeTree ORDER BY x;")
    assert [s.state for s in status(db, d)][-1] == "pending"
    assert migrate(db, _settings(db), directory=d) == ["099"]
    assert "extra" in db.tables()


def test_changed_applied_file_is_refused(root_store: Store, tmp_path: Path) -> None:
    d = _copy_migrations(tmp_path)
    db = _fresh(root_store)
    migrate(db, _settings(db), directory=d)
    before = discover(d)[1].checksum
    path = d / "002_otel_logs.sql"
    path.write_text(path.read_text() + "\n-- an innocent-looking edit\n")
    (d / "099_extra.sql").write_text("CREATE TABLE IF NOT EXISTS extra (x UInt8) ENGINE = MergeTree ORDER BY x;")
    with pytest.raises(MigrationChecksumError) as err:
        migrate(db, _settings(db), directory=d)
    msg = str(err.value)
    assert "002_otel_logs.sql" in msg and before in msg and discover(d)[1].checksum in msg
    assert "extra" not in db.tables()  # refused before running anything
    assert [s.state for s in status(db, d)][1] == "changed"


def test_bad_files_are_refused_with_names(root_store: Store, tmp_path: Path) -> None:
    d = _copy_migrations(tmp_path)
    (d / "003_duplicate.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="003_duplicate.sql"):
        discover(d)
    (d / "003_duplicate.sql").unlink()
    (d / "7_bad name.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="7_bad name.sql"):
        discover(d)


def test_failing_statement_names_file_and_rerun_completes(root_store: Store, tmp_path: Path) -> None:
    d = _copy_migrations(tmp_path)
    db = _fresh(root_store)
    bad = d / "099_broken.sql"
    bad.write_text("CREATE TABLE IF NOT EXISTS ok1 (x UInt8) ENGINE = MergeTree ORDER BY x;\n"
                   "CREATE TABLE IF NOT EXISTS broken (x NoSuchType) ENGINE = MergeTree ORDER BY x;")
    with pytest.raises(MigrationError, match=r"099_broken.sql failed at statement 2/2"):
        migrate(db, _settings(db), directory=d)
    assert [s.state for s in status(db, d)][-1] == "pending"
    bad.write_text(bad.read_text().replace("NoSuchType", "UInt8"))
    assert migrate(db, _settings(db), directory=d) == ["099"]
    assert {"ok1", "broken"} <= set(db.tables())


def test_unknown_placeholder_is_refused(root_store: Store, tmp_path: Path) -> None:
    d = _copy_migrations(tmp_path)
    (d / "099_typo.sql").write_text("CREATE TABLE IF NOT EXISTS t (x DateTime) ENGINE = MergeTree ORDER BY x "
                                    "{{TLL x}};")
    db = _fresh(root_store)
    with pytest.raises(MigrationError, match=r"099_typo.sql.*unknown placeholder"):
        migrate(db, _settings(db), directory=d)


def test_reset_drops_data_and_reapplies(store: Store) -> None:
    store.insert("otel_logs", ["Timestamp", "Body"], [[datetime.now(UTC)], ["hello"]])
    store.command("CREATE TABLE not_ours (x UInt8) ENGINE = MergeTree ORDER BY x")
    applied = reset(store, _settings(store))
    assert applied == [f"{m.version:03d}" for m in discover()]
    assert store.query("SELECT count() FROM otel_logs").scalar() == 0
    assert "not_ours" in store.tables()  # reset drops only what the migrations create
    assert {s.state for s in status(store)} == {"applied"}


@pytest.mark.parametrize("ttl_days", [0, 3])
def test_ttl_rendering(root_store: Store, ttl_days: int) -> None:
    db = _fresh(root_store)
    migrate(db, _settings(db, ttl_days=ttl_days))
    engines = dict(db.query("SELECT name, engine_full FROM system.tables WHERE database = currentDatabase() "
                            "AND name IN ('otel_traces', 'otel_logs', 'otel_metrics_sum')").rows)
    assert len(engines) == 3
    for name, engine in engines.items():
        if ttl_days:
            assert f"+ toIntervalDay({ttl_days}) " in engine, name
        else:
            assert " TTL " not in engine, name
    recorded = db.query(f"SELECT DISTINCT ttl_days FROM {MIGRATIONS_TABLE}").rows
    assert recorded == [(ttl_days,)]


def test_retention_changes_existing_tables_only_where_ttl_applies(root_store: Store) -> None:
    db = _fresh(root_store)
    migrate(db, _settings(db))

    def engines() -> dict[str, str]:
        return dict(db.query("SELECT name, engine_full FROM system.tables WHERE database = currentDatabase() "
                             "AND engine LIKE '%MergeTree'").rows)

    before = engines()
    altered = set_retention(db, _settings(db), 30)
    # the eight exporter tables and the per-minute span rollup (migration 030)
    ttl = {**{t: k[3] for t, k in EXPECTED_KEYS.items()}, "otel_traces_1m": "Minute"}
    assert len(altered) == len(ttl)
    after = engines()
    for table, ttl_expr in ttl.items():
        assert f"TTL {ttl_expr} + toIntervalDay(30) " in after[table], table
    assert {t: e for t, e in after.items() if t not in ttl} == {t: e for t, e in before.items() if t not in ttl}
    set_retention(db, _settings(db), 0)
    assert all(" TTL " not in e for t, e in engines().items() if t in ttl)


def _cli(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OTEL_AI_CONFIG": str(data.parent / "none.toml")}
    return subprocess.run([sys.executable, "-m", "otel_ai", "db", *args, "--data", str(data)],
                          capture_output=True, text=True, env=env, timeout=120)


def test_db_cli_migrate_status_reset(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = _cli("migrate", data=data)
    assert first.returncode == 0, first.stderr
    versions = [f"{m.version:03d}" for m in discover()]
    assert first.stdout.strip() == f"applied: {', '.join(versions)}"
    again = _cli("migrate", data=data)
    assert again.returncode == 0 and "up to date" in again.stdout
    st = _cli("status", "--json", data=data)
    assert st.returncode == 0, st.stderr
    assert [(r["version"], r["state"]) for r in json.loads(st.stdout)] == [(int(v), "applied") for v in versions]
    refused = _cli("reset", data=data)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    done = _cli("reset", "--yes", data=data)
    assert done.returncode == 0 and f"applied: {', '.join(versions)}" in done.stdout
    ret = _cli("retention", "14", data=data)
    assert ret.returncode == 0 and "set to 14 days on 9 tables" in ret.stdout  # 8 exporter tables + the span rollup
    assert "ALTER TABLE `otel_logs` MODIFY TTL TimestampTime + toIntervalDay(14)" in ret.stdout


def test_db_cli_cluster_without_cluster_is_a_clear_error(tmp_path: Path) -> None:
    out = _cli("migrate", "--cluster", "no_such_cluster", data=tmp_path / "data")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "cannot create the bookkeeping table otel_ai_migrations on cluster no_such_cluster" in out.stderr
    assert "no_such_cluster' not found" in out.stderr


def test_db_cli_reports_changed_file(tmp_path: Path) -> None:
    """The CLI against a store whose recorded checksum differs: clear error, non-zero exit."""
    data = tmp_path / "data"
    assert _cli("migrate", data=data).returncode == 0
    # chDB: one directory per process, so the record is rewritten from a subprocess too.
    tamper = subprocess.run(
        [sys.executable, "-c",
         "from store import Store; s = Store.connect('chdb://" + str(data) + "', 'otel'); "
         f"s.command(\"ALTER TABLE {MIGRATIONS_TABLE} UPDATE checksum = 'deadbeef' WHERE version = 1 "
         "SETTINGS mutations_sync = 2\")"],
        capture_output=True, text=True, timeout=120,
    )
    assert tamper.returncode == 0, tamper.stderr
    st = _cli("status", data=data)
    assert st.returncode == 1 and "changed" in st.stdout
    mig = _cli("migrate", data=data)
    assert mig.returncode == 1
    assert "001_otel_traces.sql was changed" in mig.stderr and "deadbeef" in mig.stderr


def test_statement_splitting_respects_quotes_and_comments() -> None:
    from store.ddl import render, split_statements

    sql = ("-- a comment; with a semicolon\nCREATE TABLE a (s String DEFAULT 'x;y') ENGINE = MergeTree ORDER BY s;\n"
           "/* block; comment */ CREATE TABLE `b;c` (x UInt8) ENGINE = MergeTree ORDER BY x;\n;\n-- trailing only\n")
    assert split_statements(sql) == [
        "CREATE TABLE a (s String DEFAULT 'x;y') ENGINE = MergeTree ORDER BY s",
        "CREATE TABLE `b;c` (x UInt8) ENGINE = MergeTree ORDER BY x",
    ]
    assert render("CREATE TABLE t (x DateTime) ENGINE = MergeTree ORDER BY x {{ TTL x }} SETTINGS a = 1", 3) == [
        "CREATE TABLE t (x DateTime) ENGINE = MergeTree ORDER BY x TTL x + toIntervalDay(3) SETTINGS a = 1"]
    with pytest.raises(ValueError, match="unterminated"):
        split_statements("SELECT 'oops;")
