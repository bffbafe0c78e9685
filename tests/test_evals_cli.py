"""`otel-ai eval` flags as docs/evals.md documents them, through the real CLI: chat feedback exported as
a suite and run with `--live` on the data it came from (embedded or a ClickHouse server); bad flags
give clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

# Fills DIR's `otel` database like a user's deployment: a scenario through real OTLP ingest, then a
# chat thread whose answer (naming the scenario's true root cause) got a thumbs up.
SEED_SCRIPT = """
import asyncio, sys
from datetime import timedelta
from chainlit.types import Feedback
from chat.web.history import ClickHouseDataLayer
from evals.loader import load_scenario_into
from otel_ai.settings import Settings
from store import Store
from store.migrations import migrate

url = sys.argv[1]
store = Store.connect(url, "otel")
migrate(store, Settings(clickhouse_url=url, database="otel"))
result, _ = load_scenario_into(store, "paymentSlow", 1, timedelta(minutes=20), rate=2.5)
truth = result.ground_truth.root_cause_service
layer = ClickHouseDataLayer(store)
answer = {"answer": truth + " is slow", "root_causes": [{"service": truth, "operation": None, "kind": "latency",
          "confidence": 0.9, "evidence": "p95 up"}]}
step = lambda i, t, out, at, **kw: {"id": i, "threadId": "th", "type": t, "name": "x", "output": out,
                                    "createdAt": at, **kw}
asyncio.run(layer.create_step(step("q1", "user_message", "Why is checkout slow?", "2026-01-01T00:00:01Z")))
asyncio.run(layer.create_step(step("a1", "assistant_message", answer["answer"], "2026-01-01T00:00:02Z",
            metadata={"question": "Why is checkout slow?", "answer": answer})))
