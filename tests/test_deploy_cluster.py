"""The cluster variant of every migration: generated from the same files, parsed by sqlglot (ClickHouse)."""

from __future__ import annotations

import pytest
import sqlglot
from sqlglot import exp

from store.ddl import DDLError, cluster_statements, render
from store.migrations import discover

CLUSTER = "otel_cluster"
DB = "otel"


def _name(node: exp.Expression) -> str:
    table = node if isinstance(node, exp.Table) else node.find(exp.Table)
    assert table is not None
    return table.name


def _engine(create: exp.Create) -> str:
    prop = create.find(exp.EngineProperty)
    assert prop is not None, create.sql("clickhouse")[:120]
    return prop.this.sql("clickhouse") if isinstance(prop.this, exp.Expression) else str(prop.this)


def _parsed(migration_sql: str) -> list[exp.Create]:
    out = []
    for statement in render(migration_sql, 7, CLUSTER, DB):
        tree = sqlglot.parse_one(statement, read="clickhouse")
        if isinstance(tree, exp.Insert):  # a backfill: once, into and from the Distributed tables
            tables = {t.name for t in tree.find_all(exp.Table)}
            assert tables and not any(t.endswith("_local") for t in tables), statement[:100]
            assert tree.find(exp.OnCluster) is None, statement[:100]
            continue
        assert isinstance(tree, exp.Create), f"not parsed as CREATE: {statement[:100]}"
        cluster = tree.find(exp.OnCluster)
        assert cluster is not None and cluster.this.name == CLUSTER, statement[:100]
        out.append(tree)
    return out


@pytest.mark.parametrize("migration", discover(), ids=lambda m: m.filename)
def test_cluster_variant_parses_and_is_complete(migration) -> None:
    trees = _parsed(migration.sql)
    single = render(migration.sql, 7)
    local_tables: dict[str, str] = {}
    distributed: dict[str, tuple[str, ...]] = {}
    for tree in trees:
        kind = tree.args.get("kind")
        if kind == "TABLE" and isinstance(tree.this, exp.Schema):  # a table with columns: the local one
            name = _name(tree.this)
            engine = _engine(tree)
            assert name.endswith("_local"), name
            assert engine.startswith("Replicated") and "MergeTree(" in engine, engine
            assert f"'/clickhouse/tables/{{shard}}/{DB}/{name}', '{{replica}}'" in engine, engine
            local_tables[name] = engine
        elif kind == "TABLE":
            engine = _engine(tree)
            assert engine.startswith("Distributed("), engine
            args = tuple(a.sql("clickhouse") for a in tree.find(exp.EngineProperty).this.expressions)
            assert isinstance(tree.expression, exp.Table) and tree.expression.name == _name(tree.this) + "_local"
            distributed[_name(tree.this)] = args
        else:
            assert kind == "VIEW", tree.sql("clickhouse")[:100]
            if tree.find(exp.MaterializedProperty):
                target = tree.find(exp.ToTableProperty)
                assert target is not None and _name(target).endswith("_local")
                sources = {t.name for t in tree.expression.find_all(exp.Table)}
                assert sources and all(s.endswith("_local") for s in sources), sources
    # every MergeTree table of the single-node file was replaced, and each has its Distributed twin
    single_tables = [s for s in single if "MergeTree" in s and s.lstrip().upper().startswith("CREATE TABLE")]
    assert len(local_tables) == len(single_tables)
    assert not any(t.find(exp.EngineProperty) and "MergeTree" in _engine(t) and not _engine(t).startswith(
        "Replicated") for t in trees)
    assert set(distributed) == {n.removesuffix("_local") for n in local_tables}
    for name, args in distributed.items():
        assert args[:3] == (f"'{CLUSTER}'", f"'{DB}'", f"'{name}_local'"), args


def test_exporter_tables_keep_their_definition_on_the_cluster() -> None:
    m = discover()[0]
    local = render(m.sql, 5, CLUSTER, DB)[0]
    single = render(m.sql, 5)[0]
    body = single.split("(", 1)[1].split(") ENGINE", 1)[0]
    assert body in local  # same columns, codecs, indexes
    for clause in ("PARTITION BY toDate(Timestamp)", "ORDER BY (ServiceName, SpanName, toDateTime(Timestamp))",
                   "TTL toDateTime(Timestamp) + toIntervalDay(5)", "SETTINGS index_granularity = 8192"):
        assert clause in single and clause in local
    dist = render(m.sql, 5, CLUSTER, DB)[1]
    assert dist.endswith("cityHash64(TraceId))")  # spans of a trace on one shard: trace-id MV stays exact


def test_engine_arguments_are_kept() -> None:
    out = cluster_statements(
        "CREATE TABLE IF NOT EXISTS a (v UInt32, k String) ENGINE = ReplacingMergeTree(v) ORDER BY k", CLUSTER, DB
    )
    assert "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/otel/a_local', '{replica}', v)" in out[0]
    assert out[1].endswith("Distributed('otel_cluster', 'otel', 'a_local', rand())")
    nested = cluster_statements("CREATE TABLE b (v DateTime, k String) ENGINE = ReplacingMergeTree(toUInt32(v)) "
                                "ORDER BY k", CLUSTER, DB)[0]
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/otel/b_local', '{replica}', toUInt32(v)) " \
           "ORDER BY k" in nested


def test_alter_and_drop_reach_both_tables() -> None:
    add = cluster_statements("ALTER TABLE a ADD COLUMN IF NOT EXISTS x UInt8", CLUSTER, DB)
    assert add == ["ALTER TABLE `a_local` ON CLUSTER `otel_cluster` ADD COLUMN IF NOT EXISTS x UInt8",
                   "ALTER TABLE `a` ON CLUSTER `otel_cluster` ADD COLUMN IF NOT EXISTS x UInt8"]
    ttl = cluster_statements("ALTER TABLE a MODIFY TTL t + toIntervalDay(1)", CLUSTER, DB)
    assert ttl == ["ALTER TABLE `a_local` ON CLUSTER `otel_cluster` MODIFY TTL t + toIntervalDay(1)"]
    drop = cluster_statements("DROP TABLE IF EXISTS a", CLUSTER, DB)
    assert drop == ["DROP TABLE IF EXISTS `a` ON CLUSTER `otel_cluster`",
                    "DROP TABLE IF EXISTS `a_local` ON CLUSTER `otel_cluster`"]
    for statement in add + ttl + drop:
        tree = sqlglot.parse_one(statement, read="clickhouse")
        assert isinstance(tree, exp.Alter | exp.Drop) and tree.find(exp.OnCluster) is not None, statement


@pytest.mark.parametrize("statement, message", [
    ("CREATE TABLE t (x UInt8) ENGINE = ReplicatedMergeTree('/p', 'r') ORDER BY x", "the runner adds Replicated"),
    ("CREATE TABLE t (x UInt8) ENGINE = Memory", "needs a \\*MergeTree engine"),
    ("CREATE MATERIALIZED VIEW v ENGINE = MergeTree ORDER BY x AS SELECT 1 AS x", "use `TO <table>`"),
    ("INSERT INTO t VALUES (1)", "no cluster variant"),
])
def test_statements_without_cluster_variant_are_refused(statement: str, message: str) -> None:
    with pytest.raises(DDLError, match=message):
        cluster_statements(statement, CLUSTER, DB)
