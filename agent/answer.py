"""The typed result of `ask`: what chat, Slack, the CLI (`--json`) and `POST /api/ask` all show.

One shape for every front end, so an answer rendered in Slack carries the same evidence as the one
in the chat UI or in an eval report.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Kind = Literal["latency", "errors", "saturation", "dependency", "change"]


class RootCause(BaseModel):
    """One ranked explanation of the symptom, with the numbers that support it."""

    service: str
    operation: str | None = None
    kind: Kind
    confidence: float = Field(ge=0.0, le=1.0)
    evidence: str = ""


class Evidence(BaseModel):
    """One tool call the agent made: what it ran and what it saw."""

    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    sql: list[str] = Field(default_factory=list)
    summary: str = ""
    ok: bool = True
    error: str | None = None
    rows: list[dict[str, Any]] = Field(
        default_factory=list, description="the tool's full result rows (first 200), beyond the model's summary"
    )


class ChartSpec(BaseModel):
    """A Plotly figure as JSON (`fig.to_plotly_json()`), rendered by the front end."""

    title: str
    figure: dict[str, Any]


class Answer(BaseModel):
    """The agent's answer with its evidence, ranked root causes and how it was produced."""

    answer: str
    root_causes: list[RootCause] = Field(default_factory=list)
    evidence: list[Evidence] = Field(default_factory=list)
    charts: list[ChartSpec] = Field(default_factory=list)
    traces: list[dict[str, Any]] = Field(default_factory=list)
    follow_ups: list[str] = Field(default_factory=list)
    model: str = ""
    models: dict[str, str] = Field(
        default_factory=dict, description="the model per role that took part: planner, and summary when configured"
    )
    timings: dict[str, float] = Field(default_factory=dict)
    usage: dict[str, int] = Field(default_factory=dict)


class Finding(BaseModel):
    """What a model hands back at the end of a run (the `final_result` output tool).

    The agent adds evidence, charts, traces, model, timings and usage itself: a model cannot
    invent evidence, it can only point at the tool calls it made.
    """

    answer: str = Field(description="short markdown answer naming the root cause with its numbers")
    root_causes: list[RootCause] = Field(default_factory=list, description="ranked, most likely first")
    follow_ups: list[str] = Field(default_factory=list, description="questions the user may ask next")
