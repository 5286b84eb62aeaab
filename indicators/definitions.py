"""Declarative indicator definitions, checked at load time.

>>> cat = load_catalog()
>>> d = cat["fire.temperature"]
>>> d.family, d.entity.by, d.window, d.aggregation
('reading', ['site_id'], datetime.timedelta(seconds=60), 'max')
>>> r = cat["workorder.closure_rate"]
>>> r.aggregation, r.numerator, r.denominator
('ratio', {'status': 'closed'}, {'status': 'reported'})

Every check names the key it is about, so a bad catalogue says where to look:

>>> bad = dict(r.model_dump(exclude_none=True), numerator={"status": "finished"})
>>> IndicatorDef.model_validate(bad)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for IndicatorDef
numerator
  Value error, expected values of 'status' among ['reported', ...], not 'finished' ...
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import pyarrow as pa
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cityvitals.yamlconf import ConfigError, Duration, KeyedProblems, load_model, repeated_ids
from schemas.families import DEVICE_TYPES, EVENT_CLASSES, INPUT_FAMILIES

__all__ = [
    "DEFAULT_CATALOG",
    "Aggregation",
    "Catalog",
    "Devices",
    "IndicatorDef",
    "ModelDef",
    "WorkOrders",
    "fixed_offset",
    "load_catalog",
]

DEFAULT_CATALOG = Path(__file__).with_name("catalog.yaml")

#: Measures of the order-lifecycle state (:mod:`indicators.lifecycle`).
LIFECYCLE: tuple[str, ...] = (
    "overdue",
    "open_orders",
    "dispatch_delay_p50",
    "dispatch_delay_p90",
    "arrival_time_mean",
    "on_time_rate",
)
#: Every aggregation a definition may name.
Aggregation = Literal[
    ("mean", "max", "min", "sum", "count", "p95", "ratio", "online_rate", *LIFECYCLE)
]
#: Aggregations of one numeric value per row; the only ones ``divide_by`` applies to.
_VALUE_AGGREGATIONS = ("mean", "max", "min", "sum", "p95")
#: Work-order columns every status change of one order repeats unchanged.
_ORDER_INVARIANT = ("district_id", "department", "grid_id", "event_class")


@functools.lru_cache(maxsize=32)  # a year of days per call: catalogues, ratings and views ask
def fixed_offset(zone: str, year: int | None = None) -> timedelta:
    """The UTC offset of the IANA time zone ``zone``, which must keep one offset every day of
    ``year`` (this year by default): windows of a day are tumbling, 24 hours each, so they can
    start at local midnight only where no daylight saving time moves it.

    >>> fixed_offset("Asia/Shanghai"), fixed_offset("UTC")
    (datetime.timedelta(seconds=28800), datetime.timedelta(0))
    >>> fixed_offset("Europe/Berlin", 2026)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: expected a time zone with one UTC offset ...; this one moves from +01:00 to +02:00
    """
    if zone not in _ZONES:  # not "localtime", which is whatever the host says
        raise ValueError("expected an IANA time zone such as Asia/Shanghai or UTC")
    try:
        tz = ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError("expected an IANA time zone such as Asia/Shanghai or UTC") from None
    first = datetime((year or datetime.now(UTC).year), 1, 1, 12, tzinfo=UTC)
    offsets = sorted({(first + timedelta(days=d)).astimezone(tz).utcoffset() for d in range(366)})
    if len(offsets) > 1:
        low, high = (_offset_text(o) for o in offsets)
        raise ValueError(
            f"expected a time zone with one UTC offset all year (windows of a day last 24 "
            f"hours); this one moves from {low} to {high}"
        )
    return offsets[0]


#: The IANA zones this machine knows (the ``tzdata`` package when it has no zone database),
#: but not the names that are no place: the host's zone, and tzdata's placeholders.
_ZONES = (frozenset(available_timezones()) - {"localtime", "Factory", "posixrules"}) | {"UTC"}


def _offset_text(offset: timedelta) -> str:
    """``+08:00``, ``-03:30``: an offset as RFC 3339 writes it."""
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(offset) // timedelta(minutes=1)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Entity(_Strict):
    """What a value is computed per: a type name and the input columns that key it."""

    type: str = Field(min_length=1)
    by: list[str] = Field(min_length=1)


def _family_schema(info: ValidationInfo) -> pa.Schema | None:
    family = info.data.get("family")
    return INPUT_FAMILIES[family] if family is not None else None


def _check_columns(used: list[str], info: ValidationInfo) -> None:
    schema = _family_schema(info)
    if schema is None:
        return
    missing = [c for c in used if c not in schema.names]
    if missing:
        raise ValueError(
            f"expected columns of family '{info.data['family']}' ({sorted(schema.names)}), "
            f"not {missing}"
        )


def _check_filter(v: dict[str, str], info: ValidationInfo) -> None:
    """Columns of a filter exist, are strings, and values are among their allowed ones."""
    _check_columns(list(v), info)
    schema = _family_schema(info)
    if schema is None:
        return
    for column, value in v.items():
        f = schema.field(column)
        if f.type != pa.string():
            raise ValueError(f"expected a string column to filter on, '{column}' is {f.type}")
        enum = (f.metadata or {}).get(b"enum")
        allowed = enum.decode().split(",") if enum else None
        if allowed is not None and value not in allowed:
            raise ValueError(f"expected values of '{column}' among {allowed}, not '{value}'")


class IndicatorDef(_Strict):
    """One vital-sign indicator.

    Fields are validated in the order declared, and each check sits on the key
    it is about (``family`` and ``aggregation`` come first, the rest is judged
    against them).
    """

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*\.[a-z0-9_.]+$")
    name_zh: str = Field(min_length=1)
    name_en: str = Field(min_length=1)
    sector: str = Field(min_length=1)
    unit: str = Field(min_length=1)
    family: Literal["reading", "heartbeat", "gate", "workorder"]
    aggregation: Aggregation
    field: str
    entity: Entity
    where: dict[str, str] = Field(default_factory=dict)
    window: Duration
    divide_by: str | None = None
    #: For ``ratio``: the rows counted above and below the line (column -> value).
    numerator: dict[str, str] = Field(default_factory=dict, validate_default=True)
    denominator: dict[str, str] = Field(default_factory=dict, validate_default=True)
    description: str = Field(min_length=1)

    @field_validator("aggregation")
    @classmethod
    def _lifecycle_reads_work_orders(cls, v: str, info: ValidationInfo) -> str:
        family = info.data.get("family")
        if v in LIFECYCLE and family is not None and family != "workorder":
            raise ValueError(
                f"expected family 'workorder' for the order-lifecycle measure '{v}', not '{family}'"
            )
        if v == "online_rate" and family is not None and family != "heartbeat":
            raise ValueError(f"expected family 'heartbeat' for 'online_rate', not '{family}'")
        return v

    @field_validator("field")
    @classmethod
    def _field_exists(cls, v: str, info: ValidationInfo) -> str:
        _check_columns([v], info)
        if info.data.get("aggregation") in LIFECYCLE and v != "order_id":
            raise ValueError("expected 'order_id' as the field of an order-lifecycle measure")
        return v

    @field_validator("entity")
    @classmethod
    def _entity_columns(cls, v: Entity, info: ValidationInfo) -> Entity:
        _check_columns(v.by, info)
        if info.data.get("aggregation") in LIFECYCLE:
            varying = [c for c in v.by if c not in _ORDER_INVARIANT]
            if varying:
                raise ValueError(
                    f"expected an order-lifecycle measure keyed by columns every status change of "
                    f"an order repeats ({list(_ORDER_INVARIANT)}), not {varying}"
                )
        return v

    @field_validator("where")
    @classmethod
    def _where_columns(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        _check_filter(v, info)
        if info.data.get("aggregation") in LIFECYCLE and "status" in v:
            raise ValueError(
                "expected no filter on 'status' for an order-lifecycle measure, "
                "which follows every status change"
            )
        return v

    @field_validator("window")
    @classmethod
    def _whole_seconds(cls, v: timedelta) -> timedelta:
        if v.total_seconds() < 1 or v.total_seconds() != int(v.total_seconds()):
            raise ValueError("expected a window of whole seconds, at least 1s")
        return v

    @field_validator("divide_by")
    @classmethod
    def _divide_by(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        _check_columns([v], info)
        aggregation = info.data.get("aggregation")
        if aggregation is not None and aggregation not in _VALUE_AGGREGATIONS:
            raise ValueError(
                f"expected divide_by only with {list(_VALUE_AGGREGATIONS)}, not '{aggregation}'"
            )
        return v

    @field_validator("numerator", "denominator")
    @classmethod
    def _ratio_filters(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        aggregation = info.data.get("aggregation")
        if aggregation != "ratio":
            if v:
                raise ValueError(
                    f"expected {info.field_name} only with 'ratio', not '{aggregation}'"
                )
            return v
        if not v:
            raise ValueError(
                f"expected a non-empty {info.field_name} filter (column: value) for a 'ratio'"
            )
        _check_filter(v, info)
        return v

    #: Set by the catalogue that holds the definition (see :attr:`window_offset_us`).
    _window_offset_us: int = PrivateAttr(default=0)

    def __setstate__(self, state: dict) -> None:
        """Unpickle; a definition pickled before windows had an offset (in a snapshot of an
        older version) had its windows aligned in UTC."""
        if state.get("__pydantic_private__") is None:
            state = {**state, "__pydantic_private__": {"_window_offset_us": 0}}
        super().__setstate__(state)

    @property
    def window_us(self) -> int:
        return int(self.window.total_seconds()) * 1_000_000

    @property
    def window_offset_us(self) -> int:
        """Where the windows start: at the instants ``t`` (epoch microseconds) where
        ``t + window_offset_us`` is a multiple of :attr:`window_us`. It is the UTC offset of
        the catalogue's ``timezone``, so a window of a day starts at local midnight (and a
        window that divides the offset, as it would in UTC: up to an hour in Beijing, but an
        hour's window starts at half past in Kolkata, at +05:30); 0 for a definition on its
        own.

        >>> cat = load_catalog()
        >>> cat["workorder.return_rate"].window, cat["workorder.return_rate"].window_offset_us
        (datetime.timedelta(days=1), 28800000000)
        """
        return self._window_offset_us


def _in_zone(d: IndicatorDef, offset_us: int) -> IndicatorDef:
    """A copy of ``d`` whose windows start at ``offset_us`` (see
    :attr:`IndicatorDef.window_offset_us`)."""
    copy = d.model_copy()
    copy._window_offset_us = offset_us
    return copy


def _us(td: timedelta) -> int:
    return int(td.total_seconds() * 1_000_000)


def _exactly(v: dict[str, timedelta], expected: tuple[str, ...], what: str) -> None:
    unknown = [k for k in v if k not in expected]
    missing = [k for k in expected if k not in v]
    if unknown or missing:
        raise ValueError(
            f"expected one entry per {what} {list(expected)}"
            + (f", not {unknown}" if unknown else "")
            + (f"; {missing} have none" if missing else "")
        )


def _outlasts(key: str, got: timedelta, what: str, longest: timedelta, why: str) -> None:
    """A horizon for letting go must be longer than what it lets go of."""
    if got <= longest:
        raise KeyedProblems(
            [((key,), f"got {got}, expected longer than the longest {what}: {why}")]
        )


class Devices(_Strict):
    """When a device counts as offline (see :mod:`indicators.liveness`).

    A device is offline once it has sent no heartbeat for longer than its
    allowance, ``missed_heartbeats`` times its type's expected interval.

    >>> Devices().allowance_us["camera"] // 1_000_000
    180
    """

    #: Expected heartbeat interval of every device type.
    heartbeat: dict[str, Duration] = Field(
        default_factory=lambda: dict.fromkeys(DEVICE_TYPES, timedelta(minutes=1)),
        validate_default=True,
    )
    missed_heartbeats: int = Field(default=3, ge=1, le=1000)
    #: A device silent this long is forgotten: it leaves the state and the online rates.
    forget_after: Duration = timedelta(days=7)

    @field_validator("heartbeat")
    @classmethod
    def _every_type(cls, v: dict[str, timedelta]) -> dict[str, timedelta]:
        _exactly(v, DEVICE_TYPES, "device type")
        return v

    @model_validator(mode="after")
    def _forget_after_offline(self) -> Devices:
        longest = max(self.heartbeat.values()) * self.missed_heartbeats
        _outlasts(
            "forget_after",
            self.forget_after,
            f"allowance {longest}",
            longest,
            "a device must go offline before it is forgotten",
        )
        return self

    @property
    def allowance_us(self) -> dict[str, int]:
        """Silence allowed before offline, per device type, in microseconds."""
        return {t: _us(every) * self.missed_heartbeats for t, every in self.heartbeat.items()}

    @property
    def forget_after_us(self) -> int:
        return _us(self.forget_after)


class WorkOrders(_Strict):
    """The "1510" dispatch deadlines, and when an order nobody closes is let go.

    >>> WorkOrders().deadline_us["small"] // 60_000_000
    30
    """

    #: Dispatch deadline of each 1510 class, counted from the report.
    deadlines: dict[str, Duration] = Field(
        default_factory=lambda: {
            "small": timedelta(minutes=30),
            "big": timedelta(days=1),
            "hard": timedelta(days=5),
            "thorny": timedelta(days=10),
        },
        validate_default=True,
    )
    #: An open order with no status change for this long leaves the state.
    expire_after: Duration = timedelta(days=30)

    @field_validator("deadlines")
    @classmethod
    def _every_class(cls, v: dict[str, timedelta]) -> dict[str, timedelta]:
        _exactly(v, EVENT_CLASSES, "1510 class")
        return v

    @model_validator(mode="after")
    def _expire_after_deadlines(self) -> WorkOrders:
        longest = max(self.deadlines.values())
        _outlasts(
            "expire_after",
            self.expire_after,
            f"deadline {longest}",
            longest,
            "an order must be overdue before it is let go",
        )
        return self

    @property
    def deadline_us(self) -> dict[str, int]:
        return {c: _us(td) for c, td in self.deadlines.items()}

    @property
    def expire_after_us(self) -> int:
        return _us(self.expire_after)


class _ModelBase(_Strict):
    """What every online model declares (see :mod:`thresholds.models`).

    A model's output is a derived indicator named ``id``: per entity and
    window of ``indicator``, a score in [0, 1], unit ``score``.
    """

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*\.[a-z0-9_.]+$")
    indicator: str = Field(min_length=1)
    description: str = Field(min_length=1)
    #: Windows a series is learned from before it is scored.
    grace: int = Field(default=10, ge=0, le=100_000)


class _Freezes(_ModelBase):
    #: While a score is at or above this, the series is not learned from, so a
    #: long anomaly does not become the baseline; 1 learns from every value.
    freeze_above: float = Field(default=0.99, gt=0.0, le=1.0)


class EwmZScore(_Freezes):
    """The default: exponentially weighted mean and variance, one z-score per value."""

    kind: Literal["ewm_zscore"]
    alpha: float = Field(default=0.1, gt=0.0, le=1.0)
    direction: Literal["above", "below", "both"] = "both"
    #: A floor under the standard deviation, in the indicator's unit.
    min_std: float = Field(default=0.0, ge=0.0)


class QuantileModel(_Freezes):
    """Rolling quantiles (river): how far past the ``q`` quantile a value lies."""

    kind: Literal["quantile"]
    #: Scores are e / (1 + e) for e spreads past the quantile: 0.5 is one spread.
    freeze_above: float = Field(default=0.5, gt=0.0, le=1.0)
    q: float = Field(default=0.95, gt=0.5, lt=1.0)
    window: int = Field(default=60, ge=10, le=100_000)
    direction: Literal["above", "below", "both"] = "both"
    min_spread: float = Field(default=0.0, ge=0.0)
    max_series: int = Field(default=1_000, ge=1)


class HalfSpaceTreesModel(_Freezes):
    """river's HalfSpaceTrees over ``indicator`` and ``features`` of one entity and window."""

    kind: Literal["half_space_trees"]
    features: list[str] = Field(min_length=1)
    n_trees: int = Field(default=10, ge=1, le=100)
    height: int = Field(default=6, ge=1, le=16)
    window_size: int = Field(default=50, ge=5, le=10_000)
    seed: int = 0
    max_series: int = Field(default=100, ge=1)


