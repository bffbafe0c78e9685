"""Root-cause hints: rank services from one window's anomalies and the topology the telemetry shows.

A service whose anomaly is explained by another anomalous service is a symptom; an anomalous service
nothing explains ranks first. Explanations (anomaly/topology.py has the edges):
- a callee of a compatible kind (its callee got slow, so it got slow), unless the caller's own self time
  grew or the caller itself drove the callee (below);
- load from upstream: a caller or message producer whose outgoing calls/messages surged explains its
  callees' and consumers' slowness or saturation (a flood, a retry storm on a slow callee is the reverse:
  the callee's errors or latency came first and explain the caller);
- a noisy neighbour: a service burning CPU on a node explains the latency of the services sharing it;
- an unreachable peer: failing calls that reached nothing, to a service that reports telemetry, make that
  service a candidate even though its own silence scored nothing.
Anomalies only on a service's calls to an uninstrumented peer (database, external API) make it a
'dependency' candidate.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel

from anomaly import evidence_sql
from anomaly.api import list_anomalies
from anomaly.features import to_epoch
from anomaly.signals import Evidence, service_evidence
from anomaly.topology import Topology, topology
from store import Store

# which anomaly kinds of a callee can explain which kinds of its caller
SURGE = 2.0  # calls or messages at twice their usual rate are load a callee may not keep up with
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
    cpu: float = 0.0  # weight of anomalies led by the service's own CPU
    unreachable: float = 0.0  # weight of callers' calls that failed without reaching it
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
        first = a["contributions"][0] if a.get("contributions") else {}
        top = first.get("feature", "")
        if top == "self_p95":
            s.self_time += weight
        elif top == "cpu":
            s.cpu += weight
        if s.best is None or a["score"] > s.best["score"]:
            s.best = a
        if a["operation"] and a.get("span_kind") != "client" and (s.best_op is None or a["score"] > s.best_op["score"]):
            s.best_op = a
    for s in services.values():
        if s.client_only:
            s.kinds = defaultdict(float, {"dependency": s.strength})
    return services


def _unreachable(anomalies: list[dict], topo: Topology, services: dict[str, _Service]) -> None:
    """Move client-call anomalies whose calls mostly failed without reaching their (instrumented) peer onto
    that peer: the caller saw the symptom, the peer is the candidate."""
    for a in anomalies:
        if a.get("span_kind") != "client" or (a.get("kind") or "") not in ("errors", "latency", "dependency"):
            continue
        hit = topo.unreached.get((a["service"], a["operation"]))
        if hit is None or hit[2] < 0.5 * hit[1]:
            continue
        peer = hit[0]
        weight = min(float(a["score"]), 10.0)
        caller = services[a["service"]]
        caller.strength = max(caller.strength - weight, 0.0)
        target = services.setdefault(peer, _Service(peer))
        if target.best is None:
            target.client_only = False
            target.best = {**a, "service": peer, "operation": "", "explanation": (
                f"calls from {a['service']} fail without reaching {peer} ({hit[2]} of {hit[1]} calls); "
                f"{peer} reported nothing for them")}
        target.strength += weight
        target.unreachable += weight
        target.kinds["traffic"] += weight
        target.max_score = max(target.max_score, float(a["score"]))
        target.windows.add(a["window_start"])


@dataclass
class _Window:
    start: datetime
    end: datetime
    baseline_start: datetime
    baseline_end: datetime


BASELINE = timedelta(minutes=30)


def telemetry_evidence(store: Store, start: float, end: float) -> list[Evidence]:
    """The per-service evidence (anomaly/signals.py) for [start, end) against the half hour before it (or as
    long as the window), from the same queries the analyst runs: the hints and the chat agree."""
    w_start, w_end = datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)
    w = _Window(w_start, w_end, w_start - max(w_end - w_start, BASELINE), w_start)
    return service_evidence(*(store.query(getattr(evidence_sql, f"{key}_sql")(w)).dicts()
                              for key in evidence_sql.EVIDENCE_QUERIES))


def rank_root_causes(
    store: Store, window_start: datetime | float, window_end: datetime | float, limit: int = 10,
    anomalies: list[dict] | None = None, evidence: list[Evidence] | None = None,
) -> list[RootCauseCandidate]:
    """Candidate root causes for the anomalies in [window_start, window_end), best first (score 0..1),
    weighed together with the telemetry's own evidence per service (`evidence`, computed when not given).

    `anomalies` (rows as `list_anomalies` returns them) replaces reading the anomalies table, e.g. to rank
    a batch scored without writing it."""
    start, end = to_epoch(window_start), to_epoch(window_end)
    if anomalies is None:
        anomalies = list_anomalies(store, start=start, end=end, limit=5000)
    if evidence is None:
        evidence = telemetry_evidence(store, start, end)
    if not anomalies:
        return _with_evidence([], evidence)[:limit]
    services = _summarise(anomalies)
    topo = topology(store, start, end)
    _unreachable(anomalies, topo, services)
    downstream = topo.downstream()
    upstream = topo.upstream()

    def drives(s: _Service, d: str) -> bool:  # its calls/messages to d surged: it pushes d, not the reverse
        return topo.load_ratio(s.name, d) >= SURGE

    def noisy(s: _Service) -> bool:  # CPU is what it is anomalous about
        return s.cpu >= 0.3 * max(s.strength, 1e-9)

    found = {ev.service: ev for ev in evidence}
    candidates: list[RootCauseCandidate] = []
    causes_of: dict[str, list[str]] = {}
    for s in services.values():
        if s.strength <= 0:
            continue
        reasons: list[str] = []
        explained_by = [
            d for d in sorted(downstream.get(s.name, ()))
            if d in services and d != s.name and services[d].strength > 0
            and services[d].kind in _EXPLAINS.get(s.kind, set())
            and services[d].strength >= 0.3 * s.strength
            and not (drives(s, d) and services[d].kind in ("latency", "saturation", "traffic"))
        ]
        own = s.self_time >= 0.5 * s.strength or (noisy(s) and not s.unreachable)
        if explained_by and not own:
            reasons.append(f"likely a symptom of anomalous downstream {', '.join(explained_by)}")
        elif explained_by and own:
            reasons.append(f"its own {'CPU' if noisy(s) else 'self time'} grew although downstream "
                           f"{', '.join(explained_by)} is also anomalous")
        elif downstream.get(s.name):
            reasons.append("its downstream calls do not explain it")
        pushed_by = [  # load makes its own time and CPU grow: neither acquits it
            u for u in sorted(upstream.get(s.name, ())) if u in services and u != s.name and drives(services[u], s.name)
            and s.kind in ("latency", "saturation", "traffic", "dependency")
        ]
        if pushed_by:
            reasons.append(f"load from {', '.join(pushed_by)} surged")
        starved_by = [] if noisy(s) else [
            n for n in sorted(topo.neighbours(s.name))
            if n in services and noisy(services[n]) and services[n].cpu >= 0.3 * s.cpu
            and s.kind in ("latency", "saturation", "change")
        ]
        if starved_by:
            reasons.append(f"shares a node with {', '.join(starved_by)}, whose CPU is anomalous")
        explains = [x.name for x in services.values() if x is not s and (
            (noisy(s) and x.name in topo.neighbours(s.name)) or drives(s, x.name))]
        pushes = any(drives(s, x) for x in services if x != s.name)
        symptom = (explained_by and not own) or pushed_by or starved_by
        if symptom:
            causes_of[s.name] = (explained_by if not own else []) + pushed_by + starved_by
        penalty = 0.2 if symptom else 1.0
        # a service with no anomalous callee, or whose own time grew, is likelier the origin
        leaf_bonus = 1.2 if not any(d in services for d in downstream.get(s.name, ())) else 1.0
        # the origin of a flood or of CPU starvation explains the services it hit
        reach = 1.0 + 0.1 * len(explains) if not symptom else 1.0
        raw = s.strength * penalty * leaf_bonus * reach
        best = s.best or {}
        reason = f"{len(s.windows)} anomalous window(s), max score {s.max_score:.1f}: {best.get('explanation', '')}"
        if reasons:
            reason += "; " + "; ".join(reasons)
        if s.name in found:  # the telemetry's own evidence: lifts an origin, never a symptom
            raw *= 1 if symptom else 1 + found[s.name].weight
            reason += "; evidence: " + "; ".join(found[s.name].texts)
        op = s.best_op["operation"] if s.best_op else (best.get("operation") or None)
        kind = "saturation" if (noisy(s) or pushes) and not symptom and not s.unreachable else s.kind
        candidates.append(RootCauseCandidate(service=s.name, operation=op or None, kind=kind, score=raw,
                                             reason=reason))
    # a symptom ranks below what explains it, however loud it is (a flooded consumer's latency dwarfs the
    # producer's extra messages): cap it under its explanation's score, following chains a few steps
    by_name = {c.service: c for c in candidates}
    for _ in range(3):
        for name, explainers in causes_of.items():
            cap = max((by_name[e].score for e in explainers if e in by_name), default=math.inf)
            by_name[name].score = min(by_name[name].score, 0.9 * cap)
    top = max((c.score for c in candidates), default=1.0) or 1.0
    for c in candidates:
        c.score = round(c.score / top, 3) if math.isfinite(c.score) else 0.0
    return _with_evidence(candidates, evidence)[:limit]


def _with_evidence(candidates: list[RootCauseCandidate], evidence: list[Evidence]) -> list[RootCauseCandidate]:
    """Services only the evidence names (no anomaly scored them) join the candidates at a score of their own
    (its weight over the most three kinds of evidence can give), best first."""
    known = {c.service for c in candidates}
    out = list(candidates) + [
        RootCauseCandidate(service=ev.service, operation=ev.operation, kind=ev.kind,
                           score=round(min(1.0, ev.weight / 3), 3), reason="evidence: " + "; ".join(ev.texts))
        for ev in evidence if ev.service not in known]
    out.sort(key=lambda c: -c.score)  # stable: equal scores keep the evidence's own order
    return out
