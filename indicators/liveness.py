"""Device liveness: a device is offline once it has been silent past its allowance.

Silence is found by the clock, not by the next message: :meth:`Liveness.advance`
moves the state to a time and returns the devices whose allowance ran out
before it, whether or not anything else arrived for them. Its caller decides
what time is (the timers step: the watermark in event time, or the wall clock
too for a live stream, see :mod:`indicators.timers`).

A device's allowance is ``missed_heartbeats`` times its type's heartbeat
interval (:class:`indicators.definitions.Devices`). With its last heartbeat at
``L`` and allowance ``A``, it is offline from ``L + A`` on, unless a heartbeat
comes at or before that instant: the ``offline`` record's event time is
``L + A`` exactly, however late the clock noticed. Its next heartbeat, at
``t``, brings it back with an ``online`` record at ``t``. A device silent for
``forget_after`` is ``forgotten``: it leaves the state, as a removed device
should. The records are therefore the same whether a history is replayed in
event time or lived through in real time.

State is columnar: one row per device in NumPy arrays (last heartbeat, type,
grid, district, offline flag) plus a dict from device id to row, which is
what most of the bytes per device are (measured in
``tests/indicators/test_liveness.py``).

>>> from datetime import datetime, timedelta, UTC
>>> from indicators.definitions import Devices
>>> t0 = datetime(2026, 5, 12, 6, tzinfo=UTC)
>>> beats = pl.DataFrame({"device_id": ["cam-1", "cam-2", "cam-1"],
...     "device_type": ["camera"] * 3, "grid_id": ["G1"] * 3, "district_id": ["D1"] * 3,
...     "ts": [t0, t0, t0 + timedelta(minutes=1)]})
>>> live = Liveness(Devices())            # cameras: 3 heartbeats of 1 minute allowed
>>> live.observe(heard(beats, Devices())).height
0
>>> at = lambda m: int((t0 + timedelta(minutes=m)).timestamp()) * 1_000_000
>>> live.advance(at(3)).height            # cam-2's allowance ends at 3 min: not before
0
>>> live.advance(at(3) + 1).select("device_id", "status", "event_ts").rows()
[('cam-2', 'offline', datetime.datetime(2026, 5, 12, 6, 3, tzinfo=zoneinfo.ZoneInfo(key='UTC')))]
>>> live.offline, live.devices
(1, 2)
"""

from __future__ import annotations

import numpy as np
import polars as pl

from indicators.definitions import Devices
from schemas.families import DEVICE_STATUS, DEVICE_TYPES, polars_schema

__all__ = ["RECORDS_SCHEMA", "Liveness", "allowance_us", "heard"]

#: What :class:`Liveness` returns: device status records without ``emitted_at``.
RECORDS_SCHEMA = polars_schema(DEVICE_STATUS, drop=("emitted_at",))

_HEARD = {
    "device_id": pl.String,
    "device_type": pl.String,
    "grid_id": pl.String,
    "district_id": pl.String,
    "first": pl.Int64,
    "last": pl.Int64,
}
_TYPE_CODE = {t: i for i, t in enumerate(DEVICE_TYPES)}


def allowance_us(devices: Devices) -> pl.Expr:
    """Each row's silence allowance in µs, from its ``device_type`` column."""
    return pl.col("device_type").replace_strict(devices.allowance_us, return_dtype=pl.Int64)


