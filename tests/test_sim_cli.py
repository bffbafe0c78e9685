"""`otel-ai sim` against a real `otel-ai serve` subprocess, and `otel-ai demo` end to end."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx

from sim.scenarios import SCENARIOS
from tests.fixtures.server import free_port, query_data_dir

ROOT = Path(__file__).resolve().parents[1]
CHARGE = "SpanName = 'oteldemo.PaymentService/Charge' AND SpanKind = 'Server' AND Duration > 800e6"


def stored(data_dir: Path, since: str = "2000-01-01T00:00:00Z") -> dict[str, int]:
    """Row counts of a stopped server's data directory (read by a subprocess: one chDB dir per process)."""
    at = f"parseDateTime64BestEffort('{since}', 9)"
    sql = ("SELECT (SELECT count() FROM otel_traces) AS spans, (SELECT count() FROM otel_logs) AS logs,"
           " (SELECT count() FROM otel_metrics_gauge) + (SELECT count() FROM otel_metrics_sum)"
           " + (SELECT count() FROM otel_metrics_histogram) AS metrics,"
           f" (SELECT count() FROM otel_traces WHERE {CHARGE} AND Timestamp >= {at}) AS slow_charges_after,"
           f" (SELECT count() FROM otel_traces WHERE {CHARGE} AND Timestamp < {at}) AS slow_charges_before")
    return {k: int(v) for k, v in query_data_dir(data_dir, sql)[0].items()}


def otel_ai(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "otel_ai", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_sim_cli_sends_to_serve_over_http_and_everything_is_stored(server_factory):
    # API auth on too: the self-check reads /healthz's ingest counts, which need the API token
    srv = server_factory(env={"OTEL_AI_INGEST_TOKEN": "s3cret", "OTEL_AI_API_TOKEN": "api-t0ken-0123456789"})
    args = ["sim", "--scenario", "cartFailure", "--endpoint", srv.otlp_http_url, "--protocol", "http/protobuf",
            "--history", "3m", "--live", "0", "--seed", "3", "--rate", "1.5"]
    refused = otel_ai(*args, "--token", "wrong", timeout=120)
    assert refused.returncode == 1 and "error: giving up on" in refused.stderr, refused.stderr
    run = otel_ai(*args, "--check", srv.http_url,
                  env={"OTEL_AI_INGEST_TOKEN": "s3cret", "OTEL_AI_API_TOKEN": "api-t0ken-0123456789"})
    assert run.returncode == 0, run.stderr
    assert "[sim] self-check: stored == sent" in run.stderr
    assert "[sim] history: at" in run.stderr and "[sim] done in" in run.stderr
    report = json.loads(run.stdout)
    truth = report["ground_truth"]
    assert truth["scenario"] == "cartFailure" and truth["root_cause_service"] == "cart" and truth["kind"] == "errors"
    start, end = datetime.fromisoformat(truth["start"]), datetime.fromisoformat(truth["end"])
    assert end - start == timedelta(minutes=3)  # --live 0: the last 10 minutes, clamped to the 3 of history
    assert report["failed"] == {"spans": 0, "logs": 0, "metrics": 0}
    assert report["self_check"] == {"ok": True, "sent": report["sent"], "stored": report["sent"]}
    assert srv.stop() == 0
    counts = stored(srv.data_dir)
    assert {k: counts[k] for k in ("spans", "logs", "metrics")} == report["sent"]
    assert report["sent"]["spans"] > 2000


def test_sim_cli_says_when_nothing_listens():
    run = otel_ai("sim", "--endpoint", f"127.0.0.1:{free_port()}", "--history", "1m", "--live", "0", timeout=60)
    assert run.returncode == 1 and "error: cannot reach the OTLP endpoint 127.0.0.1:" in run.stderr, run.stderr
    assert "is otel-ai serve (or a Collector) running there?" in run.stderr and run.stdout == ""


def test_sim_cli_lists_scenarios():
    run = otel_ai("sim", "--list", timeout=60)
    assert run.returncode == 0
    rows = {line.split()[0]: line for line in run.stdout.splitlines()}
    assert set(rows) == set(SCENARIOS)
    assert "latency" in rows["paymentSlow"] and "payment oteldemo.PaymentService/Charge" in rows["paymentSlow"]


def test_sim_cli_refuses_bad_arguments():
    bad = otel_ai("sim", "--scenario", "nope", timeout=60)
    assert bad.returncode == 2 and "invalid choice: 'nope'" in bad.stderr
    bad = otel_ai("sim", "--history", "soon", timeout=60)
    assert bad.returncode == 2 and "bad duration 'soon'" in bad.stderr
    bad = otel_ai("sim", "--fault-start", "yesterday", timeout=60)
    assert bad.returncode == 2 and "bad --fault-start 'yesterday'" in bad.stderr


def _lines(proc: subprocess.Popen) -> queue.Queue:
    q: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def test_demo_serves_history_then_live_fault_and_stops_cleanly(tmp_path):
    port, grpc_port, http_port = free_port(), free_port(), free_port()
    data = tmp_path / "data"
    env = {**os.environ, "OTEL_AI_CONFIG": str(tmp_path / "none.toml"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "otel_ai", "demo", "--data", str(data), "--port", str(port), "--otlp-grpc-port",
         str(grpc_port), "--otlp-http-port", str(http_port), "--history", "2m", "--rate", "1.5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env)
    lines = _lines(proc)
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=5)
            except queue.Empty:
                continue
            assert line is not None, "".join(seen)
            seen.append(line)
            if "Ctrl-C stops" in line:
                break
        text = "".join(seen)
        assert f"[demo] open the chat: http://127.0.0.1:{port}" in text, text
        assert "1. Why is checkout slow?" in text and "3. " in text
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        time.sleep(12)  # a little live traffic with the fault on
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        tail: list[str] = []
        while (line := lines.get(timeout=30)) is not None:
            tail.append(line)
        rest = "".join(tail)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, text + rest
    assert "[demo] ground truth: " in rest, text + rest
    assert "[demo] self-check: stored == sent" in rest, rest
    line = next(x for x in rest.splitlines() if x.startswith("[demo] ground truth: "))
    truth = json.loads(line.removeprefix("[demo] ground truth: "))
    assert truth["scenario"] == "paymentSlow" and truth["root_cause_service"] == "payment"
    start = truth["start"]
    counts = stored(data, start)
    assert counts["spans"] > 1000 and counts["metrics"] > 100
    assert counts["slow_charges_before"] == 0
