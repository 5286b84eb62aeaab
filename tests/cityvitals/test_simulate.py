"""Tests of the deterministic city simulator (cityvitals.simulate)."""

from __future__ import annotations

import doctest
import functools
import itertools
import json
import math
import re
import time
from datetime import UTC, datetime, timedelta, timezone

import orjson
import polars as pl
import pytest

from cityvitals import simulate
from cityvitals.simulate import (
    Incident,
    Scenario,
    calm_period,
    generate,
    incidents,
    manifest,
    write_jsonl,
)
from schemas.families import (
    DEVICE_TYPES,
    INPUT_FAMILIES,
    METRIC_DEVICE_TYPE,
    METRICS,
    REPORT_SOURCES,
)

TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
INCIDENT_SITES = {
    "garage-01",
    "seg-nan2-1",
    "seg-nan2-2",
    "seg-nan2-3",
    "bldg-08/flat-1203",
    "venue-plaza",
    "gauge-river-1",
}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _parse_ts(value: str) -> datetime:
    return datetime.fromisoformat(value).astimezone(UTC)


def _enum(field) -> set[str] | None:
    meta = field.metadata or {}
    raw = meta.get(b"enum")
    return set(raw.decode().split(",")) if raw else None


#: per family: (name, arrow type name, nullable, allowed values or None) of each field
SPECS = {
    family: [(f.name, str(f.type), f.nullable, _enum(f)) for f in schema]
    for family, schema in INPUT_FAMILIES.items()
}
TYPES = {"string": str, "double": float, "bool": bool}


@functools.cache
def _rfc3339(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def problems(obj: object, start: datetime, end: datetime) -> list[str]:
    """Everything wrong with one decoded wire object (empty when it is a valid event)."""
    if not isinstance(obj, dict):
        return ["not an object"]
    spec = SPECS.get(obj.get("family"))
    if spec is None:
        return ["unknown family"]
    errors = [f"unexpected field {name}" for name in obj.keys() - {s[0] for s in spec}]
    for name, kind, nullable, allowed in spec:
        if name not in obj:
            if not nullable:
                errors.append(f"missing {name}")
            continue
        value = obj[name]
        if value is None:
            if not nullable:
                errors.append(f"null {name}")
            continue
        if kind in TYPES:
            ok = type(value) is TYPES[kind]  # bool is not a float, int is not a float
            if ok and kind == "double":
                ok = math.isfinite(value)
        else:  # timestamp: RFC 3339 UTC with milliseconds; compares as text
            ok = isinstance(value, str) and bool(TS_RE.match(value))
            if ok and not _rfc3339(start) <= value < _rfc3339(end):
                errors.append(f"ts out of range {value}")
        if not ok:
            errors.append(f"mistyped {name}: {value!r}")
            continue
        if allowed is not None and value not in allowed:
            errors.append(f"{name} {value!r} not in enum")
    if errors:
        return errors
    family = obj["family"]
    if family == "reading":
        if METRIC_DEVICE_TYPE[obj["metric"]] != obj["device_type"]:
            errors.append("metric does not match device_type")
        if ("capacity" in obj) != (obj["metric"] in ("parking_occupied", "people_count")):
            errors.append("capacity on the wrong metric")
    elif family == "workorder":
        if ("satisfied" in obj) != (obj["status"] == "closed"):
            errors.append("satisfied on a status other than closed")
        if ("source" in obj) != (obj["status"] == "reported"):
            errors.append("source on a status other than reported")
    elif family == "heartbeat" and "battery_pct" in obj:
        if not 0.0 <= obj["battery_pct"] <= 100.0:
            errors.append("battery out of range")
    return errors


def _decode(line: bytes) -> object:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


def _frames(objs: list[dict], start: datetime) -> dict[str, pl.DataFrame]:
    """One polars frame per family with ``t``: minutes since the scenario start."""
    rows: dict[str, list[dict]] = {name: [] for name in INPUT_FAMILIES}
    for obj in objs:
        rows[obj["family"]].append(
            {**obj, "t": (_parse_ts(obj["ts"]) - start).total_seconds() / 60.0}
        )
    return {
        name: pl.DataFrame(r, infer_schema_length=None).with_columns(
            pl.col("t").floor().cast(pl.Int64).alias("minute")
        )
        for name, r in rows.items()
    }


def _windows(df: pl.DataFrame, minutes: int) -> pl.DataFrame:
    return df.with_columns((pl.col("minute") // minutes * minutes).alias("w"))


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------

SMALL = Scenario(devices=200, minutes=60, seed=3, bad_rate=0.0)
AFTERNOON = Scenario(devices=300, minutes=240, seed=7, bad_rate=0.0)


@pytest.fixture(scope="module")
def small_batches() -> list[list[bytes]]:
    return list(generate(SMALL))


@pytest.fixture(scope="module")
def afternoon() -> dict:
    batches = list(generate(AFTERNOON))
    objs = [orjson.loads(line) for batch in batches for line in batch]
    return {"batches": batches, "objs": objs, **_frames(objs, AFTERNOON.start)}


# ---------------------------------------------------------------------------------------------
# API, validation, determinism
# ---------------------------------------------------------------------------------------------


def test_module_docstring_example_runs():
    result = doctest.testmod(simulate, verbose=False)
    assert result.attempted >= 3
    assert result.failed == 0


def test_public_api_names():
    assert set(simulate.__all__) == {
        "Scenario",
        "Incident",
        "incidents",
        "RiskExpectation",
        "risk_expectations",
        "calm_period",
        "generate",
        "write_jsonl",
        "manifest",
    }
    assert Scenario().devices == 2_000
    assert Scenario().minutes == 240
    assert Scenario().start == datetime(2026, 5, 12, 6, 0, tzinfo=UTC)
    assert Scenario().bad_rate == 0.0005


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"devices": 199}, "devices"),
        ({"devices": 2000.0}, "devices"),
        ({"minutes": 59}, "minutes"),
        ({"seed": -1}, "seed"),
        ({"start": datetime(2026, 5, 12, 6, 0)}, "start"),
        ({"start": datetime(2026, 5, 12, 14, 0, tzinfo=timezone(timedelta(hours=8)))}, "start"),
        ({"bad_rate": -0.1}, "bad_rate"),
        ({"bad_rate": float("nan")}, "bad_rate"),
        ({"bad_rate": 0.9}, "bad_rate"),
    ],
)
def test_invalid_scenarios_raise_value_error_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Scenario(**kwargs)


