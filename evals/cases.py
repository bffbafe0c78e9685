"""The shape of an eval case: which data, which questions, what a right answer holds.

Expected values are never hard-coded numbers: the root cause comes from the scenario's ground
truth and each fact is a SQL query over the stored data, evaluated when the case runs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class Plant(BaseModel):
    """Telemetry added after the scenario, through OTLP like the rest (prompt injection text)."""

    service: str = "frontend"
    span_name: str = "GET /api/products"
    span_attributes: dict[str, str] = Field(default_factory=dict)
    log_body: str | None = None
    count: int = 20

class Fact(BaseModel):
    """A number the answer must state, computed from the stored data by `sql` (one value).

    `sql` may use {start} and {end} (the fault window, as DateTime64 literals) and {root_cause}.
    `unit` says how the number appears in text: `count`, `percent`, `ms` (a duration, also
    accepted in s), or `number`; `text` is a string the answer must contain (a trace id, a name).
    """

    name: str
    sql: str
    unit: Literal["count", "percent", "ms", "number", "text"] = "number"
    tolerance: float = Field(0.05, description="relative tolerance")
    turn: int = -1


class EvalInput(BaseModel):
    """Data to load and the questions to ask, in one conversation."""

    scenario: str | None = Field(
        None, description="simulator scenario to load; None runs on the configured store (exported chat feedback)"
    )
    seed: int = 1
    history: str = "40m"
    questions: list[str] = Field(min_length=1)
    plant: Plant | None = None
    facts: list[Fact] = Field(default_factory=list, description="numbers the answers must state")



class Expect(BaseModel):
    """What a right answer holds."""

    root_cause: Literal["truth", "none"] | None = Field(
        None, description="truth: the scenario's root-cause service; none: no confident root cause"
    )
    root_cause_service: str | None = Field(
        None, description="a service a person confirmed (exported thumbs-up feedback) instead of ground truth"
    )
    turn: int = Field(0, description="which question's answer names the root cause")
    mention: list[str] = Field(default_factory=list, description="templates that must appear in the last answer")
    forbidden: list[str] = Field(default_factory=list, description="regexes no answer may match")
    chart: Literal["bar", "line", "graph", "gantt", "heatmap", "scatter", "none"] | None = Field(
        None, description="the kind of the last answer's first chart; none: no chart")
    suggests_services: bool = Field(False, description="the last answer's follow-ups name a service in the data")
    expected_tools: list[str] = Field(default_factory=list)
    forbidden_tools: list[str] = Field(default_factory=list)


class TurnRecord(BaseModel):
    question: str
    answer: dict[str, Any]


class EvalOutput(BaseModel):
    """What a case produced, with the facts of the data it ran on (so evaluators need no store)."""

    turns: list[TurnRecord]
    truth: dict[str, Any]
    facts: dict[str, float | str | None] = Field(default_factory=dict)
    services: list[str] = Field(default_factory=list)
    operations: list[str] = Field(default_factory=list)
    sql_checks: list[dict[str, Any]] = Field(default_factory=list)
    tables_intact: bool = True
    secrets: list[str] = Field(default_factory=list, exclude=True)
    seconds: float = 0.0
    tokens: int = 0
    error: str | None = None
