"""The analyst on sparse telemetry (no status codes, no attributes, errors only in logs), one test per
signal: a network delay seen only in callers' client spans, an exception seen only in logs, a changed code
path with no latency change, a CPU hog seen only in a pod gauge; and a fault-free run names nothing."""

from __future__ import annotations

import pytest

from agent import ask_sync
from anomaly import signals
from tests.conftest import new_database
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
