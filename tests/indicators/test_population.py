"""Population states close many windows at once exactly as they close them one by one.

A close may end one window or hundreds (a batch spanning several, a watermark
catching up after a stall): :class:`OnlineRate` counts them all from one query
and :class:`OrderLifecycle` replays their changes once. Whatever the windows a
close ends, and with a snapshot taken in between, the rows must be the same,
and the online rate must be what a plain replay of its definition gives.
"""

from __future__ import annotations

import pickle
import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

import indicators.population as population
from indicators.aggregate import partial
from indicators.definitions import LIFECYCLE, Devices, IndicatorDef, WorkOrders, load_catalog
from indicators.lifecycle import OrderLifecycle
from indicators.liveness import allowance_us
from indicators.population import RAW_SCHEMA, OnlineRate, Population
from schemas.families import DEVICE_TYPES
from tests.indicators.test_workorder_reference import random_orders

T0 = datetime(2026, 5, 12, 6, tzinfo=UTC)
CATALOG = load_catalog()
ONLINE = ["device.online_rate", "device.online_rate_district", "device.online_rate_all"]
LIFECYCLE_IDS = [d.id for d in CATALOG.indicators if d.aggregation in LIFECYCLE]
#: Cameras every minute, smoke detectors every 2 minutes, gauges every 30 s (3 missed
#: heartbeats allowed); a device silent for 12 minutes is forgotten.
DEVICES = Devices(
    heartbeat={
        **dict.fromkeys(DEVICE_TYPES, "1m"),
        "smoke_detector": "2m",
        "water_level_gauge": "30s",
    },
    forget_after="12m",
)
KINDS = ["camera", "smoke_detector", "water_level_gauge"]


