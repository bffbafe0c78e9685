"""Ingest self-check: what a running otel-ai stored (per its /healthz) versus what the simulator sent.

otel-ai acknowledges an export only after committing it, so once the exporters have returned, the
receiver's `stored` counters must have grown by exactly what was sent (when nothing else sends to it).
"""

from __future__ import annotations

import time

import httpx

# simulator signal -> the receiver's name for it in /healthz "ingest"
RECEIVER_SIGNALS = {"spans": "traces", "logs": "logs", "metrics": "metrics"}


def stored_counts(server_url: str, timeout: float = 10.0, headers: dict[str, str] | None = None) -> dict[str, int]:
    """Items stored per signal by the otel-ai server at `server_url` (its HTTP API, not OTLP). With API auth on,
    /healthz tells ingest statistics only to a caller with a token: `headers` carry it."""
    resp = httpx.get(f"{server_url.rstrip('/')}/healthz", timeout=timeout, headers=headers)
    resp.raise_for_status()
    ingest = resp.json().get("ingest")
    if not ingest:
        raise ValueError(f"{server_url}/healthz reports no ingest statistics (is it otel-ai serve?)")
    return {signal: int(ingest[name]["stored"]) for signal, name in RECEIVER_SIGNALS.items()}


def self_check(server_url: str, before: dict[str, int], sent: dict[str, int], wait: float = 30.0,
               headers: dict[str, str] | None = None) -> dict:
    """Compare the growth of the server's stored counts since `before` with `sent`.

    Returns {"ok": bool, "sent": {...}, "stored": {...}}; waits up to `wait` seconds for late commits.
    """
    deadline = time.monotonic() + wait
    while True:
        now = stored_counts(server_url, headers=headers)
        stored = {k: now[k] - before.get(k, 0) for k in RECEIVER_SIGNALS}
        ok = stored == {k: sent.get(k, 0) for k in RECEIVER_SIGNALS}
        if ok or time.monotonic() > deadline or any(stored[k] > sent.get(k, 0) for k in stored):
            return {"ok": ok, "sent": dict(sent), "stored": stored}
        time.sleep(0.5)
