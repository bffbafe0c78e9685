"""ClickHouse-decoded ingest (the fast path) stores exactly the rows of the Python reference mapper.

Two real IngestServices on one chDB engine, one per decoder, get the same telemetry: official SDK
exporters (gRPC and HTTP) and hand-built requests with every AnyValue type, nested arrays and maps,
events, links, dropped counts, invalid ids and times, invalid UTF-8, awkward doubles, every metric
type with exemplars, over gRPC, HTTP protobuf and OTLP/JSON. Answers must be byte-identical and
every table must hold the same rows, compared field by field.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import math
import random
import struct
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from ingest.mapping import TABLE_COLUMNS
from ingest.service import IngestThread
from otel_ai.context import ServerContext
from otel_ai.settings import Settings
from store import Store
from tests.conftest import new_database
from tests.fixtures.otlp import grpc_export, http_export

NOW = time.time_ns() - 120 * 10**9  # inside the tables' TTL
MAX = 2**63 - 1


def _any(**kw: Any) -> AnyValue:  # noqa: ANN401
    return AnyValue(**kw)


def _arr(*values: AnyValue) -> AnyValue:
    return AnyValue(array_value=ArrayValue(values=list(values)))


def _kvl(**values: AnyValue) -> AnyValue:
    return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in values.items()]))


def _otlp_json(req: ExportTraceServiceRequest | ExportMetricsServiceRequest) -> bytes:
    """OTLP/JSON: protobuf's JSON with trace and span ids (exemplars' too) as hex instead of base64."""

    def fix(node: Any) -> None:  # noqa: ANN401
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                    node[key] = base64.b64decode(value).hex()
                else:
                    fix(value)
        elif isinstance(node, list):
            for item in node:
                fix(item)

    doc = json_format.MessageToDict(req)
    fix(doc)
    return json.dumps(doc).encode()


def _bits_double(rng: random.Random) -> float:
    return struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]


# Values the SQL path renders itself, and values only the Python fallback can (arrays, maps, far doubles).
SIMPLE_VALUES = [
    _any(string_value="text"), _any(string_value=""), _any(string_value="é ü \u2028 <&>"), _any(),
    _any(int_value=-(2**63)), _any(int_value=2**63 - 1), _any(int_value=0), _any(bool_value=True),
    _any(bool_value=False), _any(double_value=0.0), _any(double_value=-0.0), _any(double_value=1.0),
    _any(double_value=0.1), _any(double_value=1e-6), _any(double_value=123456789.125), _any(double_value=1e20),
    _any(double_value=9.999999e20), _any(double_value=-2.5e-5), _any(bytes_value=b""),
    _any(bytes_value=b"\x00\xff\xfe binary"),
]
COMPLEX_VALUES = [
    _arr(_any(int_value=1), _any(string_value="a"), _any(bool_value=True), _any(double_value=2.0), _any()),
    _kvl(b=_any(int_value=2), a=_kvl(inner=_arr(_any(double_value=0.5), _any(bytes_value=b"\x01")))),
    _arr(), _kvl(), _arr(_any(double_value=float("inf"))),
    _any(double_value=9.99e-7), _any(double_value=1e21), _any(double_value=5e-324), _any(double_value=float("nan")),
    _any(double_value=float("-inf")), _any(string_value_strindex=3),
]


def _attrs(target: Any, values: list[AnyValue], prefix: str = "k") -> None:  # noqa: ANN401
    for i, value in enumerate(values):
        target.add(key=f"{prefix}{i}", value=value)


def _span(spans: Any, n: int, **kw: Any) -> Any:  # noqa: ANN401
    fields: dict[str, Any] = dict(
        trace_id=(n + 1).to_bytes(16, "big"), span_id=(n + 1).to_bytes(8, "big"), name=f"op-{n}",
        start_time_unix_nano=NOW + n, end_time_unix_nano=NOW + n + 1000 + n % 7, kind=n % 6,
    )
    fields.update(kw)
    return spans.add(**fields)


def simple_traces(seed: int, spans: int = 40) -> ExportTraceServiceRequest:
    """Only what SQL maps itself: every simple value type, events, links, random in-range doubles."""
    rng = random.Random(seed)
    req = ExportTraceServiceRequest()
    for r in range(2):
        rs = req.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.21.0")
        _attrs(rs.resource.attributes, [_any(string_value=f"svc-{seed}-{r}")], prefix="service.name")
        rs.resource.attributes[0].key = "service.name"
        _attrs(rs.resource.attributes, SIMPLE_VALUES, prefix="res.")
        rs.resource.dropped_attributes_count = 3
        for s in range(2):
            ss = rs.scope_spans.add()
            ss.scope.name, ss.scope.version = f"scope-{s}", "1.2.3" if s else ""
            for i in range(spans // 4):
                n = seed * 100_000 + r * 10_000 + s * 1_000 + i
                span = _span(ss.spans, n, trace_state="k=v" if i % 2 else "",
                             parent_span_id=(n + 7).to_bytes(8, "big") if i % 3 else b"",
                             dropped_attributes_count=i, dropped_events_count=i % 2, dropped_links_count=i % 3,
                             flags=0x301 if i % 2 else 0)
                _attrs(span.attributes, SIMPLE_VALUES)
                magnitude = 10.0 ** rng.randint(-6, 19)  # [1e-6, 1e21): SQL's range
                span.attributes.add(key="rnd", value=_any(double_value=rng.choice((-1, 1)) * rng.uniform(1, 9.99)
                                                          * magnitude))
                span.attributes.add(key="half", value=_any(double_value=(i % 97) * 0.37))
                for e in range(i % 3):
                    ev = span.events.add(time_unix_nano=NOW + n + e, name=f"ev-{e}", dropped_attributes_count=e)
                    _attrs(ev.attributes, SIMPLE_VALUES[e:e + 4])
                for k in range(i % 3):
                    link = span.links.add(trace_id=(n + 99).to_bytes(16, "big") if k else b"",
                                          span_id=(n + 98).to_bytes(8, "big") if k else b"",
                                          trace_state="lk=1" if k else "", flags=k)
                    _attrs(link.attributes, SIMPLE_VALUES[k:k + 3])
                span.status.code = i % 3
                span.status.message = "boom" if span.status.code == 2 else ""
    return req


def complex_traces(seed: int) -> list[ExportTraceServiceRequest]:
    """Requests only the Python fallback renders: nested values, far doubles, duplicates, rejections."""
    out = []
    for j, value in enumerate(COMPLEX_VALUES):  # a nested value in each place an attribute can be
        req = simple_traces(seed * 100 + j, spans=16)
        span = req.resource_spans[0].scope_spans[0].spans[j % 4]
        place = j % 4
        if place == 0:
            span.attributes.add(key="nested", value=value)
        elif place == 1:
            span.events.add(time_unix_nano=NOW, name="e").attributes.add(key="nested", value=value)
        elif place == 2:
            span.links.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8).attributes.add(key="nested", value=value)
        else:
            req.resource_spans[0].resource.attributes.add(key="nested", value=value)
        out.append(req)
    dup = simple_traces(seed * 100 + 50, spans=16)
    dup.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="k0", value=_any(string_value="later wins"))
    dup.resource_spans[1].resource.attributes.add(key="service.name", value=_any(int_value=7))
    out.append(dup)
    bad: list[dict[str, Any]] = [
        dict(trace_id=b"\x01" * 15), dict(trace_id=b"\x00" * 16), dict(span_id=b"\x00" * 8), dict(span_id=b"\x01"),
        dict(parent_span_id=b"\x01\x02\x03"), dict(start_time_unix_nano=0), dict(end_time_unix_nano=NOW - 1),
        dict(end_time_unix_nano=MAX + 1), dict(kind=7), dict(kind=-1),
    ]
    for j, fields in enumerate(bad):
        req = simple_traces(seed * 100 + 60 + j, spans=16)
        spans = req.resource_spans[0].scope_spans[0].spans
        _span(spans, seed * 100_000 + 90_000 + j, **fields)
        out.append(req)
    req = simple_traces(seed * 100 + 80, spans=16)
    req.resource_spans[0].scope_spans[0].spans[1].events.add(time_unix_nano=MAX + 1, name="late")
    req.resource_spans[0].scope_spans[0].spans[2].links.add(trace_id=b"\x01" * 3)
    req.resource_spans[0].scope_spans[0].spans[3].status.code = -1
    out.append(req)
    return out


def logs_request(seed: int, nested: bool) -> ExportLogsServiceRequest:
    """Two resources of two scopes each, so every record must get its own resource's and scope's columns."""
    req = ExportLogsServiceRequest()
    for r in range(2):
        rl = req.resource_logs.add(schema_url=f"https://opentelemetry.io/schemas/1.2{r}.0")
        rl.resource.attributes.add(key="service.name", value=_any(string_value=f"logsvc-{seed}-{r}"))
        _attrs(rl.resource.attributes, SIMPLE_VALUES[r:], prefix="res.")
        for s in range(2):
            sl = rl.scope_logs.add(schema_url=f"https://scope/{r}/{s}")
            sl.scope.name, sl.scope.version = f"logger-{s}", f"0.{r}"
            _attrs(sl.scope.attributes, SIMPLE_VALUES[s:s + 5], prefix=f"sc{r}.")
            bodies = SIMPLE_VALUES + (COMPLEX_VALUES if nested and r == 1 and s == 0 else [])
            for i, body in enumerate(bodies):
                n = seed * 1000 + r * 100 + s * 50 + i
                rec = sl.log_records.add(
                    time_unix_nano=0 if i % 4 == 0 else NOW + n, observed_time_unix_nano=NOW + i,
                    severity_number=(i * 3) % 25 if i != 5 else -3, severity_text="WARN" if i % 2 else "",
                    flags=0x1FF if i % 3 else 1, event_name="evt" if i % 5 == 0 else "",
                    trace_id=(n + 1).to_bytes(16, "big") if i % 2 else b"",
                    span_id=(n + 1).to_bytes(8, "big") if i % 2 else b"",
                )
                rec.body.CopyFrom(body)
                _attrs(rec.attributes, SIMPLE_VALUES[i % 5:i % 5 + 6])
    if nested:
        sl = req.resource_logs[0].scope_logs[1]
        sl.log_records.add(trace_id=b"\x01" * 5, time_unix_nano=NOW)  # rejected
        sl.log_records.add(time_unix_nano=MAX + 1)  # rejected
    return req


def metrics_request() -> ExportMetricsServiceRequest:
    """Every metric type with exemplars and attributes of every type, from the SDK."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        resource=Resource.create({"service.name": "metered", "n": 3, "f": 0.5, "l": [1, 2]}), metric_readers=[reader],
        views=[View(instrument_name="exp.*", aggregation=ExponentialBucketHistogramAggregation())],
    )
    meter = provider.get_meter("m", "1.0")
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("with-exemplar"):
        meter.create_counter("c").add(5, {"s": "x", "b": True})
        meter.create_up_down_counter("ud").add(-2.5, {"l": ["a", "b"]})
        meter.create_histogram("h", unit="ms").record(12.5, {"d": 1e-7})
        meter.create_histogram("exp.h").record(3.0, {"i": 4})
        meter.create_gauge("g").set(1.25, {"m": "z"})
        meter.create_observable_gauge("og", callbacks=[lambda _o: []])
    from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics

    req = encode_metrics(reader.get_metrics_data())
    summary = req.resource_metrics[0].scope_metrics[0].metrics.add(name="summary", description="hand-made")
    point = summary.summary.data_points.add(time_unix_nano=NOW, start_time_unix_nano=NOW - 10, count=3, sum=6.5)
    point.quantile_values.add(quantile=0.5, value=2.0)
    point.attributes.add(key="nested", value=_kvl(a=_any(int_value=1)))
    return req


