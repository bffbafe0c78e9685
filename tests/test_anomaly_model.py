"""Detectors on generated feature tables: training, planted anomalies, cold start, drift, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from anomaly.baseline import FEATURE_INDEX, Normaliser, binomial_tail, fmt_value, inverse, residual
from anomaly.features import FeatureTable
from anomaly.model import TrainConfig, train
from anomaly.scorer import AnomalyConfig, Scorer
from anomaly.synthetic import Plant, entities, generate

ENTS = entities(8)
TARGET = ENTS[1]  # ('svc000', 'op0', 'server')


def split(table: FeatureTable, n_train: int) -> tuple[FeatureTable, FeatureTable]:
    cut = table.window.min() + n_train * table.window_seconds
    return table.select(table.window < cut), table.select(table.window >= cut)


def fitted(train_table: FeatureTable, **config: object) -> Scorer:
    scorer = Scorer(None, 30, AnomalyConfig(train_min_windows=100, **config))
    scorer.fit_table(train_table)
    return scorer


def test_planted_latency_anomaly_found_and_explained() -> None:
    full = generate(8, 300, seed=3, plants=(Plant(TARGET, 260, 10, "p95", 8.0),))
    history, live = split(full, 240)
    scorer = fitted(history)
    assert scorer.model is not None and scorer.model.info["entities"] == 8
    records = scorer.score_table(live)
    t0 = live.window.min()
    hits = [r for r in records if (r.service, r.operation) == TARGET[:2]
            and 20 <= (r.window_start.timestamp() - t0) // 30 < 30]
    others = [r for r in records if r not in hits]
    # every planted window alerts; the first one at once only when it scores 5 or more (else on confirmation)
    found = {int(r.window_start.timestamp() - t0) // 30 for r in hits}
    assert found >= set(range(21, 30)) and len(hits) == len(found), [r.explanation for r in records]
    assert len(others) <= 2, [r.explanation for r in others]
    top = max(hits, key=lambda r: r.score)
    assert top.detector == "autoencoder" and top.kind == "latency" and top.model_version.startswith("ae-v")
    assert top.severity in ("warning", "critical")
    assert top.explanation.startswith("p95 of svc000/op0 ")
    assert " vs " in top.explanation and top.explanation.endswith("expected")
    c = top.contributions[0]
    assert c["feature"] == "p95" and c["share"] > 0.5
    # actual is the planted value; expected is near the entity's normal p95, far below it
    assert c["actual"] == pytest.approx(top.features["p95"])
    normal_p95 = np.nanmedian(history.values[history.entity_idx == 1, FEATURE_INDEX["p95"]])
    assert 0.6 * normal_p95 < c["expected"] < 1.6 * normal_p95
    assert c["actual"] > 4 * c["expected"]


def test_autoencoder_and_baseline_flag_error_burst_and_stay_quiet_otherwise() -> None:
    target = ENTS[4]  # ('svc001', '', 'service')
    full = generate(8, 320, seed=5, plants=(Plant(target, 280, 6, "error_ratio", value=0.4),))
    history, live = split(full, 260)
    scorer = fitted(history)
    ae = scorer.model.score(live)
    base = scorer.baseline.score(live)
    is_target = np.array([live.entity_of(r) == target for r in range(len(live))])
    k = (live.window - live.window.min()) // 30
    in_fault = is_target & (k >= 20) & (k < 26)
    for scores in (ae, base):
        assert (scores.score[in_fault] >= 1).all()
        assert (scores.score[~in_fault] >= 1).sum() <= 2
        assert np.isfinite(scores.score).all()


def test_training_is_deterministic_under_a_seed() -> None:
    history, live = split(generate(6, 200, seed=7), 150)
    a = train(history, Normaliser.fit(history), TrainConfig(seed=11, epochs=3))
    b = train(history, Normaliser.fit(history), TrainConfig(seed=11, epochs=3))
    assert np.array_equal(a.score(live).score, b.score(live).score)
    assert a.threshold == b.threshold


def test_cold_start_scores_with_the_baseline() -> None:
    full = generate(8, 80, seed=9, plants=(Plant(TARGET, 70, 5, "p99", 10.0),))
    history, live = split(full, 60)
    scorer = fitted(history)  # 60 windows < train_min_windows=100: no model yet
    assert scorer.model is None and scorer.normaliser is not None
    records = scorer.score_table(live)
    assert records and {r.detector for r in records} == {"baseline"}
    assert {(r.service, r.operation) for r in records} == {TARGET[:2]}
    assert all(r.model_version == "baseline" for r in records)
    assert records[0].explanation.startswith("p99 of svc000/op0")


def test_new_entity_falls_back_to_baseline_or_waits() -> None:
    full = generate(8, 300, seed=4)
    history, live = split(full, 240)
    scorer = fitted(history)
    # an entity the model never saw is not scored by it; an unknown one is not scored at all
    stranger = FeatureTable.from_records(30, {(("new", "", "service"), int(live.window.min())): {"requests": 5.0}})
    assert not scorer.model.score(stranger).scored.any()
    assert scorer.score_table(stranger) == []


def test_drift_flagged_once_then_becomes_new_normal() -> None:
    n = 260
    everything = generate(8, n + 20, seed=12, plants=tuple(
        Plant(TARGET, 140, n + 20 - 140, f, 3.0) for f in ("p50", "p95", "p99", "self_p95")
    ))
    full, tail = split(everything, n)
    history, live = split(full, 120)
    scorer = fitted(history, drift_sustain_windows=10, drift_confirm_windows=15)
    before = scorer.normaliser.stats[TARGET].center.copy()
    records = [r for r in scorer.score_table(live) if (r.service, r.operation) == TARGET[:2]]
    changes = [r for r in records if r.detector == "change"]
    alerts = [r for r in records if r.detector != "change"]
    assert len(changes) == 1, [r.explanation for r in records]
    change = changes[0]
    assert change.kind == "change" and "shifted from" in change.explanation and "new normal" in change.explanation
    assert change.contributions[0]["after"] > 2 * change.contributions[0]["before"]
    # latency alerts during the sustain period (before the change record); after it at most a stray one
    latency = [a for a in alerts if a.kind == "latency"]
    assert 5 <= len([a for a in latency if a.window_start < change.window_start]) <= 10
    assert len([a for a in latency if a.window_start > change.window_start]) <= 1
    # after confirmation the normaliser's normal moved to the new level
    after = scorer.normaliser.stats[TARGET].center
    i = FEATURE_INDEX["p95"]
    assert math.expm1(after[i]) > 2.2 * math.expm1(before[i])
    # further windows at the new level are normal now
    assert len([r for r in scorer.score_table(tail) if (r.service, r.operation) == TARGET[:2]]) <= 1


def test_short_incident_is_not_absorbed_as_drift() -> None:
    plants = (Plant(TARGET, 160, 8, "p95", 8.0), Plant(TARGET, 215, 5, "p95", 8.0))
    everything = generate(8, 230, seed=13, plants=plants)
    full, again = split(everything, 200)
    history, live = split(full, 140)
    scorer = fitted(history, drift_sustain_windows=10, drift_confirm_windows=10)
    records = [r for r in scorer.score_table(live) if (r.service, r.operation) == TARGET[:2]]
    assert len(records) >= 7 and all(r.detector != "change" for r in records)
    assert len([r for r in scorer.score_table(again) if (r.service, r.operation) == TARGET[:2]]) >= 4


def test_missing_and_malformed_metrics_do_not_break_scoring() -> None:
    full = generate(8, 300, seed=21, with_metrics=False)
    history, live = split(full, 240)
    scorer = fitted(history)
    bad = live.select(np.ones(len(live), dtype=bool))
    bad.values = bad.values.copy()
    cpu, mem, p95 = FEATURE_INDEX["cpu"], FEATURE_INDEX["memory"], FEATURE_INDEX["p95"]
    bad.values[::3, cpu] = np.inf
    bad.values[1::3, cpu] = -1e300
    bad.values[::5, mem] = np.nan
    bad.values[::7, p95] = np.nan  # a window without duration quantiles
    bad.values[::11] = np.nan  # a row with nothing at all
    records = scorer.score_table(bad)
    assert all(math.isfinite(r.score) for r in records)
    for scores in (scorer.model.score(bad), scorer.baseline.score(bad)):
        assert np.isfinite(scores.score).all()
    # inf and huge values read as unknown/clipped, never NaN in a stored explanation
    assert all("nan" not in r.explanation for r in records)
    # from_records drops non-numeric junk to NaN
    t = FeatureTable.from_records(30, {(("a", "", "service"), 0): {"cpu": "high", "p95": float("inf")}})
    assert np.isnan(t.values).all()


def test_value_formatting_reads_like_a_person_wrote_it() -> None:
    p95, err, req, mem = (FEATURE_INDEX[k] for k in ("p95", "error_ratio", "requests", "memory"))
    assert fmt_value(p95, 2.83) == "2.8 s"
    assert fmt_value(p95, 0.4) == "0.40 s"
    assert fmt_value(p95, 0.0123) == "12.3 ms"
    assert fmt_value(err, 0.35) == "35.0%"
    assert fmt_value(req, 1234) == "1,234"
    assert fmt_value(mem, 3 * 2**30) == "3.0 GiB"
    assert fmt_value(p95, float("nan")) == "n/a"
    # a reconstruction outside the feature's range reads as its edge, not "-0.1% expected"
    assert inverse(err, -0.001) == 0.0 and inverse(err, 1.2) == 1.0 and inverse(req, -0.2) == 0.0


def test_training_is_abandoned_when_serve_stops() -> None:
    from anomaly.model import TrainingInterrupted

    calls = []

    def stopping() -> bool:
        calls.append(1)
        return len(calls) > 2  # stop after two batches

    scorer = Scorer(None, 30, AnomalyConfig(train_min_windows=100), should_stop=stopping)
    with pytest.raises(TrainingInterrupted):
        scorer.fit_table(generate(8, 400, seed=1))
    assert scorer.model is None and len(calls) == 3


def test_intermittent_anomaly_alerts_once_confirmed_within_recent_windows() -> None:
    """One slow burst every other window: a lone marginal window is not alerted, its repeat two windows
    later is (within `recent_windows`); with back-to-back confirmation only, it never would be."""
    target = ENTS[4]  # ('svc001', '', 'service')
    plants = tuple(Plant(target, 280 + k, 1, feature, 2.0) for k in (0, 2, 4) for feature in ("p50", "p95"))
    history, live = split(generate(8, 320, seed=5, plants=plants), 260)
    for recent, expected in ((3, [22, 24]), (1, [])):
        scorer = fitted(history, recent_windows=recent)
        scores = scorer.model.score(live)
        rows = [r for r in range(len(live)) if live.entity_of(r) == target]
        marginal = [int((live.window[r] - live.window.min()) // 30) for r in rows if 1 <= scores.score[r] < 5]
        assert marginal == [20, 22, 24], "the planted windows must be marginal for this test to mean anything"
        records = scorer.score_table(live)
        alerted = sorted(int((r.window_start.timestamp() - live.window.min()) // 30) for r in records
                         if (r.service, r.operation, r.span_kind) == target)
        assert alerted == expected


def test_error_windows_are_judged_by_their_count() -> None:
    """An operation that never fails, 8 calls a window. One failure in each of two neighbouring windows is
    chance at its learned rate (p = 0.002): no alert, though both windows score as anomalous and confirm each
    other. Two failures in one window are not (p = 2e-6): an alert at once, though the score is marginal.
    Judged by the error ratio alone (the rule off), it is the other way round."""
    target = ENTS[1]  # ('svc000', 'op0', 'server')
    plants = (Plant(target, 0, 320, "requests", value=8), Plant(target, 0, 320, "error_ratio", value=0.0),
              Plant(target, 280, 2, "error_ratio", value=1 / 8), Plant(target, 290, 1, "error_ratio", value=2 / 8))
    history, live = split(generate(8, 320, seed=5, plants=plants), 260)
    rows = {int((live.window[r] - live.window.min()) // 30): r for r in range(len(live)) if live.entity_of(r) == target}
    scorer = fitted(history)
    assert scorer.normaliser.stats[target].error_rate == pytest.approx(0.5 / (8 * 260 + 1))
    assert scorer.normaliser.error_tail(target, live.values[rows[20]]) == pytest.approx(1 - (1 - 0.5 / 2081) ** 8)
    scores = scorer.model.score(live)
    assert [k for k in sorted(rows) if scores.score[rows[k]] >= 1] == [20, 21, 30]
    assert scores.score[rows[30]] < 5, "the burst must be marginal for the test to mean anything"
    assert _alerted(scorer, live, target) == [30]
    baseline_only = fitted(history)
    baseline_only.model = None  # the baseline alone: the same count decides
    assert _alerted(baseline_only, live, target) == [30]
    by_ratio = fitted(history, error_chance_p=1.0, error_certain_p=0.0)
    assert _alerted(by_ratio, live, target) == [21]
    # the learned rate survives a restart; a state saved before rates were learned judges by the ratio alone
    state = scorer.normaliser.to_state()
    assert Normaliser.from_state(state).stats[target].error_rate == scorer.normaliser.stats[target].error_rate
    by_ratio.normaliser = Normaliser.from_state({k: v for k, v in state.items() if k != "error_rate"})
    by_ratio.config = AnomalyConfig(train_min_windows=100)
    by_ratio.last_anomalous = {}
    assert by_ratio.normaliser.error_tail(target, live.values[rows[20]]) is None
    assert _alerted(by_ratio, live, target) == [21]


def test_binomial_tail_matches_the_sum_of_the_distribution() -> None:
    for k, n, p in ((1, 12, 0.02), (2, 8, 2.4e-4), (5, 20, 8e-5), (50, 1000, 0.02), (6, 6, 0.5), (40, 400, 1e-4)):
        exact = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
        assert binomial_tail(k, n, p) == pytest.approx(exact, rel=1e-9)
    assert 0 < binomial_tail(40, 400, 1e-4) < 1e-100  # a tail far below what a ratio's z could express
    assert binomial_tail(0, 5, 0.1) == 1.0 and binomial_tail(6, 5, 0.1) == 0.0 and binomial_tail(1, 5, 0.0) == 0.0


def _alerted(scorer: Scorer, live: FeatureTable, entity: tuple[str, str, str]) -> list[int]:
    return sorted(int((r.window_start.timestamp() - live.window.min()) // 30) for r in scorer.score_table(live)
                  if (r.service, r.operation, r.span_kind) == entity)


def test_resources_and_requests_together_alert_without_confirmation() -> None:
    """A leak that slows requests: memory and latency of one service move in the same window. Evidence from
    two independent sources alerts in the first marginal window; either alone waits for its repeat."""
    target = ENTS[4]  # ('svc001', '', 'service')
    for memory, latency, expected in ((1.1, 1.5, [20, 21, 22]), (1.12, 1.0, [21, 22]), (1.0, 1.8, [21, 22])):
        plants = (Plant(target, 280, 3, "memory", memory), Plant(target, 280, 3, "p50", latency),
                  Plant(target, 280, 3, "p95", latency))
        history, live = split(generate(8, 320, seed=5, plants=plants), 260)
        scorer = fitted(history)
        scores = scorer.model.score(live)
        first = [r for r in range(len(live)) if live.entity_of(r) == target and live.window[r] == live.window[0] + 600]
        assert 1 <= scores.score[first[0]] < 5, "the first planted window must be marginal for the test to mean a thing"
        assert _alerted(scorer, live, target) == expected, (memory, latency)


def test_heavy_latency_tail_is_normal_and_unseen_quantiles_are_not_scored() -> None:
    """p99 of a call that now and then waits on a slow dependency: 30x its usual value in a fifth of the
    windows. A spike of that size is its normal, not an anomaly; a well-behaved entity keeps the sensitivity
    of its MAD. A quantile that reached its request minimum in only a few windows has no normal: not scored."""
    p99, p95 = FEATURE_INDEX["p99"], FEATURE_INDEX["p95"]
    full = generate(8, 320, seed=7)
    rows = np.flatnonzero(full.entity_idx == 1)  # TARGET
    rng = np.random.default_rng(1)
    full.values[rows[rng.random(len(rows)) < 0.2], p99] *= 30
    history, live = split(full, 260)
    spiky, steady = np.flatnonzero(live.entity_idx == 1)[5], np.flatnonzero(live.entity_idx == 2)[5]
    live.values[spiky, p99] = np.nanmedian(history.values[history.entity_idx == 1, p99]) * 30
    live.values[steady, p99] = np.nanmedian(history.values[history.entity_idx == 2, p99]) * 3
    z_tails = Normaliser.fit(history).z(live)[0]
    z_mad = Normaliser.fit(history, tails=False).z(live)[0]
    assert z_tails[spiky, p99] < 2 < 5 <= z_mad[spiky, p99]
    assert z_tails[steady, p99] >= max(5.0, 0.7 * z_mad[steady, p99])
    scorer = fitted(history)
    assert scorer.model.score(live).score[spiky] < 1 and scorer.baseline.score(live).score[spiky] < 1

    sparse = history.values[history.entity_idx == 2]
    sparse[5:, p95] = np.nan  # the p95 reached its request minimum in 5 windows only
    history.values[history.entity_idx == 2] = sparse
    _, mask, _, _ = Normaliser.fit(history, min_windows=20).z(live)
    assert not mask[live.entity_idx == 2, p95].any()
    assert mask[live.entity_idx == 1, p95].all()


def test_residual_counts_increases_above_normal_only() -> None:
    """A latency at its normal (or held there by the 20/50 ms floor) is no increase, however low the network
    expected it; above normal it counts from normal or from the expectation, whichever is higher. Traffic
    counts both ways."""
    p95, req = FEATURE_INDEX["p95"], FEATURE_INDEX["requests"]
    z, recon = np.zeros((3, len(FEATURE_INDEX))), np.zeros((3, len(FEATURE_INDEX)))
    z[0, p95], recon[0, p95] = 0.0, -3.0  # held at normal, expected lower
    z[1, p95], recon[1, p95] = 4.0, -3.0  # above normal, expected lower: 4 above normal
    z[2, p95], recon[2, p95] = 4.0, 1.5  # above normal, expected above normal too
    z[0, req], recon[0, req] = -4.0, 0.0  # traffic drop
    r = residual(z, recon)
    assert r[0, p95] == 0.0 and r[1, p95] == 4.0 and r[2, p95] == 2.5 and r[0, req] == 4.0
