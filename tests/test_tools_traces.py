"""Trace analytics on hand-made spans with known numbers; expectations are computed here from the
inserted spans (numpy, plain Python), not read back from the tools."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator

import numpy as np
import pytest

from store import Store
from tests.conftest import new_database
from tests.fixtures.telemetry import Span, insert_spans, root
from tools.timewindow import TimeWindow
from tools.traces import (
    attribute_comparison,
    exemplar_traces,
    latency_breakdown,
    service_map,
    service_overview,
    trace_waterfall,
)

NOW = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
WINDOW = TimeWindow(start=NOW - dt.timedelta(minutes=10), end=NOW)
BASELINE = WINDOW.baseline()


def make_trace(start: dt.datetime, slow: bool, error: bool, i: int) -> list[Span]:
    """gateway GET /buy -> inventory reserve, billing charge -> billing client db query."""
    charge_ms = 400.0 + i if slow else 40.0 + (i % 7)
    reserve_ms = 30.0 + (i % 5)
    # region and pod vary within the slow traces (every 6th), so the new version alone sets them apart
    gw = root("gateway", "GET /buy", start, 10 + reserve_ms + charge_ms + 5 + (i % 3),
              attributes={"http.route": "/buy", "region": ["eu", "us"][(i // 2) % 2]})
    reserve = gw.child("inventory", "reserve", 5, reserve_ms, kind="Server")
    charge = gw.child(
        "billing", "charge", 10 + reserve_ms, charge_ms, kind="Server",
        status="Error" if error else "Unset",
        attributes={"app.version": "v2" if slow else "v1"},
        resource={"k8s.pod.name": "billing-7" if error else f"billing-{i % 4}"},
    )
    db = charge.child("billing", "SELECT orders", 2, 12.0, kind="Client", attributes={"db.system": "postgresql"})
    return [gw, reserve, charge, db]


@pytest.fixture(scope="module")
def traces() -> list[list[Span]]:
    out = []
    for i in range(60):  # baseline: normal
        out.append(make_trace(BASELINE.start + dt.timedelta(seconds=5 + i * 9.5), False, False, i))
    for i in range(60):  # window: 10 slow (new version), 6 failing on one pod
        out.append(make_trace(WINDOW.start + dt.timedelta(seconds=5 + i * 9.5), i % 6 == 0, i % 10 == 3, i))
    return out


@pytest.fixture(scope="module")
def tstore(root_store: Store, traces: list[list[Span]]) -> Iterator[Store]:
    store = new_database(root_store, prefix="traces")
    insert_spans(store, [s for t in traces for s in t])
    yield store
    store.close()


def in_window(s: Span, w: TimeWindow) -> bool:
    return w.start <= s.start < w.end


def self_ms(trace: list[Span]) -> dict[str, float]:
    """Self time per span id: duration minus the children's durations (never negative)."""
    kids: dict[str, float] = defaultdict(float)
    for s in trace:
        kids[s.parent_id] += s.duration_ms
    return {s.span_id: max(s.duration_ms - kids[s.span_id], 0.0) for s in trace}


def test_service_overview_numbers(tstore: Store, traces: list[list[Span]]) -> None:
    result = service_overview(tstore, WINDOW, baseline=BASELINE)
    assert result.ok, result.error
    spans = [s for t in traces for s in t]
    rows = {(r["service"], r["operation"]): r for r in result.rows}
    assert set(rows) == {(s.service, s.name) for s in spans}
    for key, row in rows.items():
        now = [s for s in spans if (s.service, s.name) == key and in_window(s, WINDOW)]
        before = [s for s in spans if (s.service, s.name) == key and in_window(s, BASELINE)]
        assert row["calls"] == len(now) and row["base_calls"] == len(before)
        assert row["rate_per_s"] == pytest.approx(len(now) / 600, rel=1e-3)
        assert row["error_pct"] == pytest.approx(100 * sum(s.status == "Error" for s in now) / len(now))
        for q, col in ((50, "p50_ms"), (95, "p95_ms"), (99, "p99_ms")):
            assert row[col] == pytest.approx(np.percentile([s.duration_ms for s in now], q), rel=1e-3)
        assert row["base_p95_ms"] == pytest.approx(np.percentile([s.duration_ms for s in before], 95), rel=1e-3)
    billing = rows[("billing", "charge")]
    assert billing["p95_ratio"] > 5 and billing["error_pct_delta"] == pytest.approx(10.0)
    services = {s["service"]: s for s in result.details["services"]}
    # the service row covers entry spans only: billing's client db spans are not in it
    assert services["billing"]["calls"] == 60 and services["billing"]["entry_spans_only"]
    assert "<telemetry-data>" in result.summary and "billing" in result.summary
    assert len(result.sql) == 1  # operations and services in one scan (GROUPING SETS)


