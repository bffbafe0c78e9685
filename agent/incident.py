"""The window follows the incident: a root-cause question without a time range is compared from the minute
its symptom changed (anomaly.changepoint), not over a fixed stretch that is mostly from before the fault; a
question with its own range keeps it, but not a baseline the incident had already reached."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from agent.deps import ToolCall, Window
from anomaly.changepoint import MIN_BEFORE, Change, Minute, clearest_change, in_wider_bins
from store import Store
from tools.result import ToolResult
from tools.timewindow import TimeWindow, utc

MIN_BASELINE = timedelta(minutes=30)
# the last minutes are read in short bins: a symptom younger than the two minutes a change needs at a minute's
# resolution is then found too (a user often asks as soon as it starts)
RECENT = timedelta(minutes=3)
# the search scans a series in at most this many bins (minutes, or wider ones over a range of hours or days)
MAX_BINS = 120


def _clearest_change(store: Store, span: TimeWindow, service: str | None, recent: datetime | None = None,
                     measurable_only: bool = False) -> tuple[Change, str, ToolResult] | None:
    """The clearest rise in the entry requests of `service` (else of any service) over `span` (from `recent` on
    in short bins; only among those that leave MIN_BEFORE minutes before them when `measurable_only`), the
    service it was in and the query that showed it."""
    from tools.traces import entry_series

    result = entry_series(store, span, service, recent=recent)
    if not result.ok:
        return None
    series: dict[str, list[Minute]] = defaultdict(list)
    for r in result.rows:
        series[str(r["service"])].append(Minute(minute=utc(r["minute"]), calls=int(r["calls"]),
                                                errors=int(r["errors"]), avg_ms=float(r["avg_ms"] or 0.0),
                                                seconds=int(r["seconds"])))
    found: list[tuple[Change, str]] = [
        (c, name) for name, s in series.items()
        if (c := clearest_change(in_wider_bins(s, MAX_BINS),
                                 s[0].minute + timedelta(minutes=MIN_BEFORE) if measurable_only else None))]
    if not found:
        return None
    change, name = max(found, key=lambda f: f[0].z)
    return change, name, result


def _evidence(result: ToolResult, change: Change, name: str, at: str) -> ToolResult:
    """The query with the numbers a window's note quotes (inside the evidence's data fence: `name` comes from
    telemetry, and the note reaches a model's instructions, so it never names a service)."""
    finding = f"{name} changed at {at} UTC: {change.describe()} (z = {change.z:.1f})"
    return ToolResult.build(result.name, result.args, result.sql, result.columns, result.rows,
                            findings=[finding], units=result.units)


def _at(moment: datetime) -> str:
    return f"{moment:%H:%M:%S}" if moment.second else f"{moment:%H:%M}"


def follow_incident(store: Store, window: Window, service: str | None) -> tuple[Window, ToolCall | None]:
    """`window` started where the symptom (the named service's entry requests, else any service's) changed,
    and the query that showed it; the window unchanged, and no call, when nothing changed clearly."""
    recent = (window.end - RECENT).replace(second=0, microsecond=0)
    found = _clearest_change(store, TimeWindow(start=window.baseline_start, end=window.end), service, recent)
    if found is None:
        return window, None
    change, name, result = found
    if not change.measurable:
        # the clearest change began too early to measure: a weaker, later one elsewhere is not the incident's
        # start, and a window moved to it would leave the incident's first minutes in the baseline
        return window, None
    start = change.at
    if abs((start - window.start).total_seconds()) < 60:
        return window, None  # the window already starts there
    at = _at(start)
    moved = Window(start=start, end=window.end, baseline_start=start - max(window.end - start, MIN_BASELINE),
                   baseline_end=start, note=window.note,
                   length_note=f"Requests changed at {at} UTC ({change.describe()}): compared since {at} UTC "
                                "with the time before.")
    return moved, ToolCall("incident", "entry_series", {"service": service or name},
                           _evidence(result, change, name, at), 0.0)


def baseline_before_incident(store: Store, window: Window, service: str | None) -> tuple[Window, ToolCall | None]:
    """`window` as asked, but with a baseline that ends where the symptom changed when that was before the window
    ("the last 5 minutes" of an incident 10 minutes old: its first 5 minutes are neither window nor baseline),
    and the query that showed it; unchanged, and no call, when the baseline is clear of it. The change is sought
    over a baseline's length before the baseline too, so an incident up to that old still leaves one to compare
    with."""
    length = window.baseline_end - window.baseline_start
    # among the rises that leave a baseline before them: an early split of a series whose first minutes vary
    # little can score higher than the incident's own start, and it is no baseline
    found = _clearest_change(store, TimeWindow(start=window.baseline_start - length, end=window.end), service,
                             measurable_only=True)
    if found is None:
        return window, None
    change, name, result = found
    if not change.measurable or (window.start - change.at).total_seconds() < 60:
        return window, None  # too early to measure against, or not before the window: the baseline is clear
    at = _at(change.at)
    moved = Window(start=window.start, end=window.end, baseline_start=change.at - length, baseline_end=change.at,
                   note=window.note,
                   length_note=" ".join(t for t in (window.length_note, (
                       f"Requests changed at {at} UTC ({change.describe()}), before the window: it is compared "
                       f"with the time before {at} UTC.")) if t))
    return moved, ToolCall("incident", "entry_series", {"service": service or name},
                           _evidence(result, change, name, at), 0.0)
