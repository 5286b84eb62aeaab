"""Window state of indicators that report on every known entity at every window end.

A population indicator's value at a window end depends on what came before
(devices heard earlier, orders reported earlier), so its windows close one
after another, in order, each from the rows of that window plus the state
the earlier ones left. :class:`OnlineRate` is one;
:class:`indicators.lifecycle.OrderLifecycle` is the other.

``close`` returns raw rows (``entity_id``, ``window_start`` in epoch
microseconds, ``value``, ``samples``); :class:`indicators.windows.WindowStore`
shapes them into indicator values.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

from indicators.definitions import IndicatorDef

__all__ = ["RAW_SCHEMA", "OnlineRate", "Population"]

#: What every window state's ``close`` returns.
RAW_SCHEMA = pl.Schema(
    {"entity_id": pl.String, "window_start": pl.Int64, "value": pl.Float64, "samples": pl.Int64}
)


class Population:
    """Base: merges nothing, keeps the rows of open windows and closes them in order."""

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
        w = self.d.window_us
        if self._next is None or until_us is None or self._next + w > until_us:
            return None  # no window ends yet: leave the parts as they are
        df = pl.concat(self._parts, how="vertical_relaxed") if self._parts else None
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
        return pl.DataFrame(rows, schema=RAW_SCHEMA, orient="row")

    def _close_window(self, start: int, rows: pl.DataFrame | None) -> Iterable[tuple]:
        """Yield ``(entity_id, start, value, samples)`` for the window at ``start``."""
        raise NotImplementedError


class OnlineRate(Population):
    """Distinct devices heard in the window over all devices ever heard, per entity.

    ``samples`` is the number of devices the rate is over (the known ones), so a
    grid whose devices all fell silent reads 0 % from 3 devices and is judged,
    not skipped by a rule's ``min_samples``.
    """

    def __init__(self, d: IndicatorDef) -> None:
        super().__init__(d)
        self._known: dict[str, set[str]] = {}

    def _close_window(self, start, rows):
        heard: dict[str, set[str]] = {}
        if rows is not None and rows.height:
            for entity, members in rows.select("entity_id", "members").iter_rows():
                heard.setdefault(entity, set()).update(members)
        for entity, members in heard.items():
            self._known.setdefault(entity, set()).update(members)
        for entity, known in self._known.items():
            on = heard.get(entity, ())
            yield entity, start, len(on) / len(known), len(known)
