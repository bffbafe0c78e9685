"""Reading a question: intents, services/operations named in it, a trace id and a time range.

Names are matched against what the data holds (discovered services and operations), never a
built-in list, so "why is checkout slow?" finds `checkout`, `checkoutservice` or `checkout-api`.
Times are UTC; "now" is the caller's anchor (the latest data timestamp when history is backdated).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

INTENT_WORDS: dict[str, tuple[str, ...]] = {
    "slow": ("slow", "latenc", "lag", "sluggish", "p99", "p95", "p90", "p50", "duration", "takes long",
             "taking long", "response time", "performance", "timeout", "timing out", "hang", "delay"),
    "errors": ("error", "fail", "5xx", "500", "exception", "broken", "crash", "down", "unavailable", "refused",
               "status code"),
    "traffic": ("traffic", "throughput", "rps", "qps", "requests per", "request rate", "how many requests",
                "volume", "load", "calls per", "busiest", "busy"),
    "anomalies": ("anomal", "unusual", "wrong", "strange", "weird", "incident", "going on", "happening",
                  "happened", "issue", "problem", "alert", "root cause", "health", "healthy", "ok?", "saturat",
                  "cpu", "memory", "resource", "overload", "leak", "lag", "backlog", "doing", "all good",
                  "everything ok", "overall"),
    "compare": ("compare", "comparison", " vs ", "versus", "than before", "baseline", "yesterday", "difference",
                "changed", "before and after"),
    "chart": ("chart", "plot", "graph", "visuali", "show me", "draw"),
}
# A question is a sentence or a paragraph; reading one costs time on the caller's event loop in proportion to
# its length (1.3 s a megabyte), so every front (API, chat, Slack, CLI) refuses a longer one in `ask`
MAX_QUESTION_CHARS = 4000
GENERIC_NAME_PARTS = {"service", "svc", "srv", "api", "server", "app", "backend", "ms", "microservice", "deployment"}
TRACE_ID_RE = re.compile(r"\b([0-9a-f]{32}|[0-9a-f]{16})\b", re.IGNORECASE)
_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hr": 3600, "hour": 3600,
          "d": 86400, "day": 86400}
LAST_RE = re.compile(
    r"\b(?:last|past|previous|recent|in the last|over the last)\s+(?:(\d+(?:\.\d+)?|an?|one|few)\s*)?"
    r"(s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?)\b",
    re.IGNORECASE,
)
AGO_RE = re.compile(r"\b(\d+)\s*(s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?)\s+ago\b", re.IGNORECASE)
CLOCK = r"(\d{1,2}):(\d{2})(?::(\d{2}))?\s*(am|pm)?(?:\s*utc|z)?"
BETWEEN_RE = re.compile(rf"\b(?:between|from)\s+{CLOCK}\s+(?:and|to|-|until)\s+{CLOCK}", re.IGNORECASE)
SINCE_RE = re.compile(rf"\b(?:since|after|from)\s+{CLOCK}", re.IGNORECASE)
AT_RE = re.compile(rf"\b(?:at|around)\s+{CLOCK}", re.IGNORECASE)
# A calendar day (UTC) as the range: "errors yesterday", "since yesterday", "today". In a comparison ("slower
# than yesterday", "today vs yesterday", "compared with yesterday") the days are what is compared, not the window.
DAY_RE = re.compile(r"\b(since |all )?(today|yesterday)\b", re.IGNORECASE)
COMPARING_RE = re.compile(r"\b(?:vs\.?|versus|compar\w*|than|(?:with|as|to) (?:today|yesterday))\b", re.IGNORECASE)


@dataclass
class Question:
    """What the analyst understood from the text."""

    text: str
    intents: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    operations: list[str] = field(default_factory=list)
    trace_id: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    time_text: str = ""

    @property
    def has_window(self) -> bool:
        return self.start is not None

    @property
    def primary(self) -> str:
        """The main intent (diagnosis questions first)."""
        for intent in ("trace", "errors", "slow", "traffic", "anomalies"):
            if intent in self.intents:
                return intent
        return self.intents[0] if self.intents else ""


def normalize(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def words(text: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w]


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 4 and word.endswith("s") and not word.endswith("ss") else word


def name_parts(name: str) -> list[str]:
    """Meaningful parts of a service name: 'checkout-service' -> ['checkout']."""
    parts = [p for p in re.split(r"[^a-z0-9]+", re.sub(r"([a-z])([A-Z])", r"\1 \2", name).lower()) if p]
    core = [p for p in parts if p not in GENERIC_NAME_PARTS]
    joined = normalize(name)
    for generic in sorted(GENERIC_NAME_PARTS, key=len, reverse=True):
        if joined.endswith(generic) and len(joined) > len(generic) + 2:
            core.append(joined[: -len(generic)])
            break
    return core or parts


def match_services(text: str, services: Iterable[str]) -> list[str]:
    """Services named in the text, best match first; fuzzy on meaningful name parts."""
    services = list(services)
    flat = normalize(text)
    # names written in full, longest first; the words of each belong to it ("cart-service" does not also mean
    # the "cart" of "cart-cache-service", nor "frontend-proxy" the "frontend")
    named: dict[str, int] = {}  # -> where in `flat` it is first written
    rest = text.lower()
    for service in sorted(services, key=len, reverse=True):
        pattern = rf"(?<![a-z0-9]){re.escape(service.lower())}(?![a-z0-9])"
        found = re.search(pattern, rest) if len(normalize(service)) >= 3 else None
        if found:
            named[service] = len(normalize(rest[:found.start()]))
            rest = re.sub(pattern, lambda m: " " * len(m.group()), rest)  # blanked, so offsets stay
    tokens = [_singular(w) for w in words(rest)]
    scored: list[tuple[float, int, str]] = []
    for service in services:
        full = normalize(service)
        if not full:
            continue
        best = 0.0
        if service in named:
            best = 1.0
        elif len(full) == 2 and full in tokens:  # a two-letter name ("ad") only as a word of its own
            best = 0.95
        for part in name_parts(service):
            if len(part) < 3:
                continue
            for tok in tokens:
                if tok == part or tok == full:
                    best = max(best, 0.95)
                elif len(tok) >= 5 and (part.startswith(tok) or tok.startswith(part)) and min(len(tok), len(part)) >= 5:
                    best = max(best, 0.8)
                elif len(tok) >= 5:
                    ratio = difflib.SequenceMatcher(None, tok, part).ratio()
                    if ratio >= 0.84:
                        best = max(best, ratio * 0.9)
        if best > 0:
            pos = named[service] if service in named else \
                flat.find(normalize(name_parts(service)[0])) if name_parts(service) else -1
            scored.append((best, pos if pos >= 0 else 10_000, service))
    exact = [normalize(s) for s in named]
    # a name matched only through a part that is another service's full name is not meant
    scored = [x for x in scored if x[0] >= 1.0 or not any(e in name_parts(x[2]) for e in exact)]
    # the best score per service; ties broken by position in the text, so "a calls b" keeps order
    scored.sort(key=lambda s: (-s[0], s[1]))
    top = scored[0][0] if scored else 0
    return [s for score, _, s in sorted(scored, key=lambda s: s[1]) if score >= max(0.75, top - 0.2)]


def match_operations(text: str, operations: Iterable[str]) -> list[str]:
    """Operations (span names) quoted in the text, longest first."""
    flat = normalize(text)
    found = [op for op in operations if len(normalize(op)) >= 4 and normalize(op) in flat]
    found.sort(key=lambda op: -len(op))
    return [op for i, op in enumerate(found) if not any(normalize(op) in normalize(o) for o in found[:i])]


def detect_intents(text: str) -> list[str]:
    low = f" {text.lower()} "
    intents = [name for name, keys in INTENT_WORDS.items() if any(k in low for k in keys)]
    if TRACE_ID_RE.search(text):
        intents.insert(0, "trace")
    return intents


def _clock(now: datetime, hh: str, mm: str, ss: str | None, ampm: str | None) -> datetime:
    hour = int(hh) % 24
    if ampm:
        hour = hour % 12 + (12 if ampm.lower() == "pm" else 0)
    t = now.replace(hour=hour, minute=int(mm), second=int(ss or 0), microsecond=0)
    # a clock time later than "now" means the same time yesterday
    return t - timedelta(days=1) if t > now + timedelta(minutes=1) else t


def parse_duration_words(amount: str | None, unit: str) -> timedelta:
    unit = unit.lower().rstrip("s") or "s"
    seconds = _UNITS.get(unit) or _UNITS.get(unit[:3]) or _UNITS.get(unit[0], 60)
    if amount is None or amount.lower() in ("a", "an", "one"):
        n = 1.0
    elif amount.lower() == "few":
        n = 3.0
    else:
        n = float(amount)
    return timedelta(seconds=n * seconds)


def parse_time_range(text: str, now: datetime) -> tuple[datetime | None, datetime | None, str]:
    """(start, end, matched text) for the time range in `text`, relative to `now` (UTC)."""
    if m := BETWEEN_RE.search(text):
        g = m.groups()
        start = _clock(now, *g[0:4])
        # the end is the first such clock time after the start ("between 23:50 and 00:00" asked at 23:59 ends
        # at the coming midnight, not at the last one); a range that would end in the future is yesterday's
        end = _clock(start + timedelta(days=1), *g[4:8])
        while end - timedelta(days=1) > start:
            end -= timedelta(days=1)
        if end > now + timedelta(minutes=1):
            start, end = start - timedelta(days=1), end - timedelta(days=1)
        return start, end, m.group(0)
    if m := SINCE_RE.search(text):
        return _clock(now, *m.groups()), now, m.group(0)
    if m := LAST_RE.search(text):
        return now - parse_duration_words(m.group(1), m.group(2)), now, m.group(0)
    if m := AGO_RE.search(text):
        at = now - parse_duration_words(m.group(1), m.group(2))
        return at - timedelta(minutes=5), min(now, at + timedelta(minutes=5)), m.group(0)
    if m := AT_RE.search(text):
        at = _clock(now, *m.groups())
        return at - timedelta(minutes=5), min(now, at + timedelta(minutes=5)), m.group(0)
    if (m := DAY_RE.search(text)) and not COMPARING_RE.search(text):
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if m.group(2).lower() == "today":
            return today, now, m.group(0)
        yesterday = today - timedelta(days=1)
        return yesterday, now if (m.group(1) or "").lower().startswith("since") else today, m.group(0)
    return None, None, ""


def parse_question(
    text: str, now: datetime, services: Iterable[str] = (), operations: Iterable[str] = ()
) -> Question:
    """Everything the analyst needs from the text, matched against discovered names."""
    start, end, time_text = parse_time_range(text, now)
    tid = TRACE_ID_RE.search(text)
    return Question(
        text=text,
        intents=detect_intents(text),
        services=match_services(text, services),
        operations=match_operations(text, operations),
        trace_id=tid.group(1).lower() if tid else None,
        start=start,
        end=end,
        time_text=time_text,
    )
