"""Late events are judged per record, so batch boundaries never change the verdict."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import orjson
import polars as pl

from indicators.watermark import PartitionClock
from schemas.decode import Decoder, RawBatch

NOW = datetime(2026, 5, 12, 9, 0, tzinfo=UTC)
T0 = datetime(2026, 5, 12, 6, 0, tzinfo=UTC)


def reading(second: float) -> bytes:
    ts = (T0 + timedelta(seconds=second)).isoformat().replace("+00:00", "Z")
    return orjson.dumps(
        {
            "family": "reading",
            "ts": ts,
            "device_id": "tmp-1",
            "device_type": "temperature_sensor",
            "metric": "temperature",
            "value": second,
            "site_id": "s1",
            "grid_id": "g1",
            "district_id": "D01",
        }
    )


def run(lines: list[bytes], cuts: list[int], offsets: list[int] | None = None):
    """Feed ``lines`` to one clock in batches cut at ``cuts``; return kept and late values."""
    decoder = Decoder(now=lambda: NOW)
    clock = PartitionClock(timedelta(seconds=30))
    offsets = offsets or list(range(len(lines)))
    kept, late = [], []
    bounds = [0, *cuts, len(lines)]
    for a, b in itertools.pairwise(bounds):
        if a == b:
            continue
        batch = RawBatch("p", 0, offsets[a], lines[a:b], offsets=offsets[a:b])
        out = clock.set_aside_late(decoder.decode(batch), NOW)
        kept += out.frames.get("reading", pl.DataFrame({"value": []}))["value"].to_list()
        late += list(zip(out.dead["offset"].to_list(), out.dead["reason"].to_list(), strict=True))
    return kept, late


def test_a_late_row_inside_one_batch_is_late_as_if_batches_were_single_rows():
    seconds = [0, 100, 60, 75, 101, 40]  # 60 and 40 are > 30 s behind 100; 75 is within
    lines = [reading(s) for s in seconds]
    one_batch = run(lines, cuts=[])
    single_rows = run(lines, cuts=list(range(1, len(lines))))
    assert one_batch == single_rows
    kept, late = one_batch
    assert kept == [0.0, 100.0, 75.0, 101.0]
    assert late == [(2, "late_event"), (5, "late_event")]


def test_verdicts_do_not_depend_on_where_batches_are_cut():
    rng = random.Random(3)
    seconds = [i * 2 + rng.choice([0, 0, 0, -20, -45, -90]) for i in range(300)]
    lines = [reading(max(s, 0)) for s in seconds]
    reference = run(lines, cuts=[])
    assert reference[1], "the input must contain late rows for this test to mean anything"
    for _ in range(10):
        cuts = sorted(rng.sample(range(1, len(lines)), rng.randrange(1, 40)))
        assert run(lines, cuts) == reference


def test_dead_letters_carry_the_explicit_offsets_of_a_batch_with_gaps():
    lines = [reading(s) for s in (100, 10, 101, 5)]
    offsets = [40, 42, 47, 48]  # gaps, as Kafka transaction markers leave
    kept, late = run(lines, cuts=[], offsets=offsets)
    assert kept == [100.0, 101.0]
    assert late == [(42, "late_event"), (48, "late_event")]


def test_the_detail_names_the_event_time_and_the_watermark_it_missed():
    decoder = Decoder(now=lambda: NOW)
    clock = PartitionClock(timedelta(seconds=30))
    batch = RawBatch("p", 0, 0, [reading(100), reading(60)])
    out = clock.set_aside_late(decoder.decode(batch), NOW)
    (detail,) = out.dead["detail"].to_list()
    assert detail == (
        "event time 2026-05-12T06:01:00.000000Z is behind the watermark "
        "2026-05-12T06:01:10.000000Z (allowed lateness 0:00:30)"
    )