def test_invalid_batch_seconds_raise_at_once():
    with pytest.raises(ValueError, match="batch_seconds"):
        generate(SMALL, batch_seconds=0)
    with pytest.raises(ValueError, match="batch_seconds"):
        generate(SMALL, batch_seconds=1.5)


def test_same_scenario_gives_the_same_bytes_and_another_seed_does_not(small_batches):
    again = list(generate(Scenario(devices=200, minutes=60, seed=3, bad_rate=0.0)))
    assert again == small_batches
    other = list(generate(Scenario(devices=200, minutes=60, seed=4, bad_rate=0.0)))
    assert len(other) == len(small_batches)
    assert other != small_batches
    assert sum(a != b for a, b in zip(other, small_batches, strict=True)) == len(other)


def test_batch_seconds_only_regroups_the_same_events(small_batches):
    lines = sorted(line for batch in small_batches for line in batch)
    for seconds in (45, 600, 7):
        batches = list(generate(SMALL, batch_seconds=seconds))
        assert len(batches) == math.ceil(SMALL.minutes * 60 / seconds)
        assert sorted(line for batch in batches for line in batch) == lines
        for k, batch in enumerate(batches):
            lo = SMALL.start + timedelta(seconds=k * seconds)
            hi = min(lo + timedelta(seconds=seconds), SMALL.end)
            lo_s, hi_s = _rfc3339(lo), _rfc3339(hi)
            assert all(lo_s <= orjson.loads(line)["ts"] < hi_s for line in batch)


def test_generation_is_lazy_for_a_very_long_afternoon():
    began = time.perf_counter()
    first = next(generate(Scenario(devices=200, minutes=1_000_000)))
    assert time.perf_counter() - began < 5.0
    assert 300 < len(first) < 1_000


def test_generation_is_vectorised_enough():
    began = time.perf_counter()
    n = sum(len(batch) for batch in generate(Scenario(devices=2_000, minutes=60)))
    rate = n / (time.perf_counter() - began)
    assert n > 240_000
    assert rate > 60_000, f"{rate:,.0f} events/s"


# ---------------------------------------------------------------------------------------------
# wire format
# ---------------------------------------------------------------------------------------------


def test_simulator_vocabulary_matches_the_schemas():
    assert simulate._METRICS == METRICS
    assert set(simulate._TYPE_NAMES) == set(DEVICE_TYPES)
    assert set(simulate._SOURCES) == set(REPORT_SOURCES)


