"""Chat feedback (exported by the chat UI as case dicts) turned into an eval suite file.

A thumbs-up answer's top root cause becomes the expectation (a person confirmed it); a thumbs-down
case keeps its question (no expected root cause: nobody said which is right), so the next model is
still checked for groundedness and SQL safety on it.
"""

from __future__ import annotations

from typing import Any

import yaml

from evals.cases import EvalInput, Expect


def feedback_suite(exported: list[dict[str, Any]]) -> dict[str, Any]:
    """A pydantic-evals dataset document (YAML-ready) from the chat's exported feedback cases."""
    cases = []
    for item in exported:
        inputs = EvalInput(questions=[item["inputs"]["question"]])
        expected = item.get("expected_output") or {}
        expect = Expect(root_cause="truth" if expected.get("root_cause_service") else None,
                        root_cause_service=expected.get("root_cause_service"))
        cases.append({
            "name": item["name"],
            "inputs": inputs.model_dump(exclude_defaults=True),
            "metadata": expect.model_dump(exclude_defaults=True),
        })
    return {"name": "feedback", "cases": cases,
            "evaluators": ["RootCauseTop1", "RootCauseTop3", "Groundedness", "SQLSafety", "NoError"]}


def dump_suite(doc: dict[str, Any]) -> str:
    header = "# Eval cases exported from chat feedback (otel-ai eval export-feedback).\n"
    return header + yaml.safe_dump(doc, sort_keys=False, width=110)
