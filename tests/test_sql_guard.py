"""The SQL guard: hostile queries are refused before anything runs; real analytical queries run."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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


# ---------------------------------------------------------------- issue 17: scope, functions, engine check

# Names that look like CTEs but are not where they stand: ClickHouse reads the real table.
SHADOWING = [
    "WITH 1 AS chat_threads SELECT * FROM chat_threads",
    "WITH 'x' AS chat_users SELECT * FROM chat_users",
    "WITH (SELECT 1) AS chat_threads SELECT * FROM chat_threads",
    "WITH (SELECT 1) AS slack_threads SELECT count() FROM slack_threads",
    "WITH chat_threads AS (SELECT * FROM chat_threads) SELECT * FROM chat_threads",
    "WITH t AS (SELECT * FROM chat_users) SELECT * FROM t",
    "WITH otel_traces AS (SELECT * FROM otel_ai_migrations) SELECT * FROM otel_traces",
    "WITH a AS (SELECT * FROM chat_users), chat_users AS (SELECT 1 AS x) SELECT * FROM a",
    "WITH chat_users AS (SELECT 1 AS x), chat_users AS (SELECT 2 AS x) SELECT * FROM chat_users",
    "WITH 1 AS chat_users, chat_users AS (SELECT 1 AS x) SELECT * FROM chat_users",
    "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r",
    "SELECT * FROM (WITH 1 AS dashboards SELECT * FROM dashboards)",
    "SELECT count() FROM otel_traces WHERE TraceId IN (WITH 2 AS chat_steps SELECT id FROM chat_steps)",
    "WITH Chat_threads AS (SELECT 1 AS x) SELECT * FROM chat_threads",
]
IN_TABLE = [
    "SELECT 1 WHERE (1, 'x') IN ((otel_ai_migrations))",
    "SELECT 1 WHERE (1, 'x') IN (((otel_ai_migrations)))",
    "SELECT 1 WHERE 'local' IN ((chat_users))",
    "SELECT 1 WHERE 'local' NOT IN ((chat_users))",
    "SELECT 1 WHERE 'local' GLOBAL IN ((chat_users))",
    "SELECT 1 WHERE tuple('local') IN chat_users",
    "SELECT 1 WHERE 'x' IN (chat_threads)",
    "SELECT 1 WHERE 'x' IN (chat_threads, 'y')",
    "SELECT 1 WHERE 'x' IN (otel.chat_threads)",
    "SELECT count() FROM otel_traces WHERE ServiceName IN (dashboards)",
    "SELECT 1 WHERE 'x' IN (SELECT identifier FROM chat_users)",
    "SELECT (SELECT any(conversation) FROM slack_threads) AS c",
    "SELECT 1 WHERE EXISTS (SELECT 1 FROM anomaly_model_state)",
    "SELECT count() FROM otel_traces JOIN chat_feedback USING (TraceId)",
    "SELECT arrayMap(x -> x, (SELECT groupArray(name) FROM chat_threads)) AS a",
    "SELECT * FROM otel_traces_1m_mv",
    "SELECT * FROM OTEL_TRACES",
]
SERVER_FACTS = [
    "SELECT user()",
    "SELECT currentUser()",
    "SELECT current_user()",
    "SELECT SESSION_USER",
    "SELECT CURRENT_USER",
    "SELECT USER",
    "SELECT DATABASE",
    "SELECT authenticatedUser()",
    "SELECT enabledProfiles()",
    "SELECT currentProfiles()",
    "SELECT currentRoles()",
    "SELECT hostName()",
    "SELECT FQDN()",
    "SELECT fqdn()",
    "SELECT buildId()",
    "SELECT getSetting('max_memory_usage')",
    "SELECT getSettingOrDefault('x', 1)",
    "SELECT logTrace('planted text')",
    "SELECT version()",
    "SELECT uptime()",
    "SELECT currentDatabase()",
    "SELECT serverUUID()",
    "SELECT tcpPort()",
    "SELECT getServerPort('tcp_port')",
    "SELECT queryID()",
    "SELECT currentQueryID()",
    "SELECT initialQueryID()",
    "SELECT getOSKernelVersion()",
    "SELECT filesystemCapacity()",
    "SELECT revision()",
    "SELECT displayName()",
    "SELECT zookeeperSessionUptime()",
    "SELECT throwIf(1, 'boom')",
    "SELECT randomString(1000000000)",
    "SELECT ServiceName, hostName() AS h FROM otel_traces",
    "SELECT count() FROM otel_traces WHERE ServiceName = currentUser()",
    "SELECT if(1, version(), '') AS v",
    "SELECT count() FROM otel_traces GROUP BY hostName()",
    "SELECT arrayMap(x -> getSetting('readonly'), [1]) AS a",
    "SELECT in(1, chat_users)",
    "SELECT defaultRoles()",
    "SELECT connectionId()",
    "SELECT showCertificate()",
    "SELECT currentSchemas(true)",
    "SELECT currentRequestURL()",
    "SELECT currentHandler()",
    "SELECT tid()",
    "SELECT initialQueryStartTime()",
    "SELECT getMacro('replica')",
    "SELECT getServerSetting('max_connections')",
]
# The server's time zone: asked for, or read off now() or a column without its own zone.
TIME_ZONE_FACTS = [
    "SELECT timezone()",
    "SELECT timeZone()",
    "SELECT TIMEZONE() AS tz",
    "SELECT serverTimezone()",
    "SELECT serverTimeZone()",
    "SELECT timezoneOf(now())",
    "SELECT timeZoneOf(Timestamp) FROM otel_traces",
    "SELECT timezoneOffset(now())",
    "SELECT timeZoneOffset(now())",
    "SELECT count() FROM otel_traces WHERE ServiceName != timezone()",
]
SERVER_FACTS += TIME_ZONE_FACTS
NEW_HOSTILE = SHADOWING + IN_TABLE + SERVER_FACTS


def test_enough_new_hostile_queries() -> None:
    assert len(NEW_HOSTILE) >= 50 and len(set(NEW_HOSTILE)) == len(NEW_HOSTILE)


@pytest.mark.parametrize("sql", NEW_HOSTILE)
def test_new_hostile_query_is_refused(sql: str) -> None:
    with pytest.raises(SQLRefused) as info:
        validate_sql(sql, database="otel")
    assert info.value.reason


@pytest.fixture(scope="module")
def secret_store(data_store: Store) -> Store:
    """The guard's database with a private chat row, as a logged-in user's history would be."""
    data_store.command("INSERT INTO chat_threads (id, version, name, user_identifier, conversation) "
                       "VALUES ('t1', 1, 'private', 'alice', 'SECRET-CONVERSATION')")
    data_store.command("INSERT INTO chat_users (id, identifier, version) VALUES ('u1', 'alice', 1)")
    return data_store


# (Not `WITH a AS (SELECT * FROM chat_users), chat_users AS (...)`: ClickHouse reads the later CTE there,
# the parser guard refuses it anyway because it only trusts CTEs defined before.)
@pytest.mark.parametrize("sql", SHADOWING[:7] + IN_TABLE[:11] + SERVER_FACTS[:8])
def test_engine_check_refuses_what_clickhouse_would_read(secret_store: Store, sql: str) -> None:
    """The second layer alone (the engine's resolved query tree) refuses the same queries."""
    from tools.sql import SqlLimits, check_engine_plan

    try:
        check_engine_plan(secret_store, sql, SqlLimits().settings())
    except SQLRefused as exc:
        assert exc.reason
        return
    except Exception as exc:  # ClickHouse itself rejects a few forms (duplicate names, recursive CTE)
        assert "SECRET" not in str(exc)
        return
    pytest.fail(f"engine check let through: {sql}")


@pytest.mark.parametrize("sql", TIME_ZONE_FACTS)
def test_time_zone_functions_are_refused_as_server_facts(data_store: Store, sql: str) -> None:
    """`SELECT timezone()` ran through the guard and told the server's time zone; now both layers refuse it
    (and the ways to read it off now() or a column) as a server fact, and no row comes back."""
    from tools.sql import SqlLimits, check_engine_plan

    with pytest.raises(SQLRefused) as info:
        validate_sql(sql, database="otel")
    assert "is not allowed: it tells about the server, not the telemetry" in info.value.reason, info.value.reason
    with pytest.raises(SQLRefused) as info:
        check_engine_plan(data_store, sql, SqlLimits().settings())
    assert "is not allowed" in info.value.reason, info.value.reason
    result = run_sql(data_store, sql)
    assert not result.ok and result.error.startswith("refused:") and result.rows == [], result


def test_server_facts_are_refused_with_a_reason_that_says_so() -> None:
    for sql in ("SELECT hostName()", "SELECT version()", "SELECT uptime()", "SELECT currentUser()",
                "SELECT getSetting('readonly')", "SELECT getMacro('replica')"):
        with pytest.raises(SQLRefused) as info:
            validate_sql(sql, database="otel")
        assert info.value.reason.endswith("() is not allowed: it tells about the server, not the telemetry"), sql


def test_the_servers_utc_offset_is_not_readable_off_formatted_times(tmp_path: Path) -> None:
    """An engine in another zone (Asia/Tokyo, +09:00) rendered now() in its own zone, so `%z`, or now() beside
    now('UTC'), told the server's offset through the guard. Guarded SQL runs with UTC as the session's zone."""
    script = (
        "import json, sys\n"
        "from store import Store\n"
        "from tools.sql import run_sql\n"
        "store = Store.connect(sys.argv[1], database='default')\n"
        "r = run_sql(store, \"SELECT formatDateTime(now(), '%z') AS z, "
        "dateDiff('minute', toDateTime(toString(now('UTC'))), toDateTime(toString(now()))) AS shift\")\n"
        "print(json.dumps({'ok': r.ok, 'rows': r.rows, 'error': r.error}))\n"
    )
    env = {**os.environ, "TZ": "Asia/Tokyo", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", script, f"chdb://{tmp_path}"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ok"], result
    assert result["rows"] == [{"z": "+0000", "shift": 0}], result


def test_times_still_convert_between_zones(data_store: Store) -> None:
    result = run_sql(data_store, "SELECT toString(toTimeZone(max(Timestamp), 'UTC')) AS t FROM otel_traces")
    assert result.ok and result.rows[0]["t"], result.error


def test_shadowing_returns_a_refusal_not_the_rows(secret_store: Store) -> None:
    for sql in ("WITH 1 AS chat_threads SELECT * FROM chat_threads",
                "SELECT 1 AS hit WHERE ('t1', 'SECRET-CONVERSATION') IN ((SELECT id, conversation FROM chat_threads))",
                "SELECT 1 AS hit WHERE 'alice' IN ((chat_users))"):
        result = run_sql(secret_store, sql)
        assert not result.ok and result.error.startswith("refused:"), sql
        assert result.rows == [] and "SECRET" not in result.error


# Legitimate analytics that must still run (CTEs, window functions, arrayJoin over attributes, subqueries).
ANALYTICS = [
    "WITH per_min AS (SELECT toStartOfMinute(Timestamp) AS t, count() AS n FROM otel_traces GROUP BY t) "
    "SELECT t, n, avg(n) OVER (ORDER BY t ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS smooth FROM per_min ORDER BY t",
    "SELECT ServiceName, Duration, row_number() OVER (PARTITION BY ServiceName ORDER BY Duration DESC) AS rn "
    "FROM otel_traces ORDER BY ServiceName, rn",
    "SELECT * FROM (SELECT ServiceName, SpanName, Duration, rank() "
    "OVER (PARTITION BY ServiceName ORDER BY Duration DESC) AS r FROM otel_traces) WHERE r <= 3",
    "SELECT ServiceName, Timestamp, lagInFrame(Duration) OVER (PARTITION BY ServiceName ORDER BY Timestamp) AS prev "
    "FROM otel_traces",
    "SELECT ServiceName, dense_rank() OVER (ORDER BY count() DESC) AS r, count() AS n FROM otel_traces "
    "GROUP BY ServiceName",
    "SELECT ServiceName, sum(count()) OVER () AS total, count() AS n FROM otel_traces GROUP BY ServiceName",
    "SELECT arrayJoin(mapKeys(SpanAttributes)) AS key, count() AS n FROM otel_traces GROUP BY key ORDER BY n DESC",
    "SELECT arrayJoin(mapKeys(ResourceAttributes)) AS key, uniqExact(ResourceAttributes[key]) AS values "
    "FROM otel_traces GROUP BY key",
    "SELECT kv.1 AS key, kv.2 AS value, count() FROM otel_traces ARRAY JOIN CAST(SpanAttributes, "
    "'Array(Tuple(String, String))') AS kv GROUP BY key, value",
    "SELECT tupleElement(arrayJoin(arrayZip(mapKeys(SpanAttributes), mapValues(SpanAttributes))), 1) AS k, count() "
    "FROM otel_traces GROUP BY k",
    "SELECT SpanAttributes['http.route'] AS route, quantileTDigest(0.99)(Duration) / 1e6 AS p99 FROM otel_traces "
    "WHERE mapContains(SpanAttributes, 'http.route') GROUP BY route",
    "SELECT ServiceName FROM otel_traces WHERE TraceId IN (SELECT TraceId FROM otel_logs WHERE SeverityNumber >= 17) "
    "GROUP BY ServiceName",
    "SELECT ServiceName, (SELECT count() FROM otel_logs) AS logs, count() AS spans FROM otel_traces "
    "GROUP BY ServiceName",
    "SELECT s.ServiceName, s.n, l.errors FROM (SELECT ServiceName, count() AS n FROM otel_traces GROUP BY ServiceName) "
    "AS s LEFT JOIN (SELECT ServiceName, count() AS errors FROM otel_logs GROUP BY ServiceName) AS l "
    "ON s.ServiceName = l.ServiceName",
    "WITH errors AS (SELECT TraceId FROM otel_traces WHERE StatusCode = 'Error'), "
    "slow AS (SELECT TraceId FROM otel_traces WHERE Duration > 105000000) "
    "SELECT count() FROM otel_traces WHERE TraceId IN (SELECT TraceId FROM errors) "
    "AND TraceId IN (SELECT TraceId FROM slow)",
    "WITH 0.95 AS q SELECT ServiceName, quantile(q)(Duration) FROM otel_traces GROUP BY ServiceName",
    "WITH toDateTime64(now() - INTERVAL 1 DAY, 9) AS since SELECT count() FROM otel_traces WHERE Timestamp >= since",
    "WITH (SELECT max(Timestamp) FROM otel_traces) AS latest SELECT count() FROM otel_traces "
    "WHERE Timestamp > latest - INTERVAL 5 MINUTE",
    "SELECT ServiceName, countIf(StatusCode = 'Error') AS errors, sumIf(Duration, StatusCode = 'Error') AS d, "
    "avgIf(Duration, StatusCode != 'Error') AS ok_avg, uniqExactIf(TraceId, Duration > 1e8) AS slow FROM otel_traces "
    "GROUP BY ServiceName",
    "SELECT ServiceName, argMax(SpanName, Duration) AS slowest, topK(3)(SpanName) AS top FROM otel_traces "
    "GROUP BY ServiceName",
    "SELECT toStartOfFiveMinutes(Timestamp) AS t, quantilesExact(0.5, 0.9)(Duration) AS q FROM otel_traces GROUP BY t",
    "SELECT formatDateTime(Timestamp, '%H:%M') AS hm, dateDiff('second', min(Timestamp), max(Timestamp)) AS span_s "
    "FROM otel_traces GROUP BY hm",
    "SELECT lower(ServiceName) AS s, concat(s, '/', SpanName) AS op, length(op) AS len, substring(op, 1, 5) AS pre, "
    "replaceRegexpOne(op, '[0-9]+', 'N') AS norm FROM otel_traces LIMIT 5",
    "SELECT extract(Body, 'id=([0-9]+)') AS id, toUInt32OrZero(id) AS n, cityHash64(Body) AS h, "
    "sipHash64(Body) AS h2 FROM otel_logs",
    "SELECT JSONExtractString('{\"a\": \"b\"}', 'a') AS a, toString(123) AS s, toFloat64('1.5') AS f, "
    "CAST(Duration AS Float64) / 1e6 AS ms FROM otel_traces LIMIT 3",
    "SELECT multiIf(Duration < 1e8, 'fast', Duration < 1.1e8, 'ok', 'slow') AS bucket, count() FROM otel_traces "
    "GROUP BY bucket",
    "SELECT CASE WHEN StatusCode = 'Error' THEN 'bad' ELSE 'good' END AS s, coalesce(nullIf(StatusMessage, ''), '-') "
    "AS m, count() FROM otel_traces GROUP BY s, m",
    "SELECT MetricName, groupArray(Value) AS vs, arraySort(vs) AS sorted, arrayReduce('max', vs) AS mx, "
    "round(avg(Value), 2) AS av FROM otel_metrics_gauge GROUP BY MetricName",
    "SELECT MetricName, toStartOfMinute(TimeUnix) AS t, max(Value) - min(Value) AS delta FROM otel_metrics_gauge "
    "GROUP BY MetricName, t",
    "SELECT ServiceName, greatest(max(Duration), 0) AS mx, least(min(Duration), toUInt64(1e12)) AS mn, "
    "formatReadableQuantity(count()) AS n FROM otel_traces GROUP BY ServiceName",
    "SELECT Body FROM otel_logs WHERE positionCaseInsensitive(Body, 'FAILED') > 0 AND match(Body, 'id=[0-9]') "
    "AND NOT empty(Body)",
    "SELECT count() FROM otel_traces WHERE has(mapKeys(SpanAttributes), 'note') AND startsWith(SpanName, 'GET')",
    "SELECT p.ServiceName AS caller, c.ServiceName AS callee, avg(c.Duration) FROM otel_traces AS c "
    "INNER JOIN otel_traces AS p ON c.ParentSpanId = p.SpanId AND c.TraceId = p.TraceId GROUP BY caller, callee",
    "SELECT ServiceName, exp(avg(log(Duration))) AS geo_mean, stddevPop(Duration) AS sd FROM otel_traces "
    "GROUP BY ServiceName",
    "SELECT ServiceName FROM otel_traces GROUP BY ServiceName HAVING count() > (SELECT count() / 10 FROM otel_traces)",
    "SELECT Timestamp, Duration - lagInFrame(Duration, 1, Duration) OVER (ORDER BY Timestamp) AS d FROM otel_traces",
]


def test_enough_analytics_queries() -> None:
    assert len(ANALYTICS) >= 30 and len(set(ANALYTICS)) == len(ANALYTICS)


@pytest.mark.parametrize("sql", ANALYTICS)
def test_analytics_query_still_runs(data_store: Store, sql: str) -> None:
    result = run_sql(data_store, sql)
    assert result.ok, result.error
    assert result.rows, "returned no rows on data that has them"


def test_function_allow_list_covers_families_and_refuses_server_facts() -> None:
    from tools.sql import is_allowed_function

    for name in ("count", "countIf", "quantilesTDigestIf", "uniqMerge", "sumArray", "row_number", "lagInFrame",
                 "toStartOfMinute", "JSONExtractString", "mapKeys", "arrayJoin", "cityHash64", "toString", "multiIf",
                 "replaceRegexpAll", "plus", "quantileExactInclusive", "avgOrNullIf"):
        assert is_allowed_function(name), name
    for name in ("user", "currentUser", "hostName", "FQDN", "buildId", "getSetting", "logTrace", "sleep", "file",
                 "dictGet", "joinGet", "version", "uptime", "countUser", "getSettingIf", "hostNameIf", "timezone",
                 "timeZone", "serverTimezone", "timezoneOf", "timezoneOffset", "getMacro"):
        assert not is_allowed_function(name), name