def test_every_line_is_a_valid_event_of_its_family(afternoon):
    start, end = AFTERNOON.start, AFTERNOON.end
    families = set()
    for batch in afternoon["batches"]:
        for line in batch:
            assert isinstance(line, bytes)
            assert not line.endswith(b"\n")
            obj = orjson.loads(line)
            assert problems(obj, start, end) == [], line
            assert orjson.dumps(obj) == line  # plain orjson encoding, field order kept
            families.add(obj["family"])
            assert next(iter(obj)) == "family"
            assert list(obj)[1] == "ts"
    assert families == set(INPUT_FAMILIES)
    metrics = set(afternoon["reading"]["metric"].unique().to_list())
    assert metrics == set(METRICS)


def test_batches_hold_their_minute_and_are_out_of_order_by_less_than_10s(afternoon):
    batches = afternoon["batches"]
    assert len(batches) == AFTERNOON.minutes
    disorder = 0.0
    for k, batch in enumerate(batches):
        lo = AFTERNOON.start + timedelta(minutes=k)
        newest = None
        for line in batch:
            ts = _parse_ts(orjson.loads(line)["ts"])
            assert lo <= ts < lo + timedelta(minutes=1)
            if newest is not None:
                disorder = max(disorder, (newest - ts).total_seconds())
                assert newest - ts < timedelta(seconds=10)
            newest = ts if newest is None else max(newest, ts)
    assert disorder > 1.0  # there is some jitter, not a plain sort


def test_fixed_sites_exist_at_the_smallest_size(small_batches):
    objs = [orjson.loads(line) for batch in small_batches for line in batch]
    readings = [o for o in objs if o["family"] == "reading"]
    sites = {(o["site_id"], o["metric"]): o for o in readings}
    assert sites[("garage-01", "parking_occupied")]["capacity"] == 1100.0
    assert sites[("venue-plaza", "people_count")]["capacity"] == 5000.0
    for seg in ("seg-nan2-1", "seg-nan2-2", "seg-nan2-3"):
        for metric in ("traffic_flow", "traffic_speed", "travel_time"):
            assert (seg, metric) in sites
        assert 60.0 <= sites[(seg, "travel_time")]["value"] <= 90.0
    assert ("bldg-08/flat-1203", "smoke") in sites
    assert ("bldg-08/flat-1203", "temperature") in sites
    assert 1.7 <= sites[("gauge-river-1", "water_level")]["value"] <= 1.9
    rain = {o["site_id"] for o in readings if o["metric"] == "rainfall"}
    g03 = {o["site_id"] for o in readings if o["metric"] == "rainfall" and "G03" in o["grid_id"]}
    assert {"rain-G03-1", "rain-G03-2", "rain-G03-3"} <= g03
    assert all(site.startswith("rain-G03-") for site in g03)
    assert all(site.startswith(("rain-G03-", "gauge-")) for site in rain)
    g07 = {
        o["device_id"]
        for o in objs
        if o["family"] == "heartbeat" and o["device_type"] == "camera" and o["grid_id"] == "D01-G07"
    }
    assert len(g07) >= 20
    gates = {(o["garage_id"], o["gate_id"], o["direction"]) for o in objs if o["family"] == "gate"}
    assert ("garage-01", "garage-01-gate-in", "in") in gates
    assert ("garage-01", "garage-01-gate-out", "out") in gates
    # a site belongs to exactly one grid
    grid_of = {}
    for o in readings:
        assert grid_of.setdefault(o["site_id"], o["grid_id"]) == o["grid_id"]
    assert {o["grid_id"] for o in objs if "grid_id" in o} == {f"D01-G{i:02d}" for i in range(1, 13)}
    assert {o["district_id"] for o in objs} == {"D01"}


def test_device_mix_and_manifest():
    meta = manifest(AFTERNOON)
    json.dumps(meta)  # JSON-able
    counts = meta["devices_by_type"]
    assert set(counts) == set(DEVICE_TYPES)
    assert sum(counts.values()) == 300
    assert counts["camera"] == 91  # 90 + 1 to keep the gate controllers in pairs
    assert counts["smoke_detector"] == 75
    assert counts["temperature_sensor"] == 45
    assert counts["gate_controller"] % 2 == 0
    big = manifest(Scenario(devices=700_000))["devices_by_type"]
    assert sum(big.values()) == 700_000
    assert big["camera"] == 210_000
    assert meta["scenario"] == {
        "devices": 300,
        "minutes": 240,
        "seed": 7,
        "start": "2026-05-12T06:00:00.000Z",
        "bad_rate": 0.0,
    }
    assert meta["calm_period"] == {
        "start": "2026-05-12T06:00:00.000Z",
        "end": "2026-05-12T07:00:00.000Z",
    }
    assert [i["id"] for i in meta["incidents"]] == [i.id for i in incidents(AFTERNOON)]
    fire = next(i for i in meta["incidents"] if i["id"] == "balcony_fire")
    assert fire["start"] == "2026-05-12T07:52:00.000Z"
    assert fire["end"] == "2026-05-12T08:00:00.000Z"


