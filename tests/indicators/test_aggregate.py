"""The stacked partials of every column indicator equal each indicator's own partial."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from cityvitals.simulate import Scenario, generate
from indicators.aggregate import (
    COLUMN_KINDS,
    COLUMNS,
    kind,
    partial,
    partials,
    shard_of,
    split_by_shard,
)
from indicators.definitions import Catalog, load_catalog
from schemas.decode import Decoder, RawBatch
from schemas.families import INPUT_FAMILIES, polars_schema

NOW = datetime(2026, 5, 12, 12, tzinfo=UTC)
KEY = ["entity_id", "window_start"]


def simulated_frames(minutes: int) -> dict[str, pl.DataFrame]:
    """Every family's valid frame from ``minutes`` of the simulated afternoon (with bad lines)."""
    scenario = Scenario(devices=300, minutes=minutes, seed=11, bad_rate=0.01)
    lines = [line for batch in generate(scenario) for line in batch]
    return Decoder(now=lambda: NOW).decode(RawBatch("sim", 0, 0, lines)).frames


@pytest.fixture(scope="module")
def frames() -> dict[str, pl.DataFrame]:
    return simulated_frames(60)


def test_every_family_and_column_kind_is_exercised(frames):
    catalog = load_catalog()
    kinds = {kind(d) for d in catalog.indicators if frames[d.family].height}
    assert set(COLUMN_KINDS) <= kinds
    assert {"reading", "heartbeat", "gate", "workorder"} <= set(frames)


def test_stacked_partials_equal_each_indicators_own(frames):
    catalog = load_catalog()
    stacked = partials(catalog, frames)[COLUMNS]
    checked = 0
    for d in catalog.indicators:
        if kind(d) not in COLUMN_KINDS:
            continue
        own = partial(d, frames[d.family])
        mine = stacked.filter(pl.col("indicator_id") == d.id)
        assert mine.height == own.height, d.id
        assert (mine["_end"] == mine["window_start"] + d.window_us).all(), d.id
        cols = own.columns
        got = mine.select(cols).sort(KEY)
        want = own.sort(KEY)
        for c in cols:
            if c == "values":  # the same values, in whatever order the group got them
                got_v = got[c].list.sort().to_list()
                assert got_v == want[c].list.sort().to_list(), d.id
            elif got[c].dtype == pl.Float64:
                assert got[c].to_list() == pytest.approx(want[c].to_list(), rel=1e-12), (d.id, c)
            else:
                assert got[c].to_list() == want[c].to_list(), (d.id, c)
        checked += own.height > 0
    assert checked >= 30  # most column indicators have rows in an hour of the afternoon


def test_population_indicators_keep_their_own_frames(frames):
    catalog = load_catalog()
    out = partials(catalog, frames)
    population = [d for d in catalog.indicators if kind(d) not in COLUMN_KINDS]
    for d in population:
        own = partial(d, frames[d.family])
        if own.height:
            assert out[d.id].sort(out[d.id].columns).equals(own.sort(own.columns)), d.id
        else:
            assert d.id not in out
    assert set(out) - {COLUMNS} <= {d.id for d in population}


def test_only_the_families_given_are_aggregated(frames):
    catalog = load_catalog()
    only = {"gate": frames["gate"]}
    out = partials(catalog, only)
    assert set(out[COLUMNS]["indicator_id"]) == {
        d.id for d in catalog.indicators if d.family == "gate" and kind(d) in COLUMN_KINDS
    }
    assert partials(catalog, {"gate": frames["gate"].clear()}) == {}


def reference_split(
    parts: dict[str, pl.DataFrame], shards: int, keys: dict[str, str] | None = None
) -> list[dict[str, pl.DataFrame]]:
    """Each frame tagged with its rows' shards and split, one by one."""
    out: list[dict[str, pl.DataFrame]] = [{} for _ in range(shards)]
    keys = keys or {}
    for name, frame in parts.items():
        shard = shard_of(pl.col(keys.get(name, "entity_id")), shards).alias("_shard")
        tagged = frame.with_columns(shard)
        for (i,), piece in tagged.partition_by("_shard", as_dict=True, include_key=False).items():
            out[i][name] = piece
    return out


@pytest.mark.parametrize("shards", [1, 2, 3, 8])
def test_split_by_shard_puts_each_row_where_its_entity_lives(frames, shards):
    """Shared frames (population indicators that pick alike share one) are split once,
    an empty frame is in no shard, and a frame may be sharded by another column."""
    parts = partials(load_catalog(), frames)
    assert len({id(f) for f in parts.values()}) < len(parts)  # some frames are shared
    parts["empty"] = parts[COLUMNS].clear()
    parts["by_device"] = frames["heartbeat"].select("device_id", "ts")
    keys = {"by_device": "device_id"}
    got = split_by_shard(parts, shards, keys)
    want = reference_split(parts, shards, keys)
    assert len(got) == len(want) == shards
    for mine, theirs in zip(got, want, strict=True):
        assert list(mine) == list(theirs)
        for name, piece in theirs.items():
            assert mine[name].equals(piece), name
    assert sum(s["by_device"].height for s in got) == frames["heartbeat"].height
    assert all("empty" not in s for s in got)


def test_a_day_window_starts_at_midnight_in_the_catalogue_time_zone():
    """The default catalogue's zone is Asia/Shanghai: its days turn at 16:00 UTC."""
    catalog = load_catalog()
    d = catalog["service.satisfaction_rate"]  # a mean per department and day
    assert catalog.timezone == "Asia/Shanghai" and d.window == timedelta(days=1)
    turn = datetime(2026, 5, 12, 16, tzinfo=UTC)  # 00:00 on 13 May in Beijing
    wire = polars_schema(INPUT_FAMILIES["workorder"])
    frame = pl.DataFrame(
        {
            "ts": [turn - timedelta(seconds=1), turn],
            "order_id": ["a", "b"],
            "status": ["closed", "closed"],
            "department": ["roads", "roads"],
            "satisfied": [True, False],
        }
    ).select(
        pl.col(c).cast(t)
        if c in ("ts", "order_id", "status", "department", "satisfied")
        else pl.lit(None, dtype=t).alias(c)
        for c, t in wire.items()
    )
    want = [turn - timedelta(days=1), turn]
    own = partial(d, frame).sort("window_start")
    assert own["window_start"].to_list() == [_us(t) for t in want]
    stacked = partials(catalog, {"workorder": frame})[COLUMNS]
    mine = stacked.filter(pl.col("indicator_id") == d.id).sort("window_start")
    assert mine["window_start"].to_list() == [_us(t) for t in want]
    # The same definition in a catalogue in UTC: one day, from 00:00 UTC.
    in_utc = Catalog(indicators=[d]).indicators[0]
    assert partial(in_utc, frame)["window_start"].to_list() == [
        _us(datetime(2026, 5, 12, tzinfo=UTC))
    ]
    assert d.window_offset_us == 8 * 3_600_000_000  # the catalogue's own is left as it was


def _us(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
