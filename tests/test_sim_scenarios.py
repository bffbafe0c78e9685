"""Every scenario through the real path: simulator -> SDK OTLP exporters -> IngestService -> chDB.

The root cause must be visible in the stored data by its kind (latency, errors, dependency,
saturation), the fault must reach the symptom service, the fault-free run must show no change,
and everything sent must be stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest

from sim.scenarios import SCENARIOS, GroundTruth
from store import Store
from tests.fixtures.scenario import SHORT_FAULT_MINUTES, SHORT_RUN, LoadedScenario, load_scenario, stored_counts
from tools.timewindow import TimeWindow


@dataclass
class Stat:
    n: int
    p95_ms: float
    err: float


def load(root_store: Store, name: str) -> LoadedScenario:
    # the same arguments as other suites' short runs, so the session cache shares the databases
    return load_scenario(root_store, name, **SHORT_RUN)


def windows(loaded: LoadedScenario) -> tuple[TimeWindow, TimeWindow]:
    """(baseline, fault): the history before the fault, and the fault."""
    fault_start = loaded.result.end - timedelta(minutes=SHORT_FAULT_MINUTES)
    return (TimeWindow(start=loaded.result.start, end=fault_start),
            TimeWindow(start=fault_start, end=loaded.result.end))


def op_stats(store: Store, window: TimeWindow) -> dict[tuple[str, str], Stat]:
    rows = store.query(
        "SELECT ServiceName, SpanName, count(), quantile(0.95)(Duration) / 1e6, countIf(StatusCode = 'Error') / count()"
        f" FROM otel_traces WHERE SpanKind IN ('Server', 'Consumer') AND {window.sql_filter()}"
        " GROUP BY ServiceName, SpanName").rows
    return {(r[0], r[1]): Stat(int(r[2]), float(r[3]), float(r[4])) for r in rows}


def client_errors(store: Store, window: TimeWindow, target: str) -> Stat:
    row = store.query(
        "SELECT count(), quantile(0.95)(Duration) / 1e6, countIf(StatusCode = 'Error') / greatest(count(), 1)"
        f" FROM otel_traces WHERE SpanKind = 'Client' AND SpanAttributes['server.address'] = '{target}'"
        f" AND {window.sql_filter()}").rows[0]
    return Stat(int(row[0]), float(row[1] or 0), float(row[2]))


def gauge(store: Store, window: TimeWindow, metric: str, service: str | None = None,
          node: str | None = None) -> tuple[float, float]:
    """(avg, max) of a gauge for a service's pods (or a node) in the window."""
    where = f"ServiceName = '{service}'" if service else f"ResourceAttributes['k8s.node.name'] = '{node}'"
    row = store.query(f"SELECT avg(Value), max(Value) FROM otel_metrics_gauge WHERE MetricName = '{metric}'"
                      f" AND {where} AND {window.sql_filter('TimeUnix')}").rows[0]
    return float(row[0] or 0), float(row[1] or 0)


def span_rate(store: Store, window: TimeWindow, service: str, name: str) -> float:
    count = store.query(f"SELECT count() FROM otel_traces WHERE ServiceName = '{service}' AND SpanName = '{name}'"
                        f" AND {window.sql_filter()}").scalar()
    return int(count) / window.seconds


def changed_ops(base: dict[tuple[str, str], Stat], fault: dict[tuple[str, str], Stat], service: str | None = None,
                operation: str | None = None, min_n: int = 15) -> list[str]:
    """Operations whose p95 at least doubled (and grew 25 ms) or whose error rate rose by 5 points."""
    out = []
    for key, f in fault.items():
        b = base.get(key)
        if (service and key[0] != service) or (operation and key[1] != operation) or not b:
            continue
        if b.n < min_n or f.n < min_n:
            continue
        if f.p95_ms >= 2 * b.p95_ms and f.p95_ms - b.p95_ms >= 25:
            out.append(f"{key} p95 {b.p95_ms:.0f} -> {f.p95_ms:.0f} ms")
        if f.err - b.err >= 0.05:
            out.append(f"{key} errors {b.err:.2f} -> {f.err:.2f}")
    return out


def resource_changes(store: Store, base: TimeWindow, fault: TimeWindow, service: str) -> list[str]:
    out = []
    cpu_b, cpu_f = gauge(store, base, "k8s.pod.cpu.utilization", service), gauge(store, fault,
                                                                                 "k8s.pod.cpu.utilization", service)
    if cpu_f[0] - cpu_b[0] >= 0.3:
        out.append(f"cpu {cpu_b[0]:.2f} -> {cpu_f[0]:.2f}")
    mem_b, mem_f = (gauge(store, w, "k8s.pod.memory.working_set", service) for w in (base, fault))
    if mem_f[1] >= 1.5 * mem_b[0]:
        out.append(f"memory {mem_b[0] / 2**20:.0f} -> {mem_f[1] / 2**20:.0f} MiB")
    lag_b, lag_f = (gauge(store, w, "kafka.consumer.lag", service) for w in (base, fault))
    if lag_f[1] >= 20 and lag_b[1] <= 3:
        out.append(f"consumer lag {lag_b[1]:.0f} -> {lag_f[1]:.0f}")
    return out


