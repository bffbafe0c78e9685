"""Resource metrics per service and instance (pod, service instance or host), window against baseline.

Nothing is assumed about metric names: every gauge and sum metric present is read; its category
(cpu, memory, gc, network, disk, queue, pool) comes from its name and unit, counters become rates, and
saturation is flagged from what the data says: a utilization ratio near 1 (or a % near 100), or a
value near a sibling metric that names its limit (`x.limit`, `x.max`, `x.capacity`).
"""

from __future__ import annotations

import re
from typing import Any

from store import Store
from tools.common import in_either, in_window, logged_query, run_tool, tool_args
from tools.result import ToolResult
from tools.sql import literal
from tools.timewindow import TimeWindow

INSTANCE = (
    "coalesce(nullIf(ResourceAttributes['k8s.pod.name'], ''), nullIf(ResourceAttributes['service.instance.id'], ''),"
    " nullIf(ResourceAttributes['host.name'], ''), nullIf(ResourceAttributes['container.id'], ''), '')"
)
CATEGORIES = [
    ("gc", re.compile(r"(^|[._])gc([._]|$)|garbage", re.I)),
    ("cpu", re.compile(r"cpu|processor", re.I)),
    ("memory", re.compile(r"mem|heap|rss|resident", re.I)),
    ("queue", re.compile(r"queue|backlog|pending|lag|in_?flight|waiting", re.I)),
    ("pool", re.compile(r"pool|connection|conns?\b|thread|worker|semaphore|goroutine", re.I)),
    ("network", re.compile(r"net|network|socket|tcp|bytes_(sent|recv)", re.I)),
    ("disk", re.compile(r"disk|filesystem|\bfs\b|\.io\.|_io_", re.I)),
]
LIMIT_WORDS = ("limit", "max", "capacity", "size_max")
# A series that rises steadily through the window (a leak, a filling queue): its rise from the first to
# the last point, and how straight that rise is (correlation of value with time over >= 4 points).
TREND = ("argMax(Value, TimeUnix) - argMin(Value, TimeUnix) AS rise, "
         "if(count() >= 4, corr(toFloat64(toUnixTimestamp64Milli(TimeUnix)), Value), NULL) AS trend")
STEADY_CORR = 0.9
GROWING = 0.2  # rose by at least 20% of its window average
SATURATED_RATIO = 0.9
MAX_ROWS = 2000


def category(metric: str, unit: str) -> str:
    for name, pattern in CATEGORIES:
        if pattern.search(metric):
            return name
    return "memory" if unit.lower() in ("by", "bytes", "mib", "kib") else "other"


def _rows_query(table: str, where: str, w: str) -> str:
    if table == "otel_metrics_gauge":
        series = f"""SELECT ServiceName AS service, {INSTANCE} AS instance, MetricName AS metric,
                any(MetricUnit) AS unit, 'gauge' AS kind, {w} AS in_w,
                avg(Value) AS v, max(Value) AS vmax, {TREND}
            FROM otel_metrics_gauge WHERE {where}
            GROUP BY service, instance, metric, Attributes, in_w"""
        combine = "avg"
    else:
        kind = ("multiIf(IsMonotonic AND AggregationTemporality = 2, 'counter', "
                "IsMonotonic, 'delta', 'updown')")
        series = f"""SELECT ServiceName AS service, {INSTANCE} AS instance, MetricName AS metric,
                any(MetricUnit) AS unit, {kind} AS kind, {w} AS in_w,
                multiIf(kind = 'counter', if(count() > 1, greatest(argMax(Value, TimeUnix) - argMin(Value, TimeUnix), 0)
                            / greatest(dateDiff('millisecond', min(TimeUnix), max(TimeUnix)) / 1000, 0.001), NULL),
                        kind = 'delta', sum(Value), avg(Value)) AS v,
                if(kind = 'updown', max(Value), v) AS vmax, {TREND}
            FROM otel_metrics_sum WHERE {where}
            GROUP BY service, instance, metric, Attributes, kind, in_w"""
        combine = "sum"
    return f"""SELECT service, instance, metric, any(unit) AS unit, kind,
            {combine}If(v, in_w) AS value, max(if(in_w, vmax, NULL)) AS max,
            {combine}If(v, NOT in_w) AS base_value, max(if(NOT in_w, vmax, NULL)) AS base_max,
            countIf(in_w) AS series, countIf(NOT in_w) AS base_series,
            max(if(in_w AND trend >= {STEADY_CORR}, rise / nullIf(abs(v), 0), NULL)) AS growth
        FROM ({series}) GROUP BY service, instance, metric, kind LIMIT {MAX_ROWS}"""


def _limit_of(row: dict[str, Any], by_name: dict[tuple[str, str, str], dict[str, Any]]) -> float | None:
    """A sibling metric naming this one's limit: `db.pool.used` -> `db.pool.max` / `db.pool.limit`."""
    m = re.match(r"^(.*?)[._]?([A-Za-z]+)$", row["metric"])
    if not m or m.group(2).lower() in LIMIT_WORDS:
        return None
    prefix = m.group(1)
    for word in LIMIT_WORDS:
        for sep in (".", "_"):
            sib = by_name.get((row["service"], row["instance"], f"{prefix}{sep}{word}"))
            if sib and sib["value"]:
                return float(sib["value"])
    return None