def test_heartbeat_and_reading_volumes(afternoon):
    hb = afternoon["heartbeat"]
    devices = hb["device_id"].n_unique()
    assert devices == 300
    # one heartbeat per device per minute, 1 % lost, plus the camera outage
    expected = 300 * 240 * 0.99
    assert expected * 0.96 < hb.height < expected * 1.0
    rd = afternoon["reading"]
    per_device = rd.filter(pl.col("minute") < 60).group_by("device_id", "metric").len()
    assert per_device["len"].to_list() == [60] * per_device.height
    traffic = rd.filter(pl.col("device_type") == "traffic_detector")
    assert set(traffic["metric"].unique()) == {"traffic_flow", "traffic_speed", "travel_time"}


def test_write_jsonl_writes_every_line(tmp_path, small_batches):
    path = tmp_path / "afternoon.jsonl"
    n = write_jsonl(SMALL, path)
    lines = [line for batch in small_batches for line in batch]
    assert n == len(lines)
    assert path.read_bytes() == b"".join(line + b"\n" for line in lines)


# ---------------------------------------------------------------------------------------------
# corruption
# ---------------------------------------------------------------------------------------------


def _kind(line: bytes) -> str | None:
    obj = _decode(line)
    if obj is None:
        return "truncated" if line == b'{"family": "reading", "ts": ' else "other"
    if isinstance(obj, list):
        return "array"
    if not problems(obj, SMALL.start, SMALL.end):
        return None
    if isinstance(obj.get("value"), str):
        return "value_string" if obj["value"] == "high" else "other"
    if "device_id" not in obj:
        return "missing_device_id"
    if obj.get("device_type") == "toaster":
        return "toaster"
    if obj.get("ts") == "yesterday":
        return "ts_yesterday"
    if str(obj.get("ts", "")).startswith("1970-"):
        return "ts_1970"
    return "other"


def test_corrupted_lines_come_at_the_rate_and_in_the_kinds_asked():
    noisy = Scenario(devices=200, minutes=60, seed=3, bad_rate=0.02)
    lines = [line for batch in generate(noisy) for line in batch]
    kinds = [_kind(line) for line in lines]
    bad = [k for k in kinds if k is not None]
    assert "other" not in bad
    assert 0.016 < len(bad) / len(lines) < 0.024
    assert set(bad) == {
        "truncated",
        "array",
        "value_string",
        "missing_device_id",
        "toaster",
        "ts_yesterday",
        "ts_1970",
    }
    # the same positions hold the same events; only the corrupted ones differ
    clean = [line for batch in generate(SMALL) for line in batch]
    assert len(clean) == len(lines)
    for a, b, kind in zip(clean, lines, kinds, strict=True):
        assert (a == b) == (kind is None)
        if kind is not None:
            original = orjson.loads(a)
            assert original["family"] == "reading"
            # never the lines that carry an incident's signal
            if original["device_type"] != "camera":  # cameras watch the nan2 segments too
                assert original["site_id"] not in INCIDENT_SITES
            assert not original["site_id"].startswith("rain-G03-")
            assert not (original["device_type"] == "camera" and original["grid_id"] == "D01-G07")
    # deterministic
    assert lines == [line for batch in generate(noisy) for line in batch]


def test_no_corruption_at_bad_rate_zero(small_batches):
    start, end = SMALL.start, SMALL.end
    assert all(
        problems(orjson.loads(line), start, end) == [] for batch in small_batches for line in batch
    )


# ---------------------------------------------------------------------------------------------
# ground truth
# ---------------------------------------------------------------------------------------------


