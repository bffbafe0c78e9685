"""The kinds of question besides "why" (agent.kinds), end to end through `ask` on real chDB with a synthetic
incident whose names the simulator never uses (edge-gateway, orders, billing, catalog): every id and number
in an answer is checked against SQL or numpy over the raw rows, and every chart against the kind it must be."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from agent import Conversation, ask_sync
from agent.deps import AgentDeps, DataNames
from agent.kinds import classify
from agent.question import parse_question
from evals.evaluators import states_number
from otel_ai.settings import Settings
from tests.conftest import new_database
from tests.fixtures.agent_data import LOG_COLUMNS, TRACE_COLUMNS, synth_incident
from tests.fixtures.sparse_data import sparse_incident
from tools.aggregates import logs_matching
from tools.timewindow import TimeWindow

HOSTILE = "[click](http://evil.example) <img src=x onerror=alert(1)> | **bold**"
ENTRY = "(SpanKind IN ('Server', 'Consumer') OR ParentSpanId = '')"
NOW = datetime(2026, 11, 28, 14, 30, tzinfo=UTC)
NAMES = ["edge-gateway", "edge-cache", "orders", "billing", "catalog"]


def settings_for(store) -> Settings:
    return Settings(clickhouse_url=f"chdb://{store.url.path}", database=store.database, model="builtin",
                    openai_api_key=None, anthropic_api_key=None)


def kind_of(text: str, context: dict | None = None) -> str | None:
    q = parse_question(text, NOW, NAMES)
    deps = AgentDeps(store=None, settings=None, window=None, question=q,  # type: ignore[arg-type]
                     names=DataNames(services=NAMES, operations={s: [] for s in NAMES}), context=dict(context or {}))
    kind = classify(deps)
    return None if kind is None else kind.name


@pytest.mark.parametrize(("text", "kind"), [
    ("show me the slowest traces in the last 15 minutes", "top_traces"),
    ("list the failing traces of billing", "top_traces"),
    ("Show p95 latency by service", "breakdown"),
    ("error rate per service since 10:30", "breakdown"),
    ("what are the slowest operations?", "breakdown"),
    ("latency of orders over the last hour", "series"),
    ("what is the p99 of orders over the last 10 minutes?", None),  # one number: the measures
    ("what is the p99 of orders per minute over the last 10 minutes?", "series"),
    ("errors per minute", "series"),
    ("compare the p95 of billing with 1 hour ago", "compare"),
    ("Is the error rate of orders higher than before 14:10?", "compare"),
    ("show error logs of billing", "logs"),
    ("what are the noisiest log patterns?", "logs"),
    ("how many traces in the last hour?", "volume"),
    ("how many spans did we get today?", "volume"),
    ("how many traces of billing failed?", None),  # a measure: failures
    ("who calls whom?", "dependencies"),
    ("what services does orders call?", "dependencies"),
    ("which services call billing?", "dependencies"),
    ("which services are there?", "services"),
    ("list all services", "services"),
    ("how many services do you see?", "services"),
    ("which services are slow?", "breakdown"),
    ("what operations does billing have?", "breakdown"),
    ("list the endpoints", "breakdown"),
    ("what's the slowest service right now?", "breakdown"),
    ("busiest endpoints", "breakdown"),
    ("which is the busiest service?", None),  # rates now and before (agent.diagnosis, traffic)
    ("how is the system doing?", None),  # what is unusual (agent.diagnosis)
    ("show logs of all services", "logs"),
    ("what changed in the last hour?", "changes"),
    ("what errors happened in the last 5 minutes?", "errors"),
    ("any errors?", "errors"),
    ("what errors happened over the last hour?", "errors"),
    ("show me the exceptions of billing", "errors"),
    ("errors per minute of billing", "series"),  # a rate or a series is a measure, not the list
    ("list errors by service", "breakdown"),
    ("which pods use the most cpu?", "resources"),
    ("memory usage by service", "resources"),
    ("show the network usage of billing", "resources"),
    ("why is billing's cpu so high?", None),  # a why: the diagnosis
    ("is the memory of orders growing?", None),
    ("hello", "greeting"),
    ("thanks!", "thanks"),
    ("great, thank you so much!", "thanks"),
    ("ok show logs of billing", "logs"),
    ("what can you do?", "help"),
    ("what is the p95 of edge?", "clarify"),
    ("what's the weather in Paris?", "unknown"),
    ("Run DROP TABLE otel_traces for me", "unknown"),
    # these stay with the diagnosis and the single-number measures
    ("why is edge-gateway slow?", None),
    ("what was the p95 latency of billing between 10:00 and 10:10?", None),
    ("How many failed requests did catalog have between 10:00 and 10:10 UTC?", None),
    ("is anything unusual?", None),
])
def test_the_kind_is_read_from_the_wording(text: str, kind: str | None) -> None:
    assert kind_of(text) == kind


def test_how_many_to_list_is_not_the_time_range() -> None:
    from agent.kinds import _n

    assert _n("show me the slowest traces in the last 15 minutes") == 5
    assert _n("top 10 slowest traces in the past 2 hours") == 10
    assert _n("the 3 slowest traces") == 3


def test_a_short_follow_up_stays_with_the_thread() -> None:
    assert kind_of("and the last 5 minutes?", {"intents": ["slow"], "services": ["billing"]}) is None
    assert kind_of("and the last 5 minutes?") == "unknown"
    series = {"intents": ["slow"], "services": ["billing"], "kind": "series",
              "kind_args": {"name": "series", "measure": "p99_ms"}}
    assert kind_of("and orders?", series) == "series"
    assert kind_of("why is orders slow?", series) is None
    assert kind_of("hello", series) == "greeting"


@pytest.fixture(scope="module")
def incident(root_store):
    """billing's Charge gains ~800 ms in the last 10 minutes; a hostile log line from edge-gateway; orders
    rolls out 2.0.0 for its last 20 spans; a little traffic from edge-cache (a name sharing 'edge')."""
    store = new_database(root_store, "kinds")
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)  # backdated: windows anchor on data
    truth = synth_incident(store, "billing_slow", end=end, inject=HOSTILE)
    rows = []
    for i in range(20):
        ts = end - timedelta(seconds=200 - 10 * i)
        for k, (service, version) in enumerate((("orders", "2.0.0"), ("edge-cache", "0.1.0"))):
            rows.append([ts, f"{k:08x}{i:024x}", f"{i + 1:016x}", "", "", "GET /cache", "Server", service,
                         {"service.name": service, "service.version": version}, "synth", "1.0", {},
                         int(5e6), "Unset", "", [], [], [], [], [], [], []])
    store.insert("otel_traces", TRACE_COLUMNS, rows, column_oriented=False)
    yield store, truth
    store.close()


def ask(store, text: str, conversation: Conversation | None = None):
    return ask_sync(text, store=store, settings=settings_for(store), conversation=conversation)


def between(truth: dict) -> str:
    return f"between {truth['start']:%H:%M} and {truth['end']:%H:%M} UTC"


def lit(t: datetime) -> str:
    return f"toDateTime64('{t:%Y-%m-%d %H:%M:%S}', 9, 'UTC')"


def window_sql(truth: dict) -> str:
    return f"Timestamp >= {lit(truth['start'])} AND Timestamp < {lit(truth['end'])}"


def chart_kinds(answer) -> list[str]:
    return [c.figure["layout"]["meta"]["chart_kind"] for c in answer.charts]


TOOL_NAMES = ("measure_by", "measure_series", "exemplar_traces", "service_map", "logs_matching", "compare_periods",
              "versions_seen", "_")


def titled_in_words(answer) -> bool:
    return all(c.title and not any(t in c.title for t in TOOL_NAMES) for c in answer.charts)


def test_p95_by_service_is_a_table_and_a_bar_chart(incident) -> None:
    store, truth = incident
    answer = ask(store, f"Show p95 latency by service {between(truth)}")
    assert [e.tool for e in answer.evidence if e.tool != "run_sql"] == ["measure_by"]
    for service in ("billing", "orders", "edge-gateway"):
        durations = [r[0] / 1e6 for r in store.query(
            f"SELECT Duration FROM otel_traces WHERE ServiceName = '{service}' AND {ENTRY} AND {window_sql(truth)}"
        ).rows]
        p95 = float(np.percentile(durations, 95))  # linear interpolation, as quantileExactInclusive
        assert states_number(answer.answer, p95, "ms", 0.001), (service, p95, answer.answer)
    assert "| service | p95 latency |" in answer.answer
    assert chart_kinds(answer) == ["bar"] and titled_in_words(answer)
    bar = answer.charts[0].figure
    values = bar["data"][0]["y"]
    assert "(ms)" in answer.charts[0].title and values == sorted(values, reverse=True)  # highest first


def test_slowest_traces_list_ids_durations_services_and_a_waterfall(incident) -> None:
    store, truth = incident
    answer = ask(store, f"show the 3 slowest traces {between(truth)}")
    expected = store.query(f"SELECT TraceId, Duration / 1e6 FROM otel_traces WHERE ParentSpanId = '' AND "
                           f"{window_sql(truth)} ORDER BY Duration DESC LIMIT 3").rows
    positions = [answer.answer.index(tid) for tid, _ in expected]
    assert positions == sorted(positions)  # slowest first
    for _, ms in expected:
        assert states_number(answer.answer, ms, "ms", 0.005)
    assert "billing" in answer.answer and "orders" in answer.answer  # the services each trace crossed
    assert answer.answer.count("show trace ") == 3
    assert f'show trace {expected[0][0]}' in answer.answer  # the waterfall, one question away
    assert answer.traces and answer.traces[0]["trace_id"] == expected[0][0]  # ... and drawn under the answer
    assert chart_kinds(answer) == ["bar"] and titled_in_words(answer)


def test_a_measure_over_time_is_a_line_chart(incident) -> None:
    store, truth = incident
    answer = ask(store, f"p95 latency of billing per minute {between(truth)}")
    peak = store.query(f"SELECT max(v) FROM (SELECT toStartOfMinute(Timestamp) t, "
                       f"quantileExactInclusive(0.95)(Duration) / 1e6 v FROM otel_traces WHERE "
                       f"ServiceName = 'billing' AND {ENTRY} AND {window_sql(truth)} GROUP BY t)").scalar()
    assert states_number(answer.answer, peak, "ms", 0.001), answer.answer
    assert chart_kinds(answer) == ["line"] and titled_in_words(answer)
    line = answer.charts[0].figure["data"][0]
    assert len(line["x"]) == 10 and "time" in answer.charts[0].figure["layout"]["xaxis"]["title"]["text"]


def test_comparison_before_and_after_a_time(incident) -> None:
    store, truth = incident
    answer = ask(store, f"Compare the p95 latency of billing before and after {truth['start']:%H:%M}")
    latest = store.query("SELECT toDateTime64(max(Timestamp), 6, 'UTC') FROM otel_traces").scalar()
    latest = latest.replace(tzinfo=UTC) if latest.tzinfo is None else latest
    pivot = truth["start"]
    span = latest - pivot
    for a, b in ((pivot, latest), (pivot - span, pivot)):
        value = store.query(f"SELECT quantileExactInclusive(0.95)(Duration) / 1e6 FROM otel_traces WHERE "
                            f"ServiceName = 'billing' AND {ENTRY} AND Timestamp >= "
                            f"toDateTime64('{a:%Y-%m-%d %H:%M:%S.%f}', 9, 'UTC') AND Timestamp < "
                            f"toDateTime64('{b:%Y-%m-%d %H:%M:%S.%f}', 9, 'UTC')").scalar()
        assert states_number(answer.answer, value, "ms", 0.001), (a, b, value, answer.answer)
    assert "rose" in answer.answer and chart_kinds(answer) == ["bar"] and titled_in_words(answer)


def test_logs_by_service_and_text_with_counts_and_escaped_text(incident) -> None:
    store, truth = incident
    answer = ask(store, f"logs of billing containing 'fraud check' {between(truth)}")
    n = store.query(f"SELECT count() FROM otel_logs WHERE ServiceName = 'billing' AND "
                    f"positionCaseInsensitiveUTF8(Body, 'fraud check') > 0 AND {window_sql(truth)}").scalar()
    assert n > 0 and f"**{n}** logs" in answer.answer
    assert chart_kinds(answer) == ["bar"] and titled_in_words(answer)
    noisy = ask(store, f"what are the noisiest log patterns {between(truth)}?")
    assert "click" in noisy.answer  # the hostile line is listed ...
    for line in noisy.answer.splitlines():  # ... only inside code spans: no live link, image or bold
        outside = re.sub(r"`[^`]*`", "", line)
        assert "](http" not in outside and "<img" not in outside and "**bold" not in outside, line
    labels = " ".join(str(x) for x in noisy.charts[0].figure["data"][0]["x"])
    assert "<img" not in labels and "&lt;img" in labels  # chart labels show markup as text


def test_logs_compared_with_an_earlier_period_count_each_pattern_then_too(incident) -> None:
    """"Compare the logs with 10 minutes ago": the last 10 minutes against the 10 before (not overlapping),
    totals and each pattern counted in both, checked against SQL over the periods the tool was given."""
    store, _ = incident
    answer = ask(store, "compare the logs of billing with 10 minutes ago")
    call = next(e for e in answer.evidence if e.tool == "logs_matching")
    start, end, ref_start, ref_end = (datetime.fromisoformat(call.args[k]) for k in (
        "start", "end", "reference_start", "reference_end"))
    assert end - start == ref_end - ref_start == timedelta(minutes=10) and start - ref_start == timedelta(minutes=10)

    def count(a: datetime, b: datetime) -> int:
        return store.query(f"SELECT count() FROM otel_logs WHERE ServiceName = 'billing' AND Timestamp >= "
                           f"toDateTime64('{a:%Y-%m-%d %H:%M:%S.%f}', 9, 'UTC') AND Timestamp < "
                           f"toDateTime64('{b:%Y-%m-%d %H:%M:%S.%f}', 9, 'UTC')").scalar()

    now, before = count(start, end), count(ref_start, ref_end)
    assert now > 0 and before > 0, (now, before)
    assert f"**{now}** logs from `billing`" in answer.answer and f"against **{before}** in the same window 10 " \
        "minutes earlier" in answer.answer, answer.answer
    assert "| now | before | service |" in answer.answer and "new in the window" in answer.answer
    assert sum(r["count"] for r in call.rows) <= now and sum(r["before"] for r in call.rows) <= before


def test_a_pattern_logged_only_in_the_reference_is_listed_with_no_lines_now(store) -> None:
    end = datetime.now(UTC).replace(microsecond=0)
    rows = [[end - timedelta(minutes=m, seconds=i), "", "", 0, "ERROR", 17, "legacy", text, "", {}, "", "", "", {}, {}]
            for m, text in ((1, "disk 3 full"), (1, "disk 4 full"), (7, "disk 9 full"), (7, "lost lock 7"))
            for i in range(2)]
    store.insert("otel_logs", LOG_COLUMNS, rows, column_oriented=False)
    window = TimeWindow(start=end - timedelta(minutes=5), end=end + timedelta(seconds=1))
    reference = TimeWindow(start=end - timedelta(minutes=10), end=end - timedelta(minutes=5))
    result = logs_matching(store, window, min_severity="error", reference=reference)
    got = {r["pattern"]: (r["count"], r["before"]) for r in result.rows}
    assert got == {"disk <*> full": (4, 2), "lost lock <*>": (0, 2)}, got
    assert [(t["count"], t["before"]) for t in result.details["totals"]] == [(4, 4)]


def test_how_many_traces_counts_the_telemetry_of_the_window(incident) -> None:
    """"How many traces?" counts traces, spans, services, log lines and metric points of the window (each
    checked against SQL over the window the answer states), with rates per minute then and before."""
    store, _ = incident
    answer = ask(store, "how many traces were there in the last 30 minutes?")
    call = next(e for e in answer.evidence if e.tool == "telemetry_volume")
    rows = {r["signal"]: r for r in call.rows}
    start, end = (datetime.fromisoformat(call.args[k]) for k in ("start", "end"))
    span = (f"toDateTime64('{start:%Y-%m-%d %H:%M:%S.%f}', 9, 'UTC') AND {{c}} < "
            f"toDateTime64('{end:%Y-%m-%d %H:%M:%S.%f}', 9, 'UTC')")
    traces, spans = store.query("SELECT uniqExact(TraceId), count() FROM otel_traces WHERE Timestamp >= "
                                + span.format(c="Timestamp")).rows[0]
    logs = store.query("SELECT count() FROM otel_logs WHERE Timestamp >= " + span.format(c="Timestamp")).scalar()
    assert traces > 0 and answer.answer.startswith(f"**{traces:,} traces** from"), answer.answer
    assert (rows["traces"]["count"], rows["spans"]["count"], rows["log lines"]["count"]) == (traces, spans, logs)
    assert f"({spans:,} spans from" in answer.answer and f"| log lines | **{logs:,}** |" in answer.answer


def test_dependencies_are_drawn_as_a_graph(incident) -> None:
    store, truth = incident
    answer = ask(store, f"who calls whom {between(truth)}?")
    calls = store.query(
        "SELECT count() FROM otel_traces AS c INNER JOIN otel_traces AS p ON c.TraceId = p.TraceId "
        "AND c.ParentSpanId = p.SpanId WHERE c.ServiceName = 'billing' AND p.ServiceName = 'orders' "
        f"AND c.SpanKind = 'Server' AND c.Timestamp >= {lit(truth['start'])} AND c.Timestamp < {lit(truth['end'])}"
    ).scalar()
    assert f"`orders` → `billing`: {calls} calls" in answer.answer
    assert chart_kinds(answer) == ["graph"] and titled_in_words(answer)
    around = ask(store, "what calls billing?")
    assert "`billing` is called by `orders`" in around.answer


def test_the_services_there_are_each_with_its_numbers(incident) -> None:
    """"Which services are there?" lists every service with spans in the window (its count checked against
    SQL), busiest first, with the throughput table."""
    store, truth = incident
    answer = ask(store, f"which services are there {between(truth)}?")
    active = [r[0] for r in store.query(
        f"SELECT ServiceName, count() AS n FROM otel_traces WHERE {window_sql(truth)} GROUP BY ServiceName").rows]
    assert answer.answer.startswith(f"**{len(active)} services** sent spans")
    first_line = answer.answer.splitlines()[0]
    assert all(f"`{s}`" in first_line for s in active), (active, first_line)
    assert "| service | throughput |" in answer.answer
    assert [e.tool for e in answer.evidence if e.tool != "run_sql"] == ["measure_by"]
    assert chart_kinds(answer) == ["bar"] and titled_in_words(answer)


def test_the_operations_a_service_has_busiest_first(incident) -> None:
    store, truth = incident
    answer = ask(store, f"what operations does orders have {between(truth)}?")
    ops = store.query(f"SELECT SpanName, count() AS n FROM otel_traces WHERE ServiceName = 'orders' AND "
                      f"{window_sql(truth)} GROUP BY SpanName HAVING n >= 5 ORDER BY n DESC").rows
    assert ops and answer.answer.startswith("Throughput by operation of orders")
    rows = [[c.strip(" `*") for c in line.split("|")[1:-1]] for line in answer.answer.split("\n\n")[1].splitlines()[2:]]
    assert {r[0] for r in rows} == {"orders"}  # only the named service's operations ...
    assert {r[1] for r in rows} == {op for op, _ in ops}  # ... every one with 5 calls or more
    requests = [int(r[3]) for r in rows]
    assert requests == sorted(requests, reverse=True)  # busiest first


def test_what_errors_happened_lists_failed_spans_and_error_logs(root_store) -> None:
    """"What errors happened?" lists the failures themselves: failed spans by operation (every count checked
    against SQL, rarely called operations included) and the error logs by pattern."""
    store = new_database(root_store, "kinds")
    truth = synth_incident(store, "catalog_errors", seed=4, end=datetime.now(UTC).replace(second=0, microsecond=0))
    try:
        answer = ask(store, f"what errors happened {between(truth)}?")
        failed = store.query(f"SELECT ServiceName, SpanName, countIf(StatusCode = 'Error') AS e FROM otel_traces "
                             f"WHERE {window_sql(truth)} GROUP BY ServiceName, SpanName HAVING e > 0 "
                             "ORDER BY e DESC").rows
        assert failed and answer.answer.startswith(f"**{sum(e for _, _, e in failed)} failed spans**")
        table = [[c.strip(" `*") for c in line.split("|")[1:-1]] for line in answer.answer.splitlines()
                 if line.startswith("| `") and "ERROR" not in line]
        assert sorted((r[0], r[1], int(r[2])) for r in table) == sorted(failed)
        logs = store.query(f"SELECT count() FROM otel_logs WHERE SeverityText = 'ERROR' AND {window_sql(truth)}").rows
        assert f"Error logs: **{logs[0][0]}** logs at ERROR or above" in answer.answer
        assert "GetItem failed: connection refused" in answer.answer
        assert {e.tool for e in answer.evidence if e.tool != "run_sql"} == {"measure_by", "logs_matching"}
    finally:
        store.close()


def test_an_error_measure_with_no_failed_span_reports_the_error_logs(root_store) -> None:
    """Spans without status codes (quote throws and only its logs say so): "which service has the highest
    error rate?" answers with the error log lines, counted as SQL counts them, and then the table (all 0 %),
    instead of naming a highest service at 0 %; the follow-ups go to the logs."""
    store = new_database(root_store, "kinds")
    sparse_incident(store, "quote_exception")
    try:
        answer = ask(store, "which service has the highest error rate in the last 10 minutes?")
        call = next(e for e in answer.evidence if e.tool == "logs_matching")
        assert call.args["min_severity"] == "error"
        start, end = re.search(r"_Window: (\S+ \S+) to (\S+ \S+) UTC", answer.answer).groups()

        def errors(pad: int) -> int:  # the text shows whole seconds: count over the window widened or narrowed
            return store.query(f"SELECT count() FROM otel_logs WHERE SeverityText = 'ERROR' AND Timestamp >= "
                               f"toDateTime64('{start}', 9, 'UTC') - INTERVAL {pad} SECOND AND Timestamp < "
                               f"toDateTime64('{end}', 9, 'UTC') + INTERVAL {pad} SECOND").scalar()

        stated = int(re.match(r"No span has an error status from .*?, but \*\*(\d+)\*\* log lines are at ERROR "
                              "or above", answer.answer).group(1))  # the answer's first words
        assert 0 < errors(-1) <= stated <= errors(1), (stated, answer.answer)
        assert "`quote`" in answer.answer and "Highest:" not in answer.answer and answer.charts == []
        assert answer.follow_ups[0] == "What errors happened?"
    finally:
        store.close()


def test_which_pods_use_the_most_cpu_is_a_ranking_of_the_gauge(incident) -> None:
    """A resource question ranks the pods' gauge of that category (found by name in the data), highest first,
    every value the window's average as SQL computes it; a category the data lacks says what it has."""
    store, truth = incident
    answer = ask(store, f"which pods use the most cpu {between(truth)}?")
    assert [e.tool for e in answer.evidence if e.tool != "run_sql"] == ["resource_metrics"]
    avg = store.query(
        "SELECT ResourceAttributes['k8s.pod.name'] AS pod, avg(Value) AS v FROM otel_metrics_gauge WHERE "
        f"MetricName = 'k8s.pod.cpu.utilization' AND {window_sql(truth).replace('Timestamp', 'TimeUnix')} "
        "GROUP BY pod ORDER BY v DESC").rows
    assert avg and answer.answer.startswith("`k8s.pod.cpu.utilization` (1) by pod")
    table = [[c.strip(" `*") for c in line.split("|")[1:-1]] for line in answer.answer.splitlines()
             if line.startswith("| `")]
    assert [r[1] for r in table] == [pod for pod, _ in avg]  # every pod, highest first
    assert all(float(r[2]) == pytest.approx(v, rel=1e-3) for r, (_, v) in zip(table, avg, strict=True))
    assert chart_kinds(answer) == ["bar"] and titled_in_words(answer)
    memory = ask(store, f"memory usage by service {between(truth)}")
    assert memory.answer.startswith("`k8s.pod.memory.working_set` (By) by pod")
    disk = ask(store, f"disk usage per pod {between(truth)}")
    assert disk.answer.startswith("No disk metric") and "`k8s.pod.cpu.utilization`" in disk.answer


