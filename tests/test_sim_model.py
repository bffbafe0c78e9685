"""The simulator on its own: SDK exporters, no store access, determinism, call graph and conventions.

Runs capture telemetry with the SDK's in-memory exporters (the same SDK objects the OTLP exporters
receive); tests that go through real ingest live in test_sim_scenarios.py.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from sim.emit import Exporters, otlp_exporters
from sim.model import CALL_GRAPH, SERVICES
from sim.runner import fault_window, run_simulation
from sim.scenarios import SCENARIOS, get_scenario

ROOT = Path(__file__).resolve().parents[1]
ANCHOR = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)


class MemoryMetrics(MetricExporter):
    """Keeps exported MetricsData (the SDK has no in-memory push exporter)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[MetricsData] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object) -> MetricExportResult:
        self.batches.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        pass


def capture(scenario: str = "none", seed: int = 1, minutes: int = 6, rate: float = 2.0, **kw: object):
    ex = Exporters(InMemorySpanExporter(), InMemoryLogRecordExporter(), MemoryMetrics())
    result = run_simulation(scenario, history=timedelta(minutes=minutes), live=timedelta(0), seed=seed,
                            rate=rate, anchor=ANCHOR, exporters=ex, **kw)  # type: ignore[arg-type]
    return result, ex.spans.get_finished_spans(), ex.logs.get_finished_logs(), ex.metrics.batches


@pytest.fixture(scope="module")
def baseline_run():
    return capture("none")


def shape(spans) -> list[tuple]:
    return [(s.context.trace_id, s.context.span_id, s.parent.span_id if s.parent else None, s.name,
             s.resource.attributes["service.name"], s.start_time, s.end_time, s.status.status_code) for s in spans]


def test_exporters_are_the_sdk_otlp_exporters():
    grpc = otlp_exporters("http://127.0.0.1:4317", "grpc")
    http = otlp_exporters("http://127.0.0.1:4318", "http/protobuf")
    try:
        for ex, proto in ((grpc, "grpc"), (http, "http")):
            for exporter, module in ((ex.spans, "trace_exporter"), (ex.logs, "_log_exporter"),
                                     (ex.metrics, "metric_exporter")):
                assert type(exporter).__module__.startswith(f"opentelemetry.exporter.otlp.proto.{proto}.{module}")
        assert http.spans._endpoint == "http://127.0.0.1:4318/v1/traces"
    finally:
        grpc.shutdown()
        http.shutdown()
    with pytest.raises(ValueError, match="unknown OTLP protocol"):
        otlp_exporters("x:1", "thrift")


def test_sim_never_touches_the_store():
    forbidden = {"store", "ingest", "clickhouse_connect", "chdb", "schema"}
    for path in (ROOT / "sim").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{path.name} imports {name}"
    code = "import sys, sim.runner, sim.emit; print(sorted(m for m in ('store','ingest','chdb') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_same_seed_same_telemetry_other_seed_differs(baseline_run):
    result, spans, logs, metrics = baseline_run
    again, spans2, logs2, metrics2 = capture("none")
    assert result.sent == again.sent and result.traces == again.traces
    assert shape(spans) == shape(spans2)
    assert [(r.log_record.body, r.log_record.timestamp) for r in logs] == [
        (r.log_record.body, r.log_record.timestamp) for r in logs2]
    other, spans3, _, _ = capture("none", seed=2)
    assert shape(spans3) != shape(spans)
    assert other.sent["spans"] != result.sent["spans"]


def test_fault_changes_only_faulty_requests(baseline_run):
    """Same seed with and without a fault: identical traffic before the fault starts."""
    _, base, _, _ = baseline_run
    _, slow, _, _ = capture("paymentSlow")
    start = int((ANCHOR - timedelta(minutes=6)).timestamp() * 1e9)
    fault = int((ANCHOR - timedelta(minutes=3)).timestamp() * 1e9)  # 3 minutes of fault

    def before(spans):
        return [s for s in shape(spans) if s[5] < fault - 30 * 10**9]

    _, short, _, _ = capture("paymentSlow", fault_duration=timedelta(minutes=3))
    assert before(short) == before(base) and len(before(base)) > 1000
    assert min(s.start_time for s in base) >= start
    charge = [s for s in short if s.name == "oteldemo.PaymentService/Charge" and s.kind == SpanKind.SERVER]
    late = [s.end_time - s.start_time for s in charge if s.start_time >= fault]
    early = [s.end_time - s.start_time for s in charge if s.start_time < fault]
    assert late and early and min(late) > 800e6 > max(early)

    def requests(spans):  # the default 10 min window covers all 6 minutes: same user requests, slower
        return sorted(s.context.trace_id for s in spans if s.parent is None and s.kind == SpanKind.SERVER)

    assert requests(slow) == requests(base)


