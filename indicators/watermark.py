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

from datetime import UTC, datetime, timedelta

import polars as pl

from schemas.decode import Decoded, dead_letters

__all__ = ["PartitionClock"]


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

        Then advance the clock to the batch's latest event time: late rows are
        behind the watermark, so they could not have moved it anyway.
        """
        late_rows = []
        for family, frame in list(decoded.frames.items()):
            late = self.late_mask(frame["ts"].dt.epoch("us"))
            if late.any():
                late_rows.append(frame.filter(late).select("_offset", "ts"))
                decoded.frames[family] = frame.filter(~late)
        if late_rows:
            wm = datetime.fromtimestamp(self.watermark_us / 1e6, UTC).isoformat()
            rows = pl.concat(late_rows).select(
                (pl.col("_offset") - decoded.first_offset).alias("_row"),
                pl.lit("late_event").alias("reason"),
                pl.format(
                    "event time {} is behind the watermark {} (allowed lateness {})",
                    pl.col("ts").dt.to_string("%Y-%m-%dT%H:%M:%S%.3fZ"),
                    pl.lit(wm),
                    pl.lit(str(self.allowed_lateness)),
                ).alias("detail"),
            )
            decoded.dead = pl.concat([decoded.dead, dead_letters(decoded, rows, now)]).sort(
                "offset"
            )
        latest = decoded.max_event_ts
        self.observe(int(latest.timestamp() * 1_000_000) if latest else None)
        return decoded
