"""Turn simulated traces into real OpenTelemetry SDK telemetry and send it with the SDK's exporters.

Spans are made by the SDK's own tracers (one TracerProvider per pod, so each pod has its resource)
with explicit timestamps, parents, links and ids; logs by the SDK's LoggerProvider with explicit
timestamps and span context; metrics are built from the SDK's metric data classes (the SDK's
MeterProvider can only stamp "now", and history needs the past). Everything leaves through
OTLPSpanExporter / OTLPLogExporter / OTLPMetricExporter (gRPC or HTTP/protobuf): the simulator never
touches a store. Batches are exported synchronously by one sender thread with a bounded queue, so
generation runs exactly as fast as the receiver accepts, and nothing is dropped silently.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, Status, StatusCode, TraceFlags

from sim.model import ENVIRONMENT, Instance
from sim.shop import SEVERITY, Shop, SimSpan

log = logging.getLogger("sim.emit")

SCOPE_VERSION = "2.1.3"
METRIC_INFO: dict[str, tuple[str, str]] = {
    "http.server.request.duration": ("Duration of HTTP server requests.", "s"),
    "rpc.server.duration": ("Measures the duration of inbound RPC.", "ms"),
    "messaging.process.duration": ("Duration of processing operation.", "s"),
    "jvm.gc.duration": ("Duration of JVM garbage collection actions.", "s"),
    "app.requests": ("Requests served, by operation and outcome.", "{request}"),
    "k8s.pod.cpu.utilization": ("Pod CPU usage as a fraction of its limit.", "1"),
    "k8s.pod.memory.working_set": ("Pod memory working set.", "By"),
    "kafka.consumer.lag": ("Messages waiting for the consumer group.", "{message}"),
    "k8s.node.cpu.utilization": ("Node CPU usage as a fraction of its capacity.", "1"),
}


@dataclass
class Exporters:
    """The three SDK exporters a run sends through."""

    spans: SpanExporter
    logs: LogRecordExporter
    metrics: MetricExporter

    def shutdown(self) -> None:
        for exporter in (self.spans, self.logs, self.metrics):
            try:
                exporter.shutdown()
            except Exception:  # noqa: BLE001 - shutting down best effort
                log.debug("exporter shutdown failed", exc_info=True)


def otlp_exporters(endpoint: str, protocol: str = "grpc", headers: dict[str, str] | None = None,
                   timeout: float = 30.0) -> Exporters:
    """The official OTLP exporters for `endpoint` (gRPC `host:port`/URL, or the HTTP base URL)."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        url = endpoint if "://" in endpoint else f"http://{endpoint}"
        insecure = not url.startswith("https://")
        return Exporters(
            OTLPSpanExporter(endpoint=url, insecure=insecure, headers=headers, timeout=timeout),
            OTLPLogExporter(endpoint=url, insecure=insecure, headers=headers, timeout=timeout),
            OTLPMetricExporter(endpoint=url, insecure=insecure, headers=headers, timeout=timeout,
                               max_export_batch_size=5000),
        )
    if protocol in ("http/protobuf", "http"):
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HTTPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HTTPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPSpanExporter

        base = (endpoint if "://" in endpoint else f"http://{endpoint}").rstrip("/")
        return Exporters(
            HTTPSpanExporter(endpoint=f"{base}/v1/traces", headers=headers, timeout=timeout),
            HTTPLogExporter(endpoint=f"{base}/v1/logs", headers=headers, timeout=timeout),
            HTTPMetricExporter(endpoint=f"{base}/v1/metrics", headers=headers, timeout=timeout),
        )
    raise ValueError(f"unknown OTLP protocol {protocol!r}: use grpc or http/protobuf")


class PresetIds(IdGenerator):
    """Hands the SDK the ids the simulation chose, so runs are reproducible and logs can point at spans."""

    def __init__(self) -> None:
        self.trace_id = 1
        self.span_id = 1

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_id


class _SpanBuffer(SpanProcessor):
    def __init__(self) -> None:
        self.items: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.items.append(span)


class _LogBuffer(LogRecordProcessor):
    def __init__(self) -> None:
        self.items: list[ReadableLogRecord] = []

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        self.items.append(ReadableLogRecord(
            log_record=log_record.log_record, resource=log_record.resource or Resource({}),
            instrumentation_scope=log_record.instrumentation_scope, limits=log_record.limits))

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


