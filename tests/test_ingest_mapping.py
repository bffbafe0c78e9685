"""OTLP -> exporter rows without a server: attribute rendering, id/time validation, metric columns."""

from __future__ import annotations

import base64
import gzip

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from ingest.mapping import metrics_rows, traces_rows
from ingest.otlp import SIGNALS, BadRequest, TooLarge, gunzip, parse
from ingest.values import as_string


def _arr(*values: AnyValue) -> AnyValue:
    return AnyValue(array_value=ArrayValue(values=list(values)))


def _kv(**values: AnyValue) -> AnyValue:
    return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in values.items()]))


# Expected strings are what Go's pcommon.Value.AsString() prints for the same values.
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (AnyValue(string_value="plain"), "plain"),
        (AnyValue(string_value=""), ""),
        (AnyValue(), ""),
        (AnyValue(int_value=-42), "-42"),
        (AnyValue(int_value=2**63 - 1), "9223372036854775807"),
        (AnyValue(bool_value=True), "true"),
        (AnyValue(bool_value=False), "false"),
        (AnyValue(double_value=1.0), "1"),
        (AnyValue(double_value=0.25), "0.25"),
        (AnyValue(double_value=-0.0), "-0"),
        (AnyValue(double_value=1e-7), "1e-7"),
        (AnyValue(double_value=0.00001), "0.00001"),
        (AnyValue(double_value=1e20), "100000000000000000000"),
        (AnyValue(double_value=1e21), "1e+21"),
        (AnyValue(double_value=float("nan")), "json: unsupported value: NaN"),
        (AnyValue(bytes_value=b"\x00\xffhi"), base64.b64encode(b"\x00\xffhi").decode()),
        (_arr(AnyValue(int_value=1), AnyValue(string_value="a"), AnyValue(bool_value=True)), '[1,"a",true]'),
        (_arr(AnyValue(double_value=2.0), AnyValue(), AnyValue(bytes_value=b"\x01")), '[2,null,"AQ=="]'),
        (_kv(b=AnyValue(int_value=2), a=AnyValue(string_value="<&>")), '{"a":"\\u003c\\u0026\\u003e","b":2}'),
        (_kv(outer=_kv(inner=_arr(AnyValue(double_value=0.5)))), '{"outer":{"inner":[0.5]}}'),
        (_arr(AnyValue(double_value=float("inf"))), ""),
        (_arr(), "[]"),
        (_kv(), "{}"),
        (AnyValue(string_value='quote " and \u00e9'), 'quote " and \u00e9'),
        (_arr(AnyValue(string_value='q"\n\u00e9')), '["q\\"\\n\u00e9"]'),
    ],
)
def test_attribute_values_render_like_the_collector(value: AnyValue, expected: str) -> None:
    assert as_string(value) == expected


def _span_request() -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name", value=AnyValue(string_value="cart"))
    spans = rs.scope_spans.add().spans
    good = spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="ok", kind=3)
    good.start_time_unix_nano, good.end_time_unix_nano = 10, 25
    good.status.code = 2
    spans.add(trace_id=b"\x01" * 3, span_id=b"\x02" * 8, start_time_unix_nano=1, end_time_unix_nano=2)
    spans.add(trace_id=b"\x00" * 16, span_id=b"\x02" * 8, start_time_unix_nano=1, end_time_unix_nano=2)
    spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, start_time_unix_nano=5, end_time_unix_nano=4)
    spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, parent_span_id=b"\x03", start_time_unix_nano=1,
              end_time_unix_nano=2)
    spans.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, start_time_unix_nano=1, end_time_unix_nano=2**63)
    return req


