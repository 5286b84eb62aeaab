"""Threshold rules: the operator-edited YAML and its strict model.

>>> from indicators.definitions import load_catalog
>>> rules = load_rules(catalog=load_catalog())
>>> r = rules.for_indicator("fire.temperature")[0]
>>> r.direction, r.levels
('above', {'yellow': 45.0, 'orange': 57.0, 'red': 70.0})
>>> r.level_of(60.0)
'orange'
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from cityvitals.yamlconf import load_model
from schemas.families import SEVERITIES

__all__ = ["DEFAULT_RULES", "LEVELS", "Rule", "RuleSet", "load_rules"]

DEFAULT_RULES = Path(__file__).with_name("rules.yaml")

#: Severities above normal, mild to grave.
LEVELS: tuple[str, ...] = SEVERITIES[1:]


class Rule(BaseModel):
    """How one indicator's values become graded breaches."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: str = Field(min_length=1)
    indicator: str
    direction: Literal["above", "below"]
    levels: dict[Literal["blue", "yellow", "orange", "red"], float] = Field(min_length=1)
    for_: int = Field(default=1, ge=1, alias="for")
    hysteresis: float = Field(default=0.0, ge=0)
    clear_for: int = Field(default=1, ge=1)
    min_samples: int = Field(default=1, ge=1)

    @field_validator("levels")
    @classmethod
    def _ordered(cls, v: dict[str, float]) -> dict[str, float]:
        return {name: v[name] for name in LEVELS if name in v}

    @field_validator("indicator")
    @classmethod
    def _known(cls, v: str, info: ValidationInfo) -> str:
        known = (info.context or {}).get("indicators")
        if known is not None and v not in known:
            raise ValueError(f"expected an indicator of the catalogue, '{v}' is not one")
        return v

    @model_validator(mode="after")
    def _monotonic(self) -> Rule:
        bounds = list(self.levels.values())
        rising = self.direction == "above"
        for lo, hi in itertools.pairwise(bounds):
            if (hi <= lo) if rising else (hi >= lo):
                order = "rising" if rising else "falling"
                raise ValueError(
                    f"expected bounds {order} from blue to red for direction '{self.direction}', "
                    f"got {self.levels}"
                )
        return self

    def bound(self, level: str) -> float:
        return self.levels[level]

    def level_of(self, value: float) -> str:
        """The raw severity of a value under this rule, without hysteresis."""
        found = "normal"
        for name, bound in self.levels.items():
            if (value >= bound) if self.direction == "above" else (value <= bound):
                found = name
        return found

    def holds(self, level: str, value: float) -> bool:
        """Whether ``value`` keeps ``level``, allowing for hysteresis."""
        if level == "normal":
            return True
        bound = self.levels[level]
        if self.direction == "above":
            return value >= bound - self.hysteresis
        return value <= bound + self.hysteresis


class RuleSet(BaseModel):
    """Every rule, checked against the indicator catalogue."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[Rule] = Field(min_length=1)

    @model_validator(mode="after")
    def _complete(self, info: ValidationInfo) -> RuleSet:
        ids = [r.id for r in self.rules]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"expected unique rule ids, {dupes} repeat")
        known = (info.context or {}).get("indicators")
        if known is not None:
            uncovered = sorted(set(known) - {r.indicator for r in self.rules})
            if uncovered:
                raise ValueError(f"expected every indicator to have a rule, {uncovered} have none")
        return self

    def for_indicator(self, indicator_id: str) -> list[Rule]:
        return [r for r in self.rules if r.indicator == indicator_id]


def load_rules(path: Path | str = DEFAULT_RULES, catalog=None) -> RuleSet:
    """Load rules; with a catalogue, also check they cover it exactly."""
    context = {"indicators": set(catalog.ids)} if catalog is not None else None
    return load_model(path, RuleSet, context=context)
