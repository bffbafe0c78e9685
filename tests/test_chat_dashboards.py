"""Dashboards planned from the simulator's data, saved by name, listed and re-run on fresh data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chat.dashboards import (
    DashboardError,
    delete_dashboard,
    get_dashboard,
    list_dashboards,
    plan_dashboard,
    run_dashboard,
    save_dashboard,
)
from tests.conftest import new_database
from tests.fixtures.telemetry import Span, insert_spans, new_id


@pytest.fixture(scope="module")
def shop(root_store):
    from tests.fixtures.scenario import load_scenario

    return load_scenario(root_store, "paymentSlow")


def test_checkout_dashboard_has_red_latency_and_downstream_panels(shop, store):
    board = plan_dashboard(shop.store, "checkout")
    titles = [p.title for p in board.panels]
    assert board.name == "checkout" and board.service == "checkout"
    assert titles[:2] == ["checkout: requests and errors per minute", "checkout: latency percentiles (ms)"]
    assert "checkout: latency breakdown — self time in slow vs normal traces" in titles
    assert "checkout: where the time goes — downstream calls (p95 ms)" in titles

    window, results = run_dashboard(shop.store, board)
    assert window.end - window.start == timedelta(minutes=60)
    for pr in results:
        assert pr.result.ok, (pr.panel.title, pr.result.error)
        assert pr.result.rows, pr.panel.title
        assert all("FROM otel_traces" in sql or "FROM otel_logs" in sql for sql in pr.result.sql) or pr.panel.tool
    by_title = {pr.panel.title: pr for pr in results}
    red = by_title["checkout: requests and errors per minute"]
    assert red.figure is not None and len(red.figure.data) >= 1
    assert sum(r["requests"] for r in red.result.rows) > 100
    downstream = by_title["checkout: where the time goes — downstream calls (p95 ms)"]
    # The scenario slows payment's Charge: it tops checkout's downstream calls.
    assert downstream.result.rows[0]["service"] == shop.truth.root_cause_service
    assert downstream.figure is not None


def test_unknown_service_names_the_known_ones(shop):
    with pytest.raises(DashboardError, match="no service named 'nope'.*checkout"):
        plan_dashboard(shop.store, "nope")


def test_saved_dashboards_are_listed_and_rerun_on_new_data(root_store):
    store = new_database(root_store)
    now = datetime.now(UTC).replace(microsecond=0)

    def traffic(start: datetime, n: int, ms: float) -> None:
        spans = []
        for i in range(n):
            root = Span("shop-api", "GET /cart", start + timedelta(seconds=i), ms, trace_id=new_id(32))
            spans += [root, root.child("cart-db", "SELECT cart", 1, ms / 2, kind="Client")]
        insert_spans(store, spans)

    traffic(now - timedelta(minutes=20), 30, 40.0)
    board = save_dashboard(store, plan_dashboard(store, "SHOP-API", name="cart on-call", created_by="ann"))
    assert [d.name for d in list_dashboards(store)] == ["cart on-call"]
    saved = get_dashboard(store, "cart on-call")
    assert saved is not None and saved.service == "shop-api" and saved.created_by == "ann"
    assert [p.title for p in saved.panels] == [p.title for p in board.panels]

    _, first = run_dashboard(store, saved)
    assert sum(r["requests"] for r in first[0].result.rows) == 30
    traffic(now - timedelta(minutes=5), 12, 400.0)  # fresh data arrives
    _, second = run_dashboard(store, get_dashboard(store, "cart on-call"))
    assert sum(r["requests"] for r in second[0].result.rows) == 42
    assert max(r["p95_ms"] for r in second[1].result.rows) >= 399.0

    assert delete_dashboard(store, "cart on-call")
    assert list_dashboards(store) == [] and get_dashboard(store, "cart on-call") is None
    assert not delete_dashboard(store, "cart on-call")
