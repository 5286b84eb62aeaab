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

Population indicators (``online_rate``, ``overdue``) emit a value for every
entity they know at every window end, even one with no input in that window:
a grid whose devices all went silent reads 0 %, not nothing.

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

from indicators.definitions import Catalog, IndicatorDef
from schemas.families import INDICATOR_VALUES, polars_schema

__all__ = ["VALUES_SCHEMA", "WindowStore"]

#: Indicator values as the store emits them (the evaluator adds ``level``).
VALUES_SCHEMA = polars_schema(INDICATOR_VALUES, drop=("level",))

_COMPACT_AFTER = 16  # partial frames per indicator before they are merged


def _values(d: IndicatorDef, df: pl.DataFrame) -> pl.DataFrame:
    """Shape finished (entity_id, window_start, value, samples) rows as indicator values."""
    return df.select(
        pl.lit(d.id).alias("indicator_id"),
        pl.lit(d.sector).alias("sector"),
        pl.lit(d.entity.type).alias("entity_type"),
        pl.col("entity_id"),
        pl.from_epoch("window_start", "us").dt.replace_time_zone("UTC").alias("window_start"),
        pl.from_epoch(pl.col("window_start") + d.window_us, "us")
        .dt.replace_time_zone("UTC")
        .alias("window_end"),
        pl.col("value").cast(pl.Float64),
        pl.col("samples").cast(pl.Int64),
        pl.lit(d.unit).alias("unit"),
    )


class _Columns:
    """mean / max / min / sum / count / p95 over one input column."""

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
        aggs = [
            pl.col("n").sum(),
            pl.col("sum").sum(),
            pl.col("min").min(),
            pl.col("max").max(),
        ]
        if "values" in df.columns:
            aggs.append(pl.col("values").list.explode(keep_nulls=False, empty_as_null=False))
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
        if not done.height:
            return None
        agg = self.d.aggregation
        value = {
            "mean": pl.col("sum") / pl.col("n"),
            "max": pl.col("max"),
            "min": pl.col("min"),
            "sum": pl.col("sum"),
            "count": pl.col("n").cast(pl.Float64),
            "p95": pl.col("values").list.eval(pl.element().quantile(0.95, "linear")).list.first(),
        }[agg]
        return _values(
            self.d, done.select("entity_id", "window_start", value.alias("value"), samples="n")
        )


class _Population:
    """Base for indicators that report on every known entity at every window end."""

    def __init__(self, d: IndicatorDef) -> None:
        self.d = d
        self._parts: list[pl.DataFrame] = []
        self._next: int | None = None  # start of the next window to close

    def add(self, part: pl.DataFrame) -> None:
        self._parts.append(part)
        first = part["window_start"].min()
        if self._next is None or first < self._next:
            self._next = first

    def close(self, until_us: int | None) -> pl.DataFrame | None:
        """Close every window ending at or before ``until_us``, for every known entity.

        Population indicators never close on ``None`` (end of input): a window
        that the input stopped inside is incomplete, and a partial population
        would read as an outage. The store passes the last event time instead.
        """
        if self._next is None or until_us is None:
            return None
        df = pl.concat(self._parts, how="vertical_relaxed") if self._parts else None
        w = self.d.window_us
        rows: list[tuple[str, int, float, int]] = []
        while self._next + w <= until_us:
            start = self._next
            mine = df.filter(pl.col("window_start") == start) if df is not None else None
            rows.extend(self._close_window(start, mine))
            self._next = start + w
        if df is not None:
            rest = df.filter(pl.col("window_start") >= self._next)
            self._parts = [rest] if rest.height else []
        if not rows:
            return None
        out = pl.DataFrame(
            rows,
            schema={
                "entity_id": pl.String,
                "window_start": pl.Int64,
                "value": pl.Float64,
                "samples": pl.Int64,
            },
            orient="row",
        )
        return _values(self.d, out)

    def _close_window(self, start: int, rows: pl.DataFrame | None) -> Iterable[tuple]:
        raise NotImplementedError


