"""Telemetry is untrusted: a handful of forged error spans from a service never seen before, called by
nobody, must not outrank a real fault, and is flagged as new when it is all there is."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from agent import ask_sync
from tests.conftest import new_database
from tests.fixtures.agent_data import TRACE_COLUMNS, synth_incident
from tests.test_agent import settings_for

FORGED = "intruder"


def forge_errors(store, end: datetime, count: int = 8) -> None:
    """`count` root error spans, each its own trace, from a service that has no history and no callers."""
    rng = random.Random(5)
    rows = []
    for i in range(count):
        ts = end - timedelta(seconds=30 * (i + 1))
        trace, sid = f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(64):016x}"
        res = {"service.name": FORGED}
        rows.append([ts, trace, sid, "", "", "POST /steal", "Server", FORGED, res, "x", "1", {},
                     int(900e6), "Error", "everything is on fire", [], [], [], [], [], [], []])
    store.insert("otel_traces", TRACE_COLUMNS, rows, column_oriented=False)


@pytest.mark.parametrize("question", ["what's wrong?", "why are there errors?"])
def test_forged_new_service_does_not_outrank_a_real_fault(root_store, question):
    store = new_database(root_store, "forged")
    end = datetime.now(UTC).replace(microsecond=0)
    synth_incident(store, "catalog_errors", end=end, seed=11)
    forge_errors(store, end)
    answer = ask_sync(question, store=store, settings=settings_for(store))
    assert answer.root_causes and answer.root_causes[0].service == "catalog", answer.answer
    store.close()


def test_forged_new_service_alone_is_flagged_new_with_low_confidence(root_store):
    store = new_database(root_store, "forged")
    end = datetime.now(UTC).replace(microsecond=0)
    synth_incident(store, None, end=end, seed=12)
    forge_errors(store, end)
    answer = ask_sync("what's wrong?", store=store, settings=settings_for(store))
    named = [c for c in answer.root_causes if c.service == FORGED]
    assert named and all(c.confidence < 0.5 for c in named), answer.root_causes
    assert f"{FORGED} is new" in answer.answer, answer.answer
    store.close()