def test_call_graph_conventions_and_resources(baseline_run):
    _, spans, logs, metrics = baseline_run
    by_id = {s.context.span_id: s for s in spans}
    services = {s.resource.attributes["service.name"] for s in spans}
    assert services == set(SERVICES)
    edges = set()
    for s in spans:
        res = s.resource.attributes
        for key in ("service.name", "service.version", "service.instance.id", "k8s.pod.name", "host.name",
                    "deployment.environment.name"):
            assert res.get(key), (key, s.name)
        parent = by_id.get(s.parent.span_id) if s.parent else None
        caller = parent.resource.attributes["service.name"] if parent else None
        if s.kind == SpanKind.SERVER and caller and caller != res["service.name"]:
            edges.add((caller, res["service.name"]))
        if s.kind in (SpanKind.SERVER, SpanKind.CLIENT) and "rpc.system" in s.attributes:
            assert s.attributes["rpc.system"] == "grpc" and s.attributes["rpc.service"].startswith("oteldemo.")
            assert s.name == f"{s.attributes['rpc.service']}/{s.attributes['rpc.method']}"
        elif s.kind == SpanKind.SERVER:
            assert {"http.request.method", "http.route", "http.response.status_code"} <= set(s.attributes), s.name
        if "db.system" in s.attributes:
            assert s.kind == SpanKind.CLIENT and s.attributes["db.statement"]
        if s.kind == SpanKind.CONSUMER:
            assert s.parent is None and len(s.links) == 1
            producer = by_id[s.links[0].context.span_id]
            assert producer.kind == SpanKind.PRODUCER and producer.context.trace_id != s.context.trace_id
            assert s.start_time >= producer.end_time and s.attributes["messaging.system"] == "kafka"
        if parent is not None:
            assert parent.context.trace_id == s.context.trace_id
            assert parent.start_time <= s.start_time and s.end_time <= parent.end_time, s.name
    allowed = {(a, b) for a, targets in CALL_GRAPH.items() for b in targets}
    allowed |= {("checkout", c) for c in CALL_GRAPH["kafka"]}
    assert edges <= allowed
    for edge in [("frontend", "checkout"), ("checkout", "payment"), ("checkout", "email"), ("shipping", "quote"),
                 ("recommendation", "product-catalog"), ("frontend", "ad"), ("frontend-proxy", "frontend")]:
        assert edge in edges
    # logs point at real spans of the same service
    assert len(logs) > 1000
    for rec in logs[:2000]:
        lr = rec.log_record
        span = by_id[lr.span_id]
        assert span.context.trace_id == lr.trace_id
        assert span.resource.attributes["service.name"] == rec.resource.attributes["service.name"]
    # metrics: cumulative request histograms, counters, per-pod gauges every 15 s
    names = Counter(m.name for batch in metrics for rm in batch.resource_metrics for sm in rm.scope_metrics
                    for m in sm.metrics)
    for name in ("rpc.server.duration", "http.server.request.duration", "app.requests",
                 "k8s.pod.cpu.utilization", "k8s.pod.memory.working_set", "k8s.node.cpu.utilization"):
        assert names[name] >= len(metrics), name
    assert len(metrics) == 6 * 4


def test_background_errors_carry_exception_logs():
    _, spans, logs, _ = capture("paymentFailure", minutes=6)
    failed = [s for s in spans if s.status.status_code == StatusCode.ERROR]
    assert failed
    charge = [s for s in failed if s.name == "oteldemo.PaymentService/Charge" and s.kind == SpanKind.SERVER]
    assert charge and all(s.attributes["app.loyalty.level"] == "gold" for s in charge
                          if "Invalid token" in (s.status.description or ""))
    assert any(e.name == "exception" for e in charge[0].events)
    errors = [r for r in logs if r.log_record.severity_text == "ERROR"]
    services = {r.resource.attributes["service.name"] for r in errors}
    assert {"payment", "checkout", "frontend"} <= services
    assert all(r.log_record.attributes.get("exception.stacktrace") for r in errors)


