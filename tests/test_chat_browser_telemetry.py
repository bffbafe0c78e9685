"""Issue 17 item 6 in a real browser: telemetry whose span names and log lines carry markdown images,
links, HTML and bare URLs is shown by the chat (Chainlit's own renderer in headless Chromium) as text:
no image is fetched, no outside link exists, whether it arrives in a /sql table or in an answer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.browser import ChatPage
from tests.fixtures.server import ServerProcess, free_port, make_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BEACON = f"http://127.0.0.1:{free_port()}/beacon.png"
SPAN_NAME = f"GET /pay ![x]({BEACON}) [click here](https://evil.example/phish) <img src=\"{BEACON}?html\">"
LOG_BODY = f"payment failed, see https://evil.example/help or www.evil.example ![y]({BEACON}?log)"


def plant(server: ServerProcess) -> None:
    """Error spans and logs of a service, named and written as an attacker would, via the OTel SDK."""
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind, Status, StatusCode

    resource = Resource.create({"service.name": "evil-pay"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=server.otlp_grpc_endpoint,
                                                                            insecure=True)))
    tracer = tracer_provider.get_tracer("t")
    for i in range(30):
        with tracer.start_as_current_span(SPAN_NAME, kind=SpanKind.SERVER) as span:
            span.set_attribute("http.route", f"[r](https://evil.example/{i})")
            if i % 2:
                span.set_status(Status(StatusCode.ERROR, f"boom ![z]({BEACON}?status)"))
    tracer_provider.shutdown()
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(
        endpoint=server.otlp_grpc_endpoint, insecure=True)))
    for _ in range(5):
        logger_provider.get_logger("t").emit(body=LOG_BODY, severity_text="ERROR", severity_number=17)
    logger_provider.shutdown()


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("chat-telemetry")
    (root / "data").mkdir()
    server = make_server(root / "data", root / "serve.log", env={"OTEL_AI_ANOMALY_ENABLED": "false"}).start()
    try:
        plant(server)
        yield server
    finally:
        server.stop()


@pytest.fixture
def chat(chromium, planted, chat_artifacts, request) -> Iterator[ChatPage]:  # noqa: ANN001
    page = ChatPage(chromium, planted, chat_artifacts, request.node.name.removeprefix("test_")[:40])
    yield page
    page.shot("last")
    page.close()


def assert_shown_as_text(chat: ChatPage) -> None:
    page = chat.page
    assert not [u for u in chat.requests if "beacon" in u or "evil.example" in u], chat.requests
    shown = page.locator('[data-step-type]:not([data-step-type="user_message"])')  # not what the user typed
    assert shown.count() > 0
    assert shown.locator('img[src*="beacon"]').count() == 0
    assert shown.locator('a[href*="evil.example"]').count() == 0
    assert shown.locator('a[href*="beacon"]').count() == 0


def test_sql_table_of_planted_names_shows_text_only(chat: ChatPage) -> None:
    chat.open()
    chat.send("/sql SELECT SpanName, StatusMessage, SpanAttributes['http.route'] AS route FROM otel_traces "
              "WHERE ServiceName = 'evil-pay' LIMIT 5")
    text = chat.assistant_messages().last.inner_text()
    assert "5 rows" in text and "![x](http://127.0.0.1" in text and "evil.example/1" in text, text[:1000]
    chat.send("/sql SELECT Body FROM otel_logs LIMIT 2")
    assert "https://evil.example/help" in chat.assistant_messages().last.inner_text()
    assert_shown_as_text(chat)


def test_answer_about_the_planted_service_shows_text_only(chat: ChatPage) -> None:
    chat.open()
    chat.send("why is evil-pay failing?")  # a diagnosis quotes the failing operation: the planted name
    text = chat.page.locator("body").inner_text()
    assert "evil-pay" in text, text[:2000]
    assert "![x](" in text or "image x" in text, text[:3000]  # the planted name is visible, as text
    assert_shown_as_text(chat)
