"""Composite risk scores, the grader that moves a level up and down, and a point's tracker.

**The score** of a risk point is its static base times what is happening now::

    base    = Σ wᵢ·bᵢ / Σ wᵢ        over the base factors (values bᵢ in [0, 1])
    dynamic = Σ wⱼ·nⱼ / Σ wⱼ        over the dynamic factors (normalised values nⱼ)
    score   = base · dynamic         in [0, 1]

Each factor's **contribution** is its share of the score (the shares sum to 1;
all are 0 when the score is 0): the product expands into terms
``(wᵢbᵢ/Σwᵢ)·(wⱼnⱼ/Σwⱼ)``, and each term is split equally between its base
factor ``i`` and its dynamic factor ``j``.

>>> from thresholds.risk_points import BaseFactor, DynamicFactor
>>> base = [BaseFactor(name="soil", value=0.8, weight=1)]
>>> dyn = [DynamicFactor(name="rain", indicator="flood.rainfall", entity="r", low=0, high=20)]
>>> s = score(base, dyn, {"rain": 10.0})
>>> s.score, [(c.factor, c.value, c.contribution) for c in s.factors]
(0.4, [('soil', 0.8, 0.5), ('rain', 10.0, 0.5)])

**When a window is scored** (the determinism rule): a point is scored at
every multiple ``t`` of the file's ``step`` (event time), once each of its
dynamic factors has a value for a window ending at or after ``t``; each
factor then counts with the value of its latest window ending at or before
``t``. Scoring starts at the first ``t`` at which every factor has such a
value. A point's factors come from different shards in any interleaving, but
each series' windows close in order, so the scores and the level changes
depend on the input only.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from schemas.families import SEVERITIES
from thresholds.risk_points import BaseFactor, DynamicFactor, GradingModel, RiskPoint

__all__ = ["Change", "Contribution", "Grader", "PointTracker", "Score", "score"]

_RANK = {name: i for i, name in enumerate(SEVERITIES)}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Contribution:
    factor: str
    value: float | None
    contribution: float


@dataclass(frozen=True, slots=True)
class Score:
    """A composite score and every factor's share of it, largest first."""

    score: float
    factors: tuple[Contribution, ...]


def score(base: list[BaseFactor], factors: list[DynamicFactor], values: dict[str, float]) -> Score:
    """The composite score of a point given its dynamic factors' raw ``values`` by name."""
    ws = sum(b.weight for b in base)
    wd = sum(f.weight for f in factors)
    b_terms = [b.weight * b.value / ws for b in base]
    d_terms = [f.weight * f.normalise(values[f.name]) / wd for f in factors]
    b_sum, d_sum = sum(b_terms), sum(d_terms)
    total = b_sum * d_sum
    parts = [
        *(
            Contribution(b.name, b.value, _share(0.5 * t * d_sum, total))
            for b, t in zip(base, b_terms, strict=True)
        ),
        *(
            Contribution(f.name, values[f.name], _share(0.5 * b_sum * t, total))
            for f, t in zip(factors, d_terms, strict=True)
        ),
    ]
    parts.sort(key=lambda c: -c.contribution)  # stable: file order among equals
    return Score(total, tuple(parts))


def _share(part: float, total: float) -> float:
    return part / total if total > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Change:
    """A level change the grader decided."""

    from_level: str
    to_level: str
    change: str  # upgraded | downgraded


