"""`otel-ai serve`: health, receivers on their ports, clean SIGTERM, one process per data directory."""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.fixtures.otlp import http_export, spans_request


def test_serve_is_healthy_and_stops_cleanly_on_sigterm(server) -> None:
    r = httpx.get(f"{server.http_url}/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["database"] == "otel" and "ingest" in body["services"]
    assert body["store"] == f"chdb://{server.data_dir.resolve()}"
    log = server.log()
    assert f"gRPC 127.0.0.1:{server.grpc_port}, HTTP 127.0.0.1:{server.otlp_http_port}" in log
    # OTLP/HTTP is also answered on the main port, for single-port deployments
    r = http_export(server.http_url, "traces", spans_request("main-port", range(4)).SerializeToString())
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-protobuf"
    assert http_export(server.http_url, "traces", b"\xff", "application/json").status_code == 400
    stats = httpx.get(f"{server.http_url}/healthz").json()["ingest"]
    assert stats["traces"]["stored"] == 4 and stats["refused"] == {"invalid": 1}
    assert server.stop() == 0
    assert "Traceback" not in server.log()
    assert server.query("SELECT count() AS n FROM otel_traces WHERE ServiceName = 'main-port'") == [{"n": 4}]


def test_a_second_serve_on_the_same_directory_is_refused_clearly(server_factory) -> None:
    first = server_factory()
    second = server_factory(data_dir=first.data_dir, start=False)
    with pytest.raises(RuntimeError) as info:
        second.start(timeout=60)
    message = str(info.value)
    assert message.startswith("serve exited with 1")
    assert "Another server instance in same directory is already running" in message
    assert f"error: cannot open ClickHouse at chdb://{first.data_dir.resolve()}" in message
    assert httpx.get(f"{first.http_url}/healthz").status_code == 200


def test_a_taken_otlp_port_is_reported_by_name(server_factory) -> None:
    srv = server_factory(start=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", srv.grpc_port))
        taken.listen()
        with pytest.raises(RuntimeError) as info:
            srv.start(timeout=120)
    message = str(info.value)
    assert message.startswith("serve exited with 1")
    assert f"error: cannot bind OTLP/gRPC on 127.0.0.1:{srv.grpc_port}" in message
    assert "Traceback" not in message
