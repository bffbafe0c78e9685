"""Group-commit writer: one insert per table for many concurrent requests.

Requests hand their rows to `submit()` and get a future that resolves only after every table their
rows went to has been committed ("acked means stored"). A single writer thread takes everything
pending, merges it and inserts it; while it inserts, new requests pile up and go together in the
next insert, so batches grow with load without an artificial delay. When requests are still being
decoded the writer lingers up to `max_wait` for them (up to `max_rows`) to save small inserts.

It also lingers for the clients its last commit answered: exporters send their next request as soon
as the previous one is acknowledged, so right after a commit of k requests up to k more are on their
way. Without waiting for them, concurrent exporters settle into cohorts that alternate between inserts
(16 streams of 1,000 spans made inserts of ~8,000 spans, not 16,000), and every insert pays ClickHouse's
fixed per-query cost and writes a part that must be merged. The wait ends when they are back, at
`max_rows`, or `max_wait` after that commit, so an idle server adds no delay.

Requests come either as rows mapped in Python (`submit`) or, with a `NativeDecoder`, as raw OTLP
protobuf bodies (`submit_raw`) that ClickHouse decodes and maps itself, a whole group in one
`INSERT ... SELECT`. A raw request ClickHouse's SQL cannot map exactly is mapped by its Python
fallback in this thread and goes into the same group's columnar insert.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ingest.mapping import TIME_COLUMNS, Rows
from ingest.native import NATIVE_SIGNALS, NativeDecoder, NativeUnreadable
from store import Store

log = logging.getLogger("otel_ai.ingest.writer")

_DT64 = re.compile(r"DateTime64\((\d)")


class WriterClosed(RuntimeError):
    """The writer is shutting down and takes no more rows."""


@dataclass(frozen=True)
class RawRequest:
    """A validated OTLP protobuf body for ClickHouse to decode, with its Python fallback."""

    signal: str  # a key of NATIVE_SIGNALS
    body: bytes
    items: int  # spans / log records / data points in it (sizes the group)
    fallback: Callable[[], Rows]  # the reference mapping of the same body
    # the tables its items go to, when the signal has several (metrics); empty: all of the signal's tables
    tables: frozenset[str] = frozenset()


@dataclass
class _Pending:
    rows: Rows
    future: Future = field(default_factory=Future)
    raw: RawRequest | None = None

    @property
    def size(self) -> int:
        return self.raw.items if self.raw is not None else self.rows.row_count


@dataclass
class _TableInfo:
    columns: list[str]
    # column -> divisor turning nanoseconds into the column's tick (1 = DateTime64(9)), and array-ness
    time_scale: dict[str, tuple[int, bool]]


class BatchWriter:
    """Owns one Store handle and the thread that writes to it."""

    def __init__(
        self,
        store: Store,
        max_rows: int = 50_000,
        max_wait: float = 0.2,
        expected: Callable[[], int] | None = None,
        on_commit: Callable[[Rows], None] | None = None,
        native: NativeDecoder | None = None,
        native_min_items: int = 0,
    ) -> None:
        self.store = store
        self.native = native
        self.native_min_items = native_min_items  # per insert query: smaller groups of raw requests go to Python
        self.max_rows = max_rows
        self.max_wait = max_wait
        self._expected = expected or (lambda: 0)
        self._on_commit = on_commit
        self._pending: list[_Pending] = []
        self._cond = threading.Condition()
        self._closing = False
        self._arrivals = 0  # requests queued so far
        self._answered = 0  # requests the last commit answered ...
        self._answered_at = 0.0  # ... at this time.monotonic() ...
        self._arrivals_then = 0  # ... when this many had been queued
        self._tables: dict[str, _TableInfo] = {}
        self.inserts = 0
        self.insert_seconds = 0.0
        self.native_requests = 0  # raw requests ClickHouse mapped
        self.fallback_requests = 0  # raw requests mapped by the Python reference instead
        self._thread = threading.Thread(target=self._run, name="otel-ai-ingest-writer", daemon=True)
        self._thread.start()

    def submit(self, rows: Rows) -> Future:
        """Queue rows; the future resolves to None once committed or raises the store error."""
        item = _Pending(rows)
        if not rows.tables or rows.row_count == 0:
            item.future.set_result(None)
            return item.future
        return self._queue(item)

    def submit_raw(self, raw: RawRequest) -> Future:
        """Queue a raw OTLP body; the future resolves to its Rows (counts and rejections) once committed."""
        if self.native is None:
            raise RuntimeError("this writer has no NativeDecoder")
        item = _Pending(Rows(signal=raw.signal), raw=raw)
        if raw.items == 0:
            item.future.set_result(item.rows)
            return item.future
        return self._queue(item)

    def _queue(self, item: _Pending) -> Future:
        with self._cond:
            if self._closing:
                raise WriterClosed("ingest is shutting down")
            self._pending.append(item)
            self._arrivals += 1
            self._cond.notify_all()
        return item.future

    def wake(self) -> None:
        """Tell a lingering writer that a request it was waiting for will not come."""
        with self._cond:
            self._cond.notify_all()

    def close(self, timeout: float = 60.0) -> None:
        """Commit everything already submitted, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # -- writer thread -------------------------------------------------------------------------

    def _take(self) -> list[_Pending] | None:
        with self._cond:
            while not self._pending:
                if self._closing:
                    return None
                self._cond.wait()
            first_at = time.monotonic()
            while not self._closing:
                rows = sum(p.size for p in self._pending)
                now = time.monotonic()
                left = self.max_wait - (now - first_at)
                if rows >= self.max_rows or left <= 0:
                    break
                if self._expected() == 0:
                    # the clients the last commit answered, still to come back within max_wait of it
                    returning = self._answered - (self._arrivals - self._arrivals_then)
                    left = min(left, self._answered_at + self.max_wait - now)
                    if returning <= 0 or left <= 0:
                        break
                self._cond.wait(left)
            taken, total = [], 0
            while self._pending and (not taken or total + self._pending[0].size <= self.max_rows):
                item = self._pending.pop(0)
                taken.append(item)
                total += item.size
            return taken

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self._write(batch)
            except BaseException as exc:  # never leave a request waiting forever
                log.exception("ingest writer failed")
                self._answering(batch)
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
            # let go of the rows now: while the next _take waits, this name would keep the last batch (up to
            # max_rows rows, or a few very large requests) alive for as long as the store stays idle
            del batch

    def _answering(self, batch: list[_Pending]) -> None:
        """Note the commit about to answer `batch`: before any future resolves, so no reply is missed."""
        with self._cond:
            self._answered, self._answered_at, self._arrivals_then = len(batch), time.monotonic(), self._arrivals

    def _write_raw(self, batch: list[_Pending]) -> dict[int, BaseException]:
        """ClickHouse decodes and inserts the raw requests it can map; the rest get their Python rows.

        Returns the errors of raw requests that failed (by id of the pending item).
        """
        assert self.native is not None
        errors: dict[int, BaseException] = {}
        groups: dict[str, list[_Pending]] = {}
        for item in batch:
            if item.raw is not None:
                groups.setdefault(item.raw.signal, []).append(item)
        for signal, items in groups.items():
            counts: list[int | None]
            tables = self._native_tables(signal, items)
            if sum(i.size for i in items) < self.native_min_items * len(tables):
                # ClickHouse spends ~50-250 ms of CPU analysing each insert query itself (one per table the
                # group's items go to): for a small group the Python mapper is cheaper (measured, see
                # docs/benchmarks.md).
                counts = [None] * len(items)
            else:
                counts = self._native_write(signal, items, tables, errors)
                if not counts:
                    continue
            for item, count in zip(items, counts, strict=True):
                assert item.raw is not None
                if count is not None:
                    item.rows.accepted = count
                    continue
                try:
                    item.rows = item.raw.fallback()
                except Exception as exc:  # noqa: BLE001 - the reference mapping failed: that request fails alone
                    errors[id(item)] = exc
                    continue
                item.rows.signal = signal
                self.fallback_requests += 1
        return errors

    @staticmethod
    def _native_tables(signal: str, items: list[_Pending]) -> list[str]:
        """The tables a group's insert queries go to: the signal's, or (metrics) those its items need."""
        tables = [t.table for t in NATIVE_SIGNALS[signal].targets]
        raws = [i.raw for i in items if i.raw is not None]
        if len(tables) > 1 and all(r.tables for r in raws):
            used = frozenset().union(*(r.tables for r in raws))
            tables = [t for t in tables if t in used]
        return tables

    def _native_write(self, signal: str, items: list[_Pending], tables: list[str],
                      errors: dict[int, BaseException]) -> list[int | None]:
        """ClickHouse maps the group into `tables`; per request its count or None (Python). [] when the
        store failed."""
        assert self.native is not None
        raws = [i.raw for i in items if i.raw is not None]
        try:
            columns = {table: self._table_info(table).columns for table in tables}
            started = time.perf_counter()
            counts = self.native.write(self.store, signal, [r.body for r in raws], [r.items for r in raws], columns,
                                       tables)
            self.insert_seconds += time.perf_counter() - started
            self.inserts += max(len(tables), 1)
            self.native_requests += sum(c is not None for c in counts)
        except NativeUnreadable as exc:  # ClickHouse could not read what upb accepted: Python maps it all
            log.warning("ClickHouse could not decode %d OTLP requests, mapping them in Python: %s", len(items), exc)
            counts = [None] * len(items)
        except Exception as exc:  # noqa: BLE001 - a store failure, reported to each request as retryable
            log.warning("native insert into %s failed (%d requests): %s", ", ".join(tables), len(items), exc)
            for table in tables:
                self._tables.pop(table, None)
            for item in items:
                errors[id(item)] = exc
            return []
        return counts

    def _write(self, batch: list[_Pending]) -> None:
        raw_errors = self._write_raw(batch) if any(item.raw is not None for item in batch) else {}
        tables: dict[str, dict[str, list[Any]]] = {}
        for item in batch:
            if id(item) in raw_errors:
                continue
            for table, cols in item.rows.tables.items():
                if not cols or not next(iter(cols.values())):
                    continue
                merged = tables.get(table)
                if merged is None:
                    tables[table] = cols  # extended in place: requests only read their counts afterwards
                else:
                    for k, v in cols.items():
                        merged[k].extend(v)
        failed: dict[str, BaseException] = {}
        for table, cols in tables.items():
            try:
                self._insert(table, cols)
            except Exception as exc:  # noqa: BLE001 - reported to each request as retryable
                log.warning("insert into %s failed (%d rows): %s", table, len(next(iter(cols.values()))), exc)
                self._tables.pop(table, None)  # re-read the table's columns next time
                failed[table] = exc
        self._answering(batch)
        for item in batch:
            errors = [failed[t] for t in item.rows.tables if t in failed]
            if id(item) in raw_errors:
                errors.insert(0, raw_errors[id(item)])
            if errors:
                item.future.set_exception(errors[0])
            else:
                if self._on_commit:
                    self._on_commit(item.rows)
                item.future.set_result(item.rows if item.raw is not None else None)

    def _table_info(self, table: str) -> _TableInfo:
        info = self._tables.get(table)
        if info is None:
            result = self.store.query(
                "SELECT name, type FROM system.columns WHERE database = {db:String} AND table = {t:String}",
                parameters={"db": self.store.database, "t": table},
            )
            if not result.rows:
                raise RuntimeError(f"table {self.store.database}.{table} does not exist")
            scale: dict[str, tuple[int, bool]] = {}
            for name, ctype in result.rows:
                if name in TIME_COLUMNS:
                    m = _DT64.search(ctype)
                    divisor = 10 ** (9 - int(m.group(1))) if m else 10**9
                    if divisor != 1:
                        scale[name] = (divisor, ctype.startswith("Array("))
            info = _TableInfo(columns=[r[0] for r in result.rows], time_scale=scale)
            self._tables[table] = info
        return info

    def _insert(self, table: str, cols: dict[str, list[Any]]) -> None:
        info = self._table_info(table)
        names = [c for c in cols if c in info.columns]
        data = []
        for name in names:
            values = cols[name]
            if name in info.time_scale:
                div, is_array = info.time_scale[name]
                values = [[t // div for t in v] for v in values] if is_array else [t // div for t in values]
            data.append(values)
        started = time.perf_counter()
        self.store.insert(table, names, data, column_oriented=True)
        self.insert_seconds += time.perf_counter() - started
        self.inserts += 1
