"""The otel-ai chat (Chainlit): questions go to the agent, `/sql` to the guarded console,
`/dashboard` to the dashboard builder; every tool call is shown as a step with its SQL and result.

Loaded by Chainlit from its file path (chat.web.mount), after `chat.web.runtime.configure`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import chainlit as cl
from chainlit.input_widget import Select
from chainlit.utils import utc_now

from agent import AgentError, Answer, Conversation, Evidence, ask
from agent.dashboard_planner import PlannedDashboard
from agent.streaming import AgentEvent, AnswerDelta, ToolFinished, ToolStarted
from chat import dashboards
from chat.web import render, runtime
from chat.web.render import safe_markdown as safe
from store import Store, StoreBusy
from tools.charts import styled
from tools.result import ToolResult
from tools.sql import SqlLimits, run_sql

log = logging.getLogger("otel_ai.chat")
RT = runtime.get()
SETTINGS = RT.ctx.settings

STARTERS = [
    ("Why is checkout slow?", "Why is checkout slow?"),
    ("What changed in the last 15 minutes?", "What changed in the last 15 minutes?"),
    ("Show p95 latency by service", "Show p95 latency by service"),
    ("Which services are failing?", "Which services are failing?"),
]
TIME_RANGES = {"Auto (recent activity)": "auto", "Last 15 minutes": "15m", "Last 30 minutes": "30m",
               "Last hour": "1h", "Last 3 hours": "3h", "Last 6 hours": "6h", "Last 24 hours": "24h"}
ROLES = {"SRE: full evidence": "sre", "Developer: code paths and traces": "developer",
         "Manager: impact in brief": "manager"}
HELP = """**otel-ai** answers questions about your telemetry with evidence.

- Ask in plain words: *why is checkout slow?*, *which services are failing?*, *and payment?*
- `/sql SELECT ...` runs read-only SQL through the same guard as the agent (tables `otel_*`, `anomalies`).
- `/dashboard checkout` (or *build me a dashboard for checkout*): the configured model plans a dashboard, saved;
  `/dashboards` lists saved ones; `/dashboard open NAME` re-runs one on fresh data.
- Settings (the ⚙ icon by the message box): model, time range, and who you are (SRE, developer, manager).
"""


def model_choices() -> list[str]:
    """The models configured for the agent's roles, the planner's first."""
    return SETTINGS.model_choices()


def chat_settings(current: dict[str, Any] | None = None) -> cl.ChatSettings:
    current = current or {}
    models = model_choices()
    return cl.ChatSettings([
        Select(id="model", label="Model", values=models,
               initial_value=current.get("model") if current.get("model") in models else models[0],
               description="from the configured roles (OTEL_AI_MODEL, OTEL_AI_MODEL_PLANNER, ...)"),
        Select(id="since", label="Time range", items=TIME_RANGES,
               initial_value=current.get("since") if current.get("since") in TIME_RANGES.values() else "auto"),
        Select(id="role", label="I am", items=ROLES,
               initial_value=current.get("role") if current.get("role") in ROLES.values() else "sre",
               description="changes the depth and tone of answers"),
    ])


def prefs() -> dict[str, Any]:
    return cl.user_session.get("prefs") or {"model": model_choices()[0], "since": "auto", "role": "sre"}


# ---- auth and persistence -------------------------------------------------------------------

if RT.password_auth:

    @cl.password_auth_callback
    async def password_login(username: str, password: str) -> cl.User | None:
        if RT.check_password(username, password):
            return cl.User(identifier=username, metadata={"provider": "password"})
        return None

else:

    @cl.header_auth_callback
    async def local_login(headers: Any) -> cl.User | None:  # noqa: ANN401
        """Loopback only (serve refuses other hosts without passwords): one local user keeps history."""
        return cl.User(identifier="local", display_name="local", metadata={"provider": "localhost"})


@cl.data_layer
def data_layer() -> Any:  # noqa: ANN401
    return RT.data_layer()


@cl.set_starters
async def starters(user: cl.User | None = None, language: str | None = None) -> list[cl.Starter]:
    return [cl.Starter(label=label, message=message) for label, message in STARTERS]


@cl.on_chat_start
async def start() -> None:
    settings = chat_settings()
    cl.user_session.set("prefs", await settings.send())
    cl.user_session.set("conversation", Conversation(id=cl.context.session.thread_id))
    if key := requested_conversation():
        await continue_slack_thread(key)


def requested_conversation() -> str | None:
    """`?conversation=slack-<channel>-<ts>` on the page URL (links from Slack answers)."""
    referer = (cl.context.session.environ or {}).get("HTTP_REFERER") or ""
    values = parse_qs(urlsplit(referer).query).get("conversation") or []
    return values[0][:200] if values else None


async def continue_slack_thread(key: str) -> None:
    """Show a Slack thread's questions and answers here and keep its memory for follow-ups."""
    if not key.startswith("slack-"):
        return
    rows = await asyncio.to_thread(
        RT.store.query,
        "SELECT argMax(conversation, updated) AS conversation FROM slack_threads WHERE key = {key:String} "
        "GROUP BY key", {"key": key})
    stored = rows.scalar() if len(rows) else None
    if not stored:
        await cl.Message(content=f"No Slack thread `{render.cell(key)}` is stored here (yet).").send()
        return
    conversation = Conversation.from_json(stored)
    cl.user_session.set("conversation", conversation)
    lines = [f"**Continuing the Slack thread** `{render.cell(key)}`: ask a follow-up below."]
    for turn in conversation.turns[-5:]:
        lines += [f"> **Q:** {render.cell(turn.get('question') or '')}", "", str(turn.get("answer") or ""), ""]
    await cl.Message(content=safe("\n".join(lines))).send()


