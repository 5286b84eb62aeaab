"""Batches decoded together (:meth:`Decoder.decode_all`) come out as each decoded alone."""

from __future__ import annotations

import random
from itertools import islice

import pytest

from cityvitals.simulate import Scenario, generate
from schemas.decode import Decoded, Decoder, RawBatch
from tests.schemas.test_decode import NOW, line


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    """A simulated district with one line in twenty corrupted, in every way it corrupts."""
    scenario = Scenario(devices=300, minutes=60, seed=11, bad_rate=0.05)
    out = [raw for batch in islice(generate(scenario), 40) for raw in batch]
    return out[:6_000]


def batches_of(lines: list[bytes], seed: int) -> list[RawBatch]:
    """``lines`` cut into batches of random sizes (empty ones too), on several partitions:
    Kafka-like ones with gappy offsets, and file-like ones numbered from their first line."""
    rng = random.Random(seed)
    out, at = [], 0
    while at < len(lines):
        size = rng.choice([0, 1, 7, 150, 900, 2_500])
        part = lines[at : at + size]
        if rng.random() < 0.5:
            first = rng.randrange(10**6)
            offsets = [first + 2 * i + rng.randrange(2) for i in range(len(part))]
            out.append(RawBatch("city.readings", rng.randrange(4), first, part, offsets=offsets))
        else:
            out.append(RawBatch("sim.jsonl", None, at, part))
        at += size
    return out


def same(got: Decoded, want: Decoded) -> None:
    assert (got.source, got.partition, got.first_offset) == (
        want.source,
        want.partition,
        want.first_offset,
    )
    assert (got.events_in, got.valid, got.max_event_ts) == (
        want.events_in,
        want.valid,
        want.max_event_ts,
    )
    assert list(got.frames) == list(want.frames)
    for family, frame in want.frames.items():
        assert got.frames[family].equals(frame), family
    assert got.dead.equals(want.dead)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batches_decoded_together_equal_each_decoded_alone(lines, seed):
    decoder = Decoder(now=lambda: NOW)
    batches = batches_of(lines, seed)
    got = decoder.decode_all(batches)
    assert len(got) == len(batches)
    for batch, out in zip(batches, got, strict=True):
        same(out, decoder.decode(batch))
    dead = sum(out.dead.height for out in got)
    assert 0 < dead < len(lines)  # the input has bad lines, and most are good
    assert sum(out.valid for out in got) + dead == len(lines)


def test_a_bad_line_is_a_dead_letter_of_its_own_batch_at_its_own_offset():
    decoder = Decoder(now=lambda: NOW)
    a = RawBatch("t", 0, 40, [line("reading"), b'{"family":'], offsets=[40, 43])
    b = RawBatch("t", 1, 7, [b"[1]", line("gate")])
    idle = RawBatch("t", 2, 0, [], ended=True)
    got_a, got_idle, got_b = decoder.decode_all([a, idle, b])
    assert got_a.dead.select("partition", "offset", "reason").rows() == [(0, 43, "malformed_json")]
    assert got_b.dead.select("partition", "offset", "reason").rows() == [(1, 7, "not_an_object")]
    assert got_a.frames["reading"]["_offset"].to_list() == [40]
    assert got_b.frames["gate"]["_offset"].to_list() == [8]
    assert (got_idle.events_in, got_idle.frames, got_idle.dead.height) == (0, {}, 0)
