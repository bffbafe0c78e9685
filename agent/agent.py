"""The pydantic-ai agent: tools over `tools.*`, `ask`, `ask_sync` and `Conversation`.

Every model (the built-in analyst, Ollama, OpenAI, Anthropic) drives the same tools; each call is
recorded with its SQL and summary as evidence. Tool output goes back to the model fenced as
untrusted telemetry (`<telemetry-data>`, see tools.result): what a span attribute or a log line says
is data, never an instruction.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic_ai import Agent, RunContext
from pydantic_ai.exceptions import FallbackExceptionGroup, ModelAPIError, UnexpectedModelBehavior
from pydantic_ai.messages import (
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    UserPromptPart,
)
from pydantic_ai.usage import UsageLimits

from agent.answer import Answer, ChartSpec, Evidence, Finding, RootCause
from agent.deps import CURRENT, AgentDeps, DataNames, ToolCall, Window
from agent.diagnosis import mode as diagnosis_mode
from agent.incident import baseline_before_incident, follow_incident
from agent.kinds import classify
from agent.models import AgentError, ModelUnavailable, resolve_model
from agent.question import MAX_QUESTION_CHARS, match_services, parse_question
from agent.streaming import EventRelay, OnEvent, tools_only
from agent.summary import summarize, summary_spec
from otel_ai.settings import Settings, load_settings
from store import Store, StorePool
from tools.rollup import ROLLUP_TABLE

if TYPE_CHECKING:
    from tools.result import ToolResult
    from tools.timewindow import TimeWindow

log = logging.getLogger("agent")

# Rows of each tool result kept in the answer: what numbers in the answer can be checked against.
EVIDENCE_ROWS = 200

DEFAULT_WINDOW = timedelta(minutes=15)
# History older than this relative to the wall clock counts as "backdated": anchor on the data.
STALE_AFTER = timedelta(minutes=2)
MAX_HISTORY_TURNS = 3

agent: Agent[AgentDeps, Finding | str] = Agent(
    deps_type=AgentDeps,
    output_type=[Finding, str],
    name="otel-ai",
    retries=2,
)


@agent.instructions
def system_prompt(ctx: RunContext[AgentDeps]) -> str:
    """Live system prompt for LLMs (schema from the tables); the built-in analyst needs none."""
    if ctx.deps.context.get("builtin_only"):
        return "Built-in analyst."
    from prompts import render_system_prompt

    try:
        from tools.schema_info import describe_tables

        schema = describe_tables(ctx.deps.store)
    except Exception as exc:  # a missing table (or tool) must not stop the answer
        schema = f"(schema unavailable: {exc})"
    return render_system_prompt(schema, ctx.deps.window.describe(), ctx.deps.role)


# ---- tools ---------------------------------------------------------------------------------
# Sequential: every query goes through the one Store (a lock), so overlapping calls only wait on
# each other; one at a time, each call's timing is its own.


def _windows(deps: AgentDeps) -> tuple[Any, Any]:
    from tools.timewindow import TimeWindow

    w = deps.window
    return TimeWindow(start=w.start, end=w.end), TimeWindow(start=w.baseline_start, end=w.baseline_end)


def resolve_service(deps: AgentDeps, service: str | None) -> str | None:
    """A service name from a model, mapped to the nearest name in the data."""
    if not service or service in deps.names.services:
        return service or None
    found = match_services(service, deps.names.services)
    return found[0] if found else service


def record(ctx: RunContext[AgentDeps], tool: str, args: dict[str, Any], fn: Callable[[Store], Any]) -> str:
    """Run a tool on a handle of its own (tools of one step run side by side), record it as evidence and
    hand the model its summary as untrusted data."""
    from tools.result import ToolResult

    with ctx.deps.handles.borrow() as store:
        t0 = time.perf_counter()  # the tool's own time, not the wait for a handle
        try:
            result = fn(store)
        except Exception as exc:  # a tool bug becomes a failed call the model can see, not a crash
            log.exception("tool %s failed", tool)
            result = ToolResult.failure(tool, args, f"{type(exc).__name__}: {exc}")
        seconds = time.perf_counter() - t0
    ctx.deps.calls.append(
        ToolCall(call_id=ctx.tool_call_id or uuid.uuid4().hex, tool=tool, args=args, result=result, seconds=seconds)
    )
    # telemetry in the summary sits inside a <telemetry-data> fence (markers in values are escaped)
    return result.summary


@agent.tool
def service_overview(ctx: RunContext[AgentDeps]) -> str:
    """Per service: request rate, error rate and latency percentiles in the window versus the baseline."""
    from tools.traces import service_overview as fn

    window, baseline = _windows(ctx.deps)
    return record(ctx, "service_overview", {}, lambda store: fn(store, window, baseline=baseline))


@agent.tool
def service_stats(ctx: RunContext[AgentDeps], service: str, operation: str | None = None) -> str:
    """Exact statistics of one service (entry spans) or operation in the window and the baseline: requests,
    failed requests, error %, rate, avg/p50/p90/p95/p99/max latency. Use it for "how many", "what was the p95"."""
    from tools.traces import service_stats as fn

    svc = resolve_service(ctx.deps, service)
    window, baseline = _windows(ctx.deps)
    args = {"service": svc, "operation": operation}
    return record(ctx, "service_stats", args,
                  lambda store: fn(store, window, svc, operation=operation, baseline=baseline))


@agent.tool
def service_map(ctx: RunContext[AgentDeps]) -> str:
    """The call graph (caller -> callee service edges) with call counts, latency and errors."""
    from tools.traces import service_map as fn

    window, _ = _windows(ctx.deps)
    return record(ctx, "service_map", {}, lambda store: fn(store, window))


@agent.tool
def latency_breakdown(ctx: RunContext[AgentDeps], service: str, operation: str | None = None) -> str:
    """Where a service's time goes: per operation and downstream call, self time, versus the baseline."""
    from tools.traces import latency_breakdown as fn

    svc = resolve_service(ctx.deps, service)
    window, baseline = _windows(ctx.deps)
    args = {"service": svc, "operation": operation}
    return record(ctx, "latency_breakdown", args,
                  lambda store: fn(store, window, svc, operation=operation, baseline=baseline))