@cl.on_chat_resume
async def resume(thread: dict[str, Any]) -> None:
    saved = (thread.get("metadata") or {}).get("prefs") or {}
    settings = chat_settings(saved)
    cl.user_session.set("prefs", await settings.send())
    stored = await RT.data_layer().load_conversation(thread["id"])
    conversation = Conversation.from_json(stored) if stored else Conversation(id=thread["id"])
    cl.user_session.set("conversation", conversation)


@cl.on_settings_update
async def settings_update(values: dict[str, Any]) -> None:
    cl.user_session.set("prefs", values)
    await RT.data_layer().update_thread(cl.context.session.thread_id, metadata={"prefs": values})


# ---- messages -------------------------------------------------------------------------------


@cl.on_message
async def on_message(message: cl.Message) -> None:
    text = (message.content or "").strip()
    if not text:
        return
    try:
        if text.lower() in ("/help", "help", "/?"):
            await cl.Message(content=HELP).send()
        elif text.lower().startswith("/sql"):
            await sql_console(text[4:].strip())
        elif request := dashboards.parse_request(text):
            await dashboard_command(request)
        else:
            await answer_question(text)
    except Exception as exc:  # a bug or an outage must reach the user, not only the server log
        log.exception("chat message failed: %r", text[:200])
        await cl.Message(content=safe(f"**Something went wrong:** `{type(exc).__name__}: {exc}`")).send()


@cl.action_callback("follow_up")
async def follow_up(action: cl.Action) -> None:
    question = str(action.payload.get("question") or "")
    if question:
        await cl.Message(content=question, type="user_message", author="You").send()
        await answer_question(question)


@cl.action_callback("open_dashboard")
async def open_dashboard(action: cl.Action) -> None:
    await dashboard_command(dashboards.DashboardRequest("open", str(action.payload.get("name") or "")))


def plotly(fig: Any, name: str) -> cl.Plotly:  # noqa: ANN401
    return cl.Plotly(name=name, figure=styled(fig), display="inline", size="large")


class LiveRun:
    """One answer as it happens: a step per tool call the moment the agent starts it (SQL, result table
    and chart filled in when it ends) and the answer text streamed into its message as produced."""

    def __init__(self, run: cl.Step) -> None:
        self.run = run
        self.steps: dict[str, cl.Step] = {}
        self.message: cl.Message | None = None
        self.streamed = ""  # the raw text so far; the UI gets it made safe as a whole, never a raw token

    async def __call__(self, event: AgentEvent) -> None:
        if isinstance(event, ToolStarted):
            sql_only = set(event.args) <= {"sql"}  # the query itself is shown when it ends, highlighted
            step = cl.Step(name=event.tool, type="tool", parent_id=self.run.id, default_open=False,
                           show_input=False if sql_only else "json")
            step.input = "" if sql_only else json.dumps(event.args, default=str, indent=1)
            step.start = utc_now()  # "Using <tool>" until it ends
            self.steps[event.call_id] = step
            await step.send()
        elif isinstance(event, ToolFinished):
            step = self.steps.pop(event.call_id, None)
            if step is None:
                return
            await finish_tool_step(step, event.evidence)
        elif isinstance(event, AnswerDelta):
            if self.message is None:
                self.message = cl.Message(content="")
            self.streamed += event.text
            await self.message.stream_token(safe(self.streamed), is_sequence=True)


