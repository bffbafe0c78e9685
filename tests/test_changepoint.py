"""The minute a symptom changed (anomaly.changepoint), and the analyst comparing from there."""

from __future__ import annotations

import random
import re
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

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


# per-minute mean latency (ms) of a real service's ordinary half hour (a payment API in the eval's simulator)
QUIET_THEN_BLIPS = [10.7, 9.1, 10.4, 10.3, 8.2, 9.3, 12.4, 11.6, 10.7, 9.3, 9.8, 40.9, 11.6, 9.1, 26.0, 10.0, 7.7,
                    11.7, 9.9, 9.5, 10.7, 13.1, 9.2, 15.7, 6.9, 8.4, 11.8, 13.3, 14.9, 11.2]


def test_the_baseline_check_weighs_only_changes_that_leave_a_baseline(root_store):
    """Thirty ordinary minutes (QUIET_THEN_BLIPS: steady at first, then two slow minutes), then a step 10 minutes
    before the end: the clearest split over all candidates is six minutes in (the short, steady before-segment
    gives the smallest spread, and the blips widen the true split's), which leaves no baseline. Among the
    splits that leave MIN_BEFORE minutes, the step is before the asked 5 minutes: the baseline ends before
    the window."""
    from agent.deps import Window
    from agent.incident import baseline_before_incident

    store = new_database(root_store, "cpm")
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    first = end - timedelta(minutes=40)
    rows: list[list[object]] = []
    for i in range(40):
        minute = first + timedelta(minutes=i)
        ms = 1800.0 if i >= 30 else QUIET_THEN_BLIPS[i]
        for k in range(10):
            rows.append([minute + timedelta(seconds=5 * k), uuid.uuid4().hex, uuid.uuid4().hex[:16], "", "",
                         "Charge", "Server", "payment", {"service.name": "payment"}, "t", "1", {},
                         int(ms * 1e6), "Unset", "", [], [], [], [], [], [], []])  # every call the minute's mean
    store.insert("otel_traces", TRACE_COLUMNS, rows, column_oriented=False)
    window = Window(start=end - timedelta(minutes=5), end=end, baseline_start=end - timedelta(minutes=35),
                    baseline_end=end - timedelta(minutes=5))
    moved, call = baseline_before_incident(store, window, None)
    assert call is not None and (moved.start, moved.end) == (window.start, window.end), call
    assert moved.baseline_end <= first + timedelta(minutes=30) and "before the window" in moved.length_note
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


def test_an_asked_range_inside_the_incident_is_compared_with_the_time_before_the_incident(root_store):
    """"The last 4 minutes" of an incident 10 minutes old: the half hour before those 4 minutes holds the
    incident's first 6, whose slow calls made the baseline's p95 as slow as the window's. The asked window is
    kept; the baseline ends where the symptom changed, and the minutes between are read by neither."""
    store = new_database(root_store, "cpr")
    end = datetime.now(UTC).replace(second=30, microsecond=0)
    truth = synth_incident(store, "billing_slow", end=end, seed=21)
    answer = ask_sync("why is edge-gateway slow in the last 4 minutes?", store=store, settings=settings_for(store))
    start = truth["start"].replace(second=0)
    assert answer.root_causes and answer.root_causes[0].service == "billing", answer.answer
    found = re.search(r"Window: (.+?) to (.+?) UTC; baseline (.+?) to (.+?) UTC", answer.answer)
    assert found, answer.answer
    w_start, w_end, b_start, b_end = (datetime.fromisoformat(t).replace(tzinfo=UTC) for t in found.groups())
    assert w_end - w_start == timedelta(minutes=4)  # the range asked, not moved
    assert b_end == start and b_end - b_start == timedelta(minutes=30), found.group(0)
    assert f"before the window: it is compared with the time before {start:%H:%M} UTC" in answer.answer
    (series_call,) = [e for e in answer.evidence if e.tool == "entry_series"]
    assert series_call.rows
    # the evidence queries leave out the incident's minutes before the window
    stats = [e for e in answer.evidence if e.sql and "self_q_base_ms" in e.sql[0]]
    assert stats and f"NOT (Timestamp >= toDateTime64('{start:%Y-%m-%d %H:%M}" in stats[0].sql[0]
    store.close()


def test_a_range_that_holds_all_the_data_is_not_compared_with_nothing(root_store):
    """"What's wrong in the last hour?" twelve minutes after the first span: the hour's baseline is empty, so
    every log line and operation would be "new" and every service as suspect as the next. An answer that
    compares falls back to the data's own halves, and says why; a count keeps the hour asked."""
    store = new_database(root_store, "cpe")
    end = datetime.now(UTC).replace(microsecond=0)
    synth_incident(store, "billing_slow", end=end, minutes=12, fault_minutes=3, seed=5)
    answer = ask_sync("what's wrong in the last hour?", store=store, settings=settings_for(store))
    assert "so the range asked has nothing to compare with" in answer.answer, answer.answer
    found = re.search(r"Window: (.+?) to (.+?) UTC; baseline (.+?) to (.+?) UTC", answer.answer)
    assert found, answer.answer
    w_start, w_end = (datetime.fromisoformat(t).replace(tzinfo=UTC) for t in found.groups()[:2])
    assert w_end - w_start <= timedelta(minutes=6), found.group(0)  # half of the data at most, not the hour
    # slow since the fault, as the data's first minutes show; against nothing, its warnings made it "failing"
    assert answer.root_causes and (answer.root_causes[0].service, answer.root_causes[0].kind) == (
        "billing", "latency"), answer.answer
    counted = ask_sync("how many requests in the last hour?", store=store, settings=settings_for(store))
    assert "nothing to compare with" not in counted.answer, counted.answer
    store.close()