def test_latency_breakdown_finds_the_slow_self_time(tstore: Store, traces: list[list[Span]]) -> None:
    result = latency_breakdown(tstore, WINDOW, "gateway", baseline=BASELINE)
    assert result.ok, result.error
    window_roots = [t for t in traces if in_window(t[0], WINDOW)]
    p90 = np.percentile([t[0].duration_ms for t in window_roots], 90)
    slow = [t for t in window_roots if t[0].duration_ms >= p90 - 1e-6]
    normal = [t for t in traces if in_window(t[0], BASELINE)]
    assert result.details["slow_traces"] == len(slow) and result.details["normal_traces"] == len(normal)

    def per_trace(group: list[list[Span]]) -> dict[tuple[str, str], float]:
        acc: dict[tuple[str, str], float] = defaultdict(float)
        for t in group:
            selfs = self_ms(t)
            for s in t:
                acc[(s.service, s.name)] += selfs[s.span_id] / len(group)
        return acc

    exp_slow, exp_normal = per_trace(slow), per_trace(normal)
    rows = {(r["service"], r["operation"]): r for r in result.rows}
    for key in exp_slow:
        assert rows[key]["slow_self_ms"] == pytest.approx(exp_slow[key], abs=0.01)
        assert rows[key]["normal_self_ms"] == pytest.approx(exp_normal[key], abs=0.01)
    top = result.rows[0]
    assert (top["service"], top["operation"]) == ("billing", "charge")
    charge = ("billing", "charge")
    assert top["delta_ms"] == pytest.approx(exp_slow[charge] - exp_normal[charge], abs=0.01)
    assert result.details["services"][0]["service"] == "billing"


def test_latency_breakdown_unknown_service(tstore: Store) -> None:
    result = latency_breakdown(tstore, WINDOW, "no-such-service")
    assert result.ok and result.rows == [] and "no spans" in result.summary


def test_attribute_comparison_slow_points_at_the_version(tstore: Store, traces: list[list[Span]]) -> None:
    result = attribute_comparison(tstore, WINDOW, target="slow")
    assert result.ok, result.error
    top = result.rows[0]
    assert (top["key"], top["value"]) == ("app.version", "v2")
    slow_charges = [t[2] for t in traces if in_window(t[2], WINDOW) and t[2].attributes["app.version"] == "v2"]
    assert top["target_spans"] == len(slow_charges) and top["other_spans"] == 0
    # the same spans compared within billing only: v2 is 100% of the slow ones
    billing = attribute_comparison(tstore, WINDOW, service="billing", operation="charge", target="slow")
    v2 = next(r for r in billing.rows if r["key"] == "app.version")
    assert v2["value"] == "v2" and v2["target_pct"] == pytest.approx(100.0)


