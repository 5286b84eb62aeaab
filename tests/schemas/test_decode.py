"""Decoding of wire batches: frames per family, dead letters, offsets, bisection."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import orjson
import polars as pl
import pytest

from schemas.decode import Decoder, RawBatch
from schemas.families import DEAD_LETTER_REASONS, DEAD_LETTERS, INPUT_FAMILIES, polars_schema

NOW = datetime(2026, 5, 12, 7, 0, tzinfo=UTC)

GOOD: dict[str, dict] = {
    "reading": {
        "family": "reading",
        "ts": "2026-05-12T06:52:30.000Z",
        "device_id": "tmp-000123",
        "device_type": "temperature_sensor",
        "metric": "temperature",
        "value": 84.5,
        "site_id": "bldg-08/flat-1203",
        "grid_id": "D01-G04",
        "district_id": "D01",
    },
    "heartbeat": {
        "family": "heartbeat",
        "ts": "2026-05-12T06:50:00Z",
        "device_id": "cam-7",
        "device_type": "camera",
        "grid_id": "D01-G04",
        "district_id": "D01",
        "battery_pct": 88,
    },
    "gate": {
        "family": "gate",
        "ts": "2026-05-12T06:40:00.125Z",
        "garage_id": "garage-3",
        "gate_id": "garage-3/g1",
        "direction": "in",
        "lift_ms": 850,
        "plate_hash": "ab12",
        "grid_id": "D01-G04",
        "district_id": "D01",
    },
    "workorder": {
        "family": "workorder",
        "ts": "2026-05-12T06:01:12.000Z",
        "order_id": "WO-000042",
        "status": "reported",
        "event_class": "small",
        "department": "urban_management",
        "grid_id": "D01-G05",
        "district_id": "D01",
        "source": "grid_worker",
    },
}

#: Declared dtype of every non-string column, per family.
EXPECTED_DTYPES = {
    "reading": {"value": pl.Float64, "capacity": pl.Float64},
    "heartbeat": {"battery_pct": pl.Float64},
    "gate": {"lift_ms": pl.Float64},
    "workorder": {"satisfied": pl.Boolean},
}


def line(kind: str = "reading", /, **changes) -> bytes:
    """A wire line of family ``kind``; a change to ``...`` removes the field."""
    obj = dict(GOOD[kind])
    for key, value in changes.items():
        if value is ...:
            obj.pop(key, None)
        else:
            obj[key] = value
    return orjson.dumps(obj)


@pytest.fixture
def decoder() -> Decoder:
    return Decoder(now=lambda: NOW)


def decode(decoder: Decoder, lines, first_offset: int = 0):
    return decoder.decode(RawBatch("test-src", 2, first_offset, list(lines)))


def only_dead(decoder: Decoder, bad: bytes, first_offset: int = 500) -> dict:
    """Decode ``bad`` between two good lines; return its one dead letter as a dict."""
    good = line("reading")
    out = decode(decoder, [good, bad, good], first_offset)
    assert out.events_in == 3
    assert out.valid == 2, out.dead.rows()
    assert out.dead.height == 1
    row = out.dead.row(0, named=True)
    assert row["offset"] == first_offset + 1
    assert row["raw"] == bad
    assert row["source"] == "test-src"
    assert row["partition"] == 2
    assert out.frames["reading"]["_offset"].to_list() == [first_offset, first_offset + 2]
    return row


# -- clean batches ---------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(INPUT_FAMILIES))
def test_clean_batch_of_each_family_has_declared_dtypes(decoder, family):
    lines = [line(family, ts=f"2026-05-12T06:{m:02d}:00Z") for m in range(5)]
    out = decode(decoder, lines, first_offset=10)

    assert out.dead.height == 0
    assert list(out.frames) == [family]
    frame = out.frames[family]
    assert frame.height == 5
    assert out.events_in == out.valid + out.dead.height == 5
    assert set(INPUT_FAMILIES[family].names) <= set(frame.columns)
    assert frame.schema["ts"] == pl.Datetime("us", "UTC")
    for name, dtype in EXPECTED_DTYPES[family].items():
        assert frame.schema[name] == dtype, name
    assert frame["ts"].to_list() == [datetime(2026, 5, 12, 6, m, tzinfo=UTC) for m in range(5)]
    assert frame["_offset"].to_list() == list(range(10, 15))
    assert out.max_event_ts == datetime(2026, 5, 12, 6, 4, tzinfo=UTC)


def test_mixed_clean_batch_splits_by_family_and_keeps_values(decoder):
    lines = [line(f) for f in ("reading", "gate", "workorder", "heartbeat", "reading")]
    out = decode(decoder, lines)

    assert {k: v.height for k, v in out.frames.items()} == {
        "reading": 2,
        "gate": 1,
        "workorder": 1,
        "heartbeat": 1,
    }
    assert out.events_in == out.valid + out.dead.height == 5
    assert out.frames["reading"]["value"].to_list() == [84.5, 84.5]
    assert out.frames["reading"]["_offset"].to_list() == [0, 4]
    assert out.frames["gate"]["lift_ms"].to_list() == [850.0]
    assert out.frames["heartbeat"]["battery_pct"].to_list() == [88.0]
    assert out.frames["gate"]["ts"].to_list() == [
        datetime(2026, 5, 12, 6, 40, 0, 125_000, tzinfo=UTC)
    ]


def test_nullable_fields_may_be_absent_or_null(decoder):
    out = decode(
        decoder,
        [
            line("reading", capacity=None),
            line("reading", capacity=120),
            line("workorder", source=..., satisfied=None),
            line("workorder", status="closed", satisfied=True),
        ],
    )
    assert out.dead.height == 0
    assert out.frames["reading"]["capacity"].to_list() == [None, 120.0]
    assert out.frames["workorder"]["satisfied"].to_list() == [None, True]


def test_extra_unknown_fields_are_ignored(decoder):
    extra = line("reading", firmware="1.2.3", meta={"nested": [1, 2]}, value=12.0)
    out = decode(decoder, [extra, line("reading")])
    assert out.dead.height == 0
    frame = out.frames["reading"]
    assert frame["value"].to_list() == [12.0, 84.5]
    assert "firmware" not in frame.columns
    assert "meta" not in frame.columns


@pytest.mark.parametrize(
    ("wire", "utc"),
    [
        ("2026-05-12T14:00:00+08:00", datetime(2026, 5, 12, 6, 0, tzinfo=UTC)),
        ("2026-05-12T07:30:00.250+08:00", datetime(2026, 5, 11, 23, 30, 0, 250_000, tzinfo=UTC)),
        ("2026-05-12T03:00:00-03:00", datetime(2026, 5, 12, 6, 0, tzinfo=UTC)),
    ],
)
@pytest.mark.parametrize("position", [0, 1])
def test_offsets_are_converted_to_utc(decoder, wire, utc, position):
    lines = [line("reading", value=1.0), line("reading", value=2.0)]
    lines[position] = line("reading", ts=wire, value=99.0)
    out = decode(decoder, lines)
    assert out.dead.height == 0
    frame = out.frames["reading"]
    assert frame.schema["ts"] == pl.Datetime("us", "UTC")
    assert frame.filter(pl.col("value") == 99.0)["ts"].to_list() == [utc]
    others = frame.filter(pl.col("value") != 99.0)["ts"].to_list()
    assert others == [datetime(2026, 5, 12, 6, 52, 30, tzinfo=UTC)]


def test_all_lines_with_offsets_in_one_batch(decoder):
    lines = [line("heartbeat", ts=f"2026-05-12T14:0{m}:00+08:00") for m in range(3)]
    out = decode(decoder, lines)
    assert out.frames["heartbeat"]["ts"].to_list() == [
        datetime(2026, 5, 12, 6, m, tzinfo=UTC) for m in range(3)
    ]


def test_empty_batch(decoder):
    out = decode(decoder, [])
    assert out.events_in == 0
    assert out.valid == 0
    assert out.dead.height == 0
    assert out.max_event_ts is None


# -- one test per dead-letter reason ------------------------------------------------


ONE_PER_REASON: dict[str, bytes] = {
    "malformed_json": b"{oops",
    "not_an_object": b"[]",
    "unknown_family": line("reading", family="weather"),
    "missing_field": line("gate", garage_id=...),
    "mistyped_field": line("reading", value="high"),
    "unknown_device_type": line("heartbeat", device_type="toaster"),
    "unknown_value": line("workorder", status="lost"),
    "metric_device_mismatch": line("reading", metric="smoke"),
    "non_finite_value": line("reading", value=1.5).replace(b"1.5", b"NaN"),
    "bad_timestamp": line("reading", ts="yesterday"),
    "timestamp_out_of_range": line("reading", ts="1970-01-01T00:00:00Z"),
}


def test_every_reason_but_late_event_in_one_batch(decoder):
    """late_event is the ingest step's call (see indicators.watermark), not the decoder's."""
    assert set(ONE_PER_REASON) == set(DEAD_LETTER_REASONS) - {"late_event"}
    good = line("reading")
    lines = [good]
    for raw in ONE_PER_REASON.values():
        lines += [raw, good]
    out = decode(decoder, lines, first_offset=9)
    assert out.dead.schema == polars_schema(DEAD_LETTERS)
    assert out.dead.select("offset", "reason", "raw").rows() == [
        (9 + 2 * i + 1, reason, raw) for i, (reason, raw) in enumerate(ONE_PER_REASON.items())
    ]
    assert out.valid == len(ONE_PER_REASON) + 1
    assert out.frames["reading"]["_offset"].to_list() == list(range(9, 9 + len(lines), 2))


def test_malformed_json(decoder):
    row = only_dead(decoder, b'{"family":"reading","ts":')
    assert row["reason"] == "malformed_json"


@pytest.mark.parametrize("bad", [b"", b"   ", b"\t"])
def test_empty_line_is_malformed(decoder, bad):
    row = only_dead(decoder, bad)
    assert row["reason"] == "malformed_json"
    assert "empty" in row["detail"]


@pytest.mark.parametrize("bad", [b"[1, 2, 3]", b'[{"family": "reading"}]', b"42", b'"text"'])
def test_json_that_is_not_an_object(decoder, bad):
    row = only_dead(decoder, bad)
    assert row["reason"] == "not_an_object"


def test_unknown_family(decoder):
    row = only_dead(decoder, line("reading", family="weather"))
    assert row["reason"] == "unknown_family"
    assert "weather" in row["detail"]


@pytest.mark.parametrize(
    ("family", "field"),
    [
        ("reading", "site_id"),
        ("reading", "value"),
        ("reading", "ts"),
        ("heartbeat", "device_id"),
        ("gate", "lift_ms"),
        ("workorder", "order_id"),
        ("workorder", "event_class"),
    ],
)
def test_missing_field_is_named(decoder, family, field):
    row = only_dead(decoder, line(family, **{field: ...}))
    assert row["reason"] == "missing_field"
    assert field in row["detail"]


def test_null_required_field_is_missing(decoder):
    row = only_dead(decoder, line("gate", gate_id=None))
    assert row["reason"] == "missing_field"
    assert "gate_id" in row["detail"]


def test_missing_family_is_missing_field(decoder):
    row = only_dead(decoder, line("reading", family=...))
    assert row["reason"] == "missing_field"
    assert "family" in row["detail"]


def test_string_for_number_is_mistyped(decoder):
    row = only_dead(decoder, line("reading", value="high"))
    assert row["reason"] == "mistyped_field"
    assert "value" in row["detail"]


def test_bool_for_number_is_mistyped(decoder):
    row = only_dead(decoder, line("gate", lift_ms=True))
    assert row["reason"] == "mistyped_field"
    assert "lift_ms" in row["detail"]


@pytest.mark.parametrize("nested", [{"id": 1}, ["a", "b"]])
def test_nested_value_in_string_field_is_mistyped(decoder, nested):
    row = only_dead(decoder, line("reading", device_id=nested))
    assert row["reason"] == "mistyped_field"
    assert "device_id" in row["detail"]


def test_unknown_device_type(decoder):
    row = only_dead(decoder, line("heartbeat", device_type="toaster"))
    assert row["reason"] == "unknown_device_type"
    assert "toaster" in row["detail"]


@pytest.mark.parametrize(
    ("family", "field", "value"),
    [
        ("workorder", "status", "lost"),
        ("workorder", "event_class", "huge"),
        ("workorder", "source", "pigeon"),
        ("reading", "metric", "wind_speed"),
        ("gate", "direction", "sideways"),
    ],
)
def test_unknown_enum_value(decoder, family, field, value):
    row = only_dead(decoder, line(family, **{field: value}))
    assert row["reason"] == "unknown_value"
    assert field in row["detail"]
    assert value in row["detail"]


def test_metric_device_mismatch(decoder):
    row = only_dead(decoder, line("reading", metric="water_level"))
    assert row["reason"] == "metric_device_mismatch"
    assert "water_level" in row["detail"]
    assert "temperature_sensor" in row["detail"]


@pytest.mark.parametrize("number", [b"NaN", b"1e999", b"-1e999", b"Infinity"])
def test_non_finite_value(decoder, number):
    bad = line("reading", value=12345.5).replace(b"12345.5", number)
    assert number in bad
    row = only_dead(decoder, bad)
    assert row["reason"] == "non_finite_value"


@pytest.mark.parametrize("ts", ["yesterday", "12/05/2026 06:00", "2026-13-45T99:00:00Z"])
def test_bad_timestamp(decoder, ts):
    row = only_dead(decoder, line("reading", ts=ts))
    assert row["reason"] == "bad_timestamp"
    assert "ts" in row["detail"]


@pytest.mark.parametrize("position", [0, 1, 2])
def test_naive_timestamp_without_offset_is_bad(decoder, position):
    """RFC 3339 requires an offset, wherever the line sits in its batch."""
    naive = line("reading", ts="2026-05-12T06:00:00", value=7.0)
    lines = [line("reading", value=1.0), line("reading", value=2.0), line("reading", value=3.0)]
    lines[position] = naive
    out = decode(decoder, lines, first_offset=40)
    assert out.dead.select("offset", "reason").rows() == [(40 + position, "bad_timestamp")]
    assert 7.0 not in out.frames["reading"]["value"].to_list()
    assert out.events_in == out.valid + out.dead.height


def test_valid_offset_timestamp_does_not_depend_on_its_neighbours(decoder):
    """A line's fate is its own: a naive timestamp before it must not reject it."""
    lines = [
        line("heartbeat", ts="2026-05-12T06:00:00", device_id="naive"),
        line("heartbeat", ts="2026-05-12T14:00:00+08:00", device_id="cst"),
    ]
    out = decode(decoder, lines)
    frame = out.frames.get("heartbeat")
    assert frame is not None
    assert frame.select("device_id", "ts").rows() == [("cst", datetime(2026, 5, 12, 6, tzinfo=UTC))]
    assert out.dead.select("offset", "reason").rows() == [(0, "bad_timestamp")]


