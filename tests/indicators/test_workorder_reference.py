"""Work-order indicators of the catalogue: the window store over many small batches
gives what a plain Polars computation over the whole stream gives.

The stream is random order lives (late dispatches, orders never dispatched,
closures, returns, re-dispatches) shuffled within the allowed lateness and cut
into batches of random sizes over two partitions.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from indicators.aggregate import partial
from indicators.definitions import Catalog, IndicatorDef, WorkOrders, load_catalog
from indicators.watermark import PartitionClock
from indicators.windows import WindowStore

T0 = datetime(2026, 5, 12, 6, 0, tzinfo=UTC)
MIN = 60_000_000  # one minute in microseconds
CATALOG = load_catalog()
KEY = ["indicator_id", "entity_id", "window_start"]
#: minutes from report to dispatch per class (some past their deadline)
DISPATCH = {"small": (1, 60), "big": (20, 600), "hard": (60, 900), "thorny": (60, 900)}

COLUMNS = ["workorder.closure_rate", "workorder.return_rate", "workorder.reported_by_grid"]
MEASURED = [
    "workorder.dispatch_delay_p50.small",
    "workorder.dispatch_delay_p90.small",
    "workorder.dispatch_delay_p90.big",
    "workorder.arrival_time",
    "workorder.arrival_time.small",
    "workorder.on_time_rate",
]
COUNTS = ["workorder.open", "workorder.open_by_department", "workorder.overdue_by_department"]


def random_orders(rng: random.Random, n: int, span_minutes: int) -> pl.DataFrame:
    rows = []

    def change(t: float, order: dict, status: str) -> None:
        rows.append({"ts": T0 + timedelta(minutes=t), **order, "status": status})

    for k in range(n):
        order = {
            "order_id": f"WO-{k:05d}",
            "event_class": rng.choices(list(DISPATCH), weights=(70, 15, 10, 5))[0],
            "department": rng.choice(["housing", "traffic", "water"]),
            "grid_id": rng.choice(["G1", "G2", "G3"]),
            "district_id": rng.choice(["D1", "D2"]),
        }
        t = rng.uniform(0, span_minutes)
        change(t, order, "reported")
        if rng.random() < 0.1:
            continue  # never dispatched
        if rng.random() < 0.05:
            change(t + rng.uniform(1, 30), order, "closed")  # withdrawn before dispatch
            continue
        t += rng.uniform(*DISPATCH[order["event_class"]])
        change(t, order, "dispatched")
        if rng.random() < 0.1:
            t += rng.uniform(1, 30)
            change(t, order, "dispatched")  # re-assigned before anyone arrived
        for again in range(2):
            if rng.random() < 0.1:
                break  # no one arrives
            t += rng.uniform(1, 90)
            change(t, order, "arrived")
            if rng.random() < 0.15:
                break  # still open
            t += rng.uniform(1, 90)
            change(t, order, "closed")
            if again or rng.random() < 0.8:
                break
            t += rng.uniform(1, 60)
            change(t, order, "returned")
            if rng.random() < 0.5:
                t += rng.uniform(1, 60)
                change(t, order, "closed")  # closed again, no one sent
                break
            t += rng.uniform(1, 30)
            change(t, order, "dispatched")  # sent again
    return pl.DataFrame(rows).filter(pl.col("ts") < T0 + timedelta(minutes=span_minutes))


def windowed(defs: list[IndicatorDef], frame: pl.DataFrame, rng: random.Random) -> pl.DataFrame:
    """Everything the store emits, batch by batch over two partitions, then at the flush."""
    lateness = 90_000_000
    jitter = pl.Series([rng.randrange(lateness // 2) for _ in range(frame.height)])
    arriving = (
        frame.with_columns(_key=pl.col("ts").dt.epoch("us") + jitter).sort("_key").drop("_key")
    )
    partitions = ["p0", "p1"]
    store = WindowStore(Catalog(indicators=defs), partitions=partitions)
    clocks = {p: PartitionClock(timedelta(microseconds=lateness)) for p in partitions}
    out = []
    pos = 0
    while pos < arriving.height:
        size = rng.randint(1, 25)
        batch = arriving.slice(pos, size)
        pos += size
        part = rng.choice(partitions)
        ts = batch["ts"].dt.epoch("us")
        assert not clocks[part].late_mask(ts).any()
        store.add({d.id: partial(d, batch) for d in defs})
        clocks[part].observe(ts.max())
        out.append(store.advance(part, clocks[part].watermark_us, clocks[part].max_event_us))
    out.append(store.flush())
    return pl.concat(out)


def _windowed_rows(d: IndicatorDef, frame: pl.DataFrame) -> pl.DataFrame:
    t = pl.col("ts").dt.epoch("us")
    entity = pl.concat_str([pl.col(c) for c in d.entity.by], separator="/")
    return frame.filter(*[pl.col(k) == v for k, v in d.where.items()]).with_columns(
        entity_id=entity, ws=t - (t + d.window_offset_us) % d.window_us, t=t
    )


def ratio_or_count(d: IndicatorDef, frame: pl.DataFrame) -> pl.DataFrame:
    rows = _windowed_rows(d, frame)
    if d.aggregation == "count":
        return rows.group_by("entity_id", "ws").agg(
            value=pl.len().cast(pl.Float64), samples=pl.len().cast(pl.Int64)
        )
    num = pl.all_horizontal([pl.col(k) == v for k, v in d.numerator.items()])
    den = pl.all_horizontal([pl.col(k) == v for k, v in d.denominator.items()])
    return (
        rows.group_by("entity_id", "ws")
        .agg(n=num.sum(), samples=den.sum().cast(pl.Int64))
        .filter(pl.col("samples") > 0)
        .select("entity_id", "ws", value=pl.col("n") / pl.col("samples"), samples="samples")
    )


def measured(d: IndicatorDef, frame: pl.DataFrame) -> pl.DataFrame:
    """Delays and on-time shares by joining each order's changes on its id."""
    rows = _windowed_rows(d, frame)
    reported = rows.filter(pl.col("status") == "reported").select("order_id", t_rep="t")
    dispatched = rows.filter(pl.col("status") == "dispatched").sort("t")
    if d.aggregation == "arrival_time_mean":
        arrived = rows.filter(pl.col("status") == "arrived").sort("t")
        pairs = arrived.join_asof(
            dispatched.select("order_id", t_dis="t"),
            left_on="t",
            right_on="t_dis",
            by="order_id",
            strategy="backward",
            check_sortedness=False,  # sorted by time, which is enough within each order
        )
        x = (pl.col("t") - pl.col("t_dis")) / MIN
    else:
        pairs = dispatched.group_by("order_id").first().join(reported, on="order_id")
        if d.aggregation == "on_time_rate":
            due = pl.col("event_class").replace_strict(WorkOrders().deadline_us)
            x = (pl.col("t") <= pl.col("t_rep") + due).cast(pl.Float64)
        else:
            x = (pl.col("t") - pl.col("t_rep")) / MIN
    value = {
        "dispatch_delay_p50": pl.col("x").quantile(0.5, "linear"),
        "dispatch_delay_p90": pl.col("x").quantile(0.9, "linear"),
        "arrival_time_mean": pl.col("x").mean(),
        "on_time_rate": pl.col("x").mean(),
    }[d.aggregation]
    return (
        pairs.with_columns(x=x)
        .group_by("entity_id", "ws")
        .agg(value=value, samples=pl.len().cast(pl.Int64))
    )