def test_attribute_comparison_leaves_out_the_rarest_operations_beyond_the_cap(
    tstore: Store, traces: list[list[Span]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tools.traces

    # 4 operations with 60 spans each in the window: ties go alphabetically, so inventory/reserve is left out
    monkeypatch.setattr(tools.traces, "MAX_THRESHOLDS", 3)
    result = attribute_comparison(tstore, WINDOW, target="slow")
    assert result.ok, result.error
    assert "1 least frequent operations" in result.summary and "not compared for slowness" in result.summary
    top = result.rows[0]
    slow_charges = [t[2] for t in traces if in_window(t[2], WINDOW) and t[2].attributes["app.version"] == "v2"]
    assert (top["key"], top["value"], top["target_spans"]) == ("app.version", "v2", len(slow_charges))


def test_attribute_comparison_errors_point_at_the_pod(tstore: Store, traces: list[list[Span]]) -> None:
    result = attribute_comparison(tstore, WINDOW, service="billing", target="error")
    assert result.ok, result.error
    failing = [s for t in traces for s in t if in_window(s, WINDOW) and s.status == "Error"]
    others = [s for t in traces for s in t if in_window(s, WINDOW) and s.service == "billing" and s.status != "Error"]
    assert result.details["target_spans"] == len(failing) and result.details["other_spans"] == len(others)
    pod = next(r for r in result.rows if r["key"] == "k8s.pod.name")
    assert pod["value"] == "billing-7" and pod["scope"] == "resource"
    assert pod["target_pct"] == pytest.approx(100.0)
    assert pod["other_pct"] == pytest.approx(100 * sum(s.resource.get("k8s.pod.name") == "billing-7"
                                                        for s in others) / len(others))
    assert result.rows[0]["diff_pct"] >= pod["diff_pct"] - 1e-9


def test_exemplar_traces_and_waterfall(tstore: Store, traces: list[list[Span]]) -> None:
    result = exemplar_traces(tstore, WINDOW, kind="slow", limit=3)
    assert result.ok, result.error
    window_traces = [t for t in traces if in_window(t[0], WINDOW)]
    slowest = sorted(window_traces, key=lambda t: t[0].duration_ms, reverse=True)[:3]
    assert [r["trace_id"] for r in result.rows] == [t[0].trace_id for t in slowest]
    assert result.rows[0]["spans"] == 4
    assert result.rows[0]["trace_duration_ms"] == pytest.approx(slowest[0][0].duration_ms, abs=0.01)
    assert set(result.details["waterfalls"]) == {t[0].trace_id for t in slowest}

    errors = exemplar_traces(tstore, WINDOW, service="billing", kind="error", limit=10)
    failing = {t[0].trace_id for t in window_traces if t[2].status == "Error"}
    assert errors.ok and {r["trace_id"] for r in errors.rows} == failing
    assert all(r["error_spans"] == 1 for r in errors.rows)

    trace = slowest[0]
    wf = trace_waterfall(tstore, trace[0].trace_id)
    assert wf.ok and len(wf.rows) == 4
    by_id = {r["span_id"]: r for r in wf.rows}
    selfs = self_ms(trace)
    for s in trace:
        row = by_id[s.span_id]
        assert row["duration_ms"] == pytest.approx(s.duration_ms, abs=0.001)
        assert row["self_ms"] == pytest.approx(selfs[s.span_id], abs=0.001)
        assert row["offset_ms"] == pytest.approx((s.start - trace[0].start).total_seconds() * 1000, abs=0.001)
    assert [r["depth"] for r in wf.rows] == [0, 1, 1, 2]
    # critical path, walked back from the end: charge (and its db call), then reserve, which ended before
    # charge started
    assert {r["operation"] for r in wf.rows if r["critical"]} == {"GET /buy", "reserve", "charge", "SELECT orders"}
    assert "billing charge" in wf.summary


def test_trace_waterfall_bad_and_missing_ids(tstore: Store) -> None:
    bad = trace_waterfall(tstore, "x'; DROP TABLE otel_traces; --")
    assert not bad.ok and "not a trace id" in bad.error
    missing = trace_waterfall(tstore, "ab" * 16)
    assert missing.ok and missing.rows == [] and "not found" in missing.summary


def test_service_map_edges(tstore: Store, traces: list[list[Span]]) -> None:
    result = service_map(tstore, WINDOW)
    assert result.ok, result.error
    edges = {(r["caller"], r["callee"]): r for r in result.rows}
    window_traces = [t for t in traces if in_window(t[0], WINDOW)]
    charges = [t[2] for t in window_traces]
    assert edges[("gateway", "inventory")]["calls"] == len(window_traces)
    bill = edges[("gateway", "billing")]
    assert bill["calls"] == len(charges)
    assert bill["error_pct"] == pytest.approx(100 * sum(c.status == "Error" for c in charges) / len(charges))
    assert bill["p95_ms"] == pytest.approx(np.percentile([c.duration_ms for c in charges], 95), rel=1e-3)
    db = edges[("billing", "postgresql")]
    assert db["via"] == "client" and db["calls"] == len(window_traces)
    assert ("billing", "billing") not in edges


def test_tools_report_empty_windows(tstore: Store) -> None:
    empty = TimeWindow(start=NOW - dt.timedelta(days=30), end=NOW - dt.timedelta(days=29))
    for result in (service_overview(tstore, empty), service_map(tstore, empty),
                   exemplar_traces(tstore, empty), attribute_comparison(tstore, empty)):
        assert result.ok and result.rows == [], result.name
        assert result.summary


def test_attribute_comparison_samples_only_the_others(tstore: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # Within billing, where the new version is 100 % of the slow spans and 0 % of the others, so no sample of
    # the others can outrank it. (Over every service, the slow gateway spans' http.route=/buy trails it by 8
    # points, which a sample of 36 others can close: the sample follows the timestamps, so the wall clock.)
    full = attribute_comparison(tstore, WINDOW, service="billing", target="slow")
    monkeypatch.setattr("tools.traces.SAMPLE_OTHER_SPANS", 40)
    sampled = attribute_comparison(tstore, WINDOW, service="billing", target="slow")
    assert sampled.ok and sampled.details["sample_1_in"] == 3  # 120 billing spans in the window / 40
    assert sampled.details["target_spans"] == full.details["target_spans"]  # every slow span kept
    assert 0 < sampled.details["other_spans"] < full.details["other_spans"]
    top = sampled.rows[0]
    assert (top["key"], top["value"], top["target_spans"]) == ("app.version", "v2", 10)
    assert "1 in 3 sampled" in sampled.summary


def test_latency_breakdown_counts_callers_that_started_long_before(root_store: Store) -> None:
    """A caller span that began minutes before the service's entry span is part of its trace's time."""
    store = new_database(root_store, prefix="callers")
    spans = []
    for i in range(30):
        start = WINDOW.start + dt.timedelta(seconds=20 * i)
        caller = root("batch", "nightly job", start, 200_000.0)  # 200 s, its call to api 150 s in
        spans += [caller, caller.child("api", "POST /import", 150_000, 800.0 if i % 10 == 0 else 80.0, kind="Server")]
    insert_spans(store, spans)
    result = latency_breakdown(store, WINDOW, "api")
    assert result.ok, result.error
    rows = {(r["service"], r["operation"]): r for r in result.rows}
    slow = [s for s in spans if s.service == "api" and s.duration_ms >= 800.0]
    assert result.details["slow_traces"] == len(slow) == 3
    # the caller's self time (200 s minus its 0.8 s call) is in every slow trace
    assert rows[("batch", "nightly job")]["slow_self_ms"] == pytest.approx(200_000.0 - 800.0, abs=0.01)
    store.close()
