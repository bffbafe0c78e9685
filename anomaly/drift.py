"""Drift: a sustained shift is reported once as a change, then becomes the entity's new normal.

Per entity: a streak of anomalous windows (short gaps tolerated) longer than `sustain_windows` whose
dominant feature is consistent is a change, not an incident: one 'change' record with before/after
replaces the per-window alerts. While the new level holds, windows are suppressed; after
`confirm_windows` more the normaliser is re-based on the recent level (both detectors then see it as
normal). If the level goes back before confirmation, the change is dropped and nothing is re-based.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from anomaly.features import Entity


@dataclass
class EntityDrift:
    phase: str = "normal"  # "normal" | "changed"
    streak: int = 0
    misses: int = 0
    streak_start: int = 0
    dominant: list[int] = field(default_factory=list)
    recent: list[np.ndarray] = field(default_factory=list)
    confirmed: int = 0
    feature: int = -1


@dataclass
class Decision:
    """What to do with one entity window: 'alert' (as scored), 'change' (emit once), 'suppress', 'rebase'."""

    action: str
    feature: int = -1
    since: int = 0
    before: float = float("nan")  # transformed-space level before the change
    after: float = float("nan")  # transformed-space level after it
    recent: np.ndarray | None = None  # for 'rebase': the windows at the new level (transformed)


@dataclass
class DriftTracker:
    sustain_windows: int = 60
    confirm_windows: int = 60
    gap_windows: int = 2
    consistency: float = 0.6
    entities: dict[Entity, EntityDrift] = field(default_factory=dict)

    def update(
        self, entity: Entity, window: int, anomalous: bool, x: np.ndarray, dominant: int, before: np.ndarray,
        new_level_ok: bool,
    ) -> Decision:
        """Feed one scored window. `x`: transformed features; `before`: the entity's current normal;
        `new_level_ok`: in the 'changed' phase, whether the window is consistent with the new level."""
        st = self.entities.setdefault(entity, EntityDrift())
        if st.phase == "changed":
            if not anomalous:
                st.misses += 1
                if st.misses > self.gap_windows:
                    self.entities[entity] = EntityDrift()  # went back: it was a long incident, not a change
                return Decision("alert")
            st.misses = 0
            if not new_level_ok:
                return Decision("alert")
            st.recent.append(x)
            st.confirmed += 1
            if st.confirmed >= self.confirm_windows:
                self.entities[entity] = EntityDrift()
                return Decision("rebase", feature=st.feature, recent=np.stack(st.recent[-self.confirm_windows :]))
            return Decision("suppress", feature=st.feature)
        if not anomalous:
            st.misses += 1
            if st.misses > self.gap_windows:
                self.entities[entity] = EntityDrift()
            return Decision("alert")
        if st.streak == 0:
            st.streak_start = window
        st.streak += 1
        st.misses = 0
        st.dominant.append(dominant)
        st.recent.append(x)
        st.recent = st.recent[-(self.sustain_windows + self.confirm_windows) :]
        if st.streak < self.sustain_windows:
            return Decision("alert")
        feature, count = Counter(st.dominant[-self.sustain_windows :]).most_common(1)[0]
        if count < self.consistency * self.sustain_windows:
            return Decision("alert")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            level = np.nanmedian(np.stack(st.recent[-self.sustain_windows :])[:, feature])
        st.phase, st.feature, st.confirmed = "changed", feature, 0
        return Decision("change", feature=feature, since=st.streak_start, before=float(before[feature]),
                        after=float(level))

    def level(self, entity: Entity) -> np.ndarray | None:
        """The median recent level of an entity in its 'changed' phase (transformed units)."""
        st = self.entities.get(entity)
        if not st or st.phase != "changed" or not st.recent:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # features an entity never reports stay NaN
            return np.nanmedian(np.stack(st.recent), axis=0)
