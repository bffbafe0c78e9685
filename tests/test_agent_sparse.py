"""The analyst on sparse telemetry (no status codes, no attributes, errors only in logs), one test per
signal: a network delay seen only in callers' client spans, an exception seen only in logs, a changed code
path with no latency change, a CPU hog seen only in a pod gauge; and a fault-free run names nothing."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta

import pytest

from agent import ask_sync
from agent.answer import Answer, RootCause
from anomaly import evidence_sql, signals
from store import Store
from tests.conftest import new_database
from tests.fixtures.agent_data import TRACE_COLUMNS, _id
from tests.fixtures.sparse_data import sparse_incident
from tests.test_agent import settings_for


@pytest.mark.parametrize(
    ("fault", "kind", "quoted"),
    [
        ("stock_network", "latency", "calls into it wait longer outside its own spans"),
        ("quote_exception", "errors", "IllegalStateException"),
        ("quote_wrong_path", "errors", "no discount rule"),
        ("finder_cpu", "saturation", "k8s.pod.cpu.utilization"),
    ],
)
def test_each_signal_names_the_faulty_service(root_store, fault, kind, quoted):
    store = new_database(root_store, "sparse")
    truth = sparse_incident(store, fault)
    answer = ask_sync("what's wrong?", store=store, settings=settings_for(store))
    top = answer.root_causes[0]
    assert (top.service, top.kind) == (truth["service"], kind), answer.answer
    assert top.confidence >= 0.5 and quoted in top.evidence, top.evidence
    store.close()


@pytest.mark.parametrize(("fault", "quoted"), [
    ("quote_exception", ["error logs in the window vs 0 before", "IllegalStateException"]),
    ("quote_wrong_path", ["no discount rule"]),
])
def test_a_level_stated_only_in_a_json_body_counts(root_store, fault, quoted):
    """JSON log lines with no SeverityNumber or SeverityText, the level only in the body: an ERROR or WARN
    line is read as one (the warning would otherwise be a routine line, and the errors would not count)."""
    store = new_database(root_store, "sparse")
    truth = sparse_incident(store, fault, log_format="json")
    answer = ask_sync("what's wrong?", store=store, settings=settings_for(store))
    assert answer.root_causes, answer.answer
    top = answer.root_causes[0]
    assert (top.service, top.kind) == (truth["service"], "errors"), answer.answer
    assert top.confidence >= 0.5 and all(q in top.evidence for q in quoted), top.evidence
    store.close()


def test_a_network_delay_shows_in_calls_whose_client_spans_have_no_client_kind(root_store):
    """The callers' spans around each call are recorded as internal spans (no instrumentation or inference
    marked them as client calls): the gap between them and stock's spans is still the wire."""
    store = new_database(root_store, "sparse")
    truth = sparse_incident(store, "stock_network", client_kind="Internal")
    answer = ask_sync("what's wrong?", store=store, settings=settings_for(store))
    assert answer.root_causes, answer.answer
    top = answer.root_causes[0]
    assert (top.service, top.kind) == (truth["service"], "latency"), answer.answer
    assert top.confidence >= 0.5 and "calls into it wait longer outside its own spans" in top.evidence, \
        top.evidence
    store.close()


def test_a_statement_that_stops_with_nothing_else_changing_names_its_service(root_store):
    """quote throws before its routine price line and handles the exception: no error line, the same spans
    and latency. Nothing moves the window's start to the change, so the user asks about the ten minutes it
    has lasted; every price line of those minutes is missing."""
    _, top = _code_path_cause(root_store, "quote_silent")
    assert "[quote][price" in top.evidence and "-> 0 lines" in top.evidence, top.evidence


def _code_path_cause(root_store: Store, fault: str) -> tuple[Answer, RootCause]:
    """The answer to "what's wrong in the last 10 minutes?" and its first cause, which must be the faulty
    service's changed code path, confidently."""
    store = new_database(root_store, "sparse")
    truth = sparse_incident(store, fault)
    answer = ask_sync("what's wrong in the last 10 minutes?", store=store, settings=settings_for(store))
    store.close()
    top = answer.root_causes[0]
    assert (top.service, top.kind) == (truth["service"], "errors"), answer.answer
    assert top.confidence >= 0.5 and "its code takes another path" in top.evidence, top.evidence
    return answer, top


