"""Chat UI building blocks without a browser: rendering, auth configuration, command parsing."""

from __future__ import annotations

import pytest

from chat.dashboards import DashboardError, DashboardRequest, parse_request, validate_name
from chat.web import render
from chat.web.mount import AuthConfigError, auth_users, is_loopback, parse_users, strip_external_assets
from otel_ai.settings import Settings


def test_markdown_table_escapes_untrusted_cells_and_reports_truncation():
    rows = [{"service": "[click](http://evil)", "note": "a|b\n<script>x</script>", "p95": 912.345678}] * 3
    table = render.markdown_table(["service", "note", "p95"], rows, max_rows=2)
    lines = table.splitlines()
    assert lines[0] == "| service | note | p95 |"
    assert "\\[click\\]\\(http://evil\\)" in lines[2]
    assert "a\\|b \\<script\\>x\\</script\\>" in lines[2]
    assert "912.346" in lines[2]
    assert "_showing 2 of 3 rows_" in table
    assert render.markdown_table(["a"], []) == "_no rows_"


def test_evidence_shows_each_query_as_sql_and_the_failure_reason():
    text = render.evidence_markdown(["SELECT 1", "SELECT ```x```"], "found 2 services", "timeout")
    assert text.startswith("```sql\nSELECT 1\n```")
    assert text.count("```sql") == 2 and "` ` `x` ` `" in text
    assert "**Failed:** timeout" in text and "found 2 services" in text
    fenced = render.evidence_markdown([], "sql: 1 row(s)\n<telemetry-data>\na | b\n</telemetry-data>", None)
    assert "telemetry-data" not in fenced and "a | b" in fenced


def test_waterfall_uses_offsets_and_marks_errors_and_critical_path():
    spans = [
        {"depth": 0, "service": "frontend", "operation": "GET /checkout", "offset_ms": 0.0, "duration_ms": 950.0,
         "status": "Unset", "critical": True},
        {"depth": 1, "service": "checkout", "operation": "POST /checkout", "offset_ms": 2.0, "duration_ms": 940.0,
         "status": "Unset", "critical": True},
        {"depth": 2, "service": "payment", "operation": "POST /charge", "offset_ms": 20.0, "duration_ms": 900.0,
         "status": "Error", "critical": True},
        {"depth": 2, "service": "inventory", "operation": "reserve", "offset_ms": 5.0, "duration_ms": 10.0,
         "status": "Ok", "critical": False},
    ]
    fig = render.waterfall_figure({"trace_id": "ab" * 16, "spans": spans})
    assert fig is not None
    bar = fig.data[0]
    assert list(bar.base) == [0.0, 2.0, 20.0, 5.0]
    assert list(bar.x) == [950.0, 940.0, 900.0, 10.0]
    assert list(bar.marker.color) == ["#f59e0b", "#f59e0b", "#dc2626", "#2563eb"]
    assert "payment POST /charge" in bar.y[2] and bar.y[2].count("· ") == 2
    assert fig.layout.title.text == "Trace abababababababab"
    assert render.waterfall_figure({"trace_id": "x", "spans": []}) is None


def test_root_causes_table_ranks_with_confidence():
    from agent.answer import RootCause

    text = render.root_causes_markdown([RootCause(service="payment", kind="latency", confidence=0.82,
                                                  evidence="p95 900 ms")])
    assert "| 1 | payment |  | latency | 82% | p95 900 ms |" in text
    assert render.root_causes_markdown([]) == ""


def test_auth_is_off_on_loopback_and_required_elsewhere():
    assert auth_users(Settings(host="127.0.0.1")) == {}
    assert auth_users(Settings(host="localhost")) == {}
    assert is_loopback("::1") and not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    with pytest.raises(AuthConfigError, match="refusing to serve the chat on 0.0.0.0"):
        auth_users(Settings(host="0.0.0.0"))
    with pytest.raises(AuthConfigError, match="only one of them is set"):
        auth_users(Settings(host="127.0.0.1", auth_users="ann:pw"))
    with pytest.raises(AuthConfigError, match="at least 16 characters"):
        auth_users(Settings(host="0.0.0.0", auth_users="ann:pw", auth_secret="short"))
    users = auth_users(Settings(host="0.0.0.0", auth_users=" ann:pw1 , bob:p:w2", auth_secret="x" * 32))
    assert users == {"ann": "pw1", "bob": "p:w2"}


def test_malformed_users_are_named():
    with pytest.raises(AuthConfigError, match="'ann' is not of the form user:password"):
        parse_users("ann")
    with pytest.raises(AuthConfigError, match="not of the form"):
        parse_users("bob:pw,:nopw")


def test_page_keeps_no_external_links():
    html = ('<link rel="preconnect" href="https://fonts.googleapis.com" />\n'
            '<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/katex/katex.min.css" />\n'
            '<link rel="stylesheet" href="/public/otel-ai.css">')
    assert strip_external_assets(html) == '<link rel="stylesheet" href="/public/otel-ai.css">'


@pytest.mark.parametrize(("text", "expected"), [
    ("/dashboard checkout", DashboardRequest("build", "checkout")),
    ("/dashboard checkout as Checkout on-call", DashboardRequest("build", "checkout", "Checkout on-call")),
    ("build me a dashboard for checkout", DashboardRequest("build", "checkout")),
    ("Create a dashboard for the payment service.", DashboardRequest("build", "payment")),
    ("/dashboards", DashboardRequest("list")),
    ("list dashboards", DashboardRequest("list")),
    ("/dashboard open Checkout on-call", DashboardRequest("open", "Checkout on-call")),
    ("/dashboard delete old", DashboardRequest("delete", "old")),
    ("why is checkout slow?", None),
    ("what does the dashboard for checkout show?", None),
])
def test_dashboard_requests(text, expected):
    assert parse_request(text) == expected


def test_dashboard_names_are_checked():
    assert validate_name("  checkout   on-call ") == "checkout on-call"
    with pytest.raises(DashboardError, match="bad dashboard name"):
        validate_name("x'; DROP TABLE dashboards")


def test_runtime_directory_has_config_assets_and_our_wording():
    import json
    import shutil

    from chat.web.mount import prepare_app_root

    root = prepare_app_root()
    try:
        config = (root / ".chainlit" / "config.toml").read_text()
        assert 'name = "otel-ai"' in config and "https://" not in config
        assert (root / "public" / "logo_light.svg").exists() and (root / "public" / "login.svg").exists()
        texts = json.loads((root / ".chainlit" / "translations" / "en-US.json").read_text())
        assert texts["auth"]["login"]["form"]["email"]["label"] == "User name"
        assert texts["auth"]["login"]["errors"]["credentialsSignin"] == "Wrong user name or password"
    finally:
        shutil.rmtree(root)


def test_dashboard_plan_notes_name_the_model_and_escape_dropped_panels():
    from agent.dashboard_planner import DroppedPanel, Panel, PlannedDashboard
    from chat.web.render import plan_markdown, plan_notes_markdown

    planned = PlannedDashboard(service="shop", panels=[Panel(title="shop: RED", why="rate")], model="openai:m",
                               dropped=[DroppedPanel(title="[click](http://evil)", reason="SQL refused: no")],
                               notes=["model x failed"])
    notes = plan_notes_markdown(planned)
    assert notes.startswith("Panels chosen by `openai:m`.")
    assert "Dropped panel **\\[click\\]\\(http://evil\\)**: SQL refused: no" in notes
    assert "[click](" not in notes and "_model x failed_" in notes
    assert "- **shop: RED** (rate)" in plan_markdown(planned)
