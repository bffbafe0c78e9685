"""The built-in analyst answers "how many / what was the p95" questions with the exact number.

Data: the simulator's paymentFailure run through real OTLP ingest (tests/fixtures/scenario.py, the
same cached database as the scenario tests). Expected numbers are computed here from the raw spans
(numpy over the durations fetched by plain SQL), independently of tools.traces.service_stats.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from agent import ask_sync
from agent.measures import requested_stats
from evals.evaluators import numbers_in, states_number
from otel_ai.settings import Settings
from tests.fixtures.scenario import SHORT_RUN, LoadedScenario, load_scenario

ENTRY = "(SpanKind IN ('Server', 'Consumer') OR ParentSpanId = '')"


@pytest.fixture(scope="module")
def failing(root_store) -> LoadedScenario:
    return load_scenario(root_store, "paymentFailure", **SHORT_RUN)


def settings_for(loaded: LoadedScenario) -> Settings:
    return Settings(clickhouse_url=f"chdb://{loaded.store.url.path}", database=loaded.store.database,
                    model="builtin", openai_api_key=None, anthropic_api_key=None)


def literal(t: datetime) -> str:
    return f"toDateTime64('{t:%Y-%m-%d %H:%M:%S}', 9, 'UTC')"


def raw(loaded: LoadedScenario, service: str) -> tuple[np.ndarray, np.ndarray]:
    """Durations (ms) and error flags of `service`'s entry spans in the fault window."""
    t = loaded.truth
    rows = loaded.store.query(
        f"SELECT Duration, StatusCode = 'Error' FROM otel_traces WHERE ServiceName = '{service}' AND {ENTRY} "
        f"AND Timestamp >= {literal(t.start)} AND Timestamp < {literal(t.end)}").rows
    return np.array([r[0] / 1e6 for r in rows]), np.array([bool(r[1]) for r in rows])


def ask(loaded: LoadedScenario, template: str) -> str:
    t = loaded.truth
    answer = ask_sync(template.format(start=f"{t.start:%H:%M}", end=f"{t.end:%H:%M}"), store=loaded.store,
                      settings=settings_for(loaded))
    assert [e.tool for e in answer.evidence if e.tool != "run_sql"] == ["service_stats"], answer.evidence
    stats = next(e for e in answer.evidence if e.tool == "service_stats")
    assert stats.ok and stats.sql and "quantilesExactInclusive" in stats.sql[0]
    # grounded: every number of the answer is in the tool's summary or the question
    evidence = numbers_in(stats.summary)
    for value, unit in numbers_in(answer.answer):
        assert any(abs(value - v) <= 1e-9 + 0.001 * abs(v) and unit == u for v, u in evidence) or value < 10, (
            value, unit, answer.answer)
    assert answer.root_causes == []
    return answer.answer


def test_percentiles_are_exact(failing):
    durations, _ = raw(failing, "checkout")
    assert len(durations) > 20
    text = ask(failing, "What was the p95 latency of checkout between {start} and {end} UTC?")
    p95 = float(np.percentile(durations, 95))
    assert f"{p95:.2f} ms" in text, text
    text = ask(failing, "What was the median latency of checkout between {start} and {end} UTC?")
    assert f"{float(np.median(durations)):.2f} ms" in text, text
    text = ask(failing, "What were the average and max latency of checkout between {start} and {end} UTC?")
    assert f"{durations.mean():.2f} ms" in text and f"{durations.max():.2f} ms" in text, text


def test_counts_and_error_rate_are_exact(failing):
    durations, failed = raw(failing, "payment")
    assert failed.sum() > 5
    text = ask(failing, "How many requests did payment serve between {start} and {end} UTC?")
    assert states_number(text, len(durations), "count", 0.0), text
    text = ask(failing, "How many failed requests did payment have between {start} and {end} UTC?")
    assert states_number(text, int(failed.sum()), "count", 0.0), text
    text = ask(failing, "What was the error rate of payment between {start} and {end} UTC?")
    assert f"{100 * failed.mean():.2f}%" in text, text
    # the baseline follows as context
    assert "Before that" in text


def test_request_rate_of_an_operation(failing):
    t = failing.truth
    op, n = failing.store.query(
        f"SELECT SpanName, count() AS n FROM otel_traces WHERE ServiceName = 'checkout' AND {ENTRY} "
        f"AND Timestamp >= {literal(t.start)} AND Timestamp < {literal(t.end)} GROUP BY SpanName "
        "ORDER BY n DESC LIMIT 1").rows[0]
    text = ask(failing, f"What was the request rate of checkout {op} between {{start}} and {{end}} UTC?")
    assert f"{n / (t.end - t.start).total_seconds():.3f}/s" in text and op in text, text


@pytest.mark.parametrize("question", [
    "Why is checkout slow?", "Why is the p95 latency of checkout so high?", "Why are checkouts failing with errors?",
    "Is anything wrong right now?", "Which services are failing?", "how much traffic does each service get?",
    "What happened to the checkout error rate?",
])
def test_diagnosis_questions_are_not_measures(question):
    assert requested_stats(question) == []


@pytest.mark.parametrize(("question", "stats"), [
    ("What was the p95 latency of checkout between 04:48 and 04:58 UTC?", ["p95_ms"]),
    ("How many requests did frontend serve between 04:48 and 04:58 UTC?", ["requests"]),
    ("How many failed requests did cart have?", ["errors"]),
    ("What was the error rate of payment?", ["error_pct"]),
    ("median latency of payment in the last 15 minutes", ["p50_ms"]),
    ("requests per second of cart", ["rate_per_s"]),
    ("What is the latency of checkout?", ["avg_ms", "p50_ms", "p95_ms", "p99_ms"]),
])
def test_statistics_asked_for(question, stats):
    assert requested_stats(question) == stats


def test_a_diagnosis_still_diagnoses(failing):
    answer = ask_sync("Why is checkout failing?", store=failing.store, settings=settings_for(failing))
    tools = {e.tool for e in answer.evidence}
    assert "service_stats" not in tools and "service_overview" in tools
    assert answer.root_causes and answer.root_causes[0].service == failing.truth.root_cause_service


def test_follow_up_measures_the_same_statistic(failing):
    from agent import Conversation

    t = failing.truth
    conversation = Conversation()
    settings = settings_for(failing)
    ask_sync(f"What was the p95 latency of checkout between {t.start:%H:%M} and {t.end:%H:%M} UTC?",
             store=failing.store, settings=settings, conversation=conversation)
    answer = ask_sync("and payment?", store=failing.store, settings=settings, conversation=conversation)
    durations, _ = raw(failing, "payment")  # same window: the first question's
    assert [e.args for e in answer.evidence if e.tool == "service_stats"] == [
        {"service": "payment", "operation": None}]
    assert f"{float(np.percentile(durations, 95)):.2f} ms" in answer.answer, answer.answer
    why = ask_sync("Why?", store=failing.store, settings=settings, conversation=conversation)
    assert "service_stats" not in {e.tool for e in why.evidence} and why.root_causes