def sdk_send(endpoints: list[IngestThread]) -> None:
    """Spans and logs from the official SDK exporters, gRPC to one half and HTTP to the other, to both services."""
    linked = SpanContext(trace_id=0xABC, span_id=0xDEF, is_remote=True, trace_flags=TraceFlags(1))
    for kind in ("grpc", "http"):
        resource = Resource.create({"service.name": f"sdk-{kind}", "list": ["a", "b"], "num": 2.5})
        tp = TracerProvider(resource=resource)
        lp = LoggerProvider(resource=resource)
        for ep in endpoints:
            span_exp = (GrpcSpanExporter(endpoint=ep.grpc_endpoint, insecure=True) if kind == "grpc"
                        else HttpSpanExporter(endpoint=f"{ep.http_url}/v1/traces"))
            log_exp = (GrpcLogExporter(endpoint=ep.grpc_endpoint, insecure=True) if kind == "grpc"
                       else HttpLogExporter(endpoint=f"{ep.http_url}/v1/logs"))
            tp.add_span_processor(SimpleSpanProcessor(span_exp))
            lp.add_log_record_processor(SimpleLogRecordProcessor(log_exp))
        tracer = tp.get_tracer("shop.checkout", "2.1.0")
        root = tracer.start_span("POST /checkout", kind=SpanKind.SERVER, start_time=NOW,
                                 attributes={"s": "t", "b": True, "i": -7, "d": 0.5, "ls": ["a"], "ld": [1.5, 2.0]},
                                 links=[Link(linked, {"link.kind": "follows"})])
        root.add_event("cart.loaded", {"items": 3}, timestamp=NOW + 1_000)
        root.record_exception(ValueError("bad <input> & more"))
        root.set_status(Status(StatusCode.ERROR, "payment declined"))
        child = tracer.start_span("SELECT cart", context=trace.set_span_in_context(root), kind=SpanKind.CLIENT,
                                  start_time=NOW + 2_000, attributes={"db.rows": 3})
        child.end(end_time=NOW + 5_000)
        root.end(end_time=NOW + 9_000)
        logger = lp.get_logger("app", "1.0")
        from opentelemetry._logs import LogRecord

        with tracer.start_as_current_span("logged"):
            logger.emit(LogRecord(timestamp=NOW + 10, body="plain line", severity_text="INFO", severity_number=9,
                                  attributes={"user": "u1", "n": 3}))
            logger.emit(LogRecord(timestamp=NOW + 11, body={"structured": [1, "x"]}, severity_number=17))
        tp.shutdown()
        lp.shutdown()


