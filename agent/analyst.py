"""The built-in analyst: a deterministic pydantic-ai FunctionModel that plans tool calls from the
question and writes a short, evidence-backed answer. Offline, no weights, the default model.

It knows no service names. It reads the question (agent.question), then works like an SRE:
overview -> anomalies -> latency breakdown (following the call graph down to where self time or
errors grew) -> attribute comparison -> logs -> resource metrics -> an exemplar trace, and
concludes from what the data holds (agent.diagnosis). Each step is a real tool call, so its SQL
and results are in the evidence exactly as for an LLM.
"""

from __future__ import annotations

from typing import Any

from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from agent.deps import CURRENT

MODEL_NAME = "builtin"
MAX_STEPS = 12

CAPABILITIES = (
    "I can answer questions about the telemetry in this store: why a service or operation is slow or failing, "
    "what is unusual right now (anomalies), traffic and error rates per service, comparisons with the time "
    "before, and a single trace by its id. Name a service, an operation or a time range (\"last 15 minutes\", "
    "\"since 10:30\", \"between 9:00 and 9:20\" UTC) to narrow it down."
)


def builtin_model() -> FunctionModel:
    """The built-in analyst as a pydantic-ai model (usable alone or in a FallbackModel chain)."""
    return FunctionModel(analyst_step, model_name=MODEL_NAME)


async def analyst_step(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """One model turn: the next tool calls of the plan, or the final answer."""
    deps = CURRENT.get()
    if deps is None:
        return ModelResponse(parts=[TextPart("The built-in analyst runs inside otel-ai's `ask`. " + CAPABILITIES)])
    from agent import diagnosis, kinds, measures

    deps.order_calls(messages)  # the last step's calls finished in any order; the answer cites them by position

    # top-N, breakdowns, time series, comparisons, logs, dependencies, changes and conversation have their
    # own answers (agent.kinds); a number of one service gets the number first; the rest is a diagnosis
    if kinds.classify(deps) is not None:
        brain = kinds
    elif measures.wanted(deps):
        brain = measures
        deps.context["_charts"] = []  # a number needs no chart
    else:
        brain = diagnosis
    offered = {t.name for t in info.function_tools}
    steps = sum(1 for m in messages if isinstance(m, ModelResponse)) - deps.context.get("history_responses", 0)
    calls: list[tuple[str, dict[str, Any]]] = brain.plan_next(deps, offered) if steps < MAX_STEPS else []
    if calls:
        return ModelResponse(parts=[ToolCallPart(name, args) for name, args in calls])
    finding = deps.context.pop("_finding", None) or brain.conclude(deps)
    if brain is diagnosis and diagnosis.mode(deps) == "diagnose" and "measure_series" in offered \
            and not deps.results("measure_series") and (series := kinds.symptom_series(deps, finding)):
        deps.context["_finding"] = finding  # concluded already: the series only adds the first chart
        return ModelResponse(parts=[ToolCallPart(*series)])
    output_tools = [t.name for t in info.output_tools]
    if output_tools:
        return ModelResponse(parts=[ToolCallPart(output_tools[0], finding.model_dump(mode="json"))])
    return ModelResponse(parts=[TextPart(finding.answer)])