def random_beats(rng: random.Random, devices: int, minutes: int) -> pl.DataFrame:
    """Heartbeats with gaps (offline, forgotten, back), a few devices changing type or
    district (the district rate keys them by district only: its allowance is its last
    heartbeat's type's)."""
    rows = []
    for k in range(devices):
        kind, grid, district = rng.choice(KINDS), f"G{rng.randrange(3)}", "D1"
        m = rng.uniform(0, 10)
        while m < minutes:
            if rng.random() < 0.03:
                kind = rng.choice(KINDS)
            if rng.random() < 0.01:
                district = rng.choice(["D1", "D2"])
            rows.append((m, f"dev{k}", kind, grid, district))
            long = rng.random() < 0.15
            m += rng.choice([2, 5, 9, 15, 40]) if long else rng.uniform(0.2, 1.5)
    rows.sort()
    return pl.DataFrame(
        {
            "device_id": [r[1] for r in rows],
            "device_type": [r[2] for r in rows],
            "grid_id": [r[3] for r in rows],
            "district_id": [r[4] for r in rows],
            "ts": [T0 + timedelta(minutes=r[0]) for r in rows],
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )


def batches(frame: pl.DataFrame, rng: random.Random) -> list[pl.DataFrame]:
    """The frame in arrival order (each row up to 45 s late) cut in batches of random size."""
    ts = frame["ts"].dt.epoch("us")
    late = pl.Series([rng.randrange(45_000_000) for _ in range(frame.height)])
    arriving = frame.with_columns(_at=ts + late).sort("_at").drop("_at")
    out, pos = [], 0
    while pos < arriving.height:
        size = rng.choice([1, 5, 30, 200])
        out.append(arriving.slice(pos, size))
        pos += size
    return out


def make(d: IndicatorDef) -> Population:
    if d.aggregation == "online_rate":
        return OnlineRate(d, DEVICES)
    return OrderLifecycle(d, WorkOrders())


def closed(d: IndicatorDef, parts: list[pl.DataFrame], close_after, end: int) -> pl.DataFrame:
    """Every row a state gives: ``close_after(i, watermark)`` says where to close (and
    to what) after part ``i``; at the end, everything up to ``end``. Snapshots taken at
    random are what goes on."""
    rng = random.Random(len(parts))
    state, out, high = make(d), [], None
    for i, part in enumerate(parts):
        if part.height:
            state.add(part)
            top = part["t"].max()
            high = top if high is None else max(high, top)
        until = close_after(i, high)
        if until is not None and (rows := state.close(until)) is not None:
            assert rows.schema == RAW_SCHEMA
            out.append(rows)
        if rng.random() < 0.2:
            state = pickle.loads(pickle.dumps(state))
    if (rows := state.close(end)) is not None:
        out.append(rows)
    return pl.concat(out) if out else pl.DataFrame(schema=RAW_SCHEMA)


def window_by_window(d: IndicatorDef, parts: list[pl.DataFrame], end: int) -> pl.DataFrame:
    """The rows of a state closed one window at a time, each as soon as it can be."""
    w, lateness = d.window_us, 60_000_000
    state, out, high = make(d), [], None

    def close_each(until: int) -> None:
        while state._next is not None and state._next + w <= until:
            if (rows := state.close(state._next + w)) is not None:
                out.append(rows)

    for part in parts:
        if part.height:
            state.add(part)
            top = part["t"].max()
            high = top if high is None else max(high, top)
            close_each(high - lateness)
    close_each(end)
    return pl.concat(out) if out else pl.DataFrame(schema=RAW_SCHEMA)


def online_reference(d: IndicatorDef, parts: list[pl.DataFrame], end: int) -> pl.DataFrame:
    """The online rate at every window end, replayed plainly from its definition.

    A device is known at a window end from its first heartbeat on while its latest
    heartbeat plus ``forget_after`` is not before the end; it is online while that
    heartbeat plus its allowance is not. Its allowance is that of its latest row in
    the latest window it was heard in (rows in the order they came).
    """
    w = d.window_us
    rows = pl.concat(parts).with_columns(allow=allowance_us(DEVICES))
    first = rows["window_start"].min()
    heard: dict[tuple[str, str], tuple[int, int]] = {}  # (entity, device) -> last, allow
    by_window = rows.partition_by("window_start", as_dict=True)
    out = []
    start = first
    while start + w <= end:
        window = by_window.get((start,))
        if window is not None:
            latest: dict[tuple[str, str], tuple[int, int]] = {}
            for entity, device, t, allow in window.select(
                "entity_id", "device", "t", "allow"
            ).iter_rows():
                last = max(t, latest.get((entity, device), (t, 0))[0])
                latest[(entity, device)] = (last, allow)
            heard.update(latest)
        stop = start + w
        known: dict[str, list[int]] = {}
        for (entity, _), (last, allow) in heard.items():
            if last + DEVICES.forget_after_us >= stop:
                counts = known.setdefault(entity, [0, 0])
                counts[0] += 1
                counts[1] += last + allow >= stop
        for entity in sorted(known):
            n, online = known[entity]
            out.append((entity, start, online / n, n))
        start = stop
    return pl.DataFrame(out, schema=RAW_SCHEMA, orient="row")


def random_closes(rng: random.Random, lateness: int = 60_000_000):
    """Close after a part, at random: now and then, or not for a long while."""

    def close_after(i: int, high: int | None) -> int | None:
        if high is None or rng.random() < 0.6:
            return None
        return high - lateness

    return close_after


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("indicator_id", ONLINE)
def test_online_rate_closing_many_windows_at_once_is_the_plain_replay(indicator_id, seed):
    rng = random.Random(seed)
    d = CATALOG[indicator_id]
    frame = random_beats(rng, 40, 120)
    parts = [partial(d, b) for b in batches(frame, rng)]
    end = frame["ts"].dt.epoch("us").max() + 1_000_000
    reference = online_reference(d, parts, end)
    assert reference.height > 30
    assert reference["value"].n_unique() > 5  # devices offline, forgotten, back
    at_once = closed(d, parts, random_closes(rng), end)
    one_by_one = window_by_window(d, parts, end)
    assert one_by_one.equals(reference)
    assert at_once.equals(reference)


def test_online_rate_catching_up_on_many_windows_counts_them_in_blocks(monkeypatch):
    rng = random.Random(7)
    d = CATALOG["device.online_rate"]
    frame = random_beats(rng, 30, 90)
    parts = [partial(d, b) for b in batches(frame, rng)]
    end = frame["ts"].dt.epoch("us").max() + 1_000_000
    reference = online_reference(d, parts, end)
    monkeypatch.setattr(population, "_CELLS", 20)  # a few windows per block
    assert closed(d, parts, lambda i, high: None, end).equals(reference)


@pytest.mark.parametrize("seed", [4, 5])
@pytest.mark.parametrize("when", ["after_every_part", "when_doubled"])
def test_online_rate_with_its_rows_compacted_is_the_plain_replay(monkeypatch, seed, when):
    """Kept rows merged into one per device, entity and window (and those of closed
    windows dropped) close into the same values; a snapshot keeps the state compact."""
    rng = random.Random(seed)
    d = CATALOG["device.online_rate_all"]  # keyed by district alone: types mix in a key
    frame = random_beats(rng, 40, 120)
    kinds = [rng.choice(KINDS) if rng.random() < 0.3 else k for k in frame["device_type"]]
    frame = frame.with_columns(device_type=pl.Series(kinds))  # which row is latest matters
    parts = [partial(d, b) for b in batches(frame, rng)]
    end = frame["ts"].dt.epoch("us").max() + 1_000_000
    reference = online_reference(d, parts, end)
    kept = []
    compact, keep = OnlineRate._compact, OnlineRate._keep

    def counted(self):
        compact(self)
        kept.append(self._rows)

    monkeypatch.setattr(OnlineRate, "_compact", counted)
    if when == "after_every_part":
        monkeypatch.setattr(OnlineRate, "_keep", lambda st, part: (keep(st, part), counted(st)))
    else:
        monkeypatch.setattr(population, "_COMPACT_ROWS", 50)
    assert closed(d, parts, random_closes(rng), end).equals(reference)
    assert kept  # it ran
    assert max(kept) < sum(p.height for p in parts) / 4  # rows of a few windows, not all


def test_online_rate_from_a_snapshot_taken_before_compaction_closes_the_same():
    """A snapshot of the last release has no row counts: it restores with them counted."""
    rng = random.Random(8)
    d = CATALOG["device.online_rate"]
    frame = random_beats(rng, 20, 60)
    parts = [partial(d, b) for b in batches(frame, rng)]
    end = frame["ts"].dt.epoch("us").max() + 1_000_000
    state = OnlineRate(d, DEVICES)
    for part in parts[: len(parts) // 2]:
        state.add(part)
    old = {k: v for k, v in vars(state).items() if k not in ("_rows", "_compacted", "_closed_us")}
    restored = OnlineRate.__new__(OnlineRate)
    restored.__setstate__(pickle.loads(pickle.dumps(old)))
    assert restored._rows == sum(p.height for p in restored._parts) > 0
    for part in parts[len(parts) // 2 :]:
        restored.add(part)
    assert restored.close(end).equals(online_reference(d, parts, end))


def test_online_rate_after_a_silence_longer_than_forget_after_starts_afresh():
    d = CATALOG["device.online_rate"]
    beats = pl.DataFrame(
        {
            "device_id": ["a", "b", "a", "a"],  # at 0, 3, 4 and 62 minutes
            "device_type": ["camera"] * 4,
            "grid_id": ["G1"] * 4,
            "district_id": ["D1"] * 4,
            "ts": [T0 + timedelta(minutes=m) for m in (0, 3, 4, 62)],
        }
    )
    state = OnlineRate(d, DEVICES)
    state.add(partial(d, beats))
    end = int((T0 + timedelta(minutes=65)).timestamp()) * 1_000_000
    rows = state.close(end).select("window_start", "value", "samples").rows()
    minute = 60_000_000
    starts = [(ws - rows[0][0]) // minute for ws, _, _ in rows]
    # Cameras are offline 3 minutes after their last heartbeat: b (last at 3) from 6, a
    # (last at 4) from 7. b is forgotten after 15 (3 + 12: still known at the end of
    # [10, 15)), a after 16; a is back at 62, still online at 65 (exactly 3 minutes).
    assert starts == [0, 5, 10, 60]
    assert [(v, n) for _, v, n in rows] == [(1.0, 2), (0.0, 2), (0.0, 2), (1.0, 1)]
    assert state._known["device"].to_list() == ["a"]


@pytest.mark.parametrize("indicator_id", LIFECYCLE_IDS)
def test_lifecycle_closing_many_windows_at_once_is_closing_them_one_by_one(indicator_id):
    rng = random.Random(indicator_id)
    d = CATALOG[indicator_id]
    frame = random_orders(rng, 400, span_minutes=6 * 60)
    parts = [partial(d, b) for b in batches(frame, rng)]
    end = frame["ts"].dt.epoch("us").max() + 1_000_000
    one_by_one = window_by_window(d, parts, end)
    assert one_by_one.height >= 2
    assert closed(d, parts, random_closes(rng), end).equals(one_by_one)
    assert closed(d, parts, lambda i, high: None, end).equals(one_by_one)  # all at the end