def test_spans_with_bad_ids_or_times_are_rejected_and_the_rest_kept() -> None:
    rows = traces_rows(_span_request())
    assert (rows.accepted, rows.rejected) == (1, 5)
    cols = rows.tables["otel_traces"]
    assert cols["TraceId"] == ["01" * 16] and cols["SpanId"] == ["02" * 8] and cols["ParentSpanId"] == [""]
    assert cols["SpanKind"] == ["Client"] and cols["StatusCode"] == ["Error"]
    assert cols["Timestamp"] == [10] and cols["Duration"] == [15] and cols["ServiceName"] == ["cart"]
    message = rows.error_message("spans")
    assert message.startswith("rejected 5 spans: resource 0 span 1: trace_id must be 16 non-zero bytes, got 3")
    assert "invalid times start=5 end=4" in message and "parent_span_id" in message


def test_response_reports_partial_success() -> None:
    signal = SIGNALS["traces"]
    response = signal.response_for(traces_rows(_span_request()))
    assert response.partial_success.rejected_spans == 5
    assert "trace_id must be 16" in response.partial_success.error_message
    assert not signal.response_for(traces_rows(ExportTraceServiceRequest())).HasField("partial_success")


def test_metric_points_of_every_type_go_to_their_tables() -> None:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add(schema_url="https://res")
    rm.resource.attributes.add(key="service.name", value=AnyValue(string_value="db"))
    sm = rm.scope_metrics.add(schema_url="https://scope")
    sm.scope.name, sm.scope.dropped_attributes_count = "meter", 3
    g = sm.metrics.add(name="g", unit="1").gauge.data_points.add(as_int=7, time_unix_nano=5)
    g.exemplars.add(as_double=1.5, time_unix_nano=4, span_id=b"\x05" * 8)
    s = sm.metrics.add(name="s").sum
    s.is_monotonic, s.aggregation_temporality = True, 2
    s.data_points.add(as_double=2.5, time_unix_nano=5)
    h = sm.metrics.add(name="h").histogram
    h.data_points.add(count=3, sum=6.0, bucket_counts=[1, 2], explicit_bounds=[1.0], min=1.0, max=3.0)
    e = sm.metrics.add(name="e").exponential_histogram.data_points.add(count=2, scale=3, zero_count=1)
    e.positive.offset, e.positive.bucket_counts[:] = -2, [1, 0, 1]
    q = sm.metrics.add(name="q").summary.data_points.add(count=4, sum=8.0)
    q.quantile_values.add(quantile=0.5, value=2.0)
    sm.metrics.add(name="empty")  # no data: skipped like the exporter does
    rows = metrics_rows(req)
    assert rows.accepted == 5 and rows.rejected == 0
    gauge = rows.tables["otel_metrics_gauge"]
    assert gauge["Value"] == [7.0] and gauge["ResourceSchemaUrl"] == ["https://res"]
    assert gauge["ScopeSchemaUrl"] == ["https://scope"] and gauge["ScopeDroppedAttrCount"] == [3]
    # a missing exemplar trace id is stored as zeros, like the exporter's fixed-size id arrays
    assert gauge["Exemplars.TraceId"] == [["0" * 32]] and gauge["Exemplars.SpanId"] == [["05" * 8]]
    assert rows.tables["otel_metrics_sum"]["IsMonotonic"] == [True]
    assert rows.tables["otel_metrics_sum"]["AggregationTemporality"] == [2]
    assert rows.tables["otel_metrics_histogram"]["BucketCounts"] == [[1, 2]]
    exp = rows.tables["otel_metrics_exponential_histogram"]
    assert exp["PositiveOffset"] == [-2] and exp["PositiveBucketCounts"] == [[1, 0, 1]] and exp["Scale"] == [3]
    assert rows.tables["otel_metrics_summary"]["ValueAtQuantiles.Quantile"] == [[0.5]]


