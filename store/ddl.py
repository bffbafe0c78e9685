"""Turn migration files into the statements to run: split, render TTL, render the cluster variant.

Pure text, no ClickHouse access, so the cluster variant can be generated and checked anywhere.

Placeholders (documented in schema/README.md):
- `{{TTL <DateTime expression>}}` becomes `TTL <expr> + toIntervalDay(<ttl_days>)`, or nothing when
  `ttl_days` is 0 (keep data forever). Put it after ORDER BY, before SETTINGS.

Cluster variant of `CREATE TABLE [IF NOT EXISTS] name (...) ENGINE = XMergeTree(args) ...`:
- `name_local ON CLUSTER c` with `ReplicatedXMergeTree('/clickhouse/tables/{shard}/<db>/name_local',
  '{replica}', args)`, plus `name ON CLUSTER c AS name_local ENGINE = Distributed(c, <db>, name_local,
  <sharding key>)` so queries and inserts keep using the plain name.
- materialized views get ON CLUSTER and read from / write to the `_local` tables (each shard
  aggregates the rows it stores); plain views and other statements get ON CLUSTER; `INSERT INTO ...
  SELECT` (a backfill) runs once, unchanged, through the Distributed tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

LOCAL_SUFFIX = "_local"

_TTL = re.compile(r"\{\{\s*TTL\s+(.+?)\s*\}\}", re.S)
_PLACEHOLDER = re.compile(r"\{\{.*?\}\}", re.S)
_IDENT = r"(?:`[^`]+`|\"[^\"]+\"|[A-Za-z_][A-Za-z0-9_]*)"
_CREATE_TABLE = re.compile(
    rf"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?TABLE\s+(?P<ine>IF\s+NOT\s+EXISTS\s+)?(?P<name>{_IDENT})\s*(?P<rest>.*)$",
    re.S | re.I,
)
_CREATE_MV = re.compile(
    rf"^\s*CREATE\s+MATERIALIZED\s+VIEW\s+(?P<ine>IF\s+NOT\s+EXISTS\s+)?(?P<name>{_IDENT})\s*(?P<rest>.*)$",
    re.S | re.I,
)
_CREATE_VIEW = re.compile(
    rf"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\s+(?P<ine>IF\s+NOT\s+EXISTS\s+)?(?P<name>{_IDENT})\s*(?P<rest>.*)$",
    re.S | re.I,
)
_ALTER = re.compile(rf"^\s*ALTER\s+TABLE\s+(?P<name>{_IDENT})\s+(?P<rest>.*)$", re.S | re.I)
_DROP = re.compile(
    rf"^\s*DROP\s+(?P<kind>TABLE|VIEW|DICTIONARY)\s+(?P<ie>IF\s+EXISTS\s+)?(?P<name>{_IDENT})\s*(?P<rest>.*)$",
    re.S | re.I,
)
_ENGINE = re.compile(
    r"\bENGINE\s*=?\s*(?P<engine>[A-Za-z]*MergeTree)\s*(?:\((?P<args>(?:[^()]|\([^()]*\))*)\))?", re.I
)
_INSERT_SELECT = re.compile(rf"^\s*INSERT\s+INTO\s+{_IDENT}\s+SELECT\b", re.I)
_COLUMN_ALTER = re.compile(r"^\s*(ADD|DROP|MODIFY|RENAME|COMMENT|CLEAR)\s+COLUMN\b", re.I)


class DDLError(ValueError):
    """A migration file that cannot be rendered (unknown placeholder, unsupported statement)."""


@dataclass(frozen=True)
class SchemaObject:
    """A table or view a migration creates (what `db reset` drops)."""

    name: str
    kind: str  # "table" | "view" | "materialized_view"


def split_statements(sql: str) -> list[str]:
    """Split on `;` outside quotes and comments; drop empty and comment-only statements."""
    statements: list[str] = []
    buf: list[str] = []
    i, n = 0, len(sql)
    quote: str | None = None
    while i < n:
        ch = sql[i]
        if quote:
            buf.append(ch)
            if ch == "\\" and i + 1 < n:
                buf.append(sql[i + 1])
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "'\"`":
            quote = ch
            buf.append(ch)
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end < 0 else end
            i = end
            continue
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 2
            buf.append(" ")
            continue
        elif ch == ";":
            statements.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    if quote:
        raise DDLError(f"unterminated {quote} quote in migration")
    statements.append("".join(buf))
    return [s.strip() for s in statements if s.strip()]


def render_ttl(sql: str, ttl_days: int) -> str:
    """Replace `{{TTL expr}}` placeholders; refuse unknown placeholders."""
    if ttl_days < 0:
        raise DDLError(f"ttl_days must be >= 0, got {ttl_days}")

    def repl(m: re.Match[str]) -> str:
        return f"TTL {m.group(1)} + toIntervalDay({ttl_days})" if ttl_days else ""

    rendered = _TTL.sub(repl, sql)
    unknown = _PLACEHOLDER.search(rendered)
    if unknown:
        raise DDLError(f"unknown placeholder {unknown.group(0)!r} (known: {{{{TTL <expr>}}}})")
    return rendered


def render(sql: str, ttl_days: int, cluster: str | None = None, database: str = "otel") -> list[str]:
    """The statements of one migration file, ready to run (single-node, or for `cluster`)."""
    statements = split_statements(render_ttl(sql, ttl_days))
    if not cluster:
        return statements
    out: list[str] = []
    for statement in statements:
        out.extend(cluster_statements(statement, cluster, database))
    return out


def _bare(name: str) -> str:
    return name.strip("`\"")


def _q(name: str) -> str:
    return "`" + name.replace("`", "\\`") + "`"


def _sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _sharding_key(body: str) -> str:
    """Spans and logs of one trace on one shard (trace lookups, the trace-id MV); else spread."""
    return "cityHash64(TraceId)" if re.search(r"^\s*TraceId\s+String\b", body, re.M) else "rand()"


def cluster_statements(statement: str, cluster: str, database: str) -> list[str]:
    """One single-node statement as its cluster equivalent (may become several statements)."""
    on = f"ON CLUSTER {_q(cluster)}"
    m = _CREATE_TABLE.match(statement)
    if m:
        name = _bare(m.group("name"))
        local = name + LOCAL_SUFFIX
        ine = "IF NOT EXISTS " if m.group("ine") else ""
        rest = m.group("rest")
        engine = _ENGINE.search(rest)
        if not engine:
            raise DDLError(f"table {name}: the cluster variant needs a *MergeTree engine")
        kind = engine.group("engine")
        if kind.lower().startswith("replicated"):
            raise DDLError(f"table {name}: write plain {kind[len('Replicated'):]}, the runner adds Replicated")
        zk_path = _sql_string(f"/clickhouse/tables/{{shard}}/{database}/{local}")
        args = ", ".join(a for a in [zk_path, "'{replica}'", (engine.group("args") or "").strip()] if a)
        rest = rest[: engine.start()] + f"ENGINE = Replicated{kind}({args})" + rest[engine.end():]
        dist = (
            f"CREATE TABLE {ine}{_q(name)} {on} AS {_q(local)} "
            f"ENGINE = Distributed({_sql_string(cluster)}, {_sql_string(database)}, {_sql_string(local)}, "
            f"{_sharding_key(rest)})"
        )
        return [f"CREATE TABLE {ine}{_q(local)} {on} {rest}", dist]
    m = _CREATE_MV.match(statement)
    if m:
        rest = m.group("rest")
        to = re.match(rf"TO\s+(?P<target>{_IDENT})\s+(?P<tail>.*)$", rest, re.S | re.I)
        if not to:
            raise DDLError(f"materialized view {_bare(m.group('name'))}: use `TO <table>` (cluster variant)")
        tail = re.sub(
            rf"\bFROM\s+(?P<src>{_IDENT})",
            lambda s: f"FROM {_q(_bare(s.group('src')) + LOCAL_SUFFIX)}",
            to.group("tail"),
            flags=re.I,
        )
        target = _q(_bare(to.group("target")) + LOCAL_SUFFIX)
        ine = "IF NOT EXISTS " if m.group("ine") else ""
        return [f"CREATE MATERIALIZED VIEW {ine}{_q(_bare(m.group('name')))} {on} TO {target} {tail}"]
    m = _CREATE_VIEW.match(statement)
    if m:
        ine = "IF NOT EXISTS " if m.group("ine") else ""
        return [f"CREATE VIEW {ine}{_q(_bare(m.group('name')))} {on} {m.group('rest')}"]
    m = _ALTER.match(statement)
    if m:
        name = _bare(m.group("name"))
        local = f"ALTER TABLE {_q(name + LOCAL_SUFFIX)} {on} {m.group('rest')}"
        if _COLUMN_ALTER.match(m.group("rest")):
            return [local, f"ALTER TABLE {_q(name)} {on} {m.group('rest')}"]
        return [local]
    m = _DROP.match(statement)
    if m:
        name = _bare(m.group("name"))
        ie = "IF EXISTS " if m.group("ie") else ""
        kind = m.group("kind").upper()
        stmts = [f"DROP {kind} {ie}{_q(name)} {on} {m.group('rest')}".rstrip()]
        if kind == "TABLE":
            stmts.append(f"DROP TABLE {ie}{_q(name + LOCAL_SUFFIX)} {on} {m.group('rest')}".rstrip())
        return stmts
    if _INSERT_SELECT.match(statement):  # a backfill: once, through the Distributed tables, which route rows to shards
        return [statement]
    raise DDLError(f"no cluster variant for statement: {statement[:80]}...")


def ttl_tables(sql: str) -> list[tuple[str, str]]:
    """(table, TTL time expression) for every table a migration file creates with a `{{TTL ...}}` placeholder."""
    out: list[tuple[str, str]] = []
    for statement in split_statements(sql):
        m = _CREATE_TABLE.match(statement)
        ttl = _TTL.search(statement)
        if m and ttl:
            out.append((_bare(m.group("name")), ttl.group(1)))
    return out


def retention_statements(table: str, expr: str, ttl_days: int) -> str:
    """The ALTER that sets (or, for 0 days, removes) a table's retention."""
    if ttl_days < 0:
        raise DDLError(f"ttl_days must be >= 0, got {ttl_days}")
    if ttl_days == 0:
        return f"ALTER TABLE {_q(table)} REMOVE TTL"
    return f"ALTER TABLE {_q(table)} MODIFY TTL {expr} + toIntervalDay({ttl_days})"


def created_objects(sql: str) -> list[SchemaObject]:
    """Tables and views a migration file creates, in file order."""
    objects: list[SchemaObject] = []
    for statement in split_statements(render_ttl(sql, 0)):
        if m := _CREATE_MV.match(statement):
            objects.append(SchemaObject(_bare(m.group("name")), "materialized_view"))
        elif m := _CREATE_VIEW.match(statement):
            objects.append(SchemaObject(_bare(m.group("name")), "view"))
        elif m := _CREATE_TABLE.match(statement):
            objects.append(SchemaObject(_bare(m.group("name")), "table"))
    return objects