@agent.tool
def attribute_comparison(
    ctx: RunContext[AgentDeps],
    service: str | None = None,
    operation: str | None = None,
    target: Literal["slow", "error"] = "slow",
) -> str:
    """Which attribute values the slow (or failing) spans share, compared with the others."""
    from tools.traces import attribute_comparison as fn

    svc = resolve_service(ctx.deps, service)
    window, _ = _windows(ctx.deps)
    args = {"service": svc, "operation": operation, "target": target}
    return record(ctx, "attribute_comparison", args,
                  lambda store: fn(store, window, service=svc, operation=operation, target=target))


@agent.tool
def exemplar_traces(
    ctx: RunContext[AgentDeps],
    service: str | None = None,
    operation: str | None = None,
    kind: Literal["slow", "error"] = "slow",
    limit: int = 5,
) -> str:
    """Example traces (slowest or failing) for a service/operation, with their trace ids."""
    from tools.traces import exemplar_traces as fn

    svc = resolve_service(ctx.deps, service)
    window, _ = _windows(ctx.deps)
    limit = max(1, min(limit, 20))
    args = {"service": svc, "operation": operation, "kind": kind, "limit": limit}
    return record(ctx, "exemplar_traces", args,
                  lambda store: fn(store, window, service=svc, operation=operation, kind=kind, limit=limit))


@agent.tool
def trace_waterfall(ctx: RunContext[AgentDeps], trace_id: str) -> str:
    """All spans of one trace as a waterfall (service, operation, start offset, duration, status)."""
    from tools.traces import trace_waterfall as fn

    return record(ctx, "trace_waterfall", {"trace_id": trace_id}, lambda store: fn(store, trace_id))


@agent.tool
def log_patterns(ctx: RunContext[AgentDeps], service: str | None = None) -> str:
    """Log message patterns (templated) by service and severity, new or growing versus the baseline."""
    from tools.logs import log_patterns as fn

    svc = resolve_service(ctx.deps, service)
    window, baseline = _windows(ctx.deps)
    return record(ctx, "log_patterns", {"service": svc},
                  lambda store: fn(store, window, baseline=baseline, service=svc))