def test_fault_window_rules():
    anchor = ANCHOR
    h = timedelta(hours=1)
    assert fault_window(anchor, h, timedelta(0), None, None) == (anchor - timedelta(minutes=10), anchor)
    assert fault_window(anchor, h, timedelta(minutes=5), None, None) == (anchor, anchor + timedelta(minutes=5))
    assert fault_window(anchor, h, None, None, None) == (anchor, None)
    assert fault_window(anchor, h, None, timedelta(minutes=-20), timedelta(minutes=5)) == (
        anchor - timedelta(minutes=20), anchor - timedelta(minutes=15))
    assert fault_window(anchor, timedelta(minutes=4), timedelta(0), None, None) == (anchor - timedelta(minutes=4),
                                                                                      anchor)


def test_catalogue_ground_truth():
    assert "none" in SCENARIOS and len(SCENARIOS) >= 17
    for name in ("paymentFailure", "paymentUnreachable", "cartFailure", "productCatalogFailure",
                 "recommendationCacheFailure", "adFailure", "adHighCpu", "adManualGc", "imageSlowLoad",
                 "intlShippingSlowdown", "kafkaQueueProblems", "emailMemoryLeak"):
        assert SCENARIOS[name].feature_flag == name
    for sc in SCENARIOS.values():
        if sc.name == "none":
            assert not sc.effects and sc.root_cause_service is None
            continue
        assert sc.root_cause_service in SERVICES and sc.symptom_service in SERVICES, sc.name
        assert sc.kind in ("latency", "errors", "saturation", "dependency") and sc.symptom
    truth = get_scenario("paymentSlow").truth(ANCHOR, None)
    assert truth.model_dump(mode="json")["start"] == "2026-11-27T15:00:00Z" and truth.end is None
    with pytest.raises(ValueError, match="unknown scenario 'nope'; known: none, paymentSlow"):
        get_scenario("nope")


def test_history_then_live_in_real_time_with_the_fault_from_live_start():
    ex = Exporters(InMemorySpanExporter(), InMemoryLogRecordExporter(), MemoryMetrics())
    phases: list[str] = []
    began = time.time()
    result = run_simulation("paymentSlow", history=timedelta(minutes=1), live=timedelta(seconds=8), rate=25.0,
                            exporters=ex, progress=lambda phase, at, sent: phases.append(phase))
    took = time.time() - began
    truth = result.ground_truth
    anchor = result.end - timedelta(seconds=8)
    assert truth.start == anchor and truth.end == result.end  # fault = the live phase
    assert 7 <= took < 60 and phases[0] == "history" and "live" in phases  # anchor: start, second-truncated
    assert abs(result.end.timestamp() - time.time()) < 5  # live ends at about the wall clock
    charges = [s for s in ex.spans.get_finished_spans()
               if s.name == "oteldemo.PaymentService/Charge" and s.kind == SpanKind.SERVER]
    fault_ns = anchor.timestamp() * 1e9
    before = [s.end_time - s.start_time for s in charges if s.start_time < fault_ns]
    # a flow begun just before the end may call Charge after it, when the fault is over
    during = [s.end_time - s.start_time for s in charges if fault_ns <= s.start_time < result.end.timestamp() * 1e9]
    assert before and during and max(before) < 800e6 < min(during)


def test_stopped_before_the_fault_reports_no_fault_window():
    ex = Exporters(InMemorySpanExporter(), InMemoryLogRecordExporter(), MemoryMetrics())
    stop = threading.Event()

    def halt(phase: str, at: datetime, sent: dict) -> None:
        stop.set()  # Ctrl-C during the history

    result = run_simulation("adFailure", history=timedelta(minutes=30), live=None, rate=1.0, anchor=ANCHOR,
                            exporters=ex, progress=halt, stop=stop)
    assert result.end < ANCHOR and result.ground_truth.start is None and result.ground_truth.end is None
    assert result.ground_truth.root_cause_service == "ad" and result.sent["spans"] > 0
