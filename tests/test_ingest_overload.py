"""Bounded memory and quick refusals under overload (issue 17, item 5), against a real IngestService.

Decompressed bytes of gzip bodies and every byte of chunked uploads count against the in-flight bound
as they arrive, so a small body that inflates, or an upload of unknown length, is refused with 429
before it is buffered; and once a request has waited too long for the store, new requests get a quick
429 / RESOURCE_EXHAUSTED instead of queueing past SDK timeouts.
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.rpc.status_pb2 import Status

from ingest.service import IngestThread
from otel_ai.context import ServerContext
from otel_ai.settings import Settings
from store import Store
from tests.fixtures.otlp import grpc_export, http_export, spans_request

MAX_INFLIGHT = 100_000
MAX_BODY = 1_000_000
BODY_TIMEOUT = 5.0


@pytest.fixture
def ingest(store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[IngestThread]:
    monkeypatch.setenv("OTEL_AI_INGEST_MAX_WAIT_SECONDS", "0.5")
    settings = Settings(clickhouse_url=f"chdb://{store.url.path}", database=store.database, otlp_grpc_port=0,
                        otlp_http_port=0, ingest_max_inflight_bytes=MAX_INFLIGHT, ingest_max_body_bytes=MAX_BODY,
                        http_body_timeout_seconds=BODY_TIMEOUT)
    with IngestThread(ServerContext(settings=settings, store=store)) as running:
        yield running


def _wait_for(condition: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _hold_upload(ingest: IngestThread, sent: int) -> socket.socket:
    """An upload that stops halfway: `sent` bytes of a body twice as long; the server holds what arrived."""
    held = socket.create_connection((ingest.service.host, ingest.service.http_port))
    held.sendall(f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                 f"Content-Length: {2 * sent}\r\n\r\n".encode() + b"\x0a" * sent)
    _wait_for(lambda: ingest.service.stats()["inflight_bytes"] >= sent, "the slow upload to be admitted")
    return held


def _inflating_body(size: int) -> bytes:
    req = spans_request("inflated", range(1), attrs=1)
    req.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="blob").value.string_value = "x" * size
    return req.SerializeToString()


def _stored(store: Store, service: str) -> int:
    return store.query("SELECT count() FROM otel_traces WHERE ServiceName = {s:String}", parameters={"s": service}
                       ).scalar()


def test_decompressed_bytes_count_against_the_in_flight_bound(ingest: IngestThread, store: Store) -> None:
    inflating = gzip.compress(_inflating_body(3 * MAX_INFLIGHT))
    assert len(inflating) < MAX_INFLIGHT // 20
    held = _hold_upload(ingest, MAX_INFLIGHT // 2)
    try:
        r = http_export(ingest.http_url, "traces", inflating, content_encoding="gzip")
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert "bytes in flight" in Status.FromString(r.content).message
    finally:
        held.close()
    _wait_for(lambda: ingest.service.stats()["inflight_bytes"] == 0, "the abandoned upload's bytes to be released")
    # alone, the same body is within the bounds and is stored
    assert http_export(ingest.http_url, "traces", inflating, content_encoding="gzip").status_code == 200
    assert _stored(store, "inflated") == 1


def test_a_declared_length_reserves_nothing_until_it_arrives(ingest: IngestThread, store: Store) -> None:
    """Uploads that declare the largest body and send a byte hold one byte each, not the declared length:
    before, four such connections held the whole in-flight bound and every export got 429. And a body that
    does not arrive in time gets 408 and gives back what it held."""
    slow = [socket.create_connection((ingest.service.host, ingest.service.http_port)) for _ in range(4)]
    started = time.monotonic()
    try:
        for sock in slow:
            sock.sendall(f"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                         f"Content-Length: {MAX_BODY}\r\n\r\n".encode() + b"\x0a")
        _wait_for(lambda: ingest.service.stats()["inflight_bytes"] >= 4, "the slow uploads to be admitted")
        ok = http_export(ingest.http_url, "traces", spans_request("beside-slow", range(3)).SerializeToString())
        assert ok.status_code == 200, ok.content[:200]
        assert _stored(store, "beside-slow") == 3
        slow[0].settimeout(BODY_TIMEOUT + 20)
        answer = slow[0].recv(4096)  # waits for the server's answer, at most the bound above
        waited = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b"OTEL_AI_HTTP_BODY_TIMEOUT_SECONDS" in answer
        assert BODY_TIMEOUT - 0.5 <= waited < BODY_TIMEOUT + 15, waited
    finally:
        for sock in slow:
            sock.close()
    _wait_for(lambda: ingest.service.stats()["inflight_bytes"] == 0, "the late uploads' bytes to be released")


def test_chunked_upload_is_refused_before_it_is_buffered(ingest: IngestThread) -> None:
    held = _hold_upload(ingest, MAX_INFLIGHT // 2)
    chunked = socket.create_connection((ingest.service.host, ingest.service.http_port))
    try:
        chunked.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n")
        piece = b"\x0a" * 10_000
        for _ in range(MAX_INFLIGHT // len(piece)):  # past the bound, and the body never ends
            chunked.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        chunked.settimeout(10)
        answer = chunked.recv(4096)  # the refusal comes while the upload is still open
        assert answer.startswith(b"HTTP/1.1 429"), answer[:200]
    finally:
        chunked.close()
        held.close()


def test_overload_is_refused_quickly_instead_of_queueing(ingest: IngestThread, store: Store) -> None:
    """A stalled store: the first request waits; after max_wait_seconds new ones get 429 / RESOURCE_EXHAUSTED
    at once, and everything acknowledged is stored once the store is back."""
    writer = ingest.service._writer
    assert writer is not None
    channel = grpc.insecure_channel(ingest.grpc_endpoint)
    first: list[grpc.StatusCode] = []
    with writer.store._lock:  # the store is busy (e.g. a long merge or query holds it)
        waiting = threading.Thread(target=lambda: first.append(grpc_export(
            channel, "traces", spans_request("first", range(5)).SerializeToString()).code))
        waiting.start()
        service = ingest.service
        _wait_for(lambda: service._started and time.monotonic() - min(service._started.values()) > 0.6,
                  "the first request to wait past max_wait_seconds")
        body = spans_request("later", range(5)).SerializeToString()
        started = time.monotonic()
        r = httpx.post(f"{ingest.http_url}/v1/traces", content=body, timeout=5,
                       headers={"content-type": "application/x-protobuf"})
        assert time.monotonic() - started < 2  # refused at once, not after a queue
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert "has waited" in Status.FromString(r.content).message
        answer = grpc_export(channel, "traces", body, timeout=5)
        assert answer.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "has waited" in answer.details
    waiting.join(30)
    assert first == [grpc.StatusCode.OK]
    assert http_export(ingest.http_url, "traces", body).status_code == 200
    assert (_stored(store, "first"), _stored(store, "later")) == (5, 5)
    channel.close()
