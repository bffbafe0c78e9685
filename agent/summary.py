"""The `summary` role: a second model words the planner's answer for its reader.

Multi-model routing beyond one loop: the planner (the built-in analyst, or a small local model)
investigates and calls the tools; when `OTEL_AI_MODEL_SUMMARY` names another model, that model
rewrites the answer for the reader's role (SRE, developer, manager). It sees the question, the draft
and the evidence summaries, all telemetry fenced as untrusted data, and must keep the draft's names,
numbers and conclusion; root causes and evidence stay the planner's. If it fails, the draft is
shown with a note: a summary is never a reason to lose an answer. `builtin` in a summary chain
stands for the draft itself (the built-in analyst writes its own answers).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pydantic_ai import Agent
from pydantic_ai.exceptions import AgentRunError, ModelAPIError
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import UsageLimits

from agent.answer import Answer
from agent.models import AgentError, resolve_model
from agent.streaming import AnswerDelta, OnEvent
from otel_ai.settings import Settings
from prompts import load
from tools.result import CLOSE_MARK, OPEN_MARK, escape_markers

log = logging.getLogger(__name__)

ROLE = "summary"
# Evidence summaries shown to the summary model, each cut to this many characters.
EVIDENCE_CHARS = 1500
MAX_EVIDENCE = 24  # the analyst records ~16 calls; the writer must see the tools named after its own SQL


@dataclass
class Summary:
    """The text to show, the model that wrote it, its token usage, and why the draft was kept (if it was)."""

    text: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    note: str | None = None


def summary_spec(settings: Settings, planner_label: str) -> str | None:
    """The summary role's model spec when one is configured that is not the planner itself."""
    spec = (settings.model_summary or "").strip()
    if not spec or spec == planner_label or spec.split(",")[0].strip() == "builtin":
        return None
    return spec


def _fenced(text: str) -> str:
    return f"{OPEN_MARK}\n{escape_markers(text)}\n{CLOSE_MARK}"


def summary_prompt(question: str, answer: Answer) -> str:
    """The user message: the question, the draft and the evidence, telemetry fenced as data."""
    evidence = "\n\n".join(
        f"[{i}] {e.tool}: " + (_fenced(e.summary[:EVIDENCE_CHARS]) if e.ok else f"failed: {e.error}")
        for i, e in enumerate(answer.evidence[:MAX_EVIDENCE], start=1)
    )
    causes = "\n".join(
        f"- {c.service}{' / ' + c.operation if c.operation else ''}: {c.kind}, confidence {c.confidence:.2f}"
        for c in answer.root_causes[:3]
    ) or "- none (the analyst found nothing wrong)"
    return (f"Question: {question}\n\nDraft answer:\n{_fenced(answer.answer)}\n\n"
            f"Root causes the analyst ranked:\n{_fenced(causes)}\n\nEvidence:\n{evidence}")


def _draft_model(draft: str) -> FunctionModel:
    """What `builtin` means in a summary chain: the draft, unchanged (streamed like any model's text)."""

    def reply(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart(draft)])

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        yield draft

    return FunctionModel(reply, stream_function=stream, model_name="builtin")


writer: Agent[None, str] = Agent(output_type=str, name="otel-ai-summary")


async def summarize(question: str, answer: Answer, role: str, spec: str, settings: Settings,
                    on_event: OnEvent | None = None) -> Summary:
    """Rewrite `answer.answer` with the summary model; on any model failure keep the draft with a note."""
    try:
        resolved = resolve_model(settings, ROLE, override=spec, builtin=_draft_model(answer.answer))
    except AgentError as exc:
        return Summary(answer.answer, "", note=f"summary model not used: {exc}")
    instructions = load("summary.md").format(role=role)
    prompt = summary_prompt(question, answer)
    limits = UsageLimits(request_limit=2)
    try:
        if on_event is None:
            result = await writer.run(prompt, model=resolved.model, instructions=instructions, usage_limits=limits)
            text, usage, name = result.output, result.usage, result.response.model_name
        else:
            async with writer.run_stream(prompt, model=resolved.model, instructions=instructions,
                                         usage_limits=limits) as stream:
                async for delta in stream.stream_text(delta=True, debounce_by=None):
                    await on_event(AnswerDelta(delta))
                text = await stream.get_output()
                usage, name = stream.usage, stream.response.model_name
    except (ModelAPIError, AgentRunError) as exc:  # unreachable, refused, misbehaved, over its limits
        log.warning("summary model %s failed: %s", spec, exc)
        if on_event is not None:
            await on_event(AnswerDelta(answer.answer))
        return Summary(answer.answer, "", note=f"summary model {spec} failed ({type(exc).__name__}: {exc}); "
                                               "showing the analyst's own answer")
    label = next((s for s in spec.split(",") if name and s.strip().split(":", 1)[-1] == name), spec.split(",")[0])
    if name == "builtin":
        label = "builtin"
    text = text.strip() or answer.answer
    return Summary(text, label.strip(), usage.input_tokens, usage.output_tokens)
