"""Per-service evidence from every signal the data has, window against baseline.

Real telemetry is often sparse: spans with names and times only, errors only in logs, faults only in a
pod's gauges. Each reader here turns one kind of evidence into a per-service significance (about how
many standard errors, or -log10 of a tail probability, the change is), so that signals of different
kinds can be weighed together:

- latency shift: how many of a service's own calls (self time) are slower than its baseline p95;
  robust to a few long tails, which lift a mean without anything having changed;
- network: the gap between a caller's span and its callee's span, charged to the callee (a callee whose
  network is slow makes its callers' client spans grow while its own spans do not);
- log templates: problem statements (WARN and above, or text naming an exception) that appear or surge,
  per service, against the service's own log volume;
- log order: in traces where several services log problems, which one complained first.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# Window quantile levels the analyst's queries return (self_q_ms, gap_q_ms), low to high.
Q_LEVELS = (0.25, 0.5, 0.75, 0.9, 0.95)
BASE_TAIL = 0.05  # share of baseline calls above the baseline p95, by definition
# A call is "slower than normal" above this multiple of the baseline p95 (and at least MIN_SLOWER_MS more).
SLOWER_RATIO = 1.2
MIN_SLOWER_MS = 1.0
MIN_BASE_CALLS = 8
# Calls of one request are not independent samples: a request that loops over a query repeats one pause in
# every call. Slower calls from fewer requests than this, a minority of those that made the calls, each of
# which repeated it (REPEATED slower calls per request on average), are a few requests' bad moment, not a
# change in the operation. One slower call per request (a pause now and then) is independent evidence.
MIN_SLOW_TRACES = 8
REPEATED = 2.0
# Time on the wire and in queues moves by a few milliseconds with load anywhere (scheduling, GC, retries):
# a gap counts as grown only past this many milliseconds over its baseline p95.
MIN_GAP_MS = 5.0


@dataclass
class Shift:
    """Calls slower than their baseline p95 for one service (or one callee's network), summed over ops."""

    service: str
    slower: float = 0.0  # estimated calls above the baseline p95 in the window
    calls: int = 0
    ops: list[tuple[str, float, float, float, int]] = field(default_factory=list)  # op, share, p50, base p50, n
    partners: set[str] = field(default_factory=set)  # services at the other end of its grown calls

    @property
    def share(self) -> float:
        return self.slower / self.calls if self.calls else 0.0

    @property
    def z(self) -> float:
        """Standard errors above the 5% of calls that exceed a baseline p95 by chance."""
        if not self.calls:
            return 0.0
        return (self.slower - BASE_TAIL * self.calls) / math.sqrt(self.calls * BASE_TAIL * (1 - BASE_TAIL))


def slower_share(window_q: list[float], base_p95: float, min_ms: float = MIN_SLOWER_MS) -> float:
    """Lower bound on the share of window calls above `base_p95` (by SLOWER_RATIO and at least `min_ms`),
    read off the window's quantile grid."""
    threshold = max(SLOWER_RATIO * base_p95, base_p95 + min_ms)
    for level, value in zip(Q_LEVELS, window_q, strict=False):
        if value > threshold:
            return round(1.0 - level, 9)  # 1 - 0.9 is 0.0999...: a share on the grid must compare as itself
    return 0.0


def floats(value: Any) -> list[float]:  # noqa: ANN401
    """A quantile array as floats; empty when any is missing (no calls on that side)."""
    if not isinstance(value, (list, tuple)) or any(v is None for v in value):
        return []
    out = [float(v) for v in value]
    return [] if any(math.isnan(v) for v in out) else out


def quantile(value: Any, level: float) -> float:  # noqa: ANN401
    """One level of a Q_LEVELS quantile array (0.0 when the array is missing: no calls on that side)."""
    q = floats(value)
    return q[Q_LEVELS.index(level)] if len(q) == len(Q_LEVELS) else 0.0


def from_few_requests(row: dict[str, Any]) -> bool:
    """Whether an operation's slower calls (span_stats' `slow_calls` from `slow_traces` of its `traces` in the
    window; absent: not measured) are a few requests repeating one pause, not a change in the operation."""
    calls, slow, traces = row.get("slow_calls"), row.get("slow_traces"), row.get("traces")
    if calls is None or slow is None or traces is None:
        return False
    return int(slow) < min(MIN_SLOW_TRACES, int(traces) / 2) and int(calls) >= REPEATED * int(slow)


def op_slower_share(row: dict[str, Any]) -> float | None:
    """One operation's share of window calls above its baseline p95 self time (None: too few calls)."""
    q, qb = floats(row.get("self_q_ms")), floats(row.get("self_q_base_ms"))
    if len(q) < len(Q_LEVELS) or len(qb) < 2 or int(row.get("n_base") or 0) < MIN_BASE_CALLS:
        return None
    return slower_share(q, qb[1])


def latency_shifts(rows: Iterable[dict[str, Any]]) -> dict[str, Shift]:
    """Per service: its own calls (self time) slower than normal. Client spans whose child runs in another
    service are left out: their self time is the wire and the callee's queue, charged by `network_shifts`."""
    out: dict[str, Shift] = {}
    for r in rows:
        n, n_base = int(r.get("n") or 0), int(r.get("n_base") or 0)
        q, qb = floats(r.get("self_q_ms")), floats(r.get("self_q_base_ms"))
        if n == 0 or n_base < MIN_BASE_CALLS or len(q) < len(Q_LEVELS) or len(qb) < 2:
            continue
        if int(r.get("remote_n") or 0) >= 0.5 * n:
            continue
        share = 0.0 if from_few_requests(r) else slower_share(q, qb[1])
        s = out.setdefault(str(r["service"]), Shift(str(r["service"])))
        s.calls += n
        s.slower += share * n
        if share >= 0.1:
            s.ops.append((str(r["operation"]), share, q[1], qb[0], n))
    return out


# A grown gap is charged to both ends of the call (slow network or queue at the callee, or a starved client
# at the caller). Calls into a service and calls out of it are weighed apart, so that a callee's few callers
# are not diluted by the many calls it makes itself; the caller's end counts a little less, so that a single
# grown edge points at its callee.
CALLER_WEIGHT = 0.8


def network_shifts(edges: Iterable[dict[str, Any]]) -> dict[str, Shift]:
    """Per service: the calls into it, or else the calls out of it, whose gap (client span minus the callee's
    span) grew, whichever is the clearer shift. Only calls made through a client span count (or a span with no
    kind that says otherwise, evidence_sql.CALLING_KINDS): a server span's time around its callee includes its
    own work."""
    into: dict[str, Shift] = {}
    out_of: dict[str, Shift] = {}
    partners: dict[str, set[str]] = {}
    for e in edges:
        n, n_base = int(e.get("gap_n") or 0), int(e.get("gap_n_base") or 0)
        q, qb = floats(e.get("gap_q_ms")), floats(e.get("gap_q_base_ms"))
        if n == 0 or n_base < MIN_BASE_CALLS or len(q) < len(Q_LEVELS) or len(qb) < 2:
            continue
        share = slower_share(q, qb[1], MIN_GAP_MS)
        caller, callee = str(e["caller"]), str(e["callee"])
        for side, service, other, weight in ((into, callee, caller, 1.0), (out_of, caller, callee, CALLER_WEIGHT)):
            s = side.setdefault(service, Shift(service))
            s.calls += n
            s.slower += weight * share * n
            if share >= 0.1:
                partners.setdefault(service, set()).add(other)
                s.ops.append((f"{caller} -> {e['callee_operation']}", share, q[1], qb[0], n))
    result: dict[str, Shift] = {}
    for service in set(into) | set(out_of):
        options = [s for s in (into.get(service), out_of.get(service)) if s is not None]
        best = max(options, key=lambda s: s.z)
        best.partners = partners.get(service, set())
        result[service] = best
    return result


def explained_elsewhere(shift: Shift, shifts: dict[str, Shift]) -> bool:
    """Whether every grown call of this service is shared with a service that has more grown calls: a caller
    starved of CPU makes the gaps to each of its callees grow, and it, not each callee, is the common end."""
    return bool(shift.partners) and all(
        len(shifts[p].partners) > len(shift.partners) for p in shift.partners if p in shifts)


def poisson_surprise(count: int, expected: float) -> float:
    """-log10 P(X >= count) for X ~ Poisson(expected): how unlikely this many lines are by chance."""
    expected = max(expected, 0.05)
    if count <= expected:
        return 0.0
    # upper tail by summing the pmf from `count` (terms fall fast once past the mean)
    log_term = -expected + count * math.log(expected) - math.lgamma(count + 1)
    total, term = 0.0, log_term
    for k in range(count, count + 200):
        total += math.exp(term - log_term)
        term += math.log(expected) - math.log(k + 1)
        if term - log_term < -30:
            break
    return max(0.0, -(log_term + math.log(total)) / math.log(10))


@dataclass
class LogSurge:
    """The service's most surprising problem-log template in the window."""

    service: str
    template: str
    example: str
    n: int
    n_base: int
    expected: float
    surprise: float
    traces: int
    new: bool


ID_MASK_RE = re.compile(r"<(id|n)>")


def log_surges(templates: Iterable[dict[str, Any]], volumes: Iterable[dict[str, Any]]) -> dict[str, LogSurge]:
    """Per service, the problem-log template whose window count its baseline explains least. The expected
    count scales the baseline by the service's own log volume, window over baseline, so a service that is
    simply busier does not look like it is failing."""
    scale: dict[str, float] = {}
    total_n = total_base = 0
    for v in volumes:
        n, n_base = int(v.get("n") or 0), int(v.get("n_base") or 0)
        total_n, total_base = total_n + n, total_base + n_base
        if n_base:
            scale[str(v["service"])] = n / n_base
    overall = total_n / total_base if total_base else 1.0
    templates = list(templates)
    spread = workload_spread([(int(t.get("n") or 0), int(t.get("n_base") or 0) * scale.get(str(t["service"]), overall))
                              for t in templates])
    out: dict[str, LogSurge] = {}
    for t in templates:
        service, n, n_base = str(t["service"]), int(t.get("n") or 0), int(t.get("n_base") or 0)
        expected = n_base * scale.get(service, overall)
        # a statement already seen varies with the mix of requests as much as the others do in this window;
        # warnings say less than errors
        error = int(t.get("severity") or 0) >= 17
        tolerance = max(spread, 1.0 if error else SEEN_TOLERANCE)
        surprise = poisson_surprise(n, expected * tolerance if n_base else expected)
        if not error:
            surprise *= WARN_WEIGHT
        if surprise <= 0:
            continue
        best = out.get(service)
        if best is None or surprise > best.surprise:
            out[service] = LogSurge(service, str(t.get("template") or ""), str(t.get("example") or ""), n, n_base,
                                    expected, surprise, int(t.get("traces") or 0), n_base == 0)
    return out


def poisson_deficit(count: int, expected: float) -> float:
    """-log10 P(X <= count) for X ~ Poisson(expected): how unlikely this few lines are by chance."""
    if count >= expected:
        return 0.0
    terms = [-expected + k * math.log(expected) - math.lgamma(k + 1) for k in range(count + 1)]
    top = max(terms)
    log_p = top + math.log(sum(math.exp(t - top) for t in terms))
    return max(0.0, -log_p / math.log(10))


@dataclass
class Stopped:
    """The routine statements a service stopped logging while still being called, together."""

    service: str
    template: str  # the one expected most often
    example: str
    statements: int
    n: int
    n_base: int
    expected: float
    surprise: float
    from_lines: bool = False  # expected from the service's other lines (it has no spans), not from its calls


# A statement has stopped when at most this share of its expected lines came (a changed code path stops it
# from the moment it starts; a changed mix of requests thins it), out of at least this many expected lines.
STOPPED_SHARE = 0.25
MIN_STOPPED_EXPECTED = 5.0


def calls_by(span_rows: Iterable[dict[str, Any]], *fields: str) -> dict[tuple[str, ...], tuple[int, int]]:
    """Per value of `fields` (service; service and operation): (spans in the window, spans in the baseline),
    from the span statistics rows."""
    out: dict[tuple[str, ...], tuple[int, int]] = {}
    for r in span_rows:
        key = tuple(str(r.get(f) or "") for f in fields)
        n, n_base = out.get(key, (0, 0))
        out[key] = (n + int(r.get("n") or 0), n_base + int(r.get("n_base") or 0))
    return out


def stopped_statements(statements: Iterable[dict[str, Any]], span_rows: Iterable[dict[str, Any]],
                       volumes: Iterable[dict[str, Any]] = ()) -> dict[str, Stopped]:
    """Per service, the routine statements it stopped logging while still called, weighed together: how
    unlikely that few lines are by chance (a Poisson tail), less the log10 of the statements looked at.

    A statement's expected count scales its baseline by the calls of the operation whose spans logged it
    (the service's, when its lines carry no span ids), window over baseline, so a service or operation
    simply called less says nothing; and by the median shortfall over all statements in the
    window, so a window in which the request mix thinned most statements does not look like a changed
    code path. Statements logged for one kind of value (one product, one route) are separate templates:
    a code path that stops stops each of them, so they count together; and when the service logs other
    statements more than expected (fewer requests for one kind of value, more for another), those lines
    make up for the missing ones.

    A service with no spans (it exports logs only) is still at work while it logs its other routine lines:
    those lines (`volumes`, log_stats' per-service counts less errors and warnings) stand for its calls. A
    service that stops logging altogether cannot be told from one no longer called."""
    span_rows = list(span_rows)
    calls, op_calls = calls_by(span_rows, "service"), calls_by(span_rows, "service", "operation")
    routine = {str(v["service"]): tuple(int(v.get(f"n{b}") or 0) - int(v.get(f"errors{b}") or 0)
                                        - int(v.get(f"warnings{b}") or 0) for b in ("", "_base")) for v in volumes}
    expected_of = {}
    from_lines: set[str] = set()
    for t in statements:
        service, n_base = str(t["service"]), int(t.get("n_base") or 0)
        # the operation whose spans logged it, when lines carry span ids: a statement stops when its
        # operation is no longer called (its caller changed), and that is no change in this service's code
        n_now, n_before = op_calls.get((service, str(t.get("operation") or "")), (0, 0))
        if not n_before:
            n_now, n_before = calls.get((service,), (0, 0))
        if not n_before:
            # its other routine lines, enough of them that their own noise is under the shortfall that counts
            all_now, all_before = routine.get(service, (0, 0))
            n_now, n_before = all_now - int(t.get("n") or 0), all_before - n_base
            if n_before < STOPPED_SHARE ** -2:
                continue
            from_lines.add(service)
        if n_before > 0:
            expected_of[id(t)] = n_base * max(n_now, 0) / n_before
    rows = [t for t in statements if id(t) in expected_of]
    ratios = sorted((expected_of[id(t)] + 1) / (int(t.get("n") or 0) + 1) for t in rows if expected_of[id(t)] >= 3)
    spread = min(max(ratios[len(ratios) // 2], 1.0), 4.0) if len(ratios) >= 4 else 1.0
    tested: dict[str, int] = {}
    surplus: dict[str, float] = {}
    gone: dict[str, list[tuple[dict[str, Any], float]]] = {}
    for t in rows:
        service, n, expected = str(t["service"]), int(t.get("n") or 0), expected_of[id(t)] / spread
        # (not when its other lines are the measure: the missing lines would lift every other statement)
        surplus[service] = surplus.get(service, 0.0) + (0.0 if service in from_lines else max(
            0.0, n - expected_of[id(t)] - 2 * math.sqrt(expected_of[id(t)])))
        if expected < MIN_STOPPED_EXPECTED:
            continue
        tested[service] = tested.get(service, 0) + 1
        if n <= STOPPED_SHARE * expected:
            gone.setdefault(service, []).append((t, expected))
    out: dict[str, Stopped] = {}
    for service, items in gone.items():
        n = sum(int(t.get("n") or 0) for t, _ in items)
        expected = sum(e for _, e in items)
        # lines another statement of the same service logged beyond its own expectation (and its noise) are
        # the request mix moving within the service, not a path that stopped: they count as lines that came
        surprise = poisson_deficit(round(n + surplus[service]), expected) - math.log10(tested[service])
        if surprise > 0:
            top, _ = max(items, key=lambda item: item[1])
            out[service] = Stopped(service, str(top.get("template") or ""), str(top.get("example") or ""),
                                   len(items), n, sum(int(t.get("n_base") or 0) for t, _ in items), expected,
                                   surprise, service in from_lines)
    return out


# A statement follows another "as a rule" when at most this share of the baseline's spans logging the first
# lack it; and a pair is read only with at least this many spans on each side.
SEQUENCE_AS_A_RULE = 0.05
MIN_SEQUENCE_SPANS = 5


@dataclass
class Broken:
    """A statement that stopped following another in the same spans: the code now leaves between them."""

    service: str
    template: str  # logged first, still logged
    follows: str  # logged after it as a rule, now missing in `broken` of `n` spans
    n: int
    broken: int
    n_base: int
    broken_base: int
    surprise: float
    early: int = 0  # the baseline's last spans, already broken before the window (left out of n_base); said
    # from MIN_SEQUENCE_SPANS on: a rule breaks that many times in a row by chance about never (0.05^5)

    @property
    def share(self) -> float:
        return self.broken / self.n if self.n else 0.0


def binomial_surprise(k: int, n: int, p: float) -> float:
    """-log10 P(X >= k) for X ~ Binomial(n, p): how unlikely this many spans are by chance. At or below the
    mean it is under 0.3 and taken as 0; above it the terms fall, so the sum stops once they are negligible
    (a window of 100,000 spans costs a few dozen terms, not 100,000)."""
    if k <= n * p:
        return 0.0
    terms: list[float] = []
    for i in range(k, n + 1):
        terms.append(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p)
                     + (n - i) * math.log1p(-p))
        if terms[-1] < terms[0] - 40:  # e^-40: nothing more to add at any precision that matters
            break
    return max(0.0, -(terms[0] + math.log(sum(math.exp(t - terms[0]) for t in terms))) / math.log(10))


def broken_sequences(rows: Iterable[dict[str, Any]]) -> dict[str, Broken]:
    """Per service, its clearest broken sequence (log_sequences rows): how unlikely that many spans in the
    window are where a statement no longer follows the one it followed as a rule, at the baseline's share of
    such spans (taken as one more than seen: a rule seen in few spans is not certain), less the log10 of the
    pairs the service was tested on."""
    out: dict[str, Broken] = {}
    for r in rows:
        n, k, n_base, k_base = (int(r[f]) for f in ("n", "broken", "n_base", "broken_base"))
        surprise = binomial_surprise(k, n, (k_base + 1) / (n_base + 2)) - math.log10(max(int(r["tested"]), 1))
        best = out.get(str(r["service"]))
        if surprise > 0 and (best is None or surprise > best.surprise):
            out[str(r["service"])] = Broken(str(r["service"]), str(r["template"]), str(r["follows"]), n, k,
                                            n_base, k_base, surprise, int(r.get("early") or 0))
    return out


WARN_WEIGHT = 0.75
# Counts of a warning already seen vary more than by chance (bursts, the mix of requests): twice its
# expected count is within normal variation.
SEEN_TOLERANCE = 2.0


def workload_spread(pairs: list[tuple[int, float]]) -> float:
    """How far template counts stray from their baseline in this window by the mix of requests alone: the
    upper quartile of count / expected over templates seen often in the baseline (1 to 4)."""
    ratios = sorted((n + 1) / (expected + 1) for n, expected in pairs if expected >= 3)
    if len(ratios) < 4:
        return 1.0
    return min(max(ratios[(3 * len(ratios)) // 4], 1.0), 4.0)


def first_complainers(rows: Iterable[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Per service: (traces where it logged a problem first among several services, such shared traces)."""
    return {str(r["service"]): (int(r.get("first_shared") or 0), int(r.get("shared") or 0)) for r in rows}


MASK_RUN_RE = re.compile(r"…(?:[:.\-/]?…)+")


def template_text(template: str, n: int = 160) -> str:
    """A template as a person reads it: masks (a run of them, like a masked clock time, as one) shown as '…',
    whitespace collapsed, clipped."""
    text = " ".join(MASK_RUN_RE.sub("…", ID_MASK_RE.sub("…", template)).split())
    return text if len(text) <= n else text[: n - 1] + "…"


# To name a service, a shift must be this many standard errors over this share of calls, a log template
# this improbable (-log10 p); SIGNIFICANT is where one kind of evidence alone is sure. Kinds that agree
# on a service add up (a CPU hog slows its own calls and makes its callers wait for it).
MIN_SHIFT_Z = 4.0
MIN_SHIFT_SHARE = 0.15
MIN_LOG_SURPRISE = 6.0
SIGNIFICANT = 10.0


# An error line naming another service of the system counts this many times less for the service logging it.
NAMES_OTHER_DISCOUNT = 2.0


def services_named(text: str, services: Iterable[str]) -> list[str]:
    """The services whose names appear in `text` as whole words (not inside a longer name), sorted."""
    return sorted(s for s in services
                  if len(s) >= 3 and re.search(rf"(?<![\w.-]){re.escape(s)}(?![\w-])", text, re.IGNORECASE))


@dataclass
class Evidence:
    """What the signals say about one service: how much (`weight`, 0 to 1.5 per kind, summed), the kind
    and operation of the strongest, and a sentence per signal with its numbers."""

    service: str
    weight: float
    kind: str
    operation: str | None
    texts: list[str]


def downstream(edges: Iterable[dict[str, Any]], start: str) -> list[str]:
    """Services reachable from `start` in the call graph (breadth first, start included)."""
    edges = list(edges)
    out, frontier = [start], [start]
    while frontier:
        nxt = []
        for row in edges:
            if row["caller"] in frontier and row["callee"] not in out:
                out.append(row["callee"])
                nxt.append(row["callee"])
        frontier = nxt
    return out


def fmt_ms(v: float) -> str:
    """Milliseconds as a person reads them (1.5 ms, 42 ms, 1.20 s)."""
    if v >= 1000:
        return f"{v / 1000:.2f} s"
    return f"{v:.0f} ms" if v >= 10 else f"{v:.1f} ms"


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def service_evidence(span_rows: Iterable[dict[str, Any]], edges: Iterable[dict[str, Any]],
                     templates: Iterable[dict[str, Any]], volumes: Iterable[dict[str, Any]],
                     order_rows: Iterable[dict[str, Any]], statements: Iterable[dict[str, Any]] = (),
                     sequences: Iterable[dict[str, Any]] = ()) -> list[Evidence]:
    """Services with significant evidence, strongest first, from the evidence queries' rows (span_stats,
    call_graph, log_templates, log_stats, log_order, log_statements, log_sequences)."""
    span_rows, edges = list(span_rows), list(edges)
    # service -> (significance, kind, op, text, how much it counts for this service)
    found: dict[str, list[tuple[float, str, str | None, str, float]]] = {}
    for shift in latency_shifts(span_rows).values():
        if shift.z >= MIN_SHIFT_Z and shift.share >= MIN_SHIFT_SHARE and shift.ops:
            op, share, p50, p50_base, n = max(shift.ops, key=lambda t: t[1] * t[4])
            found.setdefault(shift.service, []).append((shift.z, "latency", op, (
                f"{_pct(shift.share)} of its own calls are slower than their baseline p95 (expected 5%, "
                f"{shift.calls} calls, z = {shift.z:.1f}); e.g. {op}: median self time {fmt_ms(p50_base)} -> "
                f"{fmt_ms(p50)}, {_pct(share)} of {n} calls slower"), 1.0))
    network = network_shifts(list(edges))
    for shift in network.values():
        if explained_elsewhere(shift, network):
            continue
        if shift.z >= MIN_SHIFT_Z and shift.share >= MIN_SHIFT_SHARE and shift.ops:
            callers = sorted({o[0].split(" -> ")[0] for o in shift.ops})
            edge, _, p50, p50_base, _ = max(shift.ops, key=lambda t: t[1] * t[4])
            found.setdefault(shift.service, []).append((shift.z, "latency", None, (
                f"calls into it wait longer outside its own spans (network or queue): {_pct(shift.share)} of "
                f"{shift.calls} calls over their baseline p95 gap (z = {shift.z:.1f}), from "
                f"{', '.join(callers[:4])}; e.g. {edge}: gap {fmt_ms(p50_base)} -> {fmt_ms(p50)} median"), 1.0))
    first = first_complainers(order_rows)
    complaining = set()  # services whose problem lines appear or surge
    volumes = list(volumes)
    services = {str(r["service"]) for r in span_rows} | {str(v["service"]) for v in volumes}
    for surge in log_surges(templates, volumes).values():
        if surge.surprise < MIN_LOG_SURPRISE:
            continue
        lead, shared = first.get(surge.service, (0, 0))
        text = (f"problem log template \"{template_text(surge.template)}\" {surge.n_base} -> {surge.n} lines "
                f"({'new in the window' if surge.new else f'{surge.expected:.1f} expected from its baseline'}"
                f"{f', in {surge.traces} traces' if surge.traces else ''})")
        if shared >= 3 and lead >= 0.8 * shared:
            text += f"; it logged first in {lead} of {shared} traces where several services logged problems"
        factor = 1.0
        named = services_named(f"{surge.template} {surge.example}", services - {surge.service})
        if named:
            # "cannot reach X", "no instances available for X", "X returned 500": the lines are about another
            # service, so they say less about the logger's own code
            factor = 1 / NAMES_OTHER_DISCOUNT
            text += f"; the lines name {', '.join(named[:3])}, so they may be about that service, not this one"
        found.setdefault(surge.service, []).append((surge.surprise, "errors", None, text, factor))
        complaining.add(surge.service)
    for gone in stopped_statements(statements, span_rows, volumes).values():
        if gone.surprise < MIN_LOG_SURPRISE:
            continue
        what = (f"routine log statement \"{template_text(gone.template)}\"" if gone.statements == 1 else
                f"{gone.statements} routine log statements, e.g. \"{template_text(gone.template)}\",")
        still = ("while it still logs its other lines" if gone.from_lines else "while it is still called")
        found.setdefault(gone.service, []).append((gone.surprise, "errors", None, (
            f"its code takes another path: {what} {gone.n_base} -> {gone.n} lines {still} "
            f"({gone.expected:.1f} expected from its {'other lines' if gone.from_lines else 'calls'})"), 1.0))
    # a caller's code also takes another path when what it calls fails or times out: a broken sequence counts
    # less while a service it reaches downstream has evidence of its own; and a service whose problem lines
    # surge has told it already (the failing requests are most likely the same): it is counted once
    for broken in broken_sequences(sequences).values():
        if broken.surprise < MIN_LOG_SURPRISE or broken.share < MIN_SHIFT_SHARE:
            continue
        text = (f"its code takes another path: \"{template_text(broken.follows)}\" no longer follows "
                f"\"{template_text(broken.template)}\" in {broken.broken} of {broken.n} spans "
                f"({broken.broken_base} of {broken.n_base} in the baseline")
        if broken.early >= MIN_SEQUENCE_SPANS:
            text += f"; its last {broken.early} spans already lacked it"
        text += ")"
        below = [s for s in downstream(edges, broken.service)[1:] if s in found]
        factor = 1.0
        if broken.service in complaining:
            factor = 0.0
            text += "; counted once with its problem lines"
        elif below:
            factor = 1 / NAMES_OTHER_DISCOUNT
            text += f"; it calls {', '.join(below[:3])}, which changed too, so it may follow them"
        found.setdefault(broken.service, []).append((broken.surprise, "errors", None, text, factor))
    ranked = []
    for service, items in found.items():
        items.sort(key=lambda t: -t[0] * t[4])
        _, kind, op, _, _ = items[0]
        weight = sum(min(sig / SIGNIFICANT, 1.5) * factor for sig, _, _, _, factor in items)
        ranked.append((-weight, -items[0][0], Evidence(service, weight, kind, op, [t[3] for t in items])))
    ranked.sort(key=lambda t: (t[0], t[1], t[2].service))  # equal weight: the larger significance first
    return [ev for *_, ev in ranked]