@dataclass
class Sender:
    """One thread exporting batches in order; a bounded queue gives backpressure to the generator."""

    exporters: Exporters
    max_pending: int = 4
    retries: int = 3
    max_failed_batches: int = 3  # in a row: the receiver is gone or refuses us; stop the run
    sent: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    broken: str | None = None  # why the run should stop, once batches keep failing

    def __post_init__(self) -> None:
        self._queue: queue.Queue[tuple[str, Any, int] | None] = queue.Queue(self.max_pending)
        self._thread = threading.Thread(target=self._run, name="sim-sender", daemon=True)
        self._thread.start()

    def put(self, signal: str, payload: Any, count: int) -> None:
        if count:
            self._queue.put((signal, payload, count))

    def _export(self, signal: str, payload: Any) -> bool:
        if signal == "spans":
            return self.exporters.spans.export(payload) == SpanExportResult.SUCCESS
        if signal == "logs":
            return self.exporters.logs.export(payload) == LogRecordExportResult.SUCCESS
        return self.exporters.metrics.export(payload, timeout_millis=30_000) == MetricExportResult.SUCCESS

    def _run(self) -> None:
        failed_in_a_row = 0
        while (item := self._queue.get()) is not None:
            signal, payload, count = item
            ok = False
            for attempt in range(0 if self.broken else self.retries):  # once broken, drop the backlog
                try:
                    ok = self._export(signal, payload)
                except Exception:  # noqa: BLE001 - an exporter bug must not kill the run
                    log.exception("export of %d %s raised", count, signal)
                if ok:
                    break
                time.sleep(0.5 * (attempt + 1))
            if ok:
                self.sent[signal] += count
                failed_in_a_row = 0
            else:
                self.failed[signal] += count
                failed_in_a_row += 1
                if not self.broken:
                    log.warning("dropped %d %s after %d failed exports", count, signal, self.retries)
                if failed_in_a_row >= self.max_failed_batches or not any(self.sent.values()):
                    self.broken = f"{failed_in_a_row} export(s) of {signal} failed in a row (see the log above)"
            self._queue.task_done()
        self._queue.task_done()

    def close(self) -> None:
        """Wait for every queued batch to be exported, then stop the thread."""
        self._queue.put(None)
        self._thread.join()