async def finish_tool_step(step: cl.Step, evidence: Evidence) -> None:
    """A tool step's result: its SQL highlighted, what it found, the first rows as a table and a chart."""
    output = render.evidence_markdown(evidence.sql, evidence.summary, evidence.error)
    if evidence.ok and evidence.rows:
        columns = list(evidence.rows[0])
        output += "\n\n" + render.markdown_table(columns, evidence.rows, max_rows=10)
        result = ToolResult(name=evidence.tool, args=evidence.args, sql=evidence.sql, columns=columns,
                            rows=evidence.rows)
        fig = await asyncio.to_thread(render.chart_or_none, result)
        if fig is not None:
            step.elements = [cl.Plotly(name=f"{evidence.tool} chart", figure=styled(fig), display="inline",
                                       size="medium", for_id=step.id)]
    step.output = safe(output)
    step.is_error = not evidence.ok
    step.end = utc_now()
    await step.update()


async def answer_question(question: str) -> None:
    """Ask the agent; each tool call shows up as a step while it runs, the answer streams in, then the
    charts, exemplar traces, ranked root causes and follow-ups complete the message."""
    p = prefs()
    conversation: Conversation = cl.user_session.get("conversation") or Conversation(
        id=cl.context.session.thread_id)
    started = time.perf_counter()
    async with pooled_handle() as store:  # the answer's queries never hold up chat history or health
        if store is not None:
            await investigate(question, conversation, p, started, store)


@contextlib.asynccontextmanager
async def pooled_handle() -> AsyncIterator[Store | None]:
    """A handle of serve's query pool for one answer or query, waited for on the loop (not in a thread);
    None, once the user has been told the server is busy, when none frees up in time. Only the wait's
    StoreBusy becomes that message: one raised by the work inside is that work's error."""
    async with contextlib.AsyncExitStack() as stack:
        try:
            store = await stack.enter_async_context(RT.ctx.query_handle())
        except StoreBusy as exc:
            await cl.Message(content=f"**The server is busy:** {exc}").send()
            store = None
        yield store


async def investigate(question: str, conversation: Conversation, p: dict[str, Any], started: float,
                      store: Store) -> None:
    async with cl.Step(name="Investigating", type="run", default_open=True, auto_collapse=True,
                       show_input=False) as run:
        live = LiveRun(run)
        try:
            answer: Answer = await ask(
                question, store=store, settings=SETTINGS, conversation=conversation,
                since=None if p.get("since") in (None, "auto") else p["since"], model=p.get("model"),
                role=p.get("role") or "sre", on_event=live, spare=RT.ctx.queries,
            )
        except AgentError as exc:
            run.output = safe(f"failed: {exc}")
            run.is_error = True
            await fail_message(live.message, f"**Could not answer:** {exc}")
            return
        except Exception as exc:
            run.output = safe(f"failed: {type(exc).__name__}: {exc}")
            run.is_error = True
            await fail_message(live.message, None)
            raise
        run.output = (f"{len(answer.evidence)} tool calls, {time.perf_counter() - started:.1f} s, "
                      f"model `{answer.model}`")
    cl.user_session.set("conversation", conversation)
    await RT.data_layer().save_conversation(cl.context.session.thread_id, conversation.to_json())

    elements = [plotly(render.figure(c.figure), c.title or f"chart {i + 1}") for i, c in enumerate(answer.charts)]
    # Exemplar traces go under the answer (not inside the collapsed evidence): the slow path at a glance.
    waterfalls = [render.waterfall_figure(t) for t in answer.traces[:2]]
    elements += [plotly(fig, f"trace {i + 1}") for i, fig in enumerate(waterfalls) if fig is not None]
    actions = [cl.Action(name="follow_up", payload={"question": q}, label=q) for q in answer.follow_ups[:4]]
    metadata = {"kind": "answer", "question": question, "settings": p,
                "answer": answer.model_dump(mode="json", exclude={"charts", "traces"})}
    body = answer.answer
    if table := render.root_causes_markdown(answer.root_causes):
        body += "\n\n" + table
    body = safe(body)
    msg = live.message or cl.Message(content="")
    if not live.message:  # a model that gave no text through the stream: the answer still streams here
        for chunk in _chunks(body):
            await msg.stream_token(chunk)
    # the streamed text was the model's; the final message is the whole answer with its evidence
    msg.content, msg.elements, msg.actions, msg.metadata = body, elements, actions, metadata
    await msg.send()


async def fail_message(streamed: cl.Message | None, text: str | None) -> None:
    """End a streamed partial answer (it is not the answer) and say why, if there is a reason to show."""
    if streamed is not None:
        streamed.content = (streamed.content + "\n\n_(interrupted)_").strip()
        await streamed.send()
    if text:
        await cl.Message(content=safe(text)).send()


def _chunks(text: str, size: int = 24) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


# ---- SQL console ----------------------------------------------------------------------------


