"""Typed dependencies of one agent run: the store, the time window, settings, the user's role,
the parsed question and the ledger of every tool call (the evidence)."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from agent.question import Question
from otel_ai.settings import Settings
from store import Store

if TYPE_CHECKING:
    from tools.result import ToolResult


@dataclass
class Window:
    """The analysed window and its baseline (both UTC), with a note on how it was chosen."""

    start: datetime
    end: datetime
    baseline_start: datetime
    baseline_end: datetime
    note: str = ""  # where the window ends and why (the latest data, the previous question's window)
    length_note: str = ""  # why it starts where it does (short data, the incident's start)

    def describe(self) -> str:
        fmt = "%Y-%m-%d %H:%M:%S"
        text = (
            f"Window: {self.start:{fmt}} to {self.end:{fmt}} UTC; baseline {self.baseline_start:{fmt}} "
            f"to {self.baseline_end:{fmt}} UTC."
        )
        return " ".join(t for t in (text, self.note, self.length_note) if t)


@dataclass
class ToolCall:
    """One executed tool call, keyed by the model's tool_call_id."""

    call_id: str
    tool: str
    args: dict[str, Any]
    result: ToolResult
    seconds: float


@dataclass
class DataNames:
    """Services and operations present in the data (what question parsing matches against)."""

    services: list[str] = field(default_factory=list)
    operations: dict[str, list[str]] = field(default_factory=dict)  # service -> operations
    latest: datetime | None = None
    earliest: datetime | None = None

    def all_operations(self) -> list[str]:
        return sorted({op for ops in self.operations.values() for op in ops})


@dataclass
class AgentDeps:
    """Everything a tool or the built-in analyst needs during one `ask`."""

    store: Store
    settings: Settings
    window: Window
    question: Question
    names: DataNames
    role: str = "sre"
    context: dict[str, Any] = field(default_factory=dict)  # previous turn (follow-ups)
    calls: list[ToolCall] = field(default_factory=list)

    def results(self, tool: str | None = None) -> list[ToolCall]:
        return [c for c in self.calls if tool is None or c.tool == tool]

    def by_id(self, call_id: str) -> ToolCall | None:
        return next((c for c in self.calls if c.call_id == call_id), None)


# The run being answered: the built-in analyst (a FunctionModel, which sees only messages) reads
# the structured tool results from here instead of re-parsing their text summaries.
CURRENT: ContextVar[AgentDeps | None] = ContextVar("otel_ai_agent_deps", default=None)