@pytest.mark.parametrize("ts", ["2026-05-12T06:00:00", "2026-05-12T06:00:00.5", "2026-05-12"])
def test_timestamp_without_offset_alone_is_bad(decoder, ts):
    out = decode(decoder, [line("heartbeat", ts=ts)])
    assert out.dead["reason"].to_list() == ["bad_timestamp"]
    assert out.valid == 0


@pytest.mark.parametrize("ts", ["1970-01-01T00:00:00Z", "2099-01-01T00:00:00Z"])
def test_timestamp_out_of_range(decoder, ts):
    row = only_dead(decoder, line("reading", ts=ts))
    assert row["reason"] == "timestamp_out_of_range"
    assert "ts" in row["detail"]


def test_out_of_range_follows_injected_now():
    """The range is measured from ``now()``: max_future ahead, max_age behind."""
    decoder = Decoder(max_future=timedelta(days=1), max_age=timedelta(days=10), now=lambda: NOW)

    def stamp(delta: timedelta) -> str:
        return (NOW + delta).strftime("%Y-%m-%dT%H:%M:%SZ")

    deltas = [
        timedelta(hours=23),  # ok
        timedelta(hours=25),  # too far ahead
        -timedelta(days=9),  # ok
        -timedelta(days=11),  # too old
    ]
    out = decode(decoder, [line("heartbeat", ts=stamp(d)) for d in deltas])
    assert out.dead.select("offset", "reason").rows() == [
        (1, "timestamp_out_of_range"),
        (3, "timestamp_out_of_range"),
    ]
    assert out.frames["heartbeat"]["_offset"].to_list() == [0, 2]

    later = Decoder(now=lambda: NOW + timedelta(days=365 * 80))
    out = decode(later, [line("heartbeat", ts="2099-01-01T00:00:00Z")])
    assert out.dead.height == 0


