"""The decoder's shortcut: each family's rows checked as a whole, row by row only on failure.

A family whose rows pass every column-wide check gets no per-row verdict, so these
tests put invalid rows where only a sound check finds them (another family's fields,
one bad row among good ones of its own family) and next to families that stay clean.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from schemas.decode import Decoder, RawBatch
from tests.schemas.test_decode import NOW, line


@pytest.fixture
def decoder() -> Decoder:
    return Decoder(now=lambda: NOW)


def decode(decoder: Decoder, lines, first_offset: int = 0, offsets=None):
    return decoder.decode(RawBatch("test-src", 2, first_offset, list(lines), offsets=offsets))


def test_non_finite_number_in_another_familys_field_is_dead(decoder):
    """``value`` is no heartbeat field, but every number a row carries must be finite."""
    beat = line("heartbeat").replace(b'"battery_pct"', b'"value":1e999,"battery_pct"')
    out = decode(decoder, [line("heartbeat"), beat, line("reading"), line("gate")])
    assert out.dead.select("offset", "reason").rows() == [(1, "non_finite_value")]
    assert {k: f.height for k, f in out.frames.items()} == {"heartbeat": 1, "reading": 1, "gate": 1}


def test_another_familys_field_is_not_checked_against_its_list(decoder):
    """A heartbeat with an unknown ``metric`` or ``status`` (no heartbeat fields) is valid."""
    odd = line("heartbeat", metric="wind_speed", status="lost", direction={"x": 1})
    out = decode(decoder, [odd, line("reading")])
    assert out.dead.height == 0
    assert out.frames["heartbeat"]["device_id"].to_list() == ["cam-7"]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (line("reading", metric="smoke"), "metric_device_mismatch"),
        (line("reading", device_type="camera", metric="illegal_parking", value=1.0), None),
        (line("reading", site_id=None), "missing_field"),
        (line("reading", metric="wind_speed"), "unknown_value"),
        (line("reading", device_type="toaster"), "unknown_device_type"),
        (line("reading", ts="2026-05-12T06:00:00"), "bad_timestamp"),
        (line("reading", ts="2026-05-14T06:00:00Z"), "timestamp_out_of_range"),
    ],
)
@pytest.mark.parametrize("position", [0, 17, 39])
def test_one_bad_row_among_many_of_its_family(decoder, bad, reason, position):
    """The bad row is found wherever it sits; its neighbours and other families stay."""
    lines = [line("reading", value=float(i)) for i in range(40)]
    lines[position] = bad
    lines += [line("gate"), line("workorder"), line("heartbeat")]
    out = decode(decoder, lines, first_offset=100)
    if reason is None:  # a camera measures illegal parking: valid
        assert out.dead.height == 0
        assert out.frames["reading"].height == 40
        return
    assert out.dead.select("offset", "reason").rows() == [(100 + position, reason)]
    assert out.frames["reading"]["_offset"].to_list() == [
        100 + i for i in range(40) if i != position
    ]
    assert {k: f.height for k, f in out.frames.items()} == {
        "reading": 39,
        "gate": 1,
        "workorder": 1,
        "heartbeat": 1,
    }


def test_frames_come_in_the_order_of_their_first_valid_row(decoder):
    lines = [
        line("gate", direction="up"),
        line("heartbeat"),
        line("reading", family=None),
        line("gate"),
        line("reading"),
    ]
    out = decode(decoder, lines)
    assert list(out.frames) == ["heartbeat", "gate", "reading"]
    assert out.dead.select("offset", "reason").rows() == [
        (0, "unknown_value"),
        (2, "missing_field"),
    ]


def test_event_times_of_every_precision_in_one_batch(decoder):
    """Milliseconds (the usual form, parsed first), none, micro-, deci- and an offset."""
    stamps = {
        "2026-05-12T06:00:00.250Z": datetime(2026, 5, 12, 6, 0, 0, 250_000, tzinfo=UTC),
        "2026-05-12T06:00:01Z": datetime(2026, 5, 12, 6, 0, 1, tzinfo=UTC),
        "2026-05-12T06:00:02.123456Z": datetime(2026, 5, 12, 6, 0, 2, 123_456, tzinfo=UTC),
        "2026-05-12T06:00:03.5Z": datetime(2026, 5, 12, 6, 0, 3, 500_000, tzinfo=UTC),
        "2026-05-12T08:00:04.125+02:00": datetime(2026, 5, 12, 6, 0, 4, 125_000, tzinfo=UTC),
        "2026-05-12T06:00:60.000Z": datetime(2026, 5, 12, 6, 1, tzinfo=UTC),  # a leap second
    }
    out = decode(decoder, [line("heartbeat", ts=ts) for ts in stamps])
    assert out.dead.height == 0
    assert out.frames["heartbeat"]["ts"].to_list() == list(stamps.values())
    assert out.max_event_ts == datetime(2026, 5, 12, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize("ts", ["2026-02-30T06:00:00.000Z", "2026-05-12T24:00:00.000Z"])
def test_impossible_millisecond_time_is_bad(decoder, ts):
    out = decode(decoder, [line("heartbeat"), line("heartbeat", ts=ts)])
    assert out.dead.select("offset", "reason").rows() == [(1, "bad_timestamp")]


def test_naive_now_is_utc():
    """An injected clock without a time zone reads as UTC, as the row verdict reads it."""
    naive = Decoder(max_future=timedelta(hours=1), now=lambda: NOW.replace(tzinfo=None))
    ok = (NOW + timedelta(minutes=59)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    ahead = (NOW + timedelta(minutes=61)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    out = decode(naive, [line("heartbeat", ts=ok), line("heartbeat", ts=ahead)])
    assert out.dead.select("offset", "reason").rows() == [(1, "timestamp_out_of_range")]
    assert out.frames["heartbeat"].height == 1


def test_offsets_with_gaps_when_a_family_is_judged_row_by_row(decoder):
    lines = [line("gate"), line("gate", lift_ms=None), line("reading"), line("gate")]
    offsets = [10, 13, 14, 20]
    out = decode(decoder, lines, first_offset=10, offsets=offsets)
    assert out.frames["gate"]["_offset"].to_list() == [10, 20]
    assert out.frames["reading"]["_offset"].to_list() == [14]
    assert out.dead.select("offset", "reason").rows() == [(13, "missing_field")]


def test_nested_value_is_found_in_a_family_judged_row_by_row(decoder):
    """A mistyped (nested) field and a bad value in the same family, each with its reason."""
    lines = [
        line("reading", device_id={"id": 1}),
        line("reading", metric="wind_speed"),
        line("reading"),
        orjson.dumps({"family": "heartbeat", "tags": [1, 2]}),
    ]
    out = decode(decoder, lines)
    assert out.dead.select("offset", "reason").rows() == [
        (0, "mistyped_field"),
        (1, "unknown_value"),
        (3, "missing_field"),
    ]
    assert out.frames["reading"]["_offset"].to_list() == [2]


@pytest.mark.parametrize("guess", ["never", "always", "every_other"])
def test_the_guess_at_refused_lines_only_saves_time(decoder, monkeypatch, guess):
    """Lines of a rejected part are screened by a guess; the parser decides each line,
    so a guess that misses bad lines or points at good ones changes nothing."""
    good = [line("reading", value=float(i)) for i in range(300)]
    lines = list(good)
    for pos, raw in [
        (3, b'{"family":"reading"'),
        (50, b"[1, 2]"),
        (51, line("gate", lift_ms="slow")),
        (52, b""),
        (199, line("reading", value=1.5).replace(b"1.5", b"1e999")),
        (200, line("workorder", status="lost")),
        (299, line("reading", device_id={"id": 1})),
    ]:
        lines[pos] = raw
    want = decode(decoder, lines, first_offset=7)
    calls = iter(range(10**6))
    fake = {
        "never": lambda _: False,
        "always": lambda _: True,
        "every_other": lambda _: next(calls) % 2 == 0,
    }[guess]
    monkeypatch.setattr("schemas.decode._maybe_refused", fake)
    got = decode(decoder, lines, first_offset=7)
    assert got.dead.equals(want.dead)
    assert list(got.frames) == list(want.frames)
    for family, frame in want.frames.items():
        assert got.frames[family].equals(frame), family
    assert want.dead.select("offset", "reason").rows() == [
        (10, "malformed_json"),
        (57, "not_an_object"),
        (58, "mistyped_field"),
        (59, "malformed_json"),
        (206, "non_finite_value"),
        (207, "unknown_value"),
        (306, "mistyped_field"),
    ]
