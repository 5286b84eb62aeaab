"""The timers step in the real dataflow: offline devices and overdue orders in the lake."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import run_main

from cityvitals.lake import Lake
from flows.city import build
from flows.config import PipelineConfig
from flows.sources import JsonLinesSource
from indicators.definitions import Devices, load_catalog
from schemas.decode import RawBatch, partition_key
from schemas.families import DEVICE_TYPES

T0 = datetime(2026, 5, 12, 6, tzinfo=UTC)


def _stamp(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def heartbeat(t: datetime, device: str) -> bytes:
    return orjson.dumps(
        {
            "family": "heartbeat",
            "ts": _stamp(t),
            "device_id": device,
            "device_type": "camera",
            "grid_id": "D01-G01",
            "district_id": "D01",
        }
    )


def workorder(t: datetime, order: str, status: str) -> bytes:
    return orjson.dumps(
        {
            "family": "workorder",
            "ts": _stamp(t),
            "order_id": order,
            "status": status,
            "event_class": "small",
            "department": "roads",
            "grid_id": "D01-G01",
            "district_id": "D01",
        }
    )


def _records(out, table: str, columns: str) -> list[tuple]:
    con = Lake(out).connect()
    try:
        return con.execute(f"SELECT {columns} FROM {table} ORDER BY ALL").fetchall()
    finally:
        con.close()


def test_offline_and_overdue_records_land_in_the_lake_at_their_instants(tmp_path):
    m = lambda minutes: T0 + timedelta(minutes=minutes)  # noqa: E731
    lines = [heartbeat(m(k), "cam-a") for k in range(41)]
    lines += [heartbeat(m(k), "cam-b") for k in (0, 1, 2)]  # then silent
    lines += [workorder(m(1), "WO-1", "reported"), workorder(m(3), "WO-2", "reported")]
    lines += [workorder(m(20), "WO-2", "dispatched")]  # in time
    lines += [workorder(m(38), "WO-1", "dispatched")]  # 7 minutes late
    lines.sort(key=lambda line: orjson.loads(line)["ts"])
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    seen = {}
    for shards, batch in ((1, 10_000), (3, 7), (2, 1)):
        out = tmp_path / f"out-{shards}-{batch}"
        config = PipelineConfig(out=out, shards=shards, batch_size=batch)
        run_main(build(JsonLinesSource(path, batch), config))
        seen[(shards, batch)] = (
            _records(out, "device_status", "device_id, status, event_ts, last_seen_ts"),
            _records(out, "order_deadlines", "order_id, state, event_ts, overdue_s"),
        )
    devices, orders = seen[(1, 10_000)]
    assert devices == [("cam-b", "offline", m(5), m(2))]
    assert orders == [("WO-1", "dispatched_late", m(38), 420.0), ("WO-1", "overdue", m(31), 0.0)]
    # Shards and batch boundaries change nothing.
    assert all(got == seen[(1, 10_000)] for got in seen.values())


class _LivePartition(StatefulSourcePartition[RawBatch, None]):
    """One batch of heartbeats stamped now, then silence (no input at all) for ``hold`` s."""

    def __init__(self, name: str, devices: list[str], hold: float) -> None:
        self._name = name
        self._devices = devices
        self._hold = hold
        self._sent_at: float | None = None

    def next_batch(self) -> list[RawBatch]:
        if self._sent_at is None:
            self._sent_at = time.monotonic()
            now = datetime.now(UTC)
            return [RawBatch(self._name, 0, 0, [heartbeat(now, d) for d in self._devices])]
        if time.monotonic() - self._sent_at > self._hold:
            raise StopIteration
        return []

    def next_awake(self) -> datetime:
        return datetime.now(UTC) + timedelta(milliseconds=20)

    def snapshot(self) -> None:
        return None


class _LiveSource(FixedPartitionedSource[RawBatch, None]):
    def __init__(self, devices: list[str], hold: float) -> None:
        self.devices, self.hold = devices, hold

    def list_parts(self) -> list[str]:
        return [partition_key("live", 0)]

    def build_part(self, step_id, for_part, resume_state):
        return _LivePartition("live", self.devices, self.hold)


def test_on_a_live_stream_that_goes_silent_devices_go_offline_by_the_wall_clock(tmp_path):
    # Cameras with a 1-second heartbeat, offline after 1 second of silence; nothing at all
    # arrives after the first batch, so only the wall-clock timer can find them.
    devices = Devices(
        heartbeat=dict.fromkeys(DEVICE_TYPES, "1s"), missed_heartbeats=1, forget_after="1h"
    )
    catalog = load_catalog().model_copy(update={"devices": devices})
    config = PipelineConfig(
        out=tmp_path / "out", clock="wall", allowed_lateness="100ms", flush_interval="100ms"
    )
    started = datetime.now(UTC)
    run_main(build(_LiveSource(["cam-a", "cam-b"], hold=2.5), config, catalog=catalog))
    rows = _records(config.out, "device_status", "device_id, status, event_ts, last_seen_ts")
    assert [(d, s) for d, s, _, _ in rows] == [("cam-a", "offline"), ("cam-b", "offline")]
    for _, _, offline_at, last_seen in rows:
        assert offline_at - last_seen == timedelta(seconds=1)  # the instant, not when found
        assert started <= last_seen <= started + timedelta(seconds=2)
    # In event time the same input finds nothing: the watermark never passes the allowance.
    event = config.model_copy(update={"out": tmp_path / "event", "clock": "event"})
    run_main(build(_LiveSource(["cam-a", "cam-b"], hold=0.5), event, catalog=catalog))
    assert _records(event.out, "device_status", "device_id") == []


class _PacedPartition(StatefulSourcePartition[RawBatch, None]):
    """Replays ``beats`` (seconds from the start, device) live: each stamped and sent on time."""

    def __init__(self, beats: list[tuple[float, str]], sent: list[bytes]) -> None:
        self._beats = sorted(beats)
        self._sent = sent
        self._start = time.monotonic()
        self._t0 = datetime.now(UTC)

    def next_batch(self) -> list[RawBatch]:
        if not self._beats:
            raise StopIteration
        elapsed = time.monotonic() - self._start
        due = [b for b in self._beats if b[0] <= elapsed]
        if not due:
            return []
        self._beats = self._beats[len(due) :]
        lines = [heartbeat(self._t0 + timedelta(seconds=s), d) for s, d in due]
        offset = len(self._sent)
        self._sent.extend(lines)
        return [RawBatch("live", 0, offset, lines)]

    def next_awake(self) -> datetime:
        return datetime.now(UTC) + timedelta(milliseconds=10)

    def snapshot(self) -> None:
        return None


class _PacedSource(FixedPartitionedSource[RawBatch, None]):
    def __init__(self, beats: list[tuple[float, str]]) -> None:
        self.beats = beats
        self.sent: list[bytes] = []

    def list_parts(self) -> list[str]:
        return [partition_key("live", 0)]

    def build_part(self, step_id, for_part, resume_state):
        return _PacedPartition(self.beats, self.sent)


def test_a_replay_of_the_recorded_stream_gives_the_live_runs_records(tmp_path):
    # 1-second allowance. "a" beats all along; "b" stops at 1 s and comes back at 2.6 s;
    # "c" stops at 0.4 s for good. Live, the wall clock may find a silence before the
    # watermark does; the replay of the same lines in event time must agree record for record.
    devices = Devices(
        heartbeat=dict.fromkeys(DEVICE_TYPES, "500ms"), missed_heartbeats=2, forget_after="1h"
    )
    catalog = load_catalog().model_copy(update={"devices": devices})
    beats = [(k * 0.2, "a") for k in range(21)]
    beats += [(k * 0.2, "b") for k in range(6)] + [(2.6, "b"), (2.8, "b")]
    beats += [(0.0, "c"), (0.2, "c"), (0.4, "c")]
    live_source = _PacedSource(beats)
    live = PipelineConfig(
        out=tmp_path / "live", clock="wall", allowed_lateness="50ms", flush_interval="100ms"
    )
    run_main(build(live_source, live, catalog=catalog))
    path = tmp_path / "recorded.jsonl"
    path.write_bytes(b"\n".join(live_source.sent) + b"\n")
    replay = live.model_copy(update={"out": tmp_path / "replay", "clock": "event"})
    run_main(build(JsonLinesSource(path, 3), replay, catalog=catalog))
    columns = "device_id, status, event_ts, last_seen_ts, silent_s"
    got_live = _records(live.out, "device_status", columns)
    got_replay = _records(replay.out, "device_status", columns)
    assert [(d, s) for d, s, *_ in got_replay] == [
        ("b", "offline"),  # at 2.0 s
        ("b", "offline"),  # at 3.8 s, after its return
        ("b", "online"),  # at 2.6 s
        ("c", "offline"),  # at 1.4 s
    ]
    assert got_live == got_replay
