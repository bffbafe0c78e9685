"""Forward only the telemetry of a time range to real exporters, so a run can be loaded in parts.

The simulator is deterministic per seed and a fault changes nothing before it starts, so the history
before a cut-off is the same for every scenario of a seed: a benchmark loads it once and sends each
scenario only from the cut-off on. The simulation itself still runs from the start (its state at the
cut-off must be the real one); only what reaches the exporters is filtered. An item belongs to the range
of the timestamp it is stored under: a span's start, a log record's time, a metric point's time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from sim.emit import Exporters


class _Range:
    def __init__(self, start_ns: int | None, end_ns: int | None) -> None:
        self.start_ns, self.end_ns = start_ns, end_ns

    def keeps(self, ns: int | None) -> bool:
        t = ns or 0
        return (self.start_ns is None or t >= self.start_ns) and (self.end_ns is None or t < self.end_ns)


class _Spans(_Range, SpanExporter):
    def __init__(self, inner: SpanExporter, start_ns: int | None, end_ns: int | None) -> None:
        super().__init__(start_ns, end_ns)
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        kept = [s for s in spans if self.keeps(s.start_time)]
        return self.inner.export(kept) if kept else SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.inner.shutdown()


class _Logs(_Range, LogRecordExporter):
    def __init__(self, inner: LogRecordExporter, start_ns: int | None, end_ns: int | None) -> None:
        super().__init__(start_ns, end_ns)
        self.inner = inner

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        kept = [r for r in batch if self.keeps(r.log_record.timestamp)]
        return self.inner.export(kept) if kept else LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.inner.shutdown()


class _Metrics(_Range, MetricExporter):
    def __init__(self, inner: MetricExporter, start_ns: int | None, end_ns: int | None) -> None:
        _Range.__init__(self, start_ns, end_ns)
        MetricExporter.__init__(self)
        self.inner = inner

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:  # noqa: ANN401
        resources = []
        for rm in metrics_data.resource_metrics:
            scopes = []
            for sm in rm.scope_metrics:
                metrics = []
                for m in sm.metrics:
                    points = [p for p in m.data.data_points if self.keeps(p.time_unix_nano)]
                    if points:
                        metrics.append(replace(m, data=replace(m.data, data_points=points)))
                if metrics:
                    scopes.append(replace(sm, metrics=metrics))
            if scopes:
                resources.append(replace(rm, scope_metrics=scopes))
        if not resources:
            return MetricExportResult.SUCCESS
        return self.inner.export(MetricsData(resources), timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:  # noqa: ANN401
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def time_range(exporters: Exporters, start_ns: int | None = None, end_ns: int | None = None) -> Exporters:
    """`exporters` receiving only the items stamped in [start_ns, end_ns) (None: unbounded)."""
    return Exporters(_Spans(exporters.spans, start_ns, end_ns), _Logs(exporters.logs, start_ns, end_ns),
                     _Metrics(exporters.metrics, start_ns, end_ns))