def _flag(row: dict[str, Any]) -> str:
    unit = row["unit"].lower()
    peak = row["max"] if row["max"] is not None else row["value"]
    if row.get("limit_ratio") is not None and row["limit_ratio"] >= SATURATED_RATIO:
        return "saturated"
    if peak is not None and row["kind"] != "counter":
        is_ratio = unit == "1" or re.search(r"utili[sz]ation|ratio", row["metric"], re.I)
        if is_ratio and unit != "%" and SATURATED_RATIO <= peak <= 1.5:
            return "saturated"
        if unit == "%" and peak >= SATURATED_RATIO * 100:
            return "saturated"
    if row["kind"] != "counter" and (row.get("growth_pct") or 0) >= GROWING * 100:
        return "growing"
    change = row.get("change")
    if change is not None and change >= 1.5:
        return "increased"
    if row["base_value"] in (None, 0) and row["value"]:
        if row["base_series"] == 0:
            return "new"
        # from zero: only a sustained level counts, not a blip (average well below the peak)
        return "increased" if peak is None or row["value"] >= 0.5 * peak else ""
    if change is not None and change <= 0.5:
        return "decreased"
    return ""


def resource_metrics(
    store: Store, window: TimeWindow, baseline: TimeWindow | None = None, service: str | None = None
) -> ToolResult:
    """Every gauge/sum metric per service and instance: window value (avg for gauges and up-down sums,
    per-second rate for counters) against the baseline, category by name, saturation flagged."""
    baseline = baseline or window.baseline()
    name = "resource_metrics"
    args = tool_args(window=window, baseline=baseline, service=service)

    def body(sql: list[str]) -> ToolResult:
        flt = f" AND ServiceName = {literal(service)}" if service else ""
        where = in_either(window, baseline, "TimeUnix") + flt
        w = in_window(window, "TimeUnix")
        raw = []
        for table in ("otel_metrics_gauge", "otel_metrics_sum"):
            raw += logged_query(sql, store, _rows_query(table, where, w)).dicts()
        if not raw:
            return ToolResult.build(name, args, sql, [], [], notes=[
                f"no gauge or sum metrics{' for ' + service if service else ''} in {baseline.label()} – "
                f"{window.label()}"])
        rows = []
        for r in raw:
            unit = r["unit"] or ""
            row = {
                "service": r["service"], "instance": r["instance"], "metric": r["metric"],
                "unit": unit + ("/s" if r["kind"] in ("counter", "delta") else ""),
                "kind": r["kind"], "category": category(r["metric"], unit),
                "value": _round(r["value"]) if r["series"] else None, "max": _round(r["max"]),
                "base_value": _round(r["base_value"]) if r["base_series"] else None, "base_max": _round(r["base_max"]),
                "base_series": int(r["base_series"]),
            }
            if r["kind"] == "counter":  # a per-series maximum of rates means little next to their sum
                row["max"] = row["base_max"] = None
            if r["kind"] == "delta":
                row["value"] = _round(row["value"] / window.seconds) if row["value"] is not None else None
                row["base_value"] = (_round(row["base_value"] / baseline.seconds)
                                     if row["base_value"] is not None else None)
                row["max"] = row["value"]
                row["base_max"] = row["base_value"]
            row["growth_pct"] = _round(100 * r["growth"]) if r["growth"] is not None else None
            row["change"] = (_round(row["value"] / row["base_value"])
                             if row["value"] is not None and row["base_value"] else None)
            rows.append(row)
        by_name = {(r["service"], r["instance"], r["metric"]): r for r in rows}
        for row in rows:
            limit = _limit_of(row, by_name)
            row["limit_ratio"] = _round((row["max"] or row["value"] or 0) / limit) if limit else None
            row["flag"] = _flag(row)
            del row["base_series"]
        order = {"saturated": 0, "growing": 1, "increased": 2, "new": 3, "decreased": 4, "": 5}
        rows.sort(key=lambda r: (order[r["flag"]], -(r["change"] or 0), r["service"], r["metric"]))
        findings = [f"{len(rows)} metric series groups ({len({r['metric'] for r in rows})} metric names) in "
                    f"{window.label()} vs baseline {baseline.label()}"]
        for r in rows[:10]:
            if not r["flag"]:
                break
            extra = f", {r['limit_ratio']:.0%} of its limit" if r["limit_ratio"] is not None else ""
            findings.append(
                f"[{r['flag']}] {r['service']} {r['instance'] or '-'} {r['metric']} ({r['category']}): "
                f"{_fmt(r['value'])} {r['unit']} (max {_fmt(r['max'])}) vs baseline {_fmt(r['base_value'])}{extra}")
        return ToolResult.build(
            name, args, sql, list(rows[0].keys()), rows, findings=findings,
            units={"change": "x", "growth_pct": "%"},
            details={"chart": {"x": "metric", "y": "change", "kind": "bar"}},
            table_columns=["service", "instance", "metric", "unit", "value", "base_value", "max", "flag"],
        )

    return run_tool(name, args, body)


def _round(v: float | None) -> float | None:
    """Rows keep full precision (the summary shortens numbers); only NaN-free floats."""
    return None if v is None else float(v)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"
