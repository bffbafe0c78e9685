"""The scorer against a real chDB store: features in SQL, anomalies table, model state, restart, root cause, CLI."""

from __future__ import annotations

import io
import json
import math
import time
from contextlib import redirect_stdout

import numpy as np
import pytest

from anomaly import state as state_store
from anomaly.api import list_anomalies
from anomaly.features import FEATURE_INDEX, compute_features
from anomaly.rootcause import rank_root_causes
from anomaly.scorer import AnomalyConfig, Scorer
from otel_ai.cli import main
from tests.anomaly_helpers import insert_gauges, insert_logs, insert_spans, shop_spans

W = 30
HISTORY = 130
FAULT = 10


def aligned_start(windows: int) -> float:
    """Data that ends at the last closed window before now, so `--since` finds it."""
    return (time.time() // W) * W - windows * W


def cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(list(args))
    return code, out.getvalue()


def test_features_are_computed_in_clickhouse(store) -> None:
    t0 = aligned_start(12)
    insert_spans(store, shop_spans(t0, 12, per_window=10, seed=1))
    logs = [(t0 + w * W + 1, "payment", f"charged order {1000 + w} in {w} ms", 9) for w in range(12)]
    logs += [(t0 + 11 * W + 2, "payment", "card processor refused connection to 10.0.0.7", 17)] * 3
    insert_logs(store, logs)
    gauges = [(t0 + w * W + 5, "payment", "process.cpu.utilization", 0.25) for w in range(12)]
    gauges += [(t0 + 3 * W + 6, "payment", "process.cpu.utilization", math.nan),
               (t0 + 4 * W + 6, "payment", "process.cpu.utilization", math.inf),
               (t0 + 5 * W + 6, "payment", "process.memory.usage", 2.0e8),
               (t0 + 5 * W + 7, "payment", "queue.depth", 99.0)]
    insert_gauges(store, gauges)

    table = compute_features(store, t0, t0 + 12 * W, W)
    ents = set(table.entities)
    assert {("frontend", "", "service"), ("frontend", "GET /checkout", "server"), ("checkout", "PlaceOrder", "server"),
            ("payment", "Charge", "server"), ("payment", "SELECT payments", "client"),
            ("checkout", "Charge", "client")} <= ents
    rows = {(table.entity_of(r), int(table.window[r]) - int(t0)): r for r in range(len(table))}
    pay = rows[(("payment", "", "service"), 11 * W)]
    v = table.values[pay]
    assert v[FEATURE_INDEX["requests"]] == 10 and v[FEATURE_INDEX["error_ratio"]] == 0
    # self time excludes the database call: payment's own work (~18 ms) not the total
    assert v[FEATURE_INDEX["self_p95"]] < v[FEATURE_INDEX["p95"]]
    assert table.calls[pay] == {"postgresql": 10.0}
    assert v[FEATURE_INDEX["calls_per_request"]] == 1.0
    assert v[FEATURE_INDEX["error_logs"]] == 3 and v[FEATURE_INDEX["new_templates"]] == 1
    assert table.values[rows[(("payment", "", "service"), 5 * W)], FEATURE_INDEX["new_templates"]] == 0
    assert table.values[rows[(("payment", "", "service"), 0)], FEATURE_INDEX["new_templates"]] == 1
    # NaN and inf metric points are ignored; a window with only those has no CPU value
    assert v[FEATURE_INDEX["cpu"]] == pytest.approx(0.25)
    assert math.isnan(table.values[rows[(("payment", "", "service"), 3 * W)], FEATURE_INDEX["cpu"]]) is False
    assert table.values[rows[(("payment", "", "service"), 5 * W)], FEATURE_INDEX["memory"]] == 2.0e8
    assert table.calls[rows[(("checkout", "", "service"), 0)]] == {"payment": 10.0}
    assert math.isnan(table.values[rows[(("frontend", "", "service"), 0)], FEATURE_INDEX["cpu"]])


def test_missing_metric_tables_do_not_break_features(store) -> None:
    t0 = aligned_start(3)
    insert_spans(store, shop_spans(t0, 3, per_window=5, seed=2))
    store.command("DROP TABLE otel_metrics_sum")
    store.command("DROP TABLE otel_logs")
    table = compute_features(store, t0, t0 + 3 * W, W)
    assert len(table) > 0
    assert np.isnan(table.values[:, FEATURE_INDEX["cpu"]]).all()


@pytest.fixture
def faulty_shop(store):
    """130 windows of normal history, then 10 windows with payment 8x slower, ending now."""
    t0 = aligned_start(HISTORY + FAULT)
    insert_spans(store, shop_spans(t0, HISTORY + FAULT, per_window=20, seed=3, fault="payment_latency",
                                   fault_from=HISTORY, fault_to=HISTORY + FAULT))
    return store, t0


def test_train_score_store_restart_and_root_cause(faulty_shop) -> None:
    store, t0 = faulty_shop
    fault_start, end = t0 + HISTORY * W, t0 + (HISTORY + FAULT) * W
    config = AnomalyConfig(train_min_windows=100)
    scorer = Scorer(store, W, config)
    assert not scorer.load()  # cold start: nothing saved yet
    info = scorer.fit(t0, fault_start)
    assert scorer.model is not None and info["version"] == "ae-v1"
    records = scorer.score_range(fault_start, end)
    assert records
    payment = [r for r in records if r.service == "payment" and r.operation in ("", "Charge")]
    assert len({r.window_start for r in payment}) >= FAULT - 1
    top = max(records, key=lambda r: r.score)
    assert top.detector == "autoencoder" and top.kind == "latency"

    listed = list_anomalies(store, start=fault_start, end=end, limit=1000)
    assert len(listed) == len(records)
    assert [r["score"] for r in listed] == sorted((r["score"] for r in listed), reverse=True)
    assert {"window_start", "service", "operation", "score", "severity", "detector", "explanation"} <= set(listed[0])
    assert any("of payment" in r["explanation"] and "expected" in r["explanation"] for r in listed)

    causes = rank_root_causes(store, fault_start, end)
    assert causes[0].service == "payment", causes
    assert causes[0].kind == "latency" and causes[0].score == 1.0
    assert {c.service for c in causes[1:3]} & {"checkout", "frontend"}
    assert any("symptom of anomalous downstream" in c.reason for c in causes[1:])

    # restart: the model comes back from the store and scores identically, without training
    table = compute_features(store, fault_start, end, W)
    again = Scorer(store, W, config)
    assert again.load() and again.model_version == "ae-v1"
    assert np.array_equal(again.model.score(table).score, scorer.model.score(table).score)
    assert [v["version"] for v in state_store.versions(store)] == [1]
    assert state_store.versions(store)[0]["windows"] == HISTORY


def test_serve_step_cold_start_then_trains(faulty_shop) -> None:
    store, t0 = faulty_shop
    now = t0 + (HISTORY + FAULT) * W + 15
    cold = Scorer(store, W, AnomalyConfig(train_min_windows=10_000, max_catchup_windows=FAULT))
    records = cold.step(now)  # not enough history for the model: the baseline scores
    assert cold.model is None and records and {r.detector for r in records} == {"baseline"}
    assert {r.service for r in records} >= {"payment"}
    warm = Scorer(store, W, AnomalyConfig(train_min_windows=100, max_catchup_windows=2))
    warm.step(now)
    assert warm.model is not None and warm.last_scored == t0 + (HISTORY + FAULT - 1) * W
    assert warm.step(now) == []  # nothing new closed since


def test_cli_train_score_list(faulty_shop) -> None:
    store, _ = faulty_shop
    data = ["--clickhouse-url", f"chdb://{store.url.path}", "--database", store.database]
    code, out = cli("anomalies", "train", "--since", "2h", "--json", *data)
    assert code == 0, out
    trained = json.loads(out)
    assert trained["version"] == "ae-v1" and trained["entities"] >= 8
    code, out = cli("anomalies", "score", "--since", "6m", *data)
    assert code == 0 and "anomalies stored" in out
    code, out = cli("anomalies", "list", "--since", "10m", "--json", *data)
    rows = json.loads(out)
    assert code == 0 and rows and rows[0]["score"] >= rows[-1]["score"]
    assert rows[0]["service"] in ("payment", "checkout", "frontend")
    code, out = cli("anomalies", "list", "--since", "10m", "--service", "payment", *data)
    assert code == 0 and out.strip() and all(" payment" in line for line in out.strip().splitlines())
    assert cli("anomalies", "list", "--since", "ten minutes", *data)[0] == 2


def test_silent_service_is_flagged_and_ranked_as_root_cause(store) -> None:
    """payment stops answering: it sends no spans at all, checkout's calls to it fail."""
    t0 = aligned_start(HISTORY + FAULT)
    insert_spans(store, shop_spans(t0, HISTORY + FAULT, per_window=20, seed=4, fault="payment_down",
                                   fault_from=HISTORY, fault_to=HISTORY + FAULT))
    fault_start, end = t0 + HISTORY * W, t0 + (HISTORY + FAULT) * W
    scorer = Scorer(store, W, AnomalyConfig(train_min_windows=100))
    scorer.fit(t0, fault_start)
    records = scorer.score_range(fault_start, end)
    silent = [r for r in records if r.service == "payment" and r.operation == ""]
    assert len(silent) >= FAULT - 1
    assert silent[-1].kind == "traffic" and silent[-1].explanation.startswith("request count of payment 0 vs ")
    assert {r.kind for r in records if r.service == "checkout"} & {"errors", "dependency"}
    causes = rank_root_causes(store, fault_start, end)
    assert causes[0].service == "payment" and causes[0].kind == "traffic", causes[:3]
    assert "symptom of anomalous downstream payment" in next(c.reason for c in causes if c.service == "checkout")