def test_a_step_in_days_of_minutes_is_found_in_wider_bins_quickly():
    """Three days of minutes with a step at minute 3,000: the scan is quadratic in the bins (4,320 minutes took
    half a minute), so the series goes in bins of 36 minutes; the step is found in the bin that holds it, and
    the calls, errors and mean latency are kept."""
    from anomaly.changepoint import in_wider_bins

    minutes = series([50.0] * 3000 + [200.0] * 1320, errors=[1] * 4320)
    wide = in_wider_bins(minutes, 120)
    assert len(wide) <= 121 and {m.seconds for m in wide} == {36 * 60}
    assert sum(m.calls for m in wide) == sum(m.calls for m in minutes) and sum(m.errors for m in wide) == 4320
    assert wide[0].avg_ms == pytest.approx(sum(m.avg_ms for m in minutes[:36]) / 36)
    started = time.perf_counter()
    change = clearest_change(wide)
    assert time.perf_counter() - started < 1.0
    step = T0 + timedelta(minutes=3000)
    assert change and change.kind == "latency" and step - timedelta(minutes=36) < change.at <= step
    assert in_wider_bins(minutes[:100], 120) == minutes[:100]  # short enough: unchanged


def bins(latency: list[float], calls: int = 20, seed: int = 1, start: datetime = T0) -> list[Minute]:
    rng = random.Random(seed)
    return [Minute(start + timedelta(seconds=10 * i), calls, 0, ms * rng.uniform(0.9, 1.1), seconds=10)
            for i, ms in enumerate(latency)]


def test_a_step_a_minute_old_is_found_in_the_short_bins_of_the_last_minutes():
    """Minutes from the rollup, then the last three minutes in 10-second bins (what the incident window reads):
    a step 70 s before the end is seven bins, enough to call it a change, and it is found at its own bin."""
    history = series([100.0] * 12, calls=120)
    tail = T0 + timedelta(minutes=12)
    change = find_change(history + bins([100.0] * 11 + [400.0] * 7, start=tail))
    assert change and change.kind == "latency" and change.at == tail + timedelta(seconds=110)
    assert change.before < 110 < 360 < change.after and change.minutes_before == 12 + 110 / 60


def test_a_few_odd_short_bins_at_the_end_are_no_change():
    history = series([100.0] * 12, calls=120)
    tail = T0 + timedelta(minutes=12)
    # two slow bins (20 s): less than a minute of calls after the split
    assert find_change(history + bins([100.0] * 16 + [900.0] * 2, start=tail)) is None
    # a minute and more after the split, but only two of its bins slow: the typical bin has not changed
    assert find_change(history + bins([100.0] * 11 + [900.0, 100.0, 100.0, 900.0, 100.0, 100.0, 100.0],
                                      start=tail)) is None
    # the slow bins carry few calls: each weighs the calls it has, so a minute of evidence is not there
    sparse = history + bins([100.0] * 11, start=tail) + bins([400.0] * 7, calls=2, start=tail + timedelta(seconds=110))
    assert find_change(sparse) is None


def test_a_symptom_a_minute_old_moves_the_window_to_its_first_seconds(root_store):
    """Asked as soon as it starts: the fault began 80 s before the question, inside the default 15 minutes (a
    twelfth of it). The last minutes are read in 10-second bins, so the window starts where the symptom did."""
    store = new_database(root_store, "cpy")
    end = datetime.now(UTC).replace(microsecond=0)
    truth = synth_incident(store, "billing_slow", end=end, seed=21, fault_minutes=80 / 60)
    answer = ask_sync("what's wrong?", store=store, settings=settings_for(store))
    assert answer.root_causes and answer.root_causes[0].service == "billing", answer.answer
    (series_call,) = [e for e in answer.evidence if e.tool == "entry_series"]
    assert 10 in {r["seconds"] for r in series_call.rows} and 60 in {r["seconds"] for r in series_call.rows}
    # a start on a whole minute is written HH:MM, any other HH:MM:SS (which one depends on the clock)
    moved = re.search(r"compared since (\d\d:\d\d(?::\d\d)?) UTC", answer.answer)
    assert moved, answer.answer
    clock = datetime.strptime(moved[1], "%H:%M:%S" if moved[1].count(":") == 2 else "%H:%M").time()
    since = datetime.combine(end.date(), clock, UTC)
    since -= timedelta(days=1) if since > end else timedelta(0)
    # the bin the fault began in, or the next one (the first bin holds calls from before it)
    assert timedelta(seconds=-10) < since - truth["start"] < timedelta(seconds=20), (since, truth["start"])
    store.close()
