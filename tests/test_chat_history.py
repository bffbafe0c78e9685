"""Chat persistence in ClickHouse: the Chainlit data layer, feedback and its export as eval cases."""

from __future__ import annotations

import asyncio
import json
import uuid

import plotly.graph_objects as go
from chainlit.element import Plotly
from chainlit.types import Feedback, Pagination, ThreadFilter
from chainlit.user import User

from chat.feedback import export_feedback_cases
from chat.web.history import ClickHouseDataLayer


def run(coro):
    return asyncio.run(coro)


def _step(thread_id: str, step_id: str, type_: str, output: str, created: str, **extra) -> dict:
    return {"id": step_id, "threadId": thread_id, "type": type_, "name": "x", "output": output,
            "createdAt": created, **extra}


def test_threads_steps_and_updates_survive_a_new_data_layer(store):
    layer = ClickHouseDataLayer(store)
    user = run(layer.create_user(User(identifier="alice")))
    assert user is not None and user.identifier == "alice"
    assert run(layer.create_user(User(identifier="alice"))).id == user.id  # idempotent

    thread_id = str(uuid.uuid4())
    run(layer.update_thread(thread_id, user_id=user.id))
    run(layer.update_thread(thread_id, name="Why is checkout slow?", metadata={"prefs": {"role": "sre"}}))
    run(layer.create_step(_step(thread_id, "s1", "user_message", "Why is checkout slow?", "2026-01-01T00:00:01Z")))
    run(layer.create_step(_step(thread_id, "s2", "assistant_message", "", "2026-01-01T00:00:02Z")))
    run(layer.update_step(_step(thread_id, "s2", "assistant_message", "payment is slow", "2026-01-01T00:00:02Z",
                                metadata={"question": "Why is checkout slow?"})))
    run(layer.create_step(_step(thread_id, "s3", "tool", "tmp", "2026-01-01T00:00:03Z")))
    run(layer.delete_step("s3"))
    run(layer.save_conversation(thread_id, '{"id": "c1"}'))

    fresh = ClickHouseDataLayer(store)  # what a restarted server sees
    thread = run(fresh.get_thread(thread_id))
    assert thread is not None
    assert thread["name"] == "Why is checkout slow?"
    assert thread["userIdentifier"] == "alice"
    assert thread["metadata"] == {"prefs": {"role": "sre"}}
    assert [s["id"] for s in thread["steps"]] == ["s1", "s2"]
    assert thread["steps"][1]["output"] == "payment is slow"
    assert thread["steps"][1]["metadata"] == {"question": "Why is checkout slow?"}
    assert run(fresh.get_thread_author(thread_id)) == "alice"
    assert run(fresh.load_conversation(thread_id)) == '{"id": "c1"}'

    page = run(fresh.list_threads(Pagination(first=10), ThreadFilter(userId=user.id)))
    assert [t["id"] for t in page.data] == [thread_id]
    assert run(fresh.list_threads(Pagination(first=10), ThreadFilter(userId=user.id, search="CHECKOUT"))).data
    assert not run(fresh.list_threads(Pagination(first=10), ThreadFilter(userId=user.id, search="payroll"))).data

    run(fresh.delete_thread(thread_id))
    assert run(fresh.get_thread(thread_id)) is None
    assert run(fresh.list_threads(Pagination(first=10), ThreadFilter(userId=user.id))).data == []


def test_thread_list_pages_newest_first(store):
    layer = ClickHouseDataLayer(store)
    user = run(layer.create_user(User(identifier="bob")))
    ids = [f"t{i}" for i in range(5)]
    for tid in ids:
        run(layer.update_thread(tid, user_id=user.id, name=tid))
    first = run(layer.list_threads(Pagination(first=2), ThreadFilter(userId=user.id)))
    assert [t["id"] for t in first.data] == ["t4", "t3"] and first.pageInfo.hasNextPage
    second = run(layer.list_threads(Pagination(first=2, cursor=first.pageInfo.endCursor), ThreadFilter(userId=user.id)))
    assert [t["id"] for t in second.data] == ["t2", "t1"]
    other = run(layer.create_user(User(identifier="carol")))
    assert run(layer.list_threads(Pagination(first=10), ThreadFilter(userId=other.id))).data == []


