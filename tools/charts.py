"""Charts from tool results: the figure type follows the data's shape; PNGs for places that show images.

time + numbers -> line (one line per category when there is a small category column);
category + number -> bar; two categories + number -> heatmap; two numbers -> scatter.
A tool may hint its preferred view in `details['chart'] = {x, y, kind}`. Axis titles carry units
(from `ToolResult.units`, else from the column name: `_ms` -> ms, `_pct` -> %, `_per_s` -> /s).
"""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import json
import threading
import warnings
from typing import Any

import plotly.graph_objects as go

from tools.result import ToolResult

MAX_BARS = 40
MAX_SERIES = 12
MAX_GANTT_SPANS = 200
_SUFFIX_UNITS = [
    ("_ms", "ms"), ("_ns", "ns"), ("_seconds", "s"), ("_s", "s"), ("_pct", "%"), ("_percent", "%"),
    ("_per_s", "/s"), ("_per_min", "/min"), ("_bytes", "bytes"), ("_ratio", "x"),
]
_SUFFIX_UNITS.sort(key=lambda su: len(su[0]), reverse=True)  # '_per_s' before '_s'


def unit_of(column: str, units: dict[str, str] | None = None) -> str:
    if units and column in units:
        return units[column]
    for suffix, unit in _SUFFIX_UNITS:
        if column.endswith(suffix):
            return unit
    return ""


def axis_label(column: str, units: dict[str, str] | None = None) -> str:
    """'p95_ms' -> 'p95 (ms)', 'error_pct' -> 'error (%)', 'calls' -> 'calls'."""
    unit = unit_of(column, units)
    base = column
    for suffix, u in _SUFFIX_UNITS:
        if u == unit and column.endswith(suffix):
            base = column[: -len(suffix)]
            break
    base = base.replace("_", " ").strip() or column
    return f"{base} ({unit})" if unit else base


def _is_time(value: Any) -> bool:  # noqa: ANN401
    if isinstance(value, (dt.datetime, dt.date)):
        return True
    if isinstance(value, str) and len(value) >= 10 and value[4:5] == "-" and value[7:8] == "-":
        try:
            dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            return True
        except ValueError:
            return False
    return False


def _is_number(value: Any) -> bool:  # noqa: ANN401
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def classify(result: ToolResult) -> dict[str, list[str]]:
    """Columns by kind from their non-null values: 'time', 'number', 'category' (others ignored)."""
    kinds: dict[str, list[str]] = {"time": [], "number": [], "category": []}
    sample = result.rows[:200]
    for col in result.columns:
        values = [r.get(col) for r in sample if r.get(col) is not None]
        if not values:
            continue
        if all(_is_time(v) for v in values):
            kinds["time"].append(col)
        elif all(_is_number(v) for v in values):
            kinds["number"].append(col)
        elif all(isinstance(v, (str, bool)) for v in values):
            kinds["category"].append(col)
    return kinds


def _distinct(result: ToolResult, col: str) -> list[Any]:
    seen: dict[Any, None] = {}
    for r in result.rows:
        seen.setdefault(r.get(col), None)
    return list(seen)


def _line(result: ToolResult, x: str, ys: list[str], series: str | None) -> go.Figure:
    fig = go.Figure()
    rows = sorted(result.rows, key=lambda r: str(r.get(x)))
    if series:
        for name in _distinct(result, series)[:MAX_SERIES]:
            pts = [r for r in rows if r.get(series) == name]
            fig.add_trace(go.Scatter(x=[r[x] for r in pts], y=[r.get(ys[0]) for r in pts], mode="lines+markers",
                                     name=plain(name)))
    else:
        for y in ys[:4]:
            fig.add_trace(go.Scatter(x=[r[x] for r in rows], y=[r.get(y) for r in rows], mode="lines+markers",
                                     name=plain(axis_label(y, result.units))))
    return fig


def _bar(result: ToolResult, x: str, y: str) -> go.Figure:
    rows = [r for r in result.rows if r.get(y) is not None]
    if len(rows) > MAX_BARS:
        rows = sorted(rows, key=lambda r: r[y], reverse=True)[:MAX_BARS]
    # several rows per category (e.g. per operation): keep the largest value per category
    best: dict[str, float] = {}
    for r in rows:
        key = str(r.get(x))
        best[key] = max(best.get(key, r[y]), r[y])
    return go.Figure(go.Bar(x=[plain(k) for k in best], y=list(best.values())))


def _heatmap(result: ToolResult, x: str, y: str, z: str) -> go.Figure:
    xs = [str(v) for v in _distinct(result, x)][:MAX_BARS]
    ys = [str(v) for v in _distinct(result, y)][:MAX_BARS]
    grid: list[list[float | None]] = [[None] * len(xs) for _ in ys]
    for r in result.rows:
        sx, sy = str(r.get(x)), str(r.get(y))
        if sx in xs and sy in ys and r.get(z) is not None:
            grid[ys.index(sy)][xs.index(sx)] = r[z]
    return go.Figure(go.Heatmap(x=[plain(v) for v in xs], y=[plain(v) for v in ys], z=grid,
                                colorbar={"title": {"text": plain(axis_label(z, result.units))}}))


