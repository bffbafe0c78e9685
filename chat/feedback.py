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


def _question_before(store: Store, thread_id: str, step: dict[str, Any]) -> str:
    """The last user message of the thread before an answer (when the answer did not record it)."""
    before = step.get("createdAt") or ""
    question = ""
    for row in latest(store, "chat_steps", ["id", "doc", "created_at", "version"], "thread_id = {t:String}",
                      tail="ORDER BY created_at, version", t=thread_id):
        doc = json.loads(row["doc"])
        if doc.get("type") == "user_message" and (not before or (doc.get("createdAt") or "") <= before):
            question = doc.get("output") or question
    return question


def export_feedback_cases(store: Store) -> list[dict[str, Any]]:
    """One dict per feedback, shaped like a pydantic-evals Case: name, inputs, expected_output, metadata."""
    cases: list[dict[str, Any]] = []
    feedback = latest(store, "chat_feedback",
                      ["id", "thread_id", "step_id", "created_at", "value", "comment", "user_identifier"],
                      tail="ORDER BY created_at, id")
    for fb in feedback:
        steps = latest(store, "chat_steps", ["id", "doc"], "id = {id:String}", id=fb["step_id"])
        step = json.loads(steps[0]["doc"]) if steps else {}
        meta = step.get("metadata") or {}
        answer = meta.get("answer") or {}
        question = meta.get("question") or _question_before(store, fb["thread_id"], step)
        if not question:
            continue
        prefs = meta.get("settings") or {}
        root_causes = answer.get("root_causes") or []
        expected = None
        if fb["value"] == 1 and root_causes:
            top = root_causes[0]
            expected = {"root_cause_service": top.get("service"), "root_cause_operation": top.get("operation"),
                        "kind": top.get("kind")}
        inputs = {"question": question}
        for key in ("since", "role", "model"):
            if prefs.get(key):
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
