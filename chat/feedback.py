"""Chat feedback as eval cases: every thumbs up/down (with its comment) on an answer becomes a case.

`otel-ai eval export-feedback` writes these out. A thumbs-up answer's top root cause becomes the
expected output (a regression guard); a thumbs-down keeps the question with no expectation and the
user's comment, for a person to label.
"""

from __future__ import annotations

import json
from typing import Any

from chat.versioned import latest
from store import Store


def _thread_steps(store: Store, thread_id: str) -> list[dict[str, Any]]:
    rows = latest(store, "chat_steps", ["id", "doc", "created_at", "version"], "thread_id = {t:String}",
                  tail="ORDER BY created_at, version", t=thread_id)
    return [json.loads(r["doc"]) for r in rows]


def _rated_answer(steps: list[dict[str, Any]], step_id: str) -> tuple[dict[str, Any], str]:
    """The answer a thumb is about, and its question.

    Chainlit puts the thumbs on the `on_message` run step, whose parent is the user's message and whose
    children include the answer message (the one carrying our metadata); a thumb may also target the
    answer message itself."""
    by_id = {s.get("id"): s for s in steps}
    target = by_id.get(step_id, {})
    answer = target
    if target.get("type") == "run":
        children = [s for s in steps if s.get("parentId") == step_id and s.get("type") == "assistant_message"]
        answer = next((s for s in reversed(children) if (s.get("metadata") or {}).get("answer")),
                      children[-1] if children else {})
    question = (answer.get("metadata") or {}).get("question") or ""
    if not question:
        asker = by_id.get(target.get("parentId") or "", {})
        if asker.get("type") == "user_message":
            question = asker.get("output") or ""
    if not question:  # the last user message before the rated step
        before = target.get("createdAt") or ""
        for s in steps:
            if s.get("type") == "user_message" and (not before or (s.get("createdAt") or "") <= before):
                question = s.get("output") or question
    return answer, question


def export_feedback_cases(store: Store) -> list[dict[str, Any]]:
    """One dict per feedback, shaped like a pydantic-evals Case: name, inputs, expected_output, metadata."""
    cases: list[dict[str, Any]] = []
    feedback = latest(store, "chat_feedback",
                      ["id", "thread_id", "step_id", "created_at", "value", "comment", "user_identifier"],
                      tail="ORDER BY created_at, id")
    for fb in feedback:
        step, question = _rated_answer(_thread_steps(store, fb["thread_id"]), fb["step_id"])
        if not question:
            continue
        meta = step.get("metadata") or {}
        answer = meta.get("answer") or {}
        prefs = meta.get("settings") or {}
        root_causes = answer.get("root_causes") or []
        expected = None
        if fb["value"] == 1 and root_causes:
            top = root_causes[0]
            expected = {"root_cause_service": top.get("service"), "root_cause_operation": top.get("operation"),
                        "kind": top.get("kind")}
        inputs = {"question": question}
        for key in ("since", "role", "model"):
            if prefs.get(key) and prefs[key] != "auto":
                inputs[key] = prefs[key]
        cases.append({
            "name": f"chat-feedback-{fb['id'][:8]}",
            "inputs": inputs,
            "expected_output": expected,
            "metadata": {
                "source": "chat-feedback",
                "feedback_id": fb["id"],
                "thread_id": fb["thread_id"],
                "step_id": fb["step_id"],
                "value": int(fb["value"]),
                "rating": "up" if fb["value"] == 1 else "down",
                "comment": fb["comment"],
                "user": fb["user_identifier"],
                "created_at": fb["created_at"].isoformat() if fb["created_at"] else None,
                "answer": answer.get("answer") or step.get("output") or "",
                "root_causes": root_causes,
                "model": answer.get("model") or "",
            },
        })
    return cases