def heard(frame: pl.DataFrame, devices: Devices) -> pl.DataFrame:
    """One batch's heartbeats as runs: a row per device and stretch without a silence.

    Consecutive heartbeats of a device further apart than its allowance split
    it into two runs (``first``, ``last`` in epoch microseconds), so a silence
    inside one batch is found as surely as one across batches.

    >>> from datetime import datetime, timedelta, UTC
    >>> t0 = datetime(2026, 5, 12, 6, tzinfo=UTC)
    >>> f = pl.DataFrame({"device_id": ["s"] * 3, "device_type": ["smoke_detector"] * 3,
    ...     "grid_id": ["G"] * 3, "district_id": ["D"] * 3,
    ...     "ts": [t0 + timedelta(minutes=m) for m in (0, 1, 9)]})
    >>> [(r["first"] // 60_000_000 % 60, r["last"] // 60_000_000 % 60)
    ...  for r in heard(f, Devices()).iter_rows(named=True)]
    [(0, 1), (9, 9)]
    """
    if not frame.height:
        return pl.DataFrame(schema=_HEARD)
    t = pl.col("ts").dt.epoch("us")
    rows = frame.select("device_id", "device_type", "grid_id", "district_id", t.alias("t")).sort(
        "device_id", "t"
    )
    gap = (pl.col("t") - pl.col("t").shift(1).over("device_id")) > allowance_us(devices)
    return (
        rows.with_columns(_run=gap.fill_null(False).cum_sum().over("device_id"))
        .group_by("device_id", "_run", maintain_order=True)
        .agg(
            pl.col("device_type", "grid_id", "district_id").last(),
            pl.col("t").min().alias("first"),
            pl.col("t").max().alias("last"),
        )
        .select(list(_HEARD))
    )


class _Codes:
    """Small strings (grids, districts) as integer codes, and back."""

    def __init__(self) -> None:
        self._code: dict[str, int] = {}
        self.names: list[str] = []

    def __call__(self, name: str) -> int:
        code = self._code.get(name)
        if code is None:
            code = self._code[name] = len(self.names)
            self.names.append(name)
        return code