def counted(d: IndicatorDef, frame: pl.DataFrame, last_end: int) -> pl.DataFrame:
    """Open (or overdue) orders at every window end, for every entity seen so far."""
    rows = _windowed_rows(d, frame)
    first = rows["ws"].min()
    ends = pl.DataFrame({"end": list(range(first + d.window_us, last_end + 1, d.window_us))})
    lives = rows.group_by("order_id").agg(
        pl.col("entity_id").first(),
        t_rep=pl.col("t").filter(pl.col("status") == "reported").min(),
        t_dis=pl.col("t").filter(pl.col("status") == "dispatched").min(),
        cls=pl.col("event_class").first(),
    )
    # An order is open at an end when its last change before it is not a closure.
    last = (
        rows.join(ends, how="cross")
        .filter(pl.col("t") < pl.col("end"))
        .sort("t")
        .group_by("order_id", "end")
        .agg(last=pl.col("status").last())
        .join(lives, on="order_id")
    )
    held = last.filter(pl.col("last") != "closed")
    if d.aggregation == "overdue":
        due = pl.col("cls").replace_strict(WorkOrders().deadline_us)
        held = held.filter(
            (pl.col("t_rep") + due < pl.col("end"))  # dispatched at the deadline is on time
            & (pl.col("t_dis").is_null() | (pl.col("t_dis") >= pl.col("end")))
        )
    known = rows.group_by("entity_id").agg(since=pl.col("ws").min()).join(ends, how="cross")
    known = known.filter(pl.col("end") > pl.col("since"))
    counts = held.group_by("entity_id", "end").agg(value=pl.len().cast(pl.Float64))
    return (
        known.join(counts, on=["entity_id", "end"], how="left")
        .with_columns(pl.col("value").fill_null(0.0), ws=pl.col("end") - d.window_us)
        .select("entity_id", "ws", "value")
    )


