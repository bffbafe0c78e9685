"""Unauthorized, malformed, oversized, partially invalid and over-the-bound requests against a real serve
get the documented answers, and the store holds exactly the accepted items."""

from __future__ import annotations

import gzip
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.fixtures.otlp import grpc_export, http_export, span_number, spans_request
from tests.fixtures.server import ServerProcess, make_server

TOKEN = "s3cret-token"
MAX_BODY = 200_000
MAX_INFLIGHT = 100_000


class Ingest:
    """The module's server plus what each test expects to find stored, by service name."""

    def __init__(self, srv: ServerProcess) -> None:
        self.srv = srv
        self.channel = grpc.insecure_channel(srv.otlp_grpc_endpoint)
        self.expected: Counter[str] = Counter()


@pytest.fixture(scope="module")
def ingest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingest]:
    base: Path = tmp_path_factory.mktemp("ingest_errors")
    (base / "data").mkdir()
    env = {
        "OTEL_AI_INGEST_TOKEN": TOKEN,
        "OTEL_AI_INGEST_MAX_BODY_BYTES": str(MAX_BODY),
        "OTEL_AI_INGEST_MAX_INFLIGHT_BYTES": str(MAX_INFLIGHT),
    }
    srv = make_server(base / "data", base / "serve.log", env).start()
    state = Ingest(srv)
    yield state
    state.channel.close()
    srv.stop()


def test_missing_or_wrong_token_is_unauthenticated(ingest: Ingest) -> None:
    body = spans_request("auth", range(2)).SerializeToString()
    for token in (None, "wrong"):
        answer = grpc_export(ingest.channel, "traces", body, token=token)
        assert answer.code == grpc.StatusCode.UNAUTHENTICATED
        r = http_export(ingest.srv.otlp_http_url, "traces", body, token=token)
        assert r.status_code == 401
        assert "bearer token" in Status.FromString(r.content).message
    assert grpc_export(ingest.channel, "traces", body, token=TOKEN).code == grpc.StatusCode.OK
    ingest.expected["auth"] += 2
    # the official SDK exporter with the header configured gets through
    provider = TracerProvider(resource=Resource.create({"service.name": "auth-sdk"}))
    exporter = OTLPSpanExporter(endpoint=ingest.srv.otlp_grpc_endpoint, insecure=True,
                                headers={"authorization": f"Bearer {TOKEN}"})
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("authorized"):
        pass
    provider.shutdown()
    ingest.expected["auth-sdk"] += 1


def test_malformed_bodies_are_invalid_argument_with_a_precise_message(ingest: Ingest) -> None:
    answer = grpc_export(ingest.channel, "traces", b"\x0a\xff\xff\xff", token=TOKEN)
    assert answer.code == grpc.StatusCode.INVALID_ARGUMENT
    assert answer.details.startswith("invalid protobuf ExportTraceServiceRequest")
    r = http_export(ingest.srv.otlp_http_url, "logs", b"\x0a\xff\xff\xff", token=TOKEN)
    assert r.status_code == 400
    assert Status.FromString(r.content).message.startswith("invalid protobuf ExportLogsServiceRequest")
    r = http_export(ingest.srv.otlp_http_url, "metrics", b'{"resourceMetrics": [', "application/json", token=TOKEN)
    assert r.status_code == 400 and r.json()["message"].startswith("invalid JSON: Expecting value at line 1")
    r = http_export(ingest.srv.otlp_http_url, "traces", b"x", "text/plain", token=TOKEN)
    assert r.status_code == 415
    r = http_export(ingest.srv.otlp_http_url, "traces", b"notgzip", token=TOKEN, content_encoding="gzip")
    assert r.status_code == 400 and "gzip" in Status.FromString(r.content).message
    assert httpx.get(f"{ingest.srv.otlp_http_url}/v1/traces").status_code == 405
    assert httpx.post(f"{ingest.srv.otlp_http_url}/v2/nothing").status_code == 404


