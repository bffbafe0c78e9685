"""The SQL guard: hostile queries are refused before anything runs; real analytical queries run."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from store import Store
from tests.conftest import new_database
from tests.fixtures.telemetry import Log, Point, insert_gauge, insert_logs, insert_spans, root
from tools.sql import MAX_LIMIT, TABLE_FUNCTIONS, SQLRefused, guard, run_sql, validate_sql

TABLE_FUNCTION_QUERIES = [
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT * FROM fileCluster('c', '/etc/passwd')",
    "SELECT * FROM url('http://127.0.0.1:1/x', 'CSV', 'a String')",
    "SELECT * FROM s3('http://x/b/k', 'CSV')",
    "SELECT * FROM s3Cluster('c', 'http://x/b/k')",
    "SELECT * FROM remote('127.0.0.1', system.one)",
    "SELECT * FROM remoteSecure('127.0.0.1', default.t)",
    "SELECT * FROM cluster('default', otel_traces)",
    "SELECT * FROM clusterAllReplicas('default', otel_traces)",
    "SELECT * FROM executable('cat /etc/passwd', 'TSV', 'a String')",
    "SELECT * FROM input('a String')",
    "SELECT * FROM mysql('h:3306', 'db', 't', 'u', 'p')",
    "SELECT * FROM postgresql('h:5432', 'db', 't', 'u', 'p')",
    "SELECT * FROM jdbc('jdbc:x', 't')",
    "SELECT * FROM odbc('dsn', 't')",
    "SELECT * FROM hdfs('hdfs://h/f', 'CSV')",
    "SELECT * FROM hive('thrift://h', 'db', 't', 'a String', 'a')",
    "SELECT * FROM iceberg('http://x/t')",
    "SELECT * FROM deltaLake('http://x/t')",
    "SELECT * FROM azureBlobStorage('c', 'container', 'blob')",
    "SELECT * FROM gcs('https://storage.googleapis.com/b/k')",
    "SELECT * FROM mongodb('h:27017', 'db', 'c', 'u', 'p', 'a String')",
    "SELECT * FROM redis('h:6379', 'k', 'k String')",
    "SELECT * FROM sqlite('/tmp/x.db', 't')",
    "SELECT * FROM dictionary('d')",
    "SELECT * FROM merge('otel', '.*')",
    "SELECT * FROM numbers(1000000000000)",
    "SELECT * FROM generateRandom('a String')",
    "SELECT * FROM view(SELECT * FROM system.users)",
    "SELECT * FROM loop(otel_traces)",
    "SELECT * FROM format(CSV, 'a\\n1')",
    "SELECT * FROM fuzzJSON('{}')",
    "SELECT * FROM zeros(10)",
    # table functions hidden in joins, subqueries, CTEs and IN
    "SELECT * FROM otel_traces AS t JOIN url('http://x', 'CSV', 'a String') AS u ON 1 = 1",
    "SELECT * FROM (SELECT * FROM file('/etc/shadow', 'LineAsString'))",
    "WITH f AS (SELECT * FROM file('/etc/passwd', 'LineAsString')) SELECT * FROM f",
    "SELECT * FROM otel_traces WHERE TraceId IN (SELECT * FROM file('/etc/passwd', 'LineAsString'))",
    "SELECT 1 UNION ALL SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT (SELECT count() FROM url('http://x', 'CSV', 'a String')) AS n",
    "SELECT * FROM `file`('/etc/passwd', 'LineAsString')",
    "SELECT * FROM TABLE(file('/etc/passwd'))",
    "SELECT * FROM unnest([1, 2])",
    "SELECT * FROM otel_traces JOIN LATERAL (SELECT 1) ON 1 = 1",
]

SYSTEM_QUERIES = [
    "SELECT * FROM system.tables",
    "SELECT * FROM system.users",
    "SELECT * FROM `system`.`settings`",
    'SELECT * FROM "system"."one"',
    "SELECT * FROM SYSTEM.ONE",
    "SELECT * FROM information_schema.tables",
    "SELECT * FROM INFORMATION_SCHEMA.COLUMNS",
    "SELECT * FROM otel_traces AS t, system.one",
    "SELECT * FROM otel_traces WHERE ServiceName IN (SELECT name FROM system.databases)",
    "SELECT 1 WHERE 0 IN system.one",
    "SELECT 1 WHERE 0 GLOBAL IN system.one",
    "SELECT 1 WHERE 'x' NOT IN system.users",
    "SELECT 1 WHERE 0 IN (system.one)",
    "SELECT count() FROM otel_traces WHERE ServiceName IN secret_table",
    "SELECT notIn(0, system.one)",
    "SELECT globalIn(0, system.one)",
    "SELECT * FROM other_db.otel_traces",
    "SELECT * FROM otel_ai_migrations",
    "SELECT * FROM anomaly_model_state",
    "SELECT * FROM slack_threads",
    "SELECT * FROM default.x.y",
    # a CTE name only covers its own query and subqueries, not the parent's FROM
    "SELECT * FROM slack_threads, (WITH slack_threads AS (SELECT 1) SELECT * FROM slack_threads)",
    "SELECT * FROM otel_traces WHERE TraceId IN (SELECT * FROM secret) "
    "UNION ALL (WITH secret AS (SELECT 1) SELECT * FROM secret)",
]

FUNCTION_QUERIES = [
    "SELECT dictGet('dict', 'attr', toUInt64(1))",
    "SELECT dictGetString('dict', 'attr', toUInt64(1))",
    "SELECT dictGetOrDefault('dict', 'a', 1, 'x')",
    "SELECT dictHas('dict', 1)",
    "SELECT joinGet('j', 'v', 1)",
    "SELECT getSetting('readonly')",
    "SELECT hasColumnInTable('system', 'users', 'name')",
    "SELECT file('/etc/passwd')",
    "SELECT ServiceName FROM otel_traces WHERE length(file('/etc/passwd')) > 0",
    "SELECT sleep(3)",
    "SELECT sleepEachRow(1) FROM otel_traces",
    "SELECT getMacro('shard')",
    "SELECT filesystemAvailable()",
    "SELECT catboostEvaluate('/m.bin', 1)",
    "SELECT globalVariable('max_allowed_packet')",
]

STATEMENT_QUERIES = [
    "SELECT 1; DROP TABLE otel_traces",
    "SELECT 1; SELECT 2",
    "DROP TABLE otel_traces",
    "DROP DATABASE otel",
    "TRUNCATE TABLE otel_traces",
    "INSERT INTO otel_traces SELECT * FROM otel_traces",
    "INSERT INTO FUNCTION file('/tmp/x', 'CSV') SELECT 1",
    "ALTER TABLE otel_traces DELETE WHERE 1",
    "ALTER TABLE otel_traces ADD COLUMN x String",
    "DELETE FROM otel_traces WHERE 1",
    "UPDATE otel_traces SET ServiceName = 'x' WHERE 1",
    "OPTIMIZE TABLE otel_traces FINAL",
    "KILL QUERY WHERE 1",
    "SYSTEM SHUTDOWN",
    "SYSTEM DROP DNS CACHE",
    "ATTACH TABLE x FROM '/tmp/x'",
    "DETACH TABLE otel_traces",
    "GRANT ALL ON *.* TO default",
    "CREATE TABLE x (a Int8) ENGINE = Memory",
    "CREATE USER evil IDENTIFIED BY 'x'",
    "RENAME TABLE otel_traces TO x",
    "SET readonly = 0",
    "USE system",
    "SHOW TABLES",
    "DESCRIBE otel_traces",
    "EXPLAIN SELECT 1",
    "EXCHANGE TABLES otel_traces AND otel_logs",
    "BACKUP TABLE otel_traces TO Disk('d', 'x')",
    "",
    "   ",
    "-- just a comment",
]

CLAUSE_QUERIES = [
    "SELECT * FROM otel_traces SETTINGS readonly = 0",
    "SELECT * FROM otel_traces SETTINGS max_execution_time = 100000",
    "SELECT * FROM (SELECT * FROM otel_traces SETTINGS max_threads = 64)",
    "SELECT count() FROM otel_traces FORMAT JSON",
    "SELECT * FROM otel_traces INTO OUTFILE '/tmp/out.csv'",
    "SELECT * FROM otel_traces LIMIT 10 * 1000000",
    "SELECT * FROM otel_traces LIMIT 1e9",
    "SELECT * FROM otel_traces LIMIT -5",
    "SELECT {name:String}",
    # comments and strings trying to smuggle a second statement
    "SELECT 1 /* ; */ ; DROP TABLE otel_traces",
    "SELECT 'a'; DROP TABLE otel_traces; SELECT 'b'",
    "SELECT 'x'';DROP TABLE otel_traces;--'; DROP TABLE otel_logs",
]

HOSTILE = TABLE_FUNCTION_QUERIES + SYSTEM_QUERIES + FUNCTION_QUERIES + STATEMENT_QUERIES + CLAUSE_QUERIES


def test_enough_hostile_queries() -> None:
    assert len(HOSTILE) >= 60


@pytest.mark.parametrize("sql", HOSTILE)
def test_hostile_query_is_refused(sql: str) -> None:
    with pytest.raises(SQLRefused) as info:
        validate_sql(sql, database="otel")
    assert info.value.reason


def test_every_listed_table_function_is_refused_in_from_and_as_a_scalar() -> None:
    for name in sorted(TABLE_FUNCTIONS):
        for sql in (f"SELECT * FROM {name}('x')", f"SELECT {name}('x') FROM otel_traces"):
            try:
                validate_sql(sql)
            except SQLRefused:
                continue
            pytest.fail(f"not refused: {sql}")


def test_comments_never_reach_the_engine() -> None:
    # sqlglot would render `-- */ ; DROP` as `/* */ ; DROP */`: comments must be dropped, not re-rendered.
    out = validate_sql("SELECT count() FROM otel_traces -- */ ; DROP TABLE otel_traces")
    assert "DROP" not in out and "/*" not in out and "--" not in out


def test_limit_added_and_clamped() -> None:
    assert validate_sql("SELECT 1").endswith("LIMIT 200")
    assert validate_sql("SELECT 1", default_limit=7).endswith("LIMIT 7")
    assert validate_sql("SELECT 1 LIMIT 50").endswith("LIMIT 50")
    assert validate_sql("SELECT 1 LIMIT 999999999").endswith(f"LIMIT {MAX_LIMIT}")
    assert validate_sql("SELECT 1 LIMIT 20", max_limit=10).endswith("LIMIT 10")
    wrapped = validate_sql("SELECT 1 AS a UNION ALL SELECT 2 AS a")
    assert wrapped.startswith("SELECT * FROM (") and wrapped.endswith("LIMIT 200")
    by = validate_sql("SELECT ServiceName FROM otel_traces LIMIT 2 BY ServiceName")
    assert by.endswith("LIMIT 200")
    assert guard("SELECT 1 LIMIT 99999").notes == [f"LIMIT 99999 clamped to {MAX_LIMIT}"]


def test_qualified_name_of_the_current_database_is_allowed() -> None:
    assert "otel.otel_traces" in validate_sql("SELECT count() FROM otel.otel_traces", database="otel")
    with pytest.raises(SQLRefused):
        validate_sql("SELECT count() FROM otel.otel_traces", database="t_other")


# ---------------------------------------------------------------- accepted queries, run on real chDB

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def data_store(root_store: Store) -> Iterator[Store]:
    store = new_database(root_store, prefix="guard")
    spans = []
    for i in range(20):
        r = root("frontend", "GET /checkout", NOW - dt.timedelta(minutes=i), 100 + i,
                 attributes={"http.route": "/checkout", "note": "file('/etc/passwd') DROP TABLE"},
                 status="Error" if i % 5 == 0 else "Unset")
        spans += [r, r.child("payments", "charge", 10, 50 + i, kind="Server")]
    insert_spans(store, spans)
    insert_logs(store, [Log("payments", NOW - dt.timedelta(minutes=i), f"charge failed id={i}", "ERROR", 17,
                            trace_id=spans[2 * i].trace_id) for i in range(10)])
    insert_gauge(store, [Point("payments", "process.cpu.utilization", NOW - dt.timedelta(minutes=i), 0.1 * i, "1")
                         for i in range(10)])
    yield store
    store.close()


ACCEPTED = [
    "SELECT count() FROM otel_traces",
    "SELECT ServiceName, count() AS n FROM otel_traces GROUP BY ServiceName ORDER BY n DESC",
    "SELECT ServiceName, quantile(0.95)(Duration) / 1e6 AS p95_ms FROM otel_traces GROUP BY ServiceName",
    "SELECT ServiceName, quantiles(0.5, 0.95, 0.99)(Duration) FROM otel_traces GROUP BY ServiceName",
    "SELECT SpanName, countIf(StatusCode = 'Error') / count() AS error_rate FROM otel_traces GROUP BY SpanName",
    "SELECT toStartOfMinute(Timestamp) AS t, count() FROM otel_traces GROUP BY t ORDER BY t",
    "SELECT toStartOfInterval(Timestamp, INTERVAL 5 MINUTE) AS t, avg(Duration) FROM otel_traces GROUP BY t ORDER BY t",
    "SELECT * FROM otel_traces WHERE Timestamp > now() - INTERVAL 1 HOUR ORDER BY Duration DESC LIMIT 5",
    "SELECT TraceId, SpanId, ParentSpanId FROM otel_traces WHERE ServiceName = 'payments' LIMIT 3",
    "SELECT SpanAttributes['http.route'] AS route, count() FROM otel_traces GROUP BY route",
    "SELECT ResourceAttributes['service.name'] AS s FROM otel_traces LIMIT 1",
    "SELECT arrayJoin(mapKeys(SpanAttributes)) AS k, count() FROM otel_traces GROUP BY k",
    "SELECT k, count() FROM otel_traces ARRAY JOIN mapKeys(SpanAttributes) AS k GROUP BY k",
    "SELECT p.ServiceName AS caller, c.ServiceName AS callee, count() FROM otel_traces AS c "
    "INNER JOIN otel_traces AS p ON c.TraceId = p.TraceId AND c.ParentSpanId = p.SpanId "
    "WHERE p.ServiceName != c.ServiceName GROUP BY caller, callee",
    "WITH slow AS (SELECT TraceId FROM otel_traces WHERE Duration > 110000000) "
    "SELECT ServiceName, count() FROM otel_traces WHERE TraceId IN (SELECT TraceId FROM slow) GROUP BY ServiceName",
    "SELECT ServiceName FROM otel_traces WHERE ServiceName IN ('payments', 'frontend') GROUP BY ServiceName",
    "SELECT ServiceName FROM otel_traces UNION ALL SELECT ServiceName FROM otel_logs",
    "SELECT DISTINCT ServiceName FROM otel_traces INTERSECT SELECT DISTINCT ServiceName FROM otel_logs",
    "SELECT ServiceName, SpanName, count() FROM otel_traces GROUP BY ServiceName, SpanName LIMIT 1 BY ServiceName",
    "SELECT ServiceName, avg(Duration) OVER (PARTITION BY ServiceName) AS a FROM otel_traces LIMIT 10",
    "SELECT Body, SeverityText FROM otel_logs WHERE SeverityNumber >= 17 ORDER BY Timestamp DESC",
    "SELECT count() FROM otel_logs WHERE Body LIKE '%failed%'",
    "SELECT l.Body, t.SpanName FROM otel_logs AS l INNER JOIN otel_traces AS t ON l.TraceId = t.TraceId LIMIT 5",
    "SELECT MetricName, MetricUnit, avg(Value), max(Value) FROM otel_metrics_gauge GROUP BY MetricName, MetricUnit",
    "SELECT count() FROM otel_metrics_sum",
    "SELECT count() FROM otel_metrics_histogram",
    "SELECT * FROM anomalies ORDER BY window_start DESC",
    "SELECT TraceId, Start, End FROM otel_traces_trace_id_ts LIMIT 3",
    "(SELECT count() FROM otel_traces)",
    "SELECT count() FROM (SELECT TraceId FROM otel_traces GROUP BY TraceId HAVING count() > 1)",
    "SELECT ServiceName, sum(Duration) FROM otel_traces GROUP BY ServiceName WITH TOTALS",
    "SELECT if(StatusCode = 'Error', 'bad', 'good') AS s, count() FROM otel_traces GROUP BY s",
    "SELECT multiIf(Duration > 1e8, 'slow', 'ok') AS c, count() FROM otel_traces GROUP BY c",
    # string literals full of dangerous words are just strings
    "SELECT count() FROM otel_traces WHERE SpanAttributes['note'] = 'file(''/etc/passwd'') DROP TABLE'",
    "SELECT 'DROP TABLE otel_traces; SELECT * FROM system.users' AS s",
    "SELECT 'file(\\'/etc/passwd\\')' AS s, 'SETTINGS readonly=0' AS t",
    "SELECT count() FROM otel_logs WHERE Body NOT LIKE '%-- comment%' AND Body != '/* x */'",
    "SELECT replaceRegexpAll(Body, '[0-9]+', '<n>') AS tpl, count() FROM otel_logs GROUP BY tpl",
    "SELECT ServiceName FROM otel_traces WHERE ServiceName = 'url(http://x)' OR 1 = 1 LIMIT 1",
    "SELECT count() FROM anomalies FINAL",
    "SELECT * FROM otel_traces ORDER BY Timestamp DESC LIMIT 999999",
    "WITH a AS (SELECT TraceId FROM otel_traces), b AS (SELECT * FROM a) SELECT count() FROM b",
    "SELECT count() FROM (WITH x AS (SELECT ServiceName FROM otel_traces) SELECT * FROM x)",
]


def test_enough_accepted_queries() -> None:
    assert len(ACCEPTED) >= 30


@pytest.mark.parametrize("sql", ACCEPTED)
def test_accepted_query_runs(data_store: Store, sql: str) -> None:
    result = run_sql(data_store, sql)
    assert result.ok, result.error
    assert result.sql and result.sql[0].rstrip().split()[-2] == "LIMIT"
    assert "<telemetry-data>" in result.summary


def test_results_hold_the_stored_numbers(data_store: Store) -> None:
    result = run_sql(data_store, "SELECT ServiceName AS s, count() AS n, countIf(StatusCode = 'Error') AS e "
                                 "FROM otel_traces GROUP BY s ORDER BY s")
    assert result.ok
    assert result.columns == ["s", "n", "e"]
    assert result.rows == [{"s": "frontend", "n": 20, "e": 4}, {"s": "payments", "n": 20, "e": 0}]
    literal = run_sql(data_store, "SELECT count() AS n FROM otel_traces "
                                  "WHERE SpanAttributes['note'] = 'file(''/etc/passwd'') DROP TABLE'")
    assert literal.rows == [{"n": 20}]


def test_huge_limit_is_clamped_when_run(data_store: Store) -> None:
    result = run_sql(data_store, "SELECT Timestamp FROM otel_traces LIMIT 999999", max_limit=7)
    assert result.ok and len(result.rows) == 7
    assert "clamped to 7" in result.summary


def test_refusal_and_engine_errors_come_back_as_reasons(data_store: Store) -> None:
    refused = run_sql(data_store, "SELECT * FROM file('/etc/passwd', 'LineAsString')")
    assert not refused.ok and refused.error.startswith("refused:") and "file" in refused.error
    assert refused.rows == [] and refused.sql == []
    failed = run_sql(data_store, "SELECT NoSuchColumn FROM otel_traces")
    assert not failed.ok and failed.error.startswith("query failed:") and "NoSuchColumn" in failed.error
    assert failed.sql  # the SQL that was tried is kept for the model


def test_engine_limits_apply_to_guarded_sql(data_store: Store) -> None:
    # readonly=1 is set per query, so the engine itself refuses even what a guard bug would let through.
    from tools.sql import query

    with pytest.raises(Exception, match="(?i)readonly"):
        query(data_store, "SELECT * FROM file('/etc/hostname', 'LineAsString')")
    # ... and the session is not left read-only for writers.
    assert insert_gauge(data_store, [Point("x", "m", NOW, 1.0)]) == 1
