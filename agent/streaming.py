"""Live progress of one `ask`: each tool call as it starts and ends, and the answer text as it is produced.

`ask(..., on_event=handler)` runs the pydantic-ai agent with an event stream handler and turns its
events into three plain events a front end can show at once (the chat opens a step per tool call and
streams the answer into its message). The answer text comes from the model's stream either way: plain
text deltas, or the `answer` field of the `final_result` output tool read from its partial JSON
arguments. The built-in analyst streams too (`builtin_streaming_model`): its answer arrives in chunks
through the same path as an LLM's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pydantic_core
from pydantic_ai import RunContext
from pydantic_ai.messages import (
    AgentStreamEvent,
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    ModelMessage,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
    ToolCallPart,
    ToolCallPartDelta,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from agent.answer import Evidence
from agent.deps import AgentDeps

# Rows of a finished tool call carried by its event (the chat shows a table of the first ones).
EVENT_ROWS = 200
# Characters per chunk when the built-in analyst streams its (already complete) answer.
BUILTIN_CHUNK = 48


@dataclass
class ToolStarted:
    """The model asked for a tool call; it runs now."""

    call_id: str
    tool: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class ToolFinished:
    """A tool call ended: its evidence (SQL, summary, rows, ok/error) as it will appear in the Answer."""

    call_id: str
    tool: str
    evidence: Evidence
    seconds: float = 0.0


@dataclass
class AnswerDelta:
    """The next piece of the answer's markdown text."""

    text: str


AgentEvent = ToolStarted | ToolFinished | AnswerDelta
OnEvent = Callable[[AgentEvent], Awaitable[None]]


def is_output_tool(name: str) -> bool:
    """pydantic-ai's output tools (`final_result`, `final_result_<Type>`) carry the answer, not evidence."""
    return name.startswith("final_result")


def partial_answer(args_json: str) -> str:
    """The `answer` field of a partial JSON object (`{"answer": "Payment is sl` -> `Payment is sl`)."""
    if not args_json.strip():
        return ""
    try:
        value = pydantic_core.from_json(args_json, allow_partial="trailing-strings")
    except ValueError:
        return ""
    answer = value.get("answer") if isinstance(value, dict) else None
    return answer if isinstance(answer, str) else ""


class EventRelay:
    """A pydantic-ai `event_stream_handler` that forwards tool and answer progress to `on_event`."""

    def __init__(self, on_event: OnEvent) -> None:
        self.on_event = on_event
        self.sent = ""  # answer text forwarded so far
        self._step = 0  # model responses seen (part indices restart in each)
        self._forwarded: dict[tuple[int, int], int] = {}  # (step, part index) -> characters forwarded
        self._args: dict[int, str] = {}  # output tool part index -> its JSON arguments so far
        self._text: dict[int, str] = {}

    async def __call__(self, ctx: RunContext[AgentDeps], events: AsyncIterable[AgentStreamEvent]) -> None:
        self._step += 1
        self._args.clear()
        self._text.clear()
        async for event in events:
            await self.handle(ctx, event)

    async def handle(self, ctx: RunContext[AgentDeps], event: AgentStreamEvent) -> None:
        if isinstance(event, PartStartEvent):
            part = event.part
            if isinstance(part, TextPart):
                self._text[event.index] = part.content
                await self._answer(part.content, event.index)
            elif isinstance(part, ToolCallPart) and is_output_tool(part.tool_name):
                self._args[event.index] = part.args_as_json_str() if part.args else ""
                await self._answer(partial_answer(self._args[event.index]), event.index)
        elif isinstance(event, PartDeltaEvent):
            delta = event.delta
            if isinstance(delta, TextPartDelta) and event.index in self._text:
                self._text[event.index] += delta.content_delta
                await self._answer(self._text[event.index], event.index)
            elif isinstance(delta, ToolCallPartDelta) and event.index in self._args:
                if isinstance(delta.args_delta, str):
                    self._args[event.index] += delta.args_delta
                elif isinstance(delta.args_delta, dict):
                    self._args[event.index] = json.dumps(delta.args_delta)
                await self._answer(partial_answer(self._args[event.index]), event.index)
        elif isinstance(event, FunctionToolCallEvent) and not is_output_tool(event.part.tool_name):
            await self.on_event(ToolStarted(call_id=event.tool_call_id, tool=event.part.tool_name,
                                            args=event.part.args_as_dict()))
        elif isinstance(event, FunctionToolResultEvent):
            await self.on_event(self._finished(ctx.deps, event))

    def _finished(self, deps: AgentDeps, event: FunctionToolResultEvent) -> ToolFinished:
        call = deps.by_id(event.tool_call_id)
        if call is None:  # the call never ran (bad arguments): the model gets a retry prompt
            content = getattr(event.part, "content", "")
            return ToolFinished(call_id=event.tool_call_id, tool=event.part.tool_name,
                                evidence=Evidence(tool=event.part.tool_name, ok=False, error=str(content)[:500]))
        r = call.result
        return ToolFinished(
            call_id=call.call_id, tool=call.tool, seconds=call.seconds,
            evidence=Evidence(tool=call.tool, args=call.args, sql=r.sql, summary=r.summary, ok=r.ok, error=r.error,
                              rows=r.rows[:EVENT_ROWS]),
        )

    async def _answer(self, text: str, index: int) -> None:
        """Forward what part `index` added to the answer (a later part starts a new paragraph)."""
        key = (self._step, index)
        done = self._forwarded.get(key)
        if done is None:
            if not text:
                return
            self._forwarded[key] = done = 0
            if self.sent:
                self.sent += "\n\n"
                await self.on_event(AnswerDelta("\n\n"))
        if len(text) > done and text:
            delta = text[done:]
            self._forwarded[key] = len(text)
            self.sent += delta
            await self.on_event(AnswerDelta(delta))


# ---- the built-in analyst, streamed ---------------------------------------------------------


async def stream_builtin(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str | DeltaToolCalls]:
    """The built-in analyst's turn as a stream: tool calls whole, the answer in chunks."""
    from agent.analyst import analyst_step

    response = await analyst_step(messages, info)
    calls = [p for p in response.parts if isinstance(p, ToolCallPart)]
    if not calls:
        text = "".join(p.content for p in response.parts if isinstance(p, TextPart))
        for i in range(0, len(text), BUILTIN_CHUNK):
            yield text[i:i + BUILTIN_CHUNK]
            await asyncio.sleep(0)
        return
    for i, call in enumerate(calls):
        args = call.args_as_json_str()
        if is_output_tool(call.tool_name):
            yield {i: DeltaToolCall(name=call.tool_name, json_args="", tool_call_id=call.tool_call_id)}
            for start in range(0, len(args), BUILTIN_CHUNK):
                yield {i: DeltaToolCall(json_args=args[start:start + BUILTIN_CHUNK])}
                await asyncio.sleep(0)
        else:
            yield {i: DeltaToolCall(name=call.tool_name, json_args=args, tool_call_id=call.tool_call_id)}


def builtin_streaming_model() -> FunctionModel:
    """The built-in analyst answering both plain and streamed requests (an event handler streams)."""
    from agent.analyst import MODEL_NAME, analyst_step

    return FunctionModel(analyst_step, stream_function=stream_builtin, model_name=MODEL_NAME)


def tools_only(on_event: OnEvent) -> OnEvent:
    """`on_event` without the answer text: for a planner run whose answer another model rewrites."""

    async def relay(event: AgentEvent) -> None:
        if not isinstance(event, AnswerDelta):
            await on_event(event)

    return relay