def test_oversized_bodies_are_refused(ingest: Ingest) -> None:
    big = spans_request("big", range(2), attrs=1)
    big.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="blob").value.string_value = "x" * MAX_BODY
    body = big.SerializeToString()
    r = http_export(ingest.srv.otlp_http_url, "traces", body, token=TOKEN)
    assert r.status_code == 413
    assert grpc_export(ingest.channel, "traces", body, token=TOKEN).code == grpc.StatusCode.RESOURCE_EXHAUSTED
    # a small gzip body that inflates past the limit is refused too, without inflating it all
    bomb = gzip.compress(body + b"\0" * MAX_BODY)
    r = http_export(ingest.srv.otlp_http_url, "traces", bomb, token=TOKEN, content_encoding="gzip")
    assert r.status_code == 413 and len(bomb) < MAX_BODY


def test_partially_invalid_requests_store_the_valid_items(ingest: Ingest) -> None:
    req = spans_request("partial", range(5))
    spans = req.resource_spans[0].scope_spans[0].spans
    spans[1].trace_id = b"\x01\x02"
    spans[3].end_time_unix_nano = spans[3].start_time_unix_nano - 1
    answer = grpc_export(ingest.channel, "traces", req.SerializeToString(), token=TOKEN)
    assert answer.code == grpc.StatusCode.OK
    partial = ExportTraceServiceResponse.FromString(answer.body).partial_success
    assert partial.rejected_spans == 2
    assert "resource 0 span 1: trace_id must be 16 non-zero bytes, got 2" in partial.error_message
    assert "resource 0 span 3: invalid times" in partial.error_message
    ingest.expected["partial"] += 3
    ingest.expected["partial/ids"] = sum(1 << n for n in (0, 2, 4))  # which ones: checked at the end


def test_bytes_in_flight_are_bounded(ingest: Ingest) -> None:
    """A slow upload holds the bytes it has sent; a second request past the bound gets 429/RESOURCE_EXHAUSTED."""
    host, port = ingest.srv.otlp_http_url.removeprefix("http://").split(":")
    held = socket.create_connection((host, int(port)))
    try:
        declared = MAX_INFLIGHT - 1_000  # sent, of a body 1,000 bytes longer
        held.sendall(
            f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Length: {declared + 1_000}\r\n\r\n".encode()
            + b"\x0a" * declared
        )
        body = spans_request("busy", range(50)).SerializeToString()
        assert len(body) > 1_000
        deadline = time.monotonic() + 30
        while True:  # the held request is admitted once the server has read its headers
            r = http_export(ingest.srv.otlp_http_url, "traces", body, token=TOKEN)
            if r.status_code == 429 or time.monotonic() > deadline:
                break
            ingest.expected["busy"] += 50
            time.sleep(0.05)
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert "bytes in flight" in Status.FromString(r.content).message
        answer = grpc_export(ingest.channel, "traces", body, token=TOKEN)
        assert answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        retry = RetryInfo.FromString(answer.trailing["google.rpc.retryinfo-bin"])
        assert retry.retry_delay.seconds == 1
    finally:
        held.close()
    deadline = time.monotonic() + 30
    while (r := http_export(ingest.srv.otlp_http_url, "traces", body, token=TOKEN)).status_code == 429:
        assert time.monotonic() < deadline, "bytes of the abandoned upload were never released"
        time.sleep(0.05)
    assert r.status_code == 200
    ingest.expected["busy"] += 50


def test_store_holds_exactly_the_accepted_items(ingest: Ingest) -> None:
    assert ingest.srv.stop() == 0
    rows = ingest.srv.query("SELECT ServiceName AS s, SpanId FROM otel_traces")
    stored = Counter(r["s"] for r in rows)
    wanted = Counter({k: v for k, v in ingest.expected.items() if "/" not in k})
    assert stored == wanted
    if "partial/ids" in ingest.expected:
        ids = sum(1 << span_number(r["SpanId"]) for r in rows if r["s"] == "partial")
        assert ids == ingest.expected["partial/ids"]
