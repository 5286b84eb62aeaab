"""Risk points and grading models: the operator-edited YAML and its strict model.

A **risk point** is a place (a road section, a slope, a high-rise, ...) with a
static base (soil, pipe age, past incidents: each a value in [0, 1] with a
weight) and dynamic factors, each an indicator of the catalogue read from one
entity and normalised to [0, 1]. A **grading model** turns the point's
composite score into a level; see :mod:`thresholds.risk` for the formula and
``thresholds/risk_points.yaml`` for the language.

>>> from indicators.definitions import load_catalog
>>> points = load_risk_points(catalog=load_catalog())
>>> p = points.point("rp-road-G03-1")
>>> p.category, p.model, [f.indicator for f in p.factors]
('road_section', 'collapse', ['flood.rainfall', 'collapse.road_vibration'])
>>> p.factors[0].normalise(13.5)
0.5
>>> points.models["collapse"].level_of(0.5)
'orange'
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cityvitals.yamlconf import Duration, KeyedProblems, load_model, repeated_ids
from schemas.families import RISK_CATEGORIES, SEVERITIES

__all__ = [
    "DEFAULT_RISK_POINTS",
    "BaseFactor",
    "DynamicFactor",
    "GradingModel",
    "Location",
    "RiskPoint",
    "RiskPointSet",
    "load_risk_points",
]

DEFAULT_RISK_POINTS = Path(__file__).with_name("risk_points.yaml")

Level = Literal[SEVERITIES[1:]]  # type: ignore[valid-type]
Category = Literal[RISK_CATEGORIES]  # type: ignore[valid-type]
_LEVELS = SEVERITIES[1:]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GradingModel(_Strict):
    """How a score becomes a level, and how the level moves.

    Up: once the score has stayed at or above a level's ``levels`` bound for
    ``up_after`` consecutive windows. Down: once it has stayed below the
    current level's ``clear`` bound (lower than its bound) for ``down_after``
    consecutive windows **and** ``cool_down`` has passed since the last change.
    """

    levels: dict[Level, float] = Field(min_length=1)
    clear: dict[Level, float]
    up_after: int = Field(default=2, ge=1)
    down_after: int = Field(default=3, ge=1)
    cool_down: Duration = Field(default=timedelta(minutes=15))

    @model_validator(mode="after")
    def _ordered(self) -> GradingModel:
        problems: list[tuple[tuple, str]] = []
        names = self.names
        bounds = [self.levels[n] for n in names]
        for name, bound in self.levels.items():
            if not 0.0 < bound <= 1.0:
                problems.append((("levels", name), f"got {bound}, expected a bound in (0, 1]"))
        for prev, name, b in zip(names, names[1:], bounds[1:], strict=False):
            if b <= self.levels[prev]:
                problems.append(
                    (("levels", name), f"got {b}, expected more than {prev} ({self.levels[prev]})")
                )
        for name in names:
            c = self.clear.get(name)
            if c is None:
                problems.append((("clear",), f"expected a clearing bound for {name}"))
            elif not 0.0 <= c < self.levels[name]:
                problems.append(
                    (
                        ("clear", name),
                        f"got {c}, expected a bound in [0, {self.levels[name]}) (below {name}'s)",
                    )
                )
        for name in sorted(set(self.clear) - set(self.levels)):
            problems.append((("clear", name), f"expected no clearing bound: {name} has no bound"))
        if problems:
            raise KeyedProblems(problems)
        return self

    @property
    def names(self) -> list[str]:
        """The model's levels, mild to grave."""
        return [n for n in _LEVELS if n in self.levels]

    def level_of(self, score: float) -> str:
        """The gravest level whose bound ``score`` reaches (``normal`` if none)."""
        reached = [n for n in self.names if score >= self.levels[n]]
        return reached[-1] if reached else "normal"

    def held_at(self, score: float) -> str:
        """The gravest level whose clearing bound ``score`` still reaches (``normal`` if none)."""
        held = [n for n in self.names if score >= self.clear[n]]
        return held[-1] if held else "normal"


