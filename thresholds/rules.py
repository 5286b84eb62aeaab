"""Threshold rules: the operator-edited YAML and its strict model.

A rule grades one indicator's values into ``normal < blue < yellow < orange
< red``. Its bands can differ by entity (**overrides**) and by time of day
and weekday (**schedules**); see ``thresholds/rules.yaml`` for the language.

>>> from indicators.definitions import load_catalog
>>> rules = load_rules(catalog=load_catalog())
>>> r = rules.for_indicator("fire.temperature")[0]
>>> r.direction, r.levels
('above', {'yellow': 45.0, 'orange': 57.0, 'red': 70.0})
>>> r.level_of(60.0)
'orange'
>>> r.settle("orange", 55.0)  # back under 57, but not past 57 - 3 = 54: stays orange
'orange'
>>> r.settle("orange", 53.0)
'yellow'
"""

from __future__ import annotations

import itertools
import math
import re
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cityvitals.yamlconf import (
    Duration,
    KeyedProblems,
    load_model,
    parse_duration,
    repeated_ids,
)
from schemas.families import SEVERITIES

__all__ = ["DEFAULT_RULES", "LEVELS", "Bands", "NoData", "Rule", "RuleSet", "load_rules"]

DEFAULT_RULES = Path(__file__).with_name("rules.yaml")

#: Severities above normal, mild to grave.
LEVELS: tuple[str, ...] = SEVERITIES[1:]
_RANK = {name: i for i, name in enumerate(SEVERITIES)}
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

Level = Literal["blue", "yellow", "orange", "red"]
#: A level's bound: a number (``above``/``below``) or ``[low, high]`` (``outside``).
Bound = float | tuple[float, float]


def _windows_or_duration(v: object) -> int | timedelta:
    if isinstance(v, int) and not isinstance(v, bool):
        if v < 1:
            raise ValueError("expected at least 1 window, or a duration such as 10m")
        return v
    try:
        return parse_duration(v)
    except ValueError:
        raise ValueError(
            "expected a number of windows (1 or more) or a duration such as 10m"
        ) from None