@pytest.fixture
def pair(root_store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple]:
    """(python ingest, clickhouse ingest, python store, clickhouse store) on one engine."""
    stores, threads = [], []
    for decoder in ("python", "clickhouse"):
        monkeypatch.setenv("OTEL_AI_INGEST_DECODER", decoder)
        monkeypatch.setenv("OTEL_AI_INGEST_NATIVE_MIN_ITEMS", "0")  # ClickHouse maps even one-span requests
        store = new_database(root_store)
        settings = Settings(clickhouse_url=f"chdb://{store.url.path}", database=store.database,
                            otlp_grpc_port=0, otlp_http_port=0)
        stores.append(store)
        threads.append(IngestThread(ServerContext(settings=settings, store=store)).start())
    try:
        yield threads[0], threads[1], stores[0], stores[1]
    finally:
        for t in threads:
            t.stop()
        for s in stores:
            s.close()


def _normal(value: Any) -> Any:  # noqa: ANN401
    """A comparable form of a stored value (maps as items in stored order; NaN equal to itself)."""
    if isinstance(value, dict):
        return tuple((k, _normal(v)) for k, v in value.items())  # in stored order
    if isinstance(value, (list, tuple)):
        return tuple(_normal(v) for v in value)
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value


def _table_rows(store: Store, table: str) -> list[tuple]:
    result = store.query(f"SELECT * FROM {table}")
    return sorted((tuple(_normal(v) for v in row) for row in result.rows), key=repr)


def _assert_same_tables(py_store: Store, ch_store: Store, tables: Any) -> int:  # noqa: ANN401
    """Every table holds the same rows in both stores, compared field by field; returns the row count."""
    total = 0
    for table in tables:
        expected, actual = _table_rows(py_store, table), _table_rows(ch_store, table)
        assert len(expected) == len(actual), table
        columns = py_store.query(f"SELECT * FROM {table} LIMIT 0").columns
        for e, a in zip(expected, actual, strict=True):
            for name, ev, av in zip(columns, e, a, strict=True):
                assert ev == av, f"{table}.{name}: python {ev!r} != clickhouse {av!r}"
        total += len(expected)
    return total


