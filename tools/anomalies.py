"""Anomaly lookup: what the scorer (anomaly/) flagged in a window, and its ranked root-cause candidates.

Reads the `anomalies` table written by the scorer. A database where scoring never ran has no rows (or,
on an older schema, no table): that is reported plainly so the model moves on to the raw analytics.
"""

from __future__ import annotations

import json
from typing import Any

from store import Store
from tools.common import logged_query, run_tool, tool_args
from tools.result import ToolResult
from tools.sql import error_message, literal
from tools.timewindow import TimeWindow, ch_time

MAX_ENTITIES = 200


def _top_contributions(raw: str, n: int = 3) -> str:
    """'feature actual vs expected' for the largest contributions (JSON list from the scorer)."""
    try:
        items = json.loads(raw or "[]")
    except ValueError:
        return ""
    parts = []
    for c in items[:n] if isinstance(items, list) else []:
        if isinstance(c, dict):
            label = c.get("label") or c.get("feature") or "?"
            actual, expected = c.get("actual"), c.get("expected")
            parts.append(f"{label} {actual:.4g} vs {expected:.4g}" if isinstance(actual, (int, float))
                         and isinstance(expected, (int, float)) else str(label))
    return "; ".join(parts)


def find_anomalies(
    store: Store, window: TimeWindow, service: str | None = None, operation: str | None = None
) -> ToolResult:
    """Anomalies overlapping the window, one row per (service, operation, kind, detector), highest score
    first, with how many windows were flagged, first/last seen and the top explanation."""
    name = "find_anomalies"
    args = tool_args(window=window, service=service, operation=operation)

    def body(sql: list[str]) -> ToolResult:
        flt = (f" AND service = {literal(service)}" if service else "") + (
            f" AND operation = {literal(operation)}" if operation else "")
        try:
            rows = logged_query(sql, store, f"""SELECT service, operation, kind, detector, count() AS windows,
                    max(score) AS max_score, argMax(severity, score) AS severity, min(window_start) AS first_seen,
                    max(window_end) AS last_seen, argMax(explanation, score) AS explanation,
                    argMax(contributions, score) AS contributions
                FROM anomalies FINAL
                WHERE window_end > {ch_time(window.start)} AND window_start < {ch_time(window.end)}{flt}
                GROUP BY service, operation, kind, detector ORDER BY max_score DESC LIMIT {MAX_ENTITIES}""").dicts()
        except Exception as exc:
            if "UNKNOWN_TABLE" in str(exc) or "does not exist" in str(exc):
                return ToolResult.build(name, args, sql, [], [], notes=[
                    "no anomalies table in this database yet: anomaly scoring has not run here; "
                    "use service_overview, latency_breakdown and log_patterns instead"])
            raise
        for r in rows:
            r["max_score"] = round(float(r["max_score"]), 3)
            r["top_contributions"] = _top_contributions(r.pop("contributions"))
        if not rows:
            scope = f" for {service}{' ' + operation if operation else ''}" if service or operation else ""
            return ToolResult.build(name, args, sql, [], [], notes=[
                f"no anomalies{scope} in {window.label()} (the scorer flagged nothing, or has not scored it yet)"])
        findings = [f"{len(rows)} anomalous entities in {window.label()}"]
        findings += [
            f"{r['severity']} {r['service']} {r['operation'] or '(service)'} [{r['kind'] or r['detector']}] "
            f"score {r['max_score']} over {r['windows']} window(s): {r['explanation'][:200]}"
            for r in rows[:10]
        ]
        return ToolResult.build(
            name, args, sql, list(rows[0].keys()), rows, findings=findings,
            table_columns=["service", "operation", "kind", "severity", "max_score", "windows", "first_seen"],
            details={"chart": {"x": "service", "y": "max_score", "kind": "bar"}},
        )

    return run_tool(name, args, body)


def root_cause_candidates(store: Store, window: TimeWindow, evidence: list[Any] | None = None) -> ToolResult:
    """Services ranked as likely origins (anomaly.rootcause: anomalies + the call graph, weighed with the
    telemetry's per-service evidence; `evidence` when the caller already has it), best first."""
    name = "root_cause_candidates"
    args = tool_args(window=window)
    try:
        from anomaly.rootcause import rank_root_causes
    except ImportError:
        return ToolResult.build(name, args, [], [], [], notes=["root-cause ranking is not available in this build"])
    try:
        candidates = rank_root_causes(store, window.start, window.end, evidence=evidence)
    except Exception as exc:
        if "UNKNOWN_TABLE" in str(exc) or "does not exist" in str(exc):
            return ToolResult.build(name, args, [], [], [], notes=[
                "no anomalies table in this database yet: nothing to rank"])
        return ToolResult.failure(name, args, f"root-cause ranking failed: {error_message(exc)}")
    rows: list[dict[str, Any]] = []
    for rank, c in enumerate(candidates, 1):
        data = c.model_dump() if hasattr(c, "model_dump") else dict(vars(c))
        rows.append({"rank": rank, "service": data.get("service"), "operation": data.get("operation"),
                     "kind": data.get("kind"), "score": data.get("score"), "reason": data.get("reason", "")})
    if not rows:
        return ToolResult.build(name, args, [], [], [], notes=[
            f"no anomalies and no significant change in {window.label()}, so no root-cause candidates"])
    findings = [f"#{r['rank']} {r['service']} {r['operation'] or ''} ({r['kind']}, score {r['score']}): "
                f"{str(r['reason'])[:240]}" for r in rows[:5]]
    return ToolResult.build(name, args, [], list(rows[0].keys()), rows, findings=findings,
                            table_columns=["rank", "service", "operation", "kind", "score"])
