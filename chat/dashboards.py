"""Dashboards built for one service from what its telemetry contains, saved by name and re-run.

"build me a dashboard for checkout" (or `/dashboard checkout`) plans panels by looking at the data:
RED over time and latency percentiles always; latency by operation when the service has several;
where the time goes downstream when it calls other services; top errors when it fails; anomalies
and error logs when there are any. A panel is guarded SQL with a `{window}` placeholder (or the
anomalies tool), so a saved dashboard re-runs on fresh data: the window is chosen at run time.
Every query goes through `tools.sql.run_sql`, the same guard as the agent and the SQL console.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import plotly.graph_objects as go
from pydantic import BaseModel, Field

from chat.versioned import latest, write
from store import Store
from tools.result import ToolResult
from tools.sql import query, run_sql
from tools.timewindow import TimeWindow

DEFAULT_MINUTES = 60
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/-]{0,79}$")


class DashboardError(ValueError):
    """A dashboard request that cannot be served (unknown service, bad name), with the reason."""


class Panel(BaseModel):
    """One chart: guarded SQL over `{window}` (a time filter on Timestamp), or a named tool."""

    title: str
    sql: str | None = None
    tool: Literal["anomalies", "latency_breakdown"] | None = None
    chart: Literal["line", "bar", "table"] = "line"
    why: str = ""


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


def sql_string(value: str) -> str:
    """A ClickHouse string literal (service names come from users and from telemetry)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _exists(store: Store, sql: str) -> bool:
    try:
        return bool(query(store, sql).scalar())
    except Exception:
        return False


def known_services(store: Store) -> list[str]:
    return [r[0] for r in query(store, "SELECT DISTINCT ServiceName FROM otel_traces ORDER BY ServiceName LIMIT 500")]


def plan_dashboard(store: Store, service: str, name: str | None = None, minutes: int = DEFAULT_MINUTES,
                   created_by: str = "") -> Dashboard:
    """Choose the panels for `service` from what its telemetry holds (no fixed service names)."""
    services = known_services(store)
    match = next((s for s in services if s.lower() == service.lower()), None)
    if match is None:
        close = [s for s in services if service.lower() in s.lower()]
        if len(close) == 1:
            match = close[0]
        else:
            raise DashboardError(
                f"no service named {service!r} in the traces; known services: {', '.join(services) or 'none yet'}"
            )
    svc = sql_string(match)
    entry = (f"ServiceName = {svc} AND SpanKind IN ('Server', 'Consumer')"
             if _exists(store, f"SELECT count() > 0 FROM otel_traces WHERE ServiceName = {svc} "
                               "AND SpanKind IN ('Server', 'Consumer')")
             else f"ServiceName = {svc}")
    panels = [
        Panel(title=f"{match}: requests and errors per minute", chart="line", why="rate and errors (RED)",
              sql=f"SELECT toStartOfMinute(Timestamp) AS minute, count() AS requests, "
                  f"countIf(StatusCode = 'Error') AS errors FROM otel_traces WHERE {entry} AND {{window}} "
                  f"GROUP BY minute ORDER BY minute"),
        Panel(title=f"{match}: latency percentiles (ms)", chart="line", why="duration (RED)",
              sql=f"SELECT toStartOfMinute(Timestamp) AS minute, "
                  f"round(quantile(0.5)(Duration) / 1e6, 2) AS p50_ms, round(quantile(0.95)(Duration) / 1e6, 2) "
                  f"AS p95_ms, round(quantile(0.99)(Duration) / 1e6, 2) AS p99_ms FROM otel_traces "
                  f"WHERE {entry} AND {{window}} GROUP BY minute ORDER BY minute"),
    ]
    operations = query(store, f"SELECT uniqExact(SpanName) FROM otel_traces WHERE {entry}").scalar() or 0
    if operations > 1:
        panels.append(Panel(
            title=f"{match}: p95 latency by operation (ms)", chart="bar", why=f"{operations} operations",
            sql=f"SELECT SpanName AS operation, round(quantile(0.95)(Duration) / 1e6, 2) AS p95_ms, "
                f"count() AS calls FROM otel_traces WHERE {entry} AND {{window}} "
                f"GROUP BY operation ORDER BY p95_ms DESC LIMIT 15"))
    downstream = (f"SELECT c.ServiceName AS service, c.SpanName AS operation, "
                  f"round(quantile(0.95)(c.Duration) / 1e6, 2) AS p95_ms, count() AS calls "
                  f"FROM otel_traces AS c INNER JOIN (SELECT TraceId, SpanId FROM otel_traces "
                  f"WHERE ServiceName = {svc} AND {{window}}) AS p ON c.TraceId = p.TraceId "
                  f"AND c.ParentSpanId = p.SpanId WHERE c.ServiceName != {svc} AND c.{{window}} "
                  f"GROUP BY service, operation ORDER BY p95_ms DESC LIMIT 15")
    panels.append(Panel(title=f"{match}: latency breakdown — self time in slow vs normal traces", chart="bar",
                        tool="latency_breakdown", why="which service and operation the slow requests spend time in"))
    if _exists(store, f"SELECT count() > 0 FROM otel_traces WHERE ServiceName = {svc} AND SpanKind = 'Client'"):
        panels.append(Panel(title=f"{match}: where the time goes — downstream calls (p95 ms)", chart="bar",
                            why="it calls other services", sql=downstream))
    if _exists(store, f"SELECT count() > 0 FROM otel_traces WHERE ServiceName = {svc} AND StatusCode = 'Error'"):
        panels.append(Panel(
            title=f"{match}: top errors", chart="table", why="it has failed spans",
            sql=f"SELECT SpanName AS operation, StatusMessage AS message, count() AS errors, "
                f"max(Timestamp) AS last_seen FROM otel_traces WHERE ServiceName = {svc} "
                f"AND StatusCode = 'Error' AND {{window}} GROUP BY operation, message ORDER BY errors DESC LIMIT 10"))
    if _exists(store, f"SELECT count() > 0 FROM otel_logs WHERE ServiceName = {svc} AND SeverityNumber >= 17"):
        panels.append(Panel(
            title=f"{match}: error logs per minute", chart="line", why="it logs errors",
            sql=f"SELECT toStartOfMinute(Timestamp) AS minute, count() AS error_logs FROM otel_logs "
                f"WHERE ServiceName = {svc} AND SeverityNumber >= 17 AND {{window}} GROUP BY minute ORDER BY minute"))
    if _exists(store, f"SELECT count() > 0 FROM anomalies WHERE service = {svc}"):
        panels.append(Panel(title=f"{match}: anomalies", chart="table", tool="anomalies",
                            why="the scorer flagged it"))
    return Dashboard(name=validate_name(name or match), service=match, minutes=minutes, panels=panels,
                     created_by=created_by)


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
                          f"{sql_string(dashboard.service)}").scalar()
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
        sql = panel.sql.replace("c.{window}", window.sql_filter("c.Timestamp")).replace(
            "{window}", window.sql_filter())
        result = run_sql(store, sql)
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