def test_a_statement_that_stops_following_another_in_its_spans_names_its_service(root_store):
    """stock throws before reserving a cart's last item in most calls and handles it: no error line, the same
    spans and latency; carts grew at the same time, so stock logs more reserved lines than before and no
    statement stopped. In each span, though, "reserved" no longer follows every "check item". finder's
    catalog line moved from shoes to hats with the request mix: the same lines per span, so no break."""
    answer, top = _code_path_cause(root_store, "stock_partial")
    assert "no longer follows" in top.evidence, top.evidence
    assert "[stock][reserved" in top.evidence and "[stock][check item" in top.evidence, top.evidence
    # the rule held in the baseline's spans (the fault's first seconds may fall before the window's start)
    k, n = map(int, re.search(r"\((\d+) of (\d+) in the baseline\)", top.evidence).groups())
    assert n > 1000 and k <= 0.01 * n, top.evidence
    assert all(rc.service != "finder" for rc in answer.root_causes), answer.answer
    assert any(e.tool == "run_sql" and any("ks[p.2] >= ks[p.1]" in q for q in e.sql) for e in answer.evidence)


def test_a_break_that_began_before_the_given_time_is_judged_against_the_baseline_before_it(root_store):
    """The user noticed three minutes late: stock has skipped its last "reserved" line in every call since the
    fault began, so the baseline's last three minutes (about a tenth of it) are broken too and the pair was
    no rule there. The run of broken spans that ends the baseline is the fault's start, not the normal."""
    store = new_database(root_store, "sparse")
    truth = sparse_incident(store, "stock_skip")
    noticed = truth["start"] + timedelta(minutes=3)
    answer = ask_sync(f"what's wrong since {noticed:%H:%M:%S} UTC?", store=store, settings=settings_for(store))
    store.close()
    assert answer.root_causes and answer.root_causes[0].service == "stock", answer.answer
    evidence = answer.root_causes[0].evidence
    assert re.search(r'\[stock\]\[reserved[^"]*" no longer follows "[^"]*\[stock\]\[check item', evidence), evidence
    k, n_base, early = map(int, re.search(
        r"\((\d+) of (\d+) in the baseline; its last (\d+) spans already lacked it\)", evidence).groups())
    # about 2 calls a second, 70 % of them to stock, for the three minutes before the given time
    assert k == 0 and 180 <= early <= 330 and n_base > 1500, evidence


def test_a_broken_sequence_counts_less_below_a_changed_callee_and_once_with_problem_lines():
    """The same break at a caller whose callee changed is half the evidence (a failed call also sends the
    caller's code elsewhere); at a service whose problem lines surge it adds a sentence, not weight."""
    seq = [{"service": "cart", "template": "INFO [getCart][loaded]", "follows": "INFO [getCart][priced]",
            "n": 100, "broken": 60, "n_base": 400, "broken_base": 0, "tested": 12}]
    broken = signals.broken_sequences(seq)["cart"]
    assert broken.share == 0.6 and broken.surprise > 50
    alone = signals.service_evidence([], [], [], [], [], [], seq)
    assert [e.service for e in alone] == ["cart"] and alone[0].weight == 1.5
    assert "\"INFO [getCart][priced]\" no longer follows \"INFO [getCart][loaded]\" in 60 of 100 spans" in \
        alone[0].texts[0]
    def surge(service: str) -> dict:
        return {"service": service, "template": "ERROR [x][failed]", "n": 60, "n_base": 0, "traces": 60,
                "example": "ERROR [x][failed]", "severity": 17}

    volumes = [{"service": s, "n": 1000, "n_base": 4000} for s in ("cart", "quote")]
    edges = [{"caller": "cart", "callee": "quote", "n": 100}]
    below = {e.service: e for e in signals.service_evidence([], edges, [surge("quote")], volumes, [], [], seq)}
    assert below["cart"].weight == 0.75 and "it calls quote, which changed too" in below["cart"].texts[0]
    assert below["quote"].weight == 1.5
    told = {e.service: e for e in signals.service_evidence([], [], [surge("cart")], volumes, [], [], seq)}
    assert told["cart"].weight == 1.5 and "counted once with its problem lines" in " ".join(told["cart"].texts)
    # the binomial tail stops summing once its terms are negligible: 100,000 spans cost a few dozen terms
    assert signals.binomial_surprise(200, 100_000, 0.001) == pytest.approx(18.0512, abs=1e-3)
    assert signals.binomial_surprise(90, 100_000, 0.001) == 0.0  # below the mean (100)
    # a rule that did not hold in the baseline (here broken in 5 %) is a weaker surprise at the same break
    assert signals.broken_sequences([{**seq[0], "broken_base": 20}])["cart"].surprise < broken.surprise


