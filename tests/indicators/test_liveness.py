"""Device liveness: offline by the clock, back online by a heartbeat, forgotten in the end."""

from __future__ import annotations

import pickle
import random
import tracemalloc
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from indicators.aggregate import partial
from indicators.definitions import Catalog, Devices, load_catalog
from indicators.liveness import Liveness, heard
from indicators.windows import WindowStore
from schemas.families import DEVICE_TYPES
from tests.indicators.streams import heartbeats

T0 = datetime(2026, 5, 12, 6, tzinfo=UTC)
MIN = 60_000_000
DEVICES = Devices()  # every type: 1-minute heartbeats, offline after 3 minutes of silence


def us(minutes: float) -> int:
    return int((T0 + timedelta(minutes=minutes)).timestamp() * 1_000_000)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def beats(*rows, kind: str = "camera") -> pl.DataFrame:
    """Heartbeats (minutes after T0, device, grid) of one device type in district D1."""
    return heartbeats(T0, rows, kind)


def brief(records: pl.DataFrame) -> list[tuple]:
    """(device, status, minutes after T0) of each record."""
    return [
        (d, s, round((t - T0).total_seconds() / 60, 4))
        for d, s, t in records.select("device_id", "status", "event_ts").iter_rows()
    ]


def test_a_device_that_stops_sending_goes_offline_at_its_allowance_with_no_further_input():
    live = Liveness(DEVICES)
    assert live.observe(heard(beats((0, "cam", "G1"), (1, "cam", "G1")), DEVICES)).height == 0
    assert live.next_due_us == us(4)
    assert live.advance(us(4)).height == 0  # a heartbeat at 4:00 would still be in time
    records = live.advance(us(4) + 1)
    assert brief(records) == [("cam", "offline", 4.0)]
    row = records.row(0, named=True)
    assert row["last_seen_ts"] == at(1)
    assert row["silent_s"] == 180.0
    assert (row["device_type"], row["grid_id"], row["district_id"]) == ("camera", "G1", "D1")
    assert live.advance(us(60)).height == 0  # offline once, not again
    assert (live.offline, live.next_due_us) == (1, None)


def test_the_next_heartbeat_brings_it_back_online_at_its_own_time():
    live = Liveness(DEVICES)
    live.observe(heard(beats((0, "cam", "G1")), DEVICES))
    live.advance(us(10))
    records = live.observe(heard(beats((12.5, "cam", "G1")), DEVICES))
    assert brief(records) == [("cam", "online", 12.5)]
    assert records["silent_s"].to_list() == [750.0]
    assert live.offline == 0
    assert live.next_due_us == us(15.5)


def test_a_silence_the_clock_never_saw_is_found_when_the_device_speaks_again():
    # The clock stayed behind (no other partition moved), then the device came back.
    live = Liveness(DEVICES)
    live.observe(heard(beats((0, "cam", "G1")), DEVICES))
    records = live.observe(heard(beats((7, "cam", "G1")), DEVICES))
    assert brief(records) == [("cam", "offline", 3.0), ("cam", "online", 7.0)]
    assert live.advance(us(7)).height == 0  # and the clock does not find it again


def test_records_do_not_depend_on_where_batches_split_the_input():
    rows = [(m, "a", "G1") for m in (0, 1, 2, 8, 9, 15)] + [(m, "b", "G2") for m in (0, 5, 6)]
    rows.sort()
    expected = None
    for cut in range(len(rows) + 1):
        live = Liveness(DEVICES)
        got = []
        for part in (rows[:cut], rows[cut:]):
            if part:
                got.append(live.observe(heard(beats(*part), DEVICES)))
                got.append(live.advance(us(part[-1][0])))
        got.append(live.advance(us(30)))
        records = sorted(brief(pl.concat(got)), key=lambda r: (r[2], r[0], r[1]))
        if expected is None:
            expected = records
        assert records == expected, cut
    assert expected == [
        ("b", "offline", 3.0),
        ("a", "offline", 5.0),
        ("b", "online", 5.0),
        ("a", "online", 8.0),
        ("b", "offline", 9.0),
        ("a", "offline", 12.0),
        ("a", "online", 15.0),
        ("a", "offline", 18.0),
    ]


def test_each_device_type_has_its_own_allowance():
    slow = Devices(heartbeat={**dict.fromkeys(DEVICE_TYPES, "1m"), "smoke_detector": "10m"})
    live = Liveness(slow)
    live.observe(heard(beats((0, "smoke", "G1"), kind="smoke_detector"), slow))
    live.observe(heard(beats((0, "cam", "G1")), slow))
    assert brief(live.advance(us(29))) == [("cam", "offline", 3.0)]
    assert brief(live.advance(us(31))) == [("smoke", "offline", 30.0)]


