"""Question parsing: intents, fuzzy service names from the data, trace ids and UTC time ranges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agent.question import match_services, parse_question

NOW = datetime(2026, 11, 28, 14, 30, tzinfo=UTC)
MIDNIGHT = NOW.replace(hour=0, minute=0)
SERVICES = ["checkoutservice", "paymentservice", "frontend", "cart-service", "product-catalog", "email",
            "ShippingAPI", "svc-inventory"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("why is checkout slow?", ["checkoutservice"]),
        ("and payment?", ["paymentservice"]),
        ("Errors in the cart?", ["cart-service"]),
        ("traffic of product catalog", ["product-catalog"]),
        ("is shipping ok", ["ShippingAPI"]),
        ("inventory failing", ["svc-inventory"]),
        ("checkout vs payments", ["checkoutservice", "paymentservice"]),
        ("what is the weather", []),
        ("why is the frontned slow", ["frontend"]),  # typo
    ],
)
def test_services_are_fuzzy_matched_against_discovered_names(text, expected):
    assert match_services(text, SERVICES) == expected


def test_intents_and_trace_id():
    q = parse_question("why is checkout slow and failing? trace 4BF92F3577B34DA6A3CE929D0E0E4736", NOW, SERVICES)
    assert q.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert {"slow", "errors", "trace"} <= set(q.intents)
    assert parse_question("show me a chart of throughput", NOW).intents == ["traffic", "chart"]
    assert parse_question("anything unusual?", NOW).primary == "anomalies"


def test_a_range_up_to_midnight_asked_around_midnight_ends_at_that_midnight():
    """Asked at 23:59:30 or just after midnight, "between 23:50 and 00:00" is the ten minutes before that
    midnight (it was read as the same ten minutes a day earlier: an empty window)."""
    midnight = datetime(2026, 12, 8, tzinfo=UTC)
    for now in (midnight - timedelta(seconds=30), midnight + timedelta(seconds=30), midnight + timedelta(hours=2)):
        q = parse_question("error logs between 23:50 and 00:00 UTC", now)
        assert (q.start, q.end) == (midnight - timedelta(minutes=10), midnight), now
    q = parse_question("between 10:00 and 09:00", NOW)  # an end before the start: from yesterday
    assert (q.start, q.end) == (NOW.replace(hour=10, minute=0) - timedelta(days=1), NOW.replace(hour=9, minute=0))


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("errors in the last 15 minutes", NOW - timedelta(minutes=15), NOW),
        ("latency over the past hour", NOW - timedelta(hours=1), NOW),
        ("slow since 10:30", NOW.replace(hour=10, minute=30), NOW),
        ("since 14:02:10 UTC", NOW.replace(hour=14, minute=2, second=10), NOW),
        ("between 9:00 and 9:20", NOW.replace(hour=9, minute=0), NOW.replace(hour=9, minute=20)),
        ("between 23:00 and 01:00", NOW.replace(hour=23, minute=0) - timedelta(days=1), NOW.replace(hour=1, minute=0)),
        ("since 2:15 pm", NOW.replace(hour=14, minute=15), NOW),
        ("since 23:00", NOW.replace(hour=23, minute=0) - timedelta(days=1), NOW),  # later than now = yesterday
        ("were there errors yesterday?", MIDNIGHT - timedelta(days=1), MIDNIGHT),
        ("what failed since yesterday", MIDNIGHT - timedelta(days=1), NOW),
        ("slowest traces today", MIDNIGHT, NOW),
        ("is checkout slower than yesterday?", None, None),  # the day it is compared with, not the window
        ("compare the p95 with yesterday", None, None),
        ("p95 yesterday vs today", None, None),
    ],
)
def test_time_ranges_are_utc_relative_to_now(text, start, end):
    q = parse_question(text, NOW)
    assert (q.start, q.end) == (start, end)


def test_operations_are_matched_from_the_data():
    q = parse_question("why is POST /api/checkout slow", NOW, SERVICES, ["POST /api/checkout", "GET /", "Charge"])
    assert q.operations == ["POST /api/checkout"]


def test_a_two_letter_service_name_matches_only_as_a_word_of_its_own():
    names = ["ad", "cart", "frontend"]
    assert match_services("show the logs of ad", names) == ["ad"]
    assert match_services("why are ads slow?", names) == []
    assert match_services("add to cart fails", names) == ["cart"]


def test_the_words_of_a_name_written_in_full_belong_to_it():
    """A service named in full is not also a fuzzy match for other services sharing a word of it, and a
    longer name does not hide a shorter one written on its own; "a calls b" keeps the order written."""
    names = ["cart-service", "cart-cache-service", "frontend", "frontend-proxy"]
    assert match_services("what is the p99 latency of cart-service?", names) == ["cart-service"]
    assert match_services("why is cart slow?", names) == ["cart-service", "cart-cache-service"]
    assert match_services("frontend-proxy errors", names) == ["frontend-proxy"]
    assert match_services("frontend-proxy calls frontend", names) == ["frontend-proxy", "frontend"]
    assert match_services("does frontend call frontend-proxy?", names) == ["frontend", "frontend-proxy"]