def test_clickhouse_decoding_stores_the_reference_rows_field_by_field(pair: tuple) -> None:
    py, ch, py_store, ch_store = pair
    assert py.service.decoder == "python" and ch.service.decoder == "clickhouse"
    channels = [grpc.insecure_channel(t.grpc_endpoint) for t in (py, ch)]
    simple = [simple_traces(seed) for seed in range(1, 9)]
    complex_ = complex_traces(9)
    answers: list[tuple[Any, Any]] = []

    def both(signal: str, body: bytes, via: str) -> None:
        got = []
        for thread, channel in zip((py, ch), channels, strict=True):
            if via == "grpc":
                a = grpc_export(channel, signal, body)
                got.append((a.code, a.details, a.body))
            else:
                ctype = "application/json" if via == "json" else "application/x-protobuf"
                r = http_export(thread.http_url, signal, body, content_type=ctype)
                got.append((r.status_code, r.content))
        answers.append((signal, via, got))
        assert got[0] == got[1], f"{signal} via {via}: python {got[0]!r} != clickhouse {got[1]!r}"

    for i, req in enumerate(simple + complex_):
        via = ("grpc", "http", "json")[i % 3]
        body = _otlp_json(req) if via == "json" else req.SerializeToString()
        both("traces", body, via)
    for seed, nested in ((1, False), (2, True), (3, False)):
        both("logs", logs_request(seed, nested).SerializeToString(), "grpc" if seed != 3 else "http")
    both("metrics", metrics_request().SerializeToString(), "grpc")
    invalid_utf8 = simple_traces(99, spans=4).SerializeToString().replace(b"op-", b"o\xff-")
    both("traces", invalid_utf8, "grpc")
    both("traces", invalid_utf8, "http")
    assert answers[-1][2][0][0] == 400  # malformed: refused the same way by both
    sdk_send([py, ch])

    # some requests were rejected in part, with the same reasons (compared above, byte for byte)
    assert any(b"rejected" in str(got[0]).encode() for _, _, got in answers)
    _assert_same_tables(py_store, ch_store, TABLE_COLUMNS)
    assert len(_table_rows(py_store, "otel_traces")) > 300
    # the fast path really ran, and the fallback too
    stats = ch.service.stats()
    assert stats["decoded_by_clickhouse"] >= len(simple) + 2  # the simple requests (JSON ones too) and logs
    assert stats["decoded_by_python"] >= len(complex_)
    assert py.service.stats()["decoded_by_clickhouse"] == 0
    for c in channels:
        c.close()


def test_random_doubles_render_like_go(pair: tuple) -> None:
    """Doubles from random bit patterns and magnitudes: in range SQL renders them, else Python; same text."""
    py, ch, py_store, ch_store = pair
    rng = random.Random(7)
    values = [_bits_double(rng) for _ in range(300)] + [rng.uniform(-1, 1) * 10.0 ** rng.randint(-8, 23)
                                                        for _ in range(300)]
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    for i in range(0, len(values), 10):
        span = _span(spans, i)
        for j, v in enumerate(values[i:i + 10]):
            span.attributes.add(key=f"d{j}", value=_any(double_value=v))
    body = req.SerializeToString()
    in_range = simple_traces(5, spans=4)  # and one request that is all in range
    for ch_or_py in (py, ch):
        with grpc.insecure_channel(ch_or_py.grpc_endpoint) as channel:
            assert grpc_export(channel, "traces", body).code == grpc.StatusCode.OK
            assert grpc_export(channel, "traces", in_range.SerializeToString()).code == grpc.StatusCode.OK
    assert _table_rows(py_store, "otel_traces") == _table_rows(ch_store, "otel_traces")
    assert ch.service.stats()["decoded_by_clickhouse"] >= 1


@contextlib.contextmanager
def _one_group_both_ways(root_store: Store, signal: str, requests: list[Any],
                         counts: Callable[[Any], tuple[int, frozenset[str]]]) -> Iterator[SimpleNamespace]:
    """`requests` as one group of raw requests through a writer with the ClickHouse decoder (`fast`), and as
    the reference's rows through a plain writer (`ref`): both writers closed, their answers and the stores."""
    from ingest.native import NativeDecoder
    from ingest.otlp import SIGNALS, to_rows
    from ingest.writer import BatchWriter, RawRequest

    bodies = [r.SerializeToString() for r in requests]
    ref, fast = new_database(root_store), new_database(root_store)
    try:
        remaining = [len(bodies)]
        writer = BatchWriter(fast.clone(), max_rows=1_000_000, max_wait=30, expected=lambda: remaining[0],
                             native=NativeDecoder())
        futures = []
        for body, req in zip(bodies, requests, strict=True):
            items, tables = counts(req)
            fallback = functools.partial(to_rows, SIGNALS[signal], body, "proto")
            futures.append(writer.submit_raw(RawRequest(signal, body, items, fallback, tables)))
            remaining[0] -= 1
            writer.wake()
        results = [f.result(60) for f in futures]
        writer.close()
        ref_writer = BatchWriter(ref.clone(), max_rows=1_000_000, max_wait=0)
        expected = [to_rows(SIGNALS[signal], b, "proto") for b in bodies]
        for rows in expected:
            ref_writer.submit(rows).result(60)
        ref_writer.close()
        yield SimpleNamespace(writer=writer, results=results, expected=expected, ref=ref, fast=fast)
    finally:
        ref.close()
        fast.close()