def test_incident_table():
    sc = Scenario()
    found = {i.id: i for i in incidents(sc)}
    assert list(found) == [
        "devices_silent",
        "balcony_fire",
        "balcony_fire_smoke",
        "heavy_rain",
        "river_rise",
        "garage_fills",
        "dismissal_congestion",
        "crowd_surge",
        "overdue_orders",
    ]

    def at(minutes: float) -> datetime:
        return sc.start + timedelta(minutes=minutes)

    expect = {
        "devices_silent": ("device.online_rate", "camera/D01-G07", "red", 70, 95),
        "balcony_fire": ("fire.temperature", "bldg-08/flat-1203", "red", 112, 120),
        "balcony_fire_smoke": ("fire.smoke_alarm", "bldg-08/flat-1203", "red", 112.5, 117),
        "heavy_rain": ("flood.rainfall", "rain-G03-1", "orange", 120, None),
        "river_rise": ("flood.water_level", "gauge-river-1", "red", 130, 240),
        "garage_fills": ("parking.occupancy_rate", "garage-01", "orange", 140, None),
        "dismissal_congestion": ("traffic.segment_travel_time", "seg-nan2-1", "red", 150, 210),
        "crowd_surge": ("crowd.density_ratio", "venue-plaza", "red", 185, 200),
        "overdue_orders": ("workorder.overdue", "D01", "orange", 91, 240),
    }
    for ident, (indicator, entity, severity, begin, finish) in expect.items():
        inc = found[ident]
        assert isinstance(inc, Incident)
        assert (inc.indicator_id, inc.entity_id, inc.severity) == (indicator, entity, severity)
        assert inc.start == at(begin)
        assert inc.start.tzinfo is not None
        assert inc.start < inc.end <= sc.end
        if finish is not None:
            assert inc.end == at(finish)
        assert inc.title
    # only incidents that start inside the afternoon; ends clipped to it
    short = Scenario(minutes=100)
    assert [i.id for i in incidents(short)] == ["devices_silent", "overdue_orders"]
    assert incidents(short)[1].end == short.end
    assert incidents(Scenario(minutes=60)) == []
    assert calm_period(sc) == (sc.start, sc.start + timedelta(minutes=60))


def test_balcony_fire_signal(afternoon):
    rd = afternoon["reading"].filter(pl.col("site_id") == "bldg-08/flat-1203")
    temp = rd.filter(pl.col("metric") == "temperature")
    by_minute = dict(zip(temp["minute"].to_list(), temp["value"].to_list(), strict=True))
    assert max(v for m, v in by_minute.items() if m < 112) < 30.0
    assert by_minute[114] > 70.0
    assert by_minute[115] > 70.0
    assert 80.0 < max(by_minute.values()) < 90.0
    assert all(v < 40.0 for m, v in by_minute.items() if m >= 120)
    smoke = rd.filter(pl.col("metric") == "smoke")
    alarm = smoke.filter(pl.col("value") == 1.0)["t"].to_list()
    assert 4 <= len(alarm) <= 5
    assert all(112.5 <= t < 117.0 for t in alarm)
    others = afternoon["reading"].filter(
        pl.col("metric") == "smoke", pl.col("site_id") != "bldg-08/flat-1203"
    )
    assert others["value"].max() == 0.0


def test_devices_silent_signal(afternoon):
    hb = afternoon["heartbeat"].filter(pl.col("device_type") == "camera")
    g07 = hb.filter(pl.col("grid_id") == "D01-G07")
    cameras = g07["device_id"].n_unique()
    assert cameras >= 20

    def per_minute(df: pl.DataFrame, lo: int, hi: int) -> float:
        return df.filter(pl.col("minute").is_between(lo, hi - 1)).height / (hi - lo)

    before = per_minute(g07, 55, 70)
    during = per_minute(g07, 71, 94)
    after = per_minute(g07, 96, 110)
    assert before > 0.97 * cameras
    assert 0.5 < during / before < 0.7
    assert after > 0.97 * cameras
    silent = set(g07.filter(pl.col("minute") < 70)["device_id"]) - set(
        g07.filter(pl.col("minute").is_between(71, 94))["device_id"]
    )
    assert len(silent) == round(0.4 * cameras)
    # they send no readings either, and come back
    rd = afternoon["reading"].filter(pl.col("device_id").is_in(list(silent)))
    assert rd.filter(pl.col("t").is_between(70.0, 95.0, closed="left")).height == 0
    assert rd.filter(pl.col("minute") == 100).height == len(silent)
    # the rest of the city keeps beating
    rest = hb.filter(pl.col("grid_id") != "D01-G07")
    assert per_minute(rest, 71, 94) / per_minute(rest, 55, 70) > 0.97


