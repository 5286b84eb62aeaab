"""Bytewax sinks: buffered, atomic, idempotent Parquet writes into the lake.

The sink has one partition per shard key (``parts``), each a writer of its
own files. A partition buffers the Arrow tables it receives and writes them as
one Parquet file per date when ``flush_rows`` rows are waiting, when
``flush_interval`` has passed since the last write, at every snapshot, and
when the flow ends.

Recovery: a partition's state is its writer name and the number of its next
file. A snapshot writes what is buffered first, so every row before the
snapshot is in a file numbered below that. A partition resumed from the
snapshot deletes its files numbered from there on, because the replay that
follows writes those rows again: rows are never lost and never doubled.

With ``stable_writers`` (runs with recovery) a partition's writer name is
fixed (``r<part>``), and a partition that starts without state deletes all
of that writer's files: the flow starts over, so what a previous start wrote
(even one killed before its first snapshot was saved) is written again.
Without it (one-off runs that append), every run writes under a new name.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import timedelta

import pyarrow as pa
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from cityvitals.lake import Lake
from flows import shutdown
from flows.metrics import observe_sink

__all__ = ["ParquetSink"]

log = logging.getLogger("cityvitals.sinks")


class _Partition(StatefulSinkPartition[pa.Table, tuple[str, int]]):
    def __init__(
        self, lake: Lake, table: str, writer: str, seq: int, rows: int, interval: float
    ) -> None:
        self._lake = lake
        self._table = table
        self._writer = writer
        self._seq = seq
        self._rows = rows
        self._interval = interval
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._last = time.monotonic()

    def write_batch(self, items: list[pa.Table]) -> None:
        for t in items:
            if t.num_rows:
                self._buffer.append(t)
                self._buffered += t.num_rows
        due = time.monotonic() - self._last >= self._interval
        if self._buffered >= self._rows or (due and self._buffered):
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            started = time.perf_counter()
            data = pa.concat_tables(self._buffer, promote_options="none")
            files = self._lake.write(self._table, data, self._writer, self._seq)
            self._seq += len(files)
            seconds = time.perf_counter() - started
            observe_sink(self._table, data.num_rows, seconds)
            log.log(
                logging.INFO if shutdown.requested() else logging.DEBUG,  # the last ones: INFO
                "flush",
                extra={
                    "table": self._table,
                    "writer": self._writer,
                    "rows": data.num_rows,
                    "files": len(files),
                    "seconds": round(seconds, 4),
                },
            )
        self._buffer, self._buffered, self._last = [], 0, time.monotonic()

    def snapshot(self) -> tuple[str, int]:
        self._flush()
        return (self._writer, self._seq)

    def close(self) -> None:
        self._flush()


class ParquetSink(FixedPartitionedSink[pa.Table, tuple[str, int]]):
    """Writes Arrow tables of one output table into the lake, one writer per part."""

    def __init__(
        self,
        lake: Lake,
        table: str,
        parts: list[str],
        flush_rows: int = 200_000,
        flush_interval: timedelta = timedelta(seconds=2),
        stable_writers: bool = False,
    ) -> None:
        lake.table_dir(table)  # fails early, naming the tables there are
        self.lake = lake
        self.table = table
        self.parts = parts
        self.flush_rows = flush_rows
        self.flush_interval = flush_interval
        self.stable_writers = stable_writers
        # Unique per run and process, so runs that append never overwrite a file;
        # a resumed partition keeps the writer name of its snapshot instead.
        self._run = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}"

    def list_parts(self) -> list[str]:
        return self.parts

    def build_part(self, step_id: str, for_part: str, resume_state: tuple[str, int] | None):
        if resume_state is None and self.stable_writers:
            writer, seq = f"r{for_part}", 0
            self.lake.discard_from(self.table, writer, seq)
        elif resume_state is None:
            writer, seq = f"{self._run}-{for_part}", 0
        else:
            writer, seq = resume_state
            self.lake.discard_from(self.table, writer, seq)
        return _Partition(
            self.lake,
            self.table,
            writer,
            seq,
            self.flush_rows,
            self.flush_interval.total_seconds(),
        )