@agent.tool
def resource_metrics(ctx: RunContext[AgentDeps], service: str | None = None) -> str:
    """Resource metrics (CPU, memory, pools, queues) per service and pod versus the baseline."""
    from tools.metrics import resource_metrics as fn

    svc = resolve_service(ctx.deps, service)
    window, baseline = _windows(ctx.deps)
    return record(ctx, "resource_metrics", {"service": svc},
                  lambda store: fn(store, window, baseline=baseline, service=svc))


@agent.tool
def find_anomalies(ctx: RunContext[AgentDeps], service: str | None = None, operation: str | None = None) -> str:
    """Anomalies the scorer found in the window (service, operation, score, severity, explanation)."""
    from tools.anomalies import find_anomalies as fn

    svc = resolve_service(ctx.deps, service)
    window, _ = _windows(ctx.deps)
    args = {"service": svc, "operation": operation}
    return record(ctx, "find_anomalies", args,
                  lambda store: fn(store, window, service=svc, operation=operation))


@agent.tool(sequential=True)  # it weighs the evidence the calls before it gathered: they finish first
def root_cause_candidates(ctx: RunContext[AgentDeps]) -> str:
    """Ranked root-cause candidates from the anomaly scorer and the call graph."""
    from agent.diagnosis import known_evidence
    from tools.anomalies import root_cause_candidates as fn

    window, _ = _windows(ctx.deps)
    evidence = known_evidence(ctx.deps)
    return record(ctx, "root_cause_candidates", {}, lambda store: fn(store, window, evidence=evidence))


@agent.tool
def measure_by(
    ctx: RunContext[AgentDeps],
    measure: Literal["p50_ms", "p90_ms", "p95_ms", "p99_ms", "avg_ms", "max_ms", "error_pct", "errors", "requests",
                     "rate_per_s"] = "p95_ms",
    by: Literal["service", "operation"] = "service",
    service: str | None = None,
    limit: int = 20,
) -> str:
    """One measure per service (entry spans) or per operation (optionally of one service), highest first, with
    requests, error %, throughput and p50/p95/p99: "p95 by service", "slowest operations", "error rate per service"."""
    from tools.aggregates import measure_by as fn

    svc = resolve_service(ctx.deps, service)
    window, _ = _windows(ctx.deps)
    args = {"measure": measure, "by": by, "service": svc, "limit": limit}
    return record(ctx, "measure_by", args, lambda store: fn(store, window, measure, by, svc, limit))


def _periods(deps: AgentDeps, start: str | None, end: str | None, reference_start: str | None,
             reference_end: str | None) -> tuple[TimeWindow, TimeWindow | None]:
    """The window (start..end when both are given, else the question's) and the reference period, if both of
    its ends are given; ValueError for a time that does not parse."""
    from tools.timewindow import TimeWindow

    window, _ = _windows(deps)
    if start and end:
        window = TimeWindow(start=_utc(start), end=_utc(end))
    reference = TimeWindow(start=_utc(reference_start), end=_utc(reference_end)) \
        if reference_start and reference_end else None
    return window, reference


def _bad_range(ctx: RunContext[AgentDeps], tool: str, args: dict[str, Any], exc: ValueError) -> str:
    from tools.result import ToolResult

    bad = ToolResult.failure(tool, args, f"bad time range: {exc}")
    return record(ctx, tool, args, lambda _store: bad)


@agent.tool
def measure_series(
    ctx: RunContext[AgentDeps],
    measure: Literal["p50_ms", "p90_ms", "p95_ms", "p99_ms", "avg_ms", "max_ms", "error_pct", "errors", "requests",
                     "rate_per_s"] = "p95_ms",
    service: str | None = None,
    operation: str | None = None,
    start: str | None = None,
    end: str | None = None,
) -> str:
    """One measure per minute (longer steps over more than an hour) of a service, an operation or all traces,
    over the window or start..end (ISO, UTC): "latency of checkout over the last hour", "errors per minute"."""
    from tools.aggregates import measure_series as fn

    svc = resolve_service(ctx.deps, service)
    args: dict[str, Any] = {"measure": measure, "service": svc, "operation": operation}
    try:
        window, _ = _periods(ctx.deps, start, end, None, None)
    except ValueError as exc:
        return _bad_range(ctx, "measure_series", args, exc)
    if start and end:
        args.update(start=window.start.isoformat(), end=window.end.isoformat())
    return record(ctx, "measure_series", args, lambda store: fn(store, window, measure, svc, operation))


