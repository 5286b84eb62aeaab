"""Bytewax sources: raw batches of wire records, with resumable positions.

Every source yields :class:`schemas.decode.RawBatch` items so that the rest of
the flow never sees one record at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from flows import shutdown
from flows.config import DEFAULT_BATCH_SIZE
from schemas.decode import RawBatch, partition_key

__all__ = ["BatchIteratorSource", "JsonLinesSource", "SourceError"]


class SourceError(RuntimeError):
    """A source cannot be read as asked."""


class _FilePartition(StatefulSourcePartition[RawBatch, tuple[int, int]]):
    def __init__(self, path: Path, batch_size: int, resume: tuple[int, int] | None) -> None:
        self._path = path
        self._batch_size = batch_size
        self._file = path.open("rb")
        self._byte, self._line = resume or (0, 0)
        if self._byte:
            if not self._file.seekable():
                self._file.close()
                raise SourceError(
                    f"cannot resume {path} at byte {self._byte}: it is not seekable (a pipe?)"
                )
            self._file.seek(self._byte)

    def next_batch(self) -> list[RawBatch]:
        if shutdown.requested():  # SIGTERM: stop reading, let the sinks flush
            raise StopIteration
        raw = list(islice(self._file, self._batch_size))
        if not raw:
            raise StopIteration
        batch = RawBatch(str(self._path), 0, self._line, [line.rstrip(b"\r\n") for line in raw])
        self._line += len(raw)
        self._byte += sum(map(len, raw))  # counted, not told: a pipe has no position
        return [batch]

    def snapshot(self) -> tuple[int, int]:
        return (self._byte, self._line)

    def close(self) -> None:
        self._file.close()


class JsonLinesSource(FixedPartitionedSource[RawBatch, tuple[int, int]]):
    """A JSON-lines file, read in batches of ``batch_size`` lines.

    Offsets in dead letters are 0-based line numbers. The resume state is
    (byte offset, line number), so a recovered run continues where it was.
    ``path`` may also be a pipe (a FIFO, ``/dev/stdin``), which is read to its end
    but cannot be resumed.
    """

    def __init__(self, path: Path | str, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.path = Path(path)
        self.batch_size = batch_size

    def list_parts(self) -> list[str]:
        return [partition_key(str(self.path), 0)]

    def build_part(self, step_id, for_part, resume_state):
        return _FilePartition(self.path, self.batch_size, resume_state)


class _IterPartition(StatefulSourcePartition[RawBatch, int]):
    def __init__(self, name: str, make: Callable[[], Iterator[list[bytes]]], resume: int | None):
        self._name = name
        self._batches = make()
        self._done = 0
        self._offset = 0
        for _ in range(resume or 0):  # the generator is deterministic: replay to resume
            self._offset += len(next(self._batches))
            self._done += 1

    def next_batch(self) -> list[RawBatch]:
        lines = next(self._batches)  # StopIteration ends the partition
        batch = RawBatch(self._name, 0, self._offset, lines)
        self._offset += len(lines)
        self._done += 1
        return [batch]

    def snapshot(self) -> int:
        return self._done

    def close(self) -> None:
        pass


class BatchIteratorSource(FixedPartitionedSource[RawBatch, int]):
    """Batches of lines from a deterministic generator (the embedded simulator).

    ``make`` must return the same batches every time it is called, so that a
    resumed run can skip what it already processed.
    """

    def __init__(self, name: str, make: Callable[[], Iterator[list[bytes]]]) -> None:
        self.name = name
        self.make = make

    def list_parts(self) -> list[str]:
        return [partition_key(self.name, 0)]

    def build_part(self, step_id, for_part, resume_state):
        return _IterPartition(self.name, self.make, resume_state)