class _OnlineRate(_Population):
    """Distinct devices heard in the window over all devices ever heard, per entity."""

    def __init__(self, d: IndicatorDef) -> None:
        super().__init__(d)
        self._known: dict[str, set[str]] = {}

    def _close_window(self, start, rows):
        heard: dict[str, set[str]] = {}
        samples: dict[str, int] = {}
        if rows is not None and rows.height:
            for entity, n, members in rows.select("entity_id", "n", "members").iter_rows():
                heard.setdefault(entity, set()).update(members)
                samples[entity] = samples.get(entity, 0) + n
        for entity, members in heard.items():
            self._known.setdefault(entity, set()).update(members)
        for entity, known in self._known.items():
            on = heard.get(entity, ())
            yield entity, start, len(on) / len(known), samples.get(entity, 0)


class _Overdue(_Population):
    """Open orders past their dispatch deadline at the window end, per entity.

    An order enters at ``reported`` with the deadline of its class and leaves
    when it is ``dispatched``; an order dispatched late still counted as
    overdue at every window end it was late for.
    """

    def __init__(self, d: IndicatorDef) -> None:
        super().__init__(d)
        self._deadline_us = {
            cls: int(td.total_seconds() * 1_000_000) for cls, td in d.params["deadlines"].items()
        }
        self._open: dict[str, tuple[str, int]] = {}  # order_id -> (entity, deadline_us)
        self._entities: set[str] = set()

    def _close_window(self, start, rows):
        end = start + self.d.window_us
        events: dict[str, int] = {}
        if rows is not None and rows.height:
            cols = ("entity_id", "order_id", "status", "event_class", "t")
            for entity, order_id, status, cls, t in rows.sort("t").select(cols).iter_rows():
                self._entities.add(entity)
                events[entity] = events.get(entity, 0) + 1
                if status == "reported" and cls in self._deadline_us:
                    self._open[order_id] = (entity, t + self._deadline_us[cls])
                elif status == "dispatched":
                    self._open.pop(order_id, None)
        overdue = dict.fromkeys(self._entities, 0)
        for entity, deadline in self._open.values():
            if deadline <= end:
                overdue[entity] += 1
        for entity, count in overdue.items():
            yield entity, start, float(count), events.get(entity, 0)


_KINDS = {"online_rate": _OnlineRate, "overdue": _Overdue}


class WindowStore:
    """Open windows of every indicator, closed by the partitions' watermarks."""

    def __init__(self, catalog: Catalog, partitions: Iterable[str]) -> None:
        self.catalog = catalog
        self.partitions = list(partitions)
        self._state = {d.id: _KINDS.get(d.aggregation, _Columns)(d) for d in catalog.indicators}
        self._watermarks: dict[str, int] = {}
        self._max_event_us: int | None = None

    @property
    def watermark_us(self) -> int | None:
        """The lowest watermark of all expected partitions (None until each has one)."""
        marks = [self._watermarks.get(p) for p in self.partitions]
        return None if not marks or None in marks else min(marks)

    def add(self, partials: dict[str, pl.DataFrame]) -> None:
        for indicator_id, part in partials.items():
            if part.height:
                self._state[indicator_id].add(part)

    def advance(
        self, partition: str, watermark_us: int | None, max_event_us: int | None = None
    ) -> pl.DataFrame:
        """Record a partition's watermark; return the values of windows now closed."""
        if max_event_us is not None and (
            self._max_event_us is None or max_event_us > self._max_event_us
        ):
            self._max_event_us = max_event_us
        if watermark_us is None:
            return _empty()
        if partition not in self.partitions:
            self.partitions.append(partition)
        previous = self._watermarks.get(partition)
        if previous is None or watermark_us > previous:
            self._watermarks[partition] = watermark_us
        until = self.watermark_us
        return self._close(until) if until is not None else _empty()

    def flush(self) -> pl.DataFrame:
        """Close every open window at the end of input.

        Column indicators close all their windows; population indicators close
        the windows that the last event time completes (see ``_Population``).
        """
        complete = None if self._max_event_us is None else self._max_event_us + 1_000_000
        frames = []
        for state in self._state.values():
            until = complete if isinstance(state, _Population) else None
            if (f := state.close(until)) is not None:
                frames.append(f)
        return pl.concat(frames) if frames else _empty()

    def _close(self, until_us: int) -> pl.DataFrame:
        frames = [f for s in self._state.values() if (f := s.close(until_us)) is not None]
        return pl.concat(frames) if frames else _empty()


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema=VALUES_SCHEMA)
