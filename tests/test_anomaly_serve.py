"""The scorer inside a real `otel-ai serve`: simulator telemetry over OTLP, continuous scoring, the HTTP
API and `anomalies list --server`, and a restart that restores the trained model from the store."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx

from sim.runner import run_simulation

ENV = {
    "OTEL_AI_ANOMALY_TRAIN_MIN_WINDOWS": "20",  # the 15 min of history is enough to train
    "OTEL_AI_ANOMALY_MAX_CATCHUP_WINDOWS": "14",  # the first step scores the last 7 minutes
    "OTEL_AI_ANOMALY_GRACE_SECONDS": "1",
}


def wait_for(predicate, timeout: float = 420.0, every: float = 2.0):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in time")


def anomalies(url: str, **params: str) -> dict:
    r = httpx.get(f"{url}/api/anomalies", params={"since": "20m", **params}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_serve_scores_windows_and_restores_the_model_after_restart(server_factory) -> None:
    # 1. fill the store with the scorer off (so it trains on the whole history, not a half-sent one)
    srv = server_factory(env={**ENV, "OTEL_AI_ANOMALY_ENABLED": "false"})
    assert "anomaly" in httpx.get(f"{srv.http_url}/healthz", timeout=10).json()["services"]
    assert anomalies(srv.http_url)["scorer"]["enabled"] is False
    result = run_simulation("paymentSlow", endpoint=srv.otlp_grpc_endpoint, history=timedelta(minutes=15),
                            live=timedelta(0), seed=2, rate=5.0, fault_duration=timedelta(minutes=4),
                            anchor=datetime.now(UTC).replace(second=0, microsecond=0))
    assert not any(result.failed.values())
    srv.stop()

    # 2. scorer on: cold start → trains on the history, saves ae-v1, scores the closed windows
    srv.env.update({"OTEL_AI_ANOMALY_ENABLED": "true"})
    srv.start()
    body = wait_for(lambda: (b := anomalies(srv.http_url, service="payment")) and b["anomalies"] and b)
    assert body["scorer"]["model_version"] == "ae-v1"
    top = body["anomalies"][0]
    assert top["service"] == "payment" and top["kind"] == "latency" and top["score"] >= 1
    assert top["detector"] == "autoencoder" and "expected" in top["explanation"]
    fault_start = result.ground_truth.start
    assert datetime.fromisoformat(top["window_start"]) >= fault_start - timedelta(seconds=30)

    cli = subprocess.run(
        [sys.executable, "-m", "otel_ai", "anomalies", "list", "--since", "20m", "--json", "--server", srv.http_url],
        capture_output=True, text=True, timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    listed = json.loads(cli.stdout)
    assert listed and [r["score"] for r in listed] == sorted((r["score"] for r in listed), reverse=True)
    assert httpx.get(f"{srv.http_url}/api/anomalies", params={"since": "soon"}, timeout=10).status_code == 400

    # 3. restart: the saved model is restored (same version), nothing is retrained
    srv.restart()
    stats = wait_for(lambda: (s := anomalies(srv.http_url)["scorer"]) and s["model_version"] != "baseline" and s)
    assert stats["model_version"] == "ae-v1"
    time.sleep(3)
    srv.stop()
    versions = srv.query("SELECT version, windows FROM anomaly_model_state")
    assert [v["version"] for v in versions] == [1]
    assert "restored" in srv.log()
