"""The `summary` role: the built-in analyst investigates, a second model (a local fake server speaking
the OpenAI API) words the answer for the reader; its failure keeps the analyst's answer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent import ask, ask_sync
from agent.streaming import AnswerDelta, ToolFinished, ToolStarted
from tests.conftest import new_database
from tests.fakes.llm import FakeLLMServer, ScriptedBrain, closed_port_url
from tests.fixtures.agent_data import synth_incident
from tests.test_agent_llm import INJECTION, llm_settings

WRITTEN = "Billing's Charge call got slower; it is what slows edge-gateway for users."


@pytest.fixture(scope="module")
def incident(root_store):
    store = new_database(root_store, "summary")
    synth_incident(store, "billing_slow", seed=23, inject=INJECTION)
    yield store
    store.close()


def writer_brain() -> ScriptedBrain:
    return ScriptedBrain(final=lambda body: {"answer": WRITTEN})


def test_summary_model_words_the_builtin_analysts_answer(incident):
    with FakeLLMServer(writer_brain(), api_key="sk-w") as fake:
        settings = llm_settings(incident, openai_api_key="sk-w", openai_base_url=fake.v1_url,
                                model_summary="openai:writer-fake")
        answer = ask_sync("why is edge-gateway slow?", store=incident, settings=settings, role="manager")
        draft = ask_sync("why is edge-gateway slow?", store=incident,
                         settings=llm_settings(incident), role="manager")
    assert answer.answer == WRITTEN
    # the investigation is the analyst's: same root causes, same tools; the writer only words it
    assert answer.root_causes and answer.root_causes[0].service == draft.root_causes[0].service == "billing"
    assert [e.tool for e in answer.evidence] == [e.tool for e in draft.evidence]
    assert answer.models == {"planner": "builtin", "summary": "openai:writer-fake"}
    assert answer.model == "builtin + openai:writer-fake (summary)"
    assert answer.usage["output_tokens"] > 0 and "summary" in answer.timings
    assert draft.models == {"planner": "builtin"}
    (request,) = fake.requests  # one call: no tools, text out
    assert not request.get("tools")
    instructions = " ".join(str(m.get("content")) for m in request["messages"] if m["role"] in ("system", "developer"))
    assert "manager" in instructions and "never follow" in instructions.lower()
    prompt = next(str(m["content"]) for m in request["messages"] if m["role"] == "user")
    assert draft.answer.splitlines()[0][:40] in prompt  # the draft it rewrites
    # telemetry reaches the writer only inside the data fences
    assert INJECTION in prompt
    for line in prompt.splitlines():
        if INJECTION in line:
            before = prompt[: prompt.index(line)]
            assert before.count("<telemetry-data>") == before.count("</telemetry-data>") + 1


def test_an_unreachable_summary_model_keeps_the_analysts_answer(incident):
    settings = llm_settings(incident, openai_api_key="sk-w", openai_base_url=closed_port_url(),
                            model_summary="openai:writer-fake")
    answer = ask_sync("why is edge-gateway slow?", store=incident, settings=settings)
    assert answer.root_causes[0].service == "billing"
    assert "summary model openai:writer-fake failed" in answer.answer
    assert "showing the analyst's own answer" in answer.answer
    assert "billing" in answer.answer.split("\n\n_summary model")[0]
    assert answer.models == {"planner": "builtin"} and answer.model == "builtin"


def test_builtin_in_a_summary_chain_stands_for_the_draft(incident):
    settings = llm_settings(incident, openai_api_key="sk-w", openai_base_url=closed_port_url(),
                            model_summary="openai:writer-fake,builtin")
    answer = ask_sync("why is edge-gateway slow?", store=incident, settings=settings)
    draft = ask_sync("why is edge-gateway slow?", store=incident, settings=llm_settings(incident))
    assert answer.models == {"planner": "builtin", "summary": "builtin"}
    assert answer.answer.split("_Window")[0] == draft.answer.split("_Window")[0]


def test_streamed_text_is_the_writers_not_the_draft(incident):
    events: list[Any] = []

    async def collect(event: Any) -> None:  # noqa: ANN401
        events.append(event)

    with FakeLLMServer(writer_brain(), api_key="sk-w") as fake:
        settings = llm_settings(incident, openai_api_key="sk-w", openai_base_url=fake.v1_url,
                                model_summary="openai:writer-fake")
        answer = asyncio.run(ask("why is edge-gateway slow?", store=incident, settings=settings, on_event=collect))
    text = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    assert text == WRITTEN == answer.answer
    finished = [e for e in events if isinstance(e, ToolFinished)]
    assert finished, "tool progress still streams while the writer is configured"
    # every tool call the analyst made after discovery was announced in the answer's order, and finished (the
    # calls of one step run side by side and finish in any order)
    started = [e for e in events if isinstance(e, ToolStarted)]
    done = {e.call_id: e for e in finished}
    assert sorted(done) == sorted(s.call_id for s in started)
    assert [(done[s.call_id].tool, done[s.call_id].evidence.sql) for s in started] == \
        [(e.tool, e.sql) for e in answer.evidence[-len(started):]]
    first_text = next(i for i, e in enumerate(events) if isinstance(e, AnswerDelta))
    assert all(not isinstance(e, ToolFinished) for e in events[first_text:])
