"""Run a scenario: backdated history as fast as the receiver accepts it, then live in real time.

Timeline: the history covers [anchor - history, anchor] where anchor is "now" at the start (or
given). With a live phase the fault starts at the anchor (the start of live) and lasts until the
live phase ends; without one (`live=0`) it covers the last 10 minutes of history. `fault_start`
(datetime, or a timedelta offset from the anchor) and `fault_duration` override both.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from sim.emit import Emitter, Exporters, Sender, otlp_exporters
from sim.scenarios import GroundTruth, get_scenario
from sim.shop import SEC, Shop

METRIC_INTERVAL = timedelta(seconds=15)
LIVE_STEP = timedelta(seconds=5)
DEFAULT_FAULT = timedelta(minutes=10)
DEFAULT_RATE = 3.0  # user flows per second (before the diurnal swing)
SIGNALS = ("spans", "logs", "metrics")


@dataclass
class SimResult:
    ground_truth: GroundTruth
    sent: dict[str, int]
    failed: dict[str, int]
    start: datetime
    end: datetime
    seconds: float = 0.0
    traces: int = 0
    extra: dict[str, object] = field(default_factory=dict)


Progress = Callable[[str, datetime, dict[str, int]], None]


class SimulationError(RuntimeError):
    """The run cannot deliver its telemetry (nothing listening, credentials refused)."""


def check_endpoint(endpoint: str, protocol: str) -> None:
    """Fail fast with a clear message when nothing listens at the OTLP endpoint."""
    url = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    port = url.port or (4317 if protocol == "grpc" else 4318)
    try:
        socket.create_connection((url.hostname or "127.0.0.1", port), timeout=5).close()
    except OSError as exc:
        raise SimulationError(
            f"cannot reach the OTLP endpoint {url.hostname}:{port} ({protocol}): {exc.strerror or exc}; "
            "is otel-ai serve (or a Collector) running there?") from None


def _ns(dt: datetime) -> int:
    return int(dt.timestamp() * 1e9) // 1000 * 1000


def _dt(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


def fault_window(anchor: datetime, history: timedelta, live: timedelta | None,
                 fault_start: datetime | timedelta | None, fault_duration: timedelta | None
                 ) -> tuple[datetime, datetime | None]:
    """(start, end) of the fault; end None means "until the run stops"."""
    history_start = anchor - history
    if isinstance(fault_start, timedelta):
        start = anchor + fault_start
    elif isinstance(fault_start, datetime):
        start = fault_start.astimezone(UTC)
    elif live is not None and live <= timedelta(0):
        start = max(history_start, anchor - (fault_duration or DEFAULT_FAULT))
    else:
        start = anchor
    if fault_duration is not None:
        return start, start + fault_duration
    if live is not None and live <= timedelta(0):
        return start, anchor if start < anchor else None
    return start, (anchor + live) if live is not None else None


def run_simulation(
    scenario: str,
    endpoint: str = "http://127.0.0.1:4317",
    protocol: str = "grpc",
    history: timedelta = timedelta(hours=1),
    live: timedelta | None = timedelta(0),
    seed: int = 1,
    fault_start: datetime | timedelta | None = None,
    fault_duration: timedelta | None = None,
    headers: dict[str, str] | None = None,
    *,
    rate: float = DEFAULT_RATE,
    anchor: datetime | None = None,
    exporters: Exporters | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> SimResult:
    """Generate `history` of backdated telemetry then `live` (None = until `stop` is set) in real time.

    Returns the ground truth and the counts the exporters acknowledged per signal (spans, logs,
    metric data points). `anchor` pins the end of history (deterministic runs); `exporters`
    replaces the OTLP exporters (tests use the SDK's in-memory exporters).
    """
    spec = get_scenario(scenario)
    began = time.monotonic()
    anchor = (anchor or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    start = anchor - history
    f_start, f_end = fault_window(anchor, history, live, fault_start, fault_duration)
    owned = exporters is None
    if owned:
        check_endpoint(endpoint, protocol)
    exporters = exporters or otlp_exporters(endpoint, protocol, headers)
    sender = Sender(exporters)
    emitter = Emitter(sender)
    shop = Shop(seed, spec, _ns(start), _ns(f_start), _ns(f_end) if f_end else None, rate=rate)
    interval = int(METRIC_INTERVAL.total_seconds() * SEC)
    live_step = int(LIVE_STEP.total_seconds() * SEC)
    stop = stop or threading.Event()
    traces = 0
    t = last_metrics = _ns(start)
    end_ns = _ns(anchor)
    live_end = None if live is None else _ns(anchor + live)
    last_report, last_phase = 0.0, ""
    try:
        while not stop.is_set():
            if t < end_ns:  # history: as fast as the receiver takes it
                phase, nxt = "history", min(t + interval, end_ns)
            else:
                phase, nxt = "live", t + live_step
                if live_end is not None:
                    if t >= live_end:
                        break
                    nxt = min(nxt, live_end)
                wait = nxt / 1e9 - time.time()
                if wait > 0:  # caught up with the clock: real time from here
                    emitter.flush()
                    if stop.wait(min(wait, 1.0)):
                        break
                    continue
            if sender.broken:
                raise SimulationError(f"giving up on {endpoint} ({protocol}): {sender.broken}")
            roots = shop.advance(nxt)
            traces += len(roots)
            emitter.emit_traces(roots)
            if nxt - last_metrics >= interval or nxt == end_ns or nxt == live_end:
                emitter.emit_metrics(shop, nxt, nxt - last_metrics)
                last_metrics = nxt
            t = nxt
            if phase == "live":
                emitter.flush()
            every = 2.0 if phase == "history" else 30.0
            if progress and (time.monotonic() - last_report > every or phase != last_phase):
                last_report, last_phase = time.monotonic(), phase
                progress(phase, _dt(t), dict(sender.sent))
        emitter.flush()
    finally:
        sender.close()
        emitter.shutdown()
        if owned:
            exporters.shutdown()
    stopped = _dt(t)
    if f_start >= stopped:  # stopped before the fault began: nothing to find
        truth = spec.truth(None, None)
    else:
        truth = spec.truth(f_start, f_end if f_end is not None and f_end <= stopped else stopped)
    return SimResult(
        ground_truth=truth, sent={s: sender.sent.get(s, 0) for s in SIGNALS},
        failed={s: sender.failed.get(s, 0) for s in SIGNALS}, start=start, end=stopped,
        seconds=time.monotonic() - began, traces=traces,
    )
