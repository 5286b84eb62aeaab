"""One shard's timers: device liveness and 1510 deadlines, on one clock.

What did *not* happen (a heartbeat, a dispatch) is found when the clock passes
the instant it should have happened by. :class:`Timers` holds a shard's
:class:`~indicators.liveness.Liveness` and
:class:`~indicators.deadlines.DeadlineBook` and decides what time it is:

``event`` (replays of history, files, the demo)
    The clock is the low watermark of the input partitions: the latest event
    time every partition has reached, minus the allowed lateness. Only input
    moves it, so a replay gives the same records every time.
``wall`` (a live stream)
    The same, and when the watermark stands still the clock goes on with the
    wall clock from where the watermark last moved: ``low watermark + (now -
    when it last moved)``. Devices of a stream that went wholly silent still
    go offline on time. A stream catching up on a backlog moves its watermark
    continuously, so the wall clock adds nothing there. :meth:`Timers.wake_at`
    tells the engine when to call :meth:`Timers.tick` (the Bytewax step
    returns it from ``notify_at``).

Either way a record's event time is the instant the thing happened (the end of
an allowance, a deadline), never when it was noticed: a live run and a replay
of its input give the same records.

>>> from datetime import datetime, timedelta, UTC
>>> from indicators.definitions import load_catalog
>>> timers = Timers(load_catalog(), ["p0"], clock="wall")
>>> t0 = datetime(2026, 5, 12, 6, tzinfo=UTC)
>>> beat = pl.DataFrame({"device_id": ["cam-1"], "device_type": ["camera"],
...     "grid_id": ["G1"], "district_id": ["D1"], "ts": [t0]})
>>> devices, orders = timers.add("p0", heard(beat, timers.catalog.devices), None,
...     int(t0.timestamp()) * 1_000_000, now=t0)
>>> timers.wake_at()                  # the camera's 3 minutes, in wall time
datetime.datetime(2026, 5, 12, 6, 3, 0, 1, tzinfo=datetime.timezone.utc)
>>> devices, orders = timers.tick(now=t0 + timedelta(minutes=4))  # no input since
>>> devices.select("device_id", "status").rows()
[('cam-1', 'offline')]
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Literal

import polars as pl

from indicators import deadlines, liveness
from indicators.deadlines import DeadlineBook
from indicators.definitions import Catalog
from indicators.liveness import Liveness, heard
from indicators.watermark import Watermarks

__all__ = ["Clock", "Timers", "heard"]

Clock = Literal["event", "wall"]


def _us(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000)


class Timers:
    """Liveness and deadlines of the devices and orders routed to one shard."""

    def __init__(self, catalog: Catalog, partitions: list[str], clock: Clock = "event") -> None:
        self.catalog = catalog
        self.clock = clock
        self.liveness = Liveness(catalog.devices)
        self.book = DeadlineBook(catalog.workorders)
        self._marks = Watermarks(partitions)
        self._low: int | None = None  # low watermark last seen
        self._moved_at: int | None = None  # wall time (µs) it last moved
        self._now_us: int | None = None  # the clock: never goes back

    @property
    def now_us(self) -> int | None:
        """The clock (epoch µs): what the timers have been advanced to."""
        return self._now_us

    def add(
        self,
        partition: str,
        runs: pl.DataFrame | None,
        changes: pl.DataFrame | None,
        watermark_us: int | None,
        now: datetime,
        ended: bool = False,
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Take one batch's heartbeat runs and order changes; return the records due.

        ``now`` is the wall clock, used only with ``clock="wall"``; ``ended``: the
        partition has said its last word (see :class:`Watermarks`).
        """
        return self.add_all([(partition, runs, changes, watermark_us, ended)], now)

    def add_all(
        self,
        batches: Iterable[tuple[str, pl.DataFrame | None, pl.DataFrame | None, int | None, bool]],
        now: datetime,
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """:meth:`add` for several ``(partition, runs, changes, watermark_us, ended)`` at once;
        the clock moves once, after all of them (the records do not depend on where the
        input is cut into batches)."""
        devices, orders = [], []
        low = None
        for partition, runs, changes, watermark_us, ended in batches:
            if runs is not None:
                devices.append(self.liveness.observe(runs))
            if changes is not None:
                orders.append(self.book.observe(changes))
            low = self._marks.update(partition, watermark_us, ended)
        if low is not None and (self._low is None or low > self._low):
            self._low, self._moved_at = low, _us(now)
        d, o = self._advance(self._low)
        return _cat([*devices, d]), _cat([*orders, o])

    def resumed(self, now: datetime) -> Timers:
        """Restart the wall clock's count at ``now`` after a recovery; return self.

        The time the process was down is not silence: what was sent meanwhile
        waits in the input to be read, so the wall clock only counts from the
        restart on.
        """
        if self._moved_at is not None:
            self._moved_at = _us(now)
        return self

    def wake_at(self) -> datetime | None:
        """When the wall clock makes the next timer due (None: event time, or nothing due)."""
        if self.clock != "wall" or self._low is None:
            return None
        due = [d for d in (self.liveness.next_due_us, self.book.next_due_us) if d is not None]
        if not due:
            return None
        wake = self._moved_at + (min(due) + 1 - self._low)  # due once the clock passes it
        return datetime.fromtimestamp(wake / 1e6, UTC)

    def tick(self, now: datetime) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Advance by the wall clock (``clock="wall"``); return the records now due."""
        if self.clock != "wall" or self._low is None:
            return self._advance(None)
        return self._advance(self._low + max(0, _us(now) - self._moved_at))

    def _advance(self, until_us: int | None) -> tuple[pl.DataFrame, pl.DataFrame]:
        if until_us is not None and (self._now_us is None or until_us > self._now_us):
            self._now_us = until_us
            return self.liveness.advance(until_us), self.book.advance(until_us)
        return (
            pl.DataFrame(schema=liveness.RECORDS_SCHEMA),
            pl.DataFrame(schema=deadlines.RECORDS_SCHEMA),
        )


def _cat(frames: list[pl.DataFrame]) -> pl.DataFrame:
    return pl.concat(frames) if len(frames) > 1 else frames[0]