def test_string_that_starts_with_a_bracket_is_still_a_string(decoder):
    """Only a JSON object or array is mistyped; a string value is a string."""
    out = decode(decoder, [line("reading", site_id="[B2] garage"), line("gate", gate_id="{g1}")])
    assert out.dead.select("reason", "detail").rows() == []
    assert out.frames["reading"]["site_id"].to_list() == ["[B2] garage"]
    assert out.frames["gate"]["gate_id"].to_list() == ["{g1}"]


def test_multi_line_json_object_is_not_called_mistyped(decoder):
    """A Kafka value holding a pretty-printed object is JSON with no mistyped field.

    Either it is accepted, or it is a framing problem (``malformed_json``); calling
    it ``mistyped_field`` sends operators looking for a wrong type that isn't there.
    """
    pretty = orjson.dumps(GOOD["reading"], option=orjson.OPT_INDENT_2)
    assert b"\n" in pretty
    out = decode(decoder, [line("reading"), pretty])
    assert out.events_in == out.valid + out.dead.height == 2
    assert out.valid == 2 or out.dead["reason"].to_list() == ["malformed_json"], out.dead.rows()


# -- offsets, raw bytes, accounting --------------------------------------------------


def test_dead_letter_offsets_and_raw_bytes(decoder):
    lines = [
        line("reading"),
        b"not json",
        line("gate"),
        line("workorder", status="lost"),
        b"[]",
        line("heartbeat"),
        line("reading", value="high"),
    ]
    out = decode(decoder, lines, first_offset=1_000)
    dead = out.dead.sort("offset")
    assert dead["offset"].to_list() == [1_001, 1_003, 1_004, 1_006]
    assert dead["reason"].to_list() == [
        "malformed_json",
        "unknown_value",
        "not_an_object",
        "mistyped_field",
    ]
    assert dead["raw"].to_list() == [lines[i] for i in (1, 3, 4, 6)]
    assert dead["received_at"].to_list() == [NOW] * 4
    assert out.events_in == out.valid + out.dead.height == 7
    offsets = sorted(o for f in out.frames.values() for o in f["_offset"].to_list())
    assert offsets == [1_000, 1_002, 1_005]