def root_cause_evidence(store: Store, truth: GroundTruth, base_w: TimeWindow, fault_w: TimeWindow) -> list[str]:
    """What in the stored data singles out the root cause, by the kind of fault."""
    service, op = truth.root_cause_service, truth.root_cause_operation
    assert service
    base, fault = op_stats(store, base_w), op_stats(store, fault_w)
    if truth.kind in ("latency", "errors"):
        found = changed_ops(base, fault, service, op)
        kind_word = "p95" if truth.kind == "latency" else "errors"
        return [c for c in found if kind_word in c]
    if truth.kind == "dependency":
        b, f = client_errors(store, base_w, service), client_errors(store, fault_w, service)
        return [f"calls to {service} fail {b.err:.2f} -> {f.err:.2f}"] if f.n and f.err - b.err >= 0.3 else []
    evidence = resource_changes(store, base_w, fault_w, service)
    if op:
        before, during = span_rate(store, base_w, service, op), span_rate(store, fault_w, service, op)
        if during >= 3 * before > 0:
            evidence.append(f"{op} {before:.2f}/s -> {during:.2f}/s")
    if truth.root_cause_node:
        nb, nf = (gauge(store, w, "k8s.node.cpu.utilization", node=truth.root_cause_node) for w in (base_w, fault_w))
        assert nf[0] >= 0.9 > nb[0], (nb, nf)
    return evidence


FAULTY = [name for name in SCENARIOS if name != "none"]


@pytest.mark.parametrize("name", FAULTY)
def test_root_cause_and_symptom_visible_in_stored_data(root_store, name):
    loaded = load(root_store, name)
    truth = loaded.truth
    assert truth.scenario == name and truth.start and truth.end
    assert truth.end - truth.start == timedelta(minutes=SHORT_FAULT_MINUTES)
    base_w, fault_w = windows(loaded)
    evidence = root_cause_evidence(loaded.store, truth, base_w, fault_w)
    assert evidence, f"{name}: nothing in the data points at {truth.root_cause_service} ({truth.kind})"
    symptom = truth.symptom_service
    assert symptom
    base, fault = op_stats(loaded.store, base_w), op_stats(loaded.store, fault_w)
    reached = changed_ops(base, fault, symptom, min_n=5) + resource_changes(loaded.store, base_w, fault_w, symptom)
    assert reached, f"{name}: the fault did not reach {symptom}"
    if truth.kind in ("errors", "dependency"):
        errors = loaded.store.query(
            f"SELECT count() FROM otel_logs WHERE ServiceName = '{symptom}' AND SeverityText = 'ERROR'"
            f" AND {fault_w.sql_filter()}").scalar()
        assert errors >= 3, f"{name}: no error logs in {symptom}"


def test_fault_free_run_shows_no_change(root_store):
    loaded = load(root_store, "none")
    assert loaded.truth.root_cause_service is None and loaded.truth.start is None
    base_w, fault_w = windows(loaded)
    store = loaded.store
    changes = changed_ops(op_stats(store, base_w), op_stats(store, fault_w), min_n=30)
    assert changes == []
    for service in ("ad", "payment", "email", "recommendation", "fraud-detection", "accounting", "checkout"):
        assert resource_changes(store, base_w, fault_w, service) == [], service
    errors = store.query(f"SELECT countIf(StatusCode = 'Error') / count() FROM otel_traces WHERE {fault_w.sql_filter()}"
                         ).scalar()
    assert errors < 0.01


def test_everything_sent_is_stored(root_store):
    loaded = load(root_store, "paymentSlow")
    # request histograms carry exemplars: the slowest request of each interval, a stored span
    linked = loaded.store.query(
        "SELECT count(), countIf((tid, sid) IN (SELECT TraceId, SpanId FROM otel_traces)) FROM otel_metrics_histogram"
        " ARRAY JOIN Exemplars.TraceId AS tid, Exemplars.SpanId AS sid WHERE MetricName = 'rpc.server.duration'"
        " AND ServiceName = 'payment'").rows[0]
    assert linked[0] > 10 and linked[1] == linked[0]
    assert loaded.sent["spans"] > 10_000 and loaded.sent["logs"] > 2_000 and loaded.sent["metrics"] > 3_000
    assert stored_counts(loaded.store) == loaded.sent
    stats = loaded.ingest_stats
    assert (stats["traces"]["stored"], stats["logs"]["stored"], stats["metrics"]["stored"]) == (
        loaded.sent["spans"], loaded.sent["logs"], loaded.sent["metrics"])
