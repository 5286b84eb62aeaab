"""Event-time progress of one source partition, and the late events it rejects.

The watermark of a partition is the latest event time it has delivered minus
the allowed lateness (bounded out-of-orderness, as in Flink). An event older
than the watermark at the time it arrives is *late*: its window may already
be closed, so it is set aside as a ``late_event`` dead letter instead of
silently changing (or missing) a published value.

>>> from datetime import timedelta
>>> clock = PartitionClock(timedelta(seconds=30))
>>> clock.watermark_us is None
True
>>> clock.late_mask(pl.Series([100_000_000], dtype=pl.Int64)).to_list()
[False]
>>> clock.observe(100_000_000)
>>> clock.watermark_us
70000000
>>> clock.late_mask(pl.Series([69_000_000, 71_000_000])).to_list()
[True, False]
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from schemas.decode import Decoded, dead_letters

__all__ = ["PartitionClock", "Watermarks"]


class PartitionClock:
    """Watermark of one partition: max event time seen minus ``allowed_lateness``."""

    def __init__(self, allowed_lateness: timedelta) -> None:
        self.allowed_lateness = allowed_lateness
        self._max_us: int | None = None

    @property
    def lateness_us(self) -> int:
        return int(self.allowed_lateness.total_seconds() * 1_000_000)

    @property
    def max_event_us(self) -> int | None:
        return self._max_us

    @property
    def watermark_us(self) -> int | None:
        return None if self._max_us is None else self._max_us - self.lateness_us

    def late_mask(self, ts_us: pl.Series) -> pl.Series:
        """True for event times already behind the watermark."""
        wm = self.watermark_us
        if wm is None:
            return pl.Series([False] * len(ts_us), dtype=pl.Boolean)
        return ts_us < wm

    def observe(self, max_event_us: int | None) -> None:
        """Move forward to a batch's latest event time (never backwards)."""
        if max_event_us is not None and (self._max_us is None or max_event_us > self._max_us):
            self._max_us = max_event_us

    def set_aside_late(self, decoded: Decoded, now: datetime) -> Decoded:
        """Move the batch's late rows from its frames to its dead letters (in place).

        Each row is judged against the watermark at its own arrival: the
        latest event time of everything before it in the partition (earlier
        batches and earlier rows of this one) minus the allowed lateness. So
        the verdict depends only on the partition's order, never on where
        batch boundaries fall, and a replay after recovery decides the same.
        """
        parts = [
            f.select("_offset", pl.col("ts").dt.epoch("us").alias("t"))
            for f in decoded.frames.values()
            if f.height
        ]
        if not parts:
            return decoded
        rows = pl.concat(parts).sort("_offset")
        before = pl.max_horizontal(pl.col("t").cum_max().shift(1), pl.lit(self._max_us))
        rows = rows.with_columns(_mark=before - self.lateness_us)
        late = rows.filter(pl.col("t") < pl.col("_mark"))
        self.observe(rows["t"].max())
        if not late.height:
            return decoded
        gone = late["_offset"]
        for family, frame in list(decoded.frames.items()):
            decoded.frames[family] = frame.filter(~pl.col("_offset").is_in(gone.implode()))
        stamp = "%Y-%m-%dT%H:%M:%S%.6fZ"
        dead = late.select(
            decoded.rows_of(late["_offset"]),
            pl.lit("late_event").alias("reason"),
            pl.concat_str(
                pl.lit("event time "),
                pl.from_epoch("t", "us").dt.to_string(stamp),
                pl.lit(" is behind the watermark "),
                pl.from_epoch("_mark", "us").dt.to_string(stamp),
                pl.lit(f" (allowed lateness {self.allowed_lateness})"),
            ).alias("detail"),
        )
        decoded.dead = pl.concat([decoded.dead, dead_letters(decoded, dead, now)]).sort("offset")
        return decoded


class Watermarks:
    """The low watermark of several partitions: how far every one of them has got.

    Until each expected partition has reported, there is none. A partition not
    expected at the start is added when it first reports.

    >>> marks = Watermarks(["p0", "p1"])
    >>> marks.update("p0", 10), marks.update("p1", 7), marks.update("p1", 5)
    (None, 7, 7)
    >>> marks = Watermarks(["p0", "empty"])
    >>> marks.update("p0", 10), marks.update("empty", None, ended=True)
    (None, 10)
    """

    def __init__(self, partitions: list[str]) -> None:
        self.partitions = list(partitions)
        self._marks: dict[str, int] = {}

    @property
    def low_us(self) -> int | None:
        marks = [self._marks.get(p) for p in self.partitions]
        return None if not marks or None in marks else min(marks)

    def update(self, partition: str, watermark_us: int | None, ended: bool = False) -> int | None:
        """Record a partition's watermark (never moving back); return the low watermark.

        A partition that ``ended`` without any watermark is no longer waited for.
        """
        if ended and watermark_us is None and partition not in self._marks:
            if partition in self.partitions:
                self.partitions.remove(partition)
            return self.low_us
        if watermark_us is not None:
            if partition not in self.partitions:
                self.partitions.append(partition)
            previous = self._marks.get(partition)
            if previous is None or watermark_us > previous:
                self._marks[partition] = watermark_us
        return self.low_us