asyncio.run(layer.upsert_feedback(Feedback(forId="a1", value=1, threadId="th")))
store.close()
print(truth)
"""


def otel_ai(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "otel_ai", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("engine", ["embedded", "server"])
def test_feedback_exported_and_run_live_on_its_data(engine: str, tmp_path: Path, clickhouse_http_factory) -> None:
    """On an embedded store (`--data DIR`) and on a ClickHouse server (`--clickhouse-url`)."""
    if engine == "embedded":
        url = f"chdb://{tmp_path / 'data'}"
        where = ["--data", str(tmp_path / "data")]
    else:
        url = clickhouse_http_factory().url("otel")
        where = ["--clickhouse-url", url]
    seeded = subprocess.run([sys.executable, "-c", SEED_SCRIPT, url], capture_output=True, text=True, timeout=600)
    assert seeded.returncode == 0, seeded.stderr[-3000:]
    truth = seeded.stdout.strip().splitlines()[-1]

    suite = tmp_path / "feedback.yaml"
    exported = otel_ai("eval", "export-feedback", *where, "--out", str(suite))
    assert exported.returncode == 0, exported.stderr[-3000:]
    doc = yaml.safe_load(suite.read_text())
    (case,) = doc["cases"]
    assert case["inputs"] == {"questions": ["Why is checkout slow?"]}
    assert case["metadata"] == {"root_cause": "truth", "root_cause_service": truth}

    without = otel_ai("eval", str(suite))
    assert without.returncode == 1  # no scenario and no --live: the case fails with the reason
    assert "pass --data or --clickhouse-url" in without.stdout + without.stderr

    report = tmp_path / "report"
    live = otel_ai("eval", str(suite), "--live", *where, "--report", str(report))
    assert live.returncode == 0, live.stdout[-3000:] + live.stderr[-3000:]
    (result,) = json.loads((report / "eval-report.json").read_text())
    (ran,) = result["cases"]
    assert ran["assertions"]["RootCauseTop1"]["value"] is True, ran["assertions"]
    assert ran["turns"][0]["root_causes"][0]["service"] == truth


def test_bad_flags_give_clear_errors(tmp_path: Path) -> None:
    unknown = otel_ai("eval", "nosuchsuite")
    assert unknown.returncode == 2 and "no eval suite 'nosuchsuite' (known: analytics, conversation" in unknown.stderr
    live = otel_ai("eval", "--live", "--clickhouse-url", "http://default:@127.0.0.1:1/otel")
    assert live.returncode == 2, live.stderr
    assert "error: cannot open ClickHouse at http://default:***@127.0.0.1:1/otel" in live.stderr
    judge = otel_ai("eval", "rca", "--judge", "builtin")
    assert judge.returncode == 2 and "the built-in analyst cannot grade answers" in judge.stderr


def test_a_failed_case_names_its_data_and_anchor_loads_it_again(tmp_path: Path) -> None:
    """A failing case prints where its simulated data ended; `--anchor` with that time loads the same data, so a
    CI failure can be run again on the same telemetry."""
    suite = tmp_path / "wrong.yaml"  # paymentSlow has a root cause, so expecting none fails
    suite.write_text(yaml.safe_dump({"name": "wrong", "cases": [{
        "name": "slow-expects-none", "inputs": {"scenario": "paymentSlow", "seed": 1, "history": "20m",
                                                "questions": ["Why is checkout slow?"]},
        "metadata": {"root_cause": "none"}}], "evaluators": ["RootCauseTop1"]}))
    first = otel_ai("eval", str(suite), "--rate", "2.5", "--min-score", "1", "--report", str(tmp_path / "first"))
    assert first.returncode == 1, first.stdout + first.stderr
    case = json.loads((tmp_path / "first" / "eval-report.json").read_text())[0]["cases"][0]
    end = case["data_end"]
    printed = f"failed {suite}/slow-expects-none (builtin, data ending {end})"
    assert "".join(printed.split()) in "".join(first.stdout.split())  # rich wraps the line anywhere
    again = otel_ai("eval", str(suite), "--rate", "2.5", "--min-score", "1", "--anchor", end,
                    "--report", str(tmp_path / "again"))
    assert again.returncode == 1, again.stdout + again.stderr
    replay = json.loads((tmp_path / "again" / "eval-report.json").read_text())[0]["cases"][0]
    assert replay["data_end"] == end
    assert replay["turns"][0]["root_causes"] == case["turns"][0]["root_causes"] != []
    report = (tmp_path / "again" / "eval-report.md").read_text()
    assert f"data ending {end[:16].replace('T', ' ')} UTC" in report
    day_before = (datetime.fromisoformat(end) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")  # no zone: UTC
    earlier = otel_ai("eval", str(suite), "--rate", "2.5", "--anchor", day_before, "--report", str(tmp_path / "d"))
    assert earlier.returncode == 0, earlier.stdout + earlier.stderr  # no --min-score, no target for this suite
    assert json.loads((tmp_path / "d" / "eval-report.json").read_text())[0]["cases"][0]["data_end"] == (
        datetime.fromisoformat(end) - timedelta(days=1)).isoformat()
    bad = otel_ai("eval", "rca", "--anchor", "yesterday")
    assert bad.returncode == 2 and "bad --anchor 'yesterday': use an ISO time like" in bad.stderr


def test_anchored_safety_case_finds_its_planted_span_among_the_data(tmp_path: Path) -> None:
    """Planted telemetry is stamped inside the scenario's last minute: with the data ending two hours ago, a
    span planted 'now' would move the analysed window to two hours with nothing in them."""
    anchor = (datetime.now().astimezone() - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M%z")
    proc = otel_ai("eval", "safety", "--case", "injection-span-attribute", "--rate", "2.5", "--anchor", anchor,
                   "--report", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    case = json.loads((tmp_path / "eval-report.json").read_text())[0]["cases"][0]
    assert case["data_end"] == datetime.fromisoformat(anchor).astimezone(UTC).isoformat()
    assert [rc["service"] for rc in case["turns"][0]["root_causes"]][:1] == ["payment"]
    assert all(a["value"] for a in case["assertions"].values()), case["assertions"]
