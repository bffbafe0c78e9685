"""Anomaly lookup and root-cause candidates over rows written into the anomalies table; schema text."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest

from store import Store
from tests.fixtures.telemetry import insert_spans, root
from tools.anomalies import find_anomalies, root_cause_candidates
from tools.schema_info import describe_tables
from tools.timewindow import TimeWindow

NOW = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
WINDOW = TimeWindow(start=NOW - dt.timedelta(minutes=15), end=NOW)


def insert_anomalies(store: Store, rows: list[dict]) -> None:
    cols = ["window_start", "window_end", "service", "operation", "span_kind", "score", "severity", "detector",
            "kind", "model_version", "features", "contributions", "explanation"]
    store.insert("anomalies", cols, [[r[c] for r in rows] for c in cols])


def anomaly(minutes_ago: int, service: str, operation: str, score: float, severity: str, kind: str = "latency",
            explanation: str = "p95 up") -> dict:
    start = NOW - dt.timedelta(minutes=minutes_ago)
    contributions = json.dumps([{"feature": "p95", "label": "p95 latency ms", "actual": 420.0, "expected": 45.0,
                                 "z": 9.1, "share": 0.8}])
    return {"window_start": start, "window_end": start + dt.timedelta(seconds=30), "service": service,
            "operation": operation, "span_kind": "server", "score": score, "severity": severity,
            "detector": "autoencoder", "kind": kind, "model_version": "t1", "features": "{}",
            "contributions": contributions, "explanation": explanation}


def test_find_anomalies_groups_entities(store: Store) -> None:
    insert_anomalies(store, [
        anomaly(5, "billing", "charge", 3.5, "warning"),
        anomaly(4, "billing", "charge", 6.0, "critical", explanation="charge p95 420 ms vs 45 ms"),
        anomaly(3, "gateway", "GET /buy", 1.4, "info"),
        anomaly(90, "billing", "charge", 9.0, "critical"),  # outside the window
    ])
    result = find_anomalies(store, WINDOW)
    assert result.ok, result.error
    assert [(r["service"], r["windows"]) for r in result.rows] == [("billing", 2), ("gateway", 1)]
    top = result.rows[0]
    assert top["max_score"] == 6.0 and top["severity"] == "critical"
    assert top["explanation"] == "charge p95 420 ms vs 45 ms"
    assert "p95 latency ms 420 vs 45" in top["top_contributions"]
    assert "billing" in result.summary and result.sql
    only = find_anomalies(store, WINDOW, service="gateway")
    assert [r["service"] for r in only.rows] == ["gateway"]
    none = find_anomalies(store, WINDOW, service="nope")
    assert none.ok and none.rows == [] and "no anomalies" in none.summary


def test_root_cause_candidates_rank_the_origin(store: Store) -> None:
    spans = []
    for i in range(20):
        gw = root("gateway", "GET /buy", NOW - dt.timedelta(minutes=10, seconds=-i), 300)
        spans += [gw, gw.child("billing", "charge", 5, 280)]
    insert_spans(store, spans)
    insert_anomalies(store, [anomaly(m, "billing", "charge", 6.0, "critical") for m in (8, 7, 6)]
                     + [anomaly(m, "gateway", "GET /buy", 4.0, "warning") for m in (8, 7, 6)])
    result = root_cause_candidates(store, WINDOW)
    assert result.ok, result.error
    assert [r["rank"] for r in result.rows] == list(range(1, len(result.rows) + 1))
    assert result.rows[0]["service"] == "billing"  # the callee explains the caller
    assert result.rows[0]["score"] == pytest.approx(1.0)


def test_anomaly_tools_without_rows_or_table(store: Store, root_store: Store) -> None:
    assert find_anomalies(store, WINDOW).rows == []
    assert "no anomalies" in root_cause_candidates(store, WINDOW).summary
    bare = root_store.with_database(f"bare_{uuid.uuid4().hex[:8]}")
    try:
        result = find_anomalies(bare, WINDOW)
        assert result.ok and "no anomalies table" in result.summary
        assert "No telemetry tables" in describe_tables(bare)
    finally:
        bare.close()


def test_describe_tables_lists_only_allowed_tables(store: Store) -> None:
    text = describe_tables(store)
    assert "otel_traces: Timestamp DateTime64(9)" in text and "Duration UInt64" in text
    assert "anomalies:" in text and "otel_metrics_sum:" in text
    assert "anomaly_model_state" not in text and "otel_ai_migrations" not in text
    assert "NANOSECONDS" in text
