"""Robust per-entity normalisation (median/MAD, time-of-day aware) and the statistical baseline detector.

The normaliser is shared by both detectors: the autoencoder sees every entity in "robust z" units
(deviation from that entity's own median in MADs), so one model serves entities whose scales differ
by orders of magnitude. The baseline detector scores the same z values directly; it serves entities
with too little history for the model, cold starts, and is the comparison the model must beat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from anomaly.features import FEATURE_INDEX, FEATURES, N_FEATURES, Entity, FeatureTable, downstream_shift

MAD_TO_SIGMA = 1.4826
Z_CLIP = 50.0  # beyond this a deviation is "huge"; clipping keeps scores finite and readable
_UPWARD = np.array([f.upward_only for f in FEATURES])
_FLOOR = np.array([f.floor for f in FEATURES])
_REL_FLOOR = np.array([f.rel_floor for f in FEATURES])
_ERR = FEATURE_INDEX["error_ratio"]
_REQ = FEATURE_INDEX["requests"]
_SHIFT = FEATURE_INDEX["downstream_shift"]
_LATENCY = np.array([i for i, f in enumerate(FEATURES) if f.unit == "s"])
_MIN_DELTA = np.array([f.min_delta for f in FEATURES])
_P95, _P99 = FEATURE_INDEX["p95"], FEATURE_INDEX["p99"]
MIN_REQUESTS_P95, MIN_REQUESTS_P99 = 20, 100  # below these counts the quantile is (nearly) the maximum


def transform(values: np.ndarray) -> np.ndarray:
    """Raw feature values → the space statistics are taken in (log for counts and durations)."""
    out = np.array(values, dtype=np.float64, copy=True)
    for i, f in enumerate(FEATURES):
        if f.transform == "log1p":
            out[..., i] = np.log1p(np.clip(out[..., i], 0, None))
        elif f.transform == "logms":
            out[..., i] = np.log1p(np.clip(out[..., i], 0, None) * 1000.0)
    return out


def inverse(i: int, value: float) -> float:
    """One transformed value back to the raw unit, for explanations (a reconstruction can land outside the
    feature's range: no "-0.1% errors expected")."""
    f = FEATURES[i]
    if f.transform == "log1p":
        return max(float(np.expm1(value)), 0.0)
    if f.transform == "logms":
        return max(float(np.expm1(value) / 1000.0), 0.0)
    if f.unit in ("ratio", "share"):
        return min(max(float(value), 0.0), 1.0)
    return float(value)


def mask_thin_quantiles(values: np.ndarray) -> None:
    """A tail quantile of a handful of requests is just their maximum: not a statistic to learn or alert on."""
    few = np.nan_to_num(values[:, _REQ], nan=0.0)
    values[few < MIN_REQUESTS_P95, _P95] = np.nan
    values[few < MIN_REQUESTS_P99, _P99] = np.nan


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): how surprising k errors in n requests are at error rate p. Summed in
    log space from the k-th term, so a tail of 1e-40 is as exact as one of 0.1."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    i = np.arange(k, n, dtype=np.float64)  # each next term: pmf(i + 1) = pmf(i) (n - i) / (i + 1) p / (1 - p)
    first = (math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p)
             + (n - k) * math.log1p(-p))
    log_pmf = first + np.concatenate(([0.0], np.cumsum(np.log((n - i) / (i + 1)) + math.log(p) - math.log1p(-p))))
    top = float(log_pmf.max())
    return min(1.0, math.exp(top) * float(np.exp(log_pmf - top).sum()))


def error_rate(values: np.ndarray) -> float:
    """The mean error rate of windows (rows of raw features), with half an error of prior: an entity that
    never failed in 6,000 requests gets 1 in 12,000, not an impossible 0."""
    req = np.nan_to_num(values[:, _REQ], nan=0.0)
    errors = np.nan_to_num(values[:, _ERR], nan=0.0) * req
    return float((errors.sum() + 0.5) / (req.sum() + 1.0))