def test_a_group_mixing_fast_and_fallback_requests_stores_each_once(root_store: Store) -> None:
    """One insert group with requests SQL maps and requests it cannot: the insert refuses the whole group
    before writing, the others go in by SQL, the rest by Python; same rows and answers as the reference."""
    requests = [simple_traces(200), *complex_traces(21)[:3], simple_traces(201), complex_traces(22)[-1]]
    spans = lambda req: (sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans), frozenset())  # noqa: E731
    with _one_group_both_ways(root_store, "traces", requests, spans) as run:
        # one group: its SQL insert (after the refused attempt) and one columnar insert of the fallback rows
        assert run.writer.inserts == 2 and run.writer.native_requests == 2 and run.writer.fallback_requests == 4
        got = [(r.accepted, r.rejected, r.error_message("spans")) for r in run.results]
        assert got == [(r.accepted, r.rejected, r.error_message("spans")) for r in run.expected]
        assert _table_rows(run.ref, "otel_traces") == _table_rows(run.fast, "otel_traces")
        assert len(_table_rows(run.fast, "otel_traces")) == sum(r.accepted for r in run.expected)


# -- metrics ---------------------------------------------------------------------------------------

SPECIAL_DOUBLES = [float("nan"), float("inf"), float("-inf"), -0.0, 5e-324, 1.7976931348623157e308]


def _exemplar(target: Any, n: int, trace: bool, attrs: list[AnyValue], value: float | int | None) -> None:  # noqa: ANN401
    ex = target.add(time_unix_nano=NOW + n)
    if trace:
        ex.trace_id, ex.span_id = (n + 1).to_bytes(16, "big"), (n + 2).to_bytes(8, "big")
    if isinstance(value, float):
        ex.as_double = value
    elif isinstance(value, int):
        ex.as_int = value
    _attrs(ex.filtered_attributes, attrs, prefix="fa")


def simple_metrics(seed: int) -> ExportMetricsServiceRequest:
    """Every metric type, only what SQL maps itself: int and double values (NaN/inf too), exemplars
    with and without ids and with attributes, empty attribute values, unset oneofs, empty metrics."""
    req = ExportMetricsServiceRequest()
    for r in range(2):
        rm = req.resource_metrics.add(schema_url=f"https://opentelemetry.io/schemas/1.{r}")
        rm.resource.attributes.add(key="service.name", value=_any(string_value=f"metsvc-{seed}-{r}"))
        _attrs(rm.resource.attributes, SIMPLE_VALUES[r:], prefix="res.")
        for s in range(2):
            sm = rm.scope_metrics.add(schema_url=f"https://scope/{seed}/{s}" if s else "")
            sm.scope.name, sm.scope.version = f"meter-{s}", f"{r}.{s}" if s else ""
            sm.scope.dropped_attributes_count = s * 3
            _attrs(sm.scope.attributes, SIMPLE_VALUES[s:s + 4], prefix="sc.")
            base = seed * 10_000 + r * 1_000 + s * 100
            sm.metrics.add(name="no-data")  # no oneof set: no rows
            sm.metrics.add(name="no-points").gauge.SetInParent()
            for kind in ("gauge", "sum"):
                metric = sm.metrics.add(name=f"{kind}-{r}{s}", description=f"a {kind}", unit="By")
                data = getattr(metric, kind)
                if kind == "sum":
                    data.aggregation_temporality = 1 + (r + s) % 2
                    data.is_monotonic = bool(s)
                values: list[float | int | None] = [1, -(2**63), 2**63 - 1, 2**53 + 1, 0.5, -2.25, None,
                                                    *SPECIAL_DOUBLES]
                for i, value in enumerate(values):
                    n = base + i
                    dp = data.data_points.add(start_time_unix_nano=NOW - 1000 if i % 3 else 0,
                                              time_unix_nano=NOW + n, flags=i % 2)
                    if isinstance(value, float):
                        dp.as_double = value
                    elif isinstance(value, int):
                        dp.as_int = value
                    _attrs(dp.attributes, SIMPLE_VALUES[i % 7:i % 7 + 5])
                    for e in range(i % 3):
                        _exemplar(dp.exemplars, n + e, trace=bool(e), attrs=SIMPLE_VALUES[e:e + 2 * e],
                                  value=(None, 7, -1.5, float("nan"))[(i + e) % 4])
            hist = sm.metrics.add(name=f"hist-{r}{s}", unit="ms").histogram
            hist.aggregation_temporality = (2, 9)[s]  # an unknown value is stored as its number
            for i in range(5):
                n = base + 20 + i
                dp = hist.data_points.add(start_time_unix_nano=NOW - 5000, time_unix_nano=NOW + n, count=i * 3,
                                          bucket_counts=[i, 0, 2 * i] if i else [],
                                          explicit_bounds=[0.5, SPECIAL_DOUBLES[i]] if i else [], flags=i % 2)
                if i % 2:
                    dp.sum, dp.min, dp.max = 1.5 * i, SPECIAL_DOUBLES[i], -0.125
                _attrs(dp.attributes, SIMPLE_VALUES[i:i + 3])
                for e in range(i % 3):
                    _exemplar(dp.exemplars, n + e, trace=bool(i % 2), attrs=SIMPLE_VALUES[i:i + 2], value=2.5 * e)
            exp = sm.metrics.add(name=f"exp-{r}{s}").exponential_histogram
            exp.aggregation_temporality = 1
            for i in range(4):
                n = base + 40 + i
                dp = exp.data_points.add(start_time_unix_nano=NOW - 5000, time_unix_nano=NOW + n, count=2**64 - 1 - i,
                                         scale=(-10, -1, 0, 20)[i], zero_count=i * 7, zero_threshold=0.001 * i,
                                         flags=i % 2)
                if i:
                    dp.positive.offset, dp.negative.offset = (-(2**31), -3, 5, 2**31 - 1)[i], -i
                    dp.positive.bucket_counts.extend([1, 2**64 - 1, 0][:i])
                    dp.negative.bucket_counts.extend([9] * i)
                if i != 2:
                    dp.sum, dp.min, dp.max = SPECIAL_DOUBLES[i], -1.0, 1e300
                _attrs(dp.attributes, SIMPLE_VALUES[i + 3:i + 6])
                if i % 2:
                    _exemplar(dp.exemplars, n, trace=i == 1, attrs=SIMPLE_VALUES[:3], value=-(2**62))
            summary = sm.metrics.add(name=f"summary-{r}{s}", description="quantiles").summary
            for i in range(3):
                dp = summary.data_points.add(start_time_unix_nano=NOW - 9, time_unix_nano=NOW + base + 60 + i,
                                             count=i, sum=SPECIAL_DOUBLES[i] if i else 0.0, flags=i)
                for q in range(i + 1):
                    dp.quantile_values.add(quantile=q / (i + 1), value=SPECIAL_DOUBLES[q] if q else 4.5)
                _attrs(dp.attributes, SIMPLE_VALUES[i:i + 4])
    return req