def test_otlp_json_ids_are_hex_and_bad_hex_rejects_only_that_item() -> None:
    body = (
        b'{"resourceSpans":[{"scopeSpans":[{"spans":['
        b'{"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"eee19b7ec3c1b174","name":"a",'
        b'"startTimeUnixNano":"5","endTimeUnixNano":"9","links":[{"traceId":"00000000000000000000000000000001",'
        b'"spanId":"0000000000000002"}],"unknownField":1},'
        b'{"traceId":"not-hex","spanId":"eee19b7ec3c1b174","startTimeUnixNano":"5","endTimeUnixNano":"9"}]}]}]}'
    )
    rows = traces_rows(parse(SIGNALS["traces"], body, "json"))
    assert rows.accepted == 1 and rows.rejected == 1
    cols = rows.tables["otel_traces"]
    assert cols["TraceId"] == ["5b8efff798038103d269b633813fc60c"]
    assert cols["Links.TraceId"] == [["0" * 31 + "1"]] and cols["Links.SpanId"] == [["0" * 15 + "2"]]


@pytest.mark.parametrize(
    ("body", "kind", "fragment"),
    [
        (b"\x0a\x05abc", "proto", "invalid protobuf ExportTraceServiceRequest"),
        (b"{", "json", "invalid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        (b"[1]", "json", "expected an object, got list"),
        (b'{"resourceSpans": "x"}', "json", "invalid OTLP/JSON ExportTraceServiceRequest"),
        (b"\xff\xfe", "json", "invalid JSON"),
    ],
)
def test_malformed_bodies_get_precise_errors(body: bytes, kind: str, fragment: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse(SIGNALS["traces"], body, kind)
    assert fragment in str(info.value)


def test_gzip_bombs_stop_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * 1_000_000)
    with pytest.raises(TooLarge):
        gunzip(bomb, 10_000)
    assert gunzip(gzip.compress(b"abc"), 10) == b"abc"
    with pytest.raises(BadRequest):
        gunzip(b"not gzip", 10)


def test_otlp_json_logs_and_metric_exemplars_use_hex_ids() -> None:
    logs = (
        b'{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}}]},'
        b'"scopeLogs":[{"scope":{"name":"lg"},"logRecords":[{"timeUnixNano":"7","severityNumber":"SEVERITY_NUMBER_ERROR",'
        b'"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"a1a2a3a4a5a6a7a8","body":{"intValue":"42"},'
        b'"attributes":[{"key":"n","value":{"doubleValue":2.5}}]}]}]}]}'
    )
    rows = SIGNALS["logs"].to_rows(parse(SIGNALS["logs"], logs, "json"))
    cols = rows.tables["otel_logs"]
    assert (cols["TraceId"], cols["SpanId"]) == (["0102030405060708090a0b0c0d0e0f10"], ["a1a2a3a4a5a6a7a8"])
    assert (cols["Timestamp"], cols["SeverityNumber"], cols["Body"]) == ([7], [17], ["42"])
    assert cols["LogAttributes"] == [{"n": "2.5"}] and cols["ServiceName"] == ["api"]
    metrics = (
        b'{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"lat","histogram":{"aggregationTemporality":2,'
        b'"dataPoints":[{"count":"2","sum":3.0,"bucketCounts":["1","1"],"explicitBounds":[1.0],"timeUnixNano":"9",'
        b'"exemplars":[{"asInt":"5","timeUnixNano":"8","traceId":"0102030405060708090a0b0c0d0e0f10",'
        b'"spanId":"a1a2a3a4a5a6a7a8"}]}]}}]}]}]}'
    )
    rows = SIGNALS["metrics"].to_rows(parse(SIGNALS["metrics"], metrics, "json"))
    hist = rows.tables["otel_metrics_histogram"]
    assert hist["Exemplars.TraceId"] == [["0102030405060708090a0b0c0d0e0f10"]]
    assert hist["Exemplars.SpanId"] == [["a1a2a3a4a5a6a7a8"]] and hist["Exemplars.Value"] == [[5.0]]
    assert (hist["Count"], hist["BucketCounts"], hist["AggregationTemporality"]) == ([2], [[1, 1]], [2])