def test_dismissal_congestion_signal(afternoon):
    nan2 = _windows(afternoon["reading"].filter(pl.col("site_id").str.starts_with("seg-nan2-")), 5)
    means = nan2.group_by("site_id", "metric", "w").agg(pl.col("value").mean())

    def mean(site: str, metric: str, w: int) -> float:
        row = means.filter(pl.col("site_id") == site, pl.col("metric") == metric, pl.col("w") == w)
        return row["value"].item()

    for w in (160, 165, 170, 175):
        assert mean("seg-nan2-1", "travel_time", w) > 900.0
        assert mean("seg-nan2-1", "traffic_speed", w) < 30.0
    peak = (
        means.filter(pl.col("metric") == "travel_time")
        .group_by("site_id")
        .agg(pl.col("value").max())
    )
    peaks = dict(zip(peak["site_id"].to_list(), peak["value"].to_list(), strict=True))
    assert 1_100.0 < peaks["seg-nan2-1"] < 1_300.0
    assert 400.0 <= peaks["seg-nan2-2"] <= 700.0
    assert 400.0 <= peaks["seg-nan2-3"] <= 700.0
    for site in ("seg-nan2-1", "seg-nan2-2", "seg-nan2-3"):
        for w in (*range(0, 150, 5), *range(210, 240, 5)):
            assert mean(site, "travel_time", w) < 180.0
            assert mean(site, "traffic_speed", w) > 30.0


def test_garage_fills_and_its_gates_agree(afternoon):
    garage = afternoon["reading"].filter(pl.col("site_id") == "garage-01").sort("t")
    ratio = garage["value"] / garage["capacity"]
    assert ratio.max() < 0.98
    peak = garage.filter(pl.col("minute").is_between(165, 179))
    assert (peak["value"] / peak["capacity"]).min() > 0.94
    early = garage.filter(pl.col("minute") < 140)
    assert 0.27 < (early["value"] / 1100.0).mean() < 0.33
    means = (
        _windows(garage, 5)
        .group_by("w")
        .agg((pl.col("value") / pl.col("capacity")).mean().alias("r"))
    )
    high = sorted(means.filter(pl.col("r") >= 0.80)["w"].to_list())
    assert high and 140 <= high[0] and high[-1] < 210

    gates = afternoon["gate"].filter(pl.col("garage_id") == "garage-01").sort("t")
    fill = gates.filter(pl.col("minute").is_between(140, 164))
    assert fill.filter(pl.col("direction") == "in").height > 500
    assert (
        fill.filter(pl.col("direction") == "in").height
        > 5 * fill.filter(pl.col("direction") == "out").height
    )
    drain = gates.filter(pl.col("minute").is_between(180, 209))
    assert drain.filter(pl.col("direction") == "out").height > 500
    assert gates["lift_ms"].max() < 450.0
    # every sensor reading = initial occupancy + cars in - cars out before it
    in_ts = gates.filter(pl.col("direction") == "in")["t"].to_list()
    out_ts = gates.filter(pl.col("direction") == "out")["t"].to_list()
    offsets = set()
    for t, value in zip(garage["t"].to_list(), garage["value"].to_list(), strict=True):
        net = sum(x < t for x in in_ts) - sum(x < t for x in out_ts)
        offsets.add(value - net)
    assert len(offsets) == 1
    assert 300 <= offsets.pop() <= 360


def test_crowd_surge_signal(afternoon):
    plaza = afternoon["reading"].filter(pl.col("site_id") == "venue-plaza")
    ratio = plaza.with_columns((pl.col("value") / pl.col("capacity")).alias("r"))
    at_190 = ratio.filter(pl.col("minute") == 190)["r"].item()
    assert at_190 > 1.2
    assert ratio.filter(pl.col("r") > 1.2).height >= 5
    assert ratio["r"].max() < 1.3
    outside = ratio.filter((pl.col("t") < 185.0) | (pl.col("t") >= 200.0))
    assert outside["r"].max() < 0.7


def test_heavy_rain_and_river_rise_signals(afternoon):
    rd = afternoon["reading"]
    rain = rd.filter(pl.col("site_id") == "rain-G03-1").sort("t")
    sums = _windows(rain, 15).group_by("w").agg(pl.col("value").sum())
    total = dict(zip(sums["w"].to_list(), sums["value"].to_list(), strict=True))
    for w in (120, 135, 150, 165):
        assert 20.0 <= total[w] <= 29.0, (w, total[w])
    assert total[150] == max(total.values())
    assert all(total[w] < 5.0 for w in total if w < 120 or w >= 195)
    values = rain["value"].to_list()
    assert max(sum(values[i : i + 15]) for i in range(len(values))) < 30.0
    g03 = rd.filter(pl.col("metric") == "rainfall", pl.col("grid_id") == "D01-G03")
    g03_sums = _windows(g03, 15).group_by("site_id", "w").agg(pl.col("value").sum())
    assert g03_sums.filter(pl.col("w") == 150)["value"].min() >= 20.0
    assert g03_sums["value"].max() < 30.0

    river = rd.filter(pl.col("site_id") == "gauge-river-1")
    level = dict(zip(river["minute"].to_list(), river["value"].to_list(), strict=True))
    assert all(1.75 <= level[m] <= 1.85 for m in range(0, 130))
    assert level[170] > 2.5
    assert level[200] > 4.0
    assert 4.2 < max(level.values()) < 4.4
    assert max(level, key=level.get) in range(205, 216)
    assert level[239] < max(level.values()) - 0.2  # slowly falling


