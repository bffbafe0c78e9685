"""The chat UI end to end: a real `otel-ai serve` loaded by the simulator, driven in headless Chromium.

One server per module (loading the scenario is the expensive part); each test opens its own browser
context. Screenshots go to the folder `chat_artifacts` prints (test-artifacts/chat/ by default).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.fixtures.browser import ChatPage, cli
from tests.fixtures.server import ServerProcess, make_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CLI_TIMEOUT = 120


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict]]:
    """A serve holding 40 minutes of the paymentSlow scenario (fault in the last 10), and its ground truth."""
    root = tmp_path_factory.mktemp("chat-e2e")
    (root / "data").mkdir()
    server = make_server(root / "data", root / "serve.log").start()
    try:
        sim = cli(server, "sim", "--scenario", "paymentSlow", "--endpoint", f"http://{server.otlp_grpc_endpoint}",
                   "--history", "40m", "--live", "0", "--seed", "1", "--rate", "2.5", "--quiet", timeout=600)
        assert sim.returncode == 0, sim.stderr[-2000:]
        truth = json.loads(sim.stdout)["ground_truth"]
        yield server, truth
    finally:
        server.stop()


@pytest.fixture
def chat(chromium, shop, chat_artifacts, request) -> Iterator[ChatPage]:
    page = ChatPage(chromium, shop[0], chat_artifacts, request.node.name.removeprefix("test_")[:40])
    yield page
    page.shot("last")  # the final state, whether the test passed or not
    page.close()


def test_starter_answer_names_the_root_cause_with_sql_steps_charts_and_survives_reload(chat, shop):
    server, truth = shop
    chat.open()
    chat.shot("1-welcome")
    before = chat.assistant_messages().count()
    chat.page.locator('[id^="starter-why-is-checkout-slow"]').click()
    answer = chat.wait_reply(before)
    text = answer.inner_text()
    assert truth["root_cause_service"] in text, text[:2000]
    assert "Ranked root causes" in text
    # Inline, interactive Plotly charts (the plot container Plotly builds in the page).
    # Plotly draws them one by one: wait for the second rather than count what is drawn so far
    chat.page.locator(".js-plotly-plot").nth(1).wait_for()
    # The exemplar trace as a compact waterfall (one bar per span, titled by its trace id).
    answer.get_by_text(re.compile(r"^Trace [0-9a-f]{16}$")).first.wait_for()
    chat.shot("2-answer")

    # Evidence: the run step opens onto one step per tool call; SQL steps show highlighted SQL.
    chat.page.get_by_text("Used Investigating").first.click()
    sql_step = chat.page.get_by_text(re.compile(r"^Used (run_sql|service_overview)$")).first
    sql_step.wait_for()
    sql_step.click()
    code = chat.page.locator("pre code, code").filter(has_text=re.compile(r"\bSELECT\b"))
    code.first.wait_for()
    assert "FROM otel_traces" in " ".join(code.all_inner_texts())
    chat.shot("3-evidence")

    # The thread is in the URL and in ClickHouse: a reload shows the same question, answer and chart.
    assert re.search(r"/thread/[0-9a-f-]{36}$", chat.page.url), chat.page.url
    chat.page.reload()
    chat.page.get_by_text("Ranked root causes").wait_for()
    assert truth["root_cause_service"] in chat.assistant_messages().last.inner_text()
    chat.page.locator(".js-plotly-plot").first.wait_for()
    chat.shot("4-reloaded")
    assert chat.external_requests() == []


def test_a_top_n_list_a_measure_by_service_and_a_time_series_each_get_their_chart(chat, shop):
    """Questions besides "why" (agent.kinds): each answer carries its own chart, titled in words with units."""
    server, truth = shop
    chat.open()
    before = chat.assistant_messages().count()
    chat.page.locator('[id^="starter-show-p95-latency-by-service"]').click()
    by_service = chat.wait_reply(before)
    assert "P95 latency by service" in by_service.inner_text()
    assert truth["root_cause_service"] in by_service.locator("table").inner_text()
    # each answer's own chart, found by its title: Plotly may draw an answer's other charts first
    bars = by_service.locator(".js-plotly-plot .gtitle", has_text="P95 latency by service")
    bars.wait_for()
    assert bars.text_content() == "P95 latency by service (ms)"
    chat.shot("1-by-service")

    chat.send("show me the slowest traces in the last 15 minutes")
    top = chat.assistant_messages().last
    ids = re.findall(r"\b[0-9a-f]{32}\b", top.inner_text())
    assert len(set(ids)) == 5, top.inner_text()[:2000]  # five by default: "last 15 minutes" is no count
    assert f"show trace {ids[0]}" in top.inner_text()
    top.locator(".js-plotly-plot .gtitle", has_text="Slowest traces: duration (ms)").wait_for()
    chat.shot("2-slowest-traces")

    chat.send("p95 latency of checkout over the last 30 minutes")
    series = chat.assistant_messages().last
    assert "P95 latency of" in series.inner_text() and "peak" in series.inner_text()
    title = "P95 latency of checkout over time (ms)"
    plot = series.locator(".js-plotly-plot").filter(has=chat.page.locator(".gtitle", has_text=title))
    plot.wait_for()
    assert plot.locator(".gtitle").text_content() == title
    assert plot.locator(".scatterlayer .trace").count() == 1  # one line
    chat.shot("3-time-series")
    assert chat.external_requests() == []


def test_sql_console_shows_table_and_chart_and_refusals(chat):
    chat.open()
    chat.send("/sql SELECT ServiceName AS service, count() AS spans FROM otel_traces "
              "GROUP BY service ORDER BY spans DESC")
    reply = chat.assistant_messages().last
    assert re.search(r"\d+ rows", reply.inner_text())
    assert reply.locator("table").count() == 1 and "checkout" in reply.locator("table").inner_text()
    reply.locator(".js-plotly-plot").first.wait_for()
    chat.shot("1-result")

    chat.send("/sql SELECT * FROM file('/etc/passwd', 'LineAsString')")
    refusal = chat.assistant_messages().last.inner_text()
    assert "refused" in refusal.lower() and "file" in refusal.lower(), refusal
    assert "root:" not in chat.page.content()
    chat.send("/sql SELECT name FROM system.users")
    assert "system tables are not allowed" in chat.assistant_messages().last.inner_text()
    chat.shot("2-refused")
    assert chat.external_requests() == []


def test_slack_links_open_the_slack_thread(chat):
    """Slack answers link to `/?conversation=slack-<channel>-<ts>`; an unknown thread is named, not an error."""
    chat.open()  # log in first (the local user): the login round trip drops the query string
    chat.page.goto(chat.base + "/?conversation=slack-C123-1700000000.000100")
    chat.ready()
    chat.page.get_by_text("No Slack thread").wait_for()
    assert "slack-C123-1700000000.000100" in chat.assistant_messages().last.inner_text()


def test_dashboard_request_renders_several_charts_and_is_saved(chat):
    chat.open()
    chat.send("build me a dashboard for checkout")
    board = chat.assistant_messages().last
    assert "Dashboard: checkout" in board.inner_text()
    board.locator(".js-plotly-plot").nth(2).wait_for()
    charts = board.locator(".js-plotly-plot").count()
    assert charts >= 3, charts
    chat.shot("1-dashboard")

    chat.send("/dashboards")
    listing = chat.assistant_messages().last
    assert "checkout" in listing.locator("table").inner_text()
    before = chat.assistant_messages().count()
    chat.page.get_by_role("button", name="Open checkout").click()
    rerun = chat.wait_reply(before)
    assert "Dashboard: checkout" in rerun.inner_text()
    rerun.locator(".js-plotly-plot").nth(2).wait_for()
    chat.shot("2-reopened")
    assert chat.external_requests() == []


def test_feedback_is_stored_and_exported_as_an_eval_case(chat, shop):
    server, truth = shop
    chat.open()
    chat.send("Why is checkout slow?")
    answer = chat.assistant_messages().last
    answer.hover()
    answer.locator("button:has(svg.lucide-thumbs-up)").click()
    chat.page.locator("textarea").last.fill("good answer: names the slow service")
    chat.page.locator("#submit-feedback").click()
    chat.page.locator("#submit-feedback").wait_for(state="detached")
    chat.shot("1-feedback")
    time.sleep(1)
    server.stop()  # the data directory belongs to one process: read it after serve has stopped
    try:
        code = ("import json, sys; from store import Store; from chat.feedback import export_feedback_cases; "
                "print(json.dumps(export_feedback_cases(Store.connect(sys.argv[1], 'otel')), default=str))")
        out = subprocess.run([sys.executable, "-c", code, f"chdb://{server.data_dir}"], capture_output=True,
                             text=True, timeout=CLI_TIMEOUT, env=server.env)
        assert out.returncode == 0, out.stderr[-2000:]
        cases = json.loads(out.stdout)
        [case] = [c for c in cases if c["metadata"]["comment"] == "good answer: names the slow service"]
        assert case["inputs"] == {"question": "Why is checkout slow?", "role": "sre", "model": "builtin"}
        assert case["metadata"]["rating"] == "up" and case["metadata"]["user"] == "local"
        assert truth["root_cause_service"] in case["metadata"]["answer"]
        # A thumbs-up keeps the answer's top root cause as the expectation of the eval case.
        assert case["expected_output"]["root_cause_service"] == truth["root_cause_service"]
    finally:
        server.start()


def test_login_is_enforced_when_configured(chromium, server_factory, chat_artifacts):
    server = server_factory(env={"OTEL_AI_AUTH_SECRET": "s" * 40, "OTEL_AI_AUTH_USERS": "ann:correct-horse"})
    assert httpx.post(f"{server.http_url}/project/threads", json={"pagination": {"first": 5}, "filter": {}}
                      ).status_code == 401
    assert httpx.get(f"{server.http_url}/healthz").status_code == 200
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        page.goto(server.http_url + "/")
        page.wait_for_url(re.compile(r"/login"))
        page.locator("#email").fill("ann")
        page.locator("#password").fill("wrong")
        page.locator("#password").press("Enter")
        page.get_by_text(re.compile("credentialssignin|Wrong user name or password")).first.wait_for()
        assert page.locator("#chat-input").count() == 0
        page.screenshot(path=str(chat_artifacts / "login-1-refused.png"))
        page.locator("#password").fill("correct-horse")
        page.locator("#password").press("Enter")
        page.locator('[id^="starter-why-is-checkout-slow"]').wait_for()
        page.screenshot(path=str(chat_artifacts / "login-2-in.png"))
    finally:
        context.close()


def test_serve_refuses_a_public_address_without_login(server_factory):
    server = server_factory(extra_args=["--host", "0.0.0.0"], start=False)
    with pytest.raises(RuntimeError, match="refusing to serve the chat on 0.0.0.0"):
        server.start(timeout=60)
    assert server.proc is not None and server.proc.returncode not in (0, None)
