"""The compose shape without Docker: a real `otel-ai serve` whose store is a ClickHouse server reached by
URL (the chDB-backed HTTP endpoint of tests/fixtures/clickhouse_http.py), fed by the OpenTelemetry SDK.
Checks migrations at start, ingest through clickhouse-connect's HTTP client, /healthz, and the errors a
misconfigured URL gives at start."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from store import Store
from tests.fixtures.clickhouse_http import ClickHouseHTTP
from tests.fixtures.otlp_send import send_telemetry
from tests.fixtures.server import free_port


def _serve(url: str, tmp_path: Path) -> tuple[subprocess.Popen, int, int]:
    port, grpc = free_port(), free_port()
    env = {**os.environ, "OTEL_AI_CONFIG": str(tmp_path / "none.toml"), "OTEL_AI_CLICKHOUSE_URL": url,
           "OTEL_AI_ANOMALY_ENABLED": "false"}
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen([sys.executable, "-m", "otel_ai", "serve", "--port", str(port), "--otlp-grpc-port",
                             str(grpc), "--otlp-http-port", str(free_port())], stdout=log, stderr=subprocess.STDOUT,
                            env=env)
    return proc, port, grpc


def _wait_healthy(proc: subprocess.Popen, port: int, log: Path, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            if r.status_code == 200:
                return r.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"serve not healthy in {timeout}s:\n{log.read_text(errors='replace')}")


def test_serve_on_a_clickhouse_server_url(clickhouse_http_factory, tmp_path: Path) -> None:
    ch: ClickHouseHTTP = clickhouse_http_factory()
    url = ch.url("otel_prod")
    proc, port, grpc = _serve(url, tmp_path)
    try:
        health = _wait_healthy(proc, port, tmp_path / "serve.log")
        assert health["database"] == "otel_prod" and ch.password not in str(health)
        assert health["store"] == f"http://{ch.user}:***@127.0.0.1:{ch.port}/otel_prod"
        send_telemetry(f"127.0.0.1:{grpc}", ["frontend", "checkout"])
        proc.terminate()
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    store = Store.connect(url, create=False)
    try:
        assert {"otel_traces", "otel_logs", "otel_metrics_sum", "otel_ai_migrations"} <= set(store.tables())
        assert store.query("SELECT ServiceName, count() FROM otel_traces GROUP BY ServiceName ORDER BY 1").rows == [
            ("checkout", 1), ("frontend", 1)]
        assert store.query("SELECT count() FROM otel_logs").scalar() == 2
        assert store.query("SELECT sum(Value) FROM otel_metrics_sum WHERE MetricName = 'requests'").scalar() == 6
        assert store.query("SELECT count() FROM otel_traces_trace_id_ts").scalar() == 2
    finally:
        store.close()


def test_serve_with_wrong_clickhouse_password_exits_with_the_reason(clickhouse_http_factory,
                                                                   tmp_path: Path) -> None:
    ch: ClickHouseHTTP = clickhouse_http_factory()
    proc, _, _ = _serve(ch.url("otel", password="not-the-password"), tmp_path)
    try:
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = (tmp_path / "serve.log").read_text(errors="replace")
    assert code != 0
    assert out.strip().splitlines()[-1].startswith(f"error: cannot open ClickHouse at http://otel:***@127.0.0.1:{ch.port}")
    assert "Authentication failed" in out and "not-the-password" not in out
