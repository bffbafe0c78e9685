"""The SQL guard and runner: model- or person-written SQL is parsed, checked, re-rendered, checked again
by the engine, and run read-only under limits.

Why a parser and not the engine's readonly mode alone: in chDB `readonly=2` still lets `file()` read
local files, table functions reach the network (url, s3, remote, mysql ...) and `x IN name` reads any
table. So nothing runs before sqlglot (ClickHouse dialect) has proven the query is exactly one SELECT
(WITH/UNION/INTERSECT/EXCEPT allowed) that
- reads only the telemetry tables (TELEMETRY_TABLES), with every name resolved by scope the way
  ClickHouse does: a name is a CTE only where a real CTE subquery of that name is in scope, and not
  inside its own body (`WITH 1 AS t`, `WITH (SELECT 1) AS t`, `WITH t AS (SELECT * FROM t)` all read
  the table t); no name may follow IN (`x IN ((t))` reads table t);
- calls only functions of the analytics families (tools/sql_functions.py, an allow-list), so server
  facts (user(), hostName(), getSetting() ...), logTrace(), files and dictionaries are out;
- has no SETTINGS/FORMAT/INTO OUTFILE clause.
The SQL sent to ClickHouse is the one sqlglot renders from the checked tree, without comments, so text
the parser did not see cannot reach the engine.

Then ClickHouse gives a second opinion before anything is read: `EXPLAIN QUERY TREE` names every table
and function the engine resolved, and anything outside the allow-lists is refused (check_engine_plan).
The query runs with `readonly=1` (which, unlike 2, makes chDB refuse `file()` too) and SqlLimits: time,
memory, result bytes, rows scanned and join size; the outermost LIMIT is added (default 200) or clamped
(max 10,000).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from store import Store
from store import quote_literal as literal  # noqa: F401  (tools import it from here)
from tools.result import ToolResult
from tools.sql_functions import FAMILIES

AGGREGATE_FAMILY = "aggregate (incl. quantiles and window functions)"

DIALECT = "clickhouse"
DEFAULT_LIMIT = 200
MAX_LIMIT = 10_000

# The only tables a query may read: the OpenTelemetry exporter's tables, the views and rollups over
# them that analytics use, and the anomaly scores. Our own tables (chat threads and users, Slack
# threads, dashboards, model state, migrations) never are, whatever a query calls them.
TELEMETRY_TABLES = frozenset({
    "otel_traces", "otel_traces_trace_id_ts", "otel_traces_1m", "otel_logs", "otel_metrics_gauge",
    "otel_metrics_sum", "otel_metrics_histogram", "otel_metrics_exponential_histogram", "otel_metrics_summary",
    "anomalies",
})
TABLES_HINT = "otel_traces, otel_logs, otel_metrics_gauge|sum|histogram|exponential_histogram|summary or anomalies"
# What ClickHouse reads for a query without FROM (one row, one `dummy` column).
IMPLICIT_TABLES = frozenset({"system.one"})

# Allowed functions (lower-cased): the analytics families of tools/sql_functions.py.
ALLOWED_FUNCTIONS = frozenset(n.lower() for names in FAMILIES.values() for n in names.split())
AGGREGATE_FUNCTIONS = frozenset(n.lower() for n in FAMILIES[AGGREGATE_FAMILY].split())
# Aggregate combinators (countIf, sumArray, quantilesState, uniqMerge, ...): allowed on allowed aggregates.
AGGREGATE_COMBINATORS = tuple(c.lower() for c in (
    "If Array Map State Merge MergeState ForEach OrDefault OrNull Resample Distinct SimpleState ArgMin ArgMax"
).split())
# Table functions, named in messages (any function in FROM is refused by shape, these also as scalars).
TABLE_FUNCTIONS = frozenset(
    name.lower()
    for name in (
        "file fileCluster url urlCluster s3 s3Cluster gcs oss cosn azureBlobStorage azureBlobStorageCluster "
        "hdfs hdfsCluster hive iceberg icebergS3 icebergAzure icebergHDFS icebergLocal icebergCluster "
        "icebergS3Cluster deltaLake deltaLakeCluster hudi hudiCluster paimon remote remoteSecure cluster "
        "clusterAllReplicas executable input mysql postgresql jdbc odbc sqlite mongodb redis dictionary "
        "merge numbers numbers_mt zeros zeros_mt generateRandom generate_series generateSeries view "
        "viewIfPermitted viewExplain loop format fuzzJSON fuzzQuery values null timeSeriesData "
        "timeSeriesTags timeSeriesMetrics mergeTreeIndex mergeTreeParts mergeTreeProjection prometheusQuery "
        "prometheusQueryRange arrowFlight arrowflight ytsaurus primes python"
    ).split()
)
# Allowed in the engine's resolved tree (the analyzer writes `x IN t` as in(x, t)), never as written:
# the functional forms of IN take a table name as their right side.
WRITTEN_IN_FUNCTIONS = frozenset(
    name.lower()
    for name in (
        "in notIn globalIn globalNotIn nullIn notNullIn globalNullIn globalNotNullIn inIgnoreSet "
        "notInIgnoreSet globalInIgnoreSet globalNotInIgnoreSet notNullInIgnoreSet nullInIgnoreSet "
        "globalNullInIgnoreSet globalNotNullInIgnoreSet"
    ).split()
)
# Functions that tell about the server rather than the telemetry (who, where, which version, its settings,
# its time zone). The allow-list refuses them already; this set only names the reason in the refusal.
SERVER_FACT_FUNCTIONS = frozenset(
    name.lower()
    for name in (
        "user currentUser current_user session_user authenticatedUser hostName FQDN displayName version "
        "uptime buildId revision serverUUID getSetting getSettingOrDefault getServerSetting getMergeTreeSetting "
        "getMacro getServerPort tcpPort currentDatabase currentSchemas currentProfiles enabledProfiles "
        "defaultProfiles currentRoles enabledRoles defaultRoles timezone timeZone serverTimezone serverTimeZone "
        "timezoneOf timeZoneOf timezoneOffset timeZoneOffset getOSKernelVersion zookeeperSessionUptime "
        "connectionId connection_id queryID query_id currentQueryID initialQueryID initialQueryStartTime "
        "shardNum shardCount filesystemAvailable filesystemCapacity filesystemUnreserved showCertificate "
        "currentRequestURL currentHandler tid getClientHTTPHeader"
    ).split()
)
SERVER_FACT_REASON = "it tells about the server, not the telemetry"
# Bare words ClickHouse answers as server facts (`SELECT SESSION_USER` is currentUser()).
NILADIC_FACTS = frozenset({"user", "current_user", "session_user", "current_database", "database", "schema"})
# sqlglot nodes that are syntax rather than a named function (CASE, CAST, EXTRACT ...).
_STRUCTURAL_FUNCS: tuple[type[exp.Expression], ...] = tuple(
    t for t in (getattr(exp, n, None) for n in "Case Cast TryCast Extract If Interval".split()) if isinstance(t, type)
)
FORBIDDEN_SCHEMAS = frozenset({"system", "information_schema"})


@dataclass(frozen=True)
class SqlLimits:
    """Engine limits for ad-hoc (guarded) SQL: one query may not exhaust memory, CPU or the response.

    Lower than the tools' own analytics limits: a person or a model writing SQL can ask for a cross
    join or a 4 GB string column; these make ClickHouse stop it with a clear error instead."""

    max_execution_time: int = 20
    max_memory_usage: int = 2 * 1024**3
    max_result_bytes: int = 32 * 1024**2
    max_rows_to_read: int = 500_000_000
    max_rows_in_join: int = 20_000_000
    max_bytes_in_join: int = 512 * 1024**2
    # half the cores at most: ingest and health checks keep the rest while a heavy query runs
    max_threads: int = field(default_factory=lambda: max(1, (os.cpu_count() or 2) // 2))

    def settings(self) -> dict[str, Any]:
        return {
            "readonly": 1,
            "max_threads": self.max_threads,
            "max_execution_time": self.max_execution_time,
            "max_memory_usage": self.max_memory_usage,
            # (max_result_bytes is enforced by cap_result_bytes: the engine's own setting of that name
            # lets a single block of any size through and also caps IN-subquery sets)
            "max_rows_to_read": self.max_rows_to_read,
            "read_overflow_mode": "throw",
            "max_rows_in_join": self.max_rows_in_join,
            "max_bytes_in_join": self.max_bytes_in_join,
            "join_overflow_mode": "throw",
            # times without a zone (now(), toString of a zone-less DateTime, literals) read and render as UTC,
            # as the answers state them: the server's own zone and offset stay the server's
            "session_timezone": "UTC",
        }

    @classmethod
    def for_product_sql(cls) -> SqlLimits:
        """For SQL the product wrote itself and runs through the guard only to show it as evidence (the
        built-in analyst's queries): its cost is bounded by the window it reads, like the tools' own
        analytics queries, so it may use every core. Every other limit stays."""
        return cls(max_threads=os.cpu_count() or 2)

    @classmethod
    def from_settings(cls, settings: Any) -> SqlLimits:  # noqa: ANN401 - otel_ai.settings.Settings
        return cls(
            max_execution_time=settings.sql_max_execution_time,
            max_memory_usage=settings.sql_max_memory_bytes,
            max_result_bytes=settings.sql_max_result_bytes,
            max_rows_to_read=settings.sql_max_rows_to_read,
        )


# Engine-side limits for the tools' own analytics queries (written by us, not by a model or a person).
QUERY_SETTINGS: dict[str, Any] = {
    "readonly": 1,
    "max_execution_time": 30,
    "max_memory_usage": 4 * 1024**3,
}


class SQLRefused(ValueError):
    """The guard refused a query; the message says why, in words a model can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class GuardedSQL:
    """The rendered SQL and what the guard changed (for notes to the model)."""

    sql: str
    notes: list[str] = field(default_factory=list)


def is_allowed_function(name: str) -> bool:
    """Whether `name` is in an analytics family (case-insensitively), aggregate combinators included."""
    low = name.lower()
    return low in ALLOWED_FUNCTIONS or _is_aggregate(low)


def _is_aggregate(low: str) -> bool:
    if low in AGGREGATE_FUNCTIONS:
        return True
    return any(low.endswith(c) and len(low) > len(c) and _is_aggregate(low[: -len(c)]) for c in AGGREGATE_COMBINATORS)


_NAMED_AGGS = tuple(
    t for t in (getattr(exp, n, None) for n in "AnonymousAggFunc ParameterizedAgg CombinedAggFunc "
                "CombinedParameterizedAgg".split()) if isinstance(t, type)
)
_CALL_HEAD = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(")


def _function_names(node: exp.Func) -> list[str]:
    """The names ClickHouse may call for `node`: as written for unknown functions; for functions sqlglot
    models, its canonical name and the name it renders for ClickHouse (they differ: COUNT_IF/countIf)."""
    if isinstance(node, (exp.Anonymous, *_NAMED_AGGS)):
        return [node.this if isinstance(node.this, str) else node.name]
    names = [node.sql_name()]
    if not is_allowed_function(names[0]) and not isinstance(node, _STRUCTURAL_FUNCS):
        head = _CALL_HEAD.match(node.sql(dialect=DIALECT, comments=False))
        names = [head.group(1)] if head else names
    return names


def _check_function(node: exp.Func) -> None:
    if isinstance(node, _STRUCTURAL_FUNCS):
        return
    for name in _function_names(node):
        low = name.lower()
        if low in TABLE_FUNCTIONS:
            raise SQLRefused(f"function {name}() is not allowed: it reads files, the network or other tables")
        if low in WRITTEN_IN_FUNCTIONS:
            raise SQLRefused(f"function {name}() is not allowed: write `x IN (SELECT ...)` or `x IN (1, 2)`")
        if low in SERVER_FACT_FUNCTIONS:
            raise SQLRefused(f"function {name}() is not allowed: {SERVER_FACT_REASON}")
        if not is_allowed_function(name):
            raise SQLRefused(
                f"function {name}() is not allowed: only aggregate, arithmetic, date/time, string, array, map, "
                "JSON, conditional, type-conversion, hashing, quantile and window functions run here"
            )


def _is_real_cte(cte: exp.Expression) -> bool:
    """`WITH name AS (SELECT ...)` defines a table; `WITH 1 AS name` / `WITH (SELECT 1) AS name` define a
    scalar, and `FROM name` then reads the real table of that name."""
    return isinstance(cte, exp.CTE) and not cte.args.get("scalar") and isinstance(cte.this, exp.Query)


def _cte_in_scope(table: exp.Table) -> bool:
    """Whether `table` (unqualified) names a real CTE visible where it stands.

    Visible: the CTEs of every enclosing query's WITH; inside a CTE's own body only the CTEs defined
    before it (never itself: `WITH t AS (SELECT * FROM t)` reads the table t). CTEs of sibling or
    nested queries are not visible. When in doubt the name is a table, and tables are allow-listed."""
    path: list[exp.Expression] = [table]
    node = table.parent
    while node is not None:
        with_ = node.args.get("with_") or node.args.get("with")
        if isinstance(with_, exp.With) and isinstance(node, exp.Query):
            ctes = list(with_.expressions)
            if len(path) >= 2 and path[-1] is with_:  # we came up through one of this WITH's CTE bodies
                came_from = path[-2]
                ctes = ctes[: next(i for i, c in enumerate(ctes) if c is came_from)]
            if any(_is_real_cte(c) and c.alias_or_name == table.name for c in ctes):
                return True
        path.append(node)
        node = node.parent
    return False


def _check_with(with_: exp.With) -> None:
    names = [c.alias_or_name for c in with_.expressions]
    if len(names) != len(set(names)):
        twice = ", ".join(sorted({n for n in names if names.count(n) > 1}))
        raise SQLRefused(f"WITH defines the same name twice ({twice})")
    if with_.args.get("recursive"):
        raise SQLRefused("WITH RECURSIVE is not allowed")


def _check_table(table: exp.Table, database: str | None) -> None:
    if not isinstance(table.this, exp.Identifier):
        fname = table.this.sql(DIALECT).split("(")[0] if isinstance(table.this, exp.Func) else table.this.sql(DIALECT)
        raise SQLRefused(f"table function {fname}() is not allowed: read only the stored tables ({TABLES_HINT})")
    name = table.name
    qualifiers = [p for p in (table.args.get("db"), table.args.get("catalog")) if p is not None]
    if qualifiers:
        parts = [str(p.name) for p in qualifiers]
        if any(p.lower() in FORBIDDEN_SCHEMAS for p in parts):
            raise SQLRefused(f"system tables are not allowed ({table.sql(DIALECT)})")
        if table.args.get("catalog") is not None or database is None or parts[0] != database:
            raise SQLRefused(f"table {table.sql(DIALECT)} is in another database: use unqualified table names")
    elif _cte_in_scope(table):
        return
    if name not in TELEMETRY_TABLES:
        raise SQLRefused(f"table {name!r} is not allowed: query {TABLES_HINT}")


def _unparen(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.Paren):
        node = node.this
    return node


_NAME_LIKE = (exp.Column, exp.Dot, exp.Table, exp.Identifier)


def _check_in(node: exp.In) -> None:
    """`x IN name` and `x IN ((name))` read a whole table (any table): only values or a subquery may follow IN."""
    field_ = node.args.get("field")
    if field_ is not None and not isinstance(_unparen(field_), (exp.Tuple, exp.Struct, exp.Array, exp.Literal)):
        raise SQLRefused("IN followed by a table name is not allowed: use IN (SELECT ...) or a list of values")
    for item in node.args.get("expressions") or []:
        if isinstance(_unparen(item), _NAME_LIKE):
            raise SQLRefused(
                f"IN ({item.sql(DIALECT)}) may read a table: use IN (SELECT ...) or a list of values")


def _check_column(node: exp.Column) -> None:
    for part in node.parts[:-1]:
        if str(part.name).lower() in FORBIDDEN_SCHEMAS:
            raise SQLRefused(f"system tables are not allowed ({node.sql(DIALECT)})")
    if len(node.parts) == 1 and not node.this.args.get("quoted") and node.name.lower() in NILADIC_FACTS:
        raise SQLRefused(f"{node.name} is a server fact, not telemetry: it is not allowed")


def _check_query_node(node: exp.Expression) -> None:
    if node.args.get("settings"):
        raise SQLRefused("SETTINGS clauses are not allowed: limits are fixed by the server")
    if node.args.get("format"):
        raise SQLRefused("FORMAT clauses are not allowed: results come back as rows")
    if node.args.get("into") is not None:
        raise SQLRefused("SELECT ... INTO is not allowed")


_ALLOWED_ROOTS = (exp.Select, exp.SetOperation)
_FORBIDDEN_NODES: tuple[type[exp.Expression], ...] = tuple(
    t
    for t in (
        getattr(exp, n, None)
        for n in (
            "Insert Update Delete Merge Create Drop Alter AlterTable Command Set Use Describe Pragma Into "
            "Copy Grant Revoke Kill Transaction Commit Rollback Analyze Truncate TruncateTable LoadData "
            "Cache Uncache Refresh Export Placeholder Parameter SessionParameter Values"
        ).split()
    )
    if isinstance(t, type)
)


def _outer_limit(tree: exp.Expression, default_limit: int, max_limit: int) -> tuple[exp.Expression, list[str]]:
    """Add or clamp the outermost LIMIT (the number of rows returned)."""
    notes: list[str] = []
    limit = tree.args.get("limit") if isinstance(tree, exp.Select) else None
    if isinstance(limit, exp.Limit) and not limit.args.get("expressions"):
        value = limit.expression
        if not (isinstance(value, exp.Literal) and not value.is_string and re.fullmatch(r"\d+", value.name)):
            raise SQLRefused(f"LIMIT must be a whole number up to {max_limit}, not {value.sql(DIALECT)}")
        if int(value.name) > max_limit:
            limit.set("expression", exp.Literal.number(max_limit))
            notes.append(f"LIMIT {value.name} clamped to {max_limit}")
        return tree, notes
    if isinstance(tree, exp.Select) and limit is None:
        tree.set("limit", exp.Limit(expression=exp.Literal.number(default_limit)))
        notes.append(f"LIMIT {default_limit} added")
        return tree, notes
    # UNION/INTERSECT/EXCEPT or LIMIT n BY: wrap so one LIMIT bounds the whole result.
    wrapped = exp.select("*").from_(exp.Subquery(this=tree)).limit(default_limit)
    notes.append(f"LIMIT {default_limit} added around the query")
    return wrapped, notes


def guard(
    sql: str,
    default_limit: int = DEFAULT_LIMIT,
    max_limit: int = MAX_LIMIT,
    database: str | None = None,
) -> GuardedSQL:
    """Check `sql` and return the SQL to run (re-rendered by sqlglot) with notes; raises SQLRefused."""
    if not isinstance(sql, str) or not sql.strip():
        raise SQLRefused("empty query: send one SELECT statement")
    if len(sql) > 100_000:
        raise SQLRefused("query too long (over 100,000 characters)")
    try:
        statements = [s for s in sqlglot.parse(sql, dialect=DIALECT) if s is not None]
    except SqlglotError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SQLRefused(f"could not parse the query as ClickHouse SQL: {first}") from None
    if len(statements) != 1:
        raise SQLRefused(f"exactly one statement is allowed, got {len(statements)}")
    tree = statements[0]
    while isinstance(tree, exp.Subquery) and isinstance(tree.this, exp.Query):
        tree = tree.this
    if not isinstance(tree, _ALLOWED_ROOTS):
        kind = tree.key.upper() if isinstance(tree, exp.Expression) else type(tree).__name__
        raise SQLRefused(f"only SELECT queries are allowed (got {kind})")

    for node in tree.walk():
        if isinstance(node, _FORBIDDEN_NODES):
            raise SQLRefused(f"{node.key.upper()} is not allowed: only read-only SELECT queries run here")
        if isinstance(node, (exp.Select, exp.SetOperation)):
            _check_query_node(node)
        elif isinstance(node, exp.With):
            _check_with(node)
        elif isinstance(node, exp.Table):
            _check_table(node, database)
        elif isinstance(node, (exp.From, exp.Join)) and not isinstance(node.this, (exp.Table, exp.Subquery, exp.Final)):
            if not (isinstance(node, exp.Join) and node.args.get("kind") == "ARRAY"):
                raise SQLRefused(f"only tables and subqueries may follow FROM/JOIN, not {node.this.key.upper()}")
        elif isinstance(node, exp.In):
            _check_in(node)
        elif isinstance(node, exp.Column):
            _check_column(node)
        if isinstance(node, exp.Func):
            _check_function(node)

    tree, notes = _outer_limit(tree, default_limit, max_limit)
    try:
        rendered = tree.sql(dialect=DIALECT, comments=False)
    except SqlglotError as exc:
        raise SQLRefused(f"could not render the query: {exc}") from None
    return GuardedSQL(sql=rendered, notes=notes)


def validate_sql(
    sql: str, default_limit: int = DEFAULT_LIMIT, max_limit: int = MAX_LIMIT, database: str | None = None
) -> str:
    """The SQL to run for `sql` (one safe SELECT with a bounded LIMIT); raises SQLRefused(reason)."""
    return guard(sql, default_limit=default_limit, max_limit=max_limit, database=database).sql


def error_message(exc: Exception) -> str:
    """The first meaningful line of a ClickHouse error, without stack traces."""
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("Stack trace", "0.", "HTTPDriver")):
            return re.sub(r"\s+", " ", line)[:500]
    return type(exc).__name__


def query(store: Store, sql: str, settings: dict[str, Any] | None = None):  # noqa: ANN201 - store.QueryResult
    """Run SQL under read-only limits (the tools' own analytics limits unless `settings` are given).

    A server user whose profile is already read-only may not change any setting (readonly=1 there):
    then the query runs under that profile's own limits."""
    try:
        return store.query(sql, settings=settings or QUERY_SETTINGS)
    except Exception as exc:
        text = str(exc)
        if "Cannot modify" in text and "readonly" in text:
            return store.query(sql)
        raise


_RESULT_CAPS = ("max_result_bytes", "max_result_rows", "result_overflow_mode")
_TREE_NODE = re.compile(r"^\s*(TABLE|TABLE_FUNCTION|FUNCTION) id: \d+,.*?"
                        r"(?:table_name|table_function_name|function_name): ([^,\s]+)")


def check_engine_plan(store: Store, sql: str, settings: dict[str, Any] | None = None) -> None:
    """The second opinion: ask ClickHouse which tables and functions it resolved `sql` to
    (`EXPLAIN QUERY TREE`, nothing is read) and refuse anything outside the allow-lists.

    The parser guard decides on names as written; this decides on what the engine will actually read
    after its own alias, CTE and keyword resolution (`SESSION_USER` is currentUser(), a name in IN is a
    table), so a difference between the two readings can only refuse, never leak. A server without
    the analyzer (ClickHouse before 24.3 or with it disabled) cannot explain: the parser guard stands alone."""
    # the explanation's own size is bounded by the query's, and not a result the caller gets
    settings = {k: v for k, v in (settings or QUERY_SETTINGS).items() if k not in _RESULT_CAPS}
    try:
        tree = query(store, "EXPLAIN QUERY TREE " + sql, settings)
    except Exception as exc:
        text = str(exc)
        if "analyzer" in text.lower() and ("UNSUPPORTED_METHOD" in text or "not supported" in text.lower()):
            return
        raise
    for row in tree.rows:
        match = _TREE_NODE.match(str(row[0]))
        if match is None:
            continue
        kind, name = match.groups()
        if kind == "TABLE_FUNCTION":
            raise SQLRefused(f"table function {name}() is not allowed: read only the stored tables ({TABLES_HINT})")
        if kind == "TABLE" and name not in IMPLICIT_TABLES:
            database, _, table = name.rpartition(".")
            if database != store.database or table not in TELEMETRY_TABLES:
                raise SQLRefused(f"the query reads {name}, which is not a telemetry table: query {TABLES_HINT}")
        if kind == "FUNCTION" and not is_allowed_function(name):
            reason = SERVER_FACT_REASON if name.lower() in SERVER_FACT_FUNCTIONS else "it is not an analytics function"
            raise SQLRefused(f"function {name}() is not allowed: {reason}")


RESULT_BYTES_COLUMN = "__otel_ai_result_bytes"
_RESULT_OVER_CAP = "otel-ai: result over max_result_bytes"


def cap_result_bytes(sql: str, max_bytes: int) -> str:
    """`sql` wrapped so that ClickHouse refuses a result of more than `max_bytes` before sending a row.

    The window sum over the whole result is known only once every row is built (in the engine, under
    its memory limit), so nothing reaches this process when it throws. The extra column (kept, or the
    optimiser would drop the check) is removed by `run_sql`."""
    return (f"SELECT *, throwIf(sum(byteSize(*)) OVER () > {int(max_bytes)}, '{_RESULT_OVER_CAP}') "
            f"AS {RESULT_BYTES_COLUMN} FROM ({sql})")


def _failure_reason(exc: Exception, limits: SqlLimits) -> str:
    message = error_message(exc)
    if _RESULT_OVER_CAP in message:
        return (f"the result is larger than the {limits.max_result_bytes:,} byte cap (max_result_bytes): "
                "select fewer or shorter columns, fewer rows, or aggregate")
    if "MEMORY_LIMIT_EXCEEDED" in message:
        return (f"the query needs more than {limits.max_memory_usage:,} bytes of memory (max_memory_usage): "
                "select fewer or shorter columns, aggregate, or narrow the time range")
    if "Limit for rows" in message and "to read" in message:
        return (f"the query would scan more than {limits.max_rows_to_read:,} rows (max_rows_to_read): "
                "narrow the time range or filter first")
    return message


def run_sql(
    store: Store, sql: str, default_limit: int = DEFAULT_LIMIT, max_limit: int = MAX_LIMIT,
    limits: SqlLimits | None = None,
) -> ToolResult:
    """Guard and run model-written SQL; a refusal or an engine error comes back as ok=False with the reason."""
    args = {"sql": sql}
    limits = limits or SqlLimits()
    try:
        guarded = guard(sql, default_limit=default_limit, max_limit=max_limit, database=store.database)
    except SQLRefused as exc:
        return ToolResult.failure("sql", args, f"refused: {exc.reason}")
    try:
        check_engine_plan(store, guarded.sql, limits.settings())
        result = query(store, cap_result_bytes(guarded.sql, limits.max_result_bytes), limits.settings())
    except SQLRefused as exc:
        return ToolResult.failure("sql", args, f"refused: {exc.reason}", sql=[guarded.sql])
    except Exception as exc:  # engine errors (unknown column, timeout, memory) go back to the model
        return ToolResult.failure("sql", args, f"query failed: {_failure_reason(exc, limits)}", sql=[guarded.sql])
    columns, types = result.columns[:-1], result.types[:-1]  # without RESULT_BYTES_COLUMN
    rows = [dict(zip(columns, row, strict=False)) for row in result.rows]
    return ToolResult.build(
        "sql",
        args,
        [guarded.sql],
        columns,
        rows,
        notes=guarded.notes,
        details={"types": types, "max_threads": limits.max_threads},
    )