def finish(d: IndicatorDef, ref: pl.DataFrame) -> pl.DataFrame:
    return ref.select(
        pl.lit(d.id).alias("indicator_id"),
        "entity_id",
        pl.from_epoch("ws", "us").dt.replace_time_zone("UTC").alias("window_start"),
        pl.col("value").cast(pl.Float64),
        *(["samples"] if "samples" in ref.columns else []),
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_workorder_indicators_match_a_computation_over_the_whole_stream(seed):
    rng = random.Random(seed)
    frame = random_orders(rng, 600, span_minutes=8 * 60)
    defs = [CATALOG[i] for i in COLUMNS + MEASURED + COUNTS]
    got = windowed(defs, frame, rng)
    assert got.select(KEY).is_duplicated().sum() == 0, "a window was emitted twice"

    # Lifecycle windows close in order up to the last complete one (the flush passes
    # the last event time + 1 s); column windows all close at the flush.
    complete = frame["ts"].dt.epoch("us").max() + 1_000_000
    refs = []
    for d in defs:
        if d.id in COLUMNS:
            ref = ratio_or_count(d, frame)
        elif d.id in MEASURED:
            ref = measured(d, frame).filter(pl.col("ws") + d.window_us <= complete)
        else:
            last_end = complete - (complete + d.window_offset_us) % d.window_us
            ref = counted(d, frame, last_end)
        refs.append(finish(d, ref))
        assert refs[-1].height >= 2, d.id  # every indicator has something to compare

    for ref in refs:
        indicator_id = ref["indicator_id"][0]
        mine = got.filter(pl.col("indicator_id") == indicator_id)
        joined = ref.join(mine, on=KEY, how="full", coalesce=True, suffix="_got")
        missing = joined.filter(pl.col("value").is_null() | pl.col("value_got").is_null())
        assert missing.height == 0, (indicator_id, missing.head(5))
        off = joined.filter((pl.col("value") - pl.col("value_got")).abs() > 1e-9)
        assert off.height == 0, (indicator_id, off.head(5))
        if "samples" in ref.columns:
            assert (joined["samples"] == joined["samples_got"]).all(), indicator_id


def test_the_random_stream_has_every_kind_of_life():
    frame = random_orders(random.Random(1), 600, span_minutes=8 * 60)
    per_order = frame.group_by("order_id").agg(pl.col("status"))
    statuses = per_order["status"].to_list()
    assert any(s == ["reported"] for s in statuses)  # never dispatched
    assert any("returned" in s and s.count("dispatched") == 2 for s in statuses)
    assert any(s[1:3] == ["dispatched", "dispatched"] for s in statuses)
    assert any("returned" in s and s.count("dispatched") == 1 for s in statuses)
    assert any(s[:2] == ["reported", "closed"] for s in statuses)
    assert frame.filter(pl.col("status") == "returned").height >= 10
