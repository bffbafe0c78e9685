"""Malformed input fuzzing against a real serve: truncated and random protobuf, bit flips, wrong JSON
types, invalid UTF-8, huge attribute values and deep nesting. Every request gets an answer with a
documented status, and the server keeps serving."""

from __future__ import annotations

import json
import random

import grpc
import httpx
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.fixtures.otlp import grpc_export, http_export, spans_request

HTTP_OK = {200, 400, 413}
GRPC_OK = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _deep_logs(depth: int) -> bytes:
    """An ExportLogsServiceRequest whose log body nests `depth` kvlists, encoded by hand (the client-side
    protobuf runtime refuses to build what the server must refuse to parse)."""
    value = _field(1, b"leaf")  # AnyValue.string_value
    for _ in range(depth):  # AnyValue.kvlist_value -> KeyValueList.values -> KeyValue{key, value}
        value = _field(6, _field(1, _field(1, b"k") + _field(2, value)))
    record = _field(5, value)  # LogRecord.body
    return _field(1, _field(2, _field(2, record)))  # resource_logs -> scope_logs -> log_records


def _cases(rng: random.Random) -> list[tuple[str, str, bytes, str]]:
    """(transport, signal, body, content kind) tuples."""
    valid = spans_request("fuzz", range(20)).SerializeToString()
    cases: list[tuple[str, str, bytes, str]] = []
    for _ in range(40):
        cut = rng.randrange(1, len(valid))
        cases.append(("any", "traces", valid[:cut], "proto"))
        flipped = bytearray(valid)
        for _ in range(rng.randrange(1, 6)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        cases.append(("any", "traces", bytes(flipped), "proto"))
        cases.append(("any", rng.choice(["traces", "logs", "metrics"]), rng.randbytes(rng.randrange(1, 400)), "proto"))
    bad_utf8 = spans_request("fuzz", range(1)).SerializeToString().replace(b"op0", b"\xff\xfe\xfd")
    cases.append(("any", "traces", bad_utf8, "proto"))
    huge = spans_request("fuzz-huge", range(1))
    huge.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="huge").value.string_value = "h" * 2_000_000
    cases.append(("any", "traces", huge.SerializeToString(), "proto"))
    ok_logs = ExportLogsServiceRequest.FromString(_deep_logs(20))
    assert ok_logs.resource_logs[0].scope_logs[0].log_records[0].body.kvlist_value.values[0].key == "k"
    cases.append(("grpc", "logs", _deep_logs(20), "proto"))
    cases.append(("http", "logs", _deep_logs(20), "proto"))
    cases.append(("grpc", "logs", _deep_logs(3_000), "proto"))
    cases.append(("http", "logs", _deep_logs(3_000), "proto"))
    json_cases = [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"resourceSpans":' + b'{"a":' * 5_000 + b"1" + b"}" * 5_001,
        json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5, "kind": "nope"}]}]}]}).encode(),
        json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "-1"}]}]}]}).encode(),
        json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"gauge": {"dataPoints": [
            {"asDouble": "NaN", "timeUnixNano": "18446744073709551615"}]}}]}]}]}).encode(),
        json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 7, "spanId": None}]}]}]}).encode(),
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "\xff\xfe"}]}]}]}',
        b"null",
        b"",
    ]
    cases += [("http", rng.choice(["traces", "logs", "metrics"]), body, "json") for body in json_cases]
    return cases


def test_fuzzed_requests_are_all_answered_and_the_server_keeps_serving(server) -> None:
    rng = random.Random(20261128)
    channel = grpc.insecure_channel(server.otlp_grpc_endpoint,
                                    options=[("grpc.max_send_message_length", 64 * 1024 * 1024)])
    seen_http: set[int] = set()
    seen_grpc: set[grpc.StatusCode] = set()
    for i, (transport, signal, body, kind) in enumerate(_cases(rng)):
        use_grpc = transport == "grpc" or (transport == "any" and i % 2 == 0)
        if use_grpc:
            answer = grpc_export(channel, signal, body)
            assert answer.code in GRPC_OK, (i, answer.code, answer.details)
            seen_grpc.add(answer.code)
        else:
            ctype = "application/json" if kind == "json" else "application/x-protobuf"
            r = http_export(server.otlp_http_url, signal, body, ctype)
            assert r.status_code in HTTP_OK, (i, r.status_code, r.text[:300])
            seen_http.add(r.status_code)
    assert {200, 400} <= seen_http and {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT} <= seen_grpc
    # still healthy, and a valid request is stored and acknowledged
    assert httpx.get(f"{server.http_url}/healthz").status_code == 200
    assert grpc_export(channel, "traces", spans_request("after", range(3)).SerializeToString()).code.name == "OK"
    channel.close()
    assert server.stop() == 0
    assert "Traceback" not in server.log(), server.log()[-3000:]
    rows = server.query("SELECT count() AS n, max(length(SpanAttributes['huge'])) AS huge FROM otel_traces "
                        "WHERE ServiceName IN ('after', 'fuzz-huge')")
    assert rows == [{"n": 4, "huge": 2_000_000}]