def test_raw_is_kept_byte_for_byte(decoder):
    weird = '{"family": "reading", "ts": "nope", "note": "caf\u00e9 \u706b"}  '.encode()
    out = decode(decoder, [weird])
    assert out.dead["raw"].to_list() == [weird]


def _good_random_line(rng: random.Random, i: int) -> tuple[bytes, str]:
    """A valid line of a random family whose id field holds ``line-{i}``."""
    kind = rng.choice(sorted(GOOD))
    ts = f"2026-05-12T0{rng.randint(0, 6)}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"
    ident = f"line-{i}"
    if kind == "reading":
        return line(kind, ts=ts, device_id=ident, value=rng.uniform(-50, 150)), ident
    if kind == "heartbeat":
        return line(kind, ts=ts, device_id=ident), ident
    if kind == "gate":
        return line(kind, ts=ts, gate_id=ident, lift_ms=rng.uniform(100, 5000)), ident
    return line(kind, ts=ts, order_id=ident), ident


ID_FIELD = {"reading": "device_id", "heartbeat": "device_id", "gate": "gate_id"}

#: Lines that break the batch parser (found by bisection) and lines that parse but fail
#: validation, with the reason each must get.
BAD_LINES: list[tuple[bytes, str]] = [
    (b'{"family":"reading"', "malformed_json"),
    (b"", "malformed_json"),
    (b"[1,2]", "not_an_object"),
    (line("reading", value="high"), "mistyped_field"),
    (line("gate", lift_ms="slow"), "mistyped_field"),
    (line("reading", value=1.5).replace(b"1.5", b"NaN"), "non_finite_value"),
    (line("reading", value=1.5).replace(b"1.5", b"1e999"), "non_finite_value"),
    (b'{"family":"heartbeat","ts":"2026-05-12T06:00:00Z" "device_id":"x"}', "malformed_json"),
    (line("reading", family="ufo"), "unknown_family"),
    (line("workorder", status="lost"), "unknown_value"),
    (line("reading", ts="yesterday"), "bad_timestamp"),
    (line("heartbeat", device_type="toaster"), "unknown_device_type"),
]