@agent.tool
def compare_periods(
    ctx: RunContext[AgentDeps],
    reference_start: str,
    reference_end: str,
    measure: Literal["p50_ms", "p90_ms", "p95_ms", "p99_ms", "avg_ms", "max_ms", "error_pct", "errors", "requests",
                     "rate_per_s"] = "p95_ms",
    service: str | None = None,
    start: str | None = None,
    end: str | None = None,
) -> str:
    """One measure per service in the window (or start..end) against a reference period (ISO times, UTC):
    "now vs an hour ago", "compared with yesterday", "before 10:30"."""
    from tools.aggregates import compare_periods as fn

    svc = resolve_service(ctx.deps, service)
    try:
        window, reference = _periods(ctx.deps, start, end, reference_start, reference_end)
        if reference is None:
            raise ValueError("the reference period needs a start and an end")
    except ValueError as exc:
        return _bad_range(ctx, "compare_periods", {}, exc)
    args = {"measure": measure, "service": svc, "start": window.start.isoformat(), "end": window.end.isoformat(),
            "reference_start": reference.start.isoformat(), "reference_end": reference.end.isoformat()}
    return record(ctx, "compare_periods", args, lambda store: fn(store, window, reference, measure, svc))


@agent.tool
def versions_seen(ctx: RunContext[AgentDeps]) -> str:
    """Versions each service reported (service.version and deployment attributes) in the window and before it:
    deployments and rollbacks ("what changed?")."""
    from tools.aggregates import versions_seen as fn

    window, baseline = _windows(ctx.deps)
    return record(ctx, "versions_seen", {}, lambda store: fn(store, window, baseline))


@agent.tool
def telemetry_volume(ctx: RunContext[AgentDeps]) -> str:
    """How much telemetry the window holds against the baseline: traces, spans, services sending spans, log
    lines, metric points, each counted and per minute ("how many traces in the last hour?")."""
    from tools.aggregates import telemetry_volume as fn

    window, baseline = _windows(ctx.deps)
    args = {"start": window.start.isoformat(), "end": window.end.isoformat()}  # what was counted, as evidence
    return record(ctx, "telemetry_volume", args, lambda store: fn(store, window, baseline))


@agent.tool
def logs_matching(
    ctx: RunContext[AgentDeps],
    service: str | None = None,
    min_severity: Literal["trace", "debug", "info", "warn", "error", "fatal"] | None = None,
    text: str | None = None,
    limit: int = 20,
    reference_start: str | None = None,
    reference_end: str | None = None,
    start: str | None = None,
    end: str | None = None,
) -> str:
    """Logs by service, severity and pattern with counts, most frequent first, filtered by service, lowest
    severity and text: "error logs of cart", "logs containing timeout", "noisiest log patterns". With a
    reference period (ISO times, UTC) each pattern is also counted there: "are these errors new?", "compare
    the error logs with an hour ago"."""
    from tools.aggregates import logs_matching as fn

    svc = resolve_service(ctx.deps, service)
    try:
        window, reference = _periods(ctx.deps, start, end, reference_start, reference_end)
    except ValueError as exc:
        return _bad_range(ctx, "logs_matching", {}, exc)
    args = {"service": svc, "min_severity": min_severity, "text": text, "limit": limit}
    if reference:
        args |= {"start": window.start.isoformat(), "end": window.end.isoformat(),
                 "reference_start": reference.start.isoformat(), "reference_end": reference.end.isoformat()}
    return record(ctx, "logs_matching", args,
                  lambda store: fn(store, window, svc, min_severity, text, limit, reference))


@agent.tool
def run_sql(ctx: RunContext[AgentDeps], sql: str) -> str:
    """Run one read-only ClickHouse SELECT through the SQL guard (refused queries return the reason)."""
    return record(ctx, "run_sql", {"sql": sql}, lambda store: guarded_sql(ctx.deps, store, sql))


def guarded_sql(deps: AgentDeps, store: Store, sql: str) -> ToolResult:
    """`sql` through the guard, under the ad-hoc limits unless it is, byte for byte, one of the analyst's own
    evidence queries for this window (then every core may serve it; it is still guarded and read-only)."""
    from agent.diagnosis import analyst_sql
    from tools.sql import SqlLimits, run_sql

    own = sql in analyst_sql(deps).values()
    return run_sql(store, sql, limits=SqlLimits.for_product_sql() if own else None)


