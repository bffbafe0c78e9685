"""A scenario's effects bound to a fault window, indexed for the generator's hot path."""

from __future__ import annotations

from collections import defaultdict
from random import Random

from sim.scenarios import (
    Attrs,
    Cpu,
    Effect,
    Fail,
    GcPause,
    KafkaOverload,
    Memory,
    Rollout,
    Scenario,
    Slow,
    Timeout,
    Unreachable,
)

NS_PER_MIN = 60_000_000_000


class ActiveEffects:
    """Answers "does the fault change this request?" for a time `t` (ns since the epoch)."""

    def __init__(self, scenario: Scenario, start_ns: int | None, end_ns: int | None) -> None:
        self.scenario = scenario
        self.start_ns = start_ns
        self.end_ns = end_ns
        self._by: dict[tuple[type, str | None], list[Effect]] = defaultdict(list)
        for effect in scenario.effects:
            key = getattr(effect, "service", None)
            if isinstance(effect, KafkaOverload):
                key = effect.producer
            self._by[(type(effect), key)].append(effect)
            if isinstance(effect, Cpu) and effect.node:
                self._by[(Cpu, f"node:{effect.node}")].append(effect)

    def active(self, t: int) -> bool:
        if self.start_ns is None or not self.scenario.effects:
            return False
        return self.start_ns <= t and (self.end_ns is None or t < self.end_ns)

    def minutes_in(self, t: int) -> float:
        return max(0.0, (t - (self.start_ns or t)) / NS_PER_MIN)

    def _get(self, t: int, kind: type, service: str | None) -> list:
        if not self.active(t):
            return []
        return self._by.get((kind, service), [])

    def slow(self, rng: Random, t: int, service: str, operation: str, attrs: Attrs,
             node: str | None = None) -> tuple[float, float]:
        """(latency factor, extra ms) for work done by `operation` of `service` starting at `t`."""
        factor, add = 1.0, 0.0
        for eff in self._get(t, Slow, service):
            if eff.operation not in (None, operation) or (eff.when and not eff.when(attrs)):
                continue
            if eff.node is not None and eff.node != node:
                continue
            if eff.prob < 1.0 and rng.random() >= eff.prob:
                continue
            factor *= eff.factor + eff.ramp_per_min * self.minutes_in(t)
            if eff.add_ms[1] > 0:
                add += rng.uniform(*eff.add_ms)
        for eff in self._get(t, GcPause, service):
            phase = ((t - (self.start_ns or 0)) / 1e9) % eff.period_s
            if phase < eff.pause_s:
                add += (eff.pause_s - phase) * 1000.0
        return factor, add

    def fail(self, rng: Random, t: int, service: str, operation: str, attrs: Attrs) -> Fail | None:
        for eff in self._get(t, Fail, service):
            if eff.operation not in (None, operation) or (eff.when and not eff.when(attrs)):
                continue
            if eff.prob >= 1.0 or rng.random() < eff.prob:
                return eff
        return None

    def unreachable(self, t: int, service: str) -> Unreachable | None:
        found = self._get(t, Unreachable, service)
        return found[0] if found else None

    def timeout(self, t: int, service: str, operation: str) -> Timeout | None:
        for eff in self._get(t, Timeout, service):
            if eff.operation == operation:
                return eff
        return None

    def cpu_floor(self, t: int, service: str, node: str | None = None) -> float:
        levels = [e.level for e in self._get(t, Cpu, service)]
        if node:
            levels += [e.level for e in self._get(t, Cpu, f"node:{node}")]
        return max(levels, default=0.0)

    def leaked_mb(self, t: int, service: str) -> float:
        return sum(e.mb_per_min for e in self._get(t, Memory, service)) * self.minutes_in(t)

    def gc_pauses(self, t: int, service: str) -> list[GcPause]:
        return self._get(t, GcPause, service)

    def rollout(self, t: int, service: str) -> Rollout | None:
        found = self._get(t, Rollout, service)
        return found[0] if found else None

    def kafka(self, t: int, producer: str) -> KafkaOverload | None:
        found = self._get(t, KafkaOverload, producer)
        return found[0] if found else None

    def kafka_any(self, t: int) -> KafkaOverload | None:
        for (kind, _), effects in self._by.items():
            if kind is KafkaOverload and self.active(t):
                return effects[0]
        return None
