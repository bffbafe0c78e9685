"""Generated feature tables with known anomalies, for tests and cost benchmarks (not for scoring users' data).

Each entity gets its own scale (traffic, latency, call mix) with a diurnal load curve, Poisson request
counts and log-normal latency noise correlated with load, so detectors face entities whose normals
differ by orders of magnitude, as in real services.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from anomaly.features import FEATURES, Entity, FeatureTable


@dataclass(frozen=True)
class Plant:
    """An anomaly planted into generated data: multiply (or set) a feature over a run of windows."""

    entity: Entity
    start: int  # window index
    length: int
    feature: str
    factor: float = 1.0
    value: float | None = None


def entities(n: int) -> list[Entity]:
    """n entities: services and their server operations (about 1 service per 4 entities)."""
    out: list[Entity] = []
    s = 0
    while len(out) < n:
        svc = f"svc{s:03d}"
        out.append((svc, "", "service"))
        for k in range(3):
            if len(out) < n:
                out.append((svc, f"op{k}", "server"))
        s += 1
    return out


def generate(
    n_entities: int = 8,
    n_windows: int = 240,
    seed: int = 0,
    window_seconds: int = 30,
    start: int = 1_700_000_000,
    plants: tuple[Plant, ...] = (),
    with_metrics: bool = True,
) -> FeatureTable:
    """A feature table of normal behaviour with `plants` applied."""
    rng = np.random.default_rng(seed)
    ents = entities(n_entities)
    start = start // window_seconds * window_seconds
    windows = start + window_seconds * np.arange(n_windows)
    load = 1.0 + 0.3 * np.sin(2 * math.pi * ((windows % 86400) / 86400.0))
    n_rows = n_entities * n_windows
    values = np.full((n_rows, len(FEATURES)), np.nan)
    entity_idx = np.repeat(np.arange(n_entities), n_windows)
    window = np.tile(windows, n_entities)
    calls: list[dict[str, float]] = []
    col = {f.name: i for i, f in enumerate(FEATURES)}
    for k, ent in enumerate(ents):
        sl = slice(k * n_windows, (k + 1) * n_windows)
        rate = rng.uniform(20, 300)
        p50 = rng.uniform(0.005, 0.3)
        err = rng.uniform(0.0, 0.02)
        req = rng.poisson(rate * load)
        req = np.maximum(req, 1)
        lat_noise = rng.lognormal(0, 0.08, n_windows) * (1 + 0.15 * (load - 1))
        values[sl, col["requests"]] = req
        values[sl, col["error_ratio"]] = rng.binomial(req, err) / req
        values[sl, col["p50"]] = p50 * lat_noise
        values[sl, col["p95"]] = p50 * 3 * lat_noise * rng.lognormal(0, 0.08, n_windows)
        values[sl, col["p99"]] = p50 * 6 * lat_noise * rng.lognormal(0, 0.12, n_windows)
        values[sl, col["self_p95"]] = p50 * 1.2 * rng.lognormal(0, 0.1, n_windows)
        service = ent[2] == "service"
        if service:
            per = rng.uniform(0.5, 3)
            values[sl, col["calls_per_request"]] = per * rng.lognormal(0, 0.03, n_windows)
            values[sl, col["error_logs"]] = rng.poisson(req * err)
            values[sl, col["new_templates"]] = (rng.random(n_windows) < 0.01).astype(float)
            if with_metrics:
                values[sl, col["cpu"]] = np.clip(0.2 * load * rng.lognormal(0, 0.05, n_windows), 0, 1)
                values[sl, col["memory"]] = 2.5e8 * rng.lognormal(0, 0.01, n_windows)
        callee_mix = {f"dep{j}": float(rng.uniform(0.2, 1)) for j in range(2)} if service else {}
        for w in range(n_windows):
            if service:
                total = values[k * n_windows + w, col["calls_per_request"]] * values[k * n_windows + w, 0]
                norm = sum(callee_mix.values())
                calls.append({c: round(total * v / norm) for c, v in callee_mix.items()})
            else:
                calls.append({})
    for p in plants:
        k = ents.index(p.entity)
        rows = slice(k * n_windows + p.start, k * n_windows + p.start + p.length)
        if p.value is not None:
            values[rows, col[p.feature]] = p.value
        else:
            values[rows, col[p.feature]] *= p.factor
    order = np.lexsort((entity_idx, window))
    return FeatureTable(
        window_seconds=window_seconds,
        entities=ents,
        entity_idx=entity_idx[order],
        window=window[order],
        values=values[order],
        calls=[calls[i] for i in order],
    )