#: ``for`` and ``clear_for``: a count of windows, or a span of event time.
WindowsOrDuration = Annotated[int | timedelta, BeforeValidator(_windows_or_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Bands(_Strict):
    """The bound of each level, and how far back a value must come to leave it.

    A level is left once the value is back past its **clearing bound**: the
    level's own ``clear`` entry if given, else its bound moved back by
    ``hysteresis``.
    """

    levels: dict[Level, Bound] = Field(min_length=1)
    hysteresis: float = Field(default=0.0, ge=0)
    clear: dict[Level, Bound] = Field(default_factory=dict)

    @field_validator("levels", "clear")
    @classmethod
    def _ordered(cls, v: dict[str, Bound]) -> dict[str, Bound]:
        return {name: v[name] for name in LEVELS if name in v}

    def span(self, level: str, direction: str) -> tuple[float | None, float | None]:
        """``(low, high)``: values at or below ``low`` or at or above ``high`` reach ``level``."""
        return _span(self.levels[level], direction)

    def clearing(self, level: str, direction: str) -> tuple[float | None, float | None]:
        """The ``(low, high)`` a value must get back inside of to leave ``level``."""
        if level in self.clear:
            return _span(self.clear[level], direction)
        low, high = self.span(level, direction)
        h = self.hysteresis
        return (None if low is None else low + h, None if high is None else high - h)


def _span(bound: Bound, direction: str) -> tuple[float | None, float | None]:
    if direction == "above":
        return None, float(bound)
    if direction == "below":
        return float(bound), None
    low, high = bound
    return float(low), float(high)


def _beyond(value: float, span: tuple[float | None, float | None]) -> bool:
    """Whether ``value`` reaches ``span``'s low or high bound. NaN is above every number, as
    in Polars and in the evaluator's vectorised grading: it reaches every high bound and no
    low one.

    >>> _beyond(float("nan"), (None, 70.0)), _beyond(float("nan"), (10.0, None))
    (True, False)
    """
    low, high = span
    if high is not None and (value >= high or math.isnan(value)):
        return True
    return low is not None and value <= low


def _clock(v: object) -> time:
    if isinstance(v, time):
        return v
    if isinstance(v, int):  # YAML 1.1 reads an unquoted 15:30 as the number 930
        raise ValueError(
            f"expected a quoted time of day such as '15:30' (YAML read {v} as a number)"
        )
    m = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", str(v))
    if not m:
        raise ValueError("expected a time of day as 'HH:MM', 00:00 to 23:59")
    return time(int(m[1]), int(m[2]))


class Schedule(Bands):
    """Bands in force on some weekdays between two local times of day.

    ``to`` before ``from`` runs across midnight (``from: '22:00'``, ``to: '06:00'``).
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default_factory=lambda: list(_DAYS), min_length=1
    )
    from_: time = Field(alias="from")
    to: time

    @field_validator("from_", "to", mode="before")
    @classmethod
    def _clock(cls, v: object) -> time:
        return _clock(v)

    def active(self, local: pl.Expr) -> pl.Expr:
        """Whether the schedule is in force at the local datetimes of ``local``."""
        minute = local.dt.hour().cast(pl.Int32) * 60 + local.dt.minute().cast(pl.Int32)
        start = self.from_.hour * 60 + self.from_.minute
        end = self.to.hour * 60 + self.to.minute
        if start < end:
            in_time = (minute >= start) & (minute < end)
            day = local.dt.weekday()
        else:  # across midnight: the early hours belong to the previous day's schedule
            in_time = (minute >= start) | (minute < end)
            day = pl.when(minute < end).then(local.dt.offset_by("-1d")).otherwise(local)
            day = day.dt.weekday()
        days = [_DAYS.index(d) + 1 for d in self.days]
        return in_time & day.is_in(days)


class Override(Bands):
    """Bands for some entities: ids or ``*``/``?`` patterns (``garage-0?``, ``*/g03``).

    With ``schedule``, it applies only while that schedule of the rule is in force.
    """

    entities: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    schedule: str | None = None

    def matches(self, entity: pl.Expr) -> pl.Expr:
        return pl.any_horizontal([entity.str.contains(_glob(p)) for p in self.entities])


def _glob(pattern: str) -> str:
    """An anchored regular expression for an id pattern with ``*`` and ``?``.

    >>> _glob("garage-0?"), _glob("*/g03")
    ('^garage\\\\-0.$', '^.*/g03$')
    """
    parts = {"*": ".*", "?": "."}
    return "^" + "".join(parts.get(c, re.escape(c)) for c in pattern) + "$"


class NoData(_Strict):
    """What happens when a series stops getting values for ``after``.

    - ``keep``: nothing; an open alert stays as it is until values return;
    - ``clear``: an open alert is cleared (its life ends with ``measure: no_data``);
    - ``alert``: silence itself raises the alert to ``severity``.
    """

    after: Duration
    action: Literal["keep", "clear", "alert"]
    severity: Level | None = None

    @model_validator(mode="after")
    def _severity_with_alert(self) -> NoData:
        if self.action == "alert" and self.severity is None:
            raise ValueError("expected a 'severity' for action 'alert'")
        if self.action != "alert" and self.severity is not None:
            raise ValueError(f"expected no 'severity' for action '{self.action}', only for 'alert'")
        return self


class Rule(Bands):
    """How one indicator's values become graded breaches."""

    id: str = Field(min_length=1)
    indicator: str
    description: str | None = None
    measure: Literal["value", "change"] = "value"
    direction: Literal["above", "below", "outside"]
    for_: WindowsOrDuration = Field(default=1, alias="for")
    clear_for: WindowsOrDuration = 1
    min_samples: int = Field(default=1, ge=1)
    no_data: NoData | None = None
    schedules: list[Schedule] = Field(default_factory=list)
    overrides: list[Override] = Field(default_factory=list)

    @field_validator("indicator")
    @classmethod
    def _known(cls, v: str, info: ValidationInfo) -> str:
        known = (info.context or {}).get("indicators")
        if known is not None and v not in known:
            raise ValueError(f"expected an indicator of the catalogue, '{v}' is not one")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        problems: list[tuple[tuple, str]] = []
        for path, bands in self._named_variants():
            problems.extend(((*path, *p), m) for p, m in _band_problems(bands, self.direction))
        names = [s.name for s in self.schedules]
        for i, sch in enumerate(self.schedules):
            if sch.from_ == sch.to:
                problems.append(
                    (
                        ("schedules", i, "to"),
                        f"expected 'from' and 'to' to differ, both are {sch.to:%H:%M}",
                    )
                )
        for i, name in enumerate(names):
            if name in names[:i]:
                problems.append((("schedules", i, "name"), f"got '{name}', expected a unique name"))
        for i, o in enumerate(self.overrides):
            if o.schedule is not None and o.schedule not in names:
                problems.append(
                    (
                        ("overrides", i, "schedule"),
                        f"got '{o.schedule}', expected a schedule of this rule {names}",
                    )
                )
        if problems:
            raise KeyedProblems(problems)
        return self

    def _named_variants(self) -> list[tuple[tuple, Bands]]:
        return [
            ((), self),
            *((("overrides", i), o) for i, o in enumerate(self.overrides)),
            *((("schedules", i), s) for i, s in enumerate(self.schedules)),
        ]

    @property
    def variants(self) -> list[Bands]:
        """Every set of bands: 0 is the rule's own, then overrides, then schedules."""
        return [b for _, b in self._named_variants()]

    def variant_of(self, entity: pl.Expr, start: pl.Expr, tz: str) -> pl.Expr:
        """Which bands apply to each row: the first matching override whose schedule
        (if any) is in force, else the first schedule in force, else the rule's own (0).
        """
        local = start.dt.convert_time_zone(tz)
        active = {s.name: s.active(local) for s in self.schedules}
        expr = pl.lit(0, dtype=pl.Int16)
        picks = [
            (o.matches(entity) & (active[o.schedule] if o.schedule else pl.lit(True)), 1 + i)
            for i, o in enumerate(self.overrides)
        ]
        picks += [
            (active[s.name], 1 + len(self.overrides) + i) for i, s in enumerate(self.schedules)
        ]
        for cond, idx in reversed(picks):  # the first pick must win: build it last
            expr = pl.when(cond).then(pl.lit(idx, dtype=pl.Int16)).otherwise(expr)
        return expr

    def level_of(self, value: float, variant: int = 0) -> str:
        """The raw level of a value, without hysteresis."""
        bands = self.variants[variant]
        found = "normal"
        for name in bands.levels:
            if _beyond(value, bands.span(name, self.direction)):
                found = name
        return found

    def holds(self, level: str, value: float, variant: int = 0) -> bool:
        """Whether ``value`` keeps ``level``: it is not yet back past the clearing bound."""
        if level == "normal":
            return True
        bands = self.variants[variant]
        return level in bands.levels and _beyond(value, bands.clearing(level, self.direction))

    def settle(self, current: str, value: float, variant: int = 0) -> str:
        """The level after ``value`` for a series at ``current``.

        Rising is immediate; falling stops at the gravest level, no graver than
        ``current``, that the value still holds.
        """
        raw = self.level_of(value, variant)
        if _RANK[raw] >= _RANK[current]:
            return raw
        for name in reversed(self.variants[variant].levels):
            if _RANK[raw] < _RANK[name] <= _RANK[current] and self.holds(name, value, variant):
                return name
        return raw

    def bound(self, level: str, value: float | None = None, variant: int = 0) -> float:
        """The bound of ``level`` on the side ``value`` is on (``outside`` has two)."""
        return _side(self.variants[variant].span(level, self.direction), value)

    def clearing_bound(self, level: str, value: float | None = None, variant: int = 0) -> float:
        """The clearing bound of ``level`` on the side ``value`` is on."""
        return _side(self.variants[variant].clearing(level, self.direction), value)


def _side(span: tuple[float | None, float | None], value: float | None) -> float:
    low, high = span
    if low is None or high is None:
        return low if high is None else high
    return low if value is not None and value <= (low + high) / 2 else high


def _band_problems(bands: Bands, direction: str) -> list[tuple[tuple, str]]:
    """Shape and order of one set of bands; each problem at its key."""
    problems = []
    for key in ("levels", "clear"):
        for name, bound in getattr(bands, key).items():
            pair = isinstance(bound, tuple)
            if direction == "outside" and not pair:
                problems.append(((key, name), f"got {bound}, expected [low, high] for 'outside'"))
            elif direction != "outside" and pair:
                problems.append(
                    ((key, name), f"got {list(bound)}, expected one number for '{direction}'")
                )
            elif pair and bound[0] >= bound[1]:
                problems.append(((key, name), f"got {list(bound)}, expected low < high"))
    if problems:
        return problems
    for name in bands.clear:
        if name not in bands.levels:
            problems.append((("clear", name), f"expected a level of 'levels' {list(bands.levels)}"))
    # Graver levels lie further out: rising (above), falling (below), wider bands (outside).
    for mild, grave in itertools.pairwise(bands.levels):
        (ml, mh), (gl, gh) = bands.span(mild, direction), bands.span(grave, direction)
        if (mh is not None and gh <= mh) or (ml is not None and gl >= ml):
            order = {
                "above": "rising",
                "below": "falling",
                "outside": "each band strictly wider",
            }[direction]
            problems.append(
                (
                    ("levels", grave),
                    f"got {_show(bands.levels[grave])}, expected bounds {order} from blue to red; "
                    f"it overlaps {mild} ({_show(bands.levels[mild])})",
                )
            )
    for name in bands.clear:
        if name not in bands.levels:
            continue
        (bl, bh), (cl, ch) = bands.span(name, direction), bands.clearing(name, direction)
        if (bh is not None and ch > bh) or (bl is not None and cl < bl):
            side = {"above": "at or below", "below": "at or above", "outside": "inside"}[direction]
            problems.append(
                (
                    ("clear", name),
                    f"got {_show(bands.clear[name])}, expected a clearing bound {side} "
                    f"the level's bound {_show(bands.levels[name])}",
                )
            )
    return problems


def _show(bound: Bound) -> str:
    return str(list(bound)) if isinstance(bound, tuple) else f"{bound:g}"


def _timezone(v: str) -> str:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("expected an IANA time zone such as Asia/Shanghai or UTC") from None
    return v


class RuleSet(BaseModel):
    """Every rule, checked against the indicator catalogue.

    ``timezone`` is where schedules' times of day are read.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = "UTC"
    rules: list[Rule] = Field(min_length=1)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return _timezone(v)

    def problems(self, context: dict) -> list[tuple[tuple, str]]:
        """Checks across rules, each reported at the rule that breaks it."""
        found = repeated_ids("rules", [r.id for r in self.rules], "rule")
        known = context.get("indicators")
        if known is not None:
            for indicator in sorted(set(known) - {r.indicator for r in self.rules}):
                found.append(
                    (("rules",), f"expected a rule for every indicator, '{indicator}' has none")
                )
        return found

    def for_indicator(self, indicator_id: str) -> list[Rule]:
        return [r for r in self.rules if r.indicator == indicator_id]


def load_rules(path: Path | str = DEFAULT_RULES, catalog=None) -> RuleSet:
    """Load rules; with a catalogue, also check they cover it exactly."""
    context = {"indicators": set(catalog.ids)} if catalog is not None else None
    return load_model(path, RuleSet, context=context)


def duration_met(need: int | timedelta, count: int, span: timedelta) -> bool:
    """Whether ``count`` windows spanning ``span`` satisfy ``for``/``clear_for``."""
    return count >= need if isinstance(need, int) else span >= need


__all__ += ["Override", "Schedule", "duration_met"]
