"""`ScorerService`: the serve-side loop that scores each closed window as telemetry arrives.

The CPU work (feature queries, torch) runs in one worker thread on its own store handle, so the
asyncio loop that acknowledges OTLP requests is never starved; torch is limited to one thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import torch

from anomaly.model import TrainingInterrupted
from anomaly.scorer import AnomalyConfig, Scorer
from otel_ai.context import ServerContext

log = logging.getLogger(__name__)


class ScorerService:
    """A serve Service: restores the saved model (or starts cold on the baseline) and scores continuously."""

    name = "anomaly"

    def __init__(self, ctx: ServerContext, config: AnomalyConfig | None = None, poll_seconds: float | None = None
                 ) -> None:
        self.ctx = ctx
        self.config = config or AnomalyConfig()
        self.enabled = bool(ctx.settings.anomaly_enabled)
        self.window_seconds = int(ctx.settings.anomaly_window_seconds)
        self.poll_seconds = poll_seconds if poll_seconds is not None else max(1.0, min(5.0, self.window_seconds / 6))
        self.scorer: Scorer | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.windows_scored = 0
        self.anomalies_written = 0
        self.last_error: str | None = None

    async def start(self) -> None:
        if not self.enabled:
            log.info("anomaly scoring disabled (OTEL_AI_ANOMALY_ENABLED=false)")
            return
        self._thread = threading.Thread(target=self._run, name="anomaly-scorer", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 60)

    def stats(self) -> dict:
        return {
            "enabled": self.enabled,
            "model_version": self.scorer.model_version if self.scorer else None,
            "windows_scored": self.windows_scored,
            "anomalies_written": self.anomalies_written,
            "last_error": self.last_error,
        }

    def _run(self) -> None:
        torch.set_num_threads(max(1, self.config.threads))
        store = self.ctx.store.clone()
        try:
            self.scorer = Scorer(store, self.window_seconds, self.config, should_stop=self._stop.is_set)
            try:
                self.scorer.load()
            except Exception as exc:  # noqa: BLE001 - a bad saved state means a cold start, not a dead serve
                log.warning("anomaly state not restored (%s): starting cold", exc)
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    before = self.scorer.last_scored
                    records = self.scorer.step()
                    if self.scorer.last_scored != before:
                        self.windows_scored += 1
                    self.anomalies_written += len(records)
                    self.last_error = None
                except TrainingInterrupted:
                    break
                except Exception as exc:  # noqa: BLE001 - keep scoring later windows
                    self.last_error = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
                    log.exception("anomaly scoring step failed")
                self._stop.wait(max(0.2, self.poll_seconds - (time.monotonic() - started)))
        finally:
            store.close()