# ---- conversations -------------------------------------------------------------------------


@dataclass
class Conversation:
    """A thread's memory: what the last turns were about (for "and payment?") and the messages."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    context: dict[str, Any] = field(default_factory=dict)
    turns: list[dict[str, Any]] = field(default_factory=list)
    messages: list[ModelMessage] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({
            "id": self.id,
            "context": self.context,
            "turns": self.turns,
            "messages": json.loads(ModelMessagesTypeAdapter.dump_json(self.messages)),
        })

    @classmethod
    def from_json(cls, text: str) -> Conversation:
        data = json.loads(text)
        return cls(
            id=data["id"],
            context=data.get("context") or {},
            turns=data.get("turns") or [],
            messages=ModelMessagesTypeAdapter.validate_python(data.get("messages") or []),
        )


# ---- ask -----------------------------------------------------------------------------------


def _utc(value: Any) -> datetime | None:  # noqa: ANN401
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def discover(store: Store) -> tuple[DataNames, list[Any]]:
    """Services, operations and the time range of the data, through the SQL guard."""
    from tools.sql import run_sql as guarded

    span = guarded(store, "SELECT min(Timestamp) AS earliest, max(Timestamp) AS latest FROM otel_traces")
    row = span.rows[0] if span.ok and span.rows else {}
    earliest_ts, latest_ts = _utc(row.get("earliest")), _utc(row.get("latest"))
    results = [span]
    if latest_ts is None or latest_ts.year < 2000:  # no spans: fall back on the logs' time range
        logs = guarded(store, "SELECT min(Timestamp) AS earliest, max(Timestamp) AS latest FROM otel_logs")
        results.append(logs)
        row = logs.rows[0] if logs.ok and logs.rows else {}
        earliest_ts, latest_ts = _utc(row.get("earliest")), _utc(row.get("latest"))
        if latest_ts is not None and latest_ts.year < 2000:
            earliest_ts = latest_ts = None
    names = DataNames(latest=latest_ts, earliest=earliest_ts)
    if latest_ts is not None:
        # the names of the last six hours, from the per-minute rollup (tools/rollup.py): a few rows per minute
        # instead of every span (on 10 million spans over a day, 0.1 s less for every question)
        since = (latest_ts - timedelta(hours=6)).strftime("%Y-%m-%d %H:%M:00")
        ops = guarded(
            store,
            f"SELECT ServiceName AS service, SpanName AS operation, sum(Calls) AS n FROM {ROLLUP_TABLE} "
            f"WHERE Minute >= '{since}' GROUP BY service, operation ORDER BY n DESC LIMIT 2000",
        )
        results.append(ops)
        for row in ops.rows if ops.ok else []:
            names.operations.setdefault(row["service"], []).append(row["operation"])
        names.services = sorted(names.operations)
    return names, results


def choose_window(
    question_start: datetime | None,
    question_end: datetime | None,
    since: timedelta | None,
    latest: datetime | None,
    now: datetime,
    previous: dict[str, Any] | None = None,
    earliest: datetime | None = None,
) -> Window:
    """The analysed window: the question's range, else `since`, else the last 15 minutes — anchored
    on the latest data when the wall clock has none (backdated history), halved when the data is too
    short to leave a baseline, and saying so."""
    notes: list[str] = []
    length_note = ""
    if question_start is not None:
        start, end = question_start, question_end or now
    elif previous and previous.get("window_explicit"):
        start, end = _utc(previous["start"]), _utc(previous["end"])
        notes.append("Same window as the previous question.")
    else:
        length = since or DEFAULT_WINDOW
        # end at the newest data: the last seconds of a live stream, or backdated history
        anchor = min(now, latest) if latest is not None else now
        if latest is not None and now - latest > STALE_AFTER:
            notes.append(f"The latest data is from {latest:%Y-%m-%d %H:%M:%S} UTC: the window ends there.")
        if since is None and latest is not None and earliest is not None and 2 * length > latest - earliest:
            length = max((latest - earliest) / 2, timedelta(minutes=1))
            length_note = (f"Only {_fmt_td(latest - earliest)} of data: the last {_fmt_td(length)} are compared "
                           "with the time before.")
        start, end = anchor - length, anchor
    assert start is not None and end is not None
    length = max(end - start, timedelta(minutes=5))
    baseline_len = max(length, timedelta(minutes=30))
    return Window(start=start, end=end, baseline_start=start - baseline_len, baseline_end=start,
                  note=" ".join(notes), length_note=length_note)


def _fmt_td(td: timedelta) -> str:
    seconds = int(td.total_seconds())
    if seconds < 120:
        return f"{seconds} seconds"
    minutes = seconds // 60
    return f"{minutes // 60} h" if minutes % 60 == 0 and minutes >= 60 else f"{minutes} minutes"


def _parse_since(since: str | timedelta | None) -> timedelta | None:
    if since is None or isinstance(since, timedelta):
        return since
    from tools.timewindow import parse_duration

    try:
        return parse_duration(since)
    except ValueError as exc:
        raise AgentError(str(exc)) from None


def build_charts(deps: AgentDeps, limit: int) -> list[ChartSpec]:
    """Charts for the most telling results (the analyst or model chose what to call)."""
    try:
        from tools.charts import chart_for, figure_json
    except ImportError:  # charts land with the tools; answers do not wait for them
        return []

    from agent.kinds import charts as kind_charts
    from agent.kinds import symptom_chart as kind_charts_symptom

    planned = kind_charts(deps)
    if planned is not None:  # the question's kind drew its own charts (none when none helps)
        return planned[:limit]
    charts: list[ChartSpec] = []
    symptom = kind_charts_symptom(deps)
    if symptom is not None:  # a root cause: the symptom's series with the change marked, then the breakdown
        charts.append(symptom)
        limit += 1
    priority = ["latency_breakdown", "service_overview", "resource_metrics", "log_patterns", "run_sql",
                "find_anomalies", "exemplar_traces"]
    seen: set[str] = set()
    for name in priority:
        for call in deps.results(name):
            if call.call_id == "discover":  # the names and time range found before the question: no answer
                continue
            if len(charts) >= limit or not call.result.ok or not call.result.rows or name in seen:
                continue
            try:
                fig = chart_for(call.result, title=chart_title(call))
            except Exception:  # a chart is a nicety; never fail the answer on it
                log.exception("chart for %s failed", name)
                fig = None
            if fig is not None:
                title = fig.layout.title.text if fig.layout.title and fig.layout.title.text else name
                charts.append(ChartSpec(title=str(title), figure=figure_json(fig)))
                seen.add(name)
    return charts


def chart_title(call: ToolCall) -> str | None:
    """A diagnosis chart's title in words, with its unit (None: the chart's own, from its columns)."""
    service = call.args.get("service")
    of = f" of {service}" if service else ""
    titles = {
        "latency_breakdown": f"Where the extra time{of} goes: change per service (ms)",
        "service_overview": "p95 latency by service (ms)",
        "exemplar_traces": f"Example traces{of}: duration (ms)",
        "log_patterns": f"Log patterns{of}: count in the window",
        "find_anomalies": f"Anomaly score by service{of}",
    }
    return titles.get(call.tool)


def _model_label(resolved_label: str, response_model: str | None) -> str:
    """The spec of the model that actually answered (the first of a chain unless it fell back)."""
    specs = resolved_label.split(",")
    if response_model == "builtin" and "builtin" in specs:
        return "builtin"
    for spec in specs:
        if response_model and spec.split(":", 1)[-1] == response_model:
            return spec
    return specs[0]


async def ask(
    question: str,
    store: Store | None = None,
    settings: Settings | None = None,
    conversation: Conversation | None = None,
    since: str | timedelta | None = None,
    model: str | None = None,
    role: str = "sre",
    on_event: OnEvent | None = None,
    spare: StorePool | None = None,
) -> Answer:
    """Answer a question about the telemetry with evidence. Raises AgentError with a user-fit message
    for a bad model configuration or when no configured model answers. `on_event` (agent.streaming)
    receives each tool call as it starts and ends and the answer text as the model produces it. The tools
    query on `store`, and on an idle handle of `spare` while a call runs beside another (agent.deps.Handles);
    without `store`, the configured store is opened, with a spare handle of its own."""
    question = (question or "").strip()
    if not question:
        raise AgentError("empty question: ask e.g. 'why is checkout slow?'")
    if len(question) > MAX_QUESTION_CHARS:
        raise AgentError(f"the question is {len(question):,} characters long; ask in at most {MAX_QUESTION_CHARS:,} "
                         "(telemetry and logs belong in the store, where the analyst reads them)")
    t0 = time.perf_counter()
    settings = settings or load_settings()
    own_store = store is None
    store = store or Store.from_settings(settings)
    own_spare = spare is None and own_store
    spare = StorePool(store, 1) if own_spare else spare
    timings: dict[str, float] = {}
    try:
        resolved = resolve_model(settings, "planner", override=model)
        writer_spec = summary_spec(settings, resolved.label)
        t = time.perf_counter()
        names, discovery = await asyncio.to_thread(discover, store)
        timings["discover"] = time.perf_counter() - t
        now = datetime.now(UTC)
        anchor = names.latest if names.latest and now - names.latest > STALE_AFTER else now
        previous = conversation.context if conversation else {}
        parsed = parse_question(question, anchor, names.services, names.all_operations())
        window = choose_window(parsed.start, parsed.end, _parse_since(since), names.latest, now, previous,
                               earliest=names.earliest)
        history = trim_history(conversation.messages) if conversation else []
        deps = AgentDeps(
            store=store, settings=settings, window=window, question=parsed, names=names, role=role,
            spare=spare, context={**(previous or {}), "builtin_only": resolved.label == "builtin",
                     "history_responses": sum(isinstance(m, ModelResponse) for m in history)},
        )
        deps.calls.extend(ToolCall("discover", "run_sql", {"sql": r.sql[0] if r.sql else ""}, r, 0.0)
                          for r in discovery)
        kind = classify(deps)
        comparing = diagnosis_mode(deps) == "diagnose" and kind is None
        explicit = bool(parsed.has_window or since or previous.get("window_explicit"))
        if ((comparing or (kind is not None and kind.name == "changes")) and explicit
                and names.earliest is not None and deps.window.baseline_end <= names.earliest):
            # an answer that compares needs a baseline: a range that holds all the data leaves none ("what
            # changed in the last hour?" ten minutes after the first span: every line would be "new")
            deps.window = choose_window(None, None, None, names.latest, now, earliest=names.earliest)
            deps.window.length_note = " ".join(t for t in (
                f"Nothing was recorded before {names.earliest:%Y-%m-%d %H:%M:%S} UTC, so the range asked has "
                "nothing to compare with.", deps.window.length_note or
                f"The last {_fmt_td(DEFAULT_WINDOW)} are compared with the time before.") if t)
            explicit = False
        # only a root-cause question follows the incident: a list, a measure or a chart keeps the asked window;
        # an asked range is kept, with a baseline from before the incident
        if comparing:
            t = time.perf_counter()
            named = parsed.services
            deps.window, moved = await asyncio.to_thread(baseline_before_incident if explicit else follow_incident,
                                                         store, deps.window, named[0] if len(named) == 1 else None)
            deps.calls.extend([moved] if moved else [])
            timings["incident"] = time.perf_counter() - t
        token = CURRENT.set(deps)
        t = time.perf_counter()
        try:
            result = await agent.run(
                question, deps=deps, model=resolved.model, message_history=history or None,
                usage_limits=UsageLimits(request_limit=25, tool_calls_limit=40),
                event_stream_handler=EventRelay(tools_only(on_event) if writer_spec else on_event)
                if on_event is not None else None,
            )
        except FallbackExceptionGroup as exc:
            reasons = "; ".join(f"{type(e).__name__}: {e}" for e in exc.exceptions)
            raise ModelUnavailable(f"no configured model answered ({resolved.label}): {reasons}") from exc
        except ModelAPIError as exc:
            raise ModelUnavailable(
                f"model {resolved.label} failed: {type(exc).__name__}: {exc}. Check that it is running and "
                "reachable, or configure a fallback chain such as 'ollama:llama3.2,builtin'."
            ) from exc
        except UnexpectedModelBehavior as exc:
            raise ModelUnavailable(f"model {resolved.label} misbehaved: {exc}") from exc
        finally:
            CURRENT.reset(token)
        timings["model_and_tools"] = time.perf_counter() - t
        deps.order_calls(result.new_messages())
        timings["tools"] = sum(c.seconds for c in deps.calls)
        for c in deps.calls:  # where the tool time goes
            timings[f"tool:{c.tool}"] = timings.get(f"tool:{c.tool}", 0.0) + c.seconds
        output = result.output
        finding = output if isinstance(output, Finding) else Finding(answer=str(output))
        t = time.perf_counter()
        charts = build_charts(deps, limit=3 if "chart" in parsed.intents else 2)
        timings["charts"] = time.perf_counter() - t
        label = _model_label(resolved.label, result.response.model_name)
        usage = result.usage
        answer = Answer(
            answer=finding.answer,
            # in the finding's own order: the one its text names first leads (a failure question ranks an error
            # above a stronger slowdown), so the list a program reads agrees with the words a person reads
            root_causes=finding.root_causes,
            evidence=[
                Evidence(tool=c.tool, args=c.args, sql=c.result.sql, summary=c.result.summary, ok=c.result.ok,
                         error=c.result.error, rows=c.result.rows[:EVIDENCE_ROWS])
                for c in deps.calls
            ],
            charts=charts,
            traces=[{"trace_id": c.args.get("trace_id"), "spans": c.result.rows}
                    for c in deps.results("trace_waterfall") if c.result.ok],
            follow_ups=finding.follow_ups,
            model=label,
            models={"planner": label},
            usage={"requests": usage.requests, "tool_calls": usage.tool_calls,
                   "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
                   "total_tokens": usage.input_tokens + usage.output_tokens},
        )
        notes = list(resolved.notes)
        if writer_spec:
            t = time.perf_counter()
            written = await summarize(question, answer, role, writer_spec, settings, on_event)
            timings["summary"] = time.perf_counter() - t
            answer.answer = written.text
            if written.note:
                notes.append(written.note)
            else:
                answer.models["summary"] = written.model
                if written.model != "builtin":  # `builtin` in a summary chain is the draft itself
                    answer.model = f"{label} + {written.model} (summary)"
                answer.usage["input_tokens"] += written.input_tokens
                answer.usage["output_tokens"] += written.output_tokens
                answer.usage["total_tokens"] += written.input_tokens + written.output_tokens
        if notes:
            answer.answer += "\n\n_" + "; ".join(notes) + "_"
        if conversation is not None:
            conversation.messages = trim_history(list(result.all_messages()))
            conversation.context = turn_context(deps, answer)
            conversation.turns.append({"question": question, "answer": answer.answer, "model": label})
        timings["total"] = time.perf_counter() - t0
        answer.timings = {k: round(v, 4) for k, v in timings.items()}
        return answer
    finally:
        if own_spare and spare is not None:
            spare.close()
        if own_store:
            store.close()


def trim_history(messages: list[ModelMessage], turns: int = MAX_HISTORY_TURNS) -> list[ModelMessage]:
    """The last `turns` whole turns (cut only where a user prompt starts, so tool calls keep their results)."""
    starts = [i for i, m in enumerate(messages)
              if isinstance(m, ModelRequest) and any(isinstance(p, UserPromptPart) for p in m.parts)]
    return messages[starts[-turns]:] if len(starts) > turns else list(messages)


def turn_context(deps: AgentDeps, answer: Answer) -> dict[str, Any]:
    """What a follow-up may reuse: intents, services, window, the root cause named."""
    q = deps.question
    previous = deps.context
    return {
        "intents": q.intents or previous.get("intents", []),
        "services": q.services or previous.get("services", []),
        "operations": q.operations or previous.get("operations", []),
        "window_explicit": q.has_window or bool(previous.get("window_explicit")),
        "start": deps.window.start.isoformat(),
        "end": deps.window.end.isoformat(),
        "root_causes": [r.model_dump() for r in answer.root_causes[:3]],
        "measure_stats": deps.context.get("measured", []),  # statistics answered (agent.measures)
        "kind": deps.context.get("kind"),  # the kind of question answered (agent.kinds) ...
        "kind_args": deps.context.get("kind_args"),  # ... and how, for a short follow-up
    }


def ask_sync(question: str, **kwargs: Any) -> Answer:  # noqa: ANN401
    """`ask` for synchronous callers (CLI, scripts); not for use inside a running event loop."""
    return asyncio.run(ask(question, **kwargs))


__all__ = ["Answer", "Conversation", "RootCause", "ask", "ask_sync", "agent"]