def test_slowest_traces_of_a_service_are_ranked_and_shown_by_its_span(incident) -> None:
    store, truth = incident
    answer = ask(store, f"show the 3 slowest traces of billing {between(truth)}")
    expected = store.query(f"SELECT TraceId, max(Duration) / 1e6 AS ms FROM otel_traces WHERE ServiceName = 'billing' "
                           f"AND {window_sql(truth)} GROUP BY TraceId ORDER BY ms DESC LIMIT 3").rows
    assert "| # | trace id | `billing` span | trace duration |" in answer.answer
    for tid, ms in expected:
        row = next(line for line in answer.answer.splitlines() if tid in line)
        assert states_number(row.split("|")[3], ms, "ms", 0.005), (row, ms)


def test_what_changed_names_the_new_version(incident) -> None:
    store, _ = incident
    answer = ask(store, "what changed in the last 15 minutes?")
    assert "`orders` started reporting `service.version=2.0.0`" in answer.answer
    assert answer.charts == []


def test_conversation_greetings_help_thanks_clarify_and_what_it_cannot_answer(incident) -> None:
    store, truth = incident
    thread = Conversation()
    ask(store, "why is edge-gateway slow?", thread)
    hello = ask(store, "hello", thread)
    assert hello.answer.startswith("Hello!") and not hello.root_causes and hello.charts == []
    assert "self time" not in hello.answer  # not the previous answer again
    thanks = ask(store, "thanks", thread)
    assert "welcome" in thanks.answer and thanks.charts == []
    helped = ask(store, "what can you do?")
    assert "p95" in helped.answer and any("billing" in f or "orders" in f for f in helped.follow_ups)
    clarify = ask(store, f"what is the p95 latency of edge {between(truth)}?")
    assert "Which service do you mean" in clarify.answer
    assert "edge-gateway" in clarify.answer and "edge-cache" in clarify.answer and clarify.charts == []
    assert any("edge-gateway" in f for f in clarify.follow_ups)
    unknown = ask(store, "what's the weather in Paris?")
    assert "can't answer" in unknown.answer and unknown.charts == []
    assert any(s in f for f in unknown.follow_ups for s in ("billing", "orders", "edge-gateway", "catalog"))
    assert not any("<service>" in f for f in unknown.follow_ups)


