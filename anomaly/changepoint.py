"""When did the symptom start? One change point in per-minute request series, found by a two-segment test.

An incident compared over a fixed window is diluted by the minutes before it began ("self time rose 11 ms ->
204 ms" for a call that took 0.9-2.6 s since the fault): the analysis should compare from the minute the
symptom changed. For every candidate minute t the series splits into before and after; the change point is
the t whose after-segment differs most, in standard errors, from the before-segment: the error share as a
binomial test against the before rate, the mean latency against the spread of the before minutes. Starting
too early dilutes the after-segment; starting too late puts changed minutes in the before-segment and widens
its spread, so the score peaks at the start of a step.

The series may end in shorter bins (the last minutes in 10-second bins): a symptom a minute old is then six
bins, whose typical one must have changed, rather than one minute that might be a single odd one. Each bin
weighs the minutes of ordinary traffic its calls stand for.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

MIN_BEFORE = 10  # minutes of ordinary behaviour a change is measured against, and the baseline left after it
MIN_SCAN_BEFORE = 3  # fewer minutes give no spread to measure against
# after a change: more than one bin's worth of ordinary traffic (one odd bin is not a change of state; at a
# minute's resolution that is the two minutes, or one and a well-filled partial one, it always took) and at
# least a minute's worth
MIN_AFTER_BINS = 1.5
MIN_AFTER_MINUTES = 1.0
MIN_Z = 5.0  # standard errors: a change this clear is rare by chance even across services and minutes
MIN_LATENCY_RATIO = 1.2  # a mean latency shift smaller than this is not what anyone calls "slow"
MIN_ERROR_SHARE = 0.02  # an error share rise smaller than this (2 points) is not what anyone calls "failing"
REL_SD_FLOOR = 0.05  # per-minute means of steady traffic still vary by a few percent


@dataclass(frozen=True)
class Minute:
    """One bin (a minute, or shorter for the last minutes) of a service's entry requests."""

    minute: datetime  # the bin's start
    calls: int
    errors: int
    avg_ms: float
    seconds: int = 60  # the bin's length


@dataclass(frozen=True)
class Change:
    """The minute a series changed, what changed and how clearly (z, standard errors)."""

    at: datetime
    kind: str  # "latency" or "errors"
    z: float
    before: float  # mean latency (ms) or error share before
    after: float  # the same after
    minutes_before: float = 0.0  # minutes of the series before the change

    @property
    def measurable(self) -> bool:
        """Enough ordinary minutes before it to measure against, and to leave as a baseline."""
        return self.minutes_before >= MIN_BEFORE

    def describe(self) -> str:
        if self.kind == "errors":
            return f"errors {100 * self.before:.3g}% -> {100 * self.after:.3g}% of requests"
        return f"mean latency {self.before:.3g} ms -> {self.after:.3g} ms"


def _error_z(before: Sequence[Minute], after: Sequence[Minute]) -> tuple[float, float, float]:
    n_b, e_b = sum(m.calls for m in before), sum(m.errors for m in before)
    n_a, e_a = sum(m.calls for m in after), sum(m.errors for m in after)
    if n_b == 0 or n_a == 0:
        return 0.0, 0.0, 0.0
    # the before rate with one pseudo-error per segment, so a clean history still has a variance
    p_b = (e_b + 0.5) / (n_b + 1)
    z = (e_a - n_a * p_b) / math.sqrt(n_a * p_b * (1 - p_b))
    return z, e_b / n_b, e_a / n_a