def test_the_callee_that_logs_first_is_the_cause_not_its_caller(root_store):
    store = new_database(root_store, "sparse")
    sparse_incident(store, "quote_exception")
    answer = ask_sync("why are requests failing?", store=store, settings=settings_for(store))
    ranked = [rc.service for rc in answer.root_causes]
    assert ranked[0] == "quote" and ("cart" not in ranked or ranked.index("cart") > 0)
    assert "logged first in" in answer.root_causes[0].evidence
    store.close()


def test_fault_free_sparse_telemetry_names_nothing(root_store):
    store = new_database(root_store, "sparse")
    sparse_incident(store, None, seed=9)
    answer = ask_sync("what's wrong?", store=store, settings=settings_for(store))
    assert all(rc.confidence < 0.5 for rc in answer.root_causes), answer.answer
    store.close()


def test_slower_share_reads_the_window_quantiles_against_the_baseline_p95():
    assert signals.slower_share([1, 2, 3, 4, 5], base_p95=10) == 0.0
    # exactly the grid's share, so a threshold at one call in ten holds at its edge (1 - 0.9 < 0.1 in floats)
    assert signals.slower_share([1, 2, 3, 40, 50], base_p95=10) == 0.1
    assert signals.slower_share([20, 30, 40, 50, 60], base_p95=10) == 0.75


def test_poisson_surprise_grows_with_the_count_and_is_zero_at_the_mean():
    assert signals.poisson_surprise(3, 3.0) == 0.0
    assert 1.0 < signals.poisson_surprise(8, 3.0) < signals.poisson_surprise(15, 3.0)
    assert signals.poisson_surprise(20, 0.0) > 20  # a statement never seen before, 20 times


def _query_loop(store: Store, slow_requests: int, slow_calls: int) -> datetime:
    """40 minutes of `orders` answering one request a second, each running `SELECT orders` 3 times (~1.3 ms);
    in the last 10 minutes `slow_requests` requests run it `slow_calls` times each at ~25 ms. Returns the
    fault's start."""
    rng = random.Random(3)
    end = datetime.now(UTC).replace(microsecond=0)
    fault_start = end - timedelta(minutes=10)
    slow = set(rng.sample(range(600), slow_requests))
    rows = []
    for i in range(40 * 60):
        ts = end - timedelta(minutes=40) + timedelta(seconds=i + rng.random() * 0.5)
        trace, root = _id(rng, 32), _id(rng, 16)
        burst = ts >= fault_start and (i - 1800) in slow
        queries = [rng.gauss(25, 3) if burst else rng.gauss(1.3, 0.2) for _ in range(slow_calls if burst else 3)]
        rows.append([ts, trace, root, "", "", "GET /orders", "Server", "orders", {"service.name": "orders"},
                     "replay", "", {}, int((sum(queries) + 2) * 1e6), "Unset", "", [], [], [], [], [], [], []])
        rows += [[ts, trace, _id(rng, 16), root, "", "SELECT orders", "Internal", "orders",
                  {"service.name": "orders"}, "replay", "", {}, int(q * 1e6), "Unset", "", [], [], [], [], [], [],
                  []] for q in queries]
    store.insert("otel_traces", TRACE_COLUMNS, rows, column_oriented=False)
    return fault_start


