"""Scorer state in the store: one row per model version (torch.save bytes as base64) with its training window.

Only tensors, numbers, strings, lists and dicts are saved, and they are loaded with
`torch.load(weights_only=True)`: a tampered row cannot run code. Restarting `serve` loads the newest
version instead of retraining; older versions stay for comparison and audit.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import torch

from anomaly.features import from_epoch
from store import Store

log = logging.getLogger(__name__)

STATE_TABLE = "anomaly_model_state"


@dataclass
class StoredState:
    version: int
    detector: str  # "autoencoder" (model + normaliser) or "baseline" (normaliser only)
    created_at: datetime
    train_start: datetime
    train_end: datetime
    window_seconds: int
    entities: int
    windows: int
    metrics: dict = field(default_factory=dict)
    payload: dict = field(default_factory=dict)


def encode(payload: dict) -> str:
    buf = io.BytesIO()
    torch.save(payload, buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode(text: str) -> dict:
    return torch.load(io.BytesIO(base64.b64decode(text)), weights_only=True)


def save(store: Store, state: StoredState) -> None:
    store.insert(
        STATE_TABLE,
        ["version", "detector", "created_at", "train_start", "train_end", "window_seconds", "entities", "windows",
         "metrics", "state"],
        [[state.version], [state.detector], [state.created_at], [state.train_start], [state.train_end],
         [state.window_seconds], [state.entities], [state.windows], [json.dumps(state.metrics)],
         [encode(state.payload)]],
    )


def next_version(store: Store) -> int:
    return int(store.query(f"SELECT max(version) FROM {STATE_TABLE}").scalar() or 0) + 1


def versions(store: Store) -> list[dict]:
    """Model versions with their training windows (newest first), without the weights."""
    rows = store.query(
        f"SELECT version, argMax(detector, created_at), max(created_at), argMax(train_start, created_at), "
        f"argMax(train_end, created_at), argMax(window_seconds, created_at), argMax(entities, created_at), "
        f"argMax(windows, created_at), argMax(metrics, created_at) FROM {STATE_TABLE} GROUP BY version "
        f"ORDER BY version DESC"
    ).rows
    keys = ["version", "detector", "created_at", "train_start", "train_end", "window_seconds", "entities", "windows",
            "metrics"]
    out = [dict(zip(keys, r, strict=True)) for r in rows]
    for o in out:
        o["metrics"] = json.loads(o["metrics"] or "{}")
    return out


def load_latest(store: Store, window_seconds: int | None = None) -> StoredState | None:
    """The newest usable state (same window length when given); unreadable rows are skipped with a warning."""
    where = f"WHERE window_seconds = {int(window_seconds)}" if window_seconds else ""
    try:
        rows = store.query(
            f"SELECT version, detector, created_at, train_start, train_end, window_seconds, entities, windows, "
            f"metrics, state FROM {STATE_TABLE} {where} ORDER BY version DESC, created_at DESC LIMIT 5"
        ).rows
    except Exception as exc:  # noqa: BLE001 - no table yet (not migrated): behave as a cold start
        log.warning("anomaly state unavailable: %s", str(exc).splitlines()[0][:200])
        return None
    for r in rows:
        try:
            payload = decode(r[9])
        except Exception as exc:  # noqa: BLE001 - a damaged row must not stop serve
            log.warning("anomaly model version %s unreadable, skipped: %s", r[0], exc)
            continue
        return StoredState(
            version=int(r[0]), detector=str(r[1]), created_at=_utc(r[2]), train_start=_utc(r[3]),
            train_end=_utc(r[4]), window_seconds=int(r[5]), entities=int(r[6]), windows=int(r[7]),
            metrics=json.loads(r[8] or "{}"), payload=payload,
        )
    return None


def _utc(value: datetime | float) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return from_epoch(float(value))
