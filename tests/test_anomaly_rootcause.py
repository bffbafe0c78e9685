"""Root-cause ranking beyond parent/child calls, on small generated telemetry in a real chDB store:
a message flood (producer → consumers through span links), a noisy neighbour on a shared node, and an
unreachable service whose callers' calls fail without reaching it."""

from __future__ import annotations

import time

import pytest

from anomaly.rootcause import rank_root_causes
from anomaly.scorer import AnomalyConfig, Scorer
from anomaly.topology import topology
from tests.anomaly_helpers import insert_spans, insert_topology, shop_spans, topology_telemetry

W = 30
HISTORY = 120
FAULT = 8


def _scored(store, fault: str):  # noqa: ANN202
    t0 = (time.time() // W) * W - (HISTORY + FAULT) * W
    insert_topology(store, *topology_telemetry(t0, HISTORY + FAULT, seed=3, fault=fault, fault_from=HISTORY,
                                               fault_to=HISTORY + FAULT))
    fault_start, end = t0 + HISTORY * W, t0 + (HISTORY + FAULT) * W
    scorer = Scorer(store, W, AnomalyConfig(train_min_windows=100))
    scorer.fit(t0, fault_start)
    records = scorer.score_range(fault_start, end)
    return records, rank_root_causes(store, fault_start, end), topology(store, fault_start, end)


def test_topology_reads_message_flows_placement_and_unreached_peers(store) -> None:
    t0 = (time.time() // W) * W - 40 * W
    insert_topology(store, *topology_telemetry(t0, 20, seed=1))
    insert_spans(store, shop_spans(t0 + 20 * W, 20, per_window=5, seed=2, fault="payment_down", fault_from=10,
                                   fault_to=20))
    topo = topology(store, t0 + 30 * W, t0 + 40 * W)
    assert topology(store, t0, t0 + 20 * W).messages.keys() == {("orders", "billing")}
    assert topology(store, t0, t0 + 20 * W).nodes["pricing"] == {"node-c"}
    assert topology(store, t0, t0 + 20 * W).neighbours("billing") == {"pricing", "reports"}
    peer, calls, unreached = topo.unreached[("checkout", "Charge")]
    assert peer == "payment" and calls == unreached == 50
    # normal calls reach their peer: nothing unreached before the fault
    assert ("checkout", "Charge") not in topology(store, t0 + 20 * W, t0 + 30 * W).unreached


@pytest.mark.parametrize(("fault", "cause", "victims"), [
    ("flood", "orders", {"billing"}),
    ("noisy", "reports", {"pricing", "billing"}),
])
def test_origin_ranks_above_the_services_it_hit(store, fault: str, cause: str, victims: set[str]) -> None:
    records, causes, _ = _scored(store, fault)
    assert victims <= {r.service for r in records}, "the victims must be anomalous for the test to mean anything"
    assert causes[0].service == cause, [(c.service, c.score, c.reason) for c in causes[:3]]
    assert causes[0].kind == "saturation"
    victim = {c.service: c for c in causes if c.service in victims}
    ranked = [(c.service, c.score, c.reason) for c in causes]
    assert victim.keys() == victims and all(c.score < 0.5 for c in victim.values()), ranked
    hint = "load from orders surged" if fault == "flood" else "shares a node with reports"
    assert all(hint in c.reason for c in victim.values()), [c.reason for c in victim.values()]