class Liveness:
    """Last heartbeat and offline flag of every known device."""

    def __init__(self, devices: Devices) -> None:
        self.settings = devices
        self._allow = np.array(
            [devices.allowance_us[t] for t in DEVICE_TYPES], dtype=np.int64
        )  # by type code
        self._forget_us = devices.forget_after_us
        self._row: dict[str, int] = {}
        self._ids: list[str] = []
        self._grids = _Codes()
        self._districts = _Codes()
        self._n = 0
        self._type = np.zeros(0, dtype=np.int8)
        self._grid = np.zeros(0, dtype=np.int32)
        self._district = np.zeros(0, dtype=np.int32)
        self._last = np.zeros(0, dtype=np.int64)
        self._off = np.zeros(0, dtype=bool)

    @property
    def devices(self) -> int:
        """How many devices the state holds."""
        return self._n

    @property
    def offline(self) -> int:
        """How many of them are offline now."""
        return int(self._off[: self._n].sum())

    @property
    def next_due_us(self) -> int | None:
        """The earliest instant an online device goes offline if it stays silent."""
        n = self._n
        on = ~self._off[:n]
        if not on.any():
            return None
        return int((self._last[:n] + self._allow[self._type[:n]])[on].min())

    def observe(self, runs: pl.DataFrame) -> pl.DataFrame:
        """Take a batch's heartbeat runs (:func:`heard`); return the transitions they prove.

        A run that starts after its device's allowance ran out means the device
        was offline in between: its ``offline`` record (if the clock had not
        found it already) and its ``online`` record come out together.
        """
        if not runs.height:
            return pl.DataFrame(schema=RECORDS_SCHEMA)
        runs = runs.sort("device_id", "first")
        known_before = self._n
        rows = self._rows_of(runs)
        allow = self._allow[runs["device_type"].replace_strict(_TYPE_CODE).to_numpy()]
        first, last = runs["first"].to_numpy(), runs["last"].to_numpy()
        # The end of the previous stretch: the state's for a device's first run, else the
        # previous run of the batch.
        same = np.r_[False, rows[1:] == rows[:-1]]
        known = rows < known_before
        prev = np.where(same, np.r_[0, last[:-1]], np.where(known, self._last[rows], -1))
        was_off = np.where(same, False, known & self._off[rows])
        starts_off = (prev >= 0) & (was_off | (first > prev + allow))
        newly_off = starts_off & ~was_off
        out = [
            _frame(
                runs.filter(pl.Series(newly_off)),
                "offline",
                (prev + allow)[newly_off],
                prev[newly_off],
            ),
            _frame(
                runs.filter(pl.Series(starts_off)), "online", first[starts_off], prev[starts_off]
            ),
        ]
        np.maximum.at(self._last, rows, last)
        self._off[rows] = False
        return _sorted(out)

    def advance(self, until_us: int) -> pl.DataFrame:
        """Mark every device whose allowance ended before ``until_us`` offline.

        Also forgets devices silent for ``forget_after``. Returns their records.
        """
        n = self._n
        last = self._last[:n]
        due = last + self._allow[self._type[:n]]
        going = ~self._off[:n] & (due < until_us)
        out = []
        if going.any():
            idx = np.flatnonzero(going)
            out.append(self._records_at(idx, "offline", due[idx], last[idx]))
            self._off[idx] = True
        gone = last + self._forget_us < until_us
        if gone.any():
            idx = np.flatnonzero(gone)
            out.append(self._records_at(idx, "forgotten", last[idx] + self._forget_us, last[idx]))
            self._compact(~gone)
        return _sorted(out)

    # -- internals -----------------------------------------------------------

    def _rows_of(self, runs: pl.DataFrame) -> np.ndarray:
        """Row of each run's device; new devices are appended."""
        get = self._row.get
        rows = np.fromiter(
            (get(d, -1) for d in runs["device_id"]), dtype=np.int64, count=runs.height
        )
        new = np.flatnonzero(rows < 0)
        if new.size:
            fresh = runs.select(pl.all().gather(new)).unique(
                "device_id", keep="first", maintain_order=True
            )
            self._grow(self._n + fresh.height)
            for device, kind, grid, district in fresh.select(
                "device_id", "device_type", "grid_id", "district_id"
            ).iter_rows():
                i = self._n
                self._row[device] = i
                self._ids.append(device)
                self._type[i] = _TYPE_CODE[kind]
                self._grid[i] = self._grids(grid)
                self._district[i] = self._districts(district)
                self._last[i] = -1
                self._off[i] = False
                self._n += 1
            rows[new] = [self._row[d] for d in runs["device_id"].gather(new)]
        return rows

    def _grow(self, need: int) -> None:
        size = len(self._last)
        if need <= size:
            return
        size = max(need, 2 * size, 1024)
        for name in ("_type", "_grid", "_district", "_last", "_off"):
            old = getattr(self, name)
            new = np.zeros(size, dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def _compact(self, keep: np.ndarray) -> None:
        idx = np.flatnonzero(keep)
        for name in ("_type", "_grid", "_district", "_last", "_off"):
            setattr(self, name, getattr(self, name)[idx].copy())
        self._ids = [self._ids[i] for i in idx]
        self._row = {d: i for i, d in enumerate(self._ids)}
        self._n = len(self._ids)

    def _records_at(self, idx: np.ndarray, status: str, at, last) -> pl.DataFrame:
        about = pl.DataFrame(
            {
                "device_id": [self._ids[i] for i in idx],
                "device_type": [DEVICE_TYPES[c] for c in self._type[idx]],
                "grid_id": [self._grids.names[c] for c in self._grid[idx]],
                "district_id": [self._districts.names[c] for c in self._district[idx]],
            },
            schema={k: pl.String for k in ("device_id", "device_type", "grid_id", "district_id")},
        )
        return _frame(about, status, at, last)

    def __getstate__(self) -> dict:
        n = self._n
        state = dict(self.__dict__)
        for name in ("_type", "_grid", "_district", "_last", "_off"):
            state[name] = state[name][:n].copy()  # a snapshot keeps only the rows in use
        state.pop("_row")
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._row = {d: i for i, d in enumerate(self._ids)}


def _frame(about: pl.DataFrame, status: str, at, last) -> pl.DataFrame:
    """Records of the devices in ``about`` (id, type, grid, district), at times ``at``."""
    at = np.asarray(at, dtype=np.int64)
    last = np.asarray(last, dtype=np.int64)
    return about.select("device_id", "device_type", "grid_id", "district_id").with_columns(
        status=pl.lit(status),
        event_ts=pl.Series(at).cast(pl.Datetime("us", "UTC")),
        last_seen_ts=pl.Series(last).cast(pl.Datetime("us", "UTC")),
        silent_s=pl.Series((at - last) / 1e6, dtype=pl.Float64),
    )


def _sorted(frames: list[pl.DataFrame]) -> pl.DataFrame:
    frames = [f for f in frames if f.height]
    if not frames:
        return pl.DataFrame(schema=RECORDS_SCHEMA)
    return pl.concat(frames).sort("event_ts", "device_id", "status").select(list(RECORDS_SCHEMA))
