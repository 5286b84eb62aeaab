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

from indicators.aggregate import ENGINE
from indicators.definitions import Devices, IndicatorDef
from indicators.liveness import allowance_us

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
        by_start = df.partition_by("window_start", as_dict=True) if df is not None else {}
        outs = []
        while self._next + w <= until_us:
            start = self._next
            out = self._close_window(start, by_start.pop((start,), None))
            if not isinstance(out, pl.DataFrame):  # tuples, maybe lazily made
                out = pl.DataFrame(list(out), schema=RAW_SCHEMA, orient="row")
            outs.append(out)
            self._next = start + w
        rest = [part for (start,), part in by_start.items() if start >= self._next]
        self._parts = [pl.concat(rest)] if rest else []
        closed = [out for out in outs if out.height]
        if not closed:
            return None
        return pl.concat(closed) if len(closed) > 1 else closed[0]

    def _close_window(
        self, start: int, rows: pl.DataFrame | None
    ) -> pl.DataFrame | Iterable[tuple]:
        """The ``(entity_id, start, value, samples)`` rows of the window at ``start``:
        a frame of :data:`RAW_SCHEMA`, or tuples."""
        raise NotImplementedError


class OnlineRate(Population):
    """Known devices online at the window end over all known devices, per entity.

    Online means what :mod:`indicators.liveness` means: a heartbeat within the
    device type's allowance (``last + allowance >= window end``), so the rate
    and the timers step's offline records agree. A device is known from its
    first heartbeat until it has been silent for ``forget_after``.

    ``samples`` is the number of devices the rate is over (the known ones), so a
    grid whose devices all fell silent reads 0 % from 3 devices and is judged,
    not skipped by a rule's ``min_samples``.
    """

    def __init__(self, d: IndicatorDef, devices: Devices) -> None:
        super().__init__(d)
        self.devices = devices
        self._known = pl.DataFrame(schema=_KNOWN)

    def _close_window(self, start, rows):
        """The window's rates; the known devices and the rates come from one query."""
        end = start + self.d.window_us
        known = self._known.lazy()
        if rows is not None and rows.height:
            heard = rows.lazy().select(
                "entity_id",
                "device",
                pl.col("t").alias("last"),
                allowance_us(self.devices).alias("allow"),
            )
            known = (
                pl.concat([known, heard])
                .group_by("entity_id", "device")
                .agg(pl.col("last").max(), pl.col("allow").last())
            )
        known = known.filter(pl.col("last") + self.devices.forget_after_us >= end)
        rates = (
            known.group_by("entity_id")
            .agg(
                pl.lit(start, dtype=pl.Int64).alias("window_start"),
                (pl.col("last") + pl.col("allow") >= end).mean().cast(pl.Float64).alias("value"),
                pl.len().cast(pl.Int64).alias("samples"),
            )
            .sort("entity_id")
        )
        self._known, out = pl.collect_all([known, rates], engine=ENGINE)
        return out


#: What an online rate keeps per known device of an entity.
_KNOWN = pl.Schema(
    {"entity_id": pl.String, "device": pl.String, "last": pl.Int64, "allow": pl.Int64}
)
