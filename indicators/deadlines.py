"""Work orders past their "1510" dispatch deadline, found by the clock.

An order reported at ``R`` in class ``c`` must be dispatched by
``R + deadlines[c]`` (:class:`indicators.definitions.WorkOrders`). If it is
not, it is ``overdue`` at that instant: :meth:`DeadlineBook.advance` finds it
when its caller's clock passes the deadline, even if nothing else ever
arrives for the order, and the record's event time is the deadline itself,
so a replay gives the same record as the live run. A dispatch at the
deadline is on time, as for the ``on_time_rate`` indicator.

What happens after is recorded once per order: ``dispatched_late`` when an
overdue order is dispatched, or ``closed_overdue`` when it is closed without
one. The windowed KPIs (:mod:`indicators.lifecycle`) move the order from the
overdue count to a late dispatch in the same way, so no order is counted
twice. A change that arrives in one batch with the report and dispatch of an
order after its deadline yields both records in order.

What the book keeps: every open order (id, class, department, grid,
district, report time, flags), as the lifecycle state does. A closed order
leaves. An open order with no status change for ``expire_after`` leaves with
an ``expired`` record, so orders that are never closed do not pile up.

>>> from datetime import datetime, timedelta, UTC
>>> from indicators.definitions import WorkOrders
>>> t0 = datetime(2026, 5, 12, 6, tzinfo=UTC)
>>> us = lambda m: int((t0 + timedelta(minutes=m)).timestamp()) * 1_000_000
>>> book = DeadlineBook(WorkOrders())          # small events: 30 minutes
>>> _ = book.observe(pl.DataFrame({"order_id": ["o1"], "status": ["reported"],
...     "event_class": ["small"], "department": ["roads"], "grid_id": ["G1"],
...     "district_id": ["D1"], "t": [us(0)]}))
>>> book.advance(us(30)).height                # dispatched at 30 min would be on time
0
>>> book.advance(us(30) + 1).select("order_id", "state", "event_ts").rows()
[('o1', 'overdue', datetime.datetime(2026, 5, 12, 6, 30, tzinfo=zoneinfo.ZoneInfo(key='UTC')))]
>>> book.advance(us(90)).height                # once
0
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import polars as pl

from indicators.definitions import WorkOrders
from indicators.lifecycle import in_life_order
from schemas.families import ORDER_DEADLINES, polars_schema

__all__ = ["CHANGES", "RECORDS_SCHEMA", "DeadlineBook", "changes"]

#: What :class:`DeadlineBook` returns: records without ``emitted_at``.
RECORDS_SCHEMA = polars_schema(ORDER_DEADLINES, drop=("emitted_at",))
#: The columns of the status changes the book takes.
CHANGES = ("order_id", "status", "event_class", "department", "grid_id", "district_id", "t")


def changes(frame: pl.DataFrame) -> pl.DataFrame:
    """A batch's work-order frame as the book's changes (event time in epoch µs)."""
    return frame.select(*CHANGES[:-1], pl.col("ts").dt.epoch("us").alias("t"))


@dataclass(slots=True)
class _Order:
    about: tuple[str, str, str, str]  # event_class, department, grid_id, district_id
    reported: int | None = None
    due: int | None = None
    last_change: int = 0
    dispatched: bool = False
    overdue: bool = False


class DeadlineBook:
    """Open work orders and their dispatch deadlines."""

    def __init__(self, workorders: WorkOrders) -> None:
        self.settings = workorders
        self._deadline = workorders.deadline_us
        self._expire = workorders.expire_after_us
        self._orders: dict[str, _Order] = {}
        self._dues: list[tuple[int, str]] = []  # heap of (deadline, order); stale entries skipped
        self._next_expiry: int | None = None  # no order expires before this

    @property
    def open_orders(self) -> int:
        return len(self._orders)

    @property
    def next_due_us(self) -> int | None:
        """The earliest deadline of an order not yet dispatched (or None)."""
        while self._dues and not self._pending(*self._dues[0]):
            heapq.heappop(self._dues)
        return self._dues[0][0] if self._dues else None

    def observe(self, batch: pl.DataFrame) -> pl.DataFrame:
        """Apply a batch of status changes (columns :data:`CHANGES`) in event-time order."""
        out: list[tuple] = []
        if not batch.height:
            return _records(out)
        for order_id, status, *about, t in in_life_order(batch).select(CHANGES).iter_rows():
            self._apply(order_id, status, tuple(about), t, out)
        return _records(out)

    def advance(self, until_us: int) -> pl.DataFrame:
        """Every order whose deadline passed before ``until_us`` undispatched becomes overdue."""
        out: list[tuple] = []
        while self._dues and self._dues[0][0] < until_us:
            due, order_id = heapq.heappop(self._dues)
            if self._pending(due, order_id):
                order = self._orders[order_id]
                order.overdue = True
                out.append(_row(order_id, order, "overdue", due))
        if self._next_expiry is not None and self._next_expiry < until_us:
            self._expire_before(until_us, out)
        return _records(out)

    def _pending(self, due: int, order_id: str) -> bool:
        o = self._orders.get(order_id)
        return o is not None and o.due == due and not o.dispatched and not o.overdue

    def _apply(self, order_id: str, status: str, about: tuple, t: int, out: list) -> None:
        order = self._orders.get(order_id)
        if status == "closed":
            if order is not None:
                self._overdue_by(order_id, order, t, out)
                if order.overdue and not order.dispatched:
                    out.append(_row(order_id, order, "closed_overdue", t))
                del self._orders[order_id]
            return
        if order is None:
            # A returned order comes back here after its closure let it go: its
            # dispatch clock stopped at its first dispatch, as for the KPIs.
            order = self._orders[order_id] = _Order(about, dispatched=status != "reported")
        order.last_change = max(order.last_change, t)
        if self._next_expiry is None or t + self._expire < self._next_expiry:
            self._next_expiry = t + self._expire
        if status == "reported" and order.reported is None:
            order.reported = t
            if not order.dispatched:
                order.due = t + self._deadline[about[0]]
                heapq.heappush(self._dues, (order.due, order_id))
        elif status == "dispatched" and not order.dispatched:
            self._overdue_by(order_id, order, t, out)
            order.dispatched = True
            if order.overdue:
                out.append(_row(order_id, order, "dispatched_late", t))

    def _overdue_by(self, order_id: str, order: _Order, t: int, out: list) -> None:
        """Record the overdue the clock has not reached yet, if the deadline passed before t."""
        if not order.dispatched and not order.overdue and order.due is not None and order.due < t:
            order.overdue = True
            out.append(_row(order_id, order, "overdue", order.due))

    def _expire_before(self, until_us: int, out: list) -> None:
        nxt = None
        for order_id, order in list(self._orders.items()):
            at = order.last_change + self._expire
            if at < until_us:
                out.append(_row(order_id, order, "expired", at))
                del self._orders[order_id]
            elif nxt is None or at < nxt:
                nxt = at
        self._next_expiry = nxt


def _row(order_id: str, o: _Order, state: str, at: int) -> tuple:
    late = None if o.due is None else (at - o.due) / 1e6
    return (order_id, *o.about, state, o.reported, o.due, at, late)


def _records(rows: list[tuple]) -> pl.DataFrame:
    frame = pl.DataFrame(
        rows,
        schema={
            **{c: pl.String for c in ("order_id", "event_class", "department")},
            **{c: pl.String for c in ("grid_id", "district_id", "state")},
            **{c: pl.Int64 for c in ("reported_ts", "deadline_ts", "event_ts")},
            "overdue_s": pl.Float64,
        },
        orient="row",
    )
    stamps = [pl.col(c).cast(pl.Datetime("us", "UTC")) for c in ("reported_ts", "deadline_ts")]
    frame = frame.sort("event_ts", "order_id", maintain_order=True)
    return frame.with_columns(*stamps, pl.col("event_ts").cast(pl.Datetime("us", "UTC"))).select(
        list(RECORDS_SCHEMA)
    )
