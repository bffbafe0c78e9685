"""The kinds of question an SRE asks besides "why": what the built-in analyst recognises, which tools
answer each, and the answer and chart each gets.

- top-N: the slowest or failing traces (ids, durations, services, the waterfall one question away);
- a measure by service or operation (p50/p95/p99, error rate, throughput): a table and a bar chart;
  "slowest operations" is the p95 by operation;
- a measure over time ("latency of checkout over the last hour", "errors per minute"): a line chart;
- comparisons: now against N minutes/hours ago, yesterday, before a clock time or a version change;
- logs by service, severity and text, as patterns with counts ("noisiest log patterns");
- dependencies: who calls whom, drawn as a graph;
- the services there are: each with its traffic, latency and errors in the window, and those seen only earlier;
- what changed: versions seen in resource attributes (deployments);
- conversation: greetings, help, thanks; a clarifying question when a name fits several services;
- anything else: what it cannot answer, and the closest questions it can, with real service names.

"Why" questions, anomalies, a trace id and a single service's numbers stay with agent.diagnosis and
agent.measures. Everything is read from the question's wording (intents, never one question's exact
text) and from names discovered in the data.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from agent.answer import ChartSpec, Finding
from agent.deps import AgentDeps, ToolCall
from agent.measures import requested_stats
from agent.question import CLOCK, _clock, match_services, normalize, parse_duration_words, words

# ---- reading the kind ------------------------------------------------------------------------

GREETING = re.compile(r"^\s*(?:hi|hello|hey|hiya|howdy|yo|greetings|good (?:morning|afternoon|evening|day))\b"
                      r"[\s!,.]*(?:there|all|team|otel-ai|bot)?[\s!.]*$", re.IGNORECASE)
THANKS = re.compile(r"^\s*(?:(?:thanks?|thank you|thx|ty|cheers|great|perfect|nice|awesome|cool|got it|ok(?:ay)?|"
                    r"that helps|helpful)\b[\s,!.]*)+(?:a lot|so much|very much|again)?[\s!.]*$", re.IGNORECASE)
HELP = re.compile(r"^\s*(?:help|\?|what can you (?:do|answer|tell me)|how do i use (?:you|this)|"
                  r"what (?:can|should|do) i ask|what questions can i ask|usage)\b[\s?!.]*$", re.IGNORECASE)
WHY = re.compile(r"\bwhy\b|\broot[- ]cause|\bcaus(?:e|es|ed|ing)\b|\bexplain\b|\bdiagnos|\binvestigat|"
                 r"\bwhat(?:'s| is| was| went) wrong\b|\bwhat(?:'s| is) (?:going on|happening)\b", re.IGNORECASE)
TRACES = re.compile(r"\btraces?\b|\b(?:slowest|longest|top \d+|list|show)\b(?=.*\brequests\b)", re.IGNORECASE)
COUNTING = re.compile(r"\bhow many\b|\bnumber of\b|\bcount\b", re.IGNORECASE)
# What a count of telemetry itself is about (not requests or errors, which are measures): "how many traces".
VOLUME = re.compile(r"\b(?:traces|spans|telemetry|data points|metric points|metrics data)\b", re.IGNORECASE)
# A statement rather than a question: the analyst reads telemetry through guarded queries and runs none of these.
STATEMENT = re.compile(r"\b(?:drop|alter|truncate|insert|delete|update|grant|create)\b.*\b(?:table|database|from|"
                       r"into|where|user)\b|\bselect\b.+\bfrom\b", re.IGNORECASE)
TOP = re.compile(r"\b(?:top|slowest|longest|worst|biggest|most|failing|failed|erroring|errored|fail(?:ed|ing)?|"
                 r"error(?:s|ed)?|list|show)\b", re.IGNORECASE)
# "which services are there?", "list all services", "what operations does cart have?": what there is
LISTING = re.compile(r"\b(?:which|what|list|show|all|how many|name|names of|enumerate)\b(?:\s+\w+){0,3}?\s+"
                     r"(services|operations|endpoints|routes|methods|apis)\b|"
                     r"\b(services|operations|endpoints|routes)\s+(?:are there|exist|do you (?:see|know|have))\b",
                     re.IGNORECASE)
OPERATIONS = re.compile(r"\b(?:operations?|endpoints?|routes?|spans? names?|methods?|apis?|calls|rpcs?)\b",
                        re.IGNORECASE)
# "what errors happened?", "any errors?", "show me the exceptions": the failures themselves (not a rate, not a
# diagnosis): failed spans by operation and error logs by pattern
ERRORS_LIST = re.compile(r"\b(?:what|which|list|show(?: me)?|any|all|were there|are there|have there been)"
                         r"(?:\s+(?:the|all|recent|new|kinds? of|sorts? of))*\s+(?:errors?|exceptions?|failures?)\b"
                         r"(?!\s+(?:rates?|%|percent|per|by|over|ratio)\b)", re.IGNORECASE)
# "which pods use the most CPU?", "memory by service", "CPU usage of cart": a resource gauge, ranked. The word
# names a category of tools.metrics (gauges are found by name in the data, never by a fixed metric name).
RESOURCE = re.compile(r"\b(cpu|processor|memory|mem|ram|heap|network|bandwidth|disk|filesystem|gc|garbage)\b",
                      re.IGNORECASE)
RESOURCE_VIEW = re.compile(r"\b(?:usage|uses?|used|using|utili[sz]ation|consum\w*|per|by|each|every|most|top|"
                           r"highest|lowest|least|which|show|list|how much|what(?:'s| is| are)?)\b", re.IGNORECASE)
RESOURCE_CATEGORY = {"processor": "cpu", "mem": "memory", "ram": "memory", "heap": "memory", "bandwidth": "network",
                     "filesystem": "disk", "garbage": "gc"}
RANKED = re.compile(r"\b(?:slowest|fastest|busiest|top|worst|most|highest|lowest|least|biggest|rank\w*|which)\b",
                    re.IGNORECASE)
BY_SERVICE = re.compile(r"\b(?:by|per|for each|for every|each|every|all|across|of all)\s+(?:the\s+)?services?\b|"
                        r"\bwhich services?\b|\bservices? (?:by|ranked|sorted|ordered)\b|\bservices? with\b|"
                        r"\b(?:slowest|fastest|busiest|worst|least|most|highest|lowest)\s+(?:\w+\s+)?services?\b",
                        re.IGNORECASE)
BY_OPERATION = re.compile(r"\b(?:by|per|for each|each|every|all|across)\s+(?:the\s+)?"
                          r"(?:operations?|endpoints?|routes?|methods?)\b|\bwhich (?:operations?|endpoints?)\b",
                          re.IGNORECASE)
SERIES = re.compile(r"\bover time\b|\bper minute\b|\ba minute\b|\bevery minute\b|\bby minute\b|"
                    r"\bminute by minute\b|\beach minute\b|\btrend|\btimeline\b|\btime[- ]series\b|"
                    r"\bover the (?:last|past)\b|\bthrough the (?:last|past)\b|\bhistory of\b|"
                    r"\bline chart\b|\bhow (?:has|did) .* (?:evolve|develop|change) over\b", re.IGNORECASE)
# "over the last hour" reads as a series ("latency of orders over the last hour") unless the question asks for a
# value ("what is the p99 of X over the last 10 minutes?": one number, the window's)
# The words that make a question about one measure: how much traffic, how many failures, how slow.
TRAFFIC_WORDS = re.compile(r"\b(?:traffic|throughput|requests?|calls|volume|load|rps|qps|busy|busi(?:est|er))\b",
                           re.IGNORECASE)
ERROR_WORDS = re.compile(r"\berror\w*|\bfail\w*|\bexceptions?\b", re.IGNORECASE)
LATENCY_WORDS = re.compile(r"\blatenc|\bslow|\bfast|\bduration|\bresponse time|\bp\d\d\b", re.IGNORECASE)
OVER_A_SPAN = re.compile(r"\b(?:over|through) the (?:last|past)\b", re.IGNORECASE)
ASKS_A_VALUE = re.compile(r"^\s*(?:what(?:'s| is| was| were)|how (?:many|much|high|fast|slow)|tell me)\b",
                          re.IGNORECASE)
COMPARE = re.compile(r"\bcompar\w*\b|\bvs\.?\b|\bversus\b|\bago\b|\byesterday\b|\blast week\b|"
                     r"\bthan (?:before|earlier|usual|normal)\b|\bbefore and after\b|\bbefore (?:the )?"
                     r"(?:deploy\w*|release|rollout|version|upgrade)\b|\bbefore " + CLOCK, re.IGNORECASE)
LOGS = re.compile(r"\blogs?\b|\blog (?:lines?|messages?|patterns?|entries)\b|\blogged\b", re.IGNORECASE)
DEPENDENCIES = re.compile(r"\bwho calls\b|\bcalls whom\b|\bwhat calls\b|\bcallers?\b|\bcallees?\b|"
                          r"\bdepend\w*\b|\bservice (?:map|graph)\b|\bcall graph\b|\btopology\b|\bupstream\b|"
                          r"\bdownstream\b|\btalks? to\b|\barchitecture\b|\bwhat does \S+ call\b|"
                          r"\b(?:which|what|who)(?:\s+services?)?\s+(?:does|do|did)\s+\S+\s+(?:call|use)\b|"
                          r"\b(?:which|what) services? (?:call|use)\b", re.IGNORECASE)
CHANGES = re.compile(r"\bwhat(?:'s| has| have)? changed\b|\bchanges?\b.*\b(?:deploy|version|release)|"
                     r"\bdeploy\w*\b|\bversions?\b|\breleases?\b|\brolled? ?out\b|\brollouts?\b|\bupgraded?\b",
                     re.IGNORECASE)
SEVERITIES = (("fatal", re.compile(r"\b(?:fatal|critical|crit)\b", re.I)),
              ("error", re.compile(r"\berrors?\b|\berror[- ]level\b|\bfail\w*\b|\bexceptions?\b", re.I)),
              ("warn", re.compile(r"\bwarn(?:ing)?s?\b", re.I)),
              ("info", re.compile(r"\binfo\b", re.I)),
              ("debug", re.compile(r"\bdebug\b", re.I)))
QUOTED = re.compile(r"[\"'“‘`]([^\"'”’`]{2,80})[\"'”’`]")
CONTAINING = re.compile(r"\b(?:containing|contain|mentioning|mention|matching|with (?:the )?(?:text|word|message))"
                        r"\s+(\S{2,80})", re.IGNORECASE)
# "top 5", "5 slowest": how many to list ("the last 15 minutes" is a time range, not a count)
TOP_N = re.compile(r"\b(?:top|first)\s+(\d{1,2})\b(?!\s*(?:s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?)\b)"
                   r"|\b(\d{1,2})\s+(?:slowest|longest|worst|failing|failed|most|noisiest|top|biggest)\b",
                   re.IGNORECASE)
# Kinds a short follow-up asks again with its own service or time range.
FOLLOWED = {"top_traces", "breakdown", "series", "compare", "logs", "dependencies", "changes"}
DEFAULT_N = 5
MAX_N = 20
LIST_N = 50  # services or operations listed with their numbers (the aggregates tool's most rows)


@dataclass
class Kind:
    """What the question asks for: its kind, the measure, the grouping and the filters it names."""

    name: str
    measure: str = "p95_ms"
    by: str = "service"
    target: str = "slow"  # top traces: slow or error
    n: int = DEFAULT_N
    severity: str | None = None
    text: str | None = None
    candidates: list[str] = field(default_factory=list)  # clarify: the services a name fits


def _measure(text: str, kind: str) -> str:
    """The one measure a breakdown, series or comparison shows: the first statistic named, else one from
    the words (errors, traffic, latency); latency's default is p95."""
    stats = [s for s in requested_stats(text) if s not in ("max_ms",)] or requested_stats(text)
    low = text.lower()
    if stats:
        first = stats[0]
        if first == "requests" and kind != "series":
            return "rate_per_s"
        if first == "rate_per_s" and kind == "series":
            return "requests"
        if first == "errors" and kind != "series" and not re.search(r"\bhow many\b|\bnumber of\b|\bcount", low):
            return "error_pct"
        return first
    if re.search(r"\berror rate\b|\bfailure rate\b|\b% of\b", low):
        return "error_pct"
    if ERROR_WORDS.search(low):
        return "errors" if kind == "series" else "error_pct"
    if TRAFFIC_WORDS.search(low):
        return "requests" if kind == "series" else "rate_per_s"
    return "p95_ms"