def complex_metrics(seed: int) -> list[ExportMetricsServiceRequest]:
    """Metrics requests only the Python fallback renders: nested or far-double attributes in each place an
    attribute can be, duplicate keys, and points the reference rejects (bad exemplar ids, times)."""
    out = []
    places = ("resource", "scope", "gauge", "sum", "histogram", "exponential_histogram", "summary", "exemplar")
    for j, value in enumerate(COMPLEX_VALUES):
        req = simple_metrics(seed * 100 + j)
        place = places[j % len(places)]
        sm = req.resource_metrics[1].scope_metrics[j % 2]
        if place == "resource":
            req.resource_metrics[0].resource.attributes.add(key="nested", value=value)
        elif place == "scope":
            sm.scope.attributes.add(key="nested", value=value)
        elif place == "exemplar":
            sm.metrics[2].gauge.data_points[1].exemplars[0].filtered_attributes.add(key="nested", value=value)
        else:
            metric = next(m for m in sm.metrics if m.WhichOneof("data") == place and getattr(m, place).data_points)
            getattr(metric, place).data_points[-1].attributes.add(key="nested", value=value)
        out.append(req)
    dup = simple_metrics(seed * 100 + 50)
    dup.resource_metrics[0].scope_metrics[0].metrics[3].sum.data_points[0].attributes.add(
        key="k0", value=_any(string_value="later wins"))
    out.append(dup)
    rejected: list[Any] = [
        lambda dp: setattr(dp, "time_unix_nano", MAX + 1),
        lambda dp: setattr(dp, "start_time_unix_nano", MAX + 1),
        lambda dp: dp.exemplars.add(time_unix_nano=NOW, trace_id=b"\x01" * 15),
        lambda dp: dp.exemplars.add(time_unix_nano=NOW, span_id=b"\x01" * 3),
        lambda dp: dp.exemplars.add(time_unix_nano=MAX + 1),
    ]
    for j, spoil in enumerate(rejected):
        req = simple_metrics(seed * 100 + 60 + j)
        metric = req.resource_metrics[0].scope_metrics[1].metrics[2 + j % 4]  # gauge, sum, histogram, exp
        spoil(getattr(metric, metric.WhichOneof("data")).data_points[1])
        out.append(req)
    summary = simple_metrics(seed * 100 + 70)
    summary.resource_metrics[0].scope_metrics[0].metrics[-1].summary.data_points[0].time_unix_nano = MAX + 1
    out.append(summary)
    return out


