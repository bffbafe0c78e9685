"""What every part of a running server shares: settings, the store, and named services."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

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
