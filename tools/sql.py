"""The SQL guard and runner: model-written SQL is parsed, checked node by node, re-rendered and run read-only.

Why a parser and not the engine's readonly mode alone: in chDB `readonly=2` still lets `file()` read
local files, table functions reach the network (url, s3, remote, mysql ...) and `x IN system.users`
reads any table. So nothing runs before sqlglot (ClickHouse dialect) has proven the query is exactly
one SELECT (WITH/UNION/INTERSECT/EXCEPT allowed) that reads only allow-listed tables, calls no
table function and no function that touches files, dictionaries, other tables or settings, and has
no SETTINGS/FORMAT/INTO OUTFILE clause. The SQL sent to ClickHouse is the one sqlglot renders from
the checked tree, without comments, so text the parser did not see cannot reach the engine.

Then it runs with `readonly=1` (which, unlike 2, makes chDB refuse `file()` too), a time limit and a
memory limit; the outermost LIMIT is added (default 200) or clamped (max 10,000).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from store import Store
from tools.result import ToolResult

DIALECT = "clickhouse"
DEFAULT_LIMIT = 200
MAX_LIMIT = 10_000

# Tables a query may read: the OpenTelemetry exporter tables (otel_traces*, otel_logs*, otel_metrics_*)
# and the anomaly scores. Everything else (otel_ai_migrations, model state, chat threads) is not for the model.
ALLOWED_TABLE_RE = re.compile(r"^otel_(traces|logs|metrics)(_[A-Za-z0-9_]+)?$")
ALLOWED_TABLES = frozenset({"anomalies"})

# Functions refused in any position (lower-cased). Table functions are refused in FROM by shape
# (any function there), and by name everywhere else too, since several double as scalars.
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
DENIED_FUNCTIONS = TABLE_FUNCTIONS | frozenset(
    name.lower()
    for name in (
        # other tables, dictionaries, settings and server state
        "joinGet joinGetOrNull hasColumnInTable getSetting getSettingOrDefault getServerSetting "
        "getMergeTreeSetting getMacro getClientHTTPHeader globalVariable currentProfiles currentRoles "
        "enabledRoles defaultRoles currentUser serverUUID shardNum shardCount getServerPort "
        "filesystemAvailable filesystemCapacity filesystemUnreserved catboostEvaluate "
        "naiveBayesClassifier evalMLMethod addressToLine addressToLineWithInlines addressToSymbol "
        "demangle trace_log getOSKernelVersion zookeeperSessionUptime transactionID "
        "transactionLatestSnapshot transactionOldestSnapshot "
        # functional forms of IN, which accept a table name as the right side
        "in notIn globalIn globalNotIn nullIn notNullIn globalNullIn globalNotNullIn inIgnoreSet "
        "notInIgnoreSet globalInIgnoreSet globalNotInIgnoreSet "
        # deliberate slowness
        "sleep sleepEachRow"
    ).split()
)
DENIED_FUNCTION_PREFIXES = ("dictget", "dicthas", "dictisin", "file", "joinget", "getsetting")
FORBIDDEN_SCHEMAS = frozenset({"system", "information_schema"})

# Engine-side limits for every query the tools run (guarded or the tools' own analytics).
# No max_result_rows/bytes: ClickHouse applies them to IN-subquery sets too, where 'throw' breaks
# legitimate `x IN (SELECT ...)` and 'break' silently truncates the set; the outer LIMIT bounds rows.
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


def _function_name(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name)
    return node.sql_name()


def _is_denied_function(name: str) -> bool:
    low = name.lower()
    return low in DENIED_FUNCTIONS or low.startswith(DENIED_FUNCTION_PREFIXES)


def _cte_in_scope(table: exp.Table) -> bool:
    """Whether a WITH of an enclosing query defines `table`'s name (CTEs are not visible to parents)."""
    node = table.parent
    while node is not None:
        with_ = node.args.get("with_") or node.args.get("with")
        if isinstance(with_, exp.With) and any(c.alias_or_name == table.name for c in with_.expressions):
            return True
        node = node.parent
    return False


