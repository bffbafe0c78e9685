"""Typed dependencies of one agent run: the store, the time window, settings, the user's role,
the parsed question and the ledger of every tool call (the evidence)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart

from agent.question import Question
from otel_ai.settings import Settings
from store import Store, StorePool

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


class Handles:
    """The store handles one answer's tools query on, so that the tools of one step run side by side.

    A handle runs one query at a time. A call takes the answer's own handle when it is free, else an idle
    handle of `spare` for as long as that one call takes, else waits for its own. A spare is never held
    for the whole answer: another request waiting on the same pool waits for one query, not one answer,
    and the pool still bounds how many queries run at once."""

    def __init__(self, store: Store, spare: StorePool | None = None) -> None:
        self.store = store
        self.spare = spare
        self._own = threading.Lock()

    @contextlib.contextmanager
    def borrow(self) -> Iterator[Store]:
        if not self._own.acquire(blocking=False):
            spare = self._idle_spare()
            if spare is not None:
                pool, store = spare
                try:
                    yield store
                finally:
                    pool.release(store)
                return
            self._own.acquire()
        try:
            yield self.store
        finally:
            self._own.release()

    def _idle_spare(self) -> tuple[StorePool, Store] | None:
        if self.spare is None:
            return None
        try:
            return self.spare, self.spare.acquire(timeout=0)
        except Exception:  # every spare is busy (StoreBusy) or a new one could not be opened: wait for our own
            return None


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
    spare: StorePool | None = None  # idle handles a tool call may take besides `store` (agent.deps.Handles)
    handles: Handles = field(init=False, repr=False)  # what the tools query on

    def __post_init__(self) -> None:
        self.handles = Handles(self.store, self.spare)

    def order_calls(self, messages: Sequence[ModelMessage]) -> None:
        """Evidence in the order the model asked for it: the calls of one step run side by side and finish
        in any order, and an answer cites its evidence by position."""
        ids = [p.tool_call_id for m in messages if isinstance(m, ModelResponse) for p in m.parts
               if isinstance(p, ToolCallPart)]
        rank = {call_id: i for i, call_id in enumerate(ids)}
        self.calls.sort(key=lambda c: rank.get(c.call_id, -1))

    def results(self, tool: str | None = None) -> list[ToolCall]:
        return [c for c in self.calls if tool is None or c.tool == tool]

    def by_id(self, call_id: str) -> ToolCall | None:
        return next((c for c in self.calls if c.call_id == call_id), None)


# The run being answered: the built-in analyst (a FunctionModel, which sees only messages) reads
# the structured tool results from here instead of re-parsing their text summaries.
CURRENT: ContextVar[AgentDeps | None] = ContextVar("otel_ai_agent_deps", default=None)