def hour_of_day(window: np.ndarray) -> np.ndarray:
    return (np.asarray(window) // 3600) % 24


@dataclass
class EntityStats:
    """One entity's normal: per-feature median and scale (transformed units), and its call mix."""

    center: np.ndarray
    scale: np.ndarray
    windows: int
    hourly: dict[int, np.ndarray] = field(default_factory=dict)
    shares: dict[str, float] = field(default_factory=dict)
    error_rate: float = math.nan  # errors per request over the whole history (the median window has none)

    def center_at(self, hour: int) -> np.ndarray:
        h = self.hourly.get(int(hour))
        if h is None:
            return self.center
        return np.where(np.isnan(h), self.center, h)


def _robust(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column-wise median and MAD scale, ignoring NaN; all-NaN columns stay NaN."""
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            center = np.nanmedian(x, axis=0)
            mad = np.nanmedian(np.abs(x - center), axis=0)
    scale = np.maximum.reduce([MAD_TO_SIGMA * np.nan_to_num(mad), _FLOOR, _REL_FLOOR * np.abs(np.nan_to_num(center))])
    return center, scale


def _tail_scale(x: np.ndarray, center: float) -> float:
    """Scale of a p99 implied by the 90th percentile of normal windows (Gaussian-consistent: the MAD's scale
    for well-behaved data). A p99 is the latency of a window's one or two slowest requests: a call that now
    and then waits on a slow dependency has a p99 of 1 ms in most windows and 50 ms in some, a normal the
    MAD alone calls impossibly sharp. The 90th percentile ignores an incident covering less than a tenth of
    the history, and p50/p95 (MAD only) still see a longer one."""
    present = x[~np.isnan(x)]
    if not len(present) or math.isnan(center):
        return 0.0
    return max(float(np.quantile(present, 0.90)) - center, 0.0) / 1.2816


def _mean_shares(calls: list[dict[str, float]]) -> dict[str, float]:
    totals: dict[str, float] = {}
    n = 0
    for c in calls:
        s = sum(c.values())
        if s <= 0:
            continue
        n += 1
        for k, v in c.items():
            totals[k] = totals.get(k, 0.0) + v / s
    return {k: v / n for k, v in totals.items()} if n else {}


@dataclass
class Normaliser:
    """Per-entity robust statistics; `z()` turns a feature table into deviations from normal."""

    stats: dict[Entity, EntityStats] = field(default_factory=dict)
    min_windows: int = 10
    hourly_min_windows: int = 20
    hourly_min_days: int = 2

    @classmethod
    def fit(cls, table: FeatureTable, min_windows: int = 10, tails: bool = True) -> Normaliser:
        """`tails`: widen p99 scales to what the 90th percentile of windows reaches; for a history expected
        free of incidents (an incident over a tenth of it would pass for the normal tail)."""
        norm = cls(min_windows=min_windows)
        for entity, rows in table.rows_by_entity().items():
            norm.fit_entity(entity, table, rows, tails)
        return norm

    def fit_entity(self, entity: Entity, table: FeatureTable, rows: np.ndarray, tails: bool = True) -> None:
        if len(rows) < self.min_windows:
            return
        shares = _mean_shares([table.calls[r] for r in rows])
        values = table.values[rows].copy()
        values[:, _SHIFT] = [downstream_shift(table.calls[r], shares) for r in rows]
        mask_thin_quantiles(values)
        x = transform(values)
        center, scale = _robust(x)
        # a feature present in too few windows has no normal to score against (a p99 that reaches its request
        # minimum only in the busiest windows): learned from one or two windows, its next value looks extreme
        unseen = (~np.isnan(x)).sum(axis=0) < self.min_windows
        center[unseen] = np.nan
        if tails:
            scale[_P99] = max(scale[_P99], _tail_scale(x[:, _P99], center[_P99]))
        hourly: dict[int, np.ndarray] = {}
        hours = hour_of_day(table.window[rows])
        days = table.window[rows] // 86400
        for h in np.unique(hours):
            sel = hours == h
            if sel.sum() >= self.hourly_min_windows and len(np.unique(days[sel])) >= self.hourly_min_days:
                hourly[int(h)] = np.where(unseen, np.nan, _robust(x[sel])[0])
        self.stats[entity] = EntityStats(center=center, scale=scale, windows=len(rows), hourly=hourly, shares=shares,
                                         error_rate=error_rate(values))

    def error_tail(self, entity: Entity, values: np.ndarray) -> float | None:
        """How likely a window's errors (one row of raw features) are at the entity's learned error rate: the
        binomial tail P(>= its errors); 1.0 without errors. None when there is no rate to judge by (an unknown
        entity, a state saved before rates were learned)."""
        st = self.stats.get(entity)
        if st is None or not math.isfinite(st.error_rate):
            return None
        n = int(round(float(np.nan_to_num(values[_REQ], nan=0.0))))
        k = int(round(float(np.nan_to_num(values[_ERR], nan=0.0)) * n))
        return binomial_tail(k, n, st.error_rate)

    def known(self, table: FeatureTable) -> np.ndarray:
        known_entity = np.array([e in self.stats for e in table.entities], dtype=bool)
        return known_entity[table.entity_idx] if len(table) else np.zeros(0, dtype=bool)

    def z(self, table: FeatureTable) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(z, mask, center, scale) per row; z is signed, clipped to ±Z_CLIP, 0 where missing or unknown."""
        n = len(table)
        values = table.values.copy()
        n_ent = len(table.entities)
        ent_center = np.full((n_ent, 24, N_FEATURES), np.nan)
        ent_scale = np.ones((n_ent, N_FEATURES))
        ent_stats: list[EntityStats | None] = [self.stats.get(e) for e in table.entities]
        for k, st in enumerate(ent_stats):
            if st is None:
                continue
            ent_center[k, :, :] = st.center
            for h in st.hourly:
                ent_center[k, h] = st.center_at(h)
            ent_scale[k] = st.scale
        for r in range(n):
            if table.calls[r]:
                st = ent_stats[int(table.entity_idx[r])]
                values[r, _SHIFT] = downstream_shift(table.calls[r], st.shares) if st is not None else np.nan
        center = ent_center[table.entity_idx, hour_of_day(table.window)]
        scale = ent_scale[table.entity_idx]
        mask_thin_quantiles(values)
        x = transform(values)
        # error ratios of a handful of requests are noisy: never sharper than binomial noise
        with np.errstate(all="ignore"):
            p = np.clip(np.nan_to_num(center[:, _ERR]), 0.0, 1.0)
            n_req = np.clip(np.nan_to_num(values[:, _REQ], nan=1.0), 1.0, None)
            scale[:, _ERR] = np.maximum(scale[:, _ERR], np.sqrt((p + 0.01) * (1 - p + 0.01) / n_req))
            z = (x - center) / scale
            # a latency change smaller than the feature's min_delta (20 ms for p50, 50 ms for tails) is not
            # worth a person's attention, however large relative to a sub-millisecond normal
            small = np.abs(values[:, _LATENCY] - np.expm1(center[:, _LATENCY]) / 1000.0) < _MIN_DELTA[_LATENCY]
            z[:, _LATENCY] = np.where(small, np.minimum(z[:, _LATENCY], 0.0), z[:, _LATENCY])
        mask = ~np.isnan(z)
        z = np.clip(np.nan_to_num(z, nan=0.0), -Z_CLIP, Z_CLIP)
        return z, mask, center, scale

    def rebase(self, entity: Entity, x_recent: np.ndarray) -> None:
        """A confirmed change: the recent level (transformed rows) becomes this entity's normal."""
        st = self.stats.get(entity)
        if st is None or len(x_recent) == 0:
            return
        center, scale = _robust(x_recent)
        st.center = np.where(np.isnan(center), st.center, center)
        st.scale = np.maximum(st.scale, np.nan_to_num(scale))
        st.hourly = {}
        raw = np.array(x_recent, dtype=np.float64, copy=True)
        raw[:, _REQ] = np.expm1(raw[:, _REQ])  # requests are log1p in transformed rows; the error ratio is raw
        st.error_rate = error_rate(raw)

    # persistence: plain arrays and lists only, so state loads with torch.load(weights_only=True)
    def to_state(self) -> dict:
        ents = sorted(self.stats)
        return {
            "entities": [list(e) for e in ents],
            "center": np.stack([self.stats[e].center for e in ents]).tolist() if ents else [],
            "scale": np.stack([self.stats[e].scale for e in ents]).tolist() if ents else [],
            "windows": [self.stats[e].windows for e in ents],
            "hourly": [[[h, v.tolist()] for h, v in sorted(self.stats[e].hourly.items())] for e in ents],
            "shares": [[[k, v] for k, v in sorted(self.stats[e].shares.items())] for e in ents],
            "error_rate": [self.stats[e].error_rate if math.isfinite(self.stats[e].error_rate) else -1.0 for e in ents],
            "min_windows": self.min_windows,
        }

    @classmethod
    def from_state(cls, state: dict) -> Normaliser:
        norm = cls(min_windows=int(state.get("min_windows", 10)))
        rates = state.get("error_rate") or [-1.0] * len(state["entities"])  # state saved before error rates
        for i, e in enumerate(state["entities"]):
            norm.stats[(str(e[0]), str(e[1]), str(e[2]))] = EntityStats(
                center=np.array(state["center"][i], dtype=np.float64),
                scale=np.array(state["scale"][i], dtype=np.float64),
                windows=int(state["windows"][i]),
                hourly={int(h): np.array(v, dtype=np.float64) for h, v in state["hourly"][i]},
                shares={str(k): float(v) for k, v in state["shares"][i]},
                error_rate=float(rates[i]) if float(rates[i]) >= 0 else math.nan,
            )
        return norm


def directional(z: np.ndarray) -> np.ndarray:
    """Deviations that matter: increases for latency/errors/resources, both ways for traffic."""
    return np.where(_UPWARD, np.clip(z, 0, None), z)


def residual(z: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """The deviations that matter from a reconstruction (z units, non-negative). For latency, errors and
    resources only what lies above both the reconstruction and the entity's normal: the network may expect
    more than normal (a busy hour), but a value at or below normal (or held there by the latency floor) is
    never an increase, however low it expected it."""
    return np.abs(directional(z - np.where(_UPWARD, np.maximum(recon, 0.0), recon)))


@dataclass
class Scores:
    """A detector's verdict per row: score (1.0 = threshold), per-feature deviation and expectation."""

    score: np.ndarray  # (n,)
    contrib: np.ndarray  # (n, F) non-negative, shares of the score
    expected: np.ndarray  # (n, F) transformed-space expectation
    scored: np.ndarray  # (n,) bool: this detector had what it needs to score the row


@dataclass
class BaselineDetector:
    """Max over features of robust z divided by that feature's threshold, calibrated on normal windows
    (a noisy feature such as the p99 of a fast call needs a larger z than an error ratio)."""

    normaliser: Normaliser
    threshold: float = 6.0  # the default per-feature threshold (cold start, uncalibrated features)
    feature_thresholds: np.ndarray | None = None

    def raw(self, table: FeatureTable) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        z, mask, center, _ = self.normaliser.z(table)
        d = np.abs(directional(z)) * mask
        return d, center, self.normaliser.known(table), mask

    def thresholds(self) -> np.ndarray:
        if self.feature_thresholds is None:
            return np.full(N_FEATURES, self.threshold)
        return self.feature_thresholds

    def calibrate(self, table: FeatureTable, quantile: float = 0.999, margin: float = 1.3,
                  minimum: float = 4.5, exclude_z: float = 12.0) -> np.ndarray:
        d, _, known, mask = self.raw(table)
        thr = np.full(N_FEATURES, self.threshold)
        for f in range(N_FEATURES):
            usable = known & mask[:, f] & (d[:, f] < exclude_z)  # leave out past incidents in the history
            if usable.sum() >= 50:
                thr[f] = max(minimum, float(np.quantile(d[usable, f], quantile)) * margin)
        self.feature_thresholds = thr
        return thr

    def score(self, table: FeatureTable) -> Scores:
        d, center, known, _ = self.raw(table)
        ratio = d / self.thresholds()
        total = (ratio**2).sum(axis=1, keepdims=True)
        with np.errstate(all="ignore"):
            contrib = np.where(total > 0, ratio**2 / total, 0.0)
        return Scores(score=ratio.max(axis=1, initial=0.0), contrib=contrib, expected=center, scored=known)


def severity(score: float) -> str:
    """Bands on the calibrated score: 1 = threshold."""
    if score >= 4.0:
        return "critical"
    if score >= 2.0:
        return "warning"
    return "info"


def fmt_value(i: int, value: float) -> str:
    """A raw value in its unit, the way a person reads it ("2.8 s", "35%", "1,200")."""
    if value is None or not math.isfinite(value):
        return "n/a"
    unit = FEATURES[i].unit
    if unit == "s":
        if value >= 1:
            return f"{value:.1f} s"
        if value >= 0.1:
            return f"{value:.2f} s"
        return f"{value * 1000:.1f} ms" if value >= 0.001 else f"{value * 1e6:.0f} µs"
    if unit in ("ratio", "share"):
        return f"{value * 100:.1f}%"
    if unit == "bytes":
        for suffix, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if abs(value) >= div:
                return f"{value / div:.1f} {suffix}"
        return f"{value:.0f} B"
    if unit == "per_request":
        return f"{value:.2f}"
    return f"{value:,.0f}"
