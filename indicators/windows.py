"""Keyed event-time window state: merges partials, closes windows, yields values.

A :class:`WindowStore` holds the open windows of every indicator for the
entities routed to it. Partials (from :mod:`indicators.aggregate`) are added
as they come; each source partition reports its watermark (its latest event
time minus the allowed lateness); a window closes when its end is at or
before the lowest watermark of all expected partitions, and its value is
final. ``flush`` closes everything (end of input).

Late and out-of-order events: anything within the allowed lateness is merged
into its window; what comes later is rejected before it gets here (the
ingest step makes it a ``late_event`` dead letter), so a closed window never
changes.

Population indicators (``online_rate``, and the order-lifecycle counts
``overdue`` and ``open_orders``) emit a value for every entity they know at
every window end, even one with no input in that window: a grid whose
devices all went silent reads 0 %, not nothing. The other lifecycle measures
(:mod:`indicators.lifecycle`) share their in-order closing but emit only
for entities with orders to measure.

>>> import polars as pl
>>> from indicators.definitions import load_catalog
>>> cat = load_catalog()
>>> store = WindowStore(cat, partitions=["p0"])
>>> w = 60_000_000
>>> store.add({"fire.temperature": pl.DataFrame({"entity_id": ["f1"], "window_start": [0],
...     "n": [2], "sum": [50.0], "min": [20.0], "max": [30.0]})})
>>> store.advance("p0", w - 1).height   # the window [0, 60 s) is still open
0
>>> store.advance("p0", w).select("indicator_id", "entity_id", "value", "samples").rows()
[('fire.temperature', 'f1', 30.0, 2)]
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

from indicators.aggregate import COLUMN_KINDS, COLUMNS, ENGINE, kind
from indicators.definitions import Catalog, IndicatorDef
from indicators.lifecycle import OrderLifecycle
from indicators.population import OnlineRate, Population
from indicators.watermark import Watermarks
from schemas.families import INDICATOR_VALUES, polars_schema

__all__ = ["VALUES_SCHEMA", "WindowStore"]

#: Indicator values as the store emits them (the evaluator adds ``level``).
VALUES_SCHEMA = polars_schema(INDICATOR_VALUES, drop=("level",))

_COMPACT_AFTER = 16  # partial frames the column state holds before they are merged


def _catalog_frame(catalog: Catalog) -> pl.DataFrame:
    """What indicator values repeat from their definition, one row per indicator."""
    return pl.DataFrame(
        {
            "indicator_id": [d.id for d in catalog.indicators],
            "_pos": list(range(len(catalog.indicators))),
            "sector": [d.sector for d in catalog.indicators],
            "entity_type": [d.entity.type for d in catalog.indicators],
            "window_us": [d.window_us for d in catalog.indicators],
            "unit": [d.unit for d in catalog.indicators],
        }
    )


def _values(about: pl.DataFrame, closed: list[pl.DataFrame]) -> pl.DataFrame:
    """Shape finished (indicator_id, entity_id, window_start, value, samples) rows as values.

    The rows come out in the catalogue's order of indicators (each
    indicator's rows in the order they were closed); ``about`` is the
    :func:`_catalog_frame` their definitions come from.
    """
    if not closed:
        return _empty()
    rows = pl.concat(closed) if len(closed) > 1 else closed[0]
    joined = rows.join(about, on="indicator_id").sort("_pos", maintain_order=True)
    return joined.select(
        "indicator_id",
        "sector",
        "entity_type",
        "entity_id",
        pl.from_epoch("window_start", "us").dt.replace_time_zone("UTC").alias("window_start"),
        pl.from_epoch(pl.col("window_start") + pl.col("window_us"), "us")
        .dt.replace_time_zone("UTC")
        .alias("window_end"),
        "value",
        "samples",
        "unit",
    )


#: How each partial column merges across batches.
_MERGE = {
    "n": pl.col("n").sum(),
    "sum": pl.col("sum").sum(),
    "min": pl.col("min").min(),
    "max": pl.col("max").max(),
    "num": pl.col("num").sum(),
    "den": pl.col("den").sum(),
    "values": pl.col("values").list.explode(keep_nulls=False, empty_as_null=False),
}

#: The finished value of each column aggregation, and the partial columns it needs.
_FINISH = {
    "mean": (pl.col("sum") / pl.col("n"), ("sum", "n")),
    "max": (pl.col("max"), ("max",)),
    "min": (pl.col("min"), ("min",)),
    "sum": (pl.col("sum"), ("sum",)),
    "count": (pl.col("n").cast(pl.Float64), ("n",)),
    "p95": (
        pl.col("values").list.eval(pl.element().quantile(0.95, "linear")).list.first(),
        ("values",),
    ),
    "ratio": (pl.col("num") / pl.col("den"), ("num", "den")),
}

_KEYS = ("indicator_id", "entity_id", "window_start", "_end")


class _Columns:
    """mean / max / min / sum / count / p95 over one input column, and ratio of two counts.

    One state for every such indicator of the catalogue: their partials are
    kept in one frame (``indicator_id``, ``entity_id``, ``window_start``,
    ``_end`` = window end, and the partial columns, null where an
    aggregation has none), so a batch is merged, closed and finished by a
    few queries, not by a few per indicator.

    A ``ratio`` window whose denominator counted no row emits nothing for that
    entity: a rate of nothing is unknown, not 0. Its ``samples`` is the
    denominator's count; every other aggregation's is ``n``.
    """

    def __init__(self, defs: list[IndicatorDef]) -> None:
        self.defs = defs
        self._window = {d.id: d.window_us for d in defs}
        self._aggregations = {d.id: d.aggregation for d in defs}
        self._parts: list[pl.DataFrame] = []
        self._first: int | None = None  # earliest end of an open window

    def tagged(self, parts: dict[str, pl.DataFrame]) -> pl.DataFrame | None:
        """Each indicator's partials (``entity_id``, ``window_start``, its columns) as one
        frame, the form :meth:`add` takes (see :data:`indicators.aggregate.COLUMNS`)."""
        frames = [
            p.lazy().with_columns(
                indicator_id=pl.lit(i), _end=pl.col("window_start") + self._window[i]
            )
            for i, p in parts.items()
        ]
        return pl.concat(frames, how="diagonal_relaxed").collect(engine=ENGINE) if frames else None

    def add(self, part: pl.DataFrame) -> None:
        """Add partials of any column indicators, tagged with ``indicator_id`` and ``_end``."""
        self._parts.append(part)
        first = part["_end"].min()
        if self._first is None or first < self._first:
            self._first = first
        if len(self._parts) >= _COMPACT_AFTER:
            self._parts = [self._merged()]

    def _merged(self) -> pl.DataFrame:
        return self._merging().collect(engine=ENGINE)

    def _merging(self) -> pl.LazyFrame:
        frames = [p.lazy() for p in self._parts]
        columns = {c for p in self._parts for c in p.columns}
        aggs = [merge for c, merge in _MERGE.items() if c in columns]
        return pl.concat(frames, how="diagonal_relaxed").group_by(_KEYS).agg(aggs)

    def close(self, until_us: int | None) -> pl.DataFrame | None:
        """Finish the windows ending at or before ``until_us`` (all of them on None).

        Rows: ``indicator_id``, ``entity_id``, ``window_start``, ``value``, ``samples``.
        One query merges the partials, finishes the closed windows and keeps the rest.
        """
        if not self._parts:
            return None
        if until_us is not None and self._first > until_us:
            return None  # no window ends yet: skip the merge
        columns = {c for p in self._parts for c in p.columns}
        merged = self._merging()
        if until_us is None:
            done, rest = merged, None
        else:
            done = merged.filter(pl.col("_end") <= until_us)
            rest = merged.filter(pl.col("_end") > until_us)
        finished = done.filter(self._keep(columns)).select(
            "indicator_id",
            "entity_id",
            "window_start",
            self._value(columns).alias("value"),
            self._samples(columns).cast(pl.Int64).alias("samples"),
        )
        out, *kept = pl.collect_all(
            [finished, *([rest] if rest is not None else [])], engine=ENGINE
        )
        left = kept[0] if kept and kept[0].height else None
        self._parts = [left] if left is not None else []
        self._first = left["_end"].min() if left is not None else None
        return out if out.height else None

    def _aggregation(self) -> pl.Expr:
        return pl.col("indicator_id").replace_strict(self._aggregations, return_dtype=pl.String)

    def _value(self, columns: set[str]) -> pl.Expr:
        """The finished value of each row's aggregation, from the partial ``columns``."""
        agg = self._aggregation()
        value: pl.Expr = pl.lit(None, dtype=pl.Float64)
        for name, (expr, needs) in _FINISH.items():
            if all(c in columns for c in needs):
                value = pl.when(agg == name).then(expr.cast(pl.Float64)).otherwise(value)
        return value

    def _samples(self, columns: set[str]) -> pl.Expr:
        if "n" not in columns:  # only ratios
            return pl.col("den")
        if "den" not in columns:
            return pl.col("n")
        return pl.when(self._aggregation() == "ratio").then(pl.col("den")).otherwise(pl.col("n"))

    def _keep(self, columns: set[str]) -> pl.Expr:
        """A ratio whose denominator counted nothing is unknown: no row."""
        if "den" not in columns:
            return pl.lit(True)
        return (self._aggregation() != "ratio") | (pl.col("den") > 0)