def test_a_device_silent_for_forget_after_leaves_the_state():
    devices = Devices(forget_after="1h")
    live = Liveness(devices)
    live.observe(heard(beats((0, "old", "G1"), (58, "new", "G1")), devices))
    assert brief(live.advance(us(60))) == [("old", "offline", 3.0)]
    assert brief(live.advance(us(60) + 1)) == [("old", "forgotten", 60.0)]
    assert live.devices == 1
    # Heard again, it is a new device: known from now, without an 'online' record.
    assert live.observe(heard(beats((70, "old", "G1")), devices)).height == 0
    assert live.devices == 2
    assert brief(live.advance(us(74))) == [("new", "offline", 61.0), ("old", "offline", 73.0)]


def test_state_survives_a_snapshot():
    live = Liveness(DEVICES)
    live.observe(heard(beats((0, "a", "G1"), (0, "b", "G1"), (2, "b", "G1")), DEVICES))
    copy = pickle.loads(pickle.dumps(live))
    assert brief(copy.advance(us(6))) == brief(live.advance(us(6)))
    assert brief(copy.observe(heard(beats((7, "a", "G1")), DEVICES))) == [("a", "online", 7.0)]


def test_online_rate_and_offline_records_agree_at_every_window_end():
    """The indicator and the records are two views of one definition of online."""
    rng = random.Random(5)
    devices = Devices(heartbeat={**dict.fromkeys(DEVICE_TYPES, "1m"), "camera": "2m"})
    catalog = load_catalog()
    d = catalog["device.online_rate"]
    store = WindowStore(Catalog(indicators=[d], devices=devices), partitions=["p0"])
    live = Liveness(devices)
    rows = []
    for k in range(12):
        m = rng.uniform(0, 3)
        while m < 60:
            rows.append((round(m, 3), f"d{k}", f"G{k % 2}"))
            m += rng.choice([0.5, 1, 2, 5, 9]) if rng.random() < 0.3 else rng.uniform(0.2, 1.5)
    rows.sort()
    records, values = [], []
    for start in range(0, 60, 4):
        part = [r for r in rows if start <= r[0] < start + 4]
        frame = beats(*part)
        store.add({d.id: partial(d, frame)})
        values.append(store.advance("p0", us(start + 4)))
        records.append(live.observe(heard(frame, devices)))
        records.append(live.advance(us(start + 4)))
    log = pl.concat(records).sort("event_ts")
    first_heard = {}
    for m, dev, _ in rows:
        first_heard.setdefault(dev, m)
    checked = 0
    for ws, entity, value, samples in (
        pl.concat(values).select("window_start", "entity_id", "value", "samples").iter_rows()
    ):
        end = ws + timedelta(minutes=5)
        grid = entity.split("/")[1]
        known = [
            dev
            for dev, m in first_heard.items()
            if at(m) < end and int(dev[1:]) % 2 == int(grid[1])
        ]
        state = {dev: "online" for dev in known}
        for dev, status, t in log.select("device_id", "status", "event_ts").iter_rows():
            if t < end and dev in state:
                state[dev] = status
        online = sum(s == "online" for s in state.values())
        assert samples == len(known), (entity, end)
        assert value == pytest.approx(online / len(known)), (entity, end)
        checked += 1
    assert checked >= 20
    assert log.filter(pl.col("status") == "offline").height >= 5  # the data has silences


def test_bytes_per_device_stay_small_at_scale():
    """What 100,000 devices cost, measured: the figure the README quotes (~180 B each)."""
    n = 100_000
    frame = pl.DataFrame(
        {
            "device_id": [f"D01-dev-{i:07d}" for i in range(n)],
            "device_type": [DEVICE_TYPES[i % len(DEVICE_TYPES)] for i in range(n)],
            "grid_id": [f"D01-G{i % 40:02d}" for i in range(n)],
            "district_id": ["D01"] * n,
            "ts": [T0] * n,
        }
    )
    runs = heard(frame, DEVICES)
    del frame
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        live = Liveness(DEVICES)
        live.observe(runs)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    per_device = held / n
    assert live.devices == n
    assert 20 < per_device < 300, per_device
    snapshot = len(pickle.dumps(live, protocol=pickle.HIGHEST_PROTOCOL)) / n
    assert snapshot < 60, snapshot