def test_overdue_orders_and_the_work_order_life_cycle(afternoon):
    wo = afternoon["workorder"]
    reported = wo.filter(pl.col("status") == "reported")
    dispatched = wo.filter(pl.col("status") == "dispatched")
    first_dispatch = dispatched.group_by("order_id").agg(pl.col("t").min().alias("td"))
    orders = reported.join(first_dispatch, on="order_id", how="left")
    never = orders.filter(pl.col("td").is_null(), pl.col("event_class") == "small")
    stuck = never.filter(pl.col("t") < AFTERNOON.minutes - 30)
    assert stuck.height == 6
    assert stuck["grid_id"].unique().to_list() == ["D01-G05"]
    assert stuck["department"].unique().to_list() == ["urban_management"]
    assert stuck["t"].min() >= 60.0
    assert stuck["t"].max() < 75.0
    overdue_at_105 = stuck.filter(pl.col("t") + 30.0 <= 105.0).height
    assert overdue_at_105 >= 5
    assert wo.filter(pl.col("order_id").is_in(stuck["order_id"].to_list())).height == 6
    # every other small order is dispatched within 20 minutes of its report (the fire at once)
    small = orders.filter(pl.col("event_class") == "small", pl.col("td").is_not_null())
    delay = small["td"] - small["t"]
    assert delay.min() >= 0.5
    assert (delay >= 2.0).mean() > 0.95
    assert delay.max() <= 20.0
    # a few per minute in all, mostly small, all classes and the named departments
    assert 0.2 < reported.height / AFTERNOON.minutes < 1.0  # 300 devices: 0.375/min + script
    assert set(wo["department"].unique()) <= {
        "urban_management",
        "traffic_police",
        "water_authority",
        "fire_safety",
        "housing",
    }
    # every event of an order repeats its identity
    ident = wo.group_by("order_id").agg(
        pl.col("event_class").n_unique(),
        pl.col("department").n_unique(),
        pl.col("grid_id").n_unique(),
        (pl.col("status") == "reported").sum().alias("reports"),
    )
    assert ident["event_class"].max() == 1
    assert ident["department"].max() == 1
    assert ident["grid_id"].max() == 1
    assert ident["reports"].to_list() == [1] * ident.height
    closed = wo.filter(pl.col("status") == "closed")
    assert 0.8 < closed["satisfied"].mean() < 1.0


def test_work_order_statuses_follow_each_other():
    """On a big district (orders only): ~3 % are returned after closing and closed again."""
    city = simulate._City(Scenario(devices=20_000, minutes=240, seed=11))
    events: dict[str, list[tuple[int, str, bool | None]]] = {}
    for m in range(240):
        table = city._orders(m)
        for ts, obj in zip(table["ts"].tolist(), table["obj"].tolist(), strict=True):
            step = (ts, obj["status"], obj.get("satisfied"))
            events.setdefault(obj["order_id"], []).append(step)
    assert len(events) > 5_000
    allowed = {
        "reported": {"dispatched"},
        "dispatched": {"arrived"},
        "arrived": {"closed"},
        "closed": {"returned"},
        "returned": {"closed"},
    }
    returned = 0
    satisfied = []
    for steps in events.values():
        assert steps == sorted(steps)
        statuses = [status for _, status, _ in steps]
        assert statuses[0] == "reported"
        for a, b in itertools.pairwise(statuses):
            assert b in allowed[a], statuses
        if "returned" in statuses:
            returned += 1
            assert steps[statuses.index("returned") - 1][2] is False
        satisfied += [sat for _, status, sat in steps if status == "closed"]
    assert None not in satisfied
    assert 0.015 < returned / len(satisfied) < 0.045
    assert 0.92 < sum(satisfied) / len(satisfied) < 0.97


# ---------------------------------------------------------------------------------------------
# normal bands
# ---------------------------------------------------------------------------------------------