class Grader:
    """One point's level under a :class:`GradingModel`: feed scores window by window.

    >>> from thresholds.risk_points import GradingModel
    >>> m = GradingModel(levels={"yellow": 0.4, "red": 0.7}, clear={"yellow": 0.3, "red": 0.6},
    ...     up_after=2, down_after=2, cool_down="10m")
    >>> g, t0 = Grader(m), datetime(2026, 5, 12, 6, tzinfo=UTC)
    >>> scores = [0.5, 0.8, 0.8]
    >>> changes = [g.update(s, t0 + timedelta(minutes=5 * i)) for i, s in enumerate(scores)]
    >>> [c and (c.from_level, c.to_level, c.change) for c in changes]
    [None, ('normal', 'yellow', 'upgraded'), ('yellow', 'red', 'upgraded')]
    >>> g.get()
    'red'
    """

    def __init__(self, model: GradingModel) -> None:
        self.model = model
        self._level = "normal"
        self._recent: list[float] = []  # the last max(up_after, down_after) scores
        self._changed_at: datetime | None = None

    def get(self) -> str:
        """The current level."""
        return self._level

    def update(self, value: float, at: datetime) -> Change | None:
        """Take the score of the window ending ``at``; return the level change, if any."""
        m = self.model
        self._recent = [*self._recent, value][-max(m.up_after, m.down_after) :]
        old = self._level
        new = old
        if len(self._recent) >= m.up_after:
            up = m.level_of(min(self._recent[-m.up_after :]))
            if _RANK[up] > _RANK[old]:
                new = up
        cooled = self._changed_at is None or at - self._changed_at >= m.cool_down
        if new == old and old != "normal" and cooled and len(self._recent) >= m.down_after:
            held = m.held_at(max(self._recent[-m.down_after :]))
            if _RANK[held] < _RANK[old]:
                new = held
        if new == old:
            return None
        self._level, self._changed_at = new, at
        return Change(old, new, "upgraded" if _RANK[new] > _RANK[old] else "downgraded")


class PointTracker:
    """One risk point over time: collects its factors' values, scores and grades each window.

    ``add`` takes ``(factor indicator, entity, window_end, value)`` rows in any
    order across factors (in window order within one factor) and returns the
    ``RISK_LEVELS`` records (without ``emitted_at``) of the level changes they
    caused. See the module docstring for when a window is scored.
    """

    def __init__(self, point: RiskPoint, model: GradingModel, step: timedelta, top: int = 5):
        self.point = point
        self.model = model
        self.step = step
        self.top = top
        self._grader = Grader(model)
        self._series: dict[str, list[tuple[datetime, float]]] = {f.name: [] for f in point.factors}
        self._by_source = {(f.indicator, f.entity): f.name for f in point.factors}
        self._next: datetime | None = None  # the next window end to score

    def level(self) -> str:
        return self._grader.get()

    def add(self, rows: list[tuple[str, str, datetime, float]]) -> list[dict]:
        for indicator, entity, end, value in rows:
            name = self._by_source.get((indicator, entity))
            if name is not None:
                self._series[name].append((end, value))
        return self._score_ready()

    def _score_ready(self) -> list[dict]:
        series = self._series
        if any(not s for s in series.values()):
            return []
        if self._next is None:
            self._next = _ceil(max(s[0][0] for s in series.values()), self.step)
        ready = min(s[-1][0] for s in series.values())
        out = []
        while self._next <= ready:
            t = self._next
            values = {name: _at(s, t) for name, s in series.items()}
            s = score(self.point.base, self.point.factors, values)
            change = self._grader.update(s.score, t)
            if change is not None:
                out.append(self._record(change, s, t))
            self._next = t + self.step
        for name, s in series.items():  # keep the latest value at or before the next window
            series[name] = s[max(bisect_right(s, self._next, key=_end) - 1, 0) :]
        return out

    def _record(self, change: Change, s: Score, t: datetime) -> dict:
        p = self.point
        return {
            "risk_point_id": p.id,
            "category": p.category,
            "grid_id": p.location.grid_id,
            "district_id": p.location.district_id,
            "model": p.model,
            "from_level": change.from_level,
            "to_level": change.to_level,
            "change": change.change,
            "score": s.score,
            "event_ts": t,
            "factors": [
                {"factor": c.factor, "value": c.value, "contribution": c.contribution}
                for c in s.factors[: self.top]
            ],
        }


def _at(series: list[tuple[datetime, float]], t: datetime) -> float:
    """The value of the latest window ending at or before ``t`` (the first one if none)."""
    return series[max(bisect_right(series, t, key=_end) - 1, 0)][1]


def _end(window: tuple[datetime, float]) -> datetime:
    return window[0]


def _ceil(ts: datetime, step: timedelta) -> datetime:
    n = -((_EPOCH - ts) // step)
    return _EPOCH + n * step
