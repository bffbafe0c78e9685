"""The built-in analyst's "measure" intent: questions asking for a number get the number first.

"What was the p95 latency of checkout between 04:48 and 04:58 UTC?" or "How many requests did
frontend serve?" are not diagnoses: they are answered with the exact statistic computed in
ClickHouse by `tools.traces.service_stats` (entry spans of the service, or spans of the named
operation), quoted exactly as that tool's summary states it (so every number is grounded), then a
line of context against the baseline. Questions asking why something happens stay diagnoses.
"""

from __future__ import annotations

import re
from typing import Any

from agent.answer import Finding
from agent.deps import AgentDeps, ToolCall

TOOL = "service_stats"
COUNT = r"(?:how many|number of|count of|count the|total (?:number|count)|how much)"
FAIL = r"(?:fail\w*|errors?|erroring|errored|5xx|unsuccessful)"
# statistic -> patterns that ask for it
STAT_PATTERNS: dict[str, tuple[str, ...]] = {
    "p50_ms": (r"\bp50\b", r"\bmedian\b", r"\b50(?:th)? percentile\b"),
    "p90_ms": (r"\bp90\b", r"\b90(?:th)? percentile\b"),
    "p95_ms": (r"\bp95\b", r"\b95(?:th)? percentile\b"),
    "p99_ms": (r"\bp99\b", r"\b99(?:th)? percentile\b"),
    "avg_ms": (r"\baverage\b", r"\bmean\b", r"\bavg\b"),
    "max_ms": (r"\bmax\b", r"\bmaximum\b", r"\blongest\b", r"\bpeak latency\b"),
    "error_pct": (r"\berror[- ]?rate\b", r"\bfailure[- ]?rate\b", r"\berror (?:ratio|percentage)\b",
                  r"\b(?:percent|percentage|share|proportion|fraction) of (?:\w+ )*?" + FAIL,
                  r"\bwhat %"),
    "errors": (rf"\b{COUNT} (?:\w+ )?{FAIL}", rf"\b{FAIL} (?:requests|calls|spans) (?:count|total)\b"),
    "requests": (rf"\b{COUNT} (?:\w+ )?(?:requests|calls|spans|hits|operations|transactions)\b",
                 r"\brequest count\b", r"\bcall count\b"),
    "rate_per_s": (r"\brequest[- ]?rate\b", r"\b(?:requests|calls) per (?:second|sec|s)\b", r"\brps\b",
                   r"\bqps\b", r"\bthroughput\b", r"\bper second\b"),
}
# A latency question with no statistic named ("what was the latency of checkout?") gets these.
LATENCY_WORDS = r"\b(?:latency|latencies|response times?|duration|how long)\b"
ASKING_A_VALUE = r"\b(?:what(?:'s| is| was| were| are)?|how (?:long|much|many|fast)|tell me|give me|show me|report)\b"
DEFAULT_LATENCY = ("avg_ms", "p50_ms", "p95_ms", "p99_ms")
# Asking for reasons makes it a diagnosis, whatever statistic it names.
DIAGNOSIS = re.compile(r"\bwhy\b|\bcause[sd]?\b|\bexplain\b|\bwrong\b|\bdiagnos|\binvestigat|\broot\b|\bhappen",
                       re.IGNORECASE)
LABELS = {"requests": "requests", "errors": "failed requests", "error_pct": "error rate",
          "rate_per_s": "request rate", "avg_ms": "average latency", "p50_ms": "median (p50) latency",
          "p90_ms": "p90 latency", "p95_ms": "p95 latency", "p99_ms": "p99 latency", "max_ms": "maximum latency"}


def requested_stats(text: str) -> list[str]:
    """The statistics a question asks for, in a fixed order (empty: it asks for none)."""
    low = text.lower()
    if DIAGNOSIS.search(low):
        return []
    found = [stat for stat, patterns in STAT_PATTERNS.items() if any(re.search(p, low) for p in patterns)]
    if "errors" in found and "requests" in found and not re.search(rf"{COUNT} requests", low):
        found.remove("requests")  # "how many failed requests" asks for the failures
    if not found and re.search(LATENCY_WORDS, low) and re.search(ASKING_A_VALUE, low):
        found = list(DEFAULT_LATENCY)
    return found


def stats_for(deps: AgentDeps) -> list[str]:
    """The statistics asked for; a short follow-up to a measure ("and payment?", "the last 5 minutes?")
    asks for the same ones again."""
    asked = requested_stats(deps.question.text)
    previous = deps.context.get("measure_stats") or []
    if asked or not previous or DIAGNOSIS.search(deps.question.text) or len(deps.question.text.split()) > 6:
        return asked
    return [s for s in previous if s in LABELS]


