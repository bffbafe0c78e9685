"""What every part of a running server shares: settings, the store, and named services."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import uvicorn

from otel_ai.settings import Settings
from store import Store


class Service(Protocol):
    """A long-running part of `serve` (receivers, scorer loop) with an orderly stop."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Stop taking work, then flush and commit what was accepted."""


@dataclass
class ServerContext:
    settings: Settings
    store: Store
    services: dict[str, Service] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)


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
