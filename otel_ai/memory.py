"""Hand freed memory back to the OS after bursts of work, so `serve` does not sit on gigabytes it no longer uses.

Three things keep freed memory: the embedded ClickHouse engine's jemalloc (no purge thread runs inside a
Python process), glibc's malloc for the Python heap (arenas are trimmed only at their top), and garbage
cycles the collector has not reached yet (serve runs it rarely, see `tune_gc`). After hostile load (large
queries, inflating request bodies) serve held 2.4-3.3 GB that way. This service checks the process's
resident size every few seconds and, when it is the configured amount above the server's idle size,
collects and asks both allocators to return their free pages. Memory really in use stays: a release that
gave nothing back is retried only after more growth or ten intervals.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import time
from pathlib import Path
from typing import Any

from otel_ai.context import ServerContext

log = logging.getLogger("otel_ai.memory")


def rss_bytes() -> int | None:
    """This process's resident set size, or None where /proc is not there (not Linux)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    line = next((ln for ln in status.splitlines() if ln.startswith("VmRSS:")), None)
    return int(line.split()[1]) * 1024 if line else None


def _malloc_trim() -> Any:  # noqa: ANN401 - a ctypes function or None
    """glibc's malloc_trim, which returns free heap pages anywhere in the arenas (None with other libcs)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


class MemoryService:
    """The `memory` service of serve: releases freed memory after growth, and reports what it did."""

    name = "memory"

    def __init__(self, ctx: ServerContext) -> None:
        self._ctx = ctx
        self._interval = ctx.settings.memory_release_interval_seconds
        self._growth = ctx.settings.memory_release_growth_bytes
        self._trim = _malloc_trim()
        self._task: asyncio.Task[None] | None = None
        self._floor: int | None = None  # the smallest resident size seen: the server's idle size
        self._after: int | None = None  # resident size right after the last release
        self._last_at = 0.0
        self.releases = 0
        self.released_bytes = 0
        self.last_release_seconds: float | None = None

    async def start(self) -> None:
        if self._interval > 0:
            self._floor = rss_bytes()
            self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await asyncio.to_thread(self.check)
            except Exception:  # a failed release must not end the loop: the next check tries again
                log.exception("releasing memory failed")

    def check(self) -> bool:
        """Release when the process is `growth` above its idle size; True when it released.

        A release that found nothing to give back (the memory is in use) is retried only after the
        process grew by `growth` again or ten intervals passed: by then the garbage of a burst (cycles
        the collector had not reached, pages a finished query freed) can be given back.
        """
        now = rss_bytes()
        if now is not None and self._floor is not None:
            self._floor = min(self._floor, now)
            if now - self._floor < self._growth:
                return False
            recently = time.monotonic() - self._last_at < 10 * self._interval
            if self._after is not None and now - self._after < self._growth and recently:
                return False
        started = time.perf_counter()
        self.release()
        after = rss_bytes()
        self._last_at = time.monotonic()
        self.last_release_seconds = time.perf_counter() - started
        self.releases += 1
        if now is not None and after is not None:
            self.released_bytes += max(0, now - after)
            log.info("released %.0f MiB (resident %.0f -> %.0f MiB) in %.2f s", (now - after) / 2**20,
                     now / 2**20, after / 2**20, self.last_release_seconds)
        self._after = after
        return True

    def release(self) -> None:
        """Collect garbage cycles, then ask the engine's allocator and glibc's to return their free pages.

        The collection matters: serve runs the cycle collector rarely (see `tune_gc`), and decoded
        requests were found in garbage cycles long after they were stored.
        """
        gc.collect()
        self._ctx.store.release_memory()
        if self._trim is not None:
            self._trim(0)

    def stats(self) -> dict[str, Any]:
        return {"rss_bytes": rss_bytes(), "releases": self.releases, "released_bytes": self.released_bytes,
                "last_release_seconds": self.last_release_seconds}