class Emitter:
    """Makes SDK spans, logs and metric data from the shop's output and hands batches to the sender."""

    def __init__(self, sender: Sender, batch_size: int = 2000) -> None:
        self.sender = sender
        self.batch_size = batch_size
        self.ids = PresetIds()
        self._spans = _SpanBuffer()
        self._logs = _LogBuffer()
        self._tracers: dict[str, trace.Tracer] = {}
        self._loggers: dict[str, Any] = {}
        self._resources: dict[str, Resource] = {}
        self._providers: list[Any] = []

    def resource(self, inst: Instance) -> Resource:
        res = self._resources.get(inst.instance_id)
        if res is None:
            res = self._resources[inst.instance_id] = Resource(inst.resource_attributes())
        return res

    def _tracer(self, inst: Instance) -> trace.Tracer:
        tracer = self._tracers.get(inst.instance_id)
        if tracer is None:
            provider = TracerProvider(resource=self.resource(inst), id_generator=self.ids, sampler=ALWAYS_ON,
                                      shutdown_on_exit=False)
            provider.add_span_processor(self._spans)
            self._providers.append(provider)
            tracer = self._tracers[inst.instance_id] = provider.get_tracer(inst.service, SCOPE_VERSION)
        return tracer

    def _logger(self, inst: Instance) -> Any:
        logger = self._loggers.get(inst.instance_id)
        if logger is None:
            provider = LoggerProvider(resource=self.resource(inst), shutdown_on_exit=False)
            provider.add_log_record_processor(self._logs)
            self._providers.append(provider)
            logger = self._loggers[inst.instance_id] = provider.get_logger(inst.service, SCOPE_VERSION)
        return logger

    def emit_traces(self, roots: Sequence[SimSpan]) -> None:
        for root in roots:
            self._emit_span(root, None)
            if len(self._spans.items) >= self.batch_size:
                self._flush_spans()
            if len(self._logs.items) >= self.batch_size:
                self._flush_logs()

    def _emit_span(self, sp: SimSpan, parent: trace.Span | None) -> None:
        self.ids.trace_id, self.ids.span_id = sp.trace_id, sp.span_id
        links = [Link(SpanContext(tid, sid, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)))
                 for tid, sid in sp.links]
        ctx = trace.set_span_in_context(parent) if parent is not None else None
        span = self._tracer(sp.inst).start_span(
            sp.name, context=ctx, kind=sp.kind, attributes=sp.attrs, links=links, start_time=sp.start,
            record_exception=False, set_status_on_exception=False)
        for name, ts, attrs in sp.events:
            span.add_event(name, attrs, ts)
        if sp.error:
            span.set_status(Status(StatusCode.ERROR, sp.error))
        for child in sp.children:
            self._emit_span(child, span)
        if sp.logs:
            span_ctx = trace.set_span_in_context(span)
            logger = self._logger(sp.inst)
            for rec in sp.logs:
                logger.emit(timestamp=rec.time, observed_timestamp=rec.time, context=span_ctx,
                            severity_number=SeverityNumber(SEVERITY[rec.severity]), severity_text=rec.severity,
                            body=rec.body, attributes=rec.attrs or None)
        span.end(end_time=sp.end)

    def _flush_spans(self) -> None:
        batch, self._spans.items = self._spans.items, []
        self.sender.put("spans", batch, len(batch))

    def _flush_logs(self) -> None:
        batch, self._logs.items = self._logs.items, []
        self.sender.put("logs", batch, len(batch))

    def flush(self) -> None:
        self._flush_spans()
        self._flush_logs()

    def emit_metrics(self, shop: Shop, t: int, interval_ns: int) -> None:
        """One collection of every pod's metrics at `t`: cumulative request metrics plus gauges."""
        gauges = shop.pod_gauges(t, interval_ns)
        resource_metrics: list[ResourceMetrics] = []
        points = 0
        for inst in shop.pods(t):
            m = shop.metrics[inst.instance_id]
            metrics: list[Metric] = []
            hist_points: dict[str, list[HistogramDataPoint]] = defaultdict(list)
            for (name, key), h in m.hists.items():
                exemplars = [Exemplar({}, h.exemplar[0], h.exemplar[1], h.exemplar[3], h.exemplar[2])] \
                    if h.exemplar else []
                h.exemplar = None
                hist_points[name].append(HistogramDataPoint(
                    attributes=dict(key), start_time_unix_nano=h.start, time_unix_nano=t, count=h.count,
                    sum=h.total, bucket_counts=list(h.buckets), explicit_bounds=list(h.bounds), min=h.min, max=h.max,
                    exemplars=exemplars))
            for name, dps in hist_points.items():
                metrics.append(_metric(name, Histogram(dps, AggregationTemporality.CUMULATIVE)))
            sum_points: dict[str, list[NumberDataPoint]] = defaultdict(list)
            for (name, key), value in m.counters.items():
                sum_points[name].append(NumberDataPoint(dict(key), shop.start_ns, t, value))
            for name, dps in sum_points.items():
                metrics.append(_metric(name, Sum(dps, AggregationTemporality.CUMULATIVE, True)))
            gauge_points: dict[str, list[NumberDataPoint]] = defaultdict(list)
            for name, value, attrs in gauges.get(inst.instance_id, []):
                gauge_points[name].append(NumberDataPoint(attrs, t - interval_ns, t, value))
            for name, dps in gauge_points.items():
                metrics.append(_metric(name, Gauge(dps)))
            points += sum(len(x.data.data_points) for x in metrics)
            scope = InstrumentationScope(inst.service, SCOPE_VERSION)
            resource_metrics.append(ResourceMetrics(self.resource(inst), [ScopeMetrics(scope, metrics, "")], ""))
        node_scope = InstrumentationScope("kubeletstats", SCOPE_VERSION)
        for node, value in sorted(shop.node_cpu().items()):
            res = self._resources.get(node)
            if res is None:
                res = self._resources[node] = Resource({
                    "k8s.node.name": node, "host.name": node, "k8s.cluster.name": "shop",
                    "deployment.environment.name": ENVIRONMENT})
            metric = _metric("k8s.node.cpu.utilization", Gauge([NumberDataPoint({}, t - interval_ns, t, value)]))
            resource_metrics.append(ResourceMetrics(res, [ScopeMetrics(node_scope, [metric], "")], ""))
            points += 1
        self.sender.put("metrics", MetricsData(resource_metrics), points)

    def shutdown(self) -> None:
        for provider in self._providers:
            provider.shutdown()


def _metric(name: str, data: Any) -> Metric:
    description, unit = METRIC_INFO[name]
    return Metric(name, description, unit, data)