def sdk_metrics() -> Any:  # noqa: ANN401
    """MetricsData from the SDK: every instrument, int and double, exemplars with trace ids, simple attributes."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        resource=Resource.create({"service.name": "sdk-metered", "n": 3, "f": 0.5, "b": False}),
        metric_readers=[reader],
        views=[View(instrument_name="exp.*", aggregation=ExponentialBucketHistogramAggregation())],
    )
    meter = provider.get_meter("sdk.meter", "2.0")
    tracer = TracerProvider().get_tracer("t")
    counter, updown = meter.create_counter("requests"), meter.create_up_down_counter("inflight")
    hist, exp, gauge = meter.create_histogram("latency", unit="ms"), meter.create_histogram("exp.size"), \
        meter.create_gauge("temperature")
    meter.create_observable_counter("cpu", callbacks=[lambda _o: []])
    for i in range(20):
        with tracer.start_as_current_span(f"op-{i}"):
            attrs = {"route": f"/r{i % 3}", "ok": i % 2 == 0, "code": 200 + i % 2, "ratio": 0.25 * (i % 4), "e": ""}
            counter.add(i, attrs)
            updown.add(-1.5 * i, attrs)
            hist.record(12.5 * i, attrs)
            exp.record(3 * i + 0.5, attrs)
            gauge.set(i if i % 2 else 1.25 * i, attrs)
    return reader.get_metrics_data()


METRIC_TABLES = [t for t in TABLE_COLUMNS if t.startswith("otel_metrics_")]


def test_clickhouse_decoding_stores_the_reference_metric_rows_field_by_field(pair: tuple) -> None:
    """Metrics of every type, hand-built and from the SDK's own exporters, over gRPC, HTTP and OTLP/JSON."""
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
    from opentelemetry.sdk.metrics.export import MetricExportResult

    py, ch, py_store, ch_store = pair
    channels = [grpc.insecure_channel(t.grpc_endpoint) for t in (py, ch)]
    simple = [simple_metrics(seed) for seed in range(1, 5)]
    complex_ = complex_metrics(5)
    answers = []
    for i, req in enumerate(simple + complex_):
        via = ("grpc", "http", "json")[i % 3]
        body = _otlp_json(req) if via == "json" else req.SerializeToString()
        got = []
        for thread, channel in zip((py, ch), channels, strict=True):
            if via == "grpc":
                a = grpc_export(channel, "metrics", body)
                got.append((a.code, a.details, a.body))
            else:
                ctype = "application/json" if via == "json" else "application/x-protobuf"
                r = http_export(thread.http_url, "metrics", body, content_type=ctype)
                got.append((r.status_code, r.content))
        assert got[0] == got[1], f"request {i} via {via}: python {got[0]!r} != clickhouse {got[1]!r}"
        answers.append(got[0])
        if i < len(simple):  # accepted whole
            assert got[0][0] in (grpc.StatusCode.OK, 200) and b"rejected" not in repr(got[0]).encode(), got[0]
    assert sum(b"rejected" in repr(a).encode() for a in answers) >= 6  # the spoilt points, same reasons
    invalid_utf8 = simple_metrics(98).SerializeToString().replace(b"gauge-", b"g\xffuge-")
    for channel, thread in zip(channels, (py, ch), strict=True):
        assert grpc_export(channel, "metrics", invalid_utf8).code == grpc.StatusCode.INVALID_ARGUMENT
        assert http_export(thread.http_url, "metrics", invalid_utf8).status_code == 400
    data = sdk_metrics()
    for thread in (py, ch):
        for exporter in (GrpcMetricExporter(endpoint=thread.grpc_endpoint, insecure=True),
                         HttpMetricExporter(endpoint=f"{thread.http_url}/v1/metrics")):
            assert exporter.export(data) == MetricExportResult.SUCCESS
            exporter.shutdown()

    rows = _assert_same_tables(py_store, ch_store, METRIC_TABLES)
    for table in METRIC_TABLES:  # every type stored, NaN and infinities among the values
        assert _table_rows(ch_store, table), table
    assert ch_store.query("SELECT countIf(isNaN(Value)), countIf(isInfinite(Value)), "
                          "countIf(Exemplars.TraceId[1] = repeat('0', 32)), countIf(length(Exemplars.Value) > 0) "
                          "FROM otel_metrics_gauge").rows[0] >= (1, 1, 1, 1)
    assert rows > 1000
    stats = ch.service.stats()
    # the simple and the SDK's (gRPC and HTTP) requests by SQL; every other one by the Python fallback
    assert (stats["decoded_by_clickhouse"], stats["decoded_by_python"]) == (len(simple) + 2, len(complex_))
    assert py.service.stats()["decoded_by_clickhouse"] == 0
    for c in channels:
        c.close()


def test_a_metrics_group_mixing_fast_and_fallback_requests_stores_each_once(root_store: Store) -> None:
    """One group of metrics requests, some SQL maps and some it cannot, over all five tables: each request
    stored once (by SQL or by Python), with the reference's counts, reasons and rows."""
    from ingest.service import _metric_points

    complex_ = complex_metrics(31)
    requests = [simple_metrics(300), complex_[0], complex_[3], simple_metrics(301), complex_[-2], simple_metrics(302)]
    assert all(len(_metric_points(req)[1]) == 5 for req in requests)
    with _one_group_both_ways(root_store, "metrics", requests, _metric_points) as run:
        assert run.writer.native_requests == 3 and run.writer.fallback_requests == 3
        got = [(r.accepted, r.rejected, r.error_message("data points")) for r in run.results]
        assert got == [(r.accepted, r.rejected, r.error_message("data points")) for r in run.expected]
        assert any(r.rejected for r in run.expected)
        assert _assert_same_tables(run.ref, run.fast, METRIC_TABLES) == sum(r.accepted for r in run.expected)


def test_metrics_group_inserts_only_into_the_tables_it_has_points_for(root_store: Store) -> None:
    """A group of gauges and sums costs two inserts, not five; the other tables stay empty."""
    from ingest.native import NativeDecoder
    from ingest.otlp import SIGNALS, to_rows
    from ingest.service import _metric_points
    from ingest.writer import BatchWriter, RawRequest

    req = simple_metrics(400)
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            keep = [m for m in sm.metrics if m.WhichOneof("data") in ("gauge", "sum", None)]
            del sm.metrics[:]
            sm.metrics.extend(keep)
    body = req.SerializeToString()
    items, tables = _metric_points(req)
    assert tables == {"otel_metrics_gauge", "otel_metrics_sum"}
    fast = new_database(root_store)
    try:
        writer = BatchWriter(fast.clone(), max_wait=0, native=NativeDecoder())
        fallback = functools.partial(to_rows, SIGNALS["metrics"], body, "proto")
        rows = writer.submit_raw(RawRequest("metrics", body, items, fallback, tables)).result(60)
        writer.close()
        assert (rows.accepted, writer.native_requests, writer.inserts) == (items, 1, 2)
        counts = {t: fast.query(f"SELECT count() FROM {t}").rows[0][0] for t in METRIC_TABLES}
        assert counts["otel_metrics_gauge"] + counts["otel_metrics_sum"] == items
        assert sum(counts.values()) == items
    finally:
        fast.close()


