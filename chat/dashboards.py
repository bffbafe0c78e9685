"""Dashboards for one service, planned by a model, saved by name and re-run on fresh data.

"build me a dashboard for checkout" (or `/dashboard checkout`) asks `agent.dashboard_planner` — the
model of the "sql" role, the built-in planner by default — which panels suit the service: RED over
time, latency percentiles, latency by operation, where the time goes downstream, top errors, error
logs, anomalies, and panels of the model's own as SQL. A panel is guarded SQL with a `{window}`
placeholder (or a named tool), so a saved dashboard re-runs on fresh data: the window is chosen at
run time. Every query goes through `tools.sql.run_sql`, the same guard as the agent and the SQL console.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import plotly.graph_objects as go
from pydantic import BaseModel, Field

from agent.dashboard_planner import (
    Panel,
    PlannedDashboard,
    builtin_plan,
    check_plan,
    fill_window,
    plan_dashboard_panels,
    service_facts,
)
from chat.versioned import latest, write
from otel_ai.settings import Settings
from store import Store
from tools.result import ToolResult
from tools.sql import literal, query, run_sql
from tools.timewindow import TimeWindow

DEFAULT_MINUTES = 60
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/-]{0,79}$")


class DashboardError(ValueError):
    """A dashboard request that cannot be served (unknown service, bad name), with the reason."""


class Dashboard(BaseModel):
    name: str
    service: str
    minutes: int = DEFAULT_MINUTES
    panels: list[Panel] = Field(default_factory=list)
    created_by: str = ""
    created_at: datetime | None = None


@dataclass
class PanelResult:
    panel: Panel
    result: ToolResult
    figure: go.Figure | None


def known_services(store: Store) -> list[str]:
    return [r[0] for r in query(store, "SELECT DISTINCT ServiceName FROM otel_traces ORDER BY ServiceName LIMIT 500")]


def resolve_service(store: Store, service: str) -> str:
    """The service's name as the traces spell it (case-insensitive, or the one name containing it)."""
    services = known_services(store)
    match = next((s for s in services if s.lower() == service.lower()), None)
    if match is None:
        close = [s for s in services if service.lower() in s.lower()]
        if len(close) != 1:
            raise DashboardError(
                f"no service named {service!r} in the traces; known services: {', '.join(services) or 'none yet'}"
            )
        match = close[0]
    return match


def plan_dashboard(store: Store, service: str, name: str | None = None, minutes: int = DEFAULT_MINUTES,
                   created_by: str = "") -> Dashboard:
    """The built-in (deterministic) plan for `service`, chosen from what its telemetry holds."""
    facts = service_facts(store, resolve_service(store, service))
    panels, _ = check_plan(builtin_plan(facts), facts, store.database)
    return Dashboard(name=validate_name(name or facts.service), service=facts.service, minutes=minutes,
                     panels=panels, created_by=created_by)


async def build_dashboard(store: Store, service: str, settings: Settings, name: str | None = None,
                          minutes: int = DEFAULT_MINUTES, created_by: str = "",
                          model: str | None = None) -> tuple[Dashboard, PlannedDashboard]:
    """A dashboard planned by the "sql" role's model (agent.dashboard_planner), with what it dropped and why."""
    import asyncio

    match = await asyncio.to_thread(resolve_service, store, service)
    board_name = validate_name(name or match)
    planned = await plan_dashboard_panels(store, match, settings, model=model)
    board = Dashboard(name=board_name, service=match, minutes=minutes, panels=planned.panels, created_by=created_by)
    return board, planned


def validate_name(name: str) -> str:
    name = " ".join(name.split())
    if not NAME_RE.match(name):
        raise DashboardError(
            f"bad dashboard name {name!r}: use up to 80 letters, digits, spaces and ._:/- (starting with a letter "
            "or digit)"
        )
    return name


def save_dashboard(store: Store, dashboard: Dashboard) -> Dashboard:
    """Save (or replace) a dashboard under its name."""
    saved = dashboard.model_copy(update={"created_at": dashboard.created_at or datetime.now(UTC)})
    write(store, "dashboards", {
        "name": saved.name, "service": saved.service, "created_at": saved.created_at,
        "created_by": saved.created_by, "spec": saved.model_dump_json(exclude={"created_at"}), "deleted": 0,
    })
    return saved


def list_dashboards(store: Store) -> list[Dashboard]:
    rows = latest(store, "dashboards", ["name", "spec", "created_at"], key="name", tail="ORDER BY name")
    return [Dashboard.model_validate({**json.loads(r["spec"]), "created_at": r["created_at"]}) for r in rows]