def _bands(rd: pl.DataFrame, gate: pl.DataFrame) -> list[str]:
    """Each band of the brief, as a violated-band message (empty: all respected)."""
    out = []

    def check(name: str, df: pl.DataFrame, ok: pl.Expr) -> None:
        if df.height and not df.select(ok.all()).item():
            out.append(name)

    def agg(metric: str, minutes: int, expr: pl.Expr) -> pl.DataFrame:
        df = _windows(rd.filter(pl.col("metric") == metric), minutes)
        return df.group_by("site_id", "w").agg(expr.alias("v"))

    ratio = pl.col("value") / pl.col("capacity")
    check("parking", agg("parking_occupied", 5, ratio.mean()), pl.col("v") < 0.80)
    lift = _windows(gate, 5).group_by("garage_id", "w").agg(pl.col("lift_ms").quantile(0.95))
    check("gate lift", lift, pl.col("lift_ms") < 500.0)
    check("travel time", agg("travel_time", 5, pl.col("value").mean()), pl.col("v") < 180.0)
    check("speed", agg("traffic_speed", 5, pl.col("value").mean()), pl.col("v") > 30.0)
    check("illegal", agg("illegal_parking", 15, pl.col("value").sum()), pl.col("v") < 10.0)
    check("temperature", agg("temperature", 1, pl.col("value").max()), pl.col("v") < 45.0)
    check("smoke", agg("smoke", 1, pl.col("value").max()), pl.col("v") == 0.0)
    check("crowd", agg("people_count", 1, ratio.max()), pl.col("v") < 0.70)
    check("water", agg("water_level", 5, pl.col("value").max()), pl.col("v") < 2.5)
    check("rain", agg("rainfall", 15, pl.col("value").sum()), pl.col("v") < 5.0)
    check("vibration", agg("vibration", 5, pl.col("value").mean()), pl.col("v") < 5.0)
    check("displacement", agg("displacement", 15, pl.col("value").max()), pl.col("v") < 10.0)
    return out


def test_band_checker_catches_a_breach(afternoon):
    rd = afternoon["reading"].filter(pl.col("minute") < 60)
    hot = rd.with_columns(
        pl.when(pl.col("metric") == "temperature")
        .then(pl.col("value") + 20.0)
        .otherwise(pl.col("value"))
        .alias("value")
    )
    assert _bands(hot, afternoon["gate"]) == ["temperature"]


def test_calm_period_is_calm_everywhere(afternoon):
    rd = afternoon["reading"].filter(pl.col("minute") < 60)
    gate = afternoon["gate"].filter(pl.col("minute") < 60)
    assert _bands(rd, gate) == []
    assert rd["metric"].n_unique() == len(METRICS)
    # every device beats in every 5-minute window
    hb = _windows(afternoon["heartbeat"].filter(pl.col("minute") < 60), 5)
    seen = hb.group_by("device_id").agg(pl.col("w").n_unique())
    assert seen.height == 300
    assert seen["w"].min() == 12
    # nothing overdue: every order reported in the calm hour is dispatched within 20 minutes
    wo = afternoon["workorder"]
    early = wo.filter(pl.col("status") == "reported", pl.col("minute") < 60)
    dispatch = wo.filter(pl.col("status") == "dispatched").select("order_id", td="t")
    small = early.filter(pl.col("event_class") == "small").join(dispatch, on="order_id")
    assert small.height == early.filter(pl.col("event_class") == "small").height
    assert (small["td"] - small["t"]).max() <= 20.0


def test_everything_outside_the_incidents_stays_in_band(afternoon):
    rd = afternoon["reading"].filter(
        ~pl.col("site_id").is_in(list(INCIDENT_SITES)),
        ~pl.col("site_id").str.starts_with("rain-G03-"),
    )
    assert rd.height > 0.9 * afternoon["reading"].height
    gate = afternoon["gate"].filter(pl.col("garage_id") != "garage-01")
    assert _bands(rd, gate) == []
    assert afternoon["gate"]["lift_ms"].quantile(0.95) < 450.0
    # heartbeats: every device in every 5-minute window, but the silent cameras in the outage
    hb = _windows(afternoon["heartbeat"], 5)
    seen = hb.group_by("device_id").agg(pl.col("w").n_unique())
    full = seen.filter(pl.col("w") == 48)
    gaps = seen.filter(pl.col("w") < 48)
    silent_grid = hb.filter(pl.col("device_id").is_in(gaps["device_id"].to_list()))
    assert full.height + gaps.height == 300
    assert set(silent_grid["grid_id"].unique()) == {"D01-G07"}
    assert set(silent_grid["device_type"].unique()) == {"camera"}
    assert set(gaps["w"].to_list()) == {48 - 5}  # the outage [70, 95) covers 5 windows