@pytest.mark.parametrize(("slow_requests", "slow_calls", "named"), [(100, 3, True), (5, 60, False)])
def test_slower_calls_from_a_handful_of_requests_are_not_a_change(root_store, slow_requests, slow_calls, named):
    """The same 300 slow queries (about 1 in 7 of the window's) in 100 requests are a slower operation; in 5
    requests that each loop over it 60 times during one bad moment, they are not: calls of one request are not
    independent samples."""
    store = new_database(root_store, "sparse")
    fault_start = _query_loop(store, slow_requests, slow_calls)
    window = type("W", (), {"start": fault_start, "end": fault_start + timedelta(minutes=10),
                            "baseline_start": fault_start - timedelta(minutes=30), "baseline_end": fault_start})
    row = next(r for r in store.query(evidence_sql.span_stats_sql(window)).dicts()
               if r["operation"] == "SELECT orders")
    assert row["slow_traces"] == slow_requests and row["slow_calls"] == 300 and row["traces"] == 600, row
    assert row["n"] == 1800 - 3 * slow_requests + 300, row
    answer = ask_sync("what's wrong in the last 10 minutes?", store=store, settings=settings_for(store))
    confident = [rc.service for rc in answer.root_causes if rc.confidence >= 0.5]
    assert confident == (["orders"] if named else []), answer.answer
    store.close()


def test_few_requests_means_a_handful_among_many_repeating_a_pause():
    """14 slower calls from 5 requests of 33 are a bad moment the requests repeated; 5 of 6 (a job that runs a
    few times a window) are most of what ran, 40 of 600 are too many to be one moment, and 5 slower calls from
    5 requests (one pause now and then, as a GC pause hits one call) are 5 independent samples."""
    assert signals.from_few_requests({"slow_calls": 14, "slow_traces": 5, "traces": 33})
    assert not signals.from_few_requests({"slow_calls": 14, "slow_traces": 5, "traces": 6})
    assert not signals.from_few_requests({"slow_calls": 90, "slow_traces": 40, "traces": 600})
    assert not signals.from_few_requests({"slow_calls": 5, "slow_traces": 5, "traces": 53})
    assert not signals.from_few_requests({})  # not measured: the other rules decide


def test_a_grown_gap_shared_by_one_caller_points_at_the_caller():
    """A caller starved of CPU makes the gap to each of its callees grow: it is the common end."""
    grown, flat = [5, 100, 200, 300, 400], [5, 6, 7, 8, 9]
    edges = [{"caller": "a", "callee": "b", "callee_operation": "/b", "gap_n": 50, "gap_n_base": 200,
              "gap_q_ms": grown, "gap_q_base_ms": [5, 9]},
             {"caller": "a", "callee": "c", "callee_operation": "/c", "gap_n": 50, "gap_n_base": 200,
              "gap_q_ms": grown, "gap_q_base_ms": [5, 9]},
             {"caller": "x", "callee": "a", "callee_operation": "/a", "gap_n": 50, "gap_n_base": 200,
              "gap_q_ms": flat, "gap_q_base_ms": [5, 9]}]
    shifts = signals.network_shifts(edges)
    assert signals.explained_elsewhere(shifts["b"], shifts) and signals.explained_elsewhere(shifts["c"], shifts)
    assert not signals.explained_elsewhere(shifts["a"], shifts)


def test_the_anomaly_hints_name_what_the_analyst_names(root_store):
    """No anomaly was scored: the root-cause hints (the anomaly list's ranking) still rank from the same
    evidence, and the analyst's `root_cause_candidates` call agrees with its answer."""
    from anomaly.rootcause import rank_root_causes

    store = new_database(root_store, "sparse")
    truth = sparse_incident(store, "stock_network")
    hints = rank_root_causes(store, truth["start"], truth["end"])
    assert hints and hints[0].service == "stock" and "wait longer" in hints[0].reason, hints
    answer = ask_sync("what's wrong?", store=store, settings=settings_for(store))
    rcc = next(e for e in answer.evidence if e.tool == "root_cause_candidates")
    assert rcc.rows and rcc.rows[0]["service"] == answer.root_causes[0].service == "stock", rcc.rows
    store.close()


