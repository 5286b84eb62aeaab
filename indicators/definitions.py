"""Declarative indicator definitions, checked at load time.

>>> cat = load_catalog()
>>> d = cat["fire.temperature"]
>>> d.family, d.entity.by, d.window, d.aggregation
('reading', ['site_id'], datetime.timedelta(seconds=60), 'max')
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cityvitals.yamlconf import ConfigError, Duration, load_model
from schemas.families import INPUT_FAMILIES

__all__ = ["DEFAULT_CATALOG", "Aggregation", "Catalog", "IndicatorDef", "load_catalog"]

DEFAULT_CATALOG = Path(__file__).with_name("catalog.yaml")

Aggregation = Literal["mean", "max", "min", "sum", "count", "p95", "online_rate", "overdue"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Entity(_Strict):
    """What a value is computed per: a type name and the input columns that key it."""

    type: str = Field(min_length=1)
    by: list[str] = Field(min_length=1)


class IndicatorDef(_Strict):
    """One vital-sign indicator."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*\.[a-z0-9_.]+$")
    name_zh: str = Field(min_length=1)
    name_en: str = Field(min_length=1)
    sector: str = Field(min_length=1)
    unit: str = Field(min_length=1)
    family: Literal["reading", "heartbeat", "gate", "workorder"]
    where: dict[str, str] = Field(default_factory=dict)
    entity: Entity
    window: Duration
    aggregation: Aggregation
    field: str
    divide_by: str | None = None
    params: dict[str, dict[str, Duration]] = Field(default_factory=dict)
    description: str = Field(min_length=1)

    @field_validator("window")
    @classmethod
    def _whole_seconds(cls, v: timedelta) -> timedelta:
        if v.total_seconds() < 1 or v.total_seconds() != int(v.total_seconds()):
            raise ValueError("expected a window of whole seconds, at least 1s")
        return v

    @model_validator(mode="after")
    def _columns_exist(self) -> IndicatorDef:
        columns = set(INPUT_FAMILIES[self.family].names)
        used = [*self.where, *self.entity.by, self.field]
        if self.divide_by:
            used.append(self.divide_by)
        missing = [c for c in used if c not in columns]
        if missing:
            raise ValueError(
                f"expected columns of family '{self.family}' ({sorted(columns)}), not {missing}"
            )
        if self.aggregation == "overdue" and "deadlines" not in self.params:
            raise ValueError("expected params.deadlines for an 'overdue' indicator")
        return self

    @property
    def window_us(self) -> int:
        return int(self.window.total_seconds()) * 1_000_000


class Catalog(_Strict):
    """All indicators, by id."""

    indicators: list[IndicatorDef] = Field(min_length=1)

    def problems(self, context: dict) -> list[tuple[tuple, str]]:
        """Checks across entries, each reported at the entry that breaks it."""
        first: dict[str, int] = {}
        found = []
        for i, d in enumerate(self.indicators):
            if d.id in first:
                found.append(
                    (
                        ("indicators", i, "id"),
                        f"got '{d.id}', expected a unique id (entry {first[d.id]} has it)",
                    )
                )
            first.setdefault(d.id, i)
        return found

    def __getitem__(self, indicator_id: str) -> IndicatorDef:
        for d in self.indicators:
            if d.id == indicator_id:
                return d
        raise KeyError(indicator_id)

    @property
    def ids(self) -> list[str]:
        return [d.id for d in self.indicators]


def load_catalog(path: Path | str = DEFAULT_CATALOG) -> Catalog:
    """Load and check an indicator catalogue; :class:`ConfigError` lists every problem."""
    return load_model(path, Catalog)


__all__ += ["ConfigError", "Entity"]
