"""Window state of indicators that report on every known entity at every window end.

A population indicator's value at a window end depends on what came before
(devices heard earlier, orders reported earlier), so its windows close in
order, each from the rows of that window plus the state the earlier ones
left. :class:`OnlineRate` is one;
:class:`indicators.lifecycle.OrderLifecycle` is the other. A close may end
many windows at once (a batch spanning several, or a watermark catching up):
each state closes them all together, at a cost that does not grow by a query
per window.

``close`` returns raw rows (``entity_id``, ``window_start`` in epoch
microseconds, ``value``, ``samples``); :class:`indicators.windows.WindowStore`
shapes them into indicator values.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
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
    """Base: keeps the rows of open windows and closes the windows in order."""

    def __init__(self, d: IndicatorDef) -> None:
        self.d = d
        self._next: int | None = None  # start of the next window to close

    def add(self, part: pl.DataFrame) -> None:
        """Keep the rows of a batch (of any open windows) until their windows close."""
        self._keep(part)
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
            return None  # no window ends yet: leave the rows as they are
        start = self._next
        count = (until_us - start) // w
        out = self._close_windows(start, count)
        self._next = start + count * w
        return out if out is not None and out.height else None

    def _keep(self, part: pl.DataFrame) -> None:
        """Hold a batch's rows until :meth:`_close_windows` takes them."""
        raise NotImplementedError

    def _close_windows(self, start: int, count: int) -> pl.DataFrame | None:
        """The rows (:data:`RAW_SCHEMA`) of the ``count`` windows from ``start`` on, in
        window order and by entity within a window; drop their input rows, keep the rest."""
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

    The windows of one close are counted together. One query gathers each
    device's rows; a device has a *stretch* per window it was heard in (its
    latest heartbeat and allowance there hold until the next window it was
    heard in), and the windows a stretch is known and online in follow from
    those two times. Counting them per entity and window is NumPy (a
    difference array summed along the windows): a close costs one query,
    however many windows it ends.
    """

    def __init__(self, d: IndicatorDef, devices: Devices) -> None:
        super().__init__(d)
        self.devices = devices
        self._parts: list[pl.DataFrame] = []
        self._rows = 0  # in the parts
        self._compacted = 0  # rows the last compaction left
        self._closed_us: int | None = None  # the windows starting before this are closed
        self._known = pl.DataFrame(schema=_KNOWN)

    def __setstate__(self, state: dict) -> None:
        """A snapshot of a state from before compaction (no row counts) restores too."""
        state.setdefault("_rows", sum(p.height for p in state["_parts"]))
        state.setdefault("_compacted", 0)
        state.setdefault("_closed_us", None)
        self.__dict__.update(state)

    def _keep(self, part: pl.DataFrame) -> None:
        self._parts.append(part)
        self._rows += part.height
        if len(self._parts) > 1 and self._rows > max(_COMPACT_ROWS, 2 * self._compacted):
            self._compact()

    def _compact(self) -> None:
        """The kept rows as one part, with a row per device, entity and open window: its
        latest heartbeat and latest device type in the order they came, all a close reads
        of them (see :func:`_stretches`). A device heard in every batch of a long window
        was a row per batch; the rows of closed windows go too. Run when the rows have
        doubled since the last time, so the work stays in proportion to the rows kept.
        """
        rows = pl.concat(self._parts, how="vertical_relaxed")
        if self._closed_us is not None:
            rows = rows.filter(pl.col("window_start") >= self._closed_us)
        rows = rows.group_by("entity_id", "window_start", "device").agg(
            pl.col("t").max(), pl.col("device_type").last()
        )
        self._parts = [rows] if rows.height else []
        self._rows = self._compacted = rows.height

    def _close_windows(self, start: int, count: int) -> pl.DataFrame | None:
        w = self.d.window_us
        stop = start + count * w  # the windows closed start before this
        rows = self._known.lazy().select(_KNOWN_ROWS)  # as if heard in window -1
        if self._parts:
            # A part stays until all its windows are closed: its rows of closed
            # windows are passed over, which costs less than splitting it.
            ws = pl.col("window_start")
            heard = (
                pl.concat([p.lazy() for p in self._parts], how="vertical_relaxed")
                .filter((ws >= start) & (ws < stop))
                .select(*_HEARD, ((ws - start) // w).alias("j"), _allowance(self.devices))
            )
            rows = pl.concat([rows, heard])
        s = _stretches(rows, count)
        self._parts = [p for p in self._parts if p.get_column("window_start").max() >= stop]
        self._rows = sum(p.height for p in self._parts)
        self._closed_us = stop
        if s is None:
            return None
        # Known at the end of window i while last + forget_after >= start + (i + 1) * w,
        # i.e. for i < (last + forget_after - start) // w; online likewise with the
        # allowance, and only while known (the rate is over the known devices).
        known_until = np.minimum(s.until, (s.last + self.devices.forget_after_us - start) // w)
        online_until = np.minimum(known_until, (s.last + s.allow - start) // w)
        kept = np.flatnonzero(known_until >= count)  # still known at the last window's end
        self._known = s.names[s.row[kept]].hstack(
            [pl.Series("last", s.last[kept]), pl.Series("allow", s.allow[kept])]
        )
        entities = int(s.entity.max()) + 1
        named = np.zeros(entities, dtype=np.int64)
        named[s.entity] = s.row  # a row of names of each entity
        # Nothing is known after the last stretch ends (a long silence: forgotten).
        windows = min(count, int(known_until.max()))
        # In blocks of windows, so that a close catching up on a long stretch of
        # windows holds a few arrays of at most _CELLS counts at a time.
        span = max(1, _CELLS // entities)
        out = []
        for skip in range(0, windows, span):
            n = min(span, windows - skip)
            known = _coverage(s.entity, s.first - skip, known_until - skip, entities, n)
            online = _coverage(s.entity, s.first - skip, online_until - skip, entities, n)
            window, entity = np.nonzero(known.T)  # by window, then by entity
            samples = known[entity, window]
            out.append(
                s.names[named[entity], :1].hstack(
                    [
                        pl.Series("window_start", start + (skip + window.astype(np.int64)) * w),
                        pl.Series("value", online[entity, window] / samples),
                        pl.Series("samples", samples),
                    ]
                )
            )
        return pl.concat(out) if len(out) > 1 else (out[0] if out else None)


class _Stretches(NamedTuple):
    """The stretches of the devices of a close, in device order (NumPy arrays)."""

    names: pl.DataFrame  # entity_id and device of the rows ``row`` points at
    row: np.ndarray  # a row of names of each stretch's device
    entity: np.ndarray  # its entity's number: entities numbered in their sorted order
    first: np.ndarray  # the window it starts in (0 for the devices known before)
    until: np.ndarray  # the window the device's next stretch starts in, or the count
    last: np.ndarray  # its latest heartbeat
    allow: np.ndarray  # its allowance


def _stretches(rows: pl.LazyFrame, count: int) -> _Stretches | None:
    """The stretches of every device with ``rows`` (``j``: the window it was heard in,
    -1 for the devices known before), or None without any.

    A device has one per window it was heard in: its latest heartbeat there and,
    as when the windows closed one by one, its latest row's allowance (rows in
    the order they came). A window's heartbeats are all later than those before
    it, so the latest of the window is the device's latest.
    """
    x = (
        rows.group_by("entity_id", "device")
        .agg("j", "last", "allow")
        .with_columns((pl.col("entity_id").rank("dense") - 1).alias("entity"))
        .with_row_index("g")  # numbers the devices
        .explode("j", "last", "allow")
        .collect(engine=ENGINE)
    )
    if not x.height:
        return None
    g, j, last, allow, entity = (x.get_column(c).to_numpy() for c in _STRETCH)
    order = np.argsort(g.astype(np.int64) * (count + 1) + (j + 1), kind="stable")
    g, j = g[order], j[order]
    first = np.flatnonzero(np.r_[True, (g[1:] != g[:-1]) | (j[1:] != j[:-1])])
    last = np.maximum.reduceat(last[order], first)
    allow = allow[order][np.r_[first[1:], len(g)] - 1]
    row, g, j = order[first], g[first], j[first]
    until = np.where(np.r_[g[1:] == g[:-1], False], np.r_[j[1:], count], count)
    return _Stretches(
        names=x[:, 1:3],  # entity_id, device
        row=row,
        entity=entity[row].astype(np.int64),
        first=np.maximum(j, 0),
        until=until,
        last=last,
        allow=allow,
    )


def _coverage(
    entity: np.ndarray, first: np.ndarray, until: np.ndarray, entities: int, windows: int
) -> np.ndarray:
    """How many stretches of each entity cover each window: an ``entities`` x
    ``windows`` array; a stretch (of ``entity``) covers windows ``[first, until)``."""
    first = np.minimum(np.maximum(first, 0), windows)
    stop = np.minimum(np.maximum(until, first), windows)  # an empty one adds and takes at one cell
    width = windows + 1
    cells = entities * width
    starts = np.bincount(entity * width + first, minlength=cells)
    ends = np.bincount(entity * width + stop, minlength=cells)
    return np.cumsum((starts - ends).reshape(entities, width)[:, :windows], axis=1)


def _allowance(devices: Devices) -> pl.Expr:
    """:func:`indicators.liveness.allowance_us` as ``allow``, made once per set of allowances."""
    key = tuple(devices.allowance_us.items())
    expr = _ALLOWANCE.get(key)
    if expr is None:
        expr = _ALLOWANCE[key] = allowance_us(devices).alias("allow")
    return expr


#: The allowance expressions made so far (one per catalogue's devices, in practice).
_ALLOWANCE: dict[tuple[tuple[str, int], ...], pl.Expr] = {}

#: What an online rate reads of a part's rows (one per device, window and batch).
_HEARD = [pl.col("entity_id"), pl.col("device"), pl.col("t").alias("last")]
#: The columns of a device's rows its stretches are made of.
_STRETCH = ("g", "j", "last", "allow", "entity")

#: At most this many (entity, window) counts at a time when closing many windows.
_CELLS = 1 << 20
#: An online rate's kept rows are compacted from this many on (see ``OnlineRate._compact``).
_COMPACT_ROWS = 100_000

#: What an online rate keeps per known device of an entity.
_KNOWN = pl.Schema(
    {"entity_id": pl.String, "device": pl.String, "last": pl.Int64, "allow": pl.Int64}
)
#: The known devices as rows of the window before those a close ends.
_KNOWN_ROWS = [
    pl.col("entity_id"),
    pl.col("device"),
    pl.col("last"),
    pl.lit(-1, dtype=pl.Int64).alias("j"),
    pl.col("allow"),
]
