"""The one door to ClickHouse: a clickhouse-connect client opened from a URL.

`chdb://<dir>` opens the embedded engine (chDB allows one data directory per process and one
process per directory); `http(s)://user:pass@host:port/db?secure=..&verify=..&ca_cert=..` opens a
ClickHouse server. Everything else in otel-ai reaches ClickHouse only through `Store`.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

DEFAULT_DATABASE = "otel"


class StoreError(RuntimeError):
    """A storage failure with a message fit for a user (bad URL, locked directory, server down)."""


@dataclass(frozen=True)
class StoreURL:
    """A parsed storage URL: which engine, where, and how to authenticate."""

    engine: str  # "chdb" or "http"
    path: str | None = None
    host: str | None = None
    port: int | None = None
    username: str = "default"
    password: str = ""
    database: str | None = None
    secure: bool = False
    verify: bool = True
    ca_cert: str | None = None
    client_cert: str | None = None
    client_cert_key: str | None = None
    tls_mode: str | None = None  # with client_cert: "mutual" (certificate login, default) or "proxy" (password)
    settings: dict[str, str] = field(default_factory=dict)

    def redacted(self) -> str:
        """The URL without its password, for logs and messages."""
        if self.engine == "chdb":
            return f"chdb://{self.path}"
        scheme = "https" if self.secure else "http"
        return f"{scheme}://{self.username}:***@{self.host}:{self.port}/{self.database or ''}"


_TRUE = {"1", "true", "yes", "on"}
_URL_OPTIONS = {"secure", "verify", "ca_cert", "client_cert", "client_cert_key", "tls_mode", "database"}
_TLS_MODES = {"mutual", "proxy", "strict"}


def parse_url(url: str) -> StoreURL:
    """Parse `chdb://dir` or `http(s)://user:pass@host:port/db?options` with precise errors."""
    if url.startswith("chdb://"):
        path = url.removeprefix("chdb://") or "./data"
        return StoreURL(engine="chdb", path=str(Path(path).expanduser().resolve()))
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "clickhouse"):
        raise StoreError(
            f"unsupported ClickHouse URL scheme {parts.scheme!r} in {url.split('@')[-1]!r}: "
            "use chdb://<dir> or http(s)://user:pass@host:8123/db"
        )
    if not parts.hostname:
        raise StoreError(f"ClickHouse URL {url.split('@')[-1]!r} names no host")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    secure = parts.scheme == "https" or query.get("secure", "").lower() in _TRUE
    try:
        port = parts.port or (8443 if secure else 8123)
    except ValueError as exc:
        raise StoreError(f"bad port in ClickHouse URL: {exc}") from None
    database = unquote(parts.path.strip("/")) or query.get("database") or None
    return StoreURL(
        engine="http",
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else "default",
        password=unquote(parts.password) if parts.password else "",
        database=database,
        secure=secure,
        verify=query.get("verify", "true").lower() in _TRUE,
        ca_cert=query.get("ca_cert"),
        client_cert=query.get("client_cert"),
        client_cert_key=query.get("client_cert_key"),
        tls_mode=_tls_mode(query.get("tls_mode")),
        settings={k: v for k, v in query.items() if k not in _URL_OPTIONS},
    )


def _tls_mode(value: str | None) -> str | None:
    if value is not None and value not in _TLS_MODES:
        raise StoreError(f"tls_mode must be one of {', '.join(sorted(_TLS_MODES))}, got {value!r}")
    return value


@dataclass
class QueryResult:
    """Rows of a query with their column names and ClickHouse types."""

    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def column(self, name: str) -> list[Any]:
        i = self.columns.index(name)
        return [row[i] for row in self.rows]

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def _open_client(target: StoreURL, database: str | None) -> Client:
    import clickhouse_connect  # here, not at import: `otel-ai --help` and `ask --server` never connect

    try:
        if target.engine == "chdb":
            assert target.path is not None
            Path(target.path).mkdir(parents=True, exist_ok=True)
            return clickhouse_connect.get_client(dsn=f"chdb://{target.path}")
        kwargs: dict[str, Any] = dict(
            host=target.host,
            port=target.port,
            username=target.username,
            password=target.password,
            secure=target.secure,
            verify=target.verify,
            settings=dict(target.settings),
            connect_timeout=10,
        )
        for key in ("ca_cert", "client_cert", "client_cert_key", "tls_mode"):
            if getattr(target, key):
                kwargs[key] = getattr(target, key)
        if database:
            kwargs["database"] = database
        return clickhouse_connect.get_client(**kwargs)
    except Exception as exc:  # connection refused, DNS, TLS, auth, a chDB directory held by another process
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if target.engine == "chdb" and target.path and _directory_locked(Path(target.path)):
            message = (
                f"the data directory {target.path} is in use by another otel-ai process "
                f"(chDB allows one process per directory): talk to that server with --server, "
                f"or stop it ({message})"
            )
        raise StoreError(f"cannot open ClickHouse at {target.redacted()}: {message}") from exc


def _directory_locked(path: Path) -> bool:
    """Whether another process holds the embedded engine's lock on `<dir>/status` (ClickHouse flocks it)."""
    import fcntl

    status = path / "status"
    if not status.exists():
        return False
    try:
        with open(status, "rb") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(f, fcntl.LOCK_UN)
        return False
    except OSError:
        return True


