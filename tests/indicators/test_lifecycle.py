"""Order-lifecycle measures on small hand-built work-order streams with known answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from indicators.aggregate import partial
from indicators.definitions import LIFECYCLE, Aggregation, Catalog, IndicatorDef, WorkOrders
from indicators.lifecycle import OrderLifecycle
from indicators.windows import WindowStore
from tests.indicators.streams import workorders

T0 = datetime(2026, 5, 12, 10, 0, tzinfo=UTC)  # "10:00" in the examples below


def define(aggregation: str, window: str = "15m", by=("district_id",)) -> IndicatorDef:
    spec = {
        "id": f"t.{aggregation}",
        "name_zh": "测试",
        "name_en": "Test",
        "sector": "workorder",
        "unit": "u",
        "family": "workorder",
        "entity": {"type": "t", "by": list(by)},
        "window": window,
        "aggregation": aggregation,
        "field": "order_id",
        "description": "test indicator",
    }
    return IndicatorDef.model_validate(spec)


def changes(*rows) -> pl.DataFrame:
    """Status changes (minutes after 10:00, order, status, class), all in district D1."""
    return workorders(T0, rows)


def run(d: IndicatorDef, batches, until_minutes: int) -> dict[int, tuple[float, int]]:
    """{window start in minutes after 10:00: (value, samples)} of entity D1."""
    store = WindowStore(Catalog(indicators=[d]), partitions=["p0"])
    for batch in batches:
        store.add({d.id: partial(d, batch)})
    out = store.advance("p0", int((T0 + timedelta(minutes=until_minutes)).timestamp()) * 10**6)
    out = out.filter(pl.col("entity_id") == "D1")
    return {
        int((ws - T0).total_seconds() // 60): (v, n)
        for ws, v, n in out.select("window_start", "value", "samples").iter_rows()
    }


def values(d: IndicatorDef, batches, until_minutes: int) -> dict[int, float]:
    return {m: v for m, (v, _) in run(d, batches, until_minutes).items()}


# An order reported 10:00, dispatched 10:40, class small (30 min allowed).
LATE = [(0, "A", "reported", "small"), (40, "A", "dispatched", "small")]


def test_late_small_order_delay_is_forty_minutes_in_the_window_of_its_dispatch():
    d = define("dispatch_delay_p50", window="15m")
    assert run(d, [changes(*LATE)], until_minutes=60) == {30: (40.0, 1)}


def test_late_small_order_is_not_on_time():
    assert run(define("on_time_rate"), [changes(*LATE)], until_minutes=60) == {30: (0.0, 1)}


def test_late_small_order_is_overdue_at_window_ends_after_its_deadline():
    # Due 10:30, dispatched 10:50: overdue at the end of [10:30, 10:45) only. At 10:30
    # itself it is not yet: a dispatch at 10:30 would still be on time.
    later = [(0, "A", "reported", "small"), (50, "A", "dispatched", "small")]
    got = values(define("overdue"), [changes(*later)], until_minutes=75)
    assert got == {0: 0.0, 15: 0.0, 30: 1.0, 45: 0.0, 60: 0.0}


def test_dispatch_at_the_deadline_is_on_time():
    at = changes((0, "A", "reported", "small"), (30, "A", "dispatched", "small"))
    assert values(define("on_time_rate"), [at], 45) == {30: 1.0}
    # So the order is never overdue: at the end of [10:15, 10:30) its deadline has not
    # passed yet (a dispatch at 10:30 is still on time), and by 10:45 it is dispatched.
    assert values(define("overdue"), [at], 45) == {0: 0.0, 15: 0.0, 30: 0.0}
    before = changes((0, "A", "reported", "small"), (29, "A", "dispatched", "small"))
    assert values(define("on_time_rate"), [before], 45) == {15: 1.0}
    assert set(values(define("overdue"), [before], 45).values()) == {0.0}


def test_p50_and_p90_over_the_orders_dispatched_in_the_window():
    batch = changes(
        *[(m, f"O{m}", "reported", "small") for m in (0, 1, 2, 3, 4)],
        *[
            (m + delay, f"O{m}", "dispatched", "small")
            for m, delay in zip((0, 1, 2, 3, 4), (5, 10, 20, 30, 50), strict=True)
        ],
        (6, "O0", "dispatched", "small"),  # re-assigned: only the first dispatch counts
        (70, "late", "dispatched", "small"),  # report never seen: no delay to measure
    )
    p50 = run(define("dispatch_delay_p50", window="1h"), [batch], 120)
    p90 = run(define("dispatch_delay_p90", window="1h"), [batch], 120)
    assert p50 == {0: (20.0, 5)}
    assert p90 == {0: (pytest.approx(42.0), 5)}  # linear: 30 + 0.6 * (50 - 30)


def test_arrival_time_from_the_latest_dispatch():
    batch = changes(
        (0, "A", "reported", "big"),
        (10, "A", "dispatched", "big"),
        (25, "A", "arrived", "big"),  # 15 minutes
        (2, "B", "reported", "small"),
        (3, "B", "dispatched", "small"),
        (8, "B", "arrived", "small"),  # 5 minutes
        (9, "B", "arrived", "small"),  # a second arrival without a dispatch: not measured
    )
    assert run(define("arrival_time_mean", window="1h"), [batch], 60) == {0: (10.0, 2)}


def test_delay_measures_emit_nothing_where_nothing_was_measured():
    batch = changes((0, "A", "reported", "small"), (50, "A", "dispatched", "small"))
    assert set(run(define("dispatch_delay_p90"), [batch], 90)) == {45}
    assert set(run(define("on_time_rate"), [batch], 90)) == {45}
    assert run(define("arrival_time_mean"), [batch], 90) == {}
    # ... while the counts report the known entity at every window end.
    assert set(values(define("open_orders"), [batch], 90)) == {0, 15, 30, 45, 60, 75}


# A closed at 10:20, B at 10:35: open orders 2, 1, 0 at 10:15, 10:30, 10:45.
TWO_CLOSED = [
    (0, "A", "reported", "small"),
    (1, "B", "reported", "big"),
    (5, "A", "dispatched", "small"),
    (20, "A", "closed", "small"),
    (35, "B", "closed", "big"),
]


def test_closed_orders_are_evicted_and_counted_open_until_then():
    d = define("open_orders")
    state = OrderLifecycle(d, WorkOrders())
    state.add(partial(d, changes(*TWO_CLOSED)))
    end_15 = int((T0 + timedelta(minutes=15)).timestamp()) * 10**6
    assert state.close(end_15)["value"].to_list() == [2.0]
    assert state.open_orders == 2
    assert state.close(end_15 + 15 * 60 * 10**6)["value"].to_list() == [1.0]
    assert state.open_orders == 1
    assert state.close(end_15 + 30 * 60 * 10**6)["value"].to_list() == [0.0]
    assert state.open_orders == 0


def test_a_returned_order_reopens_but_is_never_overdue_and_adds_no_dispatch_delay():
    batches = [
        changes((0, "A", "reported", "small"), (5, "A", "dispatched", "small")),
        changes((10, "A", "arrived", "small"), (20, "A", "closed", "small")),
        changes((50, "A", "returned", "small")),  # long after its deadline
        changes((55, "A", "dispatched", "small"), (59, "A", "arrived", "small")),
        changes((80, "A", "closed", "small")),
    ]
    assert values(define("open_orders"), batches, 90) == {
        0: 1.0,
        15: 0.0,
        30: 0.0,
        45: 1.0,
        60: 1.0,
        75: 0.0,
    }
    assert set(values(define("overdue"), batches, 90).values()) == {0.0}
    assert values(define("dispatch_delay_p50", window="1h"), batches, 120) == {0: 5.0}
    # Arrivals: 5 minutes after the dispatch, then 4 after the re-dispatch.
    assert run(define("arrival_time_mean", window="1h"), batches, 120) == {0: (4.5, 2)}


def test_counts_samples_are_the_orders_open_at_some_moment_of_the_window():
    batch = changes(
        (0, "A", "reported", "small"),
        (1, "B", "reported", "small"),
        (2, "B", "closed", "small"),  # open for a minute of [10:00, 10:15)
    )
    # [10:00, 10:15): A and B; afterwards A alone, with no change at all.
    assert run(define("open_orders"), [batch], 30) == {0: (1.0, 2), 15: (1.0, 1)}


def test_an_undispatched_order_stays_in_state_until_closed_or_expired():
    d = define("overdue")
    state = OrderLifecycle(d, WorkOrders())
    state.add(partial(d, changes((0, "A", "reported", "small"))))
    state.close(int((T0 + timedelta(days=3)).timestamp()) * 10**6)
    assert state.open_orders == 1
    state.add(partial(d, changes((3 * 24 * 60 + 1, "A", "closed", "small"))))
    state.close(int((T0 + timedelta(days=3, minutes=15)).timestamp()) * 10**6)
    assert state.open_orders == 0


def test_an_order_with_no_change_for_expire_after_is_let_go():
    d = define("open_orders")
    state = OrderLifecycle(d, WorkOrders(expire_after="12d"))
    state.add(partial(d, changes((0, "A", "reported", "small"), (60, "B", "reported", "big"))))
    # At 10:00 + 12 days, A has had no change for exactly 12 days: still held.
    state.close(int((T0 + timedelta(days=12)).timestamp()) * 10**6)
    assert state.open_orders == 2
    state.close(int((T0 + timedelta(days=12, minutes=15)).timestamp()) * 10**6)
    assert state.open_orders == 1  # A is gone; B's last change was at 11:00


def test_changes_at_the_same_instant_apply_in_lifecycle_order():
    # The dispatch row comes first in the batch, but the report is applied first.
    batch = changes((7, "A", "dispatched", "small"), (7, "A", "reported", "small"))
    assert run(define("dispatch_delay_p50"), [batch], 15) == {0: (0.0, 1)}


def test_every_lifecycle_measure_is_an_aggregation():
    from typing import get_args

    assert set(LIFECYCLE) <= set(get_args(Aggregation))


def test_a_snapshot_from_before_changes_were_kept_as_rows_still_resumes():
    """The last release pickled a lifecycle's pending changes as frames (``_parts``)."""
    import pickle

    d = define("open_orders")
    batch = partial(d, changes(*TWO_CLOSED))
    end_15 = int((T0 + timedelta(minutes=15)).timestamp()) * 10**6
    live = OrderLifecycle(d, WorkOrders())
    live.add(batch)
    want = [live.close(end_15 + k * 15 * 60 * 10**6)["value"].to_list() for k in range(3)]

    old = OrderLifecycle(d, WorkOrders())
    old.add(batch)
    state = dict(old.__dict__)
    state["_parts"] = [batch]  # the old layout: frames, no rows
    del state["_changes"]
    restored = OrderLifecycle.__new__(OrderLifecycle)
    restored.__setstate__(pickle.loads(pickle.dumps(state)))
    got = [restored.close(end_15 + k * 15 * 60 * 10**6)["value"].to_list() for k in range(3)]
    assert got == want == [[2.0], [1.0], [0.0]]