def targets(deps: AgentDeps) -> list[tuple[str, str | None]]:
    """(service, operation) pairs the question names, matched against the data's names (a follow-up
    naming none measures the previous turn's services)."""
    q = deps.question
    pairs: list[tuple[str, str | None]] = []
    if not q.services and not q.operations and deps.context.get("measure_stats"):
        return [(s, None) for s in deps.context.get("services", []) if s in deps.names.services][:6]
    for op in q.operations:
        owners = [s for s in q.services if op in deps.names.operations.get(s, [])] or [
            s for s, ops in deps.names.operations.items() if op in ops]
        pairs += [(s, op) for s in owners]
    covered = {s for s, _ in pairs}
    pairs += [(s, None) for s in q.services if s not in covered]
    return pairs[:6]


def wanted(deps: AgentDeps) -> bool:
    """A measure question: it asks for a statistic of a service or operation the data holds."""
    return bool(stats_for(deps)) and bool(targets(deps)) and not deps.question.trace_id


def plan_next(deps: AgentDeps, offered: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """One `service_stats` call per target not measured yet."""
    if TOOL not in offered:
        return []
    done = {(c.args.get("service"), c.args.get("operation")) for c in deps.results(TOOL)}
    return [(TOOL, {"service": s, "operation": op}) for s, op in targets(deps) if (s, op) not in done]


def _fmt(key: str, value: float | None) -> str:
    from tools.traces import format_stat

    return format_stat(key, value)


def _clock(value: Any) -> str:  # noqa: ANN401
    return f"{value:%H:%M:%S}" if hasattr(value, "strftime") else str(value)


def _measured(call: ToolCall, stats: list[str]) -> list[str]:
    """The sentence stating the requested numbers, and the baseline context after it."""
    service, operation = call.args.get("service"), call.args.get("operation")
    subject = f"**{service}** `{operation}`" if operation else f"**{service}**"
    if not call.result.ok:
        return [f"{subject}: the statistics query failed ({call.result.error})."]
    now, before = call.result.rows[0], call.result.rows[1]
    span = f"from {_clock(now['start'])} to {_clock(now['end'])} UTC"
    scope = "spans of that operation" if operation else (
        "entry spans" if call.result.details.get("entry_spans_only") else "all its spans")
    if not now["requests"]:
        return [f"{subject} served no requests {span} (no {scope} in the window)."]
    # counts over windows of different lengths compare as rates: they come along as context
    context_stats = [*stats, *(["rate_per_s"] if "requests" in stats and "rate_per_s" not in stats else []),
                     *(["error_pct"] if "errors" in stats and "error_pct" not in stats else [])]
    if stats == ["requests"]:
        lines = [f"{subject} served **{now['requests']}** requests {span} ({scope}; "
                 f"{_fmt('rate_per_s', now['rate_per_s'])})."]
    else:
        values = "; ".join(f"{LABELS[k]} **{_fmt(k, now[k])}**" for k in stats if k != "requests")
        extra = [f"{LABELS[k]} {_fmt(k, now[k])}" for k in context_stats if k not in stats]
        total = "" if "requests" in stats else f"over {now['requests']} requests, "
        lines = [f"{subject} {span}: " + (f"requests **{now['requests']}**; " if "requests" in stats else "")
                 + f"{values} ({total}{scope}{''.join(', ' + e for e in extra)})."]
    if before["requests"]:
        context = ", ".join(f"{LABELS[k]} {_fmt(k, before[k])}" for k in context_stats if k != "requests")
        lines.append(f"Before that (baseline {_clock(before['start'])} to {_clock(before['end'])} UTC): "
                     f"{context} over {before['requests']} requests.")
    else:
        lines.append("No requests in the baseline before the window to compare with.")
    return lines


def conclude(deps: AgentDeps) -> Finding:
    """The requested numbers first, exactly as the tool stated them, then the baseline."""
    stats = stats_for(deps)
    deps.context["measured"] = stats  # a follow-up asks for the same statistics
    calls = deps.results(TOOL)
    if not calls:
        return Finding(answer="I could not compute statistics here (the service_stats tool is unavailable).")
    lines: list[str] = []
    for call in calls:
        lines += _measured(call, stats)
    lines.append(f"_{deps.window.describe()} Computed exactly in ClickHouse (SQL in the evidence)._")
    services = [c.args.get("service") for c in calls if c.args.get("service")]
    follow = [f"Why is {services[0]} slow?", f"Is {services[0]} failing?"] if services else []
    return Finding(answer="\n\n".join(lines), follow_ups=follow)