def test_error_lines_naming_another_service_count_less_for_the_service_logging_them():
    """'No instances available for X' in A's logs is about A's call to X: A's new errors weigh half as much
    as the same count of errors about its own work, and the evidence says which service they name."""
    template = {"severity": 17, "n_base": 0, "traces": 20}
    rows = [{**template, "service": "gateway", "n": 20, "template": "ERROR call failed: no instances for <id>",
             "example": "ERROR call failed: no instances for pricing"},
            {**template, "service": "pricing", "n": 20, "template": "ERROR NullPointerException at <id>",
             "example": "ERROR NullPointerException at Rules.apply"}]
    volumes = [{"service": "gateway", "n": 500, "n_base": 5000}, {"service": "pricing", "n": 500, "n_base": 5000}]
    evidence = {ev.service: ev for ev in signals.service_evidence([], [], rows, volumes, [])}
    assert evidence["pricing"].weight == 2 * evidence["gateway"].weight
    assert "the lines name pricing" in " ".join(evidence["gateway"].texts)
    assert "the lines name" not in " ".join(evidence["pricing"].texts)
    # whole names only: a service called "pricing" is not named by "pricing-v2" or "repricing"
    assert signals.services_named("calls to pricing-v2 and repricing failed", ["pricing"]) == []
    assert signals.services_named("No instances available for ts-price-service]", ["ts-price-service"]) == [
        "ts-price-service"]


def test_unconnected_services_with_evidence_of_their_own_lower_the_confidence():
    from agent.diagnosis import Analysis, Signal, _weigh_disagreement

    def analysis() -> Analysis:
        return Analysis(None, "the system", signals=[Signal("db", None, "latency", 0.8, "self time rose"),
                                                     Signal("mailer", None, "errors", 0.6, "new errors")])

    apart = analysis()
    _weigh_disagreement(apart, [{"caller": "api", "callee": "db"}, {"caller": "api", "callee": "mailer"}])
    db, mailer = apart.signals  # the order stays; both are scaled by the first's share of the evidence
    assert (db.confidence, mailer.confidence) == pytest.approx((0.8 * 0.8 / 1.4, 0.6 * 0.8 / 1.4))
    assert "The signals disagree: mailer" in apart.notes[0]
    for edges in ([{"caller": "mailer", "callee": "db"}],  # a caller of the cause is its victim
                  [{"caller": "db", "callee": "queue"}, {"caller": "queue", "callee": "mailer"}]):  # or below it
        together = analysis()
        _weigh_disagreement(together, edges)
        assert [s.confidence for s in together.signals] == [None, None] and not together.notes