def _check_table(table: exp.Table, database: str | None) -> None:
    if not isinstance(table.this, exp.Identifier):
        fname = _function_name(table.this) if isinstance(table.this, exp.Func) else table.this.sql(DIALECT)
        raise SQLRefused(
            f"table function {fname}() is not allowed: read only the stored tables "
            "(otel_traces, otel_logs, otel_metrics_*, anomalies)"
        )
    name = table.name
    qualifiers = [p for p in (table.args.get("db"), table.args.get("catalog")) if p is not None]
    if qualifiers:
        parts = [str(p.name) for p in qualifiers]
        if any(p.lower() in FORBIDDEN_SCHEMAS for p in parts):
            raise SQLRefused(f"system tables are not allowed ({table.sql(DIALECT)})")
        if table.args.get("catalog") is not None or database is None or parts[0] != database:
            raise SQLRefused(
                f"table {table.sql(DIALECT)} is in another database: use unqualified table names"
            )
    if not qualifiers and _cte_in_scope(table):
        return
    if ALLOWED_TABLE_RE.match(name) or name in ALLOWED_TABLES:
        return
    raise SQLRefused(
        f"table {name!r} is not allowed: query otel_traces, otel_logs, otel_metrics_gauge|sum|histogram|"
        "exponential_histogram|summary or anomalies"
    )


def _check_in(node: exp.In) -> None:
    """`x IN name` reads a whole table (any table, even system.*): only literals or subqueries may follow IN."""
    field_ = node.args.get("field")
    if field_ is not None and not isinstance(field_, (exp.Tuple, exp.Struct, exp.Array, exp.Literal)):
        raise SQLRefused("IN followed by a table name is not allowed: use IN (SELECT ...) or a list of values")
    items = node.args.get("expressions") or []
    if len(items) == 1 and isinstance(items[0], (exp.Column, exp.Dot, exp.Table)):
        raise SQLRefused("IN (name) may read a table: use IN (SELECT ...) or a list of values")


def _check_column(node: exp.Column) -> None:
    for part in node.parts[:-1]:
        if str(part.name).lower() in FORBIDDEN_SCHEMAS:
            raise SQLRefused(f"system tables are not allowed ({node.sql(DIALECT)})")


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
            name = _function_name(node)
            if _is_denied_function(name):
                raise SQLRefused(
                    f"function {name}() is not allowed: it reads files, other tables, dictionaries or settings"
                )

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


def query(store: Store, sql: str):  # noqa: ANN201 - store.QueryResult
    """Run the tools' own analytics SQL under the same read-only limits as guarded SQL.

    A server user whose profile is already read-only may not change any setting (readonly=1 there):
    then the query runs under that profile's own limits."""
    try:
        return store.query(sql, settings=QUERY_SETTINGS)
    except Exception as exc:
        text = str(exc)
        if "Cannot modify" in text and "readonly" in text:
            return store.query(sql)
        raise


def run_sql(
    store: Store, sql: str, default_limit: int = DEFAULT_LIMIT, max_limit: int = MAX_LIMIT
) -> ToolResult:
    """Guard and run model-written SQL; a refusal or an engine error comes back as ok=False with the reason."""
    args = {"sql": sql}
    try:
        guarded = guard(sql, default_limit=default_limit, max_limit=max_limit, database=store.database)
    except SQLRefused as exc:
        return ToolResult.failure("sql", args, f"refused: {exc.reason}")
    try:
        result = query(store, guarded.sql)
    except Exception as exc:  # engine errors (unknown column, timeout, memory) go back to the model
        return ToolResult.failure("sql", args, f"query failed: {error_message(exc)}", sql=[guarded.sql])
    rows = result.dicts()
    return ToolResult.build(
        "sql",
        args,
        [guarded.sql],
        result.columns,
        rows,
        notes=guarded.notes,
        details={"types": result.types},
    )


def literal(value: str) -> str:
    """A ClickHouse string literal for a value that came from the data or a caller (service names...)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
