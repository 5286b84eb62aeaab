"""The life of work orders, joined by order id: one state, several measures.

A work order arrives as separate status changes (``reported``, ``dispatched``,
``arrived``, ``closed``, ``returned``), often hours apart. To measure how long
a step took, :class:`OrderLifecycle` keeps each open order's earlier changes
and applies the new ones in event-time order, window after window. Every
lifecycle indicator has one such state and reads one measure from it, per
entity, at each window end:

``overdue``
    orders reported, not yet dispatched, whose 1510 deadline (report time
    plus the catalogue's ``workorders.deadlines`` of their class) is before
    the window end (a dispatch at the deadline is on time);
    emitted for every known entity, 0 included.
``open_orders``
    orders seen and not closed at the window end; every known entity, 0 included.
``dispatch_delay_p50``, ``dispatch_delay_p90``
    median and 90th percentile (linear interpolation) of the minutes from
    report to first dispatch, over the orders first dispatched in the window.
``arrival_time_mean``
    mean minutes from an order's latest dispatch to its arrival on site, over
    the arrivals in the window.
``on_time_rate``
    share of the orders first dispatched in the window whose dispatch was at
    or before their deadline. Orders never dispatched are not in it: they show
    up in ``overdue``.

The last three emit nothing for an entity with no order to measure in the
window: a delay of no orders is unknown, not 0. ``samples`` is the number of
orders measured; for the two counts, the number of the entity's orders open at
some moment of the window (still open at its end, or with a change in it).

What the state keeps, and when it lets go:

- An order is evicted when it is ``closed``.
- A ``returned`` order (the reporter rejected the closure) re-opens: it is
  counted by ``open_orders`` again until it is closed again. Its dispatch
  clock stopped at its first dispatch, so it is never overdue again and a
  re-dispatch adds no dispatch delay; the arrival after a re-dispatch is
  measured.
- An order whose report was never seen (it came before the state started)
  is open from its first change on but has no dispatch delay and is never
  overdue.
- An open order with no change for the catalogue's ``workorders.expire_after``
  is let go at the first window end after that (the timers step records it as
  ``expired``), so orders that are never closed do not pile up.

All changes of one order share its district, department, grid and class, so
an indicator keyed by those (the definitions insist) keeps every order on one
shard.

>>> from datetime import datetime, timedelta, UTC
>>> from indicators.aggregate import partial
>>> from indicators.definitions import load_catalog
>>> d = load_catalog()["workorder.dispatch_delay_p90.small"]
>>> t0 = datetime(2026, 5, 12, 6, tzinfo=UTC)
>>> changes = pl.DataFrame({
...     "ts": [t0 + timedelta(minutes=m) for m in (0, 5, 10, 22, 40)],
...     "order_id": ["a", "b", "c", "a", "b"],
...     "status": ["reported", "reported", "reported", "dispatched", "dispatched"],
...     "event_class": ["small"] * 5, "district_id": ["D1"] * 5})
>>> state = OrderLifecycle(d, load_catalog().workorders)
>>> state.add(partial(d, changes))
>>> hour_end = int((t0 + timedelta(hours=1)).timestamp()) * 1_000_000
>>> state.close(hour_end).select("entity_id", "value", "samples").rows()  # delays 22 and 35
[('D1/small', 33.7, 2)]
>>> state.open_orders  # a, b and c: none is closed
3
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

from indicators.aggregate import ENGINE
from indicators.definitions import IndicatorDef, WorkOrders
from indicators.population import RAW_SCHEMA, Population
from schemas.families import WORKORDER_STATUSES

__all__ = ["OrderLifecycle", "in_life_order"]

_MINUTE_US = 60_000_000
#: Changes at the same instant apply in life-cycle order.
_RANK = {status: i for i, status in enumerate(WORKORDER_STATUSES)}


def in_life_order(changes: pl.DataFrame) -> pl.DataFrame:
    """Status changes sorted by event time ``t``, those at one instant in life-cycle order."""
    rank = pl.col("status").replace_strict(_RANK, return_dtype=pl.Int8)
    return changes.sort(pl.col("t"), rank, maintain_order=True)


#: What a lifecycle state keeps of each change of an open window, as a tuple.
_CHANGE = ("entity_id", "window_start", "order_id", "status", "event_class", "t")
_WINDOW, _STATUS, _T = (_CHANGE.index(c) for c in ("window_start", "status", "t"))


def _life_order(change: tuple) -> tuple[int, int]:
    """The sort key of :func:`in_life_order`, for a change kept as a tuple."""
    return change[_T], _RANK[change[_STATUS]]


#: Counted at every window end for every known entity (the others are summaries).
_COUNTS = ("overdue", "open_orders")
_MEASURED = pl.Schema({"entity_id": pl.String, "window_start": pl.Int64, "x": pl.Float64})

_SUMMARY = {
    "dispatch_delay_p50": pl.col("x").quantile(0.5, "linear"),
    "dispatch_delay_p90": pl.col("x").quantile(0.9, "linear"),
    "arrival_time_mean": pl.col("x").mean(),
    "on_time_rate": pl.col("x").mean(),
}


@dataclass(slots=True)
class _Order:
    """What is kept of one open order."""

    entity: str
    event_class: str
    reported: int | None  # report time (epoch µs); None when the report was not seen
    last_change: int
    dispatched: int | None = None  # first dispatch
    last_dispatch: int | None = None
    awaiting_arrival: bool = False


class OrderLifecycle(Population):
    """Open orders joined by order id, read as one lifecycle measure per window.

    The changes of open windows are kept as rows (tuples); a close sorts those
    of the windows it ends once, applies them in order and reads the measure
    at each window end as it passes it. A close costs at most one query (the
    summaries of what it measured), however many windows it ends.
    """

    def __init__(self, d: IndicatorDef, workorders: WorkOrders) -> None:
        super().__init__(d)
        self.workorders = workorders
        self._deadline_us = workorders.deadline_us
        self._expire_us = workorders.expire_after_us
        self._changes: list[tuple] = []  # of open windows: _CHANGE columns, in arrival order
        self._orders: dict[str, _Order] = {}  # open orders by id
        self._entities: set[str] = set()
        self._next_expiry: int | None = None  # no open order expires before this

    @property
    def open_orders(self) -> int:
        """How many orders the state holds now."""
        return len(self._orders)

    def __setstate__(self, state: dict) -> None:
        """Restore a snapshot, also one taken before the changes were kept as rows:
        its pending frames (``_parts``) become rows."""
        parts = state.pop("_parts", None)
        self.__dict__.update(state)
        if parts is not None:
            self._changes = []
            for part in parts:
                self._keep(part)

    def _keep(self, part: pl.DataFrame) -> None:
        if part.columns != list(_CHANGE):  # partials come in this order: no query then
            part = part.select(_CHANGE)
        self._changes.extend(part.rows())

    def _close_windows(self, start: int, count: int) -> pl.DataFrame | None:
        w = self.d.window_us
        stop = start + count * w
        due: list[tuple] = []
        kept: list[tuple] = []
        for change in self._changes:
            (due if change[_WINDOW] < stop else kept).append(change)
        self._changes = kept
        # By event time, those at one instant in life-cycle order; the sort is stable,
        # so ties keep their order of arrival (as in_life_order keeps it).
        due.sort(key=_life_order)
        counts: list[tuple] | None = [] if self.d.aggregation in _COUNTS else None
        measured: list[tuple[str, int, float]] = []
        touched: dict[str, set[str]] = {}  # entity -> orders with a change in the window
        window = start
        for entity, ws, order_id, status, cls, t in due:
            while ws > window:  # the changes of the windows before are all applied
                self._end_window(window, touched, counts)
                window += w
                touched = {}
            self._entities.add(entity)
            touched.setdefault(entity, set()).add(order_id)
            x = self._apply(entity, order_id, status, cls, t)
            if x is not None:
                measured.append((entity, ws, x))
        while window < stop:
            self._end_window(window, touched, counts)
            window += w
            touched = {}
        if counts is None:
            return self._summary(measured)
        return pl.DataFrame(counts, schema=RAW_SCHEMA, orient="row") if counts else None

    def _end_window(
        self, start: int, touched: dict[str, set[str]], counts: list[tuple] | None
    ) -> None:
        """End the window at ``start``: let go of what it outlived and, for the
        counts, add its rows (``entity_id``, ``start``, value, samples) to ``counts``."""
        self._expire(start + self.d.window_us)
        if counts is not None:
            counts.extend(self._counts(start, touched))

    def _apply(self, entity: str, order_id: str, status: str, cls: str, t: int) -> float | None:
        """Apply one status change; return what it measures for this indicator, if anything."""
        if status == "closed":
            self._orders.pop(order_id, None)
            return None
        order = self._orders.get(order_id)
        if order is None:
            order = _Order(entity, cls, t if status == "reported" else None, t)
            self._orders[order_id] = order
        order.last_change = max(order.last_change, t)
        if self._next_expiry is None or t + self._expire_us < self._next_expiry:
            self._next_expiry = t + self._expire_us
        measure = self.d.aggregation
        if status == "dispatched":
            first = order.dispatched is None
            if first:
                order.dispatched = t
            order.last_dispatch = t
            order.awaiting_arrival = True
            if first and order.reported is not None:
                if measure in ("dispatch_delay_p50", "dispatch_delay_p90"):
                    return (t - order.reported) / _MINUTE_US
                if measure == "on_time_rate":
                    due = order.reported + self._deadline_us[order.event_class]
                    return 1.0 if t <= due else 0.0
        elif status == "arrived" and order.awaiting_arrival:
            order.awaiting_arrival = False
            if measure == "arrival_time_mean" and order.last_dispatch is not None:
                return (t - order.last_dispatch) / _MINUTE_US
        return None

    def _expire(self, end: int) -> None:
        """Let go of open orders with no change for ``expire_after`` before ``end``."""
        if self._next_expiry is None or self._next_expiry >= end:
            return  # nothing can have expired: no scan of every open order
        horizon = end - self._expire_us
        gone = [i for i, o in self._orders.items() if o.last_change < horizon]
        for order_id in gone:
            del self._orders[order_id]
        self._next_expiry = min(
            (o.last_change + self._expire_us for o in self._orders.values()), default=None
        )

    def _counts(self, start: int, touched: dict[str, set[str]]) -> Iterable[tuple]:
        end = start + self.d.window_us
        overdue_only = self.d.aggregation == "overdue"
        count = dict.fromkeys(self._entities, 0)
        seen = {entity: set(ids) for entity, ids in touched.items()}
        for order_id, o in self._orders.items():
            seen.setdefault(o.entity, set()).add(order_id)
            if not overdue_only:
                count[o.entity] += 1
            elif (
                o.dispatched is None
                and o.reported is not None
                and o.reported + self._deadline_us[o.event_class] < end
            ):
                count[o.entity] += 1
        for entity in sorted(count):
            yield entity, start, float(count[entity]), len(seen.get(entity, ()))

    def _summary(self, measured: list[tuple[str, int, float]]) -> pl.DataFrame | None:
        """The measure of each window and entity from its measured orders (one query)."""
        if not measured:
            return None
        frame = pl.DataFrame(measured, schema=_MEASURED, orient="row")
        return (
            frame.lazy()
            .group_by("window_start", "entity_id")
            .agg(_SUMMARY[self.d.aggregation].alias("value"), pl.len().alias("samples"))
            .sort("window_start", "entity_id")
            .select(RAW_SCHEMA.names())
            .cast(dict(RAW_SCHEMA))
            .collect(engine=ENGINE)
        )
