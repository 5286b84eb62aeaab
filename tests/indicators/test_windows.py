"""Window state: partials merged across batches equal one group_by over everything."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from indicators.aggregate import partial
from indicators.definitions import Catalog, Devices, IndicatorDef, load_catalog
from indicators.watermark import PartitionClock
from indicators.windows import VALUES_SCHEMA, WindowStore
from tests.indicators.streams import heartbeats, workorders

T0 = datetime(2026, 5, 12, 6, 0, tzinfo=UTC)
S = 1_000_000  # one second in microseconds
MINUTE = 60 * S
KEY = ["indicator_id", "entity_id", "window_start"]


def us(dt: datetime) -> int:
    return int(dt.timestamp()) * S + dt.microsecond


def define(id_: str, aggregation: str, window: str, **extra) -> IndicatorDef:
    spec = {
        "id": id_,
        "name_zh": "测试",
        "name_en": "Test",
        "sector": "test",
        "unit": "u",
        "family": "reading",
        "where": {"metric": "temperature"},
        "entity": {"type": "site", "by": ["site_id"]},
        "window": window,
        "aggregation": aggregation,
        "field": "value",
        "description": "test indicator",
    }
    spec.update(extra)
    return IndicatorDef.model_validate(spec)


COLUMN_DEFS = [
    define("t.mean", "mean", "5m"),
    define("t.max", "max", "1m"),
    define("t.min", "min", "15m"),
    define("t.sum", "sum", "5m", entity={"type": "flat", "by": ["grid_id", "site_id"]}),
    define("t.count", "count", "2m"),
    define("t.p95", "p95", "5m"),
    define(
        "crowd.ratio",
        "mean",
        "1m",
        where={"metric": "people_count"},
        divide_by="capacity",
    ),
]

REFERENCE_AGG = {
    "mean": pl.col("v").mean(),
    "max": pl.col("v").max(),
    "min": pl.col("v").min(),
    "sum": pl.col("v").sum(),
    "count": pl.len().cast(pl.Float64),
    "p95": pl.col("v").quantile(0.95, "linear"),
}


def random_readings(rng: random.Random, n: int, span_minutes: int) -> pl.DataFrame:
    rows = []
    for _ in range(n):
        metric = rng.choice(["temperature", "temperature", "people_count", "travel_time"])
        site = rng.randrange(6)
        capacity = rng.choice([None, 50.0, 200.0, 400.0]) if metric == "people_count" else None
        rows.append(
            {
                "ts": T0 + timedelta(microseconds=rng.randrange(span_minutes * MINUTE)),
                "metric": metric,
                "site_id": f"s{site}",
                "grid_id": f"G{site % 2}",
                "value": round(rng.uniform(-20.0, 120.0), 3),
                "capacity": capacity,
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "ts": pl.Datetime("us", "UTC"),
            "metric": pl.String,
            "site_id": pl.String,
            "grid_id": pl.String,
            "value": pl.Float64,
            "capacity": pl.Float64,
        },
    )


def reference(d: IndicatorDef, frame: pl.DataFrame) -> pl.DataFrame:
    """The values of ``d`` computed in one go over the whole frame."""
    rows = frame.filter(*[pl.col(k) == v for k, v in d.where.items()])
    v = pl.col(d.field)
    if d.divide_by:
        v = v / pl.col(d.divide_by)
    rows = rows.filter(v.is_not_null() & v.is_finite())
    t = pl.col("ts").dt.epoch("us")
    entity = pl.concat_str([pl.col(c) for c in d.entity.by], separator="/")
    out = (
        rows.select(entity.alias("entity_id"), (t - t % d.window_us).alias("ws"), v.alias("v"))
        .group_by("entity_id", "ws")
        .agg(REFERENCE_AGG[d.aggregation].alias("value"), pl.len().cast(pl.Int64).alias("samples"))
    )
    return out.select(
        pl.lit(d.id).alias("indicator_id"),
        "entity_id",
        pl.from_epoch("ws", "us").dt.replace_time_zone("UTC").alias("window_start"),
        pl.from_epoch(pl.col("ws") + d.window_us, "us")
        .dt.replace_time_zone("UTC")
        .alias("window_end"),
        "value",
        "samples",
    )


def arrival_order(rng: random.Random, frame: pl.DataFrame, lateness_us: int) -> pl.DataFrame:
    """Shuffle events within less than half the allowed lateness, so none is late."""
    jitter = [rng.randrange(lateness_us // 2) for _ in range(frame.height)]
    return (
        frame.with_columns(_key=pl.col("ts").dt.epoch("us") + pl.Series(jitter))
        .sort("_key")
        .drop("_key")
    )


@pytest.mark.parametrize(
    ("seed", "watermarks", "together"),
    [(3, True, False), (42, True, False), (7, False, False), (5, True, True), (9, True, True)],
    ids=["seed3", "seed42", "flush-only", "together-seed5", "together-seed9"],
)
def test_windows_match_one_group_by_over_the_whole_frame(seed, watermarks, together):
    """Without watermarks, partials pile up (and get compacted) until the flush.

    ``together``: batches arrive in groups (as the flow's activations bring one per
    source partition) and each group's watermarks close windows once, by ``advance_all``.
    """
    rng = random.Random(seed)
    frame = random_readings(rng, 3_000, span_minutes=95)
    lateness = timedelta(seconds=90)
    arriving = arrival_order(rng, frame, int(lateness.total_seconds()) * S)

    partitions = ["p0", "p1"]
    store = WindowStore(Catalog(indicators=COLUMN_DEFS), partitions=partitions)
    clocks = {p: PartitionClock(lateness) for p in partitions}
    emitted: list[pl.DataFrame] = []
    pending: list[tuple] = []
    groups: list[int] = []
    pos = 0
    while pos < arriving.height:
        size = rng.randint(1, 120)
        batch = arriving.slice(pos, size)
        pos += size
        part = rng.choice(partitions)
        clock = clocks[part]
        ts = batch["ts"].dt.epoch("us")
        assert not clock.late_mask(ts).any()  # the arrival order never makes late events
        store.add({d.id: partial(d, batch) for d in COLUMN_DEFS})
        clock.observe(ts.max())
        if not watermarks:
            continue
        if together:
            pending.append((part, clock.watermark_us, clock.max_event_us, False))
            if rng.random() < 0.6 and pos < arriving.height:
                continue  # more batches join this group
            out = store.advance_all(pending)
            groups.append(len(pending))
            pending.clear()
        else:
            out = store.advance(part, clock.watermark_us, clock.max_event_us)
        assert out.schema == VALUES_SCHEMA
        if out.height:
            # Closed only once the lowest watermark of all partitions reached the end.
            assert store.watermark_us is not None
            assert out["window_end"].dt.epoch("us").max() <= store.watermark_us
            emitted.append(out)
    assert bool(emitted) is watermarks, "the watermarks should have closed windows before the end"
    assert (max(groups, default=1) > 1) is together
    rest = store.flush()
    got = pl.concat([*emitted, rest])

    assert got.select(KEY).is_duplicated().sum() == 0, "a window was emitted twice"
    want = pl.concat([reference(d, frame) for d in COLUMN_DEFS])
    assert want.height > 500
    joined = want.join(got, on=KEY, how="full", suffix="_got", coalesce=True)
    missing = joined.filter(pl.col("value_got").is_null() | pl.col("value").is_null())
    assert missing.height == 0, missing.head(5)
    assert (joined["samples"] == joined["samples_got"]).all()
    assert (joined["window_end"] == joined["window_end_got"]).all()
    diff = joined.filter(
        (pl.col("value") - pl.col("value_got")).abs() > 1e-9 * (1 + pl.col("value").abs())
    )
    assert diff.height == 0, diff.select(*KEY, "value", "value_got").head(5)
    # Sector, entity type and unit come from the definition.
    defs = {d.id: d for d in COLUMN_DEFS}
    for (indicator_id,), rows in got.partition_by("indicator_id", as_dict=True).items():
        assert set(rows["unit"]) == {defs[indicator_id].unit}
        assert set(rows["entity_type"]) == {defs[indicator_id].entity.type}


def temperature(*rows) -> pl.DataFrame:
    """Readings (seconds after T0, site, value)."""
    return pl.DataFrame(
        {
            "ts": [T0 + timedelta(seconds=s) for s, _, _ in rows],
            "metric": ["temperature"] * len(rows),
            "site_id": [site for _, site, _ in rows],
            "value": [float(v) for _, _, v in rows],
        }
    )


def test_window_closes_only_when_the_watermark_reaches_its_end():
    d = define("t.max", "max", "1m")
    store = WindowStore(Catalog(indicators=[d]), partitions=["p0"])
    store.add({d.id: partial(d, temperature((5, "a", 20), (59, "a", 30), (61, "a", 99)))})
    t = us(T0)
    assert store.advance("p0", t + MINUTE - 1).height == 0
    out = store.advance("p0", t + MINUTE)
    assert out.select("entity_id", "value", "samples").rows() == [("a", 30.0, 2)]
    assert out["window_end"].to_list() == [T0 + timedelta(minutes=1)]
    # Emitted once: the same watermark again closes nothing.
    assert store.advance("p0", t + MINUTE).height == 0
    assert store.advance("p0", t + 2 * MINUTE - 1).height == 0
    assert store.advance("p0", t + 2 * MINUTE)["value"].to_list() == [99.0]
    assert store.flush().height == 0


def test_lowest_watermark_of_all_partitions_closes():
    d = define("t.max", "max", "1m")
    store = WindowStore(Catalog(indicators=[d]), partitions=["p0", "p1"])
    store.add({d.id: partial(d, temperature((5, "a", 20)))})
    t = us(T0)
    assert store.advance("p0", t + 10 * MINUTE).height == 0  # p1 has said nothing yet
    assert store.watermark_us is None
    assert store.advance("p1", t + 30 * S).height == 0
    assert store.watermark_us == t + 30 * S
    assert store.advance("p1", t + MINUTE)["value"].to_list() == [20.0]


def test_partition_watermark_never_goes_backwards():
    d = define("t.max", "max", "1m")
    store = WindowStore(Catalog(indicators=[d]), partitions=["p0"])
    t = us(T0)
    store.advance("p0", t + 5 * MINUTE)
    store.advance("p0", t + MINUTE)
    assert store.watermark_us == t + 5 * MINUTE
    assert store.advance("p0", None).height == 0
    assert store.watermark_us == t + 5 * MINUTE


def test_flush_closes_trailing_column_windows():
    d = define("t.mean", "mean", "5m")
    store = WindowStore(Catalog(indicators=[d]), partitions=["p0"])
    store.add({d.id: partial(d, temperature((10, "a", 10), (70, "a", 20), (400, "a", 7)))})
    out = store.flush().sort("window_start")
    assert out.select("value", "samples").rows() == [(15.0, 2), (7.0, 1)]
    assert store.flush().height == 0


# -- population indicators --------------------------------------------------------------

CATALOG = load_catalog()


def beats(*rows) -> pl.DataFrame:
    """Heartbeats (minutes after T0, device, grid) of cameras."""
    return heartbeats(T0, rows)


def test_online_rate_counts_devices_heard_within_their_allowance_at_the_window_end():
    # Cameras: 1-minute heartbeats, offline after 3 minutes of silence (the catalogue's).
    d = CATALOG["device.online_rate"]
    store = WindowStore(Catalog(indicators=[d]), partitions=["p0"])
    clock = PartitionClock(timedelta(0))
    last = {"d1": 9, "d2": 4, "d3": 12, "x": 24}  # G1: d1, d2, d3; G2: x
    grid = {"d1": "G1", "d2": "G1", "d3": "G1", "x": "G2"}
    stream = sorted((m, dev) for dev, stop in last.items() for m in range(stop + 1))
    out = []
    for start in range(0, 25, 5):
        batch = beats(*[(m, dev, grid[dev]) for m, dev in stream if start <= m < start + 5])
        store.add({d.id: partial(d, batch)})
        clock.observe(batch["ts"].dt.epoch("us").max())
        out.append(store.advance("p0", clock.watermark_us, clock.max_event_us))
    out.append(store.flush())
    values = pl.concat(out).sort("entity_id", "window_start")
    g1 = values.filter(pl.col("entity_id") == "camera/G1")
    assert g1.select("value", "samples").rows() == [
        (1.0, 3),  # at 5: all heard within 3 minutes
        (pytest.approx(2 / 3), 3),  # at 10: d2 (last 4) is offline since 7
        (pytest.approx(1 / 3), 3),  # at 15: d3 (last 12) is still online, exactly at 3 minutes
        (0.0, 3),  # judged from the 3 known devices, not skipped as "no samples"
    ]
    assert g1["window_start"].to_list() == [T0 + timedelta(minutes=m) for m in (0, 5, 10, 15)]
    g2 = values.filter(pl.col("entity_id") == "camera/G2")
    assert g2["value"].to_list() == [1.0] * 4
    # The window [20, 25) is incomplete at the end of input: nobody reads 0 % for it.
    assert values["window_start"].max() == T0 + timedelta(minutes=15)


def test_online_rate_forgets_devices_silent_for_forget_after():
    devices = Devices(forget_after="10m")
    d = CATALOG["device.online_rate"]
    store = WindowStore(Catalog(indicators=[d], devices=devices), partitions=["p0"])
    store.add({d.id: partial(d, beats((0, "gone", "G1"), (1, "stays", "G1")))})
    for m in range(2, 21):
        store.add({d.id: partial(d, beats((m, "stays", "G1")))})
    out = store.advance("p0", us(T0 + timedelta(minutes=20)))
    rows = out.sort("window_start").select("value", "samples").rows()
    # "gone" is offline from 3 and forgotten after 10: the rate is over 1 device from then on.
    assert rows == [(0.5, 2), (0.5, 2), (1.0, 1), (1.0, 1)]


def test_flush_does_not_emit_an_incomplete_population_window():
    d = CATALOG["device.online_rate"]
    store = WindowStore(Catalog(indicators=[d]), partitions=["p0"])
    batch = beats((3, "d1", "G1"), (4, "d2", "G1"), (6, "d1", "G1"))
    store.add({d.id: partial(d, batch)})
    assert store.advance("p0", None, us(T0 + timedelta(minutes=6))).height == 0
    out = store.flush()
    assert out.select("window_start", "value").rows() == [(T0, 1.0)]


def orders(*rows) -> pl.DataFrame:
    """Status changes (minutes after T0, order, status, class) in district D1."""
    return workorders(T0, rows)


def run_overdue(batches, until_minutes: int) -> dict[int, float]:
    """Overdue values per window start (minutes after T0)."""
    d = CATALOG["workorder.overdue"]
    assert d.window_us == 15 * MINUTE
    store = WindowStore(Catalog(indicators=[d]), partitions=["p0"])
    out = []
    for batch in batches:
        store.add({d.id: partial(d, batch)})
    out.append(store.advance("p0", us(T0 + timedelta(minutes=until_minutes))))
    frame = pl.concat(out).filter(pl.col("entity_id") == "D1")
    starts = [int((t - T0).total_seconds() // 60) for t in frame["window_start"]]
    return dict(zip(starts, frame["value"].to_list(), strict=True))


def test_small_order_never_dispatched_is_overdue_from_its_deadline_on():
    # Reported at 15m with a 30m deadline: due at 45m, the end of window [30, 45), where a
    # dispatch would still be on time; overdue at every window end after it.
    reported = orders((15, "WO-1", "reported", "small"), (16, "WO-2", "dispatched", "big"))
    assert run_overdue([reported], until_minutes=90) == {
        15: 0.0,
        30: 0.0,
        45: 1.0,
        60: 1.0,
        75: 1.0,
    }


def test_small_order_is_counted_until_dispatched():
    batches = [
        orders((2, "WO-1", "reported", "small")),  # due at 32m: first end >= 32m is 45m
        orders((5, "WO-2", "reported", "big")),  # due in a day: never overdue here
        orders((50, "WO-1", "dispatched", "small")),
    ]
    assert run_overdue(batches, until_minutes=75) == {
        0: 0.0,
        15: 0.0,
        30: 1.0,
        45: 0.0,
        60: 0.0,
    }


def test_order_dispatched_in_time_is_never_overdue():
    batches = [orders((2, "WO-1", "reported", "small"), (20, "WO-1", "dispatched", "small"))]
    assert set(run_overdue(batches, until_minutes=60).values()) == {0.0}


# -- the partition clock -----------------------------------------------------------------


def test_partition_clock_never_goes_backwards():
    clock = PartitionClock(timedelta(seconds=30))
    assert clock.watermark_us is None
    rng = random.Random(5)
    highest = None
    for _ in range(200):
        t = rng.randrange(0, 10_000) * S
        clock.observe(t if rng.random() > 0.1 else None)
        if highest is not None:
            assert clock.watermark_us >= highest
        highest = clock.watermark_us
    assert clock.max_event_us - clock.watermark_us == 30 * S


def test_partition_clock_late_mask_is_strict():
    clock = PartitionClock(timedelta(seconds=30))
    clock.observe(100 * S)
    clock.observe(40 * S)
    assert clock.watermark_us == 70 * S
    ts = pl.Series([69 * S, 70 * S - 1, 70 * S, 71 * S, 200 * S])
    assert clock.late_mask(ts).to_list() == [True, True, False, False, False]