class BaseFactor(_Strict):
    """A static factor of the point's base: a value in [0, 1] with a weight."""

    name: str = Field(min_length=1)
    value: float = Field(ge=0.0, le=1.0)
    weight: float = Field(default=1.0, gt=0.0)


class DynamicFactor(_Strict):
    """An indicator of one entity, normalised linearly from ``low`` (0) to ``high`` (1), clipped.

    ``low`` above ``high`` reads the indicator the other way round (a falling speed).
    """

    name: str = Field(min_length=1)
    indicator: str = Field(min_length=1)
    entity: str = Field(min_length=1)
    low: float
    high: float
    weight: float = Field(default=1.0, gt=0.0)

    @model_validator(mode="after")
    def _span(self) -> DynamicFactor:
        if self.low == self.high:
            raise KeyedProblems([(("high",), f"got {self.high}, expected a value other than low")])
        return self

    def normalise(self, value: float) -> float:
        """``value`` on [0, 1]: 0 at ``low``, 1 at ``high``, clipped."""
        x = (value - self.low) / (self.high - self.low)
        return min(1.0, max(0.0, x))


class Location(_Strict):
    grid_id: str = Field(min_length=1)
    district_id: str = Field(min_length=1)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    address: str | None = None


class RiskPoint(_Strict):
    """One risk point: where it is, its static base, its dynamic factors, its model."""

    id: str = Field(min_length=1)
    category: Category
    model: str = Field(min_length=1)
    location: Location
    base: list[BaseFactor] = Field(min_length=1)
    factors: list[DynamicFactor] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> RiskPoint:
        names = [f.name for f in self.base] + [f.name for f in self.factors]
        problems = []
        for i, name in enumerate(names):
            if name in names[:i]:
                section, k = ("base", i) if i < len(self.base) else ("factors", i - len(self.base))
                problems.append(((section, k, "name"), f"got '{name}', expected a unique name"))
        if problems:
            raise KeyedProblems(problems)
        return self


class RiskPointSet(_Strict):
    """Every grading model and risk point, checked against the indicator catalogue.

    ``step`` is the spacing of the windows a point is scored at (see
    :mod:`thresholds.risk`).
    """

    step: Duration = Field(default=timedelta(minutes=5))
    models: dict[str, GradingModel] = Field(min_length=1)
    points: list[RiskPoint] = Field(default_factory=list)

    def problems(self, context: dict) -> list[tuple[tuple, str]]:
        """Checks across entries, each reported at the entry that breaks it."""
        found = repeated_ids("points", [p.id for p in self.points], "point")
        known = context.get("indicators")
        for i, p in enumerate(self.points):
            if p.model not in self.models:
                found.append(
                    (
                        ("points", i, "model"),
                        f"got '{p.model}', expected a model of this file {sorted(self.models)}",
                    )
                )
            for k, f in enumerate(p.factors):
                if known is not None and f.indicator not in known:
                    found.append(
                        (
                            ("points", i, "factors", k, "indicator"),
                            f"got '{f.indicator}', expected an indicator of the catalogue "
                            f"(point {p.id}, factor {f.name})",
                        )
                    )
        return found

    def point(self, point_id: str) -> RiskPoint:
        """The point with this id (``KeyError`` if none)."""
        for p in self.points:
            if p.id == point_id:
                return p
        raise KeyError(point_id)

    def readers(self) -> dict[tuple[str, str], list[str]]:
        """``(indicator, entity)`` → ids of the points that read it (in file order).

        >>> from indicators.definitions import load_catalog
        >>> load_risk_points(catalog=load_catalog()).readers()[("flood.rainfall", "rain-G03-1")]
        ['rp-road-G03-1']
        """
        out: dict[tuple[str, str], list[str]] = {}
        for p in self.points:
            for f in p.factors:
                ids = out.setdefault((f.indicator, f.entity), [])
                if p.id not in ids:
                    ids.append(p.id)
        return out


def load_risk_points(path: Path | str = DEFAULT_RISK_POINTS, catalog=None) -> RiskPointSet:
    """Load risk points; with a catalogue, also check every factor's indicator is in it."""
    context = {"indicators": set(catalog.ids)} if catalog is not None else None
    return load_model(path, RiskPointSet, context=context)