@pytest.mark.parametrize("seed", [1, 7, 2026])
def test_bisection_keeps_every_good_line(decoder, seed):
    rng = random.Random(seed)
    n_good = 400
    # (raw, ident for a good line, reason for a bad one)
    entries: list[tuple[bytes, str | None, str | None]] = [
        (*_good_random_line(rng, i), None) for i in range(n_good)
    ]
    bad = rng.sample(BAD_LINES, k=6) + [rng.choice(BAD_LINES[:8]) for _ in range(3)]
    for raw, reason in bad:
        entries.insert(rng.randint(0, len(entries)), (raw, None, reason))
    first = 77_000
    out = decode(decoder, [raw for raw, _, _ in entries], first_offset=first)

    assert out.events_in == len(entries) == out.valid + out.dead.height
    assert out.valid == n_good
    # Every good line is kept under its own offset, with its own values.
    kept: dict[int, str] = {}
    for kind, frame in out.frames.items():
        col = ID_FIELD.get(kind, "order_id")
        kept.update(zip(frame["_offset"].to_list(), frame[col].to_list(), strict=True))
    assert kept == {
        first + pos: ident for pos, (_, ident, _) in enumerate(entries) if ident is not None
    }
    dead = out.dead.sort("offset")
    want = [(first + p, why, raw) for p, (raw, _, why) in enumerate(entries) if why is not None]
    assert dead.select("offset", "reason", "raw").rows() == want