def test_a_routine_statement_that_stops_while_its_service_is_still_called_is_evidence():
    """quote stops logging its price line while called as often as before: its code takes another path. A
    service called a tenth as often whose lines fall with its calls says nothing; nor does a statement that
    falls as far as the request mix moved every other one."""
    spans = [{"service": "quote", "n": 1000, "n_base": 1000}, {"service": "cart", "n": 1000, "n_base": 1000},
             {"service": "finder", "n": 100, "n_base": 1000}]
    statements = [
        {"service": "quote", "template": "INFO [quote][price <n> for cart]", "n": 0, "n_base": 400,
         "example": "INFO [quote][price 42.00 for cart]"},
        {"service": "cart", "template": "INFO [getCart][loaded]", "n": 990, "n_base": 1000},
        {"service": "cart", "template": "INFO [getCart][user <n>]", "n": 1010, "n_base": 1000},
        {"service": "finder", "template": "INFO [find][<n> hits]", "n": 95, "n_base": 1000},
    ]
    gone = signals.stopped_statements(statements, spans)
    assert list(gone) == ["quote"] and gone["quote"].expected == pytest.approx(400, rel=0.1)
    assert gone["quote"].surprise > 100
    evidence = signals.service_evidence(spans, [], [], [], [], statements)
    assert [ev.service for ev in evidence] == ["quote"]
    assert "its code takes another path" in evidence[0].texts[0] and "400 -> 0 lines" in evidence[0].texts[0]
    # the mix moved most statements to a third: a statement at a third is part of it, one at zero is not
    mixed = [{**t, "n": t["n_base"] // 3} if t["service"] != "quote" else t for t in statements]
    assert signals.stopped_statements([{**t, "n": 130} if t["service"] == "quote" else t for t in mixed], spans) == {}
    assert list(signals.stopped_statements(mixed, spans)) == ["quote"]


def test_a_statement_stops_with_its_operation_when_the_caller_stops_calling_it():
    """checkout fails before it empties the cart: cart's "EmptyCart called" line stops because EmptyCart is no
    longer called, while cart still serves GetCart. Its code did not change; a line that stops while its own
    operation is still called did."""
    spans = [{"service": "cart", "operation": "EmptyCart", "n": 0, "n_base": 400},
             {"service": "cart", "operation": "GetCart", "n": 1000, "n_base": 1000}]
    empty = {"service": "cart", "template": "INFO EmptyCart called for <id>", "n": 0, "n_base": 400,
             "operation": "EmptyCart"}
    loaded = {"service": "cart", "template": "INFO cart loaded", "n": 1000, "n_base": 1000, "operation": "GetCart"}
    assert signals.stopped_statements([empty, loaded], spans) == {}
    # the same line logged by GetCart, still called as often, has stopped
    assert list(signals.stopped_statements([{**empty, "operation": "GetCart"}, loaded], spans)) == ["cart"]
    # lines without span ids fall back to the service's calls: the line's stop is then evidence
    assert list(signals.stopped_statements([{**empty, "operation": ""}, loaded], spans)) == ["cart"]


def test_without_spans_a_statement_is_expected_from_the_services_other_routine_lines():
    """billing exports no spans: its "charged" line stops while it still logs as many "started" lines, so its
    code took another path; lines that fall with the others (less traffic) say nothing, and error lines (the
    failure itself) or a handful of lines are no measure of its work."""
    started = {"service": "billing", "template": "INFO [bill][started <n>]", "n": 600, "n_base": 1200}
    charged = {"service": "billing", "template": "INFO [bill][charged <n>]", "n": 2, "n_base": 1200,
               "example": "INFO [bill][charged 17]"}
    volumes = [{"service": "billing", "n": 602, "n_base": 2400, "errors": 0, "errors_base": 0, "warnings": 0,
                "warnings_base": 0}]
    gone = signals.stopped_statements([started, charged], [], volumes)
    assert list(gone) == ["billing"] and gone["billing"].from_lines
    assert gone["billing"].expected == pytest.approx(600, rel=0.05) and gone["billing"].surprise > 100
    evidence = signals.service_evidence([], [], [], volumes, [], [started, charged])
    assert [ev.service for ev in evidence] == ["billing"]
    assert "while it still logs its other lines (600.0 expected from its other lines)" in evidence[0].texts[0]
    # half the traffic: both lines halve
    assert signals.stopped_statements([started, {**charged, "n": 600}], [], volumes) == {}
    # the only other lines are the errors of the failure: nothing to measure its work by
    failing = [{**volumes[0], "n": 402, "errors": 400}]
    assert signals.stopped_statements([{**started, "n": 0}, charged], [], failing) == {}
    # fifteen other lines in the baseline: too few to measure by
    few = [{"service": "billing", "n": 9, "n_base": 1215, "errors": 0, "errors_base": 0, "warnings": 0,
            "warnings_base": 0}]
    assert signals.stopped_statements([{**started, "n": 7, "n_base": 15}, charged], [], few) == {}


def test_poisson_deficit_grows_as_fewer_lines_come_and_is_zero_at_the_mean():
    assert signals.poisson_deficit(10, 10.0) == 0.0 and signals.poisson_deficit(12, 10.0) == 0.0
    assert 0.5 < signals.poisson_deficit(5, 10.0) < signals.poisson_deficit(0, 10.0)
    assert signals.poisson_deficit(0, 30.0) == pytest.approx(30 / 2.302585, rel=1e-6)  # P(X = 0) = e^-30


def test_an_evidence_query_that_failed_found_nothing_and_the_others_still_count():
    """log_sequences over the SQL guard's memory or time limit: its error is in the evidence list, and the
    services the other queries point at are still named (before, one failed query dropped them all)."""
    from types import SimpleNamespace

    from agent.deps import ToolCall, Window
    from agent.diagnosis import analyst_sql, known_evidence
    from tools.result import ToolResult

    end = datetime.now(UTC).replace(microsecond=0)
    deps = SimpleNamespace(window=Window(end - timedelta(minutes=10), end, end - timedelta(minutes=40),
                                         end - timedelta(minutes=10)))
    surge = {"service": "quote", "template": "ERROR [quote][failed]", "n": 60, "n_base": 0, "traces": 60,
             "example": "ERROR [quote][failed]", "severity": 17}
    rows = {"log_templates": [surge], "log_stats": [{"service": "quote", "n": 1000, "n_base": 4000}]}
    calls = [ToolCall(key, "run_sql", {"sql": sql}, ToolResult(name="run_sql", rows=rows.get(key, []),
                                                                ok=key != "log_sequences",
                                                                error="memory limit exceeded" if key == "log_sequences"
                                                                else None), 0.1)
             for key, sql in analyst_sql(deps).items()]
    deps.results = lambda tool=None: [c for c in calls if tool in (None, c.tool)]
    evidence = known_evidence(deps)
    assert evidence is not None and [e.service for e in evidence] == ["quote"]
    # a query not run yet is no evidence yet
    deps.results = lambda tool=None: [c for c in calls if c.call_id != "log_sequences"]
    assert known_evidence(deps) is None


@pytest.mark.parametrize("fault", ["quote_exception", "stock_partial"])
def test_logs_without_spans_still_name_the_service(root_store, fault):
    """A deployment that exports logs and no traces (or whose span statistics found no spans): the evidence
    from the logs alone names the faulty service, and the answer says there were no spans to compare."""
    store = new_database(root_store, "sparse")
    truth = sparse_incident(store, fault)
    store.command("TRUNCATE TABLE otel_traces")
    store.command("TRUNCATE TABLE otel_traces_1m")
    answer = ask_sync("what's wrong?", store=store, settings=settings_for(store))
    assert answer.root_causes, answer.answer
    top = answer.root_causes[0]
    assert (top.service, top.kind) == (truth["service"], "errors"), answer.answer
    assert "no spans" in answer.answer, answer.answer
    store.close()


def test_when_the_span_statistics_fail_the_logs_still_name_the_service(root_store, monkeypatch):
    """The span statistics go over an engine limit (here a row limit a hundred times too small, as on a store
    far bigger than the limits allow): the answer says they failed, not that there are no spans, and the logs
    still name the service."""
    store = new_database(root_store, "sparse")
    truth = sparse_incident(store, "quote_exception")
    span_stats_sql = evidence_sql.span_stats_sql
    monkeypatch.setattr(evidence_sql, "span_stats_sql", lambda w: span_stats_sql(w).rstrip()
                        + "\nSETTINGS max_rows_to_read = 300, read_overflow_mode = 'throw'")
    answer = ask_sync("what's wrong?", store=store, settings=settings_for(store))
    failed = [e for e in answer.evidence if not e.ok]
    assert failed and answer.root_causes, answer.answer
    assert (answer.root_causes[0].service, answer.root_causes[0].kind) == (truth["service"], "errors"), answer.answer
    assert "The span statistics query failed (" in answer.answer and "no spans" not in answer.answer, answer.answer
    store.close()


def test_the_cause_the_answer_names_is_the_first_root_cause(monkeypatch):
    """"Why is it slow?" lifts latency signals in the ranking: a weak one (not confident) may then rank above a
    confident error signal. The answer names the confident one; the root causes list it first too, so a
    reader of the answer and a program reading root_causes[0] get the same service."""
    from types import SimpleNamespace

    from agent import diagnosis
    from agent.deps import Window
    from agent.question import parse_question

    end = datetime.now(UTC).replace(microsecond=0)
    analysis = diagnosis.Analysis(symptom=None, symptom_text="the system")
    analysis.signals = [diagnosis.Signal("cart", "GetCart", "latency", 0.4, "self time rose 2 ms -> 3 ms"),
                        diagnosis.Signal("quote", None, "errors", 0.6, "problem log template 0 -> 60 lines")]
    monkeypatch.setattr(diagnosis, "analyze", lambda deps: analysis)
    deps = SimpleNamespace(question=parse_question("why is it slow?", []), context={}, calls=[],
                           results=lambda tool=None: [],
                           window=Window(end - timedelta(minutes=10), end, end - timedelta(minutes=40),
                                         end - timedelta(minutes=10)))
    finding = diagnosis.conclude(deps)
    assert finding.answer.startswith("**quote** is failing"), finding.answer
    assert [c.service for c in finding.root_causes] == ["quote", "cart"]
