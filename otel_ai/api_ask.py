"""`POST /api/ask`: the agent over HTTP for the CLI, evals and other clients (same JSON as `ask --json`).

Only the configured models may be asked for (Settings.model_choices), and each answer's queries run
on a pooled handle of their own (ctx.query_handle), so they never hold up health checks or ingest."""

from __future__ import annotations

from collections import OrderedDict

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from agent.question import MAX_QUESTION_CHARS
from otel_ai.context import ServerContext
from store import StoreBusy

MAX_CONVERSATIONS = 500


class AskRequest(BaseModel):
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    since: str | None = None
    model: str | None = None
    role: str = "sre"
    conversation_id: str | None = Field(None, max_length=200)


def mount(app: FastAPI, ctx: ServerContext) -> None:
    """Add POST /api/ask; follow-ups share a Conversation by `conversation_id` (kept in memory)."""
    from agent import Conversation, ask
    from agent.models import AgentError, ModelConfigError, parse_spec

    choices = ctx.settings.model_choices()

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
        if request.model is not None and request.model not in choices:
            try:
                parse_spec(request.model)  # a malformed spec gets the parser's precise message
            except ModelConfigError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            return JSONResponse({"error": f"model {request.model!r} is not configured on this server: "
                                          f"choose one of {', '.join(choices)}"}, status_code=400)
        conversation = None
        if request.conversation_id:
            conversation = conversations.pop(request.conversation_id, None) or Conversation(id=request.conversation_id)
            conversations[request.conversation_id] = conversation
            while len(conversations) > MAX_CONVERSATIONS:
                conversations.popitem(last=False)
        try:
            async with ctx.query_handle() as store:
                answer = await ask(
                    request.question, store=store, settings=ctx.settings, conversation=conversation,
                    since=request.since, model=request.model, role=request.role, spare=ctx.queries,
                )
        except StoreBusy as exc:
            return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "5"})
        except ModelConfigError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except AgentError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        return JSONResponse(answer.model_dump(mode="json"))
