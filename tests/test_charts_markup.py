"""Telemetry in a chart is text: Plotly reads `<a href>`, `<b>`, `<br>` ... in titles, tick labels and
legends, so a span or service named `<a href="https://evil.example/">` became a live outside link in
the chart of a /sql result, a trace waterfall or a diagnosis chart whose title names a service. Each
figure the chat shows is drawn here by plotly.js in headless Chromium, offline, and searched for links."""

from __future__ import annotations

import datetime as dt
from typing import Any

import plotly.graph_objects as go
import pytest

from chat.web.render import waterfall_figure
from tools.charts import bar_chart, chart_for, line_chart
from tools.result import ToolResult

pytestmark = [pytest.mark.browser, pytest.mark.slow]

EVIL = '<a href="https://evil.example/x">click</a><b>bold</b>'
T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def result(columns: list[str], rows: list[dict[str, Any]], **kw: Any) -> ToolResult:  # noqa: ANN401
    return ToolResult.build("sql", {}, [], columns, rows, **kw)


FIGURES = {
    "bar of a /sql result": lambda: chart_for(result(["op", "n"], [{"op": EVIL, "n": 3}, {"op": "ok", "n": 1}])),
    "lines per service": lambda: chart_for(result(["t", "svc", "n"], [
        {"t": T0 + dt.timedelta(minutes=i), "svc": svc, "n": i} for i in range(3) for svc in (EVIL, "ok")])),
    "heatmap": lambda: chart_for(result(["a", "b", "n"], [{"a": EVIL, "b": EVIL, "n": 1},
                                                          {"a": "x", "b": "y", "n": 2}])),
    "column named by the query": lambda: chart_for(result([EVIL, "n"], [{EVIL: "a", "n": 1}])),
    "gantt": lambda: chart_for(ToolResult.build(
        "trace_waterfall", {}, [], ["service", "operation", "offset_ms", "duration_ms"],
        [{"service": EVIL, "operation": "op", "offset_ms": 0, "duration_ms": 5}],
        details={"chart": {"kind": "gantt"}})),
    "title naming a service": lambda: chart_for(result(["op", "n"], [{"op": "a", "n": 3}]), title=f"Traces of {EVIL}"),
    "diagnosis bar title": lambda: bar_chart(["a"], [1.0], f"Error rate of {EVIL}", "%", "service"),
    "diagnosis line title": lambda: line_chart([T0], {"p95": [1.0]}, f"p95 of {EVIL} over time", "ms"),
    "chat waterfall": lambda: waterfall_figure({"trace_id": "ab" * 16, "spans": [
        {"service": EVIL, "name": "GET /", "start": 0, "duration": 3}]}),
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_chart_shows_telemetry_markup_as_text(chromium: Any, name: str) -> None:  # noqa: ANN401
    fig = FIGURES[name]()
    assert isinstance(fig, go.Figure)
    page = chromium.new_page()
    try:
        page.route("**/*", lambda route: route.abort() if route.request.url.startswith("http") else route.continue_())
        page.set_content(fig.to_html(include_plotlyjs=True, full_html=True))
        page.wait_for_selector(".main-svg text")
        links = page.eval_on_selector_all("svg a", "els => els.map(e => e.outerHTML)")
        bold = page.eval_on_selector_all("svg tspan[style*='bold']", "els => els.length")
        text = page.eval_on_selector_all("svg text", "els => els.map(e => e.textContent).join(' ')")
    finally:
        page.close()
    assert links == [] and bold == 0, (links, bold)
    assert '<a href="https://evil.example/x">' in text  # shown as what it is