class AdwinModel(_ModelBase):
    """river's ADWIN drift detector: 1 when the series' mean shifted, fading by ``decay``."""

    kind: Literal["adwin"]
    delta: float = Field(default=0.002, gt=0.0, lt=1.0)
    decay: float = Field(default=0.8, ge=0.0, lt=1.0)
    max_series: int = Field(default=1_000, ge=1)


#: One online model; ``kind`` picks its parameters.
ModelDef = Annotated[
    EwmZScore | QuantileModel | HalfSpaceTreesModel | AdwinModel, Field(discriminator="kind")
]


class Catalog(_Strict):
    """All indicators, by id, and the online models derived from them."""

    #: Where the indicators' windows start (see :attr:`IndicatorDef.window_offset_us`).
    timezone: str = "UTC"
    indicators: list[IndicatorDef] = Field(min_length=1)
    models: list[ModelDef] = Field(default_factory=list)
    devices: Devices = Field(default_factory=Devices)
    workorders: WorkOrders = Field(default_factory=WorkOrders)

    @field_validator("timezone")
    @classmethod
    def _one_offset(cls, v: str) -> str:
        fixed_offset(v)
        return v

    @field_validator("indicators")
    @classmethod
    def _windows_in_zone(cls, v: list[IndicatorDef], info: ValidationInfo) -> list[IndicatorDef]:
        """Each definition with the catalogue's window offset: a copy where it had another (a
        definition taken from a catalogue of another zone keeps that one's)."""
        zone = info.data.get("timezone")
        if zone is None:  # not a valid zone: reported at its own key
            return v
        offset = _us(fixed_offset(zone))
        return [d if d.window_offset_us == offset else _in_zone(d, offset) for d in v]

    @property
    def window_offset_us(self) -> int:
        """The UTC offset of ``timezone``, in microseconds: where every window starts."""
        return _us(fixed_offset(self.timezone))

    def problems(self, context: dict) -> list[tuple[tuple, str]]:
        """Checks across entries, each reported at the entry that breaks it."""
        found = repeated_ids("indicators", [d.id for d in self.indicators])
        found += repeated_ids("models", [m.id for m in self.models], "model")
        known = {d.id: d for d in self.indicators}
        unknown = "expected an indicator of the catalogue"
        for i, m in enumerate(self.models):
            if m.id in known:
                found.append((("models", i, "id"), f"got '{m.id}', expected an id of no indicator"))
            source = known.get(m.indicator)
            if source is None:
                found.append((("models", i, "indicator"), f"got '{m.indicator}', {unknown}"))
                continue
            for j, f in enumerate(getattr(m, "features", [])):
                other = known.get(f)
                if other is None:
                    found.append((("models", i, "features", j), f"got '{f}', {unknown}"))
                elif (other.entity.type, other.window) != (source.entity.type, source.window):
                    found.append(
                        (
                            ("models", i, "features", j),
                            f"got '{f}', expected an indicator per {source.entity.type} over "
                            f"{source.window.total_seconds():g}s like '{source.id}'",
                        )
                    )
        return found

    def model(self, model_id: str) -> EwmZScore | QuantileModel | HalfSpaceTreesModel | AdwinModel:
        for m in self.models:
            if m.id == model_id:
                return m
        raise KeyError(model_id)

    def __getitem__(self, indicator_id: str) -> IndicatorDef:
        for d in self.indicators:
            if d.id == indicator_id:
                return d
        raise KeyError(indicator_id)

    @property
    def ids(self) -> list[str]:
        """Every indicator id, the models' derived indicators included."""
        return [d.id for d in self.indicators] + [m.id for m in self.models]


def load_catalog(path: Path | str = DEFAULT_CATALOG) -> Catalog:
    """Load and check an indicator catalogue; :class:`ConfigError` lists every problem."""
    return load_model(path, Catalog)


__all__ += [
    "AdwinModel",
    "ConfigError",
    "Entity",
    "EwmZScore",
    "HalfSpaceTreesModel",
    "QuantileModel",
]
