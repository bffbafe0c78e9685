"""`POST /api/ask`: the agent over HTTP for the CLI, evals and other clients (same JSON as `ask --json`)."""

from __future__ import annotations

from collections import OrderedDict

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from otel_ai.context import ServerContext

MAX_CONVERSATIONS = 500


class AskRequest(BaseModel):
    question: str = Field(min_length=1, max_length=4000)
    since: str | None = None
    model: str | None = None
    role: str = "sre"
    conversation_id: str | None = Field(None, max_length=200)


def mount(app: FastAPI, ctx: ServerContext) -> None:
    """Add POST /api/ask; follow-ups share a Conversation by `conversation_id` (kept in memory)."""
    from agent import Conversation, ask
    from agent.models import AgentError, ModelConfigError

    conversations: OrderedDict[str, Conversation] = ctx.state.setdefault("conversations", OrderedDict())

    @app.post("/api/ask")
    async def api_ask(request: AskRequest) -> JSONResponse:
        if not request.question.strip():
            return JSONResponse({"error": "empty question"}, status_code=400)
        if request.since is not None:
            from tools.timewindow import parse_duration

            try:
                parse_duration(request.since)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        conversation = None
        if request.conversation_id:
            conversation = conversations.pop(request.conversation_id, None) or Conversation(id=request.conversation_id)
            conversations[request.conversation_id] = conversation
            while len(conversations) > MAX_CONVERSATIONS:
                conversations.popitem(last=False)
        try:
            answer = await ask(
                request.question, store=ctx.store, settings=ctx.settings, conversation=conversation,
                since=request.since, model=request.model, role=request.role,
            )
        except ModelConfigError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except AgentError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        return JSONResponse(answer.model_dump(mode="json"))
