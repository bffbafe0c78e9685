"""The migration runner: applies schema/migrations/NNN_name.sql in order, once each.

A bookkeeping table (`otel_ai_migrations`) records version, name, checksum (sha256 of the file as
written, before TTL/cluster rendering) and time. A file already applied whose checksum changed is
refused (MigrationChecksumError): applied migrations are immutable, changes go in a new file.
Statements must be idempotent (`IF NOT EXISTS`): a file that fails half-way is re-run whole.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import schema
from store.client import Store, StoreError, quote_ident
from store.ddl import (
    LOCAL_SUFFIX,
    SchemaObject,
    cluster_statements,
    created_objects,
    render,
    retention_statements,
    ttl_tables,
)

MIGRATIONS_TABLE = "otel_ai_migrations"
_FILE = re.compile(r"^(?P<version>\d{3})_(?P<name>[a-z0-9_]+)\.sql$")


class MigrationError(StoreError):
    """A migration that cannot be applied (bad file name, duplicate version, failing statement)."""


class MigrationChecksumError(MigrationError):
    """An applied migration file was edited afterwards."""

    def __init__(self, filename: str, recorded: str, current: str) -> None:
        self.filename, self.recorded, self.current = filename, recorded, current
        super().__init__(
            f"migration {filename} was changed after it was applied: recorded checksum sha256:{recorded}, "
            f"file now sha256:{current}. Applied migrations are immutable: restore the file and put the "
            f"change in a new numbered migration (or `otel-ai db reset --yes` to drop and recreate the tables, "
            f"losing their data)."
        )


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    path: Path

    @property
    def filename(self) -> str:
        return self.path.name

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class MigrationStatus:
    """A migration's state in a store: applied, pending, changed (checksum differs) or missing (no file)."""

    version: int
    name: str
    state: str
    checksum: str
    applied_at: datetime | None = None


def migrations_dir() -> Path:
    """The packaged schema/migrations folder."""
    return Path(schema.__file__).parent / "migrations"


def discover(directory: Path | None = None) -> list[Migration]:
    """Migration files in version order; refuses badly named files and duplicate versions."""
    directory = directory or migrations_dir()
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        m = _FILE.match(path.name)
        if not m:
            raise MigrationError(f"migration file {path.name} is not named NNN_lowercase_name.sql")
        version = int(m.group("version"))
        if version in found:
            raise MigrationError(
                f"two migration files share version {version:03d}: {found[version].filename} and {path.name}"
            )
        found[version] = Migration(version, m.group("name"), path)
    return [found[v] for v in sorted(found)]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _cluster(settings: Any, cluster: str | None) -> str | None:  # noqa: ANN401
    return cluster if cluster is not None else getattr(settings, "cluster", None) or None


def _ensure_table(store: Store, cluster: str | None) -> None:
    """The bookkeeping table; on a cluster it is replicated to every node (one ZooKeeper path)."""
    if cluster:
        engine = (
            f"ReplicatedReplacingMergeTree('/clickhouse/tables/{store.database}/{MIGRATIONS_TABLE}', "
            f"'{{replica}}', applied_at)"
        )
        on = f" ON CLUSTER {quote_ident(cluster)}"
    else:
        engine, on = "ReplacingMergeTree(applied_at)", ""
    try:
        store.command(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE}{on} (version UInt32, name String, checksum String, "
            f"applied_at DateTime64(3, 'UTC'), ttl_days UInt32, cluster String) "
            f"ENGINE = {engine} ORDER BY version"
        )
    except Exception as exc:
        where = f" on cluster {cluster}" if cluster else ""
        raise MigrationError(f"cannot create the bookkeeping table {MIGRATIONS_TABLE}{where} in database "
                             f"{store.database} at {store.url.redacted()}: {_first_line(exc)}") from exc


def applied(store: Store) -> dict[int, dict[str, Any]]:
    """Recorded migrations by version (empty when the bookkeeping table does not exist yet)."""
    exists = store.query(
        "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
        parameters={"t": MIGRATIONS_TABLE},
    ).scalar()
    if not exists:
        return {}
    rows = store.query(
        f"SELECT version, argMin(name, applied_at) AS n, argMin(checksum, applied_at) AS c, "
        f"min(applied_at) AS t FROM {MIGRATIONS_TABLE} GROUP BY version ORDER BY version"
    ).dicts()
    return {int(r["version"]): {"name": r["n"], "checksum": r["c"], "applied_at": r["t"]} for r in rows}


