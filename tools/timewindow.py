"""Time windows for analytics: a UTC [start, end) range, its baseline, and ClickHouse literals for it."""

from __future__ import annotations

import datetime as dt
import re

from pydantic import BaseModel, model_validator

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h|hr|d|w)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> dt.timedelta:
    """'30m', '1h', '90s', '2d', '45' (minutes) -> timedelta; raises ValueError with the accepted forms."""
    match = _DURATION_RE.match(str(text))
    if not match:
        raise ValueError(f"bad duration {text!r}: use a number with ms, s, m, h, d or w (e.g. 30m, 1h)")
    amount = float(match.group(1))
    unit = (match.group(2) or "m").lower()
    delta = dt.timedelta(seconds=amount * _UNIT_SECONDS[unit])
    if delta <= dt.timedelta(0):
        raise ValueError(f"duration {text!r} must be positive")
    return delta


def utc(value: dt.datetime) -> dt.datetime:
    """Naive datetimes are taken as UTC (ClickHouse returns naive UTC for UTC columns)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def ch_time(value: dt.datetime) -> str:
    """A ClickHouse DateTime64(9, 'UTC') literal for a datetime."""
    return f"toDateTime64('{utc(value).strftime('%Y-%m-%d %H:%M:%S.%f')}', 9, 'UTC')"


class TimeWindow(BaseModel):
    """A half-open UTC interval [start, end)."""

    start: dt.datetime
    end: dt.datetime

    @model_validator(mode="after")
    def _check(self) -> TimeWindow:
        self.start, self.end = utc(self.start), utc(self.end)
        if self.end <= self.start:
            raise ValueError(f"time window end {self.end} is not after start {self.start}")
        return self

    @classmethod
    def last(cls, minutes: float = 30, now: dt.datetime | None = None) -> TimeWindow:
        """The `minutes` before `now` (default: the current time)."""
        end = utc(now) if now else dt.datetime.now(dt.UTC)
        return cls(start=end - dt.timedelta(minutes=minutes), end=end)

    @classmethod
    def since(cls, text: str, now: dt.datetime | None = None) -> TimeWindow:
        """A window from a duration string such as '30m' ending now."""
        return cls.last(parse_duration(text).total_seconds() / 60, now=now)

    @property
    def duration(self) -> dt.timedelta:
        return self.end - self.start

    @property
    def seconds(self) -> float:
        return self.duration.total_seconds()

    def baseline(self, multiple: float = 1.0) -> TimeWindow:
        """The window just before this one, `multiple` times as long (>= 1: equal or longer)."""
        length = self.duration * max(multiple, 1.0)
        return TimeWindow(start=self.start - length, end=self.start)

    def sql_filter(self, column: str = "Timestamp") -> str:
        """`column` within the window, as a ClickHouse boolean expression."""
        return f"{column} >= {ch_time(self.start)} AND {column} < {ch_time(self.end)}"

    def label(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M:%S}–{self.end:%H:%M:%S} UTC"
