"""Per-minute span statistics (otel_traces_1m, migration 030) completed by the raw spans at a window's edges.

A materialized view keeps one row per minute and (service, operation, entry span or not) current on every
insert, so whole minutes are read there and only the partial minutes at a window's start and end from
otel_traces, with the same aggregates. Consumers combine the rows with sum(), max() and
`merge_quantiles()` / `merge_sketch()`; `period` tells which window a row belongs to.
"""

from __future__ import annotations

import datetime as dt

from tools.common import ENTRY, ERROR
from tools.timewindow import TimeWindow, ch_time, utc

ROLLUP_TABLE = "otel_traces_1m"
QUANTILES = (0.5, 0.9, 0.95, 0.99)  # the levels of the table's quantile states, in this order
# The sketch (quantilesBFloat16) is exact over durations truncated to 8 significant bits: at most this much low.
SKETCH_ERROR = 2**-7
_LEVELS = ", ".join(map(str, QUANTILES))
MINUTE = dt.timedelta(minutes=1)


def whole_minutes(window: TimeWindow) -> tuple[dt.datetime, dt.datetime] | None:
    """The minute-aligned part of `window` ([first, last)), None when it holds no whole minute."""
    start, end = utc(window.start), utc(window.end)
    first = start.replace(second=0, microsecond=0)
    if first < start:
        first += MINUTE
    last = end.replace(second=0, microsecond=0)
    return (first, last) if first < last else None


def merge_quantiles(period: int) -> str:
    """One period's quantiles from the reservoir states (as exact as quantile() over the spans): an array in
    the order of `QUANTILES` (1-based in SQL)."""
    return f"quantilesMergeIf({_LEVELS})(q_state, period = {period})"


def merge_sketch(period: int) -> str:
    """One period's quantiles from the sketches, up to `SKETCH_ERROR` low: ~25x cheaper to merge than
    `merge_quantiles` (whose states hold up to 64 KiB per minute and operation), for thresholds."""
    return f"quantilesBFloat16MergeIf({_LEVELS})(sk_state, period = {period})"


def _raw(period: int, start: dt.datetime, end: dt.datetime, where: str) -> str:
    return f"""SELECT {period} AS period, ServiceName, SpanName, toUInt8{ENTRY} AS entry, count() AS n,
            countIf({ERROR}) AS n_err, sum(Duration) AS d_sum, max(Duration) AS d_max,
            quantilesState({_LEVELS})(Duration) AS q_state,
            quantilesBFloat16State({_LEVELS})(Duration) AS sk_state
        FROM otel_traces WHERE Timestamp >= {ch_time(start)} AND Timestamp < {ch_time(end)}{where}
        GROUP BY ServiceName, SpanName, entry"""


def pieces(window: TimeWindow) -> list[tuple[bool, dt.datetime, dt.datetime]]:
    """`window` as (from the rollup?, start, end): its whole minutes, and the partial minutes at its edges."""
    minutes = whole_minutes(window)
    if minutes is None:
        return [(False, utc(window.start), utc(window.end))]
    first, last = minutes
    edges = [(False, utc(window.start), first), (False, last, utc(window.end))]
    return [(True, first, last)] + [e for e in edges if e[1] < e[2]]


def span_minutes(periods: dict[int, TimeWindow], where: str = "") -> str:
    """SQL rows (period, ServiceName, SpanName, entry, n, n_err, d_sum, d_max, q_state, sk_state) covering
    each window in `periods` (keyed by the `period` value its rows get). `where` (" AND ...") may test
    ServiceName and SpanName only: the columns both sources have. n: spans, n_err: failed spans, d_sum / d_max:
    sum / max of Duration (ns), q_state / sk_state: quantile states (`merge_quantiles` / `merge_sketch`)."""
    parts = []
    for period, window in periods.items():
        for rolled, start, end in pieces(window):
            if not rolled:
                parts.append(_raw(period, start, end, where))
                continue
            parts.append(f"""SELECT {period} AS period, ServiceName, SpanName, Entry AS entry, Calls AS n,
                Errors AS n_err, DurationSum AS d_sum, DurationMax AS d_max, DurationQuantiles AS q_state,
                DurationSketch AS sk_state
            FROM {ROLLUP_TABLE} WHERE Minute >= {ch_time(start)} AND Minute < {ch_time(end)}{where}""")
    return "\nUNION ALL\n".join(parts)


def longest_span_sql(window: TimeWindow) -> str:
    """SQL for the longest duration (ns) of the spans that started in `window` (0 when there are none)."""
    parts = [f"SELECT max(DurationMax) AS d FROM {ROLLUP_TABLE} WHERE Minute >= {ch_time(start)} "
             f"AND Minute < {ch_time(end)}" if rolled else
             f"SELECT max(Duration) AS d FROM otel_traces WHERE Timestamp >= {ch_time(start)} "
             f"AND Timestamp < {ch_time(end)}" for rolled, start, end in pieces(window)]
    return f"SELECT max(d) FROM ({' UNION ALL '.join(parts)})"
