"""What every part of a running server shares: settings, the store, and named services."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import uvicorn

from otel_ai.settings import Settings
from store import Store, StorePool


class Service(Protocol):
    """A long-running part of `serve` (receivers, scorer loop) with an orderly stop."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Stop taking work, then flush and commit what was accepted."""


# How long an ad-hoc query waits for a free handle before the caller gets "busy" (HTTP 503).
QUERY_WAIT_SECONDS = 10.0


@dataclass
class ServerContext:
    """`store` is the server's own handle (migrations, scorer, anomaly list); user queries run on
    `queries`, and /healthz pings on `health`, so neither waits behind a user's query."""

    settings: Settings
    store: Store
    services: dict[str, Service] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    _queries: StorePool | None = None
    _health: Store | None = None

    @property
    def queries(self) -> StorePool:
        if self._queries is None:
            self._queries = StorePool(self.store, self.settings.sql_concurrency)
        return self._queries

    def query_handle(self) -> contextlib.AbstractAsyncContextManager[Store]:
        """A pooled handle for one request of the HTTP API, the chat or Slack; StoreBusy after
        QUERY_WAIT_SECONDS. The caller waits on the event loop, not in a worker thread
        (StorePool.wait_handle)."""
        return self.queries.wait_handle(QUERY_WAIT_SECONDS)

    @property
    def health(self) -> Store:
        if self._health is None:
            self._health = self.store.clone()
        return self._health

    def close(self) -> None:
        """Close the handles opened for queries and health (the caller closes `store`)."""
        if self._queries is not None:
            self._queries.close()
        if self._health is not None:
            self._health.close()


class QuietUvicorn(uvicorn.Server):
    """A uvicorn server that leaves SIGTERM/SIGINT to `serve` (several run in one process)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_socket(host: str, port: int, what: str) -> socket.socket:
    """A bound TCP socket for uvicorn (`serve(sockets=[...])`): a taken port becomes a clear OSError
    naming the listener, instead of uvicorn's log line and sys.exit() inside a task."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot bind {what} on {host}:{port}: {exc.strerror}") from None
    return sock