def _latency_z(before: Sequence[Minute], after: Sequence[Minute]) -> tuple[float, float, float]:
    """The after-segment's mean latency against the before-segment's, in standard errors of a minute's mean.
    A bin weighs the minutes of typical traffic its calls stand for (inverse variance): a 10-second bin of
    ordinary traffic a sixth, the partial minute at the data's edge with two calls that happened to be slow
    almost nothing, so it is not a change."""
    b = [m for m in before if m.calls]
    a = [m for m in after if m.calls]
    if len(b) < MIN_SCAN_BEFORE or len(a) < MIN_AFTER_BINS:
        return 0.0, 0.0, 0.0
    rate = statistics.median(m.calls / m.seconds for m in b)  # calls per second of a typical bin before

    def weight(m: Minute) -> float:  # minutes of typical traffic the bin's mean stands for
        return min(m.seconds, m.calls / rate) / 60

    def mean(ms: Sequence[Minute]) -> float:
        return sum(weight(m) * m.avg_ms for m in ms) / sum(weight(m) for m in ms)

    minutes_after = sum(weight(m) for m in a)
    if minutes_after < MIN_AFTER_MINUTES or sum(60 * weight(m) / m.seconds for m in a) < MIN_AFTER_BINS:
        return 0.0, 0.0, 0.0
    mean_b, mean_a = mean(b), mean(a)
    # a whole minute's variance: a bin standing for w minutes varies 1/w times as much
    var = sum(weight(m) * (m.avg_ms - mean_b) ** 2 for m in b) / (len(b) - 1)
    sd = max(math.sqrt(var), REL_SD_FLOOR * mean_b, 1e-9)
    return (mean_a - mean_b) / (sd / math.sqrt(minutes_after)), mean_b, mean_a


def _typical(bins: Sequence[Minute], kind: str) -> float:
    """The error share or mean latency of the typical call's bin (a median over calls, not bins: a stretch of
    bins with a call or two each must not outvote the busy ones)."""
    values = sorted((m.errors / m.calls if kind == "errors" else m.avg_ms, m.calls) for m in bins if m.calls)
    half, seen = sum(n for _, n in values) / 2, 0
    for value, n in values:
        seen += n
        if seen >= half:
            return value
    return 0.0


def in_wider_bins(series: Sequence[Minute], max_bins: int) -> list[Minute]:
    """`series` (minute-ordered) in bins of whole minutes wide enough that at most `max_bins` + 1 remain, each
    the sum of its calls and errors and the calls' mean latency: the scan for a change is quadratic in the
    bins, and a range of days (4,320 minutes) took half a minute per service. Unchanged when short enough."""
    if len(series) <= max_bins:
        return list(series)
    first = series[0].minute
    width = math.ceil((series[-1].minute - first).total_seconds() / 60 / max_bins)
    if width <= 1:
        return list(series)
    groups: dict[int, list[Minute]] = {}
    for m in series:
        groups.setdefault(int((m.minute - first).total_seconds() // 60) // width, []).append(m)
    wide = []
    for index, ms in sorted(groups.items()):
        calls = sum(m.calls for m in ms)
        wide.append(Minute(minute=first + timedelta(minutes=index * width), calls=calls,
                           errors=sum(m.errors for m in ms), seconds=60 * width,
                           avg_ms=sum(m.avg_ms * m.calls for m in ms) / calls if calls else 0.0))
    return wide


def clearest_change(series: Sequence[Minute], not_before: datetime | None = None) -> Change | None:
    """The clearest rise in latency or errors in a minute-ordered series (a start at or after `not_before`),
    or None when no candidate passes MIN_Z and the size floors; `measurable` says whether it leaves enough
    minutes before it."""
    best: Change | None = None
    for i in range(MIN_SCAN_BEFORE, len(series) - math.ceil(MIN_AFTER_BINS) + 1):
        if not_before is not None and series[i].minute < not_before:
            continue
        before, after = series[:i], series[i:]
        if sum(m.seconds for m in after) < 60 * MIN_AFTER_MINUTES:
            break
        for kind, (z, was, now) in (("errors", _error_z(before, after)), ("latency", _latency_z(before, after))):
            # the typical call after the change, not a few odd bins, must be changed by the floor
            typical = _typical(after, kind)
            big = (typical - was >= MIN_ERROR_SHARE if kind == "errors"
                   else typical >= MIN_LATENCY_RATIO * was > 0)
            if z >= MIN_Z and big and (best is None or z > best.z):
                best = Change(at=series[i].minute, kind=kind, z=z, before=was, after=now,
                              minutes_before=sum(m.seconds for m in before) / 60)
    return best
