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

from indicators.definitions import LIFECYCLE, Catalog, IndicatorDef
from indicators.lifecycle import OrderLifecycle
from indicators.population import OnlineRate, Population
from indicators.watermark import Watermarks
from schemas.families import INDICATOR_VALUES, polars_schema

__all__ = ["VALUES_SCHEMA", "WindowStore"]

#: Indicator values as the store emits them (the evaluator adds ``level``).
VALUES_SCHEMA = polars_schema(INDICATOR_VALUES, drop=("level",))

_COMPACT_AFTER = 16  # partial frames per indicator before they are merged


def _catalog_frame(catalog: Catalog) -> pl.DataFrame:
    """What indicator values repeat from their definition, one row per indicator."""
    return pl.DataFrame(
        {
            "indicator_id": [d.id for d in catalog.indicators],
            "sector": [d.sector for d in catalog.indicators],
            "entity_type": [d.entity.type for d in catalog.indicators],
            "window_us": [d.window_us for d in catalog.indicators],
            "unit": [d.unit for d in catalog.indicators],
        }
    )


def _values(about: pl.DataFrame, closed: list[tuple[str, pl.DataFrame]]) -> pl.DataFrame:
    """Shape finished (entity_id, window_start, value, samples) rows as indicator values.

    ``closed`` holds each indicator's rows, in the order they were closed;
    ``about`` is the :func:`_catalog_frame` their definitions come from.
    """
    if not closed:
        return _empty()
    rows = pl.concat([f for _, f in closed])  # every state closes into RAW_SCHEMA
    ids = pl.Series("indicator_id", [i for i, f in closed for _ in range(f.height)])
    joined = rows.with_columns(ids).join(about, on="indicator_id", maintain_order="left")
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

#: The finished value, and the samples it rests on, of each column aggregation.
_FINISH = {
    "mean": (pl.col("sum") / pl.col("n"), pl.col("n")),
    "max": (pl.col("max"), pl.col("n")),
    "min": (pl.col("min"), pl.col("n")),
    "sum": (pl.col("sum"), pl.col("n")),
    "count": (pl.col("n").cast(pl.Float64), pl.col("n")),
    "p95": (
        pl.col("values").list.eval(pl.element().quantile(0.95, "linear")).list.first(),
        pl.col("n"),
    ),
    "ratio": (pl.col("num") / pl.col("den"), pl.col("den")),
}


class _Columns:
    """mean / max / min / sum / count / p95 over one input column, and ratio of two counts.

    A ``ratio`` window whose denominator counted no row emits nothing for that
    entity: a rate of nothing is unknown, not 0. Its ``samples`` is the
    denominator's count.
    """

    def __init__(self, d: IndicatorDef) -> None:
        self.d = d
        self._parts: list[pl.DataFrame] = []
        self._first: int | None = None  # earliest open window start

    def add(self, part: pl.DataFrame) -> None:
        self._parts.append(part)
        first = part["window_start"].min()
        if self._first is None or first < self._first:
            self._first = first
        if len(self._parts) >= _COMPACT_AFTER:
            self._parts = [self._merged()]

    def _merged(self) -> pl.DataFrame:
        df = pl.concat(self._parts, how="vertical_relaxed")
        aggs = [_MERGE[c] for c in df.columns if c in _MERGE]
        return df.group_by("entity_id", "window_start").agg(aggs)

    def close(self, until_us: int | None) -> pl.DataFrame | None:
        """Finish the windows ending at or before ``until_us`` (all of them on None)."""
        if not self._parts:
            return None
        if until_us is not None and self._first + self.d.window_us > until_us:
            return None  # no window ends yet: skip the merge
        df = self._merged()
        done_mask = (
            pl.lit(True)
            if until_us is None
            else pl.col("window_start") + self.d.window_us <= until_us
        )
        done = df.filter(done_mask)
        rest = df.filter(~done_mask)
        self._parts = [rest] if rest.height else []
        self._first = rest["window_start"].min() if rest.height else None
        value, samples = _FINISH[self.d.aggregation]
        if self.d.aggregation == "ratio":
            done = done.filter(pl.col("den") > 0)
        if not done.height:
            return None
        return done.select(
            "entity_id",
            "window_start",
            value.cast(pl.Float64).alias("value"),
            samples.cast(pl.Int64).alias("samples"),
        )


def _state(d: IndicatorDef, catalog: Catalog) -> _Columns | Population:
    if d.aggregation == "online_rate":
        return OnlineRate(d, catalog.devices)
    if d.aggregation in LIFECYCLE:
        return OrderLifecycle(d, catalog.workorders)
    return _Columns(d)


class WindowStore:
    """Open windows of every indicator, closed by the partitions' watermarks."""

    def __init__(self, catalog: Catalog, partitions: Iterable[str]) -> None:
        self.catalog = catalog
        self._marks = Watermarks(list(partitions))
        self._state = {d.id: _state(d, catalog) for d in catalog.indicators}
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
        for indicator_id, part in partials.items():
            if part.height:
                self._state[indicator_id].add(part)

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
        if max_event_us is not None and (
            self._max_event_us is None or max_event_us > self._max_event_us
        ):
            self._max_event_us = max_event_us
        if watermark_us is None and not ended:
            return _empty()
        until = self._marks.update(partition, watermark_us, ended)
        return self._close(until) if until is not None else _empty()

    def flush(self) -> pl.DataFrame:
        """Close every open window at the end of input.

        Column indicators close all their windows; population indicators close
        the windows that the last event time completes (see ``Population``).
        """
        complete = None if self._max_event_us is None else self._max_event_us + 1_000_000
        closed = []
        for indicator_id, state in self._state.items():
            until = complete if isinstance(state, Population) else None
            if (f := state.close(until)) is not None:
                closed.append((indicator_id, f))
        return _values(self._about, closed)

    def _close(self, until_us: int) -> pl.DataFrame:
        closed = [
            (indicator_id, f)
            for indicator_id, state in self._state.items()
            if (f := state.close(until_us)) is not None
        ]
        return _values(self._about, closed)


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema=VALUES_SCHEMA)
