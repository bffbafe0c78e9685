"""Versioned rows in ClickHouse: the pattern behind chat history, feedback and saved dashboards.

Each update inserts the whole row again with a larger `version`; a delete inserts a tombstone
(`deleted = 1`). Readers take the newest row per key with `ORDER BY version DESC LIMIT 1 BY key`
rather than FINAL, which stays exact when the table is sharded by `rand()` on a cluster.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from store import Store


class Versions:
    """Strictly increasing row versions (nanoseconds since the epoch), so the last write wins."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, time.time_ns())
            return self._last


VERSIONS = Versions()


def latest(
    store: Store,
    table: str,
    columns: list[str],
    where: str = "1",
    key: str = "id",
    tail: str = "",
    include_deleted: bool = False,
    **params: Any,
) -> list[dict[str, Any]]:
    """Newest live version of each row matching `where` (parameters bound as {name:Type})."""
    cols = ", ".join(dict.fromkeys([*columns, "deleted"]))
    live = "" if include_deleted else "WHERE deleted = 0"
    sql = (
        f"SELECT {cols} FROM (SELECT {cols} FROM {table} WHERE {where} "
        f"ORDER BY version DESC LIMIT 1 BY {key}) {live} {tail}"
    )
    return store.query(sql, parameters=params or None).dicts()


def write(store: Store, table: str, row: dict[str, Any]) -> int:
    """Insert one new version of a row (its `version` is assigned here); returns the version."""
    row = {**row, "version": VERSIONS.next()}
    store.insert(table, list(row), [list(row.values())], column_oriented=False)
    return row["version"]
