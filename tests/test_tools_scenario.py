"""The tools on simulator data (real OTLP through real ingest): their numbers against the same numbers
computed here from raw rows, and their findings against the scenario's ground truth."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from store import Store
from tests.fixtures.scenario import LoadedScenario, load_scenario
from tools.logs import log_patterns
from tools.metrics import resource_metrics
from tools.timewindow import TimeWindow
from tools.traces import (
    TRACE_SLACK,
    attribute_comparison,
    exemplar_traces,
    latency_breakdown,
    service_map,
    service_overview,
    trace_waterfall,
)

ENTRY_KINDS = ("Server", "Consumer")


@pytest.fixture(scope="module")
def slow(root_store: Store) -> LoadedScenario:
    return load_scenario(root_store, "paymentSlow")


@pytest.fixture(scope="module")
def failing(root_store: Store) -> LoadedScenario:
    return load_scenario(root_store, "paymentFailure")


def window_of(sc: LoadedScenario) -> TimeWindow:
    return TimeWindow(start=sc.truth.start, end=sc.truth.end)


def raw_spans(store: Store, window: TimeWindow, where: str = "1 = 1") -> list[dict]:
    return store.query(
        "SELECT TraceId, SpanId, ParentSpanId, ServiceName, SpanName, SpanKind, StatusCode, Duration / 1e6 AS ms, "
        f"SpanAttributes FROM otel_traces WHERE {window.sql_filter()} AND {where}").dicts()


def test_overview_matches_raw_spans_and_points_at_the_slow_service(slow: LoadedScenario) -> None:
    window, truth = window_of(slow), slow.truth
    result = service_overview(slow.store, window)
    assert result.ok, result.error
    spans = raw_spans(slow.store, window, f"ServiceName = '{truth.root_cause_service}'")
    by_op: dict[str, list[dict]] = defaultdict(list)
    for s in spans:
        by_op[s["SpanName"]].append(s)
    rows = {r["operation"]: r for r in result.rows if r["service"] == truth.root_cause_service}
    assert set(rows) == set(by_op)
    for op, group in by_op.items():
        durations = [s["ms"] for s in group]
        assert rows[op]["calls"] == len(group)
        assert rows[op]["p95_ms"] == pytest.approx(np.percentile(durations, 95), rel=1e-3)
        # the tool reports percentages to 3 decimals (tools.traces._pct)
        assert rows[op]["error_pct"] == pytest.approx(100 * sum(s["StatusCode"] == "Error" for s in group)
                                                      / len(group), abs=0.0005)
    assert rows[truth.root_cause_operation]["p95_ratio"] > 10
    assert result.details["services"][0]["service"] == truth.root_cause_service


def test_latency_breakdown_self_time_matches_raw_traces(slow: LoadedScenario) -> None:
    window, truth = window_of(slow), slow.truth
    result = latency_breakdown(slow.store, window, truth.symptom_service)
    assert result.ok, result.error
    entries = [s for s in raw_spans(slow.store, window, f"ServiceName = '{truth.symptom_service}'")
               if s["SpanKind"] in ENTRY_KINDS or not s["ParentSpanId"]]
    p90 = np.percentile([s["ms"] for s in entries], 90)
    slow_ids = sorted({s["TraceId"] for s in entries if s["ms"] >= p90 - 1e-6})
    assert result.details["slow_traces"] == len(slow_ids)
    wide = TimeWindow(start=window.baseline().start - TRACE_SLACK, end=window.end + TRACE_SLACK)
    ids = ", ".join(f"'{t}'" for t in slow_ids)
    spans = raw_spans(slow.store, wide, f"TraceId IN ({ids})")
    children: dict[tuple[str, str], float] = defaultdict(float)
    for s in spans:
        children[(s["TraceId"], s["ParentSpanId"])] += s["ms"]
    self_ms: dict[tuple[str, str], float] = defaultdict(float)
    for s in spans:
        self_ms[(s["ServiceName"], s["SpanName"])] += max(s["ms"] - children[(s["TraceId"], s["SpanId"])], 0.0)
    rows = {(r["service"], r["operation"]): r for r in result.rows}
    for key, total in self_ms.items():
        assert rows[key]["slow_self_ms"] == pytest.approx(total / len(slow_ids), abs=0.01), key
    top = result.rows[0]
    assert (top["service"], top["operation"]) == (truth.root_cause_service, truth.root_cause_operation)


def test_exemplars_and_waterfall_match_raw_spans(slow: LoadedScenario) -> None:
    window, truth = window_of(slow), slow.truth
    result = exemplar_traces(slow.store, window, service=truth.root_cause_service,
                             operation=truth.root_cause_operation, kind="slow", limit=3)
    assert result.ok, result.error
    spans = raw_spans(slow.store, window, f"ServiceName = '{truth.root_cause_service}' "
                                          f"AND SpanName = '{truth.root_cause_operation}'")
    slowest = [s["TraceId"] for s in sorted(spans, key=lambda s: s["ms"], reverse=True)][:3]
    assert [r["trace_id"] for r in result.rows] == slowest
    wide = TimeWindow(start=window.start - TRACE_SLACK, end=window.end + TRACE_SLACK)
    trace = raw_spans(slow.store, wide, f"TraceId = '{slowest[0]}'")
    waterfall = trace_waterfall(slow.store, slowest[0])
    assert waterfall.ok and len(waterfall.rows) == len(trace) == result.rows[0]["spans"]
    assert {(r["service"], r["operation"]) for r in waterfall.rows if r["critical"]} >= {
        (truth.root_cause_service, truth.root_cause_operation)}


def test_service_map_matches_raw_parent_child_pairs(slow: LoadedScenario) -> None:
    window = window_of(slow)
    result = service_map(slow.store, window)
    assert result.ok, result.error
    wide = TimeWindow(start=window.start - TRACE_SLACK, end=window.end + TRACE_SLACK)
    owner = {(s["TraceId"], s["SpanId"]): s["ServiceName"] for s in raw_spans(slow.store, wide)}
    calls: dict[tuple[str, str], int] = defaultdict(int)
    # Every kind of child counts here: the tool's join skips client/producer/internal children, and this shows
    # that it loses no edge of the simulator's data by doing so.
    for s in raw_spans(slow.store, window, "ParentSpanId != ''"):
        parent = owner.get((s["TraceId"], s["ParentSpanId"]))
        if parent and parent != s["ServiceName"]:
            calls[(parent, s["ServiceName"])] += 1
    edges = {(r["caller"], r["callee"]): r["calls"] for r in result.rows if r["via"] == "span"}
    assert edges == dict(calls)
    assert (slow.truth.symptom_service, "checkout") in edges or any(c == slow.truth.root_cause_service
                                                                    for _, c in edges)


def test_resource_metrics_match_raw_points(slow: LoadedScenario) -> None:
    window = window_of(slow)
    result = resource_metrics(slow.store, window)
    assert result.ok, result.error
    raw = slow.store.query(
        "SELECT ResourceAttributes['k8s.pod.name'] AS pod, avg(Value) AS v, max(Value) AS m FROM otel_metrics_gauge "
        f"WHERE MetricName = 'k8s.pod.cpu.utilization' AND {window.sql_filter('TimeUnix')} GROUP BY pod").dicts()
    assert raw
    rows = {r["instance"]: r for r in result.rows if r["metric"] == "k8s.pod.cpu.utilization"}
    for r in raw:
        assert rows[r["pod"]]["value"] == pytest.approx(r["v"], rel=1e-6)
        assert rows[r["pod"]]["max"] == pytest.approx(r["m"], rel=1e-6)
        assert rows[r["pod"]]["category"] == "cpu" and rows[r["pod"]]["unit"] == "1"


def test_error_attributes_point_at_the_evidence_attribute(failing: LoadedScenario) -> None:
    window, truth = window_of(failing), failing.truth
    result = attribute_comparison(failing.store, window, service=truth.root_cause_service, target="error")
    assert result.ok, result.error
    spans = raw_spans(failing.store, window, f"ServiceName = '{truth.root_cause_service}'")
    bad = [s for s in spans if s["StatusCode"] == "Error"]
    good = [s for s in spans if s["StatusCode"] != "Error"]
    assert result.details["target_spans"] == len(bad) and result.details["other_spans"] == len(good)
    (key, value), = truth.evidence_attributes.items()
    row = next(r for r in result.rows if (r["key"], r["value"]) == (key, value))
    # percentages are reported to 3 decimals (33 of 34 failing spans is 97.059 %)
    assert row["target_pct"] == pytest.approx(100 * sum(s["SpanAttributes"].get(key) == value for s in bad) / len(bad),
                                              abs=0.0005)
    assert row["other_pct"] == pytest.approx(100 * sum(s["SpanAttributes"].get(key) == value for s in good)
                                             / len(good), abs=0.0005)
    assert row["target_pct"] > 90 and row["other_pct"] < 10
    assert "status" not in {r["key"] for r in result.rows}


def test_error_logs_are_new_and_linked_to_failing_traces(failing: LoadedScenario) -> None:
    window, truth = window_of(failing), failing.truth
    result = log_patterns(failing.store, window, service=truth.root_cause_service)
    assert result.ok, result.error
    errors = failing.store.query(
        f"SELECT TraceId FROM otel_logs WHERE ServiceName = '{truth.root_cause_service}' AND SeverityNumber >= 17 "
        f"AND {window.sql_filter()}").column("TraceId")
    assert errors
    rows = [r for r in result.rows if r["is_error"]]
    assert sum(r["count"] for r in rows) == len(errors)
    assert rows[0]["status"] == "new" and rows[0]["base_count"] == 0
    failing_traces = set(failing.store.query(
        f"SELECT TraceId FROM otel_traces WHERE StatusCode = 'Error' AND {window.sql_filter()}").column("TraceId"))
    assert rows[0]["trace_ids"] and set(rows[0]["trace_ids"]) <= failing_traces
    exemplars = exemplar_traces(failing.store, window, service=truth.root_cause_service, kind="error", limit=5)
    assert exemplars.ok and exemplars.rows
    assert all(r["error_spans"] >= 1 and r["trace_id"] in failing_traces for r in exemplars.rows)
