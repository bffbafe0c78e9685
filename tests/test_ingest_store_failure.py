"""A real storage failure during ingest (the spans table renamed away under a running IngestService) is
answered with retryable errors, nothing is acknowledged that is not stored, and SDK retries land."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from ingest.service import IngestThread
from otel_ai.context import ServerContext
from otel_ai.settings import Settings
from store import Store
from tests.fixtures.otlp import grpc_export, http_export, span_number, spans_request


@pytest.fixture
def ingest(store: Store) -> Iterator[IngestThread]:
    settings = Settings(clickhouse_url=f"chdb://{store.url.path}", database=store.database,
                        otlp_grpc_port=0, otlp_http_port=0)
    with IngestThread(ServerContext(settings=settings, store=store)) as running:
        yield running


def _stored_numbers(store: Store) -> list[int]:
    return sorted(span_number(r[0]) for r in store.query("SELECT SpanId FROM otel_traces"))


def test_store_failure_is_retryable_and_nothing_acked_is_missing(store: Store, ingest: IngestThread) -> None:
    channel = grpc.insecure_channel(ingest.grpc_endpoint)
    assert grpc_export(channel, "traces", spans_request("a", range(0, 10)).SerializeToString()).code.name == "OK"

    store.command("RENAME TABLE otel_traces TO otel_traces_away")
    try:
        answer = grpc_export(channel, "traces", spans_request("a", range(10, 20)).SerializeToString())
        assert answer.code == grpc.StatusCode.UNAVAILABLE
        assert answer.details.startswith("storage failed, nothing acknowledged")
        assert RetryInfo.FromString(answer.trailing["google.rpc.retryinfo-bin"]).retry_delay.seconds == 1
        r = http_export(ingest.http_url, "traces", spans_request("a", range(20, 30)).SerializeToString())
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "storage failed" in Status.FromString(r.content).message
    finally:
        store.command("RENAME TABLE otel_traces_away TO otel_traces")

    # the client retries the refused request; it is stored once
    assert grpc_export(channel, "traces", spans_request("a", range(10, 20)).SerializeToString()).code.name == "OK"
    assert _stored_numbers(store) == list(range(20))
    stats = ingest.service.stats()["traces"]
    assert stats["stored"] == 20 and stats["failed_requests"] == 2
    channel.close()


def test_sdk_exporter_retries_until_the_store_is_back(store: Store, ingest: IngestThread) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "retrying"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=ingest.grpc_endpoint, insecure=True,
                                                                     timeout=20)))
    store.command("RENAME TABLE otel_traces TO otel_traces_away")
    restored = threading.Timer(0.5, store.command, args=("RENAME TABLE otel_traces_away TO otel_traces",))
    restored.start()
    started = time.monotonic()
    with provider.get_tracer("t").start_as_current_span("survives-outage"):
        pass  # the span is exported (with retries) when it ends
    restored.join()
    provider.shutdown()
    assert time.monotonic() - started >= 0.5
    rows = store.query("SELECT SpanName, ServiceName FROM otel_traces").rows
    assert rows == [("survives-outage", "retrying")]
    assert ingest.service.stats()["traces"]["failed_requests"] >= 1
