"""The timers' clock: event time for replays, the wall clock too for a live stream."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import polars as pl

from indicators.deadlines import changes
from indicators.definitions import load_catalog
from indicators.liveness import heard
from indicators.timers import Timers

CATALOG = load_catalog()
T0 = datetime(2026, 5, 12, 10, tzinfo=UTC)
LATENESS = timedelta(seconds=30)


def us(t: datetime) -> int:
    return int(t.timestamp() * 1_000_000)


def beats(*rows) -> pl.DataFrame:
    """Camera heartbeats (seconds after T0, device)."""
    return pl.DataFrame(
        {
            "device_id": [d for _, d in rows],
            "device_type": ["camera"] * len(rows),
            "grid_id": ["G1"] * len(rows),
            "district_id": ["D1"] * len(rows),
            "ts": [T0 + timedelta(seconds=s) for s, _ in rows],
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )


def reports(*rows) -> pl.DataFrame:
    """Small orders reported (seconds after T0, order)."""
    return pl.DataFrame(
        {
            "ts": [T0 + timedelta(seconds=s) for s, _ in rows],
            "order_id": [o for _, o in rows],
            "status": ["reported"] * len(rows),
            "event_class": ["small"] * len(rows),
            "department": ["roads"] * len(rows),
            "grid_id": ["G1"] * len(rows),
            "district_id": ["D1"] * len(rows),
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )


def batch(partition: str, beat_rows, order_rows) -> tuple:
    """``Timers.add_all``'s item for one batch: its watermark is its latest event time
    minus the lateness."""
    latest = max(s for s, _ in [*beat_rows, *order_rows])
    mark = us(T0 + timedelta(seconds=latest) - LATENESS)
    runs = heard(beats(*beat_rows), CATALOG.devices) if beat_rows else None
    orders = changes(reports(*order_rows)) if order_rows else None
    return partition, runs, orders, mark, False


def feed(timers: Timers, beat_rows, order_rows, now: datetime):
    """One batch in (see :func:`batch`)."""
    return timers.add(*batch("p0", beat_rows, order_rows)[:4], now)


def keys(devices: pl.DataFrame, orders: pl.DataFrame) -> list[tuple]:
    return sorted(
        [(d, s, t) for d, s, t in devices.select("device_id", "status", "event_ts").iter_rows()]
        + [(o, s, t) for o, s, t in orders.select("order_id", "state", "event_ts").iter_rows()]
    )


def test_in_event_time_only_input_moves_the_clock():
    timers = Timers(CATALOG, ["p0"], clock="event")
    feed(timers, [(0, "cam")], [], now=T0)
    assert timers.wake_at() is None
    devices, _ = timers.tick(now=T0 + timedelta(hours=1))
    assert devices.height == 0  # an hour of wall time: still no offline in event time
    devices, _ = feed(timers, [(400, "other")], [], now=T0 + timedelta(hours=1))
    assert devices.select("device_id", "status").rows() == [("cam", "offline")]


def test_in_wall_time_a_silent_stream_still_fires_on_time():
    timers = Timers(CATALOG, ["p0"], clock="wall")
    feed(timers, [(0, "cam")], [(0, "WO-1")], now=T0)
    # The watermark is 30 s behind: the camera's 3 minutes end 3.5 minutes of wall time on.
    assert timers.wake_at() == T0 + timedelta(minutes=3, seconds=30, microseconds=1)
    devices, orders = timers.tick(now=T0 + timedelta(minutes=3, seconds=30))
    assert devices.height == orders.height == 0
    devices, orders = timers.tick(now=T0 + timedelta(minutes=3, seconds=31))
    assert devices.select("device_id", "status", "event_ts").rows() == [
        ("cam", "offline", T0 + timedelta(minutes=3))
    ]
    assert timers.wake_at() == T0 + timedelta(minutes=30, seconds=30, microseconds=1)
    devices, orders = timers.tick(now=T0 + timedelta(minutes=31))
    assert orders.select("order_id", "state", "event_ts").rows() == [
        ("WO-1", "overdue", T0 + timedelta(minutes=30))
    ]


def test_a_replay_gives_the_same_records_as_the_live_run():
    """Live: batches come as they happen and the wall clock ticks between; replay: all at once."""
    batches = [  # (seconds after T0 when the batch arrives live, heartbeats, order reports)
        (5, [(0, "a"), (0, "b"), (0, "c")], [(1, "WO-1")]),
        (65, [(60, "a"), (60, "b"), (61, "c")], []),
        (125, [(120, "a"), (121, "c")], [(100, "WO-2")]),  # b falls silent
        (185, [(180, "a")], []),  # c falls silent
        (1500, [(1495, "a"), (1496, "c")], []),  # 20 minutes of silence, then a and c again
        (3000, [(2995, "a")], [(2990, "WO-3")]),
    ]
    live = Timers(CATALOG, ["p0"], clock="wall")
    seen = []
    for k, (arrives, beat_rows, order_rows) in enumerate(batches):
        now = T0 + timedelta(seconds=arrives)
        seen.append(feed(live, beat_rows, order_rows, now))
        until = T0 + timedelta(seconds=batches[k + 1][0]) if k + 1 < len(batches) else None
        while (wake := live.wake_at()) is not None and (until is None or wake < until):
            if until is None and wake > T0 + timedelta(seconds=3000):
                break
            seen.append(live.tick(wake))
    replay = Timers(CATALOG, ["p0"], clock="event")
    replayed = [feed(replay, b, o, now=T0) for _, b, o in batches]
    live_keys = keys(pl.concat([d for d, _ in seen]), pl.concat([o for _, o in seen]))
    replay_keys = keys(pl.concat([d for d, _ in replayed]), pl.concat([o for _, o in replayed]))
    # The live clock stopped where the replay's did (the last batch came at 3000 s), and
    # every record's time is when it happened, not when it was found: they agree exactly.
    assert live_keys == replay_keys
    assert ("b", "offline", T0 + timedelta(minutes=4)) in replay_keys
    assert ("c", "offline", T0 + timedelta(seconds=301)) in replay_keys
    assert ("c", "online", T0 + timedelta(seconds=1496)) in replay_keys
    assert ("WO-1", "overdue", T0 + timedelta(seconds=1801)) in replay_keys
    # The live run found the silences before the next batch told it.
    offline_c = [d for d, _ in seen if "c" in d.filter(pl.col("status") == "offline")["device_id"]]
    assert offline_c


def test_timers_survive_a_snapshot():
    timers = Timers(CATALOG, ["p0"], clock="wall")
    feed(timers, [(0, "cam")], [(0, "WO-1")], now=T0)
    copy = pickle.loads(pickle.dumps(timers))
    assert copy.wake_at() == timers.wake_at()
    later = T0 + timedelta(hours=1)
    assert keys(*copy.tick(later)) == keys(*timers.tick(later))


def test_after_a_recovery_the_wall_clock_counts_from_the_restart():
    timers = Timers(CATALOG, ["p0"], clock="wall")
    feed(timers, [(0, "cam")], [], now=T0)
    restored = pickle.loads(pickle.dumps(timers)).resumed(T0 + timedelta(hours=2))
    # Two hours down are not two hours of silence: the backlog is still to be read.
    devices, _ = restored.tick(T0 + timedelta(hours=2, minutes=1))
    assert devices.height == 0
    assert restored.wake_at() == T0 + timedelta(hours=2, minutes=3, seconds=30, microseconds=1)


def test_batches_taken_together_give_the_records_of_one_at_a_time():
    """The flow hands the timers every batch of an activation at once (one per partition)."""
    batches = [  # (partition, heartbeats, order reports)
        ("p0", [(0, "a"), (0, "b")], [(1, "WO-1")]),
        ("p1", [(2, "c")], []),
        ("p0", [(60, "a"), (61, "b")], []),
        ("p1", [(62, "c")], [(50, "WO-2")]),
        ("p0", [(120, "a")], []),  # b falls silent
        ("p1", [(700, "c")], []),
        ("p0", [(1500, "a"), (1501, "b")], []),  # b is back
        ("p1", [(1502, "c")], []),
        ("p0", [(3000, "a")], [(2990, "WO-3")]),
        ("p1", [(3001, "c")], []),
    ]
    single = Timers(CATALOG, ["p0", "p1"])
    one = [single.add(*batch(*b)[:4], now=T0) for b in batches]
    grouped = Timers(CATALOG, ["p0", "p1"])
    together = [grouped.add_all([batch(*b) for b in batches[i : i + 3]], T0) for i in (0, 3, 6, 9)]
    want = keys(pl.concat([d for d, _ in one]), pl.concat([o for _, o in one]))
    got = keys(pl.concat([d for d, _ in together]), pl.concat([o for _, o in together]))
    assert got == want
    assert ("b", "offline", T0 + timedelta(seconds=241)) in got
    assert ("b", "online", T0 + timedelta(seconds=1501)) in got
    assert ("WO-1", "overdue", T0 + timedelta(seconds=1801)) in got
