"""A real `otel-ai serve` fed by the official OpenTelemetry SDK exporters (gRPC and HTTP/protobuf) and
an OTLP/JSON body written by hand; after a SIGTERM the stored rows are read back field by field."""

from __future__ import annotations

import base64
import gzip
import json
import time
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from tests.fixtures.server import ServerProcess, make_server

NOW = time.time_ns() - 60 * 10**9  # inside the tables' TTL
ATTRS = {"s": "text", "b": True, "i": -7, "d": 0.5, "ls": ["a", "b"], "li": [1, 2], "ld": [1.5, 2.0], "lb": [True]}
ATTRS_STORED = {
    "s": "text", "b": "true", "i": "-7", "d": "0.5", "ls": '["a","b"]', "li": "[1,2]", "ld": "[1.5,2]", "lb": "[true]",
}
LINKED = SpanContext(trace_id=0xABC, span_id=0xDEF, is_remote=True, trace_flags=TraceFlags(1))


def _send_spans(exporter: object, service: str) -> dict[str, int]:
    provider = TracerProvider(resource=Resource.create({"service.name": service, "deployment.environment": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop.checkout", "2.1.0")
    root = tracer.start_span(
        "POST /checkout", kind=SpanKind.SERVER, attributes=ATTRS, start_time=NOW,
        links=[Link(LINKED, {"link.kind": "follows"})],
    )
    root.add_event("cart.loaded", {"items": 3}, timestamp=NOW + 1_000)
    root.set_status(Status(StatusCode.ERROR, "payment declined"))
    child = tracer.start_span("SELECT cart", context=trace.set_span_in_context(root), kind=SpanKind.CLIENT,
                              start_time=NOW + 2_000)
    child.end(end_time=NOW + 5_000)
    root.end(end_time=NOW + 1_234_567)
    provider.shutdown()
    return {"trace_id": root.get_span_context().trace_id, "root": root.get_span_context().span_id,
            "child": child.get_span_context().span_id}


def _send_logs(srv: ServerProcess) -> None:
    provider = LoggerProvider(resource=Resource.create({"service.name": "logsvc"}))
    exporter = GrpcLogExporter(endpoint=srv.otlp_grpc_endpoint, insecure=True, compression=grpc.Compression.Gzip)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("app.logger", "0.3")
    ctx = trace.set_span_in_context(trace.NonRecordingSpan(SpanContext(0x1234, 0x5678, False, TraceFlags(1))))
    from opentelemetry._logs import SeverityNumber

    logger.emit(timestamp=NOW + 10, context=ctx, severity_number=SeverityNumber.WARN, severity_text="WARN",
                body="disk almost full", attributes={"disk": "/var", "pct": 93.5}, event_name="disk.warning")
    logger.emit(observed_timestamp=NOW + 20, severity_number=SeverityNumber.INFO, body={"k": [1, "x"]})
    provider.shutdown()
    # the same signal over OTLP/HTTP
    http_provider = LoggerProvider(resource=Resource.create({"service.name": "logsvc-http"}))
    http_provider.add_log_record_processor(SimpleLogRecordProcessor(HttpLogExporter(
        endpoint=f"{srv.otlp_http_url}/v1/logs")))
    http_provider.get_logger("http.logger").emit(timestamp=NOW + 30, severity_text="ERROR", body="over http")
    http_provider.shutdown()


def _send_metrics(srv: ServerProcess) -> SpanContext:
    """Every metric type through the SDK (HTTP) plus a summary by hand; returns the exemplar's span."""
    reader = PeriodicExportingMetricReader(HttpMetricExporter(endpoint=f"{srv.otlp_http_url}/v1/metrics"),
                                           export_interval_millis=3_600_000)
    provider = MeterProvider(
        resource=Resource.create({"service.name": "metricsvc"}), metric_readers=[reader],
        views=[View(instrument_name="latency.exp", aggregation=ExponentialBucketHistogramAggregation(max_size=20))],
    )
    meter = provider.get_meter("app.meter", "1.0")
    meter.create_counter("requests", unit="1", description="served").add(5, {"route": "/a"})
    meter.create_up_down_counter("queue.depth").add(-2)
    meter.create_gauge("temperature", unit="Cel").set(21.5, {"room": "lab"})
    tracer_provider = TracerProvider()
    with tracer_provider.get_tracer("t").start_as_current_span("with-exemplar") as span:
        exemplar_span = span.get_span_context()
        hist = meter.create_histogram("latency", unit="ms")
        for v in (3, 30, 300):
            hist.record(v, {"route": "/a"})
    exp = meter.create_histogram("latency.exp", unit="ms")
    for v in (1, 2, 4, 8):
        exp.record(v)
    provider.shutdown()
    # a counter over OTLP/gRPC too
    grpc_reader = PeriodicExportingMetricReader(GrpcMetricExporter(endpoint=srv.otlp_grpc_endpoint, insecure=True),
                                                export_interval_millis=3_600_000)
    grpc_provider = MeterProvider(resource=Resource.create({"service.name": "metricsvc-grpc"}),
                                  metric_readers=[grpc_reader])
    grpc_provider.get_meter("grpc.meter").create_counter("grpc.requests").add(3)
    grpc_provider.shutdown()

    summary = ExportMetricsServiceRequest()
    rm = summary.resource_metrics.add()
    rm.resource.attributes.add(key="service.name", value=AnyValue(string_value="legacy"))
    metric = rm.scope_metrics.add().metrics.add(name="rpc.duration", unit="s")
    point = metric.summary.data_points.add(count=10, sum=4.5, start_time_unix_nano=NOW, time_unix_nano=NOW + 99)
    point.quantile_values.add(quantile=0.5, value=0.3)
    point.quantile_values.add(quantile=0.99, value=1.25)
    r = httpx.post(f"{srv.otlp_http_url}/v1/metrics", content=summary.SerializeToString(),
                   headers={"content-type": "application/x-protobuf"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf"
    assert not ExportMetricsServiceResponse.FromString(r.content).HasField("partial_success")
    return exemplar_span


JSON_TRACE_ID = "5b8efff798038103d269b633813fc60c"


def _send_json(srv: ServerProcess) -> None:
    body = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "jsonsvc"}}]},
        "scopeSpans": [{"scope": {"name": "hand", "version": "0"}, "spans": [{
            "traceId": JSON_TRACE_ID, "spanId": "eee19b7ec3c1b174", "parentSpanId": "eee19b7ec3c1b173",
            "traceState": "k=v", "name": "json-span", "kind": 4,
            "startTimeUnixNano": str(NOW), "endTimeUnixNano": str(NOW + 42),
            "status": {"code": 1},
            "attributes": [
                {"key": "bytes", "value": {"bytesValue": base64.b64encode(b"\x00\x01\xfe").decode()}},
                {"key": "map", "value": {"kvlistValue": {"values": [
                    {"key": "z", "value": {"intValue": "9007199254740993"}},
                    {"key": "a", "value": {"arrayValue": {"values": [{"doubleValue": 1e21}, {"boolValue": False}]}}},
                ]}}},
                {"key": "big", "value": {"intValue": "-9223372036854775808"}},
                {"key": "html", "value": {"stringValue": "<b>&"}},
            ],
        }]}],
    }]}
    raw = json.dumps(body).encode()
    r = httpx.post(f"{srv.otlp_http_url}/v1/traces", content=gzip.compress(raw),
                   headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json" and r.json() == {}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base: Path = tmp_path_factory.mktemp("ingest_e2e")
    (base / "data").mkdir()
    srv = make_server(base / "data", base / "serve.log").start()
    try:
        sent = {
            "grpc": _send_spans(GrpcSpanExporter(endpoint=srv.otlp_grpc_endpoint, insecure=True), "svc-grpc"),
            "http": _send_spans(HttpSpanExporter(endpoint=f"{srv.otlp_http_url}/v1/traces",
                                                 compression=Compression.Gzip), "svc-http"),
        }
        _send_json(srv)
        _send_logs(srv)
        sent["exemplar"] = _send_metrics(srv)
    finally:
        code = srv.stop()
    assert code == 0, srv.log()
    ns = "toUnixTimestamp64Nano"
    traces = srv.query(
        f"SELECT *, {ns}(Timestamp) AS ts, arrayMap(t -> {ns}(t), Events.Timestamp) AS ev_ts "
        "FROM otel_traces ORDER BY ServiceName, Timestamp"
    )
    logs = srv.query(f"SELECT *, {ns}(Timestamp) AS ts FROM otel_logs ORDER BY Timestamp")
    metrics = {
        kind: srv.query(f"SELECT *, {ns}(TimeUnix) AS t FROM otel_metrics_{kind} ORDER BY MetricName")
        for kind in ("gauge", "sum", "histogram", "exponential_histogram", "summary")
    }
    return {"sent": sent, "traces": traces, "logs": logs, "metrics": metrics}


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_spans_are_stored_field_by_field(ingested: dict, transport: str) -> None:
    sent = ingested["sent"][transport]
    rows = [r for r in ingested["traces"] if r["ServiceName"] == f"svc-{transport}"]
    assert [r["SpanName"] for r in rows] == ["POST /checkout", "SELECT cart"]
    root, child = rows
    assert root["TraceId"] == child["TraceId"] == f"{sent['trace_id']:032x}"
    assert root["SpanId"] == f"{sent['root']:016x}" and child["SpanId"] == f"{sent['child']:016x}"
    assert root["ParentSpanId"] == "" and child["ParentSpanId"] == root["SpanId"]
    assert (root["ts"], root["Duration"], child["ts"], child["Duration"]) == (NOW, 1_234_567, NOW + 2_000, 3_000)
    assert (root["SpanKind"], child["SpanKind"]) == ("Server", "Client")
    assert (root["StatusCode"], root["StatusMessage"], child["StatusCode"]) == ("Error", "payment declined", "Unset")
    assert root["SpanAttributes"] == ATTRS_STORED
    assert root["ResourceAttributes"]["service.name"] == f"svc-{transport}"
    assert root["ResourceAttributes"]["deployment.environment"] == "test"
    assert root["ResourceAttributes"]["telemetry.sdk.language"] == "python"
    assert (root["ScopeName"], root["ScopeVersion"]) == ("shop.checkout", "2.1.0")
    assert root["ev_ts"] == [NOW + 1_000] and root["Events.Name"] == ["cart.loaded"]
    assert root["Events.Attributes"] == [{"items": "3"}]
    assert root["Links.TraceId"] == [f"{0xABC:032x}"] and root["Links.SpanId"] == [f"{0xDEF:016x}"]
    assert root["Links.Attributes"] == [{"link.kind": "follows"}] and root["Links.TraceState"] == [""]
    assert child["Events.Name"] == [] and child["Links.TraceId"] == []


def test_hand_written_otlp_json_is_stored(ingested: dict) -> None:
    (row,) = [r for r in ingested["traces"] if r["ServiceName"] == "jsonsvc"]
    assert (row["TraceId"], row["SpanId"], row["ParentSpanId"]) == (
        JSON_TRACE_ID, "eee19b7ec3c1b174", "eee19b7ec3c1b173")
    assert (row["TraceState"], row["SpanKind"], row["StatusCode"]) == ("k=v", "Producer", "Ok")
    assert (row["ts"], row["Duration"], row["ScopeName"]) == (NOW, 42, "hand")
    assert row["SpanAttributes"] == {
        "bytes": base64.b64encode(b"\x00\x01\xfe").decode(),
        "map": '{"a":[1e+21,false],"z":9007199254740993}',
        "big": "-9223372036854775808",
        "html": "<b>&",
    }


def test_sdk_logs_are_stored(ingested: dict) -> None:
    first, second, third = ingested["logs"]
    assert (third["ts"], third["ServiceName"], third["Body"], third["SeverityText"]) == (
        NOW + 30, "logsvc-http", "over http", "ERROR")
    assert (first["ts"], first["TraceId"], first["SpanId"]) == (NOW + 10, f"{0x1234:032x}", f"{0x5678:016x}")
    assert (first["TraceFlags"], first["SeverityText"], first["SeverityNumber"]) == (1, "WARN", 13)
    assert (first["Body"], first["ServiceName"], first["EventName"]) == ("disk almost full", "logsvc", "disk.warning")
    assert first["LogAttributes"] == {"disk": "/var", "pct": "93.5"}
    assert (first["ScopeName"], first["ScopeVersion"]) == ("app.logger", "0.3")
    assert first["ResourceAttributes"]["service.name"] == "logsvc"
    # no timestamp: the observed time is used; a map body is rendered as JSON
    assert (second["ts"], second["Body"], second["TraceId"], second["SpanId"]) == (
        NOW + 20, '{"k":[1,"x"]}', "", "")


def test_sdk_metrics_of_every_type_are_stored(ingested: dict) -> None:
    m = ingested["metrics"]
    (gauge,) = m["gauge"]
    assert (gauge["MetricName"], gauge["Value"], gauge["MetricUnit"], gauge["Attributes"]) == (
        "temperature", 21.5, "Cel", {"room": "lab"})
    assert (gauge["ServiceName"], gauge["ScopeName"], gauge["ScopeVersion"]) == ("metricsvc", "app.meter", "1.0")
    grpc_requests, queue, requests = m["sum"]
    assert (grpc_requests["MetricName"], grpc_requests["Value"], grpc_requests["ServiceName"]) == (
        "grpc.requests", 3.0, "metricsvc-grpc")
    assert (requests["MetricName"], requests["Value"], requests["IsMonotonic"]) == ("requests", 5.0, True)
    assert (requests["MetricDescription"], requests["AggregationTemporality"]) == ("served", 2)
    assert (queue["MetricName"], queue["Value"], queue["IsMonotonic"]) == ("queue.depth", -2.0, False)
    (hist,) = m["histogram"]
    assert (hist["Count"], hist["Sum"], hist["Min"], hist["Max"]) == (3, 333.0, 3.0, 300.0)
    bounds = hist["ExplicitBounds"]
    assert bounds[:3] == [0.0, 5.0, 10.0] and len(hist["BucketCounts"]) == len(bounds) + 1
    assert sum(hist["BucketCounts"]) == 3
    exemplar = ingested["sent"]["exemplar"]
    assert hist["Exemplars.TraceId"] and set(hist["Exemplars.TraceId"]) == {f"{exemplar.trace_id:032x}"}
    assert set(hist["Exemplars.SpanId"]) == {f"{exemplar.span_id:016x}"}
    (exp,) = m["exponential_histogram"]
    assert (exp["Count"], exp["Sum"], exp["Min"], exp["Max"]) == (4, 15.0, 1.0, 8.0)
    assert sum(exp["PositiveBucketCounts"]) + exp["ZeroCount"] == 4 and exp["Scale"] <= 20
    (summary,) = m["summary"]
    assert (summary["ServiceName"], summary["Count"], summary["Sum"], summary["t"]) == ("legacy", 10, 4.5, NOW + 99)
    assert summary["ValueAtQuantiles.Quantile"] == [0.5, 0.99] and summary["ValueAtQuantiles.Value"] == [0.3, 1.25]