def _wants_series(text: str, listing: bool = False) -> bool:
    """A measure over time: named as such, or "over the last hour" unless the question asks for a value or a
    list (where it is only the time range)."""
    if SERIES.search(OVER_A_SPAN.sub(" ", text)):
        return True
    return not listing and bool(OVER_A_SPAN.search(text)) and not ASKS_A_VALUE.search(text)


def _n(text: str) -> int:
    if m := TOP_N.search(text):
        return max(1, min(int(m.group(1) or m.group(2)), MAX_N))
    return DEFAULT_N


def _about_a_measure(text: str) -> bool:
    return bool(requested_stats(text) or LATENCY_WORDS.search(text) or ERROR_WORDS.search(text)
                or TRAFFIC_WORDS.search(text))


def ambiguous(text: str, services: list[str]) -> list[str]:
    """Services one word of the question fits equally ("front" -> frontend, frontend-proxy) when the text
    names none of them in full: a clarifying question beats a guess."""
    flat = f" {' '.join(words(text))} "
    for word in words(text):
        if len(word) < 3:
            continue
        hits = match_services(word, services)
        if len(hits) >= 2 and not any(f" {' '.join(words(h))} " in flat or normalize(h) == word for h in hits):
            return hits
    return []


def classify(deps: AgentDeps) -> Kind | None:
    """The question's kind, or None when diagnosis or measures answers it (why, anomalies, a trace id, one
    service's numbers)."""
    cached = deps.context.get("_kind")
    if cached is not None or "_kind" in deps.context:
        return cached
    kind = _classify(deps)
    deps.context["_kind"] = kind
    return kind


