"""The window follows the incident: a root-cause question without a time range is compared from the minute
its symptom changed (anomaly.changepoint), not over a fixed stretch that is mostly from before the fault."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from agent.deps import ToolCall, Window
from anomaly.changepoint import Change, Minute, clearest_change
from store import Store
from tools.timewindow import TimeWindow, utc

MIN_BASELINE = timedelta(minutes=30)
# the last minutes are read in short bins: a symptom younger than the two minutes a change needs at a minute's
# resolution is then found too (a user often asks as soon as it starts)
RECENT = timedelta(minutes=3)


def follow_incident(store: Store, window: Window, service: str | None) -> tuple[Window, ToolCall | None]:
    """`window` started where the symptom (the named service's entry requests, else any service's) changed,
    and the query that showed it; the window unchanged, and no call, when nothing changed clearly."""
    from tools.result import ToolResult
    from tools.traces import entry_series

    recent = (window.end - RECENT).replace(second=0, microsecond=0)
    result = entry_series(store, TimeWindow(start=window.baseline_start, end=window.end), service, recent=recent)
    if not result.ok:
        return window, None
    series: dict[str, list[Minute]] = defaultdict(list)
    for r in result.rows:
        series[str(r["service"])].append(Minute(minute=utc(r["minute"]), calls=int(r["calls"]),
                                                errors=int(r["errors"]), avg_ms=float(r["avg_ms"] or 0.0),
                                                seconds=int(r["seconds"])))
    found: list[tuple[Change, str]] = [(c, name) for name, s in series.items() if (c := clearest_change(s))]
    if not found:
        return window, None
    change, name = max(found, key=lambda f: f[0].z)
    if not change.measurable:
        # the clearest change began too early to measure: a weaker, later one elsewhere is not the incident's
        # start, and a window moved to it would leave the incident's first minutes in the baseline
        return window, None
    start = change.at
    if abs((start - window.start).total_seconds()) < 60:
        return window, None  # the window already starts there
    at = f"{start:%H:%M:%S}" if start.second else f"{start:%H:%M}"
    moved = Window(start=start, end=window.end, baseline_start=start - max(window.end - start, MIN_BASELINE),
                   baseline_end=start, note=window.note,
                   # no service name here: this text reaches a model's instructions, outside the data fence
                   length_note=f"Requests changed at {at} UTC ({change.describe()}): compared since {at} UTC "
                                "with the time before.")
    # the numbers the note quotes, in the evidence (inside its data fence: `name` comes from telemetry)
    finding = f"{name} changed at {at} UTC: {change.describe()} (z = {change.z:.1f})"
    recorded = ToolResult.build(result.name, result.args, result.sql, result.columns, result.rows,
                                findings=[finding], units=result.units)
    return moved, ToolCall("incident", "entry_series", {"service": service or name}, recorded, 0.0)
