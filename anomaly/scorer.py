"""The scorer: features → detectors → drift → `anomalies` rows, plus training and state handling.

`Scorer` is synchronous and owns no thread: the serve loop (anomaly/service.py), the CLI and the
benchmarks drive it. Per window it scores every active entity with the autoencoder when the model
knows the entity, else with the robust baseline (cold start, new entities), so no entity goes unwatched.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from pydantic_settings import BaseSettings, SettingsConfigDict

from anomaly import state as state_store
from anomaly.baseline import (
    BaselineDetector,
    Normaliser,
    Scores,
    directional,
    fmt_value,
    inverse,
    severity,
    transform,
)
from anomaly.drift import Decision, DriftTracker
from anomaly.features import (
    FEATURE_NAMES,
    FEATURES,
    Entity,
    FeatureTable,
    compute_features,
    downstream_shift,
    entity_label,
    from_epoch,
    to_epoch,
)
from anomaly.model import AutoencoderDetector, TrainConfig, train
from anomaly.tables import ANOMALY_TABLE
from store import Store

log = logging.getLogger(__name__)

_KIND = {
    "requests": "traffic", "error_ratio": "errors", "error_logs": "errors", "new_templates": "errors",
    "p50": "latency", "p95": "latency", "p99": "latency", "self_p95": "latency",
    "calls_per_request": "dependency", "downstream_shift": "dependency", "cpu": "saturation", "memory": "saturation",
}


_RESOURCES = np.array([FEATURE_NAMES.index("cpu"), FEATURE_NAMES.index("memory")])
_ERROR_RATIO = FEATURE_NAMES.index("error_ratio")
ERROR_LED = 0.5  # the error ratio's share of a window's score above which its error count decides


def two_sources(contrib: np.ndarray, share: float = 0.15) -> bool:
    """Both the service's resource gauges (CPU, memory) and its requests (spans, logs) carry the anomaly. A
    rare normal event (one slow call, one background error) moves only its requests' statistics: evidence
    from an independent source needs no second window to be believed (a leak that slows requests)."""
    resources = float(contrib[_RESOURCES].sum())
    return resources >= share and float(contrib.sum()) - resources >= share


class AnomalyConfig(BaseSettings):
    """Scorer knobs (env OTEL_AI_ANOMALY_*); the window length comes from Settings.anomaly_window_seconds."""

    model_config = SettingsConfigDict(env_prefix="OTEL_AI_ANOMALY_", extra="ignore")

    min_history_windows: int = 20  # an entity needs this many windows before the baseline scores it
    train_min_windows: int = 120  # distinct windows of history before the autoencoder is trained (1 h at 30 s)
    train_hours: float = 24.0  # sliding training window
    retrain_hours: float = 6.0  # retrain this often
    baseline_refit_minutes: float = 10.0  # cold start: refit the baseline this often (new entities)
    baseline_lookback_hours: float = 2.0  # cold start: history the baseline learns from
    drift_sustain_windows: int = 60  # a shift lasting this long is a change, not an incident (30 min at 30 s)
    drift_confirm_windows: int = 60  # then this long at the new level makes it the new normal
    silent_min_requests: float = 5.0  # entities normally this busy per window are expected in every window
    immediate_score: float = 5.0  # below this, an entity must be anomalous in two windows close together to alert
    recent_windows: int = 3  # "close together": the earlier anomalous window at most this many windows before
    # windows whose anomaly is mostly the error ratio: judged by how likely their error count is at the entity's
    # learned error rate (binomial tail). At least this likely (by chance 3 times a day per entity at 30 s): a
    # failure among a dozen calls, it cannot start an alert. At most this likely: it alerts at once; by chance
    # 0.03 times a day per entity, 3% of the false-alarm budget (1 per entity-day).
    error_chance_p: float = 1e-3
    error_certain_p: float = 1e-5
    grace_seconds: float = 10.0  # a window is closed this long after its end (late spans)
    max_catchup_windows: int = 20
    template_lookback_seconds: float = 3600.0
    seed: int = 0
    threads: int = 1
    epochs: int = 12
    max_train_seconds: float = 45.0


@dataclass
class AnomalyRecord:
    """One row of the `anomalies` table."""

    window_start: datetime
    window_end: datetime
    service: str
    operation: str
    span_kind: str
    score: float
    severity: str
    detector: str
    kind: str
    model_version: str
    features: dict[str, float]
    contributions: list[dict]
    explanation: str

    def as_dict(self) -> dict:
        return {
            "window_start": self.window_start.isoformat(), "window_end": self.window_end.isoformat(),
            "service": self.service, "operation": self.operation, "span_kind": self.span_kind,
            "score": round(self.score, 3), "severity": self.severity, "detector": self.detector, "kind": self.kind,
            "model_version": self.model_version, "features": self.features, "contributions": self.contributions,
            "explanation": self.explanation,
        }


_COLUMNS = ["window_start", "window_end", "service", "operation", "span_kind", "score", "severity", "detector",
            "kind", "model_version", "features", "contributions", "explanation"]


def write_records(store: Store, records: list[AnomalyRecord]) -> int:
    if not records:
        return 0
    cols = [
        [r.window_start for r in records], [r.window_end for r in records], [r.service for r in records],
        [r.operation for r in records], [r.span_kind for r in records], [float(r.score) for r in records],
        [r.severity for r in records], [r.detector for r in records], [r.kind for r in records],
        [r.model_version for r in records], [json.dumps(r.features) for r in records],
        [json.dumps(r.contributions) for r in records], [r.explanation for r in records],
    ]
    return store.insert(ANOMALY_TABLE, _COLUMNS, cols)


def _raw_features(values: np.ndarray) -> dict[str, float]:
    return {name: round(float(v), 6) for name, v in zip(FEATURE_NAMES, values, strict=True) if math.isfinite(v)}


def explain(entity: Entity, values: np.ndarray, expected_t: np.ndarray, contrib: np.ndarray,
            z: np.ndarray | None = None) -> tuple[str, list[dict]]:
    """Readable text and the per-feature contributions (actual vs expected) of one scored window."""
    order = [int(i) for i in np.argsort(-contrib) if contrib[i] > 0.02][:5]
    contributions = []
    parts = []
    label = entity_label(entity)
    for i in order:
        actual = float(values[i]) if math.isfinite(values[i]) else float("nan")
        expected = inverse(i, float(expected_t[i])) if math.isfinite(expected_t[i]) else float("nan")
        item = {"feature": FEATURES[i].name, "label": FEATURES[i].label, "share": round(float(contrib[i]), 3),
                "actual": actual if math.isfinite(actual) else None,
                "expected": expected if math.isfinite(expected) else None}
        if z is not None:
            item["z"] = round(float(z[i]), 2)
        contributions.append(item)
        if len(parts) < 3 and (not parts or contrib[i] >= 0.15):
            parts.append(f"{FEATURES[i].label} of {label} {fmt_value(i, actual)} vs {fmt_value(i, expected)} expected")
    return "; ".join(parts) or f"{label} unusual", contributions


@dataclass
class Scorer:
    store: Store | None
    window_seconds: int = 30
    config: AnomalyConfig = field(default_factory=AnomalyConfig)
    normaliser: Normaliser | None = None
    baseline: BaselineDetector | None = None
    model: AutoencoderDetector | None = None
    version: int = 0
    train_start: float = 0.0
    train_end: float = 0.0
    trained_at: float = 0.0
    baseline_fit_at: float = 0.0
    last_scored: int | None = None
    drift: DriftTracker = field(default_factory=DriftTracker)
    last_anomalous: dict[Entity, int] = field(default_factory=dict)
    should_stop: Callable[[], bool] | None = None
    first_seen: float | None = None

    def __post_init__(self) -> None:
        self.drift = DriftTracker(self.config.drift_sustain_windows, self.config.drift_confirm_windows)

    # ---- state -------------------------------------------------------------------------------
    @property
    def model_version(self) -> str:
        if self.model is not None:
            return f"ae-v{self.version}"
        return f"baseline-v{self.version}" if self.version else "baseline"

    def load(self) -> bool:
        """Restore the newest saved model (no retraining on restart). False on a cold start."""
        if self.store is None:
            return False
        saved = state_store.load_latest(self.store, self.window_seconds)
        if saved is None:
            return False
        self.normaliser = Normaliser.from_state(saved.payload["normaliser"])
        self.baseline = BaselineDetector(self.normaliser, float(saved.payload.get("baseline_threshold", 6.0)))
        if "baseline_feature_thresholds" in saved.payload:
            self.baseline.feature_thresholds = np.array(saved.payload["baseline_feature_thresholds"], dtype=float)
        self.model = (
            AutoencoderDetector.from_state(saved.payload["model"], self.normaliser)
            if "model" in saved.payload else None
        )
        self.version = saved.version
        self.train_start, self.train_end = saved.train_start.timestamp(), saved.train_end.timestamp()
        self.trained_at = saved.created_at.timestamp()
        log.info("anomaly model %s restored (trained on %s .. %s)", self.model_version, saved.train_start,
                 saved.train_end)
        return True

    def save(self, windows: int, metrics: dict, new_version: bool = True) -> None:
        if self.store is None or self.normaliser is None:
            return
        if new_version or not self.version:
            self.version = state_store.next_version(self.store)
        payload: dict = {"normaliser": self.normaliser.to_state(),
                         "baseline_threshold": float(self.baseline.threshold if self.baseline else 6.0)}
        if self.baseline is not None and self.baseline.feature_thresholds is not None:
            payload["baseline_feature_thresholds"] = [float(x) for x in self.baseline.feature_thresholds]
        if self.model is not None:
            payload["model"] = self.model.to_state()
        state_store.save(self.store, state_store.StoredState(
            version=self.version, detector="autoencoder" if self.model else "baseline",
            created_at=datetime.now(UTC), train_start=from_epoch(self.train_start),
            train_end=from_epoch(self.train_end),
            window_seconds=self.window_seconds, entities=len(self.normaliser.stats), windows=windows, metrics=metrics,
            payload=payload,
        ))

    # ---- fitting -----------------------------------------------------------------------------
    def features(self, start: float, end: float) -> FeatureTable:
        assert self.store is not None
        return compute_features(self.store, start, end, self.window_seconds, self.config.template_lookback_seconds)

    def fit_table(self, table: FeatureTable, train_model: bool = True) -> dict:
        """Fit the normaliser and baseline on `table`; train the autoencoder if there is enough history."""
        t0 = time.monotonic()
        # a cold-start fit keeps the fixed threshold and the MAD scales: its history may hold the incident itself
        self.normaliser = Normaliser.fit(table, min_windows=self.config.min_history_windows, tails=train_model)
        self.baseline = BaselineDetector(self.normaliser)
        if train_model:
            self.baseline.calibrate(table)
        info: dict = {"rows": len(table), "windows": int(len(table.windows())), "entities": len(self.normaliser.stats),
                      "baseline_thresholds": {n: round(float(t), 2)
                                              for n, t in zip(FEATURE_NAMES, self.baseline.thresholds(), strict=True)}}
        if train_model and len(table.windows()) >= self.config.train_min_windows and self.normaliser.stats:
            cfg = TrainConfig(seed=self.config.seed, epochs=self.config.epochs, threads=self.config.threads,
                              max_seconds=self.config.max_train_seconds, should_stop=self.should_stop)
            try:
                self.model = train(table, self.normaliser, cfg)
                info.update({f"model_{k}": v for k, v in self.model.info.items()})
                info["model_threshold"] = round(self.model.threshold, 3)
            except ValueError as exc:
                log.info("autoencoder not trained: %s", exc)
        info["seconds"] = round(time.monotonic() - t0, 2)
        if len(table):
            self.train_start = float(table.window.min())
            self.train_end = float(table.window.max() + self.window_seconds)
        return info

    def fit(self, start: datetime | float, end: datetime | float, train_model: bool = True,
            persist: bool = True) -> dict:
        """Fit on the store's telemetry in [start, end), leaving out windows already flagged as anomalies."""
        s, e = to_epoch(start), to_epoch(end)
        table = self.features(s, e)
        table = table.select(~self._flagged(table))
        info = self.fit_table(table, train_model=train_model)
        if train_model:  # a training attempt, successful or not: the next one waits (see step)
            self.trained_at = time.time()
        if persist and self.normaliser and self.normaliser.stats:
            self.save(info["windows"], info)
            info["version"] = self.model_version
        return info

    def _flagged(self, table: FeatureTable) -> np.ndarray:
        if self.store is None or not len(table):
            return np.zeros(len(table), dtype=bool)
        try:
            rows = self.store.query(
                f"SELECT DISTINCT toUnixTimestamp(window_start), service, operation, span_kind FROM {ANOMALY_TABLE} "
                f"WHERE detector != 'change' AND window_start >= toDateTime64({int(table.window.min())}, 3) "
                f"AND window_start <= toDateTime64({int(table.window.max())}, 3)"
            ).rows
        except Exception:  # noqa: BLE001 - without the table nothing is excluded
            return np.zeros(len(table), dtype=bool)
        flagged = {(int(w), (s, o, k)) for w, s, o, k in rows}
        return np.array([(int(table.window[r]), table.entity_of(r)) in flagged for r in range(len(table))],
                        dtype=bool)

    # ---- scoring -----------------------------------------------------------------------------
    def score_table(self, table: FeatureTable, use_drift: bool = True) -> list[AnomalyRecord]:
        """Score window by window in time order (drift sees them in sequence and a re-based normal applies
        from the next window on); return the anomalies."""
        if self.normaliser is None or self.baseline is None or not len(table):
            return []
        if not use_drift:
            return self._score_window(table, use_drift)
        return [rec for part in table.by_window() for rec in self._score_window(part, use_drift)]

    def _score_window(self, table: FeatureTable, use_drift: bool) -> list[AnomalyRecord]:
        assert self.normaliser is not None and self.baseline is not None
        base = self.baseline.score(table)
        ae = self.model.score(table) if self.model is not None else None
        z, _, _, scale = self.normaliser.z(table)
        x_all = transform(table.values)
        records: list[AnomalyRecord] = []
        for r in np.lexsort((table.entity_idx, table.window)):
            use_ae = ae is not None and bool(ae.scored[r])
            scores: Scores = ae if use_ae else base  # type: ignore[assignment]
            if not scores.scored[r]:
                continue
            entity = table.entity_of(r)
            score = float(scores.score[r])
            anomalous = score >= 1.0
            decision = Decision("alert")
            if use_drift:
                st = self.normaliser.stats[entity]
                level = self.drift.level(entity)
                new_ok = True
                if level is not None:
                    dev = np.abs(directional(np.nan_to_num((x_all[r] - level) / scale[r])))
                    new_ok = bool((dev < self.baseline.thresholds()).all())
                decision = self.drift.update(entity, int(table.window[r]), anomalous, x_all[r],
                                             int(np.argmax(scores.contrib[r])), st.center, new_ok)
            if decision.action == "rebase" and decision.recent is not None:
                self.normaliser.rebase(entity, decision.recent)
                log.info("anomaly: %s re-baselined after a confirmed change", entity_label(entity))
                self.save(0, {"rebased": entity_label(entity)}, new_version=False)
                continue
            ws = int(table.window[r])
            if anomalous:
                previous = self.last_anomalous.get(entity)
                errors = self._error_evidence(entity, table.values[r], scores.contrib[r])
                if errors != "chance":  # chance errors continue an incident, never start one
                    self.last_anomalous[entity] = ws
                # a lone marginal window is noise (long tails), so is one silent window of a quiet entity:
                # alert when it persists or is strong
                silent = table.values[r, 0] == 0 and np.isnan(table.values[r, 1])  # no span at all
                recent = previous is not None and 0 < ws - previous <= self.config.recent_windows * table.window_seconds
                strong = errors == "certain" or (score >= self.config.immediate_score and not silent
                                                 and errors != "chance")
                if (decision.action == "alert" and not recent and not strong
                        and (errors == "chance" or not two_sources(scores.contrib[r]))):
                    continue
            if decision.action == "suppress" or (decision.action == "alert" and not anomalous):
                continue
            records.append(self._record(table, r, entity, score, "autoencoder" if use_ae else "baseline",
                                        scores, z[r], decision))
        return records

    def _error_evidence(self, entity: Entity, values: np.ndarray, contrib: np.ndarray) -> str | None:
        """For a window anomalous mostly through its error ratio: "chance" or "certain" by its error count at
        the entity's learned rate (a ratio alone makes 1 failure in 5 calls look like 4 in 20)."""
        if self.normaliser is None or contrib[_ERROR_RATIO] < ERROR_LED:
            return None
        p = self.normaliser.error_tail(entity, values)
        if p is None:
            return None
        if p >= self.config.error_chance_p:
            return "chance"
        return "certain" if p <= self.config.error_certain_p else None

    def _record(self, table: FeatureTable, r: int, entity: Entity, score: float, detector: str, scores: Scores,
                z: np.ndarray, decision: Decision) -> AnomalyRecord:
        ws = int(table.window[r])
        values = table.values[r].copy()
        st = self.normaliser.stats.get(entity) if self.normaliser is not None else None
        if st is not None and table.calls[r]:  # the call-mix shift exists only against the entity's normal mix
            values[FEATURE_NAMES.index("downstream_shift")] = downstream_shift(table.calls[r], st.shares)
        explanation, contributions = explain(entity, values, scores.expected[r], scores.contrib[r], z)
        top = contributions[0]["feature"] if contributions else "requests"
        kind = _KIND.get(top, "latency")
        if decision.action == "change":
            i = decision.feature
            detector, kind = "change", "change"
            since = from_epoch(decision.since).strftime("%Y-%m-%d %H:%M UTC")
            explanation = (
                f"change: {FEATURES[i].label} of {entity_label(entity)} shifted from "
                f"{fmt_value(i, inverse(i, decision.before))} to {fmt_value(i, inverse(i, decision.after))} "
                f"since {since}, sustained {self.config.drift_sustain_windows} windows; "
                f"it becomes the new normal after {self.config.drift_confirm_windows} more windows at this level"
            )
            contributions = [{"feature": FEATURES[i].name, "label": FEATURES[i].label,
                              "before": inverse(i, decision.before), "after": inverse(i, decision.after),
                              "since": from_epoch(decision.since).isoformat()}, *contributions]
        return AnomalyRecord(
            window_start=from_epoch(ws), window_end=from_epoch(ws + table.window_seconds), service=entity[0],
            operation=entity[1], span_kind=entity[2], score=score, severity=severity(score), detector=detector,
            kind=kind, model_version=self.model_version, features=_raw_features(values),
            contributions=contributions, explanation=explanation,
        )

    def with_silent_entities(self, table: FeatureTable) -> FeatureTable:
        """Entities that normally serve steady traffic but sent nothing in a window (crashed, unreachable) get a
        row with 0 requests there, so silence is scored too. Only windows where other entities reported."""
        if self.normaliser is None or not len(table):
            return table
        i = FEATURE_NAMES.index("requests")
        expected = [e for e, st in self.normaliser.stats.items()
                    if e[2] != "client" and math.expm1(st.center[i]) >= self.config.silent_min_requests]
        expected_set = set(expected)
        present = set()
        for r in range(len(table)):
            entity = table.entity_of(r)
            if entity in expected_set and np.isnan(table.values[r, i]):
                table.values[r, i] = 0.0  # it reported resources but served nothing
            present.add((int(table.window[r]), entity))
        missing = {(e, int(ws)): {"requests": 0.0} for ws in table.windows() for e in expected
                   if (int(ws), e) not in present}
        if not missing:
            return table
        return table.concat(FeatureTable.from_records(table.window_seconds, missing))

    def score_range(self, start: datetime | float, end: datetime | float, write: bool = True) -> list[AnomalyRecord]:
        """Score the closed windows in [start, end) from the store (and write the anomalies)."""
        table = self.with_silent_entities(self.features(to_epoch(start), to_epoch(end)))
        records = self.score_table(table)
        if write and self.store is not None:
            write_records(self.store, records)
        return records

    # ---- the serve loop's step ------------------------------------------------------------------
    def history_start(self, before: float) -> float | None:
        assert self.store is not None
        lookback = before - self.config.train_hours * 3600
        try:
            first = self.store.query(
                "SELECT toUnixTimestamp64Milli(min(Timestamp)), count() FROM otel_traces "
                f"WHERE Timestamp >= fromUnixTimestamp64Milli(toInt64({int(lookback * 1000)})) "
                f"AND Timestamp < fromUnixTimestamp64Milli(toInt64({int(before * 1000)}))"
            ).rows[0]
        except Exception:  # noqa: BLE001
            return None
        return first[0] / 1000.0 if first[1] else None

    def step(self, now: float | None = None) -> list[AnomalyRecord]:
        """Train/retrain when due, then score the windows closed since the last step."""
        now = time.time() if now is None else now
        w = self.window_seconds
        closed_end = math.floor((now - self.config.grace_seconds) / w) * w
        # first step after (re)start: catch up on the last few windows (re-scored rows replace old ones)
        start = self.last_scored + w if self.last_scored is not None else 0
        start = max(start, closed_end - self.config.max_catchup_windows * w)
        if start >= closed_end:
            return []  # no window closed since the last step
        if self.first_seen is None:
            self.first_seen = self.history_start(closed_end)
            if self.first_seen is None:
                return []  # no telemetry yet
        first = max(self.first_seen, closed_end - self.config.train_hours * 3600)
        history_windows = (closed_end - first) / w
        retry = now - self.trained_at >= self.config.baseline_refit_minutes * 60
        if self.model is None and history_windows >= self.config.train_min_windows and retry:
            log.info("anomaly: training the autoencoder on %.0f windows of history", history_windows)
            self.fit(first, closed_end)
            self.baseline_fit_at = now
        elif self.model is not None and now - self.trained_at >= self.config.retrain_hours * 3600:
            log.info("anomaly: scheduled retraining on the last %.1f h", self.config.train_hours)
            self.fit(closed_end - self.config.train_hours * 3600, closed_end)
        elif self.model is None and (
            self.normaliser is None or now - self.baseline_fit_at >= self.config.baseline_refit_minutes * 60
        ):
            self.fit(max(first, closed_end - self.config.baseline_lookback_hours * 3600), closed_end,
                     train_model=False, persist=False)
            self.baseline_fit_at = now
        records = self.score_range(start, closed_end)
        self.last_scored = closed_end - w
        return records