def _classify(deps: AgentDeps) -> Kind | None:
    q = deps.question
    text = q.text.strip()
    if GREETING.match(text):
        return Kind("greeting")
    if THANKS.match(text) and not q.services and not _about_a_measure(text):
        return Kind("thanks")
    if HELP.match(text):
        return Kind("help")
    if STATEMENT.search(text):
        return Kind("unknown", text="statement")
    if q.trace_id or WHY.search(text):
        return None
    if clash := ambiguous(text, deps.names.services):
        return Kind("clarify", candidates=clash)
    low = text.lower()
    if DEPENDENCIES.search(low):
        return Kind("dependencies")
    if TRACES.search(low) and TOP.search(low) and not COUNTING.search(low):
        failing = re.search(r"\bfail\w*|\berror\w*|\bbroken\b|\b5xx\b|\bexception", low)
        return Kind("top_traces", target="error" if failing else "slow", n=_n(low))
    if COUNTING.search(low) and VOLUME.search(low) and not (ERROR_WORDS.search(low) or LATENCY_WORDS.search(low)):
        # (how many traces failed or were slow is a measure)
        return Kind("volume")
    if LOGS.search(low):
        sev = next((name for name, rx in SEVERITIES if rx.search(re.sub(r"\blogs?\b", " ", low))), None)
        quoted = QUOTED.search(text) or CONTAINING.search(text)
        return Kind("logs", severity=sev, text=quoted.group(1) if quoted else None, n=_n(low) if TOP_N.search(low)
                    else 10)
    if CHANGES.search(low) and not _about_a_measure(low):
        return Kind("changes")
    if ERRORS_LIST.search(low) and not requested_stats(low) and not _wants_series(low, listing=True):
        return Kind("errors", severity="error", n=_n(low) if TOP_N.search(low) else 10)
    if (res := RESOURCE.search(low)) and RESOURCE_VIEW.search(low) and not {"slow", "errors"} & set(q.intents):
        word = res.group(1).lower()
        return Kind("resources", measure=RESOURCE_CATEGORY.get(word, word), n=_n(low) if TOP_N.search(low) else 10)
    if (listed := LISTING.search(low)) and not _about_a_measure(low):
        if (listed.group(1) or listed.group(2)) == "services":
            if not q.services:
                return Kind("services", measure="rate_per_s", by="service", n=LIST_N)
        elif not q.operations:
            return Kind("breakdown", measure="rate_per_s", by="operation", n=LIST_N)
    if OPERATIONS.search(low) and (RANKED.search(low) or BY_OPERATION.search(low)) and not q.operations:
        return Kind("breakdown", measure=_measure(low, "breakdown"), by="operation", n=_n(low) if
                    TOP_N.search(low) else 10)
    if COMPARE.search(low) and (_about_a_measure(low) or q.services):
        return Kind("compare", measure=_measure(low, "compare"))
    if _wants_series(low) and _about_a_measure(low):
        return Kind("series", measure=_measure(low, "series"))
    if BY_OPERATION.search(low) and _about_a_measure(low):
        return Kind("breakdown", measure=_measure(low, "breakdown"), by="operation", n=10)
    if BY_SERVICE.search(low) and _about_a_measure(low):
        measure = _measure(low, "breakdown")
        if measure == "rate_per_s" and not requested_stats(low):
            return None  # "how much traffic does each service get?": rates now and before (agent.diagnosis)
        return Kind("breakdown", measure=measure, by="service", n=20)
    if requested_stats(low) and not q.services and not q.operations and not deps.context.get("measure_stats"):
        return Kind("breakdown", measure=_measure(low, "breakdown"), by="service", n=20)
    previous = deps.context.get("kind_args") or {}
    if previous.get("name") in FOLLOWED and len(words(text)) <= 6 and not (set(q.intents) - {"chart"}):
        return Kind(**previous)  # "and payment?", "the last 5 minutes?": the same kind of answer again
    if q.intents or q.services or q.operations:
        return None  # diagnosis and measures answer what names a symptom, a service or anomalies
    if deps.context.get("intents") or deps.context.get("services"):
        return None  # a follow-up ("and payment?", "what about the last 5 minutes?")
    return Kind("unknown")


# ---- comparisons: which period against which -------------------------------------------------

AGO = re.compile(r"\b(\d+(?:\.\d+)?|an?|one)\s*(s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?)\s+"
                 r"(?:ago|earlier|before)\b", re.IGNORECASE)
BEFORE_CLOCK = re.compile(r"\b(?:before|after)\s+" + CLOCK, re.IGNORECASE)


def periods(deps: AgentDeps) -> tuple[Any, Any, str]:
    """(window, reference, how the reference was chosen) for a comparison."""
    from tools.timewindow import TimeWindow

    w = deps.window
    text = deps.question.text
    end = w.end
    length = w.end - w.start
    if m := AGO.search(text):
        shift = parse_duration_words(m.group(1), m.group(2))
        if not deps.question.has_window or "ago" in deps.question.time_text:  # "an hour ago" is not the window
            length = min(timedelta(minutes=15), shift)  # "5 minutes ago": the last 5 minutes, not overlapping
            end = deps.names.latest or w.end
        window = TimeWindow(start=end - length, end=end)
        ago = re.sub(r"\s+(?:ago|earlier|before)$", "", m.group(0), flags=re.IGNORECASE)
        return window, TimeWindow(start=window.start - shift, end=window.end - shift), \
            f"the same window {ago} earlier"
    if re.search(r"\byesterday\b", text, re.IGNORECASE):
        window = TimeWindow(start=w.start, end=w.end)
        return window, TimeWindow(start=w.start - timedelta(days=1), end=w.end - timedelta(days=1)), \
            "the same time yesterday"
    if re.search(r"\blast week\b", text, re.IGNORECASE):
        window = TimeWindow(start=w.start, end=w.end)
        return window, TimeWindow(start=w.start - timedelta(days=7), end=w.end - timedelta(days=7)), \
            "the same time a week before"
    pivot: datetime | None = None
    how = ""
    if m := BEFORE_CLOCK.search(text):
        pivot = _clock(deps.names.latest or w.end, *m.groups()[:4])
        how = f"the time before {pivot:%H:%M} UTC"
    elif re.search(r"\b(?:deploy\w*|release|rollout|version|upgrade)\b", text, re.IGNORECASE):
        pivot = deps.context.get("_version_change")
        how = f"the time before the version change at {pivot:%H:%M:%S} UTC" if pivot else ""
    if pivot is not None:
        end = deps.names.latest or w.end
        if pivot < end:
            span = end - pivot
            return TimeWindow(start=pivot, end=end), TimeWindow(start=pivot - span, end=pivot), how
    window = TimeWindow(start=w.start, end=w.end)
    return window, TimeWindow(start=w.baseline_start, end=w.baseline_end), "the time just before"


# ---- planning --------------------------------------------------------------------------------


def _done(deps: AgentDeps, tool: str, **args: Any) -> bool:  # noqa: ANN401
    return any(all(c.args.get(k) == v for k, v in args.items()) for c in deps.results(tool))


def _service(deps: AgentDeps) -> str | None:
    q = deps.question
    if q.services:
        return q.services[0]
    if q.operations:  # an operation names its service
        owners = [s for s, ops in deps.names.operations.items() if q.operations[0] in ops]
        return owners[0] if owners else None
    return None


