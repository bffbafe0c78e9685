"""The minute a symptom changed (anomaly.changepoint), and the analyst comparing from there."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

from agent import ask_sync
from anomaly.changepoint import Change, Minute, clearest_change
from tests.conftest import new_database
from tests.fixtures.agent_data import FAULT_MINUTES, TRACE_COLUMNS, synth_incident
from tests.test_agent import settings_for

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def series(latency: list[float], errors: list[int] | None = None, calls: int = 120, seed: int = 1) -> list[Minute]:
    rng = random.Random(seed)
    errors = errors or [0] * len(latency)
    return [Minute(T0 + timedelta(minutes=i), calls, e, ms * rng.uniform(0.93, 1.07))
            for i, (ms, e) in enumerate(zip(latency, errors, strict=True))]


def find_change(minutes: list[Minute]) -> Change | None:
    """The change the incident window would move to: the clearest one, when measurable."""
    change = clearest_change(minutes)
    return change if change is not None and change.measurable else None


def test_a_latency_step_is_found_at_its_first_minute():
    change = find_change(series([100.0] * 30 + [400.0] * 6))
    assert change and change.kind == "latency" and change.at == T0 + timedelta(minutes=30)
    assert change.before < 110 < 360 < change.after


def test_an_error_step_is_found_at_its_first_minute():
    change = find_change(series([100.0] * 36, [0] * 25 + [12] * 11))
    assert change and change.kind == "errors" and change.at == T0 + timedelta(minutes=25)


def test_steady_traffic_and_a_single_odd_minute_are_no_change():
    assert find_change(series([100.0] * 40)) is None
    assert find_change(series([100.0] * 30 + [900.0] + [100.0] * 9)) is None
    # a step after six minutes of history: too little ordinary behaviour to measure it against (or to be a baseline)
    assert find_change(series([100.0] * 6 + [400.0] * 30)) is None
    # a rise too small to call slow, however clear
    assert find_change(series([100.0] * 30 + [112.0] * 10, seed=3)) is None


def test_a_partial_last_minute_with_a_few_slow_calls_is_no_change():
    """The minute still in progress when the question is asked: two calls, both on the slow path. Counted as a
    whole minute, it and the minute before it read as a step to 1.25x at z = 6.8 (a CI run moved the window
    there and left the incident in the baseline); a minute of two calls is that much noisier."""
    minutes = series([70.0] * 40)
    minutes[-1] = Minute(minutes[-1].minute, 2, 0, 110.0)
    assert find_change(minutes) is None
    # a real step that is still young keeps its full minutes' weight: two whole minutes and the partial third
    young = series([70.0] * 38 + [140.0] * 2)
    young.append(Minute(young[-1].minute + timedelta(minutes=1), 5, 0, 140.0))
    change = find_change(young)
    assert change and change.at == T0 + timedelta(minutes=38) and change.after > 130


def test_a_change_too_early_to_measure_is_still_the_clearest_one():
    early = clearest_change(series([100.0] * 6 + [400.0] * 30))
    assert early and early.at == T0 + timedelta(minutes=6) and not early.measurable
    late = clearest_change(series([100.0] * 12 + [130.0] * 3, seed=5))
    assert late and late.measurable and late.z < early.z


def test_a_later_blip_elsewhere_does_not_move_the_window_past_the_incident(root_store):
    """The incident began too early to measure (six minutes into the data); a small, later latency step in
    another service passes the test on its own, but moving the window there would put the incident's first
    minutes into the baseline."""
    from agent.deps import Window
    from agent.incident import follow_incident

    store = new_database(root_store, "cpb")
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    first = end - timedelta(minutes=16)
    rows: list[list[object]] = []

    def span_row(ts: datetime, service: str, ms: float, error: bool) -> list[object]:
        sid = uuid.uuid4().hex[:16]
        return [ts, uuid.uuid4().hex, sid, "", "", "GET /", "Server", service, {"service.name": service}, "t", "1",
                {}, int(ms * 1e6), "Error" if error else "Unset", "", [], [], [], [], [], [], []]

    for i in range(16):
        minute = first + timedelta(minutes=i)
        faulty = i >= 6
        for k in range(40):  # the incident: errors and latency from minute 6
            ts = minute + timedelta(seconds=k)
            rows.append(span_row(ts, "shop", 900.0 if faulty else 50.0, faulty and k % 2 == 0))
        for k in range(10):  # a small step from minute 13, clear in a quiet series
            rows.append(span_row(minute + timedelta(seconds=k), "mailer", 6.0 if i >= 13 else 2.0 + 0.01 * k, False))
    store.insert("otel_traces", TRACE_COLUMNS, rows, column_oriented=False)
    window = Window(start=end - timedelta(minutes=8), end=end, baseline_start=end - timedelta(minutes=40),
                    baseline_end=end - timedelta(minutes=8))
    moved, call = follow_incident(store, window, None)
    assert call is None and moved == window
    store.close()


def test_the_window_starts_where_the_symptom_changed(root_store):
    store = new_database(root_store, "cp")
    end = datetime.now(UTC).replace(second=30, microsecond=0)
    truth = synth_incident(store, "billing_slow", end=end, seed=21)
    answer = ask_sync("why is edge-gateway slow?", store=store, settings=settings_for(store))
    start = truth["start"].replace(second=0)
    assert answer.root_causes[0].service == "billing"
    # the fault began FAULT_MINUTES before the end: inside the default 15 minutes, which it no longer dilutes
    assert f"compared since {start:%H:%M} UTC" in answer.answer, answer.answer
    (series_call,) = [e for e in answer.evidence if e.tool == "entry_series"]
    assert series_call.sql and series_call.rows
    assert f"Window: {start:%Y-%m-%d %H:%M}" in answer.answer
    # an explicit range is the user's: it is not moved
    q = f"why is edge-gateway slow in the last {FAULT_MINUTES + 5} minutes?"
    fixed = ask_sync(q, store=store, settings=settings_for(store))
    assert "compared since" not in fixed.answer and all(e.tool != "entry_series" for e in fixed.evidence)
    store.close()
