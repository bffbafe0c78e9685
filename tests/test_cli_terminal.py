"""Telemetry cannot drive the terminal of whoever reads it: span names, service names and status
messages carrying ESC sequences (OSC 52 clipboard writes, OSC 8 links, cursor moves that erase the line
above), C1 controls and bidi overrides are printed by `otel-ai sql`, `otel-ai ask` and `otel-ai
anomalies list` as visible escapes. A real serve, spans exported over OTLP/HTTP, the CLI as a user runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.server import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
SERVICE = "pay\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b[2J"
SPAN = "GET /x\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\\x9b31m\u202eRED"
STATUS = "boom\r\x1b[1A\x1b[2Kall good"
# what a terminal acts on: C0 but newline and tab, DEL, C1, bidi overrides
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def export_spans(server: ServerProcess) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    now = time.time_ns()
    request = ExportTraceServiceRequest()
    resource = request.resource_spans.add()
    resource.resource.attributes.add(key="service.name").value.string_value = SERVICE
    spans = resource.scope_spans.add()
    for i in range(1, 41):
        span = spans.spans.add(trace_id=i.to_bytes(16, "big"), span_id=i.to_bytes(8, "big"), name=SPAN, kind=2,
                               start_time_unix_nano=now - 120_000_000_000 + i * 10**9,
                               end_time_unix_nano=now - 120_000_000_000 + i * 10**9 + 5_000_000 * i)
        span.status.code = 2 if i % 2 else 0
        span.status.message = STATUS
    r = httpx.post(f"{server.otlp_http_url}/v1/traces", content=request.SerializeToString(),
                   headers={"content-type": "application/x-protobuf"}, timeout=60)
    assert r.status_code == 200 and not r.content, r.content


def otel_ai(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OTEL_AI_CONFIG": "/nonexistent.toml"}
    env.pop("OTEL_AI_API_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "otel_ai", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def assert_inert(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stderr
    for stream in (done.stdout, done.stderr):
        assert not CONTROL.search(stream), repr(CONTROL.findall(stream))
    assert "\\x1b]52;c;" in done.stdout  # the telemetry is shown, as text


@pytest.fixture
def planted(server: ServerProcess) -> ServerProcess:
    export_spans(server)
    sql = "SELECT count() AS n FROM otel_traces"
    deadline = time.monotonic() + 60
    while httpx.post(f"{server.http_url}/api/sql", json={"sql": sql}, timeout=30).json()["rows"] != [{"n": 40}]:
        assert time.monotonic() < deadline, "the exported spans were not stored within 60 s"
        time.sleep(0.2)
    return server


def test_sql_and_ask_print_telemetry_as_text(planted: ServerProcess) -> None:
    table = otel_ai("sql", "SELECT ServiceName, SpanName, StatusMessage FROM otel_traces LIMIT 3",
                    "--server", planted.http_url)
    assert_inert(table)
    assert "\\x9b31m\\u202eRED" in table.stdout and "boom \\x1b[1A" in table.stdout

    answer = otel_ai("ask", "why is it failing?", "--since", "15m", "--server", planted.http_url)
    assert_inert(answer)

    # --json keeps the data as it was stored (JSON escapes control characters itself)
    as_json = otel_ai("ask", "why is it failing?", "--since", "15m", "--json", "--server", planted.http_url)
    assert not CONTROL.search(as_json.stdout)
    assert json.loads(as_json.stdout)["root_causes"][0]["service"] == SERVICE


def test_anomalies_list_prints_telemetry_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    from otel_ai.commands.anomalies import _print_list

    _print_list([{"window_start": "2026-12-07T18:00:00+00:00", "score": 9.5, "severity": "critical",
                  "detector": "autoencoder", "service": SERVICE, "operation": SPAN,
                  "explanation": f"errors 50% ({STATUS})"}], as_json=False)
    out = capsys.readouterr().out
    assert not CONTROL.search(out), repr(out)
    assert "pay\\x1b]52;c;" in out and "\\u202eRED" in out
