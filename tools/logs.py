"""Log patterns: templates (drain3) that are new or growing in a window against a baseline, with traces.

ClickHouse does the heavy part: it masks numbers, ids and addresses and groups identical shapes
per service and severity over the window and the baseline in one scan; drain3 then merges the
distinct shapes (thousands, not millions of lines) into templates such as `user <*> logged in`.
"""

from __future__ import annotations

import logging
from typing import Any

from drain3 import TemplateMiner
from drain3.template_miner_config import TemplateMinerConfig

from store import Store
from store.severity import ERROR, SEVERITY, level_name
from tools.common import in_either, in_window, logged_query, run_tool, tool_args
from tools.result import ToolResult
from tools.sql import literal
from tools.timewindow import TimeWindow

# UUIDs, long hex ids (trace/span ids, hashes), IPv4 addresses and numbers become <*> before grouping.
MASK_RE = (
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|\b[0-9a-fA-F]*[0-9][0-9a-fA-F]*[a-fA-F][0-9a-fA-F]*\b|\b[0-9a-fA-F]*[a-fA-F][0-9a-fA-F]*[0-9][0-9a-fA-F]*\b"
    r"|\b[0-9a-fA-F]{12,}\b"
    r"|\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b|-?\b\d+(?:\.\d+)?\b"
)
MAX_SHAPES = 5000


def _miner() -> TemplateMiner:
    config = TemplateMinerConfig()
    config.profiling_enabled = False
    config.drain_sim_th = 0.5
    config.drain_depth = 4
    config.drain_max_children = 100
    logging.getLogger("drain3").setLevel(logging.WARNING)
    return TemplateMiner(config=config)


def _status(count: int, base: int, rate: float, base_rate: float) -> str:
    if count and not base:
        return "new"
    if base and not count:
        return "gone"
    if base_rate and rate >= 2 * base_rate and count >= 3:
        return "increased"
    if base_rate and rate <= 0.5 * base_rate:
        return "decreased"
    return "steady"


def log_patterns(
    store: Store, window: TimeWindow, baseline: TimeWindow | None = None, service: str | None = None
) -> ToolResult:
    """Log templates per service and severity with counts now vs the baseline ('new', 'increased', ...),
    error logs first, and example trace ids that link each template to traces."""
    baseline = baseline or window.baseline()
    name = "log_patterns"
    args = tool_args(window=window, baseline=baseline, service=service)

    def body(sql: list[str]) -> ToolResult:
        w = in_window(window)
        flt = f" AND ServiceName = {literal(service)}" if service else ""
        shapes = logged_query(sql, store, f"""SELECT ServiceName AS service, upper(SeverityText) AS severity,
                max({SEVERITY}) AS severity_number,
                replaceRegexpAll(leftUTF8(Body, 400), {literal(MASK_RE)}, '<*>') AS shape,
                countIf({w}) AS count, countIf(NOT {w}) AS base_count,
                groupUniqArrayIf(5)(TraceId, {w} AND TraceId != '') AS trace_ids,
                if(countIf({w}) > 0, anyIf(leftUTF8(Body, 300), {w}), any(leftUTF8(Body, 300))) AS example
            FROM otel_logs WHERE {in_either(window, baseline)}{flt}
            GROUP BY service, severity, shape ORDER BY count DESC LIMIT {MAX_SHAPES}""").dicts()
        if not shapes:
            source = f" from {service}" if service else ""
            return ToolResult.build(name, args, sql, [], [], notes=[
                f"no logs{source} in {baseline.start:%H:%M:%S}–{window.end:%H:%M:%S} UTC"])
        miner = _miner()
        groups: dict[tuple[str, str, int], dict[str, Any]] = {}
        cluster_of: list[int] = []
        for s in shapes:
            cluster_of.append(int(miner.add_log_message(s["shape"] or "<empty>")["cluster_id"]))
        templates = {c.cluster_id: c.get_template() for c in miner.drain.clusters}
        for s, cid in zip(shapes, cluster_of, strict=True):
            key = (s["service"], s["severity"], cid)
            g = groups.setdefault(key, {"count": 0, "base_count": 0, "severity_number": 0, "trace_ids": [],
                                        "example": s["example"]})
            g["count"] += int(s["count"])
            g["base_count"] += int(s["base_count"])
            g["severity_number"] = max(g["severity_number"], int(s["severity_number"]))
            g["trace_ids"] += [t for t in s["trace_ids"] if t not in g["trace_ids"]][: 5 - len(g["trace_ids"])]
        win_min, base_min = window.seconds / 60, baseline.seconds / 60
        rows = []
        for (svc, sev, cid), g in groups.items():
            rate, base_rate = g["count"] / win_min, g["base_count"] / base_min
            is_error = g["severity_number"] >= ERROR
            rows.append({
                "service": svc,
                "severity": sev or level_name(g["severity_number"]),
                "is_error": is_error,
                "template": templates.get(cid, ""),
                "count": g["count"],
                "base_count": g["base_count"],
                "per_min": round(rate, 3),
                "base_per_min": round(base_rate, 3),
                "change": round(rate / base_rate, 3) if base_rate else None,
                "status": _status(g["count"], g["base_count"], rate, base_rate),
                "trace_ids": g["trace_ids"],
                "example": g["example"],
            })
        urgency = {"new": 0, "increased": 1, "steady": 2, "decreased": 3, "gone": 4}
        rows.sort(key=lambda r: (not r["is_error"], urgency[r["status"]], -r["count"]))
        errors_now = sum(r["count"] for r in rows if r["is_error"])
        errors_before = sum(r["base_count"] for r in rows if r["is_error"])
        findings = [
            f"{sum(r['count'] for r in rows)} logs in {window.label()} ({errors_now} error-level) vs "
            f"{sum(r['base_count'] for r in rows)} in the baseline ({errors_before} error-level); "
            f"{len(rows)} templates",
        ]
        for r in rows[:8]:
            if r["is_error"] or (r["status"] in ("new", "increased") and r["count"] >= 3):
                findings.append(
                    f"[{r['status']}] {r['service']} {r['severity']} x{r['count']} (baseline {r['base_count']}): "
                    f"{r['template'][:160]}" + (f" traces: {', '.join(r['trace_ids'][:2])}" if r["trace_ids"] else ""))
        return ToolResult.build(
            name, args, sql, list(rows[0].keys()), rows, findings=findings,
            units={"per_min": "/min", "base_per_min": "/min", "change": "x"},
            table_columns=["service", "severity", "status", "count", "base_count", "template"],
            details={"chart": {"x": "template", "y": "count", "kind": "bar"}},
        )

    return run_tool(name, args, body)