def get_dashboard(store: Store, name: str) -> Dashboard | None:
    rows = latest(store, "dashboards", ["name", "spec", "created_at"], "name = {name:String}", key="name", name=name)
    if not rows:
        return None
    return Dashboard.model_validate({**json.loads(rows[0]["spec"]), "created_at": rows[0]["created_at"]})


def delete_dashboard(store: Store, name: str) -> bool:
    found = get_dashboard(store, name)
    if found is None:
        return False
    write(store, "dashboards", {"name": name, "service": found.service, "created_at": found.created_at,
                                "created_by": found.created_by, "spec": "{}", "deleted": 1})
    return True


def dashboard_window(store: Store, dashboard: Dashboard, now: datetime | None = None) -> TimeWindow:
    """The last `minutes` up to now, or up to the service's latest span when its data is older (a replay)."""
    now = now or datetime.now(UTC)
    newest = query(store, f"SELECT max(Timestamp) FROM otel_traces WHERE ServiceName = "
                          f"{literal(dashboard.service)}").scalar()
    end = now
    if isinstance(newest, datetime):
        newest = newest if newest.tzinfo else newest.replace(tzinfo=UTC)
        if newest.year > 1970 and now - newest > timedelta(minutes=dashboard.minutes):
            end = newest + timedelta(seconds=1)
    return TimeWindow(start=end - timedelta(minutes=dashboard.minutes), end=end)


def _chart(panel: Panel, result: ToolResult) -> go.Figure | None:
    if panel.chart == "table" or not result.ok or not result.rows:
        return None
    from tools.charts import chart_for

    return chart_for(result, title=panel.title)


def run_panel(store: Store, panel: Panel, window: TimeWindow, service: str) -> PanelResult:
    if panel.tool == "anomalies":
        from tools.anomalies import find_anomalies

        result = find_anomalies(store, window, service=service)
    elif panel.tool == "latency_breakdown":
        from tools.traces import latency_breakdown

        result = latency_breakdown(store, window, service)
    else:
        assert panel.sql is not None
        result = run_sql(store, fill_window(panel.sql, window))
    return PanelResult(panel=panel, result=result, figure=_chart(panel, result))


def run_dashboard(store: Store, dashboard: Dashboard, now: datetime | None = None) -> tuple[TimeWindow,
                                                                                             list[PanelResult]]:
    """Run every panel on the current data (window chosen now), each through the SQL guard."""
    window = dashboard_window(store, dashboard, now)
    return window, [run_panel(store, p, window, dashboard.service) for p in dashboard.panels]


@dataclass
class DashboardRequest:
    action: Literal["build", "open", "list", "delete"]
    target: str = ""
    name: str | None = None


_NATURAL = re.compile(
    r"^\s*(?:please\s+)?(?:build|make|create|generate|give|show)\s+(?:me\s+)?(?:a\s+|an\s+)?(?:new\s+)?"
    r"dashboard\s+(?:for|of|on|about)\s+(?:the\s+)?([\w.:/-]+)(?:\s+service)?\s*[.!?]*\s*$",
    re.IGNORECASE,
)


def parse_request(text: str) -> DashboardRequest | None:
    """`/dashboards`, `/dashboard <service> [as <name>]`, `/dashboard open|delete <name>`, or plain English."""
    text = text.strip()
    if re.fullmatch(r"/dashboards|/dashboard\s+list|(?:list|show)\s+(?:my\s+|saved\s+)?dashboards\??", text,
                    re.IGNORECASE):
        return DashboardRequest("list")
    if text.lower().startswith("/dashboard"):
        rest = text[len("/dashboard"):].strip()
        verb, _, arg = rest.partition(" ")
        if verb.lower() in ("open", "run", "rerun") and arg.strip():
            return DashboardRequest("open", arg.strip())
        if verb.lower() == "delete" and arg.strip():
            return DashboardRequest("delete", arg.strip())
        if not rest:
            return DashboardRequest("list")
        parts = re.split(r"\s+as\s+", rest, maxsplit=1, flags=re.IGNORECASE)
        service = parts[0].strip()
        name = parts[1].strip() if len(parts) > 1 else None
        return DashboardRequest("build", service, name)
    if match := _NATURAL.match(text):
        return DashboardRequest("build", match.group(1))
    return None


def describe(dashboard: Dashboard) -> dict[str, Any]:
    return {"name": dashboard.name, "service": dashboard.service, "panels": len(dashboard.panels),
            "window": f"last {dashboard.minutes} min", "created_by": dashboard.created_by,
            "created_at": dashboard.created_at}
