"""Charts: each data shape gets its chart type, titles and axis labels with units; PNG renders offline."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pytest

from tools.charts import TEMPLATE, axis_label, bar_chart, chart_for, figure_json, render_png, styled
from tools.result import ToolResult

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def result(columns: list[str], rows: list[dict], **kw) -> ToolResult:
    return ToolResult.build("sql", {}, [], columns, rows, **kw)


def test_time_series_is_a_line_per_category() -> None:
    rows = [{"t": T0 + dt.timedelta(minutes=i), "service": s, "p95_ms": float(i * (2 if s == "b" else 1))}
            for i in range(5) for s in ("a", "b")]
    fig = chart_for(result(["t", "service", "p95_ms"], rows))
    assert [tr.type for tr in fig.data] == ["scatter", "scatter"]
    assert {tr.name for tr in fig.data} == {"a", "b"} and all(tr.mode == "lines+markers" for tr in fig.data)
    assert list(fig.data[1].y) == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert fig.layout.yaxis.title.text == "p95 (ms)" and fig.layout.xaxis.title.text == "t"
    assert fig.layout.title.text


def test_time_series_from_iso_strings_with_several_numbers() -> None:
    rows = [{"minute": (T0 + dt.timedelta(minutes=i)).isoformat(), "calls": i, "error_pct": i / 10} for i in range(4)]
    fig = chart_for(result(["minute", "calls", "error_pct"], rows))
    assert len(fig.data) == 2 and {tr.name for tr in fig.data} == {"calls", "error (%)"}


def test_category_and_number_is_a_bar_with_units() -> None:
    rows = [{"service": s, "error_pct": v} for s, v in (("a", 1.5), ("b", 12.0), ("c", 0.0))]
    fig = chart_for(result(["service", "error_pct"], rows), title="Errors by service")
    assert fig.data[0].type == "bar" and list(fig.data[0].x) == ["a", "b", "c"]
    assert list(fig.data[0].y) == [1.5, 12.0, 0.0]
    assert fig.layout.yaxis.title.text == "error (%)" and fig.layout.title.text == "Errors by service"


def test_two_categories_and_number_is_a_heatmap() -> None:
    rows = [{"caller": c, "callee": d, "calls": n} for c, d, n in (("a", "b", 5), ("a", "c", 7), ("b", "c", 2))]
    fig = chart_for(result(["caller", "callee", "calls"], rows))
    hm = fig.data[0]
    assert hm.type == "heatmap" and list(hm.x) == ["a", "b"] and list(hm.y) == ["b", "c"]
    assert [list(r) for r in hm.z] == [[5, None], [7, 2]]
    assert fig.layout.xaxis.title.text == "caller" and fig.layout.yaxis.title.text == "callee"


def test_two_numbers_is_a_scatter() -> None:
    rows = [{"duration_ms": float(i), "self_ms": i / 2} for i in range(10)]
    fig = chart_for(result(["duration_ms", "self_ms"], rows))
    assert fig.data[0].type == "scatter" and fig.data[0].mode == "markers"
    assert fig.layout.xaxis.title.text == "duration (ms)" and fig.layout.yaxis.title.text == "self (ms)"


def test_tool_hint_and_units_dict() -> None:
    rows = [{"service": "a", "operation": "x", "delta_ms": 5.0}, {"service": "b", "operation": "y", "delta_ms": 9.0}]
    r = result(["service", "operation", "delta_ms"], rows, units={"delta_ms": "ms"},
               details={"chart": {"x": "service", "y": "delta_ms", "kind": "bar"}})
    fig = chart_for(r)
    assert fig.data[0].type == "bar" and fig.layout.yaxis.title.text == "delta (ms)"
    assert axis_label("rate_per_s") == "rate (/s)" and axis_label("calls") == "calls"
    assert axis_label("value", {"value": "bytes"}) == "value (bytes)"


def test_no_chart_for_unfit_results() -> None:
    assert chart_for(result(["a"], [{"a": "x"}])) is None
    assert chart_for(result(["n"], [])) is None
    assert chart_for(ToolResult.failure("sql", {}, "refused")) is None


@pytest.mark.browser
def test_render_png_offline() -> None:
    assert shutil.which("chromium"), "Debian chromium is required (scripts/test-setup.sh installs it)"
    fig = chart_for(result(["service", "p95_ms"], [{"service": "a", "p95_ms": 3.0}, {"service": "b", "p95_ms": 9.0}]))
    png = render_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    again = render_png(fig, width=400, height=300)  # reuses the running browser
    assert again[:8] == b"\x89PNG\r\n\x1a\n" and again != png


def test_waterfall_is_a_gantt_of_offsets_and_durations() -> None:
    rows = [
        {"depth": 0, "service": "gw", "operation": "GET /", "offset_ms": 0.0, "duration_ms": 100.0,
         "status": "Unset", "critical": True},
        {"depth": 1, "service": "db", "operation": "query", "offset_ms": 10.0, "duration_ms": 80.0,
         "status": "Error", "critical": True},
    ]
    r = result(list(rows[0]), rows, units={"offset_ms": "ms", "duration_ms": "ms"},
               details={"chart": {"kind": "gantt"}})
    fig = chart_for(r)
    bar = fig.data[0]
    assert bar.type == "bar" and bar.orientation == "h"
    assert list(bar.base) == [0.0, 10.0] and list(bar.x) == [100.0, 80.0]
    assert bar.y[1].strip().startswith("db query") and bar.marker.color[1] == "#c0392b"
    assert fig.layout.xaxis.title.text == "time since trace start (ms)"


def test_render_png_times_out_instead_of_hanging(monkeypatch) -> None:
    """A browser that never answers costs the timeout and a clear error, then later calls fail fast."""
    import time

    import plotly.graph_objects as go

    import tools.charts as charts

    monkeypatch.setattr(charts, "_render_broken", False)
    monkeypatch.setattr(charts, "_render", lambda fig, w, h: time.sleep(5) or b"")
    fig = go.Figure(go.Bar(x=["a"], y=[1]))
    started = time.monotonic()
    with pytest.raises(charts.ChartRenderError, match="did not finish"):
        charts.render_png(fig, timeout=0.2)
    assert time.monotonic() - started < 2
    with pytest.raises(charts.ChartRenderError, match="unavailable"):
        charts.render_png(fig)


def test_an_answers_chart_json_carries_the_template_without_setting_it_on_the_figure() -> None:
    """figure_json adds the template to the JSON (setting it on a figure deep-copies and validates it): the
    JSON is exactly that of the figure with the template set, and each chart has its own copy."""
    fig = bar_chart(["a", "b"], [2.0, 1.0], "p95 by service (ms)", "p95 (ms)", "service")
    expected = json.loads(bar_chart(["a", "b"], [2.0, 1.0], "p95 by service (ms)", "p95 (ms)", "service")
                          .update_layout(template=TEMPLATE).to_json())
    first, second = figure_json(fig), figure_json(fig)
    assert first == expected and first["layout"]["template"]["layout"]
    first["layout"]["template"]["layout"]["font"] = {"size": 99}
    assert second == expected  # no shared template object between answers
    assert styled(fig).layout.template.layout.paper_bgcolor == "white"