def _population(d: IndicatorDef, catalog: Catalog) -> Population:
    if d.aggregation == "online_rate":
        return OnlineRate(d, catalog.devices)
    return OrderLifecycle(d, catalog.workorders)


def _is_population(d: IndicatorDef) -> bool:
    return kind(d) not in COLUMN_KINDS


class WindowStore:
    """Open windows of every indicator, closed by the partitions' watermarks."""

    def __init__(self, catalog: Catalog, partitions: Iterable[str]) -> None:
        self.catalog = catalog
        self._marks = Watermarks(list(partitions))
        self._columns = _Columns([d for d in catalog.indicators if not _is_population(d)])
        self._population = {
            d.id: _population(d, catalog) for d in catalog.indicators if _is_population(d)
        }
        self._about = _catalog_frame(catalog)
        self._max_event_us: int | None = None

    @property
    def partitions(self) -> list[str]:
        return self._marks.partitions

    @property
    def watermark_us(self) -> int | None:
        """The lowest watermark of all expected partitions (None until each has one)."""
        return self._marks.low_us

    def add(self, partials: dict[str, pl.DataFrame]) -> None:
        """Add a batch's partials: per indicator, or (see
        :func:`indicators.aggregate.partials`) all column indicators' under ``COLUMNS``."""
        columns = {}
        for indicator_id, part in partials.items():
            if not part.height:
                continue
            if indicator_id == COLUMNS:
                self._columns.add(part)
            elif (state := self._population.get(indicator_id)) is not None:
                state.add(part)
            else:
                columns[indicator_id] = part
        if (tagged := self._columns.tagged(columns)) is not None:
            self._columns.add(tagged)

    def advance(
        self,
        partition: str,
        watermark_us: int | None,
        max_event_us: int | None = None,
        ended: bool = False,
    ) -> pl.DataFrame:
        """Record a partition's watermark; return the values of windows now closed.

        ``ended``: the partition has said its last word (see :class:`Watermarks`).
        """
        return self.advance_all([(partition, watermark_us, max_event_us, ended)])

    def advance_all(
        self, marks: Iterable[tuple[str, int | None, int | None, bool]]
    ) -> pl.DataFrame:
        """:meth:`advance` for several ``(partition, watermark_us, max_event_us, ended)`` at
        once: one close for all of them, with the same values as one close after each.

        A window the first watermarks would close gets nothing from a later batch of
        another partition: its events are behind that partition's own watermark,
        which the low watermark had already passed, so they were set aside as late.
        """
        moved = False
        for partition, watermark_us, max_event_us, ended in marks:
            if max_event_us is not None and (
                self._max_event_us is None or max_event_us > self._max_event_us
            ):
                self._max_event_us = max_event_us
            if watermark_us is not None or ended:
                self._marks.update(partition, watermark_us, ended)
                moved = True
        until = self._marks.low_us if moved else None
        return self._close(until, until) if until is not None else _empty()

    def flush(self) -> pl.DataFrame:
        """Close every open window at the end of input.

        Column indicators close all their windows; population indicators close
        the windows that the last event time completes (see ``Population``).
        """
        complete = None if self._max_event_us is None else self._max_event_us + 1_000_000
        return self._close(None, complete)

    def _close(self, until_us: int | None, population_until_us: int | None) -> pl.DataFrame:
        closed = []
        if (f := self._columns.close(until_us)) is not None:
            closed.append(f)
        for indicator_id, state in self._population.items():
            if (f := state.close(population_until_us)) is not None:
                closed.append(f.select(pl.lit(indicator_id).alias("indicator_id"), pl.all()))
        return _values(self._about, closed)


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema=VALUES_SCHEMA)
