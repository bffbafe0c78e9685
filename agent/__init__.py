"""The agent: `ask` a question, get an `Answer` with evidence (see docs/agent.md)."""

from agent.answer import Answer, ChartSpec, Evidence, RootCause
from agent.models import AgentError, ModelConfigError, ModelUnavailable


def __getattr__(name: str):  # noqa: ANN202 - lazy: importing pydantic-ai's Agent costs ~1 s
    if name in ("ask", "ask_sync", "Conversation"):
        from agent import agent as _agent

        return getattr(_agent, name)
    raise AttributeError(name)


__all__ = ["AgentError", "Answer", "ChartSpec", "Conversation", "Evidence", "ModelConfigError", "ModelUnavailable",
           "RootCause", "ask", "ask_sync"]
