"""Reading the `anomalies` table (ranked), and `GET /api/anomalies` so the CLI can ask a running serve."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

from anomaly.features import to_epoch
from anomaly.tables import ANOMALY_TABLE
from store import Store

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.I)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
SEVERITIES = ("info", "warning", "critical")


def duration_seconds(text: str) -> float:
    """'30m', '2h', '90s', '1d' → seconds; ValueError with the accepted forms otherwise."""
    m = _DURATION.match(text or "")
    if not m:
        raise ValueError(f"bad duration {text!r}: use a number and a unit s, m, h, d or w (e.g. 30m, 2h)")
    return float(m.group(1)) * _UNIT[m.group(2).lower()]


def _lit(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def list_anomalies(
    store: Store,
    since_seconds: float = 1800,
    service: str | None = None,
    operation: str | None = None,
    min_severity: str | None = None,
    limit: int = 100,
    now: float | None = None,
    start: datetime | float | None = None,
    end: datetime | float | None = None,
) -> list[dict[str, Any]]:
    """Anomalies in the window (default: the last `since_seconds`), ranked by score, newest scoring wins."""
    if start is None:
        end_s = time.time() if now is None else now
        start_s = end_s - since_seconds
    else:
        start_s = to_epoch(start)
        end_s = to_epoch(end) if end is not None else time.time()
    where = [f"window_start >= toDateTime64({start_s:.3f}, 3)", f"window_start < toDateTime64({end_s:.3f}, 3)"]
    if service:
        where.append(f"service = {_lit(service)}")
    if operation is not None:
        where.append(f"operation = {_lit(operation)}")
    if min_severity:
        if min_severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}")
        where.append(f"severity IN ({', '.join(_lit(s) for s in SEVERITIES[SEVERITIES.index(min_severity):])})")
    rows = store.query(
        f"SELECT window_start, window_end, service, operation, span_kind, score, severity, detector, kind, "
        f"model_version, features, contributions, explanation FROM {ANOMALY_TABLE} FINAL "
        f"WHERE {' AND '.join(where)} ORDER BY score DESC, window_start DESC LIMIT {int(limit)}"
    ).dicts()
    for r in rows:
        for key in ("window_start", "window_end"):
            v = r[key]
            if isinstance(v, datetime):
                r[key] = (v if v.tzinfo else v.replace(tzinfo=UTC)).isoformat()
        r["score"] = round(float(r["score"]), 3)
        r["features"] = json.loads(r["features"] or "{}")
        r["contributions"] = json.loads(r["contributions"] or "[]")
    return rows


def mount(app: Any, ctx: Any) -> None:  # noqa: ANN401 - FastAPI app and ServerContext
    """`GET /api/anomalies?since=30m&service=S&limit=100` → {"anomalies": [...]} ranked by score."""
    from fastapi import Query
    from fastapi.responses import JSONResponse

    @app.get("/api/anomalies")
    def get_anomalies(
        since: str = Query("30m"), service: str | None = None, operation: str | None = None,
        severity: str | None = None, limit: int = Query(100, ge=1, le=10_000),
    ) -> JSONResponse:
        try:
            seconds = duration_seconds(since)
            rows = list_anomalies(ctx.store, seconds, service, operation, severity, limit)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        scorer = ctx.services.get("anomaly")
        return JSONResponse({"anomalies": rows, "scorer": scorer.stats() if scorer else None})