def test_chart_elements_are_stored_with_their_content(store):
    layer = ClickHouseDataLayer(store)
    fig = go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2], name="p95_ms"))
    element = Plotly(name="latency", figure=fig, display="inline", thread_id="th-1", for_id="s2")
    run(layer.create_element(element))
    content, mime = run(layer.get_element_content("th-1", element.id))
    assert mime == "application/json"
    assert json.loads(content)["data"][0]["y"] == [3, 1, 2]
    thread = run(layer.get_thread("th-1"))
    assert thread is not None
    [stored] = thread["elements"]
    assert stored["type"] == "plotly" and stored["url"] == f"/chat-files/th-1/{element.id}"
    run(layer.delete_element(element.id))
    assert run(layer.get_element_content("th-1", element.id)) is None


def test_feedback_is_stored_once_per_answer_and_exported_as_eval_cases(store):
    layer = ClickHouseDataLayer(store)
    user = run(layer.create_user(User(identifier="dana")))
    answer = {"answer": "payment is slow", "model": "builtin",
              "root_causes": [{"service": "payment", "operation": "POST /charge", "kind": "latency",
                               "confidence": 0.8, "evidence": "p95 900 ms vs 50 ms"}]}
    run(layer.update_thread("th", user_id=user.id))
    run(layer.create_step(_step("th", "q1", "user_message", "Why is checkout slow?", "2026-01-01T00:00:01Z")))
    run(layer.create_step(_step("th", "a1", "assistant_message", "payment is slow", "2026-01-01T00:00:02Z",
                                metadata={"question": "Why is checkout slow?", "answer": answer,
                                          "settings": {"since": "30m", "role": "sre"}})))
    run(layer.create_step(_step("th", "q2", "user_message", "and errors?", "2026-01-01T00:00:03Z")))
    run(layer.create_step(_step("th", "a2", "assistant_message", "no errors", "2026-01-01T00:00:04Z")))

    first = run(layer.upsert_feedback(Feedback(forId="a1", value=0, threadId="th")))
    again = run(layer.upsert_feedback(Feedback(forId="a1", value=1, threadId="th", comment="right: payment")))
    assert again == first  # a second thumb replaces the first
    down = run(layer.upsert_feedback(Feedback(forId="a2", value=0, comment="missed the DB errors")))

    thread = run(layer.get_thread("th"))
    assert thread is not None
    feedback = {s["id"]: s.get("feedback") for s in thread["steps"]}
    assert feedback["a1"] == {"id": first, "forId": "a1", "value": 1, "comment": "right: payment"}
    assert feedback["a2"]["value"] == 0 and feedback["q1"] is None
    voted_up = run(layer.list_threads(Pagination(first=5), ThreadFilter(userId=user.id, feedback=1)))
    assert [t["id"] for t in voted_up.data] == ["th"]

    cases = {c["metadata"]["step_id"]: c for c in export_feedback_cases(store)}
    assert set(cases) == {"a1", "a2"}
    up = cases["a1"]
    assert up["inputs"] == {"question": "Why is checkout slow?", "since": "30m", "role": "sre"}
    assert up["expected_output"] == {"root_cause_service": "payment", "root_cause_operation": "POST /charge",
                                     "kind": "latency"}
    assert up["metadata"]["rating"] == "up" and up["metadata"]["comment"] == "right: payment"
    assert up["metadata"]["user"] == "dana" and up["metadata"]["model"] == "builtin"
    down_case = cases["a2"]
    assert down_case["inputs"] == {"question": "and errors?"}  # found from the thread, not the metadata
    assert down_case["expected_output"] is None
    assert down_case["metadata"]["comment"] == "missed the DB errors"

    assert run(layer.delete_feedback(down))
    assert {c["metadata"]["step_id"] for c in export_feedback_cases(store)} == {"a1"}

    # What the UI does: the thumbs sit on Chainlit's `on_message` run step (child of the question,
    # parent of the answer message that carries the metadata).
    run(layer.create_step(_step("th", "q3", "user_message", "Why is cart slow?", "2026-01-01T00:00:05Z")))
    run(layer.create_step(_step("th", "r3", "run", "", "2026-01-01T00:00:05.5Z", parentId="q3")))
    run(layer.create_step(_step("th", "a3", "assistant_message", "cart is slow", "2026-01-01T00:00:06Z",
                                parentId="r3", metadata={"question": "Why is cart slow?", "answer": {
                                    **answer, "answer": "cart is slow", "root_causes": [
                                        {**answer["root_causes"][0], "service": "cart"}]}})))
    run(layer.upsert_feedback(Feedback(forId="r3", value=1, threadId="th")))
    run_case = next(c for c in export_feedback_cases(store) if c["metadata"]["step_id"] == "r3")
    assert run_case["inputs"] == {"question": "Why is cart slow?"}
    assert run_case["expected_output"]["root_cause_service"] == "cart"
    assert run_case["metadata"]["answer"] == "cart is slow"
