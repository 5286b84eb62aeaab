"""Five-colour rating (五色评价) of departments: timeliness and quality over a period.

Every ``period`` (default 14 days) from ``anchor``, each department that
handled work orders gets a **score**: the weighted sum of its timeliness
(the samples-weighted mean of the timeliness indicator's values in the
period, by default the on-time dispatch rate) and its quality (the same for
the quality indicator, by default the satisfaction rate). The score's band
gives a colour, best to worst (green, blue, yellow, orange, red by default);
a department with fewer than ``min_orders`` measured orders in either
dimension is ``unrated``. :func:`rating_sql` turns the configuration into the
query of the DuckDB view ``department_rating``.

Periods start at 00:00 on ``anchor`` in ``timezone`` (by default the
catalogue's: ``Asia/Shanghai``), and every ``period`` after it. The indicator windows
start at midnight of the catalogue's ``timezone`` (a daily window runs 00:00 to
24:00 Beijing time), and the two must agree, so every window lies wholly inside
one period: periods cut at another midnight would split each daily window in
two, and loading the rating against the catalogue says so. A window belongs to
the period its start falls in; windows before ``anchor`` are not rated.

>>> from indicators.definitions import load_catalog
>>> rating = load_rating(catalog=load_catalog())
>>> for part in rating.summary().split("; "):
...     print(part)
every 14d from 2026-01-05 00:00 Asia/Shanghai
score = 0.5 x workorder.on_time_rate + 0.5 x service.satisfaction_rate
unrated below 10 orders
green >= 0.95, blue >= 0.9, yellow >= 0.8, orange >= 0.7, red below
>>> rating.colour_of(0.93), rating.colour_of(0.7), rating.colour_of(0.2), rating.colour_of(None)
('blue', 'orange', 'red', 'unrated')
>>> start, end = rating.period_of(datetime(2026, 1, 19, 7, tzinfo=UTC))
>>> print(start, end)
2026-01-18 16:00:00+00:00 2026-02-01 16:00:00+00:00

The view's query, over a two-row stand-in for ``indicator_values``: 18 of 20
orders dispatched on time (0.9) and all 10 closed orders satisfied (1.0)
score 0.5 x 0.9 + 0.5 x 1.0 = 0.95, green:

>>> import duckdb
>>> con = duckdb.connect()
>>> _ = con.execute(
...     "CREATE TABLE indicator_values AS FROM (VALUES "
...     "('workorder.on_time_rate', 'roads', TIMESTAMPTZ '2026-01-06 09:00+00', 0.9, 20), "
...     "('service.satisfaction_rate', 'roads', TIMESTAMPTZ '2026-01-06 00:00+00', 1.0, 10)"
...     ") t(indicator_id, entity_id, window_start, value, samples)")
>>> con.sql(f"SELECT department, timeliness_orders, quality_orders, score, colour, rank "
...         f"FROM ({rating_sql(rating)})").fetchall()
[('roads', 20, 10, 0.95, 'green', 1)]
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cityvitals.yamlconf import Duration, KeyedProblems, load_model
from indicators.definitions import fixed_offset

__all__ = [
    "COLUMNS",
    "DEFAULT_RATING",
    "RATING_VIEW",
    "UNRATED",
    "Colour",
    "Dimension",
    "Rating",
    "load_rating",
    "rating_sql",
]

DEFAULT_RATING = Path(__file__).with_name("rating.yaml")

#: The DuckDB view of the rating, next to the table views of the lake.
RATING_VIEW = "department_rating"

#: The colour of a department with too few measured orders to be rated.
UNRATED = "unrated"

#: The columns of the view, in order.
COLUMNS = (
    "period_start",
    "period_end",
    "department",
    "timeliness",
    "timeliness_orders",
    "quality",
    "quality_orders",
    "score",
    "colour",
    "rank",
)

#: Scores are rounded to this many decimals before they are banded and ranked, so that a
#: department exactly at a bound (19 of 20 orders on time: 0.95) is not lost to rounding.
SCORE_DECIMALS = 6

#: A day in microseconds: a window that divides it starts every day at the same time.
_DAY_US = 86_400_000_000
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_DEFAULT_COLOURS = (
    ("green", 0.95),
    ("blue", 0.90),
    ("yellow", 0.80),
    ("orange", 0.70),
    ("red", 0.0),
)
_WEIGHT_SUM_TOLERANCE = 1e-9


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Dimension(_Strict):
    """One dimension of the score: an indicator keyed by department, and its weight."""

    indicator: str = Field(min_length=1)
    weight: float

    @field_validator("indicator")
    @classmethod
    def _by_department(cls, v: str, info: ValidationInfo) -> str:
        catalog = (info.context or {}).get("catalog")
        if catalog is None:
            return v
        if v not in [d.id for d in catalog.indicators]:  # a model's score is no rate
            raise ValueError(f"expected an indicator of the catalogue, '{v}' is not one")
        entity = catalog[v].entity.type
        if entity != "department":
            raise ValueError(f"expected an indicator keyed by department, '{v}' is by {entity}")
        return v

    @field_validator("weight")
    @classmethod
    def _positive(cls, v: float) -> float:
        if not (math.isfinite(v) and v > 0):
            raise ValueError("expected a positive weight (the two weights sum to 1)")
        return v


class Colour(_Strict):
    """One band: scores at or above ``min_score`` (and below the better colour's) get ``colour``."""

    colour: str = Field(min_length=1, max_length=32)
    min_score: float

    @field_validator("min_score")
    @classmethod
    def _unit(cls, v: float) -> float:
        if not (math.isfinite(v) and 0 <= v <= 1):
            raise ValueError("expected a score from 0 to 1")
        return v


def _anchor(v: Any) -> date:
    """A date (not a datetime) that is a Monday; ISO text is accepted."""
    if isinstance(v, datetime):
        raise KeyedProblems(
            [((), f"got {v.isoformat()}, expected a date without a time of day such as 2026-01-05")]
        )
    if isinstance(v, str):
        try:
            v = date.fromisoformat(v.strip())
        except ValueError:
            raise ValueError("expected a date such as 2026-01-05") from None
    if not isinstance(v, date):
        raise ValueError("expected a date such as 2026-01-05")
    if v.weekday() != 0:
        raise KeyedProblems(
            [((), f"got {v.isoformat()} (a {_DAYS[v.weekday()]}), expected a Monday")]
        )
    return v


def _default_dimension(indicator: str) -> dict:
    return {"indicator": indicator, "weight": 0.5}


class Rating(_Strict):
    """The rating configuration (``thresholds/rating.yaml``)."""

    period: Duration = timedelta(days=14)
    anchor: date = date(2026, 1, 5)
    #: Periods start at 00:00 on ``anchor`` here; by default the catalogue's ``timezone``
    #: (UTC when validated without a catalogue).
    timezone: str = "UTC"
    timeliness: Dimension = Field(
        default_factory=lambda: _default_dimension("workorder.on_time_rate"),
        validate_default=True,
    )
    quality: Dimension = Field(
        default_factory=lambda: _default_dimension("service.satisfaction_rate"),
        validate_default=True,
    )
    min_orders: int = Field(default=10, ge=1)
    colours: list[Colour] = Field(
        default_factory=lambda: [{"colour": c, "min_score": s} for c, s in _DEFAULT_COLOURS],
        validate_default=True,
    )

    @field_validator("anchor", mode="before")
    @classmethod
    def _monday(cls, v: Any) -> date:
        return _anchor(v)

    @field_validator("timezone")
    @classmethod
    def _one_offset(cls, v: str) -> str:
        fixed_offset(v)
        return v

    @model_validator(mode="before")
    @classmethod
    def _catalogue_zone(cls, data: Any, info: ValidationInfo) -> Any:
        catalog = (info.context or {}).get("catalog")
        if isinstance(data, dict) and "timezone" not in data and catalog is not None:
            return {**data, "timezone": catalog.timezone}
        return data

    @field_validator("colours")
    @classmethod
    def _five_bands(cls, v: list[Colour]) -> list[Colour]:
        problems: list[tuple[tuple, str]] = []
        if len(v) != 5:
            problems.append(((), f"got {len(v)} colours, expected exactly 5, best to worst"))
        first: dict[str, int] = {}
        for i, c in enumerate(v):
            if c.colour == UNRATED:
                problems.append(
                    (
                        (i, "colour"),
                        f"got '{UNRATED}', expected another name: '{UNRATED}' is given to "
                        "departments with too few orders",
                    )
                )
            elif c.colour in first:
                problems.append(
                    (
                        (i, "colour"),
                        f"got '{c.colour}', expected a unique colour (colour {first[c.colour]} "
                        "has it)",
                    )
                )
            first.setdefault(c.colour, i)
            if i and c.min_score >= v[i - 1].min_score:
                problems.append(
                    (
                        (i, "min_score"),
                        f"got {c.min_score:g}, expected less than {v[i - 1].min_score:g} of "
                        f"'{v[i - 1].colour}' (bounds fall strictly from best to worst)",
                    )
                )
        if v and v[-1].min_score != 0:
            problems.append(
                (
                    (len(v) - 1, "min_score"),
                    f"got {v[-1].min_score:g}, expected 0 for the last colour, so that every "
                    "score gets one",
                )
            )
        if problems:
            raise KeyedProblems(problems)
        return v

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Rating:
        problems: list[tuple[tuple, str]] = []
        total = self.timeliness.weight + self.quality.weight
        if abs(total - 1) > _WEIGHT_SUM_TOLERANCE:
            problems.append(
                (
                    ("quality", "weight"),
                    f"got {self.quality.weight:g}, expected the weights to sum to 1 "
                    f"(timeliness {self.timeliness.weight:g} + quality {self.quality.weight:g} "
                    f"= {total:g})",
                )
            )
        catalog = (info.context or {}).get("catalog")
        if catalog is not None:
            problems.extend(self._window_problems(catalog))
        if problems:
            raise KeyedProblems(problems)
        return self

    def _window_problems(self, catalog) -> list[tuple[tuple, str]]:
        """Each indicator window must lie inside one period: periods cut no window."""
        problems = []
        start = self.start_us
        for name in ("timeliness", "quality"):
            d = catalog[getattr(self, name).indicator]
            window = d.window_us
            if _DAY_US % window == 0 and (start + d.window_offset_us) % window:
                problems.append(
                    (
                        ("timezone",),
                        f"got '{self.timezone}', expected the catalogue's '{catalog.timezone}' "
                        f"(or another with its UTC offset): periods from 00:00 {self.timezone} "
                        f"would cut the {_show(d.window)} windows of {d.id} ({name}), which "
                        f"start at 00:00 {catalog.timezone}",
                    )
                )
                continue
            if self.period_us % window:
                problems.append(
                    (
                        ("period",),
                        f"got {_show(self.period)}, expected a multiple of the "
                        f"{_show(d.window)} windows of {d.id} ({name})",
                    )
                )
            if (start + d.window_offset_us) % window:
                problems.append(
                    (
                        ("anchor",),
                        f"got {self.anchor.isoformat()}, expected a date on which a "
                        f"{_show(d.window)} window of {d.id} ({name}) starts",
                    )
                )
        return problems

    @property
    def start(self) -> datetime:
        """When the first period starts: 00:00 on ``anchor`` in ``timezone`` (in UTC)."""
        midnight = datetime(self.anchor.year, self.anchor.month, self.anchor.day, tzinfo=UTC)
        return midnight - fixed_offset(self.timezone)

    @property
    def start_us(self) -> int:
        return (self.start - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)

    @property
    def period_us(self) -> int:
        return self.period // timedelta(microseconds=1)

    def period_of(self, ts: datetime) -> tuple[datetime, datetime] | None:
        """``(start, end)`` of the period a window starting at ``ts`` belongs to."""
        if ts.tzinfo is None:
            raise ValueError(f"expected a timezone-aware datetime, got {ts!r}")
        if ts < self.start:
            return None
        begin = self.start + (ts - self.start) // self.period * self.period
        return begin, begin + self.period

    def colour_of(self, score: float | None) -> str:
        """The colour of a score; ``unrated`` for none."""
        if score is None:
            return UNRATED
        for c in self.colours[:-1]:
            if score >= c.min_score:
                return c.colour
        return self.colours[-1].colour

    def summary(self) -> str:
        """One line saying how departments are rated."""
        bands = [f"{c.colour} >= {c.min_score:g}" for c in self.colours[:-1]]
        bands.append(f"{self.colours[-1].colour} below")
        return (
            f"every {_show(self.period)} from {self.anchor.isoformat()} 00:00 {self.timezone}; "
            f"score = {self.timeliness.weight:g} x {self.timeliness.indicator} + "
            f"{self.quality.weight:g} x {self.quality.indicator}; "
            f"unrated below {self.min_orders} orders; {', '.join(bands)}"
        )


def _show(span: timedelta) -> str:
    """A duration as the config writes it: ``14d``, ``36h``, ``90m``, ``45s``."""
    us = span // timedelta(microseconds=1)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if us % (size * 1_000_000) == 0:
            return f"{us // (size * 1_000_000)}{unit}"
    return f"{us / 1000:g}ms"


def load_rating(path: Path | str = DEFAULT_RATING, catalog=None) -> Rating:
    """Load the rating configuration; with a catalogue, also check its indicators.

    Raises :class:`cityvitals.yamlconf.ConfigError` listing every problem
    with its file, line and key.
    """
    context = {"catalog": catalog} if catalog is not None else None
    return load_model(path, Rating, context=context)


def _text(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def _number(value: float) -> str:
    """A SQL DOUBLE literal (a bare 0.95 would be a DECIMAL)."""
    return f"CAST({float(value)!r} AS DOUBLE)"


def rating_sql(rating: Rating, source: str = "indicator_values") -> str:
    """The SELECT of the ``department_rating`` view over the ``source`` view.

    One row per period and department with values in it: ``period_start``,
    ``period_end`` (timestamptz), ``department``, ``timeliness`` and
    ``timeliness_orders``, ``quality`` and ``quality_orders``, ``score``
    (null when unrated), ``colour`` (``unrated`` when either dimension
    measured fewer than ``min_orders`` orders) and ``rank`` (1 is best; equal
    scores share a rank; null when unrated). Windows with a null or
    non-finite value or no samples are left out.
    """
    start, period, least = rating.start_us, rating.period_us, rating.min_orders
    t, q = rating.timeliness, rating.quality
    bands = "\n".join(
        f"            WHEN score >= {_number(c.min_score)} THEN {_text(c.colour)}"
        for c in rating.colours[:-1]
    )
    return f"""
WITH measured AS (
    SELECT 'timeliness' AS dimension, entity_id AS department, window_start, value, samples
    FROM {source} WHERE indicator_id = {_text(t.indicator)}
    UNION ALL
    SELECT 'quality' AS dimension, entity_id AS department, window_start, value, samples
    FROM {source} WHERE indicator_id = {_text(q.indicator)}
), in_period AS (
    SELECT dimension, department, value, samples,
        (epoch_us(window_start) - {start}) // {period} AS n
    FROM measured
    WHERE epoch_us(window_start) >= {start}
        AND value IS NOT NULL AND isfinite(value) AND samples > 0
), by_department AS (
    SELECT n, department,
        sum(value * samples) FILTER (WHERE dimension = 'timeliness')
            / sum(samples) FILTER (WHERE dimension = 'timeliness') AS timeliness,
        CAST(coalesce(sum(samples) FILTER (WHERE dimension = 'timeliness'), 0) AS BIGINT)
            AS timeliness_orders,
        sum(value * samples) FILTER (WHERE dimension = 'quality')
            / sum(samples) FILTER (WHERE dimension = 'quality') AS quality,
        CAST(coalesce(sum(samples) FILTER (WHERE dimension = 'quality'), 0) AS BIGINT)
            AS quality_orders
    FROM in_period
    GROUP BY n, department
), scored AS (
    SELECT *,
        CASE WHEN timeliness_orders >= {least} AND quality_orders >= {least}
            THEN round({_number(t.weight)} * timeliness + {_number(q.weight)} * quality,
                       {SCORE_DECIMALS})
        END AS score
    FROM by_department
)
SELECT
    make_timestamptz({start} + n * {period}) AS period_start,
    make_timestamptz({start} + (n + 1) * {period}) AS period_end,
    department,
    timeliness,
    timeliness_orders,
    quality,
    quality_orders,
    score,
    CASE
        WHEN score IS NULL THEN {_text(UNRATED)}
{bands}
        ELSE {_text(rating.colours[-1].colour)}
    END AS colour,
    CASE WHEN score IS NOT NULL
        THEN rank() OVER (PARTITION BY n ORDER BY score DESC NULLS LAST)
    END AS "rank"
FROM scored
ORDER BY period_start, "rank" NULLS LAST, department
""".strip()