def test_the_native_threshold_counts_per_insert_query(root_store: Store) -> None:
    """`native_min_items` applies per table a group needs: with the same number of points, gauges alone
    (one insert query) go to ClickHouse, gauges and sums (two) to Python until they reach twice as many."""
    from ingest.native import NativeDecoder
    from ingest.otlp import SIGNALS, to_rows
    from ingest.service import _metric_points
    from ingest.writer import BatchWriter, RawRequest

    def only(kinds: tuple[str, ...], copies: int) -> ExportMetricsServiceRequest:
        req = simple_metrics(410)
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                keep = [m for m in sm.metrics if m.WhichOneof("data") in kinds]
                del sm.metrics[:]
                sm.metrics.extend(keep)
        req.resource_metrics.extend(list(req.resource_metrics) * (copies - 1))
        return req

    gauges, mixed, mixed_twice = only(("gauge",), 2), only(("gauge", "sum"), 1), only(("gauge", "sum"), 2)
    (n_gauges, t_gauges), (n_mixed, t_mixed) = _metric_points(gauges), _metric_points(mixed)
    assert n_gauges == n_mixed and (len(t_gauges), len(t_mixed)) == (1, 2)
    fast = new_database(root_store)
    try:
        writer = BatchWriter(fast.clone(), max_wait=0, native=NativeDecoder(), native_min_items=n_mixed // 2 + 1)
        paths = []
        for req in (gauges, mixed, mixed_twice):
            body = req.SerializeToString()
            items, tables = _metric_points(req)
            fallback = functools.partial(to_rows, SIGNALS["metrics"], body, "proto")
            before = writer.native_requests, writer.fallback_requests
            rows = writer.submit_raw(RawRequest("metrics", body, items, fallback, tables)).result(60)
            assert rows.accepted == items
            paths.append("clickhouse" if writer.native_requests > before[0] else
                         "python" if writer.fallback_requests > before[1] else "?")
        writer.close()
        assert paths == ["clickhouse", "python", "clickhouse"]
        stored = sum(fast.query(f"SELECT count() FROM {t}").rows[0][0] for t in METRIC_TABLES)
        assert stored == n_gauges + n_mixed + 2 * n_mixed
    finally:
        fast.close()


def test_a_metric_with_its_type_twice_on_the_wire_sends_its_group_to_python(root_store: Store) -> None:
    """A Metric carrying two `data` fields (protobuf keeps the last; ClickHouse refuses the oneof): the whole
    group is mapped by the reference instead, each request stored once, as the reference stores it."""
    from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

    from ingest.native import NativeDecoder, _varint
    from ingest.otlp import SIGNALS, to_rows
    from ingest.service import _metric_points
    from ingest.writer import BatchWriter, RawRequest

    gauge, total = Metric(name="twice"), Metric(name="twice")
    gauge.gauge.data_points.add(time_unix_nano=NOW, as_double=1.0)
    total.sum.data_points.add(time_unix_nano=NOW, as_int=2)
    metric = gauge.SerializeToString() + total.SerializeToString()  # the sum wins
    scope = b"\x12" + _varint(len(metric)) + metric  # ScopeMetrics.metrics
    resource = b"\x12" + _varint(len(scope)) + scope  # ResourceMetrics.scope_metrics
    twice = b"\x0a" + _varint(len(resource)) + resource  # ExportMetricsServiceRequest.resource_metrics
    assert ExportMetricsServiceRequest.FromString(twice).resource_metrics[0].scope_metrics[0].metrics[0].HasField("sum")
    bodies = [simple_metrics(500).SerializeToString(), twice, simple_metrics(501).SerializeToString()]
    ref, fast = new_database(root_store), new_database(root_store)
    try:
        remaining = [len(bodies)]
        writer = BatchWriter(fast.clone(), max_rows=1_000_000, max_wait=30, expected=lambda: remaining[0],
                             native=NativeDecoder())
        futures = []
        for body in bodies:
            items, tables = _metric_points(ExportMetricsServiceRequest.FromString(body))
            fallback = functools.partial(to_rows, SIGNALS["metrics"], body, "proto")
            futures.append(writer.submit_raw(RawRequest("metrics", body, items, fallback, tables)))
            remaining[0] -= 1
            writer.wake()
        results = [f.result(60) for f in futures]
        assert (writer.native_requests, writer.fallback_requests) == (0, 3)
        writer.close()
        ref_writer = BatchWriter(ref.clone(), max_rows=1_000_000, max_wait=0)
        expected = [to_rows(SIGNALS["metrics"], b, "proto") for b in bodies]
        for rows in expected:
            ref_writer.submit(rows).result(60)
        ref_writer.close()
        assert [(r.accepted, r.rejected) for r in results] == [(r.accepted, r.rejected) for r in expected]
        assert _assert_same_tables(ref, fast, METRIC_TABLES) == sum(r.accepted for r in expected)
        assert fast.query("SELECT Value FROM otel_metrics_sum WHERE MetricName = 'twice'").rows == [(2.0,)]
        assert fast.query("SELECT count() FROM otel_metrics_gauge WHERE MetricName = 'twice'").rows == [(0,)]
    finally:
        ref.close()
        fast.close()
