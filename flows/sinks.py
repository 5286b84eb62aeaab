"""Bytewax sinks: buffered, atomic Parquet writes into the lake.

Each worker buffers the Arrow tables it receives and writes them as one
Parquet file per date when ``flush_rows`` rows are waiting, when
``flush_interval`` has passed since the last write, or when the flow ends.
"""

from __future__ import annotations

import itertools
import os
import time
from datetime import timedelta

import pyarrow as pa
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from cityvitals.lake import Lake

__all__ = ["ParquetSink"]


class _Partition(StatelessSinkPartition[pa.Table]):
    def __init__(self, lake: Lake, table: str, writer: str, rows: int, interval: float) -> None:
        self._lake = lake
        self._table = table
        self._writer = writer
        self._rows = rows
        self._interval = interval
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._last = time.monotonic()
        self._seq = itertools.count()

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
            data = pa.concat_tables(self._buffer, promote_options="none")
            self._lake.write(self._table, data, self._writer, self._seq)
        self._buffer, self._buffered, self._last = [], 0, time.monotonic()

    def close(self) -> None:
        self._flush()


class ParquetSink(DynamicSink[pa.Table]):
    """Writes Arrow tables of one output table into the lake."""

    def __init__(
        self,
        lake: Lake,
        table: str,
        flush_rows: int = 200_000,
        flush_interval: timedelta = timedelta(seconds=2),
    ) -> None:
        lake.table_dir(table)  # fails early, naming the tables there are
        self.lake = lake
        self.table = table
        self.flush_rows = flush_rows
        self.flush_interval = flush_interval
        # Unique per run and process, so runs that append never overwrite a file.
        self._run = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}"

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        return _Partition(
            self.lake,
            self.table,
            f"{self._run}-w{worker_index}",
            self.flush_rows,
            self.flush_interval.total_seconds(),
        )