def plan_next(deps: AgentDeps, offered: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """The next tool calls for this kind (empty: conclude)."""
    kind = classify(deps)
    assert kind is not None
    calls: list[tuple[str, dict[str, Any]]] = []
    service = _service(deps)
    operation = deps.question.operations[0] if deps.question.operations else None
    if kind.name == "top_traces":
        calls = [("exemplar_traces", {"service": service, "operation": operation, "kind": kind.target,
                                      "limit": kind.n})]
        first = _top_trace_ids(deps)[:1]
        calls += [("trace_waterfall", {"trace_id": t}) for t in first]
    elif kind.name in ("breakdown", "services"):
        scoped = service if kind.by == "operation" else None
        calls = [("measure_by", {"measure": kind.measure, "by": kind.by, "service": scoped, "limit": kind.n})]
        if kind.measure in ERROR_MEASURES and _no_failed_spans(deps, kind.measure):
            # many systems report failures only in their logs: what they say then is the answer's other half
            calls.append(("logs_matching", {"service": scoped, "min_severity": "error", "text": None, "limit": 5}))
    elif kind.name == "series":
        calls = [("measure_series", {"measure": kind.measure, "service": service, "operation": operation})]
    elif kind.name == "compare":
        if re.search(r"\b(?:deploy\w*|release|rollout|version|upgrade)\b", deps.question.text, re.IGNORECASE):
            calls = [("versions_seen", {})]
            if _done(deps, "versions_seen"):
                _note_version_change(deps)
                calls.append(_compare_call(deps, kind, service))
        else:
            calls = [_compare_call(deps, kind, service)]
    elif kind.name == "logs":
        args = {"service": service, "min_severity": kind.severity, "text": kind.text, "limit": kind.n}
        if COMPARE.search(deps.question.text):  # "compare the error logs with an hour ago": counts then too
            window, reference, _ = periods(deps)
            args |= {"start": window.start.isoformat(), "end": window.end.isoformat(),
                     "reference_start": reference.start.isoformat(), "reference_end": reference.end.isoformat()}
        calls = [("logs_matching", args)]
    elif kind.name == "dependencies":
        calls = [("service_map", {})]
    elif kind.name == "changes":
        calls = [("versions_seen", {}), ("service_overview", {})]
    elif kind.name == "errors":
        calls = [("measure_by", {"measure": "errors", "by": "operation", "service": service, "limit": 20}),
                 ("logs_matching", {"service": service, "min_severity": "error", "text": None, "limit": kind.n})]
    elif kind.name == "resources":
        calls = [("resource_metrics", {"service": service})]
    elif kind.name == "volume":
        calls = [("telemetry_volume", {})]
    return [(t, a) for t, a in calls if t in offered and not _done(deps, t, **a)]


def _compare_call(deps: AgentDeps, kind: Kind, service: str | None) -> tuple[str, dict[str, Any]]:
    window, reference, _ = periods(deps)
    return ("compare_periods", {"measure": kind.measure, "service": service,
                                "start": window.start.isoformat(), "end": window.end.isoformat(),
                                "reference_start": reference.start.isoformat(),
                                "reference_end": reference.end.isoformat()})


def _note_version_change(deps: AgentDeps) -> None:
    """The first time a version new in the window appeared: the pivot of "before the deploy"."""
    firsts = [r["first_seen"] for c in deps.results("versions_seen") if c.result.ok for r in c.result.rows
              if r["status"] == "new"]
    if firsts:
        from tools.timewindow import utc

        first = min(firsts)
        deps.context["_version_change"] = utc(datetime.fromisoformat(first) if isinstance(first, str) else first)


def _top_trace_ids(deps: AgentDeps) -> list[str]:
    return [str(r["trace_id"]) for c in deps.results("exemplar_traces") if c.result.ok for r in c.result.rows]


# ---- answers ---------------------------------------------------------------------------------


def code(text: Any) -> str:  # noqa: ANN401
    """Telemetry text in an answer: an inline code span (no markdown or links inside), one line."""
    clean = " ".join(str(text).replace("`", "'").split())
    return f"`{clean[:160]}`" if clean else "`(empty)`"


def cell(text: Any) -> str:  # noqa: ANN401
    """A table cell that cannot break the table."""
    return code(text).replace("|", "¦")


def _window(deps: AgentDeps, call: ToolCall | None = None) -> str:
    """The window in words: clock times, with the dates when it spans a day or more (yesterday's midnight to
    today's is not "from 00:00:00 to 00:00:00")."""
    w = (call.args.get("window") if call else None) or {}
    start, end = ((datetime.fromisoformat(str(w["start"])), datetime.fromisoformat(str(w["end"]))) if w
                  else (deps.window.start, deps.window.end))
    if end - start >= timedelta(days=1) or start.date() != end.date():
        return f"from {start:%Y-%m-%d %H:%M:%S} to {end:%Y-%m-%d %H:%M:%S} UTC"
    return f"from {start:%H:%M:%S} to {end:%H:%M:%S} UTC"


def _foot(deps: AgentDeps) -> str:
    return f"_{deps.window.describe()} Computed in ClickHouse (SQL in the evidence)._"


def _chart(deps: AgentDeps, fig: Any, title: str) -> None:  # noqa: ANN401
    from tools.charts import figure_json

    deps.context.setdefault("_charts", []).append(ChartSpec(title=title, figure=figure_json(fig)))


def suggest_names(deps: AgentDeps) -> list[str]:
    """Services to name in suggestions: those with the most operations first (the busiest, usually)."""
    counts = {s: len(ops) for s, ops in deps.names.operations.items()}
    return sorted(deps.names.services, key=lambda s: (-counts.get(s, 0), s))


def suggestions(deps: AgentDeps) -> list[str]:
    """The closest questions the analyst answers, filled in with the data's busiest services."""
    busiest = suggest_names(deps)
    a = busiest[0] if busiest else "a service"
    b = busiest[1] if len(busiest) > 1 else a
    return ["Show p95 latency by service", f"What is the error rate of {a}?",
            "Show the 5 slowest traces in the last 15 minutes", f"Latency of {b} over the last 30 minutes",
            "Who calls whom?", "What changed in the last hour?"]


CAN_DO = ("I can answer questions about the telemetry in this store: why something is slow or failing; the slowest or "
          "failing traces; a measure (p50/p95/p99 latency, error rate, throughput) by service or operation, or over "
          "time; comparisons with an earlier time; logs by service, severity or text; who calls whom; what changed "
          "(versions); and a trace by its id.")


def conclude(deps: AgentDeps) -> Finding:
    kind = classify(deps)
    assert kind is not None
    deps.context["_charts"] = []  # no chart unless the kind draws one
    answer = {
        "greeting": _greeting, "thanks": _thanks, "help": _help, "clarify": _clarify, "unknown": _unknown,
        "top_traces": _top_traces, "breakdown": _breakdown, "series": _series, "compare": _compare,
        "logs": _logs, "dependencies": _dependencies, "changes": _changes, "services": _services,
        "resources": _resources, "errors": _errors, "volume": _volume,
    }[kind.name]
    finding = answer(deps, kind)
    deps.context["kind"] = kind.name
    deps.context["kind_args"] = {k: v for k, v in asdict(kind).items() if k != "candidates"}
    return finding


def _greeting(deps: AgentDeps, kind: Kind) -> Finding:
    some = ", ".join(suggest_names(deps)[:3])
    data = f"This store holds telemetry from services such as {some}." if some else "This store holds no spans yet."
    return Finding(answer=f"Hello! {data} {CAN_DO} What would you like to know?", follow_ups=suggestions(deps)[:4])


def _thanks(deps: AgentDeps, kind: Kind) -> Finding:
    return Finding(answer="You're welcome. Ask another question whenever you like.", follow_ups=suggestions(deps)[:3])


def _help(deps: AgentDeps, kind: Kind) -> Finding:
    examples = "\n".join(f"- {s}" for s in suggestions(deps))
    return Finding(answer=f"{CAN_DO} Name a service, an operation or a time range (\"last 15 minutes\", "
                          f"\"since 10:30\", \"between 9:00 and 9:20\" UTC) to narrow it down. For example:\n\n"
                          f"{examples}", follow_ups=suggestions(deps)[:4])


def _clarify(deps: AgentDeps, kind: Kind) -> Finding:
    names = " or ".join(f"**{s}**" for s in kind.candidates[:5])
    rest = re.sub(r"\s+", " ", deps.question.text).strip()
    follow = []
    for s in kind.candidates[:3]:
        follow.append(_fill(rest, s))
    return Finding(answer=f"Which service do you mean: {names}? Several services match that name.",
                   follow_ups=follow)


def _fill(text: str, service: str) -> str:
    """The question with its ambiguous word replaced by one service's full name."""
    for word in sorted(set(re.findall(r"[A-Za-z0-9-]{3,}", text)), key=len, reverse=True):
        if service.lower().startswith(word.lower()) or word.lower() in service.lower().split("-"):
            return re.sub(rf"\b{re.escape(word)}\b", service, text, count=1)
    return f"{text} ({service})"


def _unknown(deps: AgentDeps, kind: Kind) -> Finding:
    close = suggestions(deps)
    refusal = ("I only read telemetry, through guarded read-only queries: I do not run statements, change data or "
               "read other tables. " if kind.text == "statement" else "")
    lines = [refusal + "I can't answer that from the telemetry in this store. " + CAN_DO, "",
             "The closest questions I can answer:", *[f"- {s}" for s in close[:5]]]
    return Finding(answer="\n".join(lines), follow_ups=close[:4])


def _fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "n/a"
    return f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def _top_traces(deps: AgentDeps, kind: Kind) -> Finding:
    from tools.charts import bar_chart

    calls = [c for c in deps.results("exemplar_traces") if c.result.ok]
    rows = calls[0].result.rows if calls else []
    scope = f" of {deps.question.services[0]}" if deps.question.services else ""
    what = "failing" if kind.target == "error" else "slowest"
    if not rows:
        return Finding(answer=f"No {what} traces{scope} {_window(deps)}. {_foot(deps)}")
    waterfalls = calls[0].result.details.get("waterfalls") or {}
    # scoped to a service or operation, the traces are ranked by its span: that duration comes first
    own = calls[0].result.args.get("service") or calls[0].result.args.get("operation")
    head = ["#", "trace id", *([f"{cell(own)} span"] if own else []), "trace duration", "status", "services",
            "waterfall"]
    lines = [f"The {what} traces{scope} {_window(deps)}, {what} first" + (f" by their {cell(own)} span" if own else "")
             + ":", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(rows, 1):
        spans = waterfalls.get(r["trace_id"], [])
        services = list(dict.fromkeys(s["service"] for s in spans))
        dur = r["trace_duration_ms"] if r.get("trace_duration_ms") is not None else r["span_duration_ms"]
        span = f"{_fmt_ms(r.get('span_duration_ms'))} | " if own else ""
        lines.append(f"| {i} | `{r['trace_id']}` | {span}{_fmt_ms(dur)} | {cell(r['status'])} | "
                     f"{cell(', '.join(services[:6]) + (' …' if len(services) > 6 else ''))} | "
                     f"ask \"show trace {r['trace_id']}\" |")
    top = rows[0]
    lines += ["", f"The first is {cell(top.get('root') or top['service'])}, {_fmt_ms(top['trace_duration_ms'])} "
              f"over {top['spans']} spans ({top['error_spans']} failed); its waterfall is below.", "", _foot(deps)]
    label = "trace duration (ms)"
    _chart(deps, bar_chart([r["trace_id"][:12] for r in rows], [r.get("trace_duration_ms") for r in rows],
                           f"{what.capitalize()} traces{scope}: duration (ms)", label, "trace id"),
           f"{what.capitalize()} traces{scope}: duration (ms)")
    return Finding(answer="\n".join(lines), follow_ups=[f"Show trace {r['trace_id']}" for r in rows[:3]])


def _unit_words(measure: str) -> str:
    from tools.aggregates import label, unit

    u = unit(measure)
    return f"{label(measure)} ({u})" if u else label(measure)


ERROR_MEASURES = ("errors", "error_pct")


def _no_failed_spans(deps: AgentDeps, measure: str) -> bool:
    """measure_by ran and no row has a failed span."""
    calls = [c for c in deps.results("measure_by") if c.result.ok]
    return bool(calls) and not any(r.get(measure) for r in calls[0].result.rows)


def _error_logs_instead(deps: AgentDeps) -> tuple[list[str], str | None]:
    """When no span failed: the error logs there were (or that there were none either), and the service
    that logged most of them."""
    calls = [c for c in deps.results("logs_matching") if c.result.ok]
    if not calls:
        return [], None
    totals = calls[0].result.details.get("totals") or []
    if not totals:
        return ["", f"No span has an error status {_window(deps)}, and no log line is at ERROR or above."], None
    total = sum(t["count"] for t in totals)
    return ["", f"No span has an error status {_window(deps)}, but **{total}** log lines are at ERROR or above: "
            + ", ".join(f"{code(t['service'])} {t['count']}" for t in totals[:8]) + "."], totals[0]["service"]


def _breakdown(deps: AgentDeps, kind: Kind) -> Finding:
    from tools.aggregates import fmt, label
    from tools.charts import bar_chart

    calls = [c for c in deps.results("measure_by") if c.result.ok]
    rows = calls[0].result.rows if calls else []
    m = kind.measure
    scope = f" of {deps.question.services[0]}" if deps.question.services and kind.by == "operation" else ""
    if not rows:
        return Finding(answer=f"No spans{scope} {_window(deps)}. {_foot(deps)}")
    by = "operation" if kind.by == "operation" else "service"
    cols = [c for c in ("p50_ms", "p95_ms", "p99_ms", "error_pct", "rate_per_s") if c != m]
    head = f"{label(m).capitalize()} by {by}{scope} {_window(deps)}, highest first"
    header = [*(["service"] if by == "service" else ["service", "operation"]), label(m), "requests",
              *[label(c) for c in cols]]
    lines = [head + (" (operations with at least 5 calls):" if by == "operation" else " (entry spans):"), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        name = cell(r["service"]) if by == "service" else f"{cell(r['service'])} | {cell(r['operation'])}"
        lines.append(f"| {name} | **{fmt(m, r[m])}** | {r['requests']} | "
                     + " | ".join(fmt(c, r.get(c)) for c in cols) + " |")
    top = rows[0]
    who = top["service"] if by == "service" else f"{top['service']} {top['operation']}"
    instead, logger = _error_logs_instead(deps) if m in ERROR_MEASURES and _no_failed_spans(deps, m) else ([], None)
    if instead:  # the answer is in the logs: it comes first, the spans' table (all 0) after it
        lines = [*instead[1:], "", *lines]
    else:
        lines += ["", f"Highest: {code(who)} at {fmt(m, top[m])}."]
    lines += ["", _foot(deps)]
    cats = [r["service"] if by == "service" else f"{r['service']} {r['operation']}" for r in rows]
    title = f"{label(m).capitalize()} by {by}{scope}" + (f" ({_unit(m)})" if _unit(m) else "")
    if not instead:  # (bars all at 0 would say nothing)
        _chart(deps, bar_chart(cats, [r[m] for r in rows], title, _unit_words(m), by), title)
    follow = [f"Why is {top['service']} slow?" if m.endswith("_ms") else f"Why is {top['service']} failing?",
              f"{label(m).capitalize()} of {top['service']} over time"]
    if instead:  # the failures are in the logs: follow them there
        named = deps.question.services[0] if scope else None
        follow = [f"What errors happened{f' in {named}' if named else ''}?",
                  *([f"Why is {logger} failing?"] if logger else [])]
    return Finding(answer="\n".join(lines), follow_ups=follow)


def _services(deps: AgentDeps, kind: Kind) -> Finding:
    """How many services sent spans in the window and which, busiest first, with the breakdown's table; then
    those the data holds from earlier only (discovery reads the last six hours)."""
    calls = [c for c in deps.results("measure_by") if c.result.ok]
    active = [r["service"] for r in (calls[0].result.rows if calls else [])]
    earlier = [s for s in deps.names.services if s not in active]
    if not active and not earlier:
        return Finding(answer=f"This store holds no spans yet. {CAN_DO}", follow_ups=suggestions(deps)[:3])
    shown = f" (the {len(active)} busiest)" if len(active) == kind.n else ""
    lines = [f"**{len(active)} services** sent spans {_window(deps)}{shown}: "
             + ", ".join(code(s) for s in active) + "." if active else f"No service sent spans {_window(deps)}."]
    if earlier:
        lines.append(f"Seen earlier but not in this window: {', '.join(code(s) for s in earlier)}.")
    table = _breakdown(deps, kind) if active else Finding(answer=_foot(deps))
    follow = ["Who calls whom?", "Show p95 latency by service", "Show the error rate by service"]
    return Finding(answer="\n".join(lines) + "\n\n" + table.answer, follow_ups=follow)


def _errors(deps: AgentDeps, kind: Kind) -> Finding:
    """The failures of the window: spans with an error status by operation, then error logs by pattern (many
    systems report failures only in their logs)."""
    calls = [c for c in deps.results("measure_by") if c.result.ok]
    rows = [r for r in (calls[0].result.rows if calls else []) if r.get("errors")]
    service = _service(deps)
    scope = f" in {code(service)}" if service else ""
    if rows:
        failed = sum(int(r["errors"]) for r in rows)
        lines = [f"**{failed} failed spans**{scope} {_window(deps)}, in {len(rows)} operations (most first):", "",
                 "| service | operation | failed | of requests | error rate |", "|---|---|---|---|---|"]
        lines += [f"| {cell(r['service'])} | {cell(r['operation'])} | **{int(r['errors'])}** | {r['requests']} | "
                  f"{r['error_pct']:.3g}% |" for r in rows[:kind.n]]
        lines += ["", f"{len(rows) - kind.n} more operations not shown."] if len(rows) > kind.n else []
    else:
        lines = [f"No span{scope} has an error status {_window(deps)}."]
    logs = _logs(deps, kind)
    lines += ["", "Error logs: " + logs.answer[:1].lower() + logs.answer[1:]]
    logged = [r for c in deps.results("logs_matching") if c.result.ok for r in c.result.rows]
    top = rows[0]["service"] if rows else logged[0]["service"] if logged else None
    follow = [f"Why is {top} failing?", f"Show the failing traces of {top}"] if top else []
    return Finding(answer="\n".join(lines), follow_ups=[*follow, "Show the error rate by service"])


def _resources(deps: AgentDeps, kind: Kind) -> Finding:
    """The gauges of one category (CPU, memory, network ...) per service and pod, highest first, against the
    baseline; each metric ranked on its own, since their units differ."""
    from tools.charts import bar_chart

    calls = [c for c in deps.results("resource_metrics") if c.result.ok]
    every = calls[0].result.rows if calls else []
    rows = [r for r in every if r["category"] == kind.measure and r["value"] is not None]
    service = _service(deps)
    scope = f" of {code(service)}" if service else ""

    def g(v: float | None) -> str:  # four significant digits; large values whole, with thousands separated
        return "n/a" if v is None else f"{v:,.0f}" if abs(v) >= 10_000 else f"{v:.4g}"

    if not rows:
        names = sorted({r["metric"] for r in every})
        have = (f" The metrics here are: {', '.join(code(n) for n in names[:12])}." if names else
                " There are no gauge or sum metrics in this time range.")
        return Finding(answer=f"No {kind.measure} metric{scope} {_window(deps)}.{have}\n\n{_foot(deps)}",
                       follow_ups=["What is unusual in the last 15 minutes?"])
    by_metric: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_metric.setdefault(r["metric"], []).append(r)
    groups = sorted(by_metric.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:3]
    lines: list[str] = []
    for metric, group in groups:
        group.sort(key=lambda r: -(r["value"] or 0))
        unit = f" ({group[0]['unit']})" if group[0]["unit"] else ""
        lines += [f"{code(metric)}{unit}{scope} by pod {_window(deps)}, highest first (the window's average, "
                  "and the baseline's before it):", "",
                  "| service | pod / instance | now | before | max in window | |", "|---|---|---|---|---|---|"]
        lines += [f"| {cell(r['service'] or '-')} | {cell(r['instance'] or '-')} | **{g(r['value'])}** | "
                  f"{g(r['base_value'])} | {g(r['max'])} | {r['flag']} |" for r in group[:kind.n]]
        lines += ["", f"{len(group) - kind.n} more not shown."] if len(group) > kind.n else []
        lines.append("")
    metric, group = groups[0]
    top = group[0]
    lines += [f"Highest: {code(top['instance'] or top['service'])}"
              + (f" ({code(top['service'])})" if top["service"] and top["instance"] else "")
              + f" at {g(top['value'])} {top['unit']}.".replace(" .", "."), "", _foot(deps)]
    title = f"{metric} by pod" + (f" ({group[0]['unit']})" if group[0]["unit"] else "")
    shown = group[:kind.n]
    _chart(deps, bar_chart([str(r["instance"] or r["service"]) for r in shown], [r["value"] for r in shown], title,
                           metric, "pod"), title)
    owner = top["service"] or (deps.question.services[0] if deps.question.services else "")
    follow = [f"Is {owner} healthy?", f"Why is {owner} slow?"] if owner else []
    return Finding(answer="\n".join(lines), follow_ups=[*follow, "What is unusual in the last 15 minutes?"])


def _unit(measure: str) -> str:
    from tools.aggregates import unit

    return {"": "", "/s": "per second"}.get(unit(measure), unit(measure))


def _series(deps: AgentDeps, kind: Kind) -> Finding:
    from tools.aggregates import fmt, label
    from tools.charts import line_chart

    calls = [c for c in deps.results("measure_series") if c.result.ok]
    if not calls or not calls[0].result.rows:
        return Finding(answer=f"No spans to plot {_window(deps)}. {_foot(deps)}")
    result = calls[0].result
    m = kind.measure
    rows = result.rows
    step = int(result.details.get("step_s") or 60)
    per = "" if m not in ("requests", "errors") else (" per minute" if step == 60 else f" per {step // 60} minutes")
    subject = result.details.get("subject") or "all traces"
    subject_md = code(subject) if result.args.get("service") or result.args.get("operation") else subject
    vals = [(r["time"], r[m]) for r in rows if r[m] is not None]
    peak = max(vals, key=lambda tv: tv[1])
    low = min(vals, key=lambda tv: tv[1])

    def clock(t: Any) -> str:  # noqa: ANN401
        return (datetime.fromisoformat(t) if isinstance(t, str) else t).strftime("%H:%M")

    lines = [f"{label(m).capitalize()}{per} of {subject_md} {_window(deps)}, every {step // 60} min: "
             f"peak **{fmt(m, peak[1])}** at {clock(peak[0])} UTC, lowest {fmt(m, low[1])} at "
             f"{clock(low[0])}; first {fmt(m, vals[0][1])}, last {fmt(m, vals[-1][1])}.", "", _foot(deps)]
    unit_words = "count" + per if m in ("requests", "errors") else _unit_words(m)
    title = f"{label(m).capitalize()}{per} of {subject} over time" + (f" ({_unit(m)})" if _unit(m) else "")
    _chart(deps, line_chart([r["time"] for r in rows], {label(m): [r[m] for r in rows]}, title, unit_words), title)
    return Finding(answer="\n".join(lines), follow_ups=[f"Why is {subject} slow?"] if deps.question.services else [])


def _clock_span(start: str, end: str) -> str:
    """Two ISO times as a clock range ("10:05:00–10:20:00 UTC")."""
    return f"{datetime.fromisoformat(start):%H:%M:%S}–{datetime.fromisoformat(end):%H:%M:%S} UTC"


def _compare(deps: AgentDeps, kind: Kind) -> Finding:
    from tools.aggregates import fmt, label
    from tools.charts import bar_chart

    calls = [c for c in deps.results("compare_periods") if c.result.ok]
    if not calls:
        if deps.results("versions_seen") and not deps.context.get("_version_change"):
            return Finding(answer="No version change in the window to compare around: no service started "
                                  f"reporting a new version. {_foot(deps)}")
        return Finding(answer=f"The comparison query failed. {_foot(deps)}")
    call = calls[0]
    rows = [r for r in call.result.rows if r["now"] is not None or r["before"] is not None]
    _, _, how = periods(deps)
    now = _clock_span(call.args["start"], call.args["end"])
    then = _clock_span(call.args["reference_start"], call.args["reference_end"])

    m = kind.measure
    if not rows:
        return Finding(answer=f"No spans in {now} nor in {then}. {_foot(deps)}")
    lines = [f"{label(m).capitalize()} now ({now}) against {how} ({then}):", "",
             "| service | before | now | change |", "|---|---|---|---|"]
    for r in rows[:15]:
        change = f"{r['change_pct']:+.1f}%" if r["change_pct"] is not None else "n/a"
        lines.append(f"| {cell(r['service'])} | {fmt(m, r['before'])} | **{fmt(m, r['now'])}** | {change} |")
    top = rows[0]
    if top["now"] is not None and top["before"] is not None:
        direction = "rose" if top["now"] > top["before"] else "fell"
        lines += ["", f"{code(top['service'])}: {label(m)} {direction} from {fmt(m, top['before'])} to "
                  f"{fmt(m, top['now'])}."]
    if all(r["before"] is None for r in rows):
        since = f" (the data starts at {deps.names.earliest:%Y-%m-%d %H:%M} UTC)" if deps.names.earliest else ""
        lines += ["", f"There is no data from {then} to compare with{since}."]
    lines += ["", "_Computed in ClickHouse (SQL in the evidence)._"]
    shown = rows[:12]
    title = f"{label(m).capitalize()}: now against {how}" + (f" ({_unit(m)})" if _unit(m) else "")
    fig = bar_chart([r["service"] for r in shown], [r["before"] for r in shown], title, _unit_words(m), "service")
    import plotly.graph_objects as go

    from tools.charts import plain

    fig.data[0].name = "before"
    fig.add_trace(go.Bar(x=[plain(r["service"]) for r in shown], y=[r["now"] for r in shown], name="now"))
    fig.update_layout(barmode="group", showlegend=True)
    _chart(deps, fig, title)
    why = "slow" if m.endswith("_ms") else "failing" if m in ("error_pct", "errors") else "busy"
    return Finding(answer="\n".join(lines), follow_ups=[f"Why is {top['service']} {why}?"])


def _logs(deps: AgentDeps, kind: Kind) -> Finding:
    from tools.charts import bar_chart

    calls = [c for c in deps.results("logs_matching") if c.result.ok]
    if not calls:
        return Finding(answer=f"The log query failed. {_foot(deps)}")
    result = calls[0].result
    filters = [f"from {code(result.args['service'])}" if result.args.get("service") else "",
               f"at {kind.severity.upper()} or above" if kind.severity else "",
               f"containing {code(kind.text)}" if kind.text else ""]
    what = " ".join(f for f in filters if f)
    what = f" {what}" if what else ""
    asked = calls[0].args  # the periods as asked (ISO times), when compared
    compared = "reference_start" in asked
    if not result.rows:
        also = (f" nor in {_clock_span(asked['reference_start'], asked['reference_end'])}"
                if compared else "")
        return Finding(answer=f"No logs{what} {_window(deps)}{also}. {_foot(deps)}")
    totals = result.details.get("totals") or []
    total = sum(t["count"] for t in totals)
    if compared:
        _, _, how = periods(deps)
        when = f"in {_clock_span(asked['start'], asked['end'])}"
        before = sum(t["before"] for t in totals)
        head = (f"**{total}** logs{what} {when}, against **{before}** in {how} "
                f"({_clock_span(asked['reference_start'], asked['reference_end'])}): "
                + ", ".join(f"{code(t['service'])} {t['severity'] or '(no severity)'} {t['before']} → {t['count']}"
                            for t in totals[:8]) + ".")
    else:
        head = (f"**{total}** logs{what} {_window(deps)}: "
                + ", ".join(f"{code(t['service'])} {t['severity'] or '(no severity)'} {t['count']}"
                            for t in totals[:8]) + ".")
    lines = [head, "", "The most frequent patterns (numbers and ids masked as <*>):", "",
             ("| now | before | " if compared else "| count | ") + "service | severity | pattern | example trace |",
             "|---|---|---|---|---|" + ("---|" if compared else "")]
    for r in result.rows[:kind.n]:
        lines.append(f"| {r['count']} | " + (f"{r['before']} | " if compared else "")
                     + f"{cell(r['service'])} | {cell(r['severity'])} | {cell(r['pattern'])} | "
                     + (f"`{r['trace_id']}`" if r.get("trace_id") else "") + " |")
    if compared:
        new = sum(1 for r in result.rows if r["count"] and not r["before"])
        gone = sum(1 for r in result.rows if r["before"] and not r["count"])
        lines += ["", f"Patterns listed: {len(result.rows)}; new in the window (not logged before): {new}; "
                  f"logged only before: {gone}."]
    lines += ["", _foot(deps)]
    shown = result.rows[:10]
    title = f"Most frequent log patterns{what.replace('`', '')}: count"
    _chart(deps, bar_chart([r["pattern"][:60] for r in shown], [r["count"] for r in shown], title, "logs",
                           "pattern"), title)
    top = result.rows[0]
    return Finding(answer="\n".join(lines), follow_ups=[f"Why is {top['service']} failing?"])


def _volume(deps: AgentDeps, kind: Kind) -> Finding:
    """How much telemetry there is: each signal's count in the window and per minute, against the baseline."""
    calls = [c for c in deps.results("telemetry_volume") if c.result.ok]
    if not calls:
        return Finding(answer=f"The volume query failed. {_foot(deps)}")
    rows = {r["signal"]: r for r in calls[0].result.rows}
    traces, spans, services = rows["traces"], rows["spans"], rows["services sending spans"]
    lines = [f"**{traces['count']:,} traces** {_window(deps)} ({spans['count']:,} spans from {services['count']} "
             "services).", "", "| telemetry | in the window | per minute | per minute before |", "|---|---|---|---|"]
    for r in rows.values():
        if r["per_min"] is not None:
            then = f"{r['per_min_base']:,}" if r["count_base"] else "none (no data)"
            lines.append(f"| {r['signal']} | **{r['count']:,}** | {r['per_min']:,} | {then} |")
    lines += ["", _foot(deps)]
    return Finding(answer="\n".join(lines), follow_ups=["Which services are there?", "Show throughput by service"])


def _dependencies(deps: AgentDeps, kind: Kind) -> Finding:
    from tools.charts import graph_chart

    calls = [c for c in deps.results("service_map") if c.result.ok]
    rows = calls[0].result.rows if calls else []
    if not rows:
        return Finding(answer=f"No calls between services {_window(deps)} (single-service traces or no data). "
                              f"{_foot(deps)}")
    focus = deps.question.services[0] if deps.question.services else None
    shown = [r for r in rows if focus is None or focus in (r["caller"], r["callee"])] or rows
    nodes = sorted({r["caller"] for r in shown} | {r["callee"] for r in shown})
    if focus:  # the tool counted all edges, not those around one service: no counts here
        lines = [f"Calls to and from {code(focus)} {_window(deps)}:", ""]
    else:
        lines = [f"{len(shown)} caller → callee edges between {len(nodes)} services and systems {_window(deps)}:",
                 ""]
    for r in sorted(shown, key=lambda r: (r["caller"], -r["calls"])):
        err = f", {r['error_pct']:.2f}% errors" if r.get("error_pct") else ""
        lines.append(f"- {code(r['caller'])} → {code(r['callee'])}: {r['calls']} calls, p95 "
                     f"{_fmt_ms(r['p95_ms'])}{err}")
    if focus:
        callers = sorted({r["caller"] for r in rows if r["callee"] == focus})
        callees = sorted({r["callee"] for r in rows if r["caller"] == focus})
        lines += ["", f"{code(focus)} is called by {', '.join(map(code, callers)) or 'no service'} and calls "
                  f"{', '.join(map(code, callees)) or 'nothing instrumented'}."]
    lines += ["", _foot(deps)]
    edges = [(r["caller"], r["callee"], f"{r['caller']} → {r['callee']}: {r['calls']} calls, p95 "
              f"{_fmt_ms(r['p95_ms'])}") for r in shown]
    title = "Who calls whom" + (f" around {focus}" if focus else "") + " (service map)"
    _chart(deps, graph_chart(edges, title), title)
    return Finding(answer="\n".join(lines), follow_ups=["Show p95 latency by service", "Show error rate by service"])


def _changes(deps: AgentDeps, kind: Kind) -> Finding:
    versions = [c for c in deps.results("versions_seen") if c.result.ok]
    rows = versions[0].result.rows if versions else []
    w = deps.window
    lines: list[str] = []
    changed = [r for r in rows if r["status"] != "steady"]
    if changed:
        lines.append(f"Version changes in {w.start:%H:%M:%S}–{w.end:%H:%M:%S} UTC against the "
                     f"{w.baseline_start:%H:%M:%S}–{w.baseline_end:%H:%M:%S} baseline (resource attributes):")
        for r in changed[:10]:
            first = r["first_seen"]
            first = datetime.fromisoformat(first) if isinstance(first, str) else first
            verb = "started reporting" if r["status"] == "new" else "stopped reporting"
            lines.append(f"- {code(r['service'])} {verb} {code(r['attribute'] + '=' + r['version'])}"
                         + (f" (first seen {first:%H:%M:%S} UTC, {r['spans_now']} spans since)"
                            if r["status"] == "new" else f" ({r['spans_before']} spans before)"))
    elif rows:
        lines.append(f"No version changed: {len({r['service'] for r in rows})} services report versions and each "
                     f"ran the same one in the window as before.")
    else:
        lines.append("No span carries a version attribute (service.version or a deployment attribute), so "
                     "deployments cannot be seen here.")
    lines += _movers(deps)
    lines += ["", _foot(deps)]
    new = [r for r in changed if r["status"] == "new"]
    follow = [f"Compare p95 latency of {new[0]['service']} before and after the version change"] if new else []
    follow.append("What is unusual in the last 15 minutes?")
    return Finding(answer="\n".join(lines), follow_ups=follow)


def _movers(deps: AgentDeps) -> list[str]:
    """The services whose own requests (entry spans) changed most: p95 at least 1.5x, or errors up a point."""
    overview = [c for c in deps.results("service_overview") if c.result.ok]
    services = overview[0].result.details.get("services", []) if overview else []

    def g(v: float | None, unit: str = "") -> str:  # as the tool's summary states it
        return "n/a" if v is None else f"{v:.4g}{unit}"

    moved = [s for s in services if s.get("calls", 0) >= 5 and ((s.get("p95_ratio") or 0) >= 1.5
                                                              or (s.get("error_pct_delta") or 0) >= 1.0)]
    if not moved:
        return ["", "No service's latency or error rate moved much against the baseline."] if services else []
    lines = ["", "What moved most (each service's own requests, window against baseline):"]
    for s in moved[:5]:
        lines.append(f"- {code(s['service'])}: p95 {g(s['base_p95_ms'], ' ms')} -> {g(s['p95_ms'], ' ms')}, "
                     f"errors {g(s['base_error_pct'], '%')} -> {g(s['error_pct'], '%')}")
    return lines


# ---- the symptom's series beside a root-cause answer ----------------------------------------


def symptom_series(deps: AgentDeps, finding: Finding) -> tuple[str, dict[str, Any]] | None:
    """For a root-cause answer, the symptom's latency (or error rate) every minute over the baseline and the
    window: the first chart an SRE wants. The symptom is the service named, else the first root cause."""
    causes = finding.root_causes
    service = deps.question.services[0] if deps.question.services else (causes[0].service if causes else None)
    if service is None:
        return None
    errors = causes[0].kind in ("errors", "dependency") if causes else "errors" in deps.question.intents
    w = deps.window
    return ("measure_series", {"measure": "error_pct" if errors else "p95_ms", "service": service,
                               "start": w.baseline_start.isoformat(), "end": w.end.isoformat()})


def symptom_chart(deps: AgentDeps) -> ChartSpec | None:
    """The symptom's series as a line, with the change point marked."""
    from tools.aggregates import label
    from tools.charts import figure_json, line_chart

    calls = [c for c in deps.results("measure_series") if c.result.ok and c.result.rows]
    if not calls:
        return None
    result = calls[0].result
    m = result.details.get("measure", "p95_ms")
    rows = result.rows
    values = [r.get(m) for r in rows]
    subject = result.details.get("subject") or ""
    unit = f" ({_unit(m)})" if _unit(m) else ""
    title = f"{label(m).capitalize()} of {subject}{unit}"
    fig = line_chart([r["time"] for r in rows], {label(m): values}, title, _unit_words(m))
    # marked where the analysis found the symptom changed (agent.incident moved the window or its baseline there,
    # so the baseline ends there), nowhere else
    if any(c.call_id == "incident" for c in deps.calls):
        at = deps.window.baseline_end
        fig.add_vline(x=at, line_dash="dash", line_color="#c0392b")
        fig.add_annotation(x=at, yref="paper", y=1.02, showarrow=False, text=f"changed ~{at:%H:%M} UTC",
                           font={"color": "#c0392b"})
        title = f"{title}: changed ~{at:%H:%M} UTC"
        fig.update_layout(title={"text": title})
    return ChartSpec(title=title, figure=figure_json(fig))


def charts(deps: AgentDeps) -> list[ChartSpec] | None:
    """The charts this kind drew (an empty list: none helps), or None when another brain answered."""
    if "_charts" not in deps.context:
        return None
    return list(deps.context["_charts"])