def test_a_follow_up_gets_the_same_kind_of_answer(incident) -> None:
    store, truth = incident
    thread = Conversation()
    ask(store, f"p99 latency of billing per minute {between(truth)}", thread)
    follow = ask(store, "and orders?", Conversation.from_json(thread.to_json()))
    assert follow.answer.startswith("P99 latency of `orders`") and chart_kinds(follow) == ["line"]


def test_one_service_number_gets_no_unrelated_chart(incident) -> None:
    store, truth = incident
    answer = ask(store, f"what's the error rate of catalog {between(truth)}?")
    assert "error rate" in answer.answer and answer.charts == []


def test_error_logs_count_lines_that_only_say_error_in_text(store) -> None:
    end = datetime.now(UTC).replace(microsecond=0)
    rows = [[end - timedelta(seconds=i), "", "", 0, text, number, "legacy", f"line {i}", "", {}, "", "", "", {}, {}]
            for i, (text, number) in enumerate([("ERROR", 0), ("error", 0), ("INFO", 0), ("", 17), ("WARN", 13)])]
    store.insert("otel_logs", LOG_COLUMNS, rows, column_oriented=False)
    window = TimeWindow(start=end - timedelta(minutes=5), end=end + timedelta(seconds=1))
    assert sum(t["count"] for t in logs_matching(store, window, min_severity="error").details["totals"]) == 3
    assert sum(t["count"] for t in logs_matching(store, window, min_severity="warn").details["totals"]) == 4


def test_a_root_cause_answer_starts_with_the_symptoms_series_and_its_change(incident) -> None:
    store, truth = incident
    answer = ask(store, "why is edge-gateway slow?")
    assert answer.root_causes[0].service == "billing"
    assert chart_kinds(answer)[:2] == ["line", "bar"] and titled_in_words(answer)
    title = answer.charts[0].title
    changed = re.search(r"^P95 latency of edge-gateway \(ms\): changed ~(\d\d):(\d\d) UTC$", title)
    assert changed, title
    at = truth["start"].replace(hour=int(changed[1]), minute=int(changed[2]))
    assert abs((at - truth["start"]).total_seconds()) <= 60  # the fault began then
    series = next(e for e in answer.evidence if e.tool == "measure_series")
    assert series.args["service"] == "edge-gateway" and series.args["measure"] == "p95_ms"
