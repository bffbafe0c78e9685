"""Shared fixtures. chDB allows one data directory per process: the pytest process opens ONE
directory (session-scoped) and isolates tests by database; anything needing its own directory
runs `otel-ai serve` (or another CLI) as a subprocess."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_ai.settings import Settings
from store import Store

pytest_plugins = ["tests.fixtures.server", "tests.fixtures.slack", "tests.fixtures.scenario", "tests.fixtures.browser",
                  "tests.fixtures.clickhouse_http"]


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture(scope="session")
def root_store(chdb_dir: Path) -> Iterator[Store]:
    store = Store.connect(f"chdb://{chdb_dir}", database="default")
    yield store
    store.close()


def new_database(root_store: Store, prefix: str = "t") -> Store:
    """A fresh database on the session's engine with the otel-ai schema applied."""
    from store.migrations import migrate

    store = root_store.with_database(f"{prefix}_{uuid.uuid4().hex[:12]}")
    migrate(store, Settings(clickhouse_url=f"chdb://{root_store.url.path}", database=store.database))
    return store


@pytest.fixture
def store(root_store: Store) -> Iterator[Store]:
    """A migrated database of its own for one test."""
    s = new_database(root_store)
    yield s
    s.close()
