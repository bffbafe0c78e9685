"""Block Kit rendering of agent answers: Slack's limits, escaping of telemetry, evidence attached in full."""

from __future__ import annotations

from agent.answer import Answer, Evidence, RootCause
from chat.slack import blocks
from tests.fakes.slack_api import block_errors
from tests.fixtures.slack import message_text


def long_answer() -> Answer:
    sql = "SELECT ServiceName, quantile(0.99)(Duration) FROM otel_traces WHERE " + " AND ".join(
        f"SpanAttributes['k{i}'] != 'v{i}'" for i in range(80)
    ) + " GROUP BY ServiceName"
    return Answer(
        answer="## Checkout is slow\n\n**payments** p99 rose from 180 ms to 2.4 s.\n- see [trace](http://x/t/1)\n"
        + "More detail. " * 600,
        root_causes=[
            RootCause(service="payments", operation="POST /charge", kind="latency", confidence=0.91,
                      evidence="p99 2.4 s vs 180 ms baseline"),
            RootCause(service="db", kind="saturation", confidence=0.4, evidence="cpu 97%"),
        ],
        evidence=[Evidence(tool=f"tool{i}", args={"service": "payments"}, sql=[sql], summary="s" * 900)
                  for i in range(5)],
        follow_ups=["Show slow traces for payments"],
        traces=[{"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "spans": []}],
        model="builtin",
        timings={"total": 1.25},
    )


def test_mrkdwn_converts_markdown_and_escapes_telemetry() -> None:
    text = blocks.mrkdwn("# Title\n**bold** and *it* <!channel> & [docs](https://example.com/a)\n- item\n`a<b>`")
    assert "*Title*" in text
    assert "*bold*" in text and "_it_" in text
    assert "&lt;!channel&gt; &amp;" in text and "<!channel>" not in text
    assert "<https://example.com/a|docs>" in text
    assert "• item" in text
    assert "`a&lt;b&gt;`" in text


def test_tables_become_aligned_preformatted_blocks_with_telemetry_escaped() -> None:
    text = ("P95 by service:\n\n| service | p95 latency |\n|---|---|\n| `checkout` | **2484.6 ms** |\n"
            "| `<!channel>` | 1.0 ms |\n\nHighest: `checkout`.")
    out = blocks.mrkdwn(text)
    assert "```\nservice     p95 latency\ncheckout    2484.6 ms\n&lt;!channel&gt;  1.0 ms\n```" in out
    assert "|---|" not in out and "<!channel>" not in out and out.endswith("Highest: `checkout`.")


def test_answer_fits_slack_limits_and_attaches_full_evidence() -> None:
    answer = long_answer()
    rendered = blocks.answer_blocks(answer, blocks.chat_url("http://chat.example:8000/", "slack-C1-1.2"))
    assert block_errors(rendered.blocks) == []
    assert len(rendered.text) <= blocks.FALLBACK_LIMIT
    shown = message_text({"text": rendered.text, "blocks": rendered.blocks})
    assert "1. *payments* `POST /charge` — latency, confidence 91%" in shown
    assert "2. *db* — saturation, confidence 40%" in shown
    assert "```SELECT ServiceName" in shown
    assert "<http://chat.example:8000/?conversation=slack-C1-1.2|Open this conversation in the chat UI>" in shown
    assert "Show slow traces for payments" in shown
    assert "*payments*" in rendered.full_text and "1. *payments* `POST /charge`" in rendered.full_text
    assert "Exemplar trace: `4bf92f3577b34da6a3ce929d0e0e4736`" in shown
    # what did not fit is attached whole: every tool call and its complete SQL
    assert [f.filename for f in rendered.files] == ["otel-ai-evidence.md"]
    full = rendered.files[0].content.decode()
    assert full.count(answer.evidence[0].sql[0]) == 5
    assert "More detail. " * 600 in full


def test_short_answer_needs_no_attachment() -> None:
    answer = Answer(answer="All services look healthy.", model="builtin",
                    evidence=[Evidence(tool="service_overview", sql=["SELECT 1"], summary="3 services")])
    rendered = blocks.answer_blocks(answer)
    assert rendered.files == []
    assert rendered.text == "All services look healthy."
    assert "```SELECT 1```" in message_text({"blocks": rendered.blocks})


def test_evidence_shows_analyses_first_without_model_markers() -> None:
    answer = Answer(answer="payment is slow.", evidence=[
        Evidence(tool="run_sql", args={"sql": "SELECT 1"}, sql=["SELECT 1"], summary="1 row"),
        Evidence(tool="latency_breakdown", args={"service": "checkout"}, sql=["SELECT a", "SELECT b", "SELECT c"],
                 summary="<telemetry-data>\npayment self time 10 ms -> 1.4 s\n</telemetry-data>"),
        Evidence(tool="log_patterns", ok=False, error="timeout"),
    ])
    rendered = blocks.answer_blocks(answer)
    evidence = [b["text"]["text"] for b in rendered.blocks if b["type"] == "section"][1:]
    assert [e.split("(")[0] for e in evidence] == ["*log_patterns*", "*latency_breakdown*", "*run_sql*"]
    assert "failed: timeout" in evidence[0]
    assert "payment self time 10 ms -&gt; 1.4 s" in evidence[1] and "telemetry-data" not in evidence[1]
    assert "```SELECT a```" in evidence[1] and "SELECT b" not in evidence[1] and "+2 more queries" in evidence[1]
    assert evidence[2].startswith("*run_sql*()")  # the SQL is in the code block, not repeated as an argument
    full = rendered.files[0].content.decode()
    assert "SELECT b" in full and "SELECT c" in full and "<telemetry-data>" in full
    assert rendered.text == "payment is slow."