def _gantt(result: ToolResult, title: str | None) -> go.Figure | None:
    """A trace waterfall: one horizontal bar per span from its start offset, critical path darker."""
    needed = {"offset_ms", "duration_ms", "service", "operation"}
    if not needed <= set(result.columns):
        return None
    rows = result.rows[:MAX_GANTT_SPANS]
    labels = [plain(f"{'  ' * int(r.get('depth') or 0)}{r['service']} {r['operation']}  #{i}")
              for i, r in enumerate(rows)]
    colors = ["#c0392b" if r.get("status") in ("Error", "STATUS_CODE_ERROR") else
              "#1f4e79" if r.get("critical") else "#7fa7d1" for r in rows]
    fig = go.Figure(go.Bar(y=labels, x=[r["duration_ms"] for r in rows], base=[r["offset_ms"] for r in rows],
                           orientation="h", marker={"color": colors}))
    fig.update_layout(
        title={"text": plain(title or f"Trace waterfall: {len(result.rows)} spans (ms since the trace began)")},
        xaxis_title={"text": axis_label("offset_ms", result.units).replace("offset", "time since trace start")},
        yaxis_title={"text": "span"},
        yaxis={"autorange": "reversed"},
        height=max(300, 22 * len(rows) + 120),
        margin={"l": 60, "r": 20, "t": 60, "b": 60},
    )
    fig.layout.meta = {"chart_kind": "gantt", "tool": result.name}
    return fig


def chart_for(result: ToolResult, title: str | None = None) -> go.Figure | None:
    """A Plotly figure for `result` chosen by the shape of its rows, or None when nothing fits."""
    if not result.ok or not result.rows:
        return None
    kinds = classify(result)
    times, nums, cats = kinds["time"], kinds["number"], kinds["category"]
    hint = result.details.get("chart") if isinstance(result.details.get("chart"), dict) else None
    fig: go.Figure | None = None
    x = y = None
    if hint and hint.get("kind") == "gantt":
        return _gantt(result, title)
    if hint and hint.get("x") in cats and hint.get("y") in nums and not times:
        x, y = hint["x"], hint["y"]
        fig, kind = _bar(result, x, y), "bar"
    elif times and nums:
        small = [c for c in cats if len(_distinct(result, c)) <= MAX_SERIES]
        x, y = times[0], nums[0]
        fig, kind = _line(result, x, nums, small[0] if small else None), "line"
    elif len(cats) >= 2 and nums:
        x, y = cats[0], cats[1]
        fig, kind = _heatmap(result, cats[0], cats[1], nums[0]), "heatmap"
    elif cats and nums:
        x, y = cats[0], nums[0]
        fig, kind = _bar(result, x, y), "bar"
    elif len(nums) >= 2:
        x, y = nums[0], nums[1]
        fig = go.Figure(go.Scatter(x=[r.get(x) for r in result.rows], y=[r.get(y) for r in result.rows],
                                   mode="markers"))
        kind = "scatter"
    if fig is None or x is None or y is None:
        return None
    # titled in words a person uses: what is shown and its unit, never the tool that produced it
    default_title = f"{axis_label(y, result.units)} by {axis_label(x, result.units)}"
    if kind == "line" and len(nums) > 1 and not any(len(_distinct(result, c)) <= MAX_SERIES for c in cats):
        default_title = ", ".join(axis_label(n, result.units) for n in nums[:4]) + " over time"
    fig.update_layout(
        title={"text": plain(title or default_title)},
        xaxis_title={"text": plain(axis_label(x, result.units))},
        yaxis_title={"text": plain(axis_label(y, result.units) if kind != "line" or len(nums) == 1 or cats
                                   else unit_of(y, result.units) or "value")},
        margin={"l": 60, "r": 20, "t": 60, "b": 60},
    )
    fig.layout.meta = {"chart_kind": kind, "tool": result.name}
    return fig


TEMPLATE = "plotly_white"


@functools.cache
def _template_text() -> str:
    return json.dumps(json.loads(go.Figure().update_layout(template=TEMPLATE).to_json())["layout"]["template"])


def figure_json(fig: go.Figure) -> dict[str, Any]:
    """A chart as the JSON an answer carries, in the charts' template. The template is added to the JSON, not
    set on the figure: setting it deep-copies and validates it, 15 ms of an answer's time per chart."""
    data = json.loads(fig.to_json())
    data.setdefault("layout", {})["template"] = json.loads(_template_text())  # in place of Plotly's default
    return data


def styled(fig: go.Figure) -> go.Figure:
    """A chart drawn as a figure (the chat's own), in the charts' template."""
    return fig.update_layout(template=TEMPLATE)