# The embedded engine's session settings. ClickHouse compiles an expression, an aggregation or a sort with
# LLVM once it has seen it 3 times, on the query's own thread: on the queries an answer runs that saved
# nothing measurable, and the first answers after start paid for it (the 4th ask of a new serve on 10 M
# spans took 1.5-2.1 s instead of 1.0 s). A server keeps its compiled code for its whole life, so its
# profile decides there.
EMBEDDED_SETTINGS = {"compile_expressions": 0, "compile_aggregate_expressions": 0, "compile_sort_description": 0}


class Store:
    """A ClickHouse handle bound to one database, safe to share between threads."""

    def __init__(self, client: Client, url: StoreURL, database: str) -> None:
        self._client = client
        self.url = url
        self.database = database
        self._lock = threading.RLock()

    @classmethod
    def connect(cls, url: str, database: str | None = None, create: bool = True) -> Store:
        """Open `url`; the database comes from the argument, the URL, or `otel`."""
        target = parse_url(url)
        db = database or target.database or DEFAULT_DATABASE
        client = _open_client(target, None)
        store = cls(client, target, db)
        if create:
            store._ensure_database(db)
        store._use(db)
        return store

    @classmethod
    def from_settings(cls, settings: Any, database: str | None = None) -> Store:  # noqa: ANN401
        """Open the configured store; a database named in the URL wins over the *default* `database`."""
        explicit = "database" in getattr(settings, "model_fields_set", {"database"})
        url_database = parse_url(settings.clickhouse_url).database
        return cls.connect(settings.clickhouse_url, database or (settings.database if explicit else None)
                           or url_database or settings.database)

    def with_database(self, database: str, create: bool = True) -> Store:
        """Another handle on the same engine bound to another database (tests, evals)."""
        other = Store(_open_client(self.url, None), self.url, database)
        if create:
            other._ensure_database(database)
        other._use(database)
        return other

    def _ensure_database(self, database: str) -> None:
        """Create the database only when it is missing: a read-only account (SELECT grants only) may not
        run CREATE DATABASE even with IF NOT EXISTS."""
        exists = self.query("SELECT count() FROM system.databases WHERE name = {d:String}",
                            parameters={"d": database}).scalar()
        if not exists:
            self.command(f"CREATE DATABASE IF NOT EXISTS {quote_ident(database)}")

    def clone(self) -> Store:
        """A second handle on the same database, so a writer thread need not wait for readers."""
        return self.with_database(self.database, create=False)

    def _use(self, database: str) -> None:
        self._client.database = database
        if self.url.engine == "chdb":
            self.command(f"USE {quote_ident(database)}")
            for name, value in EMBEDDED_SETTINGS.items():
                self.command(f"SET {name} = {value}")

    @property
    def is_embedded(self) -> bool:
        return self.url.engine == "chdb"

    def query(
        self,
        sql: str,
        parameters: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> QueryResult:
        """Run a SELECT and return typed rows."""
        with self._lock:
            result = self._client.query(sql, parameters=parameters, settings=settings)
        return QueryResult(
            columns=list(result.column_names),
            types=[t.name for t in result.column_types],
            rows=[tuple(r) for r in result.result_rows],
        )

    def command(
        self, sql: str, parameters: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> Any:  # noqa: ANN401
        """Run DDL or another statement that returns no rows."""
        with self._lock:
            return self._client.command(sql, parameters=parameters, settings=settings)

    def insert(
        self,
        table: str,
        columns: Sequence[str],
        data: Sequence[Sequence[Any]],
        column_oriented: bool = True,
        settings: dict[str, Any] | None = None,
    ) -> int:
        """Insert rows (column-oriented by default: one sequence per column); returns rows written."""
        if not data or (column_oriented and not data[0]):
            return 0
        with self._lock:
            summary = self._client.insert(
                table,
                data,
                column_names=list(columns),
                column_oriented=column_oriented,
                database=self.database,
                settings=settings,
            )
        return int(summary.written_rows)

    def release_memory(self) -> bool:
        """Give the embedded engine's freed pages back to the OS; True when there was an engine to ask.

        ClickHouse's allocator (jemalloc) keeps freed pages for reuse, and inside a Python process no
        background thread purges them: after heavy queries a serve held gigabytes it no longer used.
        A ClickHouse server manages its own memory, so for a URL store there is nothing to do here.
        """
        if not self.is_embedded:
            return False
        self.command("SYSTEM JEMALLOC PURGE")
        return True

    def tables(self) -> list[str]:
        return [r[0] for r in self.query("SELECT name FROM system.tables WHERE database = currentDatabase()")]

    def ping(self) -> bool:
        try:
            self.query("SELECT 1")
            return True
        except Exception:
            return False

    def close(self) -> None:
        with self._lock:
            self._client.close()


class StoreBusy(StoreError):
    """Every handle of a StorePool is running a query: the caller should retry later (HTTP 503)."""


class StorePool:
    """A bounded set of handles on one database for ad-hoc queries (POST /api/sql, /api/ask, the chat).

    A Store serialises its queries on one lock, so a user's 30 s cross join on the shared handle made
    /healthz and every API call wait behind it. Here each running query holds a handle of its own (chDB
    runs queries of different clients of one process concurrently, and a server gets one connection
    per handle), at most `size` at once; the server's own handle (health, scorer, ingest) is never one
    of them. Handles are opened on first need and reused."""

    def __init__(self, base: Store, size: int) -> None:
        self._base = base
        self.size = size
        self._slots = threading.BoundedSemaphore(size)
        self._idle: queue.LifoQueue[Store] = queue.LifoQueue()
        self._all: list[Store] = []
        self._lock = threading.Lock()
        self._busy = 0
        self._waiting = 0
        # per event loop (asyncio primitives belong to one): at most `size` async callers go on to `acquire`
        self._rooms: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary())

    def _count(self, busy: int = 0, waiting: int = 0) -> None:
        with self._lock:
            self._busy += busy
            self._waiting += waiting

    def stats(self) -> dict[str, int]:
        """Handles in use and callers waiting for one (a crowd of waiters shows in /healthz)."""
        with self._lock:
            return {"size": self.size, "busy": self._busy, "waiting": self._waiting}

    def _busy_error(self) -> StoreBusy:
        return StoreBusy(f"{self.size} queries are already running: try again in a few seconds")

    def acquire(self, timeout: float) -> Store:
        """A handle for one query or one answer; StoreBusy when none frees up within `timeout` seconds.
        Blocks the calling thread: callers on an event loop use `wait_handle`."""
        if not self._slots.acquire(blocking=False):
            self._count(waiting=1)
            try:
                if not self._slots.acquire(timeout=timeout):
                    raise self._busy_error()
            finally:
                self._count(waiting=-1)
        try:
            store = self._idle.get_nowait()
        except queue.Empty:
            try:
                store = self._base.clone()
            except BaseException:
                self._slots.release()
                raise
            with self._lock:
                self._all.append(store)
        self._count(busy=1)
        return store

    def release(self, store: Store) -> None:
        self._count(busy=-1)
        self._idle.put(store)
        self._slots.release()

    @contextlib.asynccontextmanager
    async def wait_handle(self, timeout: float) -> AsyncIterator[Store]:
        """A handle for a caller on an event loop (HTTP API, chat, Slack), given back on exit; StoreBusy after
        `timeout` seconds.

        The wait is on the loop, not in a worker thread: callers waiting in `acquire` inside
        `asyncio.to_thread` or Starlette's threadpool held threads that sync routes, the chat's history and
        Slack's thread memory share (60 waiting `/api/sql` calls kept `/healthz` waiting 9 s). Only the
        `size` callers admitted here go on to `acquire` in a thread, where they wait only while an answer
        borrows an idle handle for one tool call (agent.deps.Handles)."""
        loop = asyncio.get_running_loop()
        room = self._rooms.get(loop)
        if room is None:
            room = self._rooms[loop] = asyncio.Semaphore(self.size)
        started = time.monotonic()
        self._count(waiting=1)
        try:
            await asyncio.wait_for(room.acquire(), timeout)
        except TimeoutError:
            raise self._busy_error() from None
        finally:
            self._count(waiting=-1)
        try:
            taking = asyncio.ensure_future(
                asyncio.to_thread(self.acquire, max(0.0, timeout - (time.monotonic() - started))))
            try:
                store = await asyncio.shield(taking)
            except asyncio.CancelledError:  # the caller left (a closed chat tab): the thread may still get one
                taking.add_done_callback(self._release_taken)
                raise
            try:
                yield store
            finally:
                self.release(store)
        finally:
            room.release()

    def _release_taken(self, taking: asyncio.Future[Store]) -> None:
        if not taking.cancelled() and taking.exception() is None:
            self.release(taking.result())

    def close(self) -> None:
        with self._lock:
            for store in self._all:
                store.close()
            self._all.clear()


def quote_ident(name: str) -> str:
    """Backtick-quote an identifier (database or table names from settings or tests)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_literal(value: str) -> str:
    """A ClickHouse string literal for a value that came from the data or a caller (service names...)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
