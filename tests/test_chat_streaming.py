"""`ask(on_event=...)`: tool calls reported as they start and end, the answer text as it is produced —
for the built-in analyst and for an LLM behind the OpenAI-compatible API (streamed over SSE)."""

from __future__ import annotations

import asyncio
import time

import pytest

from agent import ask
from agent.streaming import AnswerDelta, EventRelay, ToolFinished, ToolStarted, partial_answer
from otel_ai.settings import Settings
from tests.conftest import new_database
from tests.fakes.llm import FakeLLMServer, ScriptedBrain
from tests.fixtures.agent_data import synth_incident
from tests.test_agent_llm import llm_settings


@pytest.fixture(scope="module")
def incident(root_store):
    store = new_database(root_store, "stream")
    synth_incident(store, "billing_slow", seed=5)
    yield store
    store.close()


def settings_for(store, **kw) -> Settings:
    return llm_settings(store, **{"model": "builtin", **kw})


def ask_recording(question: str, store, settings: Settings, **kw) -> tuple:
    """Run `ask` with a handler that timestamps every event; returns (answer, [(t, event)])."""
    events: list[tuple[float, object]] = []

    async def on_event(event: object) -> None:
        events.append((time.perf_counter(), event))

    async def run():  # noqa: ANN202
        return await ask(question, store=store, settings=settings, on_event=on_event, **kw)

    answer = asyncio.run(run())
    return answer, events


def test_builtin_streams_tool_calls_then_the_answer_in_chunks(incident):
    answer, events = ask_recording("why is edge-gateway slow?", incident, settings_for(incident))
    kinds = [type(e).__name__ for _, e in events]
    started = [e for _, e in events if isinstance(e, ToolStarted)]
    finished = [e for _, e in events if isinstance(e, ToolFinished)]
    deltas = [e for _, e in events if isinstance(e, AnswerDelta)]
    # every tool call of the answer's evidence (after discovery) was announced in order, then finished (the
    # calls of one step run side by side and finish in any order)
    evidence = answer.evidence[len(answer.evidence) - len(finished):]
    assert [s.tool for s in started] == [e.tool for e in evidence]
    assert len(started) >= 4
    assert sorted(s.call_id for s in started) == sorted(f.call_id for f in finished)
    finished_by_id = {f.call_id: f for f in finished}
    for s, e in zip(started, evidence, strict=True):
        f = finished_by_id[s.call_id]
        assert (f.evidence.tool, f.evidence.sql, f.evidence.summary, f.evidence.ok) == (e.tool, e.sql, e.summary, e.ok)
    assert any(f.evidence.sql and f.evidence.rows for f in finished)
    # a tool's start precedes its end, and all tools end before the first piece of the answer
    first_text = kinds.index("AnswerDelta")
    assert "ToolStarted" not in kinds[first_text:] and "ToolFinished" not in kinds[first_text:]
    positions = {id(e): i for i, (_, e) in enumerate(events)}
    for s in started:
        assert positions[id(s)] < positions[id(finished_by_id[s.call_id])]
    # the answer arrives in several chunks that add up to the answer's text
    assert len(deltas) >= 3
    assert "".join(d.text for d in deltas) == answer.answer


def test_without_a_handler_the_answer_is_the_same(incident):
    from agent import ask_sync

    plain = ask_sync("why is edge-gateway slow?", store=incident, settings=settings_for(incident))
    streamed, _ = ask_recording("why is edge-gateway slow?", incident, settings_for(incident))
    assert plain.answer == streamed.answer
    assert plain.root_causes == streamed.root_causes
    assert [e.tool for e in plain.evidence] == [e.tool for e in streamed.evidence]


def test_llm_tool_calls_and_answer_come_through_the_event_stream(incident):
    answer_text = "billing is slow: its Charge self time rose. " * 3
    brain = ScriptedBrain(calls=[("service_overview", {}), ("latency_breakdown", {"service": "edge gateway"})],
                          final=lambda body: {"answer": answer_text, "root_causes": []})
    with FakeLLMServer(brain, api_key="sk-test") as fake:
        settings = settings_for(incident, openai_api_key="sk-test", openai_base_url=fake.v1_url)
        answer, events = ask_recording("why is edge-gateway slow?", incident, settings, model="openai:gpt-fake")
    assert all(body.get("stream") for body in fake.requests), "with a handler the model is streamed"
    tools = [(type(e).__name__, e.tool) for _, e in events if isinstance(e, ToolStarted | ToolFinished)]
    assert tools == [("ToolStarted", "service_overview"), ("ToolFinished", "service_overview"),
                     ("ToolStarted", "latency_breakdown"), ("ToolFinished", "latency_breakdown")]
    finished = [e for _, e in events if isinstance(e, ToolFinished)]
    assert finished[1].evidence.args["service"] == "edge-gateway" and finished[1].evidence.sql
    text = "".join(e.text for _, e in events if isinstance(e, AnswerDelta))
    assert text == answer_text == answer.answer


def test_partial_answer_reads_a_cut_json_object():
    assert partial_answer('{"answer": "Payment is sl') == "Payment is sl"
    assert partial_answer('{"answer": "a \\"quoted\\" wo') == 'a "quoted" wo'
    assert partial_answer('{"root_causes": [') == ""
    assert partial_answer("") == "" and partial_answer("not json") == ""


def test_relay_appends_a_second_text_part_as_a_new_paragraph():
    from pydantic_ai.messages import PartDeltaEvent, PartStartEvent, TextPart, TextPartDelta

    seen: list[str] = []

    async def on_event(event: object) -> None:
        assert isinstance(event, AnswerDelta)
        seen.append(event.text)

    relay = EventRelay(on_event)

    async def events(parts):  # noqa: ANN001, ANN202
        for p in parts:
            yield p

    async def run() -> None:
        await relay(None, events([PartStartEvent(index=0, part=TextPart("Let me look.")),
                                  PartDeltaEvent(index=0, delta=TextPartDelta(" One moment."))]))
        await relay(None, events([PartStartEvent(index=0, part=TextPart("Payment")),
                                  PartDeltaEvent(index=0, delta=TextPartDelta(" is slow."))]))

    asyncio.run(run())
    assert "".join(seen) == "Let me look. One moment.\n\nPayment is slow."
