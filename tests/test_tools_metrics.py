"""Resource metrics on hand-made gauges and sums: values, counter rates, categories and saturation."""

from __future__ import annotations

import datetime as dt

import pytest

from store import Store
from tests.fixtures.telemetry import Point, insert_gauge, insert_sum
from tools.metrics import resource_metrics
from tools.timewindow import TimeWindow

NOW = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
WINDOW = TimeWindow(start=NOW - dt.timedelta(minutes=10), end=NOW)
BASELINE = WINDOW.baseline()


def series(w: TimeWindow, metric: str, values: list[float], unit: str = "", pod: str = "api-1") -> list[Point]:
    step = w.seconds / len(values)
    return [Point("api", metric, w.start + dt.timedelta(seconds=step * i + 1), v, unit,
                  resource={"k8s.pod.name": pod}) for i, v in enumerate(values)]


def test_resource_metrics(store: Store) -> None:
    cpu_before, cpu_now = [0.3, 0.32, 0.28, 0.3], [0.7, 0.95, 0.97, 0.9]
    gauges = series(BASELINE, "process.cpu.utilization", cpu_before, "1")
    gauges += series(WINDOW, "process.cpu.utilization", cpu_now, "1")
    gauges += series(BASELINE, "process.cpu.utilization", [0.3] * 4, "1", pod="api-2")
    gauges += series(WINDOW, "process.cpu.utilization", [0.31] * 4, "1", pod="api-2")
    gauges += series(BASELINE, "db.client.connections.usage", [3, 4, 3, 2], "{connection}")
    gauges += series(WINDOW, "db.client.connections.usage", [8, 10, 10, 9], "{connection}")
    gauges += series(BASELINE, "db.client.connections.max", [10] * 4, "{connection}")
    gauges += series(WINDOW, "db.client.connections.max", [10] * 4, "{connection}")
    leak = [100e6 + i * 12e6 for i in range(6)]  # steady rise within the window: +60 MB on a 130 MB average
    gauges += series(BASELINE, "process.memory.usage", [100e6] * 6, "By")
    gauges += series(WINDOW, "process.memory.usage", leak, "By")
    insert_gauge(store, gauges)
    before = [i * 60.0 for i in range(10)]  # cumulative counter: 1/s before, 4/s now
    now = [before[-1] + 60 + i * 240.0 for i in range(10)]
    counter_b, counter_w = series(BASELINE, "http.server.requests", before), series(WINDOW, "http.server.requests", now)
    insert_sum(store, counter_b + counter_w)
    insert_sum(store, series(BASELINE, "messaging.queue.size", [2, 3, 2, 1]) +
               series(WINDOW, "messaging.queue.size", [20, 40, 60, 80]), monotonic=False)

    result = resource_metrics(store, WINDOW, baseline=BASELINE)
    assert result.ok, result.error
    rows = {(r["instance"], r["metric"]): r for r in result.rows}
    cpu = rows[("api-1", "process.cpu.utilization")]
    assert cpu["value"] == pytest.approx(sum(cpu_now) / 4) and cpu["max"] == pytest.approx(0.97)
    assert cpu["base_value"] == pytest.approx(sum(cpu_before) / 4)
    assert (cpu["category"], cpu["flag"], cpu["kind"]) == ("cpu", "saturated", "gauge")
    assert rows[("api-2", "process.cpu.utilization")]["flag"] == ""
    pool = rows[("api-1", "db.client.connections.usage")]
    assert pool["category"] == "pool" and pool["limit_ratio"] == pytest.approx(1.0) and pool["flag"] == "saturated"

    def rate(points: list[Point]) -> float:
        return (points[-1].value - points[0].value) / (points[-1].time - points[0].time).total_seconds()

    req = rows[("api-1", "http.server.requests")]
    assert req["kind"] == "counter" and req["unit"] == "/s"
    assert req["value"] == pytest.approx(rate(counter_w)) and req["base_value"] == pytest.approx(rate(counter_b))
    assert req["change"] == pytest.approx(rate(counter_w) / rate(counter_b), rel=1e-4) and req["flag"] == "increased"
    queue = rows[("api-1", "messaging.queue.size")]
    assert (queue["kind"], queue["category"], queue["value"], queue["max"]) == ("updown", "queue", 50, 80)
    assert queue["flag"] == "growing"  # filling steadily through the window (20, 40, 60, 80)
    mem = rows[("api-1", "process.memory.usage")]
    assert mem["category"] == "memory" and mem["change"] == pytest.approx(sum(leak) / 6 / 100e6)  # < 1.5x
    assert mem["growth_pct"] == pytest.approx(100 * (leak[-1] - leak[0]) / (sum(leak) / 6))
    assert mem["flag"] == "growing"
    assert rows[("api-2", "process.cpu.utilization")]["growth_pct"] is None  # flat: no trend
    assert [r["flag"] for r in result.rows[:4]] == ["saturated", "saturated", "growing", "growing"]
    assert "[saturated]" in result.summary

    only = resource_metrics(store, WINDOW, service="nope")
    assert only.ok and only.rows == []