async def show_tool_result(result: ToolResult, title: str) -> None:
    """A guarded query's outcome: the SQL as a step, then the table and a chart, or the refusal."""
    async with cl.Step(name=result.name, type="tool", show_input="sql", default_open=True) as step:
        step.input = result.sql[0] if result.sql else str(result.args.get("sql") or "")
        step.output = safe(render.markdown_table(result.columns, result.rows, max_rows=20) if result.ok
                           else f"**{result.error}**")
        step.is_error = not result.ok
    if not result.ok:
        await cl.Message(content=safe(f"**Query {result.error}**")).send()
        return
    from tools.charts import chart_for

    fig = chart_for(result, title=title)
    elements = [plotly(fig, title)] if fig is not None else []
    await cl.Message(
        content=safe(f"{len(result.rows)} rows.\n\n" + render.markdown_table(result.columns, result.rows)),
        elements=elements,
    ).send()


async def sql_console(sql: str) -> None:
    if not sql:
        await cl.Message(content="Usage: `/sql SELECT ServiceName, count() FROM otel_traces GROUP BY ServiceName`"
                         ).send()
        return
    async with pooled_handle() as store:  # under the ad-hoc limits
        if store is None:
            return
        result = await asyncio.to_thread(run_sql, store, sql, limits=SqlLimits.from_settings(SETTINGS))
    await show_tool_result(result, "SQL result")


# ---- dashboards -----------------------------------------------------------------------------


async def dashboard_command(request: dashboards.DashboardRequest) -> None:
    store = RT.store
    planned: PlannedDashboard | None = None
    try:
        if request.action == "list":
            await list_dashboards()
            return
        if request.action == "delete":
            done = await asyncio.to_thread(dashboards.delete_dashboard, store, request.target)
            await cl.Message(content=safe(f"Deleted dashboard **{request.target}**." if done
                                          else f"No saved dashboard named **{request.target}**.")).send()
            return
        if request.action == "open":
            board = await asyncio.to_thread(dashboards.get_dashboard, store, request.target)
            if board is None:
                await cl.Message(content=safe(f"No saved dashboard named **{request.target}**; `/dashboards` lists "
                                              "them.")).send()
                return
        else:
            user = cl.user_session.get("user")
            async with cl.Step(name="plan dashboard", type="tool", default_open=False) as step:
                step.input = request.target
                board, planned = await dashboards.build_dashboard(
                    store, request.target, SETTINGS, request.name, created_by=user.identifier if user else "")
                board = await asyncio.to_thread(dashboards.save_dashboard, store, board)
                step.output = safe(render.plan_markdown(planned))
        await render_dashboard(board, planned)
    except dashboards.DashboardError as exc:
        await cl.Message(content=safe(f"**Cannot build that dashboard:** {exc}")).send()


async def render_dashboard(board: dashboards.Dashboard, planned: PlannedDashboard | None = None) -> None:
    window, results = await asyncio.to_thread(dashboards.run_dashboard, RT.store, board)
    elements: list[cl.Element] = []
    tables: list[str] = []
    async with cl.Step(name=f"Dashboard panels ({len(results)})", type="run", show_input=False) as run:
        for pr in results:
            async with cl.Step(name=pr.panel.title, type="tool", show_input="sql", default_open=False) as step:
                step.input = "\n".join(pr.result.sql) or pr.panel.tool or ""
                step.output = safe(render.markdown_table(pr.result.columns, pr.result.rows, max_rows=15)
                                   if pr.result.ok else f"**{pr.result.error}**")
                step.is_error = not pr.result.ok
        run.output = f"{sum(pr.result.ok for pr in results)} of {len(results)} panels ran"
    for i, pr in enumerate(results):
        if pr.figure is not None:
            elements.append(plotly(pr.figure, f"panel-{i + 1}"))
        elif pr.result.ok:
            tables.append(f"**{pr.panel.title}**\n\n" + render.markdown_table(pr.result.columns, pr.result.rows,
                                                                               max_rows=10))
        elif not pr.result.ok:
            tables.append(f"**{pr.panel.title}** did not run: {render.cell(pr.result.error, 300)}")
    body = (f"### Dashboard: {board.name}\nService **{board.service}**, {window.label()}, "
            f"{len(board.panels)} panels, saved — `/dashboard open {board.name}` re-runs it on fresh data.")
    if planned is not None:
        body += "\n\n" + render.plan_notes_markdown(planned)
    if tables:
        body += "\n\n" + "\n\n".join(tables)
    await cl.Message(content=safe(body), elements=elements).send()


async def list_dashboards() -> None:
    boards = await asyncio.to_thread(dashboards.list_dashboards, RT.store)
    if not boards:
        await cl.Message(content="No saved dashboards yet: try `/dashboard checkout`.").send()
        return
    rows = [dashboards.describe(b) for b in boards]
    actions = [cl.Action(name="open_dashboard", payload={"name": b.name}, label=f"Open {b.name}") for b in boards[:10]]
    await cl.Message(content=safe("**Saved dashboards**\n\n" + render.markdown_table(list(rows[0]), rows)),
                     actions=actions).send()
