"""A small PyTorch autoencoder over robust-z feature vectors, one model for all entities.

Input: an entity's features in robust z units (clipped to ±5, missing = 0) plus the missing-mask and
a learned entity embedding, so one network learns each entity's normal correlations (traffic vs
latency, calls vs errors). The score is the directional reconstruction error, calibrated on held-out
normal windows: per-entity median error times a global quantile, so 1.0 means "as unusual as the
rarest normal window we held out, with margin", and it reads like a z value (square root of the ratio).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from anomaly.baseline import Normaliser, Scores, directional, residual
from anomaly.features import N_FEATURES, Entity, FeatureTable

INPUT_CLIP = 5.0


class AutoEncoder(nn.Module):
    """Encoder (z, mask, embedding) → bottleneck → decoder (code, embedding) → reconstructed z."""

    def __init__(self, n_features: int, n_entities: int, embed: int = 8, hidden: int = 32, code: int = 4) -> None:
        super().__init__()
        self.embedding = nn.Embedding(max(n_entities, 1), embed)
        self.encoder = nn.Sequential(nn.Linear(2 * n_features + embed, hidden), nn.ReLU(), nn.Linear(hidden, code))
        self.decoder = nn.Sequential(nn.Linear(code + embed, hidden), nn.ReLU(), nn.Linear(hidden, n_features))

    def forward(self, z: torch.Tensor, mask: torch.Tensor, entity: torch.Tensor) -> torch.Tensor:
        e = self.embedding(entity)
        code = self.encoder(torch.cat([z, mask, e], dim=1))
        return self.decoder(torch.cat([code, e], dim=1))


@dataclass
class TrainConfig:
    """Training knobs; defaults fit 24 h x 30 s windows x 200 entities in well under a minute on 2 cores."""

    seed: int = 0
    epochs: int = 12
    batch_size: int = 1024
    lr: float = 3e-3
    holdout: float = 0.15
    max_seconds: float = 45.0
    max_rows: int = 600_000
    threads: int = 1
    exclude_z: float = 12.0  # training rows this far from normal are past incidents, not "normal"
    quantile: float = 0.999
    margin: float = 1.3
    peak_minimum: float = 3.0  # a feature's residual alone must exceed 3x its 99th percentile on normal windows
    should_stop: Callable[[], bool] | None = None  # serve shutting down: abandon training between batches


class TrainingInterrupted(RuntimeError):
    """Training was abandoned because the server is stopping."""


@dataclass
class AutoencoderDetector:
    """A trained model with its entity vocabulary and calibration."""

    normaliser: Normaliser
    model: AutoEncoder
    entities: list[Entity]
    entity_median: np.ndarray  # per vocabulary entity: median held-out error
    threshold: float  # global quantile of error / entity median on held-out windows
    info: dict = field(default_factory=dict)
    feature_scale: np.ndarray = field(default_factory=lambda: np.ones(N_FEATURES))  # typical residual per feature
    # per feature: the largest scaled residual of normal held-out windows (with margin); inf = not calibrated
    peak_threshold: np.ndarray = field(default_factory=lambda: np.full(N_FEATURES, np.inf))

    def _index(self, table: FeatureTable) -> np.ndarray:
        vocab = {e: i for i, e in enumerate(self.entities)}
        per_entity = np.array([vocab.get(e, -1) for e in table.entities], dtype=np.int64)
        return per_entity[table.entity_idx] if len(table) else np.zeros(0, dtype=np.int64)

    def score(self, table: FeatureTable) -> Scores:
        n = len(table)
        idx = self._index(table)
        known = (idx >= 0) & self.normaliser.known(table)
        z, mask, center, scale = self.normaliser.z(table)
        recon = np.zeros_like(z)
        if known.any():
            recon[known] = predict(self.model, z[known], mask[known], idx[known])
        resid = residual(z, recon) * mask / self.feature_scale
        err = (resid**2).sum(axis=1) / np.maximum(mask.sum(axis=1), 1)
        med = np.where(known, self.entity_median[np.clip(idx, 0, None)], 1.0)
        joint = np.sqrt(err / (med * self.threshold)) if n else np.zeros(0)
        # the joint error averages over features, which dilutes one feature going wrong alone (the error
        # ratio of one operation): its own residual, against what normal windows reach, counts as well
        peak = (resid / self.peak_threshold).max(axis=1, initial=0.0) if n else np.zeros(0)
        score = np.maximum(joint, peak)
        total = (resid**2).sum(axis=1, keepdims=True)
        with np.errstate(all="ignore"):
            contrib = np.where(total > 0, resid**2 / total, 0.0)
        expected = center + recon * scale
        return Scores(score=np.where(known, score, 0.0), contrib=contrib, expected=expected, scored=known)

    def to_state(self) -> dict:
        return {
            "entities": [list(e) for e in self.entities],
            "weights": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "entity_median": torch.tensor(self.entity_median, dtype=torch.float64),
            "threshold": float(self.threshold),
            "feature_scale": [float(x) for x in self.feature_scale],
            "peak_threshold": [float(x) if np.isfinite(x) else -1.0 for x in self.peak_threshold],
            "dims": [int(self.model.embedding.embedding_dim), int(self.model.encoder[0].out_features),
                     int(self.model.encoder[2].out_features)],
            "info": {k: v for k, v in self.info.items() if isinstance(v, int | float | str)},
        }

    @classmethod
    def from_state(cls, state: dict, normaliser: Normaliser) -> AutoencoderDetector:
        entities = [(str(e[0]), str(e[1]), str(e[2])) for e in state["entities"]]
        embed, hidden, code = (int(x) for x in state["dims"])
        model = AutoEncoder(N_FEATURES, len(entities), embed, hidden, code)
        model.load_state_dict(state["weights"])
        model.eval()
        return cls(
            normaliser=normaliser,
            model=model,
            entities=entities,
            entity_median=state["entity_median"].numpy().astype(np.float64),
            threshold=float(state["threshold"]),
            info=dict(state.get("info", {})),
            feature_scale=np.array(state.get("feature_scale", [1.0] * N_FEATURES), dtype=np.float64),
            peak_threshold=np.array([x if x > 0 else np.inf for x in state.get("peak_threshold", [-1.0] * N_FEATURES)],
                                    dtype=np.float64),
        )


def predict(model: AutoEncoder, z: np.ndarray, mask: np.ndarray, idx: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        zin = torch.tensor(np.clip(z, -INPUT_CLIP, INPUT_CLIP) * mask, dtype=torch.float32)
        out = model(zin, torch.tensor(mask, dtype=torch.float32), torch.tensor(idx, dtype=torch.long))
    return out.numpy().astype(np.float64)


def train(table: FeatureTable, normaliser: Normaliser, config: TrainConfig | None = None) -> AutoencoderDetector:
    """Train on the table's windows of entities the normaliser knows; calibrate on a held-out split."""
    cfg = config or TrainConfig()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(max(1, cfg.threads))
    rng = np.random.default_rng(cfg.seed)
    t0 = time.monotonic()

    known_entities = [e for e in table.entities if e in normaliser.stats]
    vocab = {e: i for i, e in enumerate(known_entities)}
    per_entity = np.array([vocab.get(e, -1) for e in table.entities], dtype=np.int64)
    idx = per_entity[table.entity_idx]
    z, mask, _, _ = normaliser.z(table)
    keep = (idx >= 0) & (np.abs(directional(z) * mask).max(axis=1, initial=0.0) < cfg.exclude_z)
    rows = np.flatnonzero(keep)
    if len(rows) > cfg.max_rows:
        rows = np.sort(rng.choice(rows, cfg.max_rows, replace=False))
    if len(rows) < 20:
        raise ValueError(f"not enough normal windows to train on ({len(rows)})")
    perm = rng.permutation(rows)
    n_hold = max(int(len(perm) * cfg.holdout), min(10, len(perm) // 2))
    hold, fit = perm[:n_hold], perm[n_hold:]

    model = AutoEncoder(N_FEATURES, len(known_entities))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    zc = torch.tensor(np.clip(z, -INPUT_CLIP, INPUT_CLIP) * mask, dtype=torch.float32)
    mt = torch.tensor(mask, dtype=torch.float32)
    it = torch.tensor(np.clip(idx, 0, None), dtype=torch.long)
    fit_t = torch.tensor(fit, dtype=torch.long)
    gen = torch.Generator().manual_seed(cfg.seed)
    epochs_done = 0
    last_loss = float("nan")
    for _ in range(cfg.epochs):
        model.train()
        order = fit_t[torch.randperm(len(fit_t), generator=gen)]
        total, count = 0.0, 0
        for b in range(0, len(order), cfg.batch_size):
            if cfg.should_stop is not None and cfg.should_stop():
                raise TrainingInterrupted("training abandoned: stopping")
            batch = order[b : b + cfg.batch_size]
            out = model(zc[batch], mt[batch], it[batch])
            loss = (((out - zc[batch]) ** 2) * mt[batch]).sum() / mt[batch].sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch)
            count += len(batch)
        epochs_done += 1
        last_loss = total / max(count, 1)
        if time.monotonic() - t0 > cfg.max_seconds:
            break

    # calibration on held-out normal windows: first each feature's typical residual (noisy features such as
    # the p99 of a fast call must not drown a clean one such as an error ratio), then the error quantile
    recon = predict(model, z[hold], mask[hold], idx[hold])
    resid = residual(z[hold], recon) * mask[hold]
    feature_scale = np.ones(N_FEATURES)
    for f in range(N_FEATURES):
        present = mask[hold][:, f]
        if present.sum() >= 20:
            feature_scale[f] = max(float(np.quantile(resid[present, f], 0.99)), 0.5)
    resid = resid / feature_scale
    peak_threshold = np.full(N_FEATURES, np.inf)
    for f in range(N_FEATURES):
        present = mask[hold][:, f]
        if present.sum() >= 50:
            peak_threshold[f] = max(float(np.quantile(resid[present, f], cfg.quantile)) * cfg.margin, cfg.peak_minimum)
    err = (resid**2).sum(axis=1) / np.maximum(mask[hold].sum(axis=1), 1)
    global_med = float(np.median(err)) if len(err) else 1.0
    entity_median = np.full(len(known_entities), max(global_med, 1e-6))
    hold_idx = idx[hold]
    for k in range(len(known_entities)):
        e = err[hold_idx == k]
        if len(e) >= 5:
            # shrink towards the global median: few held-out windows give a noisy median
            w = len(e) / (len(e) + 20.0)
            entity_median[k] = max(w * float(np.median(e)) + (1 - w) * global_med, 1e-6)
    ratio = err / entity_median[hold_idx]
    threshold = max(float(np.quantile(ratio, cfg.quantile)) * cfg.margin, 4.0) if len(ratio) else 10.0
    info = {
        "epochs": epochs_done,
        "train_loss": last_loss,
        "train_rows": int(len(fit)),
        "holdout_rows": int(len(hold)),
        "seconds": round(time.monotonic() - t0, 2),
        "entities": len(known_entities),
    }
    return AutoencoderDetector(
        normaliser=normaliser,
        model=model,
        entities=known_entities,
        entity_median=entity_median,
        threshold=threshold,
        info=info,
        feature_scale=feature_scale,
        peak_threshold=peak_threshold,
    )