def plain(text: object) -> str:
    """Telemetry text for a Plotly label: Plotly reads a few HTML tags (<a>, <b>, <br>) in labels, so
    `<`, `>` and `&` become entities and show as themselves (a span name cannot add a link)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _layout(fig: go.Figure, title: str, x_title: str, y_title: str, kind: str, **extra: Any) -> go.Figure:  # noqa: ANN401
    fig.update_layout(title={"text": plain(title)}, xaxis_title={"text": plain(x_title)},
                      yaxis_title={"text": plain(y_title)},
                      margin={"l": 60, "r": 20, "t": 60, "b": 60}, **extra)
    fig.layout.meta = {"chart_kind": kind}
    return fig


def bar_chart(categories: list[str], values: list[float | None], title: str, y_title: str,
              x_title: str = "") -> go.Figure:
    """Bars in the given order (a ranking reads top to bottom as left to right); labels escaped."""
    cats = [plain(c) for c in categories[:MAX_BARS]]
    return _layout(go.Figure(go.Bar(x=cats, y=values[:MAX_BARS])), title, x_title, y_title, "bar")


def line_chart(times: list[Any], series: dict[str, list[float | None]], title: str, y_title: str) -> go.Figure:
    """One line per named series over shared times (UTC)."""
    fig = go.Figure()
    for name, values in list(series.items())[:MAX_SERIES]:
        fig.add_trace(go.Scatter(x=times, y=values, mode="lines+markers", name=plain(name), connectgaps=False))
    return _layout(fig, title, "time (UTC)", y_title, "line", showlegend=len(series) > 1)


def graph_chart(edges: list[tuple[str, str, str]], title: str) -> go.Figure:
    """Who calls whom, drawn: services left to right by call depth (callers before callees), one line per
    edge with an arrow, `edges` as (caller, callee, hover text)."""
    nodes = sorted({e[0] for e in edges} | {e[1] for e in edges})
    callees: dict[str, set[str]] = {n: set() for n in nodes}
    for caller, callee, _ in edges:
        if caller != callee:
            callees[caller].add(callee)
    depth = {n: 0 for n in nodes}
    for _ in range(len(nodes)):  # longest path from a root, bounded (cycles stop growing after n rounds)
        changed = False
        for caller in nodes:
            for callee in callees[caller]:
                if depth[callee] < depth[caller] + 1 and depth[caller] + 1 < len(nodes):
                    depth[callee] = depth[caller] + 1
                    changed = True
        if not changed:
            break
    layers: dict[int, list[str]] = {}
    for n in nodes:
        layers.setdefault(depth[n], []).append(n)
    pos = {n: (float(d), float(i) - (len(members) - 1) / 2) for d, members in layers.items()
           for i, n in enumerate(members)}
    fig = go.Figure()
    for caller, callee, hover in edges:
        (x0, y0), (x1, y1) = pos[caller], pos[callee]
        fig.add_trace(go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", line={"width": 1.5, "color": "#7fa7d1"},
                                 hoverinfo="text", text=[plain(hover)] * 2, showlegend=False))
        fig.add_annotation(x=x1, y=y1, ax=x0, ay=y0, xref="x", yref="y", axref="x", ayref="y", showarrow=True,
                           arrowhead=3, arrowsize=1.2, standoff=14, arrowcolor="#1f4e79", text="")
    fig.add_trace(go.Scatter(x=[pos[n][0] for n in nodes], y=[pos[n][1] for n in nodes], mode="markers+text",
                             text=[plain(n) for n in nodes], textposition="top center",
                             marker={"size": 18, "color": "#1f4e79"}, hoverinfo="text", showlegend=False))
    fig = _layout(fig, title, "", "", "graph", height=max(360, 70 * max(len(m) for m in layers.values()) + 120))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


_render_lock = threading.Lock()
_server_started = False
_render_broken = False


class ChartRenderError(RuntimeError):
    """PNG rendering failed or took too long (no Chromium, a stuck browser): callers show no image."""


RENDER_TIMEOUT_S = 90.0


def render_png(fig: go.Figure, width: int = 900, height: int = 500, timeout: float = RENDER_TIMEOUT_S) -> bytes:
    """PNG bytes through kaleido and the local Chromium. The first call starts one browser that later
    calls reuse (~4 s once, then fast); it is stopped at exit. Keep this off request hot paths.

    Rendering runs in a worker thread so that a browser that never answers costs `timeout` seconds and
    a ChartRenderError, not a hung caller; after that every call fails fast."""
    global _render_broken
    if _render_broken:
        raise ChartRenderError("PNG rendering is unavailable: an earlier render timed out")
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["png"] = _render(fig, width, height)
        except Exception as exc:  # reported to the caller below
            result["error"] = exc

    worker = threading.Thread(target=work, name="otel-ai-png", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        _render_broken = True
        raise ChartRenderError(f"PNG rendering did not finish in {timeout:.0f} s (is chromium installed?)")
    if "error" in result:
        raise ChartRenderError(f"PNG rendering failed: {result['error']}") from result["error"]
    return result["png"]


def _render(fig: go.Figure, width: int, height: int) -> bytes:
    import kaleido

    global _server_started
    with _render_lock:
        if not _server_started:
            kaleido.start_sync_server(silence_warnings=True)
            atexit.register(kaleido.stop_sync_server, silence_warnings=True)
            _server_started = True
        with warnings.catch_warnings():  # plotly notes that per-call browser options are ignored by the server
            warnings.filterwarnings("ignore", message="The kopts argument is ignored")
            return fig.to_image(format="png", width=width, height=height)