def status(store: Store, directory: Path | None = None) -> list[MigrationStatus]:
    """Every known migration (files and records) with its state, in version order."""
    files = {m.version: m for m in discover(directory)}
    records = applied(store)
    out: list[MigrationStatus] = []
    for version in sorted(set(files) | set(records)):
        m, rec = files.get(version), records.get(version)
        if m and not rec:
            out.append(MigrationStatus(version, m.name, "pending", m.checksum))
        elif rec and not m:
            out.append(MigrationStatus(version, rec["name"], "missing", rec["checksum"], rec["applied_at"]))
        else:
            assert m and rec
            state = "applied" if rec["checksum"] == m.checksum else "changed"
            out.append(MigrationStatus(version, m.name, state, m.checksum, rec["applied_at"]))
    return out


def migrate(
    store: Store, settings: Any, cluster: str | None = None, directory: Path | None = None  # noqa: ANN401
) -> list[str]:
    """Apply pending migrations to `store`'s database; returns the applied versions ("001", ...).

    Refuses (before running anything) when an applied file was changed since."""
    cluster = _cluster(settings, cluster)
    ttl_days = int(getattr(settings, "ttl_days", 7))
    migrations = discover(directory)
    records = applied(store)
    for m in migrations:
        rec = records.get(m.version)
        if rec and rec["checksum"] != m.checksum:
            raise MigrationChecksumError(m.filename, rec["checksum"], m.checksum)
    pending = [m for m in migrations if m.version not in records]
    if pending:  # an up-to-date store gets no DDL at all (no ON CLUSTER round on every start)
        _ensure_table(store, cluster)
    done: list[str] = []
    for m in pending:
        try:
            statements = render(m.sql, ttl_days, cluster, store.database)
        except ValueError as exc:
            raise MigrationError(f"migration {m.filename}: {exc}") from exc
        for i, statement in enumerate(statements, 1):
            try:
                store.command(statement)
            except Exception as exc:
                raise MigrationError(
                    f"migration {m.filename} failed at statement {i}/{len(statements)} "
                    f"({statement[:60].strip()}...): {_first_line(exc)}"
                ) from exc
        store.insert(
            MIGRATIONS_TABLE,
            ["version", "name", "checksum", "applied_at", "ttl_days", "cluster"],
            [[m.version], [m.name], [m.checksum], [datetime.now(UTC)], [ttl_days], [cluster or ""]],
        )
        done.append(f"{m.version:03d}")
    return done


def schema_objects(directory: Path | None = None) -> list[SchemaObject]:
    """Everything the migrations create, in creation order."""
    return [obj for m in discover(directory) for obj in created_objects(m.sql)]


def drop_all(store: Store, settings: Any, cluster: str | None = None, directory: Path | None = None) -> list[str]:  # noqa: ANN401
    """Drop every table and view the migrations create plus the bookkeeping table; returns names dropped."""
    cluster = _cluster(settings, cluster)
    on = f" ON CLUSTER {quote_ident(cluster)}" if cluster else ""
    objects = schema_objects(directory)
    # Views first (a materialized view pins its target), newest first.
    ordered = [o for o in reversed(objects) if o.kind != "table"] + [o for o in reversed(objects) if o.kind == "table"]
    ordered.append(SchemaObject(MIGRATIONS_TABLE, "table"))
    dropped: list[str] = []
    for obj in ordered:
        names = [obj.name]
        if cluster and obj.kind == "table" and obj.name != MIGRATIONS_TABLE:
            names.append(obj.name + LOCAL_SUFFIX)
        for name in names:
            kind = "VIEW" if obj.kind != "table" else "TABLE"
            store.command(f"DROP {kind} IF EXISTS {quote_ident(name)}{on} SYNC")
            dropped.append(name)
    return dropped


def reset(store: Store, settings: Any, cluster: str | None = None, directory: Path | None = None) -> list[str]:  # noqa: ANN401
    """Drop everything the migrations created, then apply them all again (data is lost)."""
    drop_all(store, settings, cluster, directory)
    return migrate(store, settings, cluster, directory)


def set_retention(
    store: Store, settings: Any, ttl_days: int, cluster: str | None = None, directory: Path | None = None  # noqa: ANN401
) -> list[str]:
    """Change the TTL of existing telemetry tables (those created with `{{TTL ...}}`); returns the ALTERs run.

    `ttl_days` 0 removes the TTL. Tables created later follow `settings.ttl_days`, not this call."""
    cluster = _cluster(settings, cluster)
    existing = set(store.tables())
    done: list[str] = []
    for m in discover(directory):
        for table, expr in ttl_tables(m.sql):
            if (table + LOCAL_SUFFIX if cluster else table) not in existing:
                continue
            statement = retention_statements(table, expr, ttl_days)
            for sql in cluster_statements(statement, cluster, store.database) if cluster else [statement]:
                store.command(sql)
                done.append(sql)
    return done
