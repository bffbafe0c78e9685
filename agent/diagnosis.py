"""The built-in analyst's reasoning: the next tool calls, and what the evidence says.

General on purpose: it knows no service names. It finds the symptom (the service the question
names, else the entry point that changed most), walks the call graph downstream of it, and blames
the operation whose *own* work changed: self time for latency, errors it raised itself (not
passed up from a child) for failures, a client call into something outside the traces (a
database, an external API, an unreachable service) for dependencies, and resource gauges (CPU,
memory, lag) for saturation. Logs, attribute comparisons, anomalies and an exemplar trace
corroborate. Nothing significant changed -> it says so and names no root cause.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from agent.answer import Finding, RootCause
from agent.deps import AgentDeps, ToolCall
from agent.question import match_services
from anomaly import evidence_sql, signals
from anomaly.baseline import binomial_tail

# Which module implements each tool (the agent registers them all; some land later than others).
TOOL_MODULES = {
    "service_overview": "tools.traces", "service_map": "tools.traces", "latency_breakdown": "tools.traces",
    "attribute_comparison": "tools.traces", "exemplar_traces": "tools.traces", "trace_waterfall": "tools.traces",
    "log_patterns": "tools.logs", "resource_metrics": "tools.metrics", "find_anomalies": "tools.anomalies",
    "root_cause_candidates": "tools.anomalies", "run_sql": "tools.sql",
}
DIAGNOSIS_INTENTS = {"slow", "errors", "anomalies", "compare", "chart"}
# Significance: a change must be this large to be called a cause (fault-free runs have noise and tails).
MIN_CALLS = 8
MIN_SELF_RATIO = 1.5
MIN_SELF_DELTA_MS = 2.0
MIN_ERROR_RATE_DELTA = 0.02
MIN_ERRORS = 5
MIN_RATE_RATIO = 3.0
# Family-wise: the chance that any of the operations tested shows its errors by chance at its baseline rate.
ERROR_CHANCE = 0.01
# With no symptom named, a rise in self time over fewer than FEW_CALLS calls counts only when it is this many
# standard errors (Welch's t).
MIN_SELF_T_UNNAMED = 4.0
FEW_CALLS = 30
MIN_SLOWER_SHARE = 0.1
# ...unless the window's p95 self time is an order of magnitude beyond the slowest call of the baseline: pauses
# the operation never had before, however few (GC pauses hitting one call in twelve), are a change.
FAR_TAIL_FACTOR = 10.0
NEW_SERVICE_WEIGHT = 0.5  # a service without history or callers is unconfirmed: at most a coin flip
MIN_SERVED_SHARE = 0.05  # extra self time this share of all time spent serving requests counts in full


@cache
def implemented(tool: str) -> bool:
    """Whether the tools package provides `tool` (so the plan never calls a missing one)."""
    module = TOOL_MODULES.get(tool)
    try:
        return module is not None and hasattr(importlib.import_module(module), tool)
    except ImportError:
        return False


# ---- reading the results ---------------------------------------------------------------------


@dataclass
class Op:
    """One (service, operation, span kind) in the window versus the baseline."""

    service: str
    operation: str
    kind: str
    peer: str
    n: int
    n_base: int
    avg_ms: float
    avg_base_ms: float
    p95_ms: float
    p95_base_ms: float
    self_ms: float
    self_base_ms: float
    errors: int
    errors_base: int
    own_errors: int
    own_errors_base: int
    leaf_n: int
    error_example: str = ""
    destination: str = ""  # messaging topic/queue (links producers to their consumers)
    leaf_errors: int = 0  # failed calls that got no traced child (the callee never answered)
    self_sd_ms: float = 0.0  # standard deviation of self time, window and baseline
    self_sd_base_ms: float = 0.0
    slower: float | None = None  # share of window calls above the baseline's p95 self time (None: unknown)
    remote_n: int = 0  # calls whose child runs in another service (self time is then the wire and its queue)
    self_p95_ms: float = 0.0  # the window's p95 self time, and the baseline's slowest self time
    self_max_base_ms: float = 0.0
    few_requests: bool = False  # its slower calls came from a handful of requests (signals.from_few_requests)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Op:
        num = {k: (v if isinstance(v, (int, float)) and v == v else 0) for k, v in row.items()}
        return cls(
            service=str(row["service"]), operation=str(row["operation"]), kind=str(row["kind"]),
            peer=str(row.get("peer") or ""), n=int(num["n"]), n_base=int(num["n_base"]),
            avg_ms=float(num["avg_ms"]), avg_base_ms=float(num["avg_base_ms"]), p95_ms=float(num["p95_ms"]),
            p95_base_ms=float(num["p95_base_ms"]), self_ms=float(num["self_ms"]),
            self_base_ms=float(num["self_base_ms"]), errors=int(num["errors"]), errors_base=int(num["errors_base"]),
            own_errors=int(num["own_errors"]), own_errors_base=int(num["own_errors_base"]),
            leaf_n=int(num["leaf_n"]), error_example=str(row.get("error_example") or ""),
            destination=str(row.get("destination") or ""), leaf_errors=int(num.get("leaf_errors", 0)),
            self_sd_ms=float(num.get("self_sd_ms", 0.0)), self_sd_base_ms=float(num.get("self_sd_base_ms", 0.0)),
            slower=signals.op_slower_share(row), remote_n=int(num.get("remote_n", 0)),
            self_p95_ms=signals.quantile(row.get("self_q_ms"), 0.95),
            self_max_base_ms=float(num.get("self_max_base_ms", 0.0)),
            few_requests=signals.from_few_requests(row),
        )

    @property
    def label(self) -> str:
        return f"{self.service}/{self.operation}"

    @property
    def is_entry(self) -> bool:
        return self.kind in ("Server", "Consumer")

    @property
    def is_outbound_leaf(self) -> bool:
        """A client/producer call with no traced child: its callee is outside the traces."""
        return self.kind in ("Client", "Producer") and self.n > 0 and self.leaf_n >= 0.9 * self.n

    @property
    def fails_unanswered(self) -> bool:
        """A client/producer call whose failures got no traced answer (callee outside or unreachable)."""
        return self.kind in ("Client", "Producer") and self.own_errors > 0 and self.leaf_errors >= 0.9 * self.own_errors

    def self_t(self) -> float:
        """Welch's t of the rise in mean self time: how many standard errors it is. A dozen calls with one
        long tail can lift a mean by half without anything having changed."""
        se = math.sqrt(self.self_sd_ms ** 2 / max(self.n, 1) + self.self_sd_base_ms ** 2 / max(self.n_base, 1))
        delta = self.self_ms - self.self_base_ms
        return delta / se if se > 0 else math.copysign(math.inf, delta) if delta else 0.0

    def rate(self, base: bool = False) -> float:
        n, errs = (self.n_base, self.own_errors_base) if base else (self.n, self.own_errors)
        return errs / n if n else 0.0

    def error_chance(self) -> float:
        """P(at least this window's own errors in its calls) at the baseline's rate, with half an error added
        so a clean history still has a rate: a handful of failures where some fail anyway is chance."""
        return binomial_tail(self.own_errors, self.n, (self.own_errors_base + 0.5) / (self.n_base + 1))

    def err_rate(self, base: bool = False) -> float:
        n, errs = (self.n_base, self.errors_base) if base else (self.n, self.errors)
        return errs / n if n else 0.0

    def fails(self, own: bool = True) -> str:
        """'a% -> b%' of calls failing (own errors or all), as the span statistics state them."""
        before, now = (self.rate(base=True), self.rate()) if own else (self.err_rate(base=True), self.err_rate())
        return f"{_pct(before)} -> {_pct(now)}"


@dataclass
class Signal:
    """A candidate root cause with its strength and the sentence that states its numbers."""

    service: str
    operation: str | None
    kind: str
    strength: float  # 0..1, how much of the symptom it explains / how clear the change is
    evidence: str
    score: float = 0.0  # absolute size, for ranking candidates of one kind
    op: Op | None = None  # the operation the signal was read from
    new: bool = False  # its service has no history and no callers (see _weigh_new_services)
    confidence: float | None = None  # when lower than strength: other evidence disagrees (_weigh_disagreement)


@dataclass
class Analysis:
    symptom: str | None
    symptom_text: str
    signals: list[Signal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    biggest_change: str = ""


_fmt_ms = signals.fmt_ms
downstream = signals.downstream


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%" if v < 0.1 else f"{100 * v:.0f}%"


def analyst_sql(deps: AgentDeps) -> dict[str, str]:
    """The analyst's own queries for this window (keyed so results can be found in the ledger)."""
    w = deps.window
    return {
        "span_stats": evidence_sql.span_stats_sql(w),
        "call_graph": evidence_sql.call_graph_sql(w),
        "log_stats": evidence_sql.log_stats_sql(w),
        "log_templates": evidence_sql.log_templates_sql(w),
        "log_order": evidence_sql.log_order_sql(w),
        "log_statements": evidence_sql.log_statements_sql(w),
        "log_sequences": evidence_sql.log_sequences_sql(w),
        "resource_gauges": evidence_sql.resource_gauges_sql(w),
    }


def sql_result(deps: AgentDeps, key: str) -> ToolCall | None:
    sql = analyst_sql(deps)[key]
    return next((c for c in deps.results("run_sql") if c.args.get("sql") == sql), None)


def rows_of(call: ToolCall | None) -> list[dict[str, Any]]:
    return call.result.rows if call is not None and call.result.ok else []


def peer_service(op: Op, services: list[str]) -> str | None:
    """The known service an outbound call targets (by peer attributes or the operation name)."""
    for text in (op.peer, op.operation):
        if not text:
            continue
        for found in match_services(text, [s for s in services if s != op.service]):
            return found
    return None


def _effective(deps: AgentDeps) -> tuple[list[str], list[str], list[str]]:
    """Intents, services and operations of this question, completed from the thread for follow-ups."""
    q, ctx = deps.question, deps.context
    intents = list(q.intents)
    services = list(q.services)
    follow_up = bool(ctx.get("intents") or ctx.get("services"))
    if follow_up and not [i for i in intents if i not in ("compare", "chart")]:
        intents = [*intents, *[i for i in ctx.get("intents", []) if i not in intents]]
    if follow_up and not services and not q.operations and len(q.text.split()) <= 6:
        services = list(ctx.get("services", []))
    return intents, services, list(q.operations)


def mode(deps: AgentDeps) -> str:
    intents, services, operations = _effective(deps)
    if deps.question.trace_id:
        return "trace"
    if not intents and not services and not operations:
        return "help"
    if "traffic" in intents and not DIAGNOSIS_INTENTS & set(intents):
        return "traffic"
    return "diagnose"


def analyze(deps: AgentDeps) -> Analysis:
    """Rank root-cause signals from the span statistics, call graph, logs and resource gauges.

    When the service the question names shows nothing, the whole system is searched: "product
    images load slowly" may name a service that is fine while the proxy serving images is not."""
    key = ("analysis", len(deps.calls))
    cached = deps.context.get("_analysis")
    if cached and cached[0] == key:
        return cached[1]
    _, services, _ = _effective(deps)
    ops = [Op.from_row(r) for r in rows_of(sql_result(deps, "span_stats"))]
    known = sorted({o.service for o in ops})
    symptom = next((s for s in services if s in known), None)
    analysis = _analyze(deps, ops, symptom)
    if symptom and not any(s.strength >= 0.5 for s in analysis.signals):
        wider = _analyze(deps, ops, None)
        if any(s.strength >= 0.5 for s in wider.signals):
            wider.notes = [f"{symptom} itself shows no significant change: " + "; ".join(analysis.notes)
                           if analysis.notes else f"{symptom} itself shows no significant change."]
            wider.symptom_text = f"the system (not {symptom})"
            analysis = wider
    deps.context["_analysis"] = (key, analysis)
    return analysis


def _analyze(deps: AgentDeps, ops: list[Op], symptom: str | None) -> Analysis:
    intents, _, operations = _effective(deps)
    edges = rows_of(sql_result(deps, "call_graph"))
    known = sorted({o.service for o in ops})
    scope = downstream(edges, symptom) if symptom else known
    # a caller whose calls into the scope surged (a producer flooding its consumers) is in scope too
    scope += [c for c in surging_callers(edges, scope, traffic_scale(ops)) if c not in scope]
    # consumers are linked to producers by topic, not by parent span: producers to the scope's topics count
    topics = {o.destination for o in ops if o.service in scope and o.kind == "Consumer" and o.destination}
    scope += sorted({o.service for o in ops if o.kind == "Producer" and o.destination in topics} - set(scope))
    # outbound leaf calls may target services that no longer show up (unreachable): keep them in scope
    in_scope = [o for o in ops if o.service in scope]
    analysis = Analysis(symptom=symptom, symptom_text=symptom or "the system")
    if not ops:
        # logs and gauges may still tell (a deployment exporting no traces): their evidence follows below
        stats = sql_result(deps, "span_stats")
        analysis.notes.append(f"The span statistics query failed ({_clip(stats.result.error or '')}): spans were "
                              "not compared." if stats is not None and not stats.result.ok else
                              "There are no spans in the window or its baseline: only logs and gauges were "
                              "compared.")

    entry = [o for o in ops if o.service == symptom and (o.is_entry or not any(x.is_entry for x in ops
                                                                                  if x.service == symptom))]
    if operations:
        entry = [o for o in entry if o.operation in operations] or entry
    sym_extra = sum(max(o.avg_ms - o.avg_base_ms, 0.0) * o.n for o in entry)
    sym_calls = sum(o.n for o in entry)
    if entry and sym_calls:
        # the entry operation that changed most (then the busiest), quoted as the span statistics have
        # it: every number is in the evidence
        main = max(entry, key=lambda o: (10 * abs(o.err_rate() - o.err_rate(base=True))
                                         + max(o.avg_ms / max(o.avg_base_ms, 0.001) - 1, 0.0), o.n))
        analysis.notes.append(
            f"{symptom} ({main.operation}): average latency {_fmt_ms(main.avg_base_ms)} -> {_fmt_ms(main.avg_ms)}, "
            f"p95 {_fmt_ms(main.p95_base_ms)} -> {_fmt_ms(main.p95_ms)}, errors {_pct(main.err_rate(base=True))} -> "
            f"{_pct(main.err_rate())} over {main.n} calls."
        )

    analysis.signals.extend(_latency_signals(in_scope, known, sym_extra, symptom,
                                             served_ms=sum(o.avg_ms * o.n for o in ops if o.is_entry)))
    analysis.signals.extend(_error_signals(in_scope, known, symptom))
    analysis.signals.extend(_traffic_signals(in_scope, ops))
    _apply_resources(analysis, metric_rows(rows_of(sql_result(deps, "resource_gauges")), known), scope)
    _apply_logs(analysis, rows_of(sql_result(deps, "log_stats")), scope)
    _apply_shifts(analysis, deps, scope)
    _promote_floods(analysis, edges)
    _weigh_new_services(analysis, ops, edges)
    _follow_propagation(analysis, edges)

    # a question about one symptom ranks its kind of evidence first; one about both ("slow or failing")
    # prefers neither: the evidence decides
    want = ("errors" if "errors" in intents and "slow" not in intents
            else "slow" if "slow" in intents and "errors" not in intents else None)
    analysis.signals.sort(key=lambda s: -_rank(s, want))
    # the same service reached by two routes keeps its strongest signal
    seen: set[tuple[str, str]] = set()
    unique = []
    for s in analysis.signals:
        key = (s.service, s.kind)
        if key not in seen:
            seen.add(key)
            unique.append(s)
    analysis.signals = unique
    # producers and consumers are linked by topic, not by parent span: those links count as calls here
    topic_edges = [{"caller": p.service, "callee": c.service} for p in ops if p.kind == "Producer" and p.destination
                   for c in ops if c.kind == "Consumer" and c.destination == p.destination]
    _weigh_disagreement(analysis, edges + topic_edges)
    if not analysis.signals:
        analysis.biggest_change = _biggest_change(ops)
    return analysis


def _weigh_disagreement(analysis: Analysis, edges: list[dict[str, Any]]) -> None:
    """When another service not connected to the first candidate has confident evidence of its own, the
    evidence points two ways: every candidate keeps its rank, and every confidence is scaled by the first's
    share of the two. A service calling the first (a fault shows upstream too) or called by it (propagation
    already weighed it) agrees with it."""
    confident = [s for s in analysis.signals if s.strength >= 0.5]
    if len(confident) < 2:
        return
    top = confident[0]
    callers = {str(r["caller"]) for r in edges}
    related = set(downstream(edges, top.service)) | {c for c in callers if top.service in downstream(edges, c)}
    # a service the first's own evidence accounts for (a neighbour it slowed, a callee it waits on) agrees too
    related |= set(signals.services_named(top.evidence, {s.service for s in confident}))
    rival = next((s for s in confident[1:] if s.service not in related), None)
    if rival is None:
        return
    share = top.strength / (top.strength + rival.strength)
    for s in analysis.signals:
        s.confidence = s.strength * share
    # in words: the confidences are the analyst's own arithmetic, no number any tool returned
    analysis.notes.append(
        f"The signals disagree: {rival.service} ({rival.kind}) changed too, and neither calls the other, so "
        f"{top.service} is named with {_share_words(share)} of the confidence its own evidence gives (every "
        f"candidate's confidence is scaled by its share of the evidence).")


def _rank(s: Signal, want: str | None) -> float:
    bonus = 0.0
    if want == "slow" and s.kind in ("latency", "saturation", "dependency"):
        bonus = 0.15
    elif want == "errors" and s.kind in ("errors", "dependency"):
        bonus = 0.15
    return s.strength + bonus


def _latency_signals(ops: list[Op], services: list[str], sym_extra: float, symptom: str | None,
                     served_ms: float = 0.0) -> list[Signal]:
    """Operations whose own (self) time grew, sized by the extra time they add in the window. With no symptom
    named, by how clearly their calls got slower and how much of the time spent serving requests
    (`served_ms`: all entry spans in the window) the extra is."""
    grown = []
    for o in ops:
        delta = o.self_ms - o.self_base_ms
        if o.n < MIN_CALLS or o.n_base < MIN_CALLS or delta < MIN_SELF_DELTA_MS:
            continue
        if o.self_ms < MIN_SELF_RATIO * max(o.self_base_ms, 0.5):
            continue
        if o.remote_n >= 0.5 * o.n:
            continue  # a call answered by another service: its growth is charged to that end (_apply_shifts)
        far_tails = o.self_max_base_ms > 0 and o.self_p95_ms >= FAR_TAIL_FACTOR * o.self_max_base_ms
        if o.slower is not None and o.slower < MIN_SLOWER_SHARE and not far_tails:
            # the mean rose, but fewer calls than one in ten are slower than the baseline's p95: a few long
            # tails (a big query now and then, as the baseline had too), not a change in how it behaves
            continue
        if symptom is None and (o.avg_ms <= o.p95_base_ms
                                or (o.n < FEW_CALLS and o.self_t() < MIN_SELF_T_UNNAMED)
                                or o.few_requests):
            # Nothing named to explain: a window whose average stays within the baseline's own p95 is ordinary
            # variation, not a finding (it would otherwise take the whole share of "extra" time). So is, over
            # a few calls, a rise of a few standard errors: two slow tails among a dozen calls lift a mean
            # above the p95. Over more calls that takes many tails, and a t-test would miss pauses that hit
            # one call in six (ad GC pauses: self time 2 -> 124 ms over 81 calls, t = 2.7).
            # Nor are slower calls that came from a handful of requests (signals.from_few_requests).
            continue
        grown.append((delta * o.n, delta, o))
    if not grown:
        return []
    total = sum(g[0] for g in grown)
    out = []
    for extra, _delta, o in sorted(grown, key=lambda g: -g[0])[:4]:
        share = extra / sym_extra if sym_extra > 0 else extra / total
        share = min(share, 1.0)
        if symptom is None and served_ms > 0:
            # nothing named: the share of "extra" time says little (one grown op takes all of it); how much of
            # all the time spent serving requests the extra is does
            share *= min(1.0, extra / served_ms / MIN_SERVED_SHARE)
        service, kind, operation = o.service, "latency", o.operation
        what = (f"self time of {o.operation} ({o.kind.lower()} span) rose {_fmt_ms(o.self_base_ms)} -> "
                f"{_fmt_ms(o.self_ms)}")
        if o.is_outbound_leaf:
            target = peer_service(o, services)
            if target:
                service, kind, operation = target, "dependency", None
                what = f"calls from {o.service} to {target} ({o.operation}) take {_fmt_ms(o.avg_base_ms)} -> " \
                       f"{_fmt_ms(o.avg_ms)} and get no traced answer"
            elif o.peer and not _is_datastore(o):
                kind = "dependency"
                what = f"{o.service}'s outbound call {o.operation} to {o.peer} rose {_fmt_ms(o.avg_base_ms)} -> " \
                       f"{_fmt_ms(o.avg_ms)}"
        what += f" (p95 {_fmt_ms(o.p95_base_ms)} -> {_fmt_ms(o.p95_ms)}, {o.n} calls)"
        if symptom and sym_extra > 0:
            what += f"; it accounts for {_share_words(share)} of {symptom}'s extra latency"
        out.append(Signal(service, operation, kind, 0.35 + 0.6 * share, what, score=extra, op=o))
    return out


def _share_words(share: float) -> str:
    """A share in words (a ratio computed here is no number any tool returned)."""
    if share >= 0.85:
        return "nearly all"
    if share >= 0.6:
        return "most"
    return "about half" if share >= 0.4 else "part"


def _is_datastore(o: Op) -> bool:
    text = f"{o.peer} {o.operation}".lower()
    return any(k in text for k in ("sql", "select", "insert", "update", "redis", "valkey", "mongo", "cassandra",
                                   "memcache", "elastic", "cache", "db", "query"))


def _error_signals(ops: list[Op], services: list[str], symptom: str | None) -> list[Signal]:
    """Operations that raise errors themselves (not passed up from a failing child)."""
    grown = []
    tested = sum(1 for o in ops if o.n + o.n_base >= MIN_CALLS)
    for o in ops:
        if o.n + o.n_base < MIN_CALLS or o.own_errors < MIN_ERRORS:
            continue
        delta = o.rate() - o.rate(base=True)
        if delta < MIN_ERROR_RATE_DELTA or o.rate() < 2 * o.rate(base=True):
            continue
        if o.n_base and tested * o.error_chance() > ERROR_CHANCE:
            continue  # as many failures turn up by chance somewhere among this many operations
        excess = o.own_errors - o.rate(base=True) * o.n
        grown.append((excess, delta, o))
    if not grown:
        return []
    total = sum(g[0] for g in grown)
    out = []
    for excess, _delta, o in sorted(grown, key=lambda g: -g[0])[:4]:
        share = excess / total if total > 0 else 0.0
        service, kind, operation = o.service, "errors", o.operation
        example = f' ("{o.error_example[:120]}")' if o.error_example else ""
        what = f"{o.operation} ({o.kind.lower()} span) fails {o.fails()} of " \
               f"{o.n} calls{example}"
        if o.fails_unanswered:
            target = peer_service(o, services)
            if target and target != o.service:
                service, kind, operation = target, "dependency", None
                what = f"{o.service}'s calls to {target} ({o.operation}) fail {o.fails()} with no traced " \
                       f"answer from {target}{example}"
            elif o.peer and not _is_datastore(o):
                kind = "dependency"
                what = f"{o.service}'s outbound call {o.operation} to {o.peer} fails {o.fails()}{example}"
        out.append(Signal(service, operation, kind, 0.4 + 0.55 * share, what, score=excess))
    return out


def _traffic_signals(scope_ops: list[Op], ops: list[Op]) -> list[Signal]:
    """An outbound operation whose rate jumped while entry traffic stayed flat (floods downstream)."""
    scale = traffic_scale(ops)
    if not scale:
        return []
    out = []
    for o in scope_ops:
        if o.kind not in ("Producer", "Client") or o.n < 50 or not o.n_base:
            continue
        ratio = (o.n / o.n_base) / scale
        if ratio >= MIN_RATE_RATIO:
            out.append(Signal(o.service, o.operation, "saturation", 0.45,
                              f"{o.service} sends {ratio:.1f}x more {o.operation} per request than before "
                              f"({o.n} in the window vs {o.n_base} in the baseline)", score=o.n, op=o))
    return out


def surging_callers(edges: list[dict[str, Any]], scope: list[str], scale: float) -> list[str]:
    """Callers outside `scope` whose calls into it rose MIN_RATE_RATIO-fold or more relative to the
    overall traffic (`scale` = entry calls in the window / in the baseline)."""
    return [row["caller"] for row in edges
            if row["callee"] in scope and row["caller"] not in scope and row["n"] >= 50
            and row["n"] >= MIN_RATE_RATIO * scale * max(int(row["n_base"]), 1)]


def traffic_scale(ops: list[Op]) -> float:
    """Entry calls in the window per entry call in the baseline (how the plain traffic compares)."""
    entry_n = sum(o.n for o in ops if o.is_entry)
    entry_base = sum(o.n_base for o in ops if o.is_entry)
    return entry_n / entry_base if entry_n and entry_base else 0.0


def _promote_floods(analysis: Analysis, edges: list[dict[str, Any]]) -> None:
    """A traffic surge whose downstream services show symptoms is their cause, not a side effect."""
    for flood in [s for s in analysis.signals if s.evidence.startswith(f"{s.service} sends ")]:
        below = downstream(edges, flood.service)[1:]
        topic = flood.op.destination if flood.op else ""
        victims = [s for s in analysis.signals if s is not flood and s.service != flood.service and (
            s.service in below or (topic and s.op is not None and s.op.kind == "Consumer"
                                   and s.op.destination == topic))]
        if victims:
            flood.strength = min(0.98, max(v.strength for v in victims) + 0.02)
            flood.evidence += "; downstream: " + ", ".join(
                sorted({v.service for v in victims})) + " fell behind (" + _clip(victims[0].evidence, 160) + ")"


def metric_rows(rows: list[dict[str, Any]], known: list[str]) -> list[dict[str, Any]]:
    """Gauge rows named by deployment/pod (no service.name) renamed to the trace service they match."""
    out = []
    for r in rows:
        if r["service"] not in known:
            found = match_services(r["service"], known)
            r = {**r, "service": found[0]} if found else r
        out.append(r)
    return out


def _apply_resources(analysis: Analysis, rows: list[dict[str, Any]], scope: Iterable[str]) -> None:
    """Saturated resources: promote a latency signal to saturation, or add one when only metrics show it."""
    scope = set(scope)
    by_service: dict[str, list[str]] = {}
    strength: dict[str, float] = {}
    nodes: dict[str, set[str]] = {}
    pinned: set[str] = set()
    for r in rows:
        svc, metric = r["service"], r["metric"]
        nodes.setdefault(svc, set()).update(n for n in r.get("nodes") or [] if n)
        avg, base, last, first, p75 = (float(r.get(k) or 0) for k in ("avg", "avg_base", "last", "first", "p75"))
        if not r.get("n") or not r.get("n_base"):
            continue
        name = metric.lower()
        msg, s = "", 0.0
        if ("cpu" in name or "utilization" in name) and (str(r.get("unit")) == "%" or 1.5 < avg <= 100):
            avg, base, last, p75 = avg / 100, base / 100, last / 100, p75 / 100  # percent -> fraction
        # the level in the window: its mean, its last value when the fault began inside the window, or what a
        # quarter of its samples reached (pinned for minutes, even if the last sample is back to idle)
        level = max(avg, p75, last if avg >= 0.5 else 0.0)
        if ("cpu" in name or "utilization" in name) and base < 0.7 * level and 0.8 <= level <= 1.5:
            msg, s = (f"{metric} {base:.2f} -> {avg:.2f} (last {last:.2f}, peak {float(r.get('max') or 0):.2f})",
                      level)
            if level >= 0.85 and base < 0.6:
                pinned.add(svc)
        elif ("memory" in name or "heap" in name or "mem." in name) and base > 0 \
                and (grown := max(last, p75)) >= 1.3 * base and grown > first * 1.1:
            # grown for a quarter of the window, or up to its last sample: a leak, still climbing or just
            # restarted (the last sample back at the start does not undo the growth before it)
            msg = (f"{metric} grew {_bytes(base)} -> {_bytes(last)} and still climbing" if last >= p75 else
                   f"{metric} grew {_bytes(base)} -> {_bytes(float(r.get('max') or grown))}, then fell to "
                   f"{_bytes(last)}")
            s = min(1.0, grown / base / 3)
        elif "lag" in name and avg > 3 * max(base, 1) and avg >= 10:
            msg, s = f"{metric} {base:.0f} -> {avg:.0f} (peak {float(r.get('max') or 0):.0f})", 0.7
        if msg and msg not in by_service.get(svc, []):
            by_service.setdefault(svc, []).append(msg)
            strength[svc] = max(strength.get(svc, 0), s)
    for signal in analysis.signals:
        if signal.service in by_service and signal.kind == "latency":
            signal.kind = "saturation"
            signal.evidence += "; resources: " + ", ".join(by_service[signal.service])
            signal.strength = min(0.97, signal.strength + 0.05)
    _noisy_neighbours(analysis, pinned, nodes, by_service)
    named = {s.service for s in analysis.signals}
    for svc, msgs in by_service.items():
        if svc in named or (analysis.symptom and svc not in scope and not any(
                "cpu" in m.lower() for m in msgs)):
            continue
        # metrics alone: weaker than a traced cause unless the resource is pinned
        analysis.signals.append(Signal(svc, None, "saturation", 0.3 + 0.4 * min(strength[svc], 1.0),
                                       "resources: " + ", ".join(msgs), score=strength[svc]))


def _noisy_neighbours(analysis: Analysis, pinned: set[str], nodes: dict[str, set[str]],
                      resources: dict[str, list[str]]) -> None:
    """A service pinning its CPU slows the other services on its node: it, not they, is the cause."""
    for hog in pinned:
        victims = [s for s in analysis.signals if s.kind == "latency" and s.service != hog
                   and nodes.get(s.service, set()) & nodes.get(hog, set())]
        if not victims:
            continue
        shared = sorted(set.union(*(nodes[v.service] & nodes[hog] for v in victims)))
        analysis.signals.append(Signal(
            hog, None, "saturation", min(0.97, max(v.strength for v in victims) + 0.05),
            "resources: " + ", ".join(resources[hog]) + f"; it shares node {', '.join(shared)} with "
            + ", ".join(sorted({v.service for v in victims})) + ", which slowed down at the same time"))


def _bytes(v: float) -> str:
    return f"{v / 1e6:.0f} MB" if v >= 1e6 else f"{v:.3g}"


def _apply_logs(analysis: Analysis, rows: list[dict[str, Any]], scope: Iterable[str]) -> None:
    """New or growing error/warning logs corroborate a signal, or point at a service on their own."""
    scope = set(scope)
    notes: dict[str, str] = {}
    surge: dict[str, float] = {}  # how clearly the logs alone point at a service
    for r in rows:
        svc = r["service"]
        errors, errors_base, warns, warns_base = (int(r.get(k) or 0) for k in
                                                  ("errors", "errors_base", "warnings", "warnings_base"))
        n, n_base = int(r.get("n") or 0), int(r.get("n_base") or 0)
        scale = n / n_base if n_base else 1.0
        if errors >= MIN_ERRORS and errors > 2 * errors_base * scale + 2:
            notes[svc] = (f"{errors} error logs in the window vs {errors_base} before, "
                          f"e.g. \"{_clip(r['error_example'])}\"")
            if errors >= 4 * MIN_ERRORS and errors > 5 * errors_base * scale:
                surge[svc] = 0.6
        elif warns >= MIN_ERRORS and warns > 2 * warns_base * scale + 2:
            notes[svc] = f"{warns} warning logs vs {warns_base} before, e.g. \"{_clip(r['warning_example'])}\""
    for signal in analysis.signals:
        if signal.service in notes:
            signal.evidence += "; logs: " + notes.pop(signal.service)
            signal.strength = min(0.97, signal.strength + 0.05)
    for svc, note in notes.items():
        if analysis.symptom and svc not in scope:
            continue
        # logs alone: a clear surge of errors when nothing else changed names the service
        alone = not any(sig.strength >= 0.5 for sig in analysis.signals)
        strength = surge.get(svc, 0.35) if alone else 0.35
        analysis.signals.append(Signal(svc, None, "errors", strength, "logs: " + note))


def known_evidence(deps: AgentDeps) -> list[signals.Evidence] | None:
    """The per-service evidence from the analyst's own queries when they have run (None: not yet). A query
    that failed (over the SQL guard's time or memory limit) found nothing: the other signals still stand."""
    calls = [sql_result(deps, key) for key in evidence_sql.EVIDENCE_QUERIES]
    if any(c is None for c in calls):
        return None
    return signals.service_evidence(*(rows_of(c) for c in calls))


def _apply_shifts(analysis: Analysis, deps: AgentDeps, scope: Iterable[str]) -> None:
    """Per-service evidence from sparse telemetry (anomaly.signals): own calls slower than normal, calls into a
    service waiting longer on the wire, problem logs that appear or surge."""
    scope = set(scope)
    for ev in known_evidence(deps) or []:
        if analysis.symptom and ev.service not in scope:
            continue
        strength = min(0.95, 0.45 + 0.25 * ev.weight)
        evidence = "; ".join(ev.texts)
        same = next((sg for sg in analysis.signals if sg.service == ev.service), None)
        if same is not None:
            same.evidence += "; " + evidence
            same.strength = max(same.strength, strength)
        else:
            analysis.signals.append(Signal(ev.service, ev.operation, ev.kind, strength, evidence, score=ev.weight))


def _weigh_new_services(analysis: Analysis, ops: list[Op], edges: list[dict[str, Any]]) -> None:
    """A service with no spans before the window and no callers in it has nothing to confirm it: a new job,
    or spans anyone able to export telemetry could forge. It may still be the cause, so it is named with at
    most half the confidence and flagged as new."""
    history = {o.service for o in ops if o.n_base > 0}
    called = {str(r["callee"]) for r in edges if int(r.get("n") or 0) > 0}
    new = {o.service for o in ops} - history - called
    for s in analysis.signals:
        if s.service in new:
            s.strength *= NEW_SERVICE_WEIGHT
            s.new = True
            s.evidence = f"{s.service} is new (no spans before the window, no callers): {s.evidence}"


def _follow_propagation(analysis: Analysis, edges: list[dict[str, Any]]) -> None:
    """A fault shows at its service and at everything upstream of it: a service whose callees (directly or
    further down) carry a confident signal of their own is more likely a victim than the cause."""
    strength = {}
    for s in analysis.signals:
        strength[s.service] = max(strength.get(s.service, 0.0), s.strength)
    for s in analysis.signals:
        if s.kind not in ("latency", "errors") or s.evidence.startswith(f"{s.service} sends "):
            continue
        below = [d for d in downstream(edges, s.service)[1:]
                 if strength.get(d, 0.0) >= 0.5]
        if below:
            s.strength = max(0.0, s.strength - 0.25)
            s.evidence += f"; downstream {', '.join(below[:3])} changed too"


def _clip(text: str, n: int = 100) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _biggest_change(ops: list[Op]) -> str:
    busy = [o for o in ops if o.is_entry and o.n >= MIN_CALLS and o.n_base >= MIN_CALLS]
    if not busy:
        return ""
    o = max(busy, key=lambda x: x.p95_ms / max(x.p95_base_ms, 0.001))
    return f"the largest change is {o.label}: p95 {_fmt_ms(o.p95_base_ms)} -> {_fmt_ms(o.p95_ms)}"


# ---- planning --------------------------------------------------------------------------------


def _called(deps: AgentDeps, tool: str, **args: Any) -> bool:  # noqa: ANN401
    return any(all(c.args.get(k) == v for k, v in args.items()) for c in deps.results(tool))


def plan_next(deps: AgentDeps, offered: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """The next tool calls (empty: time to conclude). Order: overview -> anomalies -> breakdown ->
    attribute comparison -> logs -> resource metrics -> an exemplar trace."""

    def usable(tool: str) -> bool:
        return tool in offered and implemented(tool)

    def todo(calls: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
        return [(t, a) for t, a in calls if usable(t) and not _called(deps, t, **a)]

    m = mode(deps)
    if m == "help":
        return []
    if m == "trace":
        return todo([("trace_waterfall", {"trace_id": deps.question.trace_id})])
    sql = analyst_sql(deps)
    if m == "traffic":
        return todo([("service_overview", {}), ("run_sql", {"sql": sql["span_stats"]})])
    # every signal the analysis ranks on comes first: spans, calls, logs and gauges
    step1 = todo([("service_overview", {}),
                  *[("run_sql", {"sql": sql[key]}) for key in ("span_stats", "call_graph", "log_stats",
                                                               "log_templates", "log_order", "log_statements",
                                                               "log_sequences", "resource_gauges")]])
    if step1:
        return step1
    # the anomaly scorer's hints, weighed with the evidence just gathered (not gathered twice)
    hints = todo([("root_cause_candidates", {})])
    if hints:
        return hints
    analysis = analyze(deps)
    top = analysis.signals[0] if analysis.signals else None
    step2: list[tuple[str, dict[str, Any]]] = []
    if top is not None:
        step2.append(("latency_breakdown", {"service": top.service, "operation": None}))
        target = "error" if top.kind == "errors" else "slow"
        step2.append(("attribute_comparison", {"service": top.service, "operation": top.operation,
                                               "target": target}))
    step2 += [("log_patterns", {"service": None}), ("resource_metrics", {"service": None})]
    if top is not None:
        kind = "error" if top.kind == "errors" or " fail" in top.evidence else "slow"
        step2.append(("exemplar_traces", {"service": analysis.symptom or top.service, "operation": None,
                                          "kind": kind, "limit": 5}))
    step2 = todo(step2)
    if step2:
        return step2
    trace_id = _exemplar_trace_id(deps)
    if trace_id:
        return todo([("trace_waterfall", {"trace_id": trace_id})])
    return []


def _exemplar_trace_id(deps: AgentDeps) -> str | None:
    for call in deps.results("exemplar_traces"):
        for row in call.result.rows if call.result.ok else []:
            for key in ("trace_id", "TraceId", "traceId"):
                if row.get(key):
                    return str(row[key])
    return None


# ---- concluding ------------------------------------------------------------------------------


def conclude(deps: AgentDeps) -> Finding:
    """The short answer from what the tools returned."""
    m = mode(deps)
    if m == "help":
        from agent.analyst import CAPABILITIES

        return Finding(answer="I can't answer that from telemetry. " + CAPABILITIES,
                       follow_ups=["Why is <service> slow?", "What is unusual in the last 15 minutes?"])
    if m == "trace":
        return _conclude_trace(deps)
    if m == "traffic":
        return _conclude_traffic(deps)
    return _conclude_diagnosis(deps)


def _window_line(deps: AgentDeps) -> str:
    return f"_{deps.window.describe()}_"


def _conclude_diagnosis(deps: AgentDeps) -> Finding:
    analysis = analyze(deps)
    intents, _, _ = _effective(deps)
    lines: list[str] = []
    causes: list[RootCause] = []
    symptom = analysis.symptom_text
    confident = [s for s in analysis.signals if s.strength >= 0.5]
    if confident:
        top = confident[0]
        op = f" (`{top.operation}`)" if top.operation else ""
        verb = {"latency": "is slow", "errors": "is failing", "dependency": "is failing as a dependency",
                "saturation": "is saturated", "change": "changed"}[top.kind]
        if analysis.symptom and top.service != analysis.symptom:
            lines.append(f"**{symptom}** is affected because **{top.service}**{op} {verb}: {top.evidence}.")
        else:
            lines.append(f"**{top.service}**{op} {verb}: {top.evidence}.")
        attribute = _attribute_line(deps)
        if attribute:
            lines.append(attribute)
        for other in confident[1:3]:
            lines.append(f"Also: {other.service}" + (f" (`{other.operation}`)" if other.operation else "")
                         + f" — {other.evidence}.")
    else:
        lines.append(f"Nothing stands out for {symptom}: no operation's own latency, errors or resource use "
                     "changed significantly between the window and its baseline.")
        unconfirmed = next((s for s in analysis.signals if s.new), None)
        if unconfirmed:
            lines.append(f"Unconfirmed: {unconfirmed.evidence}.")
        if analysis.biggest_change:
            lines.append(f"For reference, {analysis.biggest_change}.")
    lines.extend(analysis.notes)
    lines.append(_evidence_line(deps))
    lines.append(_window_line(deps))
    # the cause the answer names comes first: a weaker signal the question's intent lifted above it follows
    for s in (confident + [s for s in analysis.signals if s.strength < 0.5])[:4]:
        causes.append(RootCause(service=s.service, operation=s.operation, kind=s.kind,  # type: ignore[arg-type]
                                confidence=round(min(max(s.strength if s.confidence is None else s.confidence,
                                                          0.0), 0.97), 2), evidence=s.evidence))
    follow_ups = []
    if confident:
        top = confident[0]
        follow_ups = [f"Show a slow trace through {top.service}",
                      f"What changed in {top.service}'s logs?",
                      f"Is {top.service} still {'failing' if top.kind == 'errors' else 'slow'} in the last 5 minutes?"]
    elif "slow" not in intents:
        follow_ups = ["Why is <service> slow?", "Show error rates per service"]
    return Finding(answer="\n\n".join(lines), root_causes=causes, follow_ups=follow_ups)


TRIVIAL_ATTRIBUTES = {"service.name", "span.name", "span.kind", "status"}
# Resource attributes worth naming (a version, a pod or a node); the rest describe the whole system.
ID_VALUE_RE = re.compile(r"^[0-9a-fA-F-]{16,}$")
DEPLOYMENT_ATTRIBUTES = {"service.version", "k8s.pod.name", "k8s.node.name", "host.name", "k8s.deployment.name"}


SQL_LABELS = {"span_stats": "span statistics", "call_graph": "call graph", "log_stats": "log counts",
              "log_templates": "log templates", "log_order": "log order", "log_statements": "log statements",
              "log_sequences": "log sequences", "resource_gauges": "resource gauges"}


def _evidence_line(deps: AgentDeps) -> str:
    """Which evidence entries (numbered as in the answer's evidence list) back the answer."""
    by_sql = {sql: SQL_LABELS[key] for key, sql in analyst_sql(deps).items()}
    parts = []
    for i, call in enumerate(deps.calls, 1):
        if call.call_id == "discover":
            continue
        if call.tool == "run_sql":
            label = by_sql.get(call.args.get("sql", ""), "SQL")
        else:
            arg = next((str(v) for k, v in call.args.items() if v and k in ("service", "trace_id")), "")
            label = f"{call.tool}({arg})" if arg else call.tool
        parts.append(f"[{i}] {label}" + ("" if call.result.ok else " (failed)"))
    return "Evidence: " + ", ".join(parts) + "." if parts else ""


def _attribute_line(deps: AgentDeps) -> str:
    """The attribute value the slow/failing spans share far more than the others, when there is one."""
    for call in deps.results("attribute_comparison"):
        label = "failing" if call.args.get("target") == "error" else "slow"
        if int(call.result.details.get("other_spans") or 0) < MIN_CALLS * 2:
            continue  # too few spans to compare with: any attribute would look decisive
        for row in call.result.rows if call.result.ok else []:
            key, value = str(row.get("key", "")), str(row.get("value", ""))
            target, other = float(row.get("target_pct") or 0), float(row.get("other_pct") or 0)
            if key in TRIVIAL_ATTRIBUTES or key.endswith(("id", ".key")) or ID_VALUE_RE.match(value):
                continue  # identifiers single out requests, not causes
            if row.get("scope") == "resource" and (key not in DEPLOYMENT_ATTRIBUTES or other <= 0):
                continue  # a resource value no other span has describes where the service runs, not a cause
            if target >= 50 and target >= 2 * other:
                return (f"{target:.0f}% of {label} spans have {row['key']}={row['value']!r} "
                        f"(vs {other:.0f}% of the others).")
    return ""


def _conclude_trace(deps: AgentDeps) -> Finding:
    tid = deps.question.trace_id
    calls = deps.results("trace_waterfall")
    rows = calls[0].result.rows if calls and calls[0].result.ok else []
    if not rows:
        return Finding(answer=f"No spans of trace `{tid}` are stored. {_window_line(deps)}")
    dur_key = next((k for k in ("duration_ms", "Duration", "duration") if k in rows[0]), None)
    svc_key = next((k for k in ("service", "ServiceName") if k in rows[0]), None)
    name_key = next((k for k in ("operation", "SpanName", "name") if k in rows[0]), None)
    status_key = next((k for k in ("status", "StatusCode") if k in rows[0]), None)
    errors = [r for r in rows if status_key and str(r.get(status_key)) == "Error"]
    lines = [f"Trace `{tid}` has {len(rows)} spans."]
    if dur_key and svc_key and name_key:
        slowest = max(rows, key=lambda r: float(r.get(dur_key) or 0))
        lines.append(f"The longest span is {slowest[svc_key]}/{slowest[name_key]} ({slowest[dur_key]} "
                     f"{'ms' if dur_key == 'duration_ms' else ''}).")
    if errors and svc_key and name_key:
        lines.append("Failed spans: " + ", ".join(f"{r[svc_key]}/{r[name_key]}" for r in errors[:5]) + ".")
    return Finding(answer=" ".join(lines))


def _conclude_traffic(deps: AgentDeps) -> Finding:
    """Requests per second by service (entry spans), now and before, with error rates."""
    ops = [Op.from_row(r) for r in rows_of(sql_result(deps, "span_stats"))]
    w = deps.window
    earliest = deps.names.earliest or w.baseline_start
    window_s = max((w.end - w.start).total_seconds(), 1.0)
    base_s = max((w.baseline_end - max(w.baseline_start, earliest)).total_seconds(), 1.0)
    per: dict[str, list[Op]] = {}
    for o in ops:
        per.setdefault(o.service, []).append(o)
    rows = []
    for service, service_ops in per.items():
        entry = [o for o in service_ops if o.is_entry] or service_ops
        n, n_base = sum(o.n for o in entry), sum(o.n_base for o in entry)
        errors = sum(o.errors for o in entry)
        rows.append((n / window_s, n_base / base_s, errors / n if n else 0.0, service))
    rows.sort(reverse=True)
    if not rows:
        return Finding(answer=f"No spans in the window. {_window_line(deps)}")
    lines = ["Requests per second by service (entry spans), now vs before, and error rates:"]
    lines += [f"- {svc}: {now:.2f}/s (before {before:.2f}/s){_change(now, before)}, errors {_pct(err)}"
              for now, before, err, svc in rows[:12]]
    lines.append(_window_line(deps))
    return Finding(answer="\n".join(lines[:-1]) + "\n\n" + lines[-1],
                   follow_ups=[f"Why is {rows[0][3]} slow?", "What is unusual in the last 15 minutes?"])


def _change(now: float, before: float) -> str:
    if before <= 0:
        return " (new)" if now > 0 else ""
    ratio = now / before
    return f", {ratio:.1f}x" if ratio >= 1.5 or ratio <= 0.67 else ""
