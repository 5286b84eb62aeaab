"""The file source: positions it resumes from, and pipes, which it reads but cannot resume."""

from __future__ import annotations

import os
import threading

import pytest

from flows.sources import JsonLinesSource, SourceError


def read(source: JsonLinesSource, resume=None) -> tuple[list[bytes], tuple[int, int]]:
    part = source.build_part("read", source.list_parts()[0], resume)
    lines = []
    try:
        while True:
            for batch in part.next_batch():
                assert batch.first_offset == len(lines) + (resume or (0, 0))[1]
                lines += batch.lines
    except StopIteration:
        return lines, part.snapshot()
    finally:
        part.close()


def test_a_file_resumes_at_the_byte_and_line_of_its_snapshot(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"a\r\nbb\nccc\ndddd\n")
    part = JsonLinesSource(path, 2).build_part("read", str(path), None)
    assert part.next_batch()[0].lines == [b"a", b"bb"]
    state = part.snapshot()
    part.close()
    assert state == (6, 2)
    assert read(JsonLinesSource(path, 2), state) == ([b"ccc", b"dddd"], (15, 4))


def test_a_pipe_is_read_to_its_end(tmp_path):
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)

    def write():
        with fifo.open("wb") as w:
            w.write(b"".join(b"line-%d\n" % i for i in range(25)))

    writer = threading.Thread(target=write)
    writer.start()
    lines, state = read(JsonLinesSource(fifo, 10))
    writer.join()
    assert lines == [b"line-%d" % i for i in range(25)]
    assert state == (sum(len(b"line-%d\n" % i) for i in range(25)), 25)


def test_a_pipe_cannot_be_resumed(tmp_path):
    r, w = os.pipe()
    try:
        source = JsonLinesSource(f"/dev/fd/{r}", 10)
        refused = r"cannot resume /dev/fd/\d+ at byte 7: .*not seekable"
        with pytest.raises(SourceError, match=refused):
            source.build_part("read", source.list_parts()[0], (7, 2))
    finally:
        os.close(w)
        os.close(r)
