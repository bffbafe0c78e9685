"""Root-cause hints: rank services from one window's anomalies and the call graph of parent/child spans.

A service whose anomaly is explained by an anomalous downstream of the same nature (its callee got
slow, so it got slow) is a symptom; an anomalous service whose anomalous downstreams do not explain
it (none, a different kind, much weaker, or its own self time grew) ranks first. Anomalies only on a
service's calls to an uninstrumented peer (database, external API) make it a 'dependency' candidate.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel

from anomaly.api import list_anomalies
from anomaly.features import call_graph, to_epoch
from store import Store

# which anomaly kinds of a callee can explain which kinds of its caller
_EXPLAINS = {  # a callee that went silent ('traffic': crashed, unreachable) explains its callers' failures
    "latency": {"latency", "saturation", "change", "dependency", "traffic"},
    "errors": {"errors", "change", "dependency", "traffic"},
    "traffic": {"errors", "latency", "traffic"},
    "dependency": {"latency", "errors", "saturation", "change", "dependency", "traffic"},
    "saturation": set(),
    "change": {"latency", "errors", "saturation", "change"},
}


class RootCauseCandidate(BaseModel):
    service: str
    operation: str | None = None
    kind: str
    score: float
    reason: str


@dataclass
class _Service:
    name: str
    strength: float = 0.0
    max_score: float = 0.0
    windows: set = field(default_factory=set)
    kinds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    best: dict | None = None
    best_op: dict | None = None
    self_time: float = 0.0
    client_only: bool = True

    @property
    def kind(self) -> str:
        return max(self.kinds.items(), key=lambda kv: kv[1])[0] if self.kinds else "latency"


def _summarise(anomalies: list[dict]) -> dict[str, _Service]:
    services: dict[str, _Service] = {}
    for a in anomalies:
        s = services.setdefault(a["service"], _Service(a["service"]))
        weight = min(float(a["score"]), 10.0)
        s.strength += weight
        s.max_score = max(s.max_score, float(a["score"]))
        s.windows.add(a["window_start"])
        kind = a.get("kind") or "latency"
        s.kinds[kind] += weight
        if a.get("span_kind") != "client":
            s.client_only = False
        top = a["contributions"][0]["feature"] if a.get("contributions") else ""
        if top == "self_p95":
            s.self_time += weight
        if s.best is None or a["score"] > s.best["score"]:
            s.best = a
        if a["operation"] and a.get("span_kind") != "client" and (s.best_op is None or a["score"] > s.best_op["score"]):
            s.best_op = a
    for s in services.values():
        if s.client_only:
            s.kinds = defaultdict(float, {"dependency": s.strength})
    return services


def rank_root_causes(
    store: Store, window_start: datetime | float, window_end: datetime | float, limit: int = 10,
    anomalies: list[dict] | None = None,
) -> list[RootCauseCandidate]:
    """Candidate root causes for the anomalies in [window_start, window_end), best first (score 0..1).

    `anomalies` (rows as `list_anomalies` returns them) replaces reading the anomalies table, e.g. to rank
    a batch scored without writing it."""
    start, end = to_epoch(window_start), to_epoch(window_end)
    if anomalies is None:
        anomalies = list_anomalies(store, start=start, end=end, limit=5000)
    if not anomalies:
        return []
    services = _summarise(anomalies)
    edges = call_graph(store, start, end)
    downstream: dict[str, set[str]] = defaultdict(set)
    for caller, callee in edges:
        downstream[caller].add(callee)

    candidates: list[RootCauseCandidate] = []
    for s in services.values():
        explained_by = [
            d for d in sorted(downstream.get(s.name, ()))
            if d in services and d != s.name
            and services[d].kind in _EXPLAINS.get(s.kind, set())
            and services[d].strength >= 0.3 * s.strength
        ]
        own = s.self_time >= 0.5 * s.strength
        penalty = 1.0 if (own or not explained_by) else 0.2
        # a service with no anomalous callee, or whose own time grew, is likelier the origin
        leaf_bonus = 1.2 if not any(d in services for d in downstream.get(s.name, ())) else 1.0
        raw = s.strength * penalty * leaf_bonus
        best = s.best or {}
        reason = f"{len(s.windows)} anomalous window(s), max score {s.max_score:.1f}: {best.get('explanation', '')}"
        if explained_by and not own:
            reason += f"; likely a symptom of anomalous downstream {', '.join(explained_by)}"
        elif explained_by and own:
            reason += f"; its own self time grew although downstream {', '.join(explained_by)} is also anomalous"
        elif downstream.get(s.name):
            reason += "; its downstream calls do not explain it"
        op = s.best_op["operation"] if s.best_op else (best.get("operation") or None)
        candidates.append(RootCauseCandidate(service=s.name, operation=op or None, kind=s.kind, score=raw,
                                             reason=reason))
    top = max((c.score for c in candidates), default=1.0) or 1.0
    for c in candidates:
        c.score = round(c.score / top, 3) if math.isfinite(c.score) else 0.0
    candidates.sort(key=lambda c: (-c.score, c.service))
    return candidates[:limit]
