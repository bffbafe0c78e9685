"""The chat with LLMs behind the OpenAI-compatible API (a local fake server), in headless Chromium:
tool calls appear as steps while the model is still working (streaming), and dashboards are planned
by the "sql" role's model — its panels render, an unsafe SQL panel is dropped with the reason.

One `otel-ai serve` per module with OTEL_AI_MODEL_PLANNER and OTEL_AI_MODEL_SQL pointing at the fake
server, loaded with 12 minutes of the paymentSlow scenario by the simulator.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from tests.fakes.llm import FakeLLMServer, ScriptedBrain
from tests.fixtures.browser import ChatPage, cli
from tests.fixtures.server import ServerProcess, make_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

MODEL_DELAY_S = 1.5  # the fake analyst thinks this long before each reply
CHUNK_CHARS, CHUNK_DELAY_S = 24, 0.4  # its final answer arrives in pieces this big, this far apart
UNSAFE_SQL = "SELECT line FROM file('/etc/passwd', 'LineAsString') WHERE {window}"
ANSWER = "payment is the root cause: its Charge calls got slower, and checkout waits on them."

ANALYST = ScriptedBrain(
    calls=[("service_overview", {}), ("latency_breakdown", {"service": "checkout"}),
           ("run_sql", {"sql": "SELECT ServiceName AS service, count() AS spans FROM otel_traces "
                               "GROUP BY service ORDER BY spans DESC"})],
    final=lambda body: {"answer": ANSWER, "root_causes": [
        {"service": "payment", "operation": None, "kind": "latency", "confidence": 0.8, "evidence": "Charge p95"}]},
)


def dashboard_plan(body: dict[str, Any]) -> dict[str, Any]:
    return {"content": None, "tool_calls": [{"name": "final_result", "arguments": {"panels": [
        {"kind": "requests_errors"},
        {"kind": "latency_percentiles"},
        {"kind": "sql", "title": "checkout spans by kind", "chart": "bar", "why": "what checkout does",
         "sql": "SELECT SpanKind AS kind, count() AS spans FROM otel_traces WHERE ServiceName = 'checkout' "
                "AND {window} GROUP BY kind ORDER BY spans DESC"},
        {"kind": "sql", "title": "passwords", "sql": UNSAFE_SQL},
    ]}}]}


def is_dashboard_request(body: dict[str, Any]) -> bool:
    tools = [t.get("function", {}) for t in body.get("tools") or []]
    return any(t.get("name") == "final_result" and "panels" in json.dumps(t.get("parameters")) for t in tools)


def brain(body: dict[str, Any]) -> dict[str, Any]:
    """Dashboard requests get a plan; questions go to the analyst (one tool per reply)."""
    return dashboard_plan(body) if is_dashboard_request(body) else ANALYST(body)


class TypingLLMServer(FakeLLMServer):
    """The fake OpenAI-compatible server with a slow analyst: it thinks MODEL_DELAY_S before each reply,
    and a streamed final answer comes as a model types it, the `final_result` arguments in several SSE
    chunks CHUNK_DELAY_S apart."""

    def chat_completion(self, h: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        if is_dashboard_request(body):
            return super().chat_completion(h, body)
        time.sleep(MODEL_DELAY_S)
        calls = self.brain(body).get("tool_calls") or []
        if not body.get("stream") or [c["name"] for c in calls] != ["final_result"]:
            return super().chat_completion(h, body)
        args = json.dumps(calls[0]["arguments"])
        call_id = f"call_{uuid.uuid4().hex[:12]}"
        deltas = [{"role": "assistant", "content": None, "tool_calls": [
            {"index": 0, "id": call_id, "type": "function", "function": {"name": "final_result", "arguments": ""}}]}]
        deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": args[i:i + CHUNK_CHARS]}}]}
                   for i in range(0, len(args), CHUNK_CHARS)]
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.end_headers()
        base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body.get("model", self.model)}
        chunks = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
        chunks += [{"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
                   {"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}}]
        for chunk in chunks:
            h.wfile.write(f"data: {json.dumps({**base, **chunk})}\n\n".encode())
            h.wfile.flush()
            time.sleep(CHUNK_DELAY_S)
        h.wfile.write(b"data: [DONE]\n\n")
        h.wfile.flush()


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLLMServer]:
    with TypingLLMServer(brain, api_key="sk-test") as fake:
        yield fake


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, llm: FakeLLMServer) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("chat-llm")
    (root / "data").mkdir()
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": llm.v1_url,
           "OTEL_AI_MODEL_PLANNER": "openai:fake-analyst", "OTEL_AI_MODEL_SQL": "openai:fake-planner"}
    server = make_server(root / "data", root / "serve.log", env=env).start()
    try:
        sim = cli(server, "sim", "--scenario", "paymentSlow", "--endpoint", f"http://{server.otlp_grpc_endpoint}",
                  "--history", "12m", "--live", "0", "--seed", "2", "--rate", "1.5", "--quiet", timeout=600)
        assert sim.returncode == 0, sim.stderr[-2000:]
        yield server
    finally:
        server.stop()


@pytest.fixture
def chat(chromium, served, chat_artifacts, request) -> Iterator[ChatPage]:
    page = ChatPage(chromium, served, chat_artifacts, "llm-" + request.node.name.removeprefix("test_")[:36])
    yield page
    page.shot("last")
    page.close()


# Records when the first tool step and the first answer text appear in the page (and the step's label then).
WATCH = """() => {
  const marks = window.__marks = {};
  new MutationObserver(() => {
    if (!marks.tool) {
      const step = document.querySelector('[data-step-type="tool"]');
      if (step) { marks.tool = performance.now(); marks.toolLabel = step.innerText.replace(/\\s+/g, ' ').trim(); }
    }
    if (!marks.answer) {
      const msg = [...document.querySelectorAll('[data-step-type="assistant_message"]')]
        .find(e => e.innerText.trim().length > 0);
      if (msg) { marks.answer = performance.now(); marks.firstText = msg.innerText.trim(); marks.toolsAtAnswer =
        document.querySelectorAll('[data-step-type="tool"]').length; }
    }
    if (!marks.full && [...document.querySelectorAll('[data-step-type="assistant_message"]')]
        .some(e => e.innerText.includes(window.__answer))) { marks.full = performance.now(); }
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def test_tool_steps_show_while_the_model_is_still_working(chat, llm):
    chat.open()
    chat.page.evaluate(f"() => {{ window.__answer = {json.dumps(ANSWER)}; }}")
    chat.page.evaluate(WATCH)
    requests_before = len(llm.requests)
    chat.send("Why is checkout slow?")
    marks = chat.page.evaluate("() => window.__marks")
    answer = chat.assistant_messages().last.inner_text()
    assert ANSWER in answer and "Ranked root causes" in answer
    # The first tool step was on the page, still running, long before any answer text: the model took
    # MODEL_DELAY_S for each of the three replies after it. Steps shown only after the answer was
    # complete would come within a moment of the answer text, already finished.
    assert marks.get("tool") and marks.get("answer"), marks
    assert marks["toolLabel"].startswith("Using service_overview"), marks
    assert marks["answer"] - marks["tool"] >= 2 * MODEL_DELAY_S * 1000, marks
    assert marks["toolsAtAnswer"] == 3, marks
    # The answer text streamed in as the model sent it: first only its start, the whole of it only after
    # the model's next chunks (CHUNK_DELAY_S apart) had come.
    assert 0 < len(marks["firstText"]) < len(ANSWER) and ANSWER.startswith(marks["firstText"]), marks
    assert marks["full"] - marks["answer"] >= 2 * CHUNK_DELAY_S * 1000, marks
    assert len(llm.requests) - requests_before == 4 and all(b.get("stream") for b in llm.requests[-4:])

    # After the answer the steps hold the evidence: the SQL, a result table and a chart.
    chat.page.get_by_text("Used Investigating").first.click()
    chat.page.get_by_text(re.compile(r"^Used run_sql$")).first.click()
    code = chat.page.locator("pre code, code").filter(has_text=re.compile(r"\bFROM otel_traces\b"))
    code.first.wait_for()
    step = chat.page.locator('[data-step-type="tool"]').filter(has_text="run_sql")
    assert "checkout" in step.locator("table").first.inner_text()
    step.locator(".js-plotly-plot").first.wait_for()
    chat.shot("evidence")
    assert chat.external_requests() == []


def test_llm_planned_dashboard_renders_its_panels_and_drops_unsafe_sql(chat, llm):
    chat.open()
    chat.send("/dashboard checkout as checkout-llm")
    board = chat.assistant_messages().last
    text = board.inner_text()
    assert "Dashboard: checkout-llm" in text and "Panels chosen by openai:fake-planner" in text, text
    assert re.search(r"Dropped panel passwords: SQL refused: (table )?function file\(\) is not allowed", text), text
    assert "3 panels" in text
    board.locator(".js-plotly-plot").nth(2).wait_for()
    assert board.locator(".js-plotly-plot").count() == 3
    assert "root:" not in chat.page.content()
    assert any(is_dashboard_request(b) for b in llm.requests)
    chat.shot("dashboard")

    # saved with the model's panels: re-opening runs them again without asking the model
    asked = len(llm.requests)
    chat.send("/dashboard open checkout-llm")
    rerun = chat.assistant_messages().last
    assert "Dashboard: checkout-llm" in rerun.inner_text()
    rerun.locator(".js-plotly-plot").nth(2).wait_for()
    assert len(llm.requests) == asked
