"""1510 deadlines by timer: overdue exactly at the deadline, and what became of the order."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

import polars as pl

from indicators.aggregate import partial
from indicators.deadlines import DeadlineBook, changes
from indicators.definitions import Catalog, WorkOrders, load_catalog
from indicators.windows import WindowStore
from tests.indicators.streams import workorders

T0 = datetime(2026, 5, 12, 10, tzinfo=UTC)  # "10:00"
WORKORDERS = WorkOrders()  # small 30m, big 1d, hard 5d, thorny 10d


def us(minutes: float) -> int:
    return int((T0 + timedelta(minutes=minutes)).timestamp() * 1_000_000)


def orders(*rows) -> pl.DataFrame:
    """Work-order status changes (minutes after 10:00, order, status, class)."""
    return workorders(T0, rows, department="roads", grid_id="G1")


def brief(records: pl.DataFrame) -> list[tuple]:
    """(order, state, minutes after 10:00, minutes past the deadline) of each record."""
    return [
        (o, s, (t - T0).total_seconds() / 60, None if late is None else late / 60)
        for o, s, t, late in records.select(
            "order_id", "state", "event_ts", "overdue_s"
        ).iter_rows()
    ]


def test_an_order_never_dispatched_is_overdue_exactly_at_its_deadline():
    book = DeadlineBook(WORKORDERS)
    assert book.observe(changes(orders((0, "A", "reported", "small")))).height == 0
    assert book.next_due_us == us(30)
    assert book.advance(us(30)).height == 0  # a dispatch at 10:30 is still on time
    records = book.advance(us(30) + 1)  # nothing else arrived for the order
    assert brief(records) == [("A", "overdue", 30.0, 0.0)]
    row = records.row(0, named=True)
    assert row["reported_ts"] == T0
    assert row["deadline_ts"] == T0 + timedelta(minutes=30)
    assert (row["event_class"], row["department"], row["grid_id"]) == ("small", "roads", "G1")
    assert book.advance(us(600)).height == 0  # overdue once
    assert book.next_due_us is None


def test_a_dispatch_at_the_deadline_is_on_time():
    book = DeadlineBook(WORKORDERS)
    book.observe(changes(orders((0, "A", "reported", "small"), (30, "A", "dispatched", "small"))))
    assert book.advance(us(90)).height == 0


def test_each_class_has_its_deadline():
    book = DeadlineBook(WORKORDERS)
    book.observe(changes(orders((0, "S", "reported", "small"), (0, "B", "reported", "big"))))
    assert [r[:2] for r in brief(book.advance(us(24 * 60)))] == [("S", "overdue")]
    assert brief(book.advance(us(24 * 60) + 1)) == [("B", "overdue", 24 * 60.0, 0.0)]


def test_a_late_dispatch_after_the_overdue_record_is_recorded_once():
    book = DeadlineBook(WORKORDERS)
    book.observe(changes(orders((0, "A", "reported", "small"))))
    book.advance(us(31))
    late = book.observe(changes(orders((45, "A", "dispatched", "small"))))
    assert brief(late) == [("A", "dispatched_late", 45.0, 15.0)]
    again = orders((50, "A", "dispatched", "small"), (60, "A", "arrived", "small"))
    assert book.observe(changes(again)).height == 0  # a re-dispatch is not a second record
    assert book.advance(us(120)).height == 0


def test_a_deadline_the_clock_never_reached_is_found_by_the_late_dispatch():
    # Report and a late dispatch in one batch: both records, in order, with no timer tick.
    book = DeadlineBook(WORKORDERS)
    records = book.observe(
        changes(orders((40, "A", "dispatched", "small"), (0, "A", "reported", "small")))
    )
    assert brief(records) == [("A", "overdue", 30.0, 0.0), ("A", "dispatched_late", 40.0, 10.0)]
    assert book.advance(us(60)).height == 0


def test_an_earlier_dispatch_arriving_before_the_clock_passes_the_deadline_prevents_it():
    # Out of order but within the allowed lateness: the clock has not passed 10:30 yet.
    book = DeadlineBook(WORKORDERS)
    book.observe(changes(orders((0, "A", "reported", "small"))))
    book.advance(us(29))
    book.observe(changes(orders((28, "A", "dispatched", "small"))))
    assert book.advance(us(90)).height == 0


def test_an_overdue_order_closed_without_dispatch_is_recorded_and_let_go():
    book = DeadlineBook(WORKORDERS)
    book.observe(changes(orders((0, "A", "reported", "small"))))
    book.advance(us(40))
    closed = book.observe(changes(orders((50, "A", "closed", "small"))))
    assert brief(closed) == [("A", "closed_overdue", 50.0, 20.0)]
    assert book.open_orders == 0


def test_a_returned_order_reopens_without_a_new_deadline():
    book = DeadlineBook(WORKORDERS)
    book.observe(
        changes(
            orders(
                (0, "A", "reported", "small"),
                (5, "A", "dispatched", "small"),
                (20, "A", "closed", "small"),
                (25, "A", "returned", "small"),
            )
        )
    )
    assert book.open_orders == 1
    assert book.advance(us(24 * 60)).height == 0


def test_an_order_with_no_change_for_expire_after_leaves_with_a_record():
    book = DeadlineBook(WorkOrders(expire_after="11d"))
    book.observe(changes(orders((0, "A", "reported", "thorny"), (60, "B", "reported", "big"))))
    assert [r[:2] for r in brief(book.advance(us(11 * 24 * 60)))] == [
        ("B", "overdue"),
        ("A", "overdue"),
    ]
    assert brief(book.advance(us(11 * 24 * 60) + 1)) == [("A", "expired", 11 * 24 * 60.0, 1440.0)]
    assert book.open_orders == 1
    assert [r[1] for r in brief(book.advance(us(12 * 24 * 60)))] == ["expired"]
    assert book.open_orders == 0


def test_the_book_survives_a_snapshot():
    book = DeadlineBook(WORKORDERS)
    book.observe(changes(orders((0, "A", "reported", "small"), (1, "B", "reported", "small"))))
    copy = pickle.loads(pickle.dumps(book))
    assert brief(copy.advance(us(40))) == brief(book.advance(us(40)))


def test_a_late_dispatch_fixes_the_kpis_without_double_counting():
    """The overdue record, then the dispatch: the KPIs count the order once, as late."""
    catalog = load_catalog()
    ids = [
        "workorder.overdue",
        "workorder.on_time_rate",
        "workorder.dispatch_delay_p50.small",
        "workorder.open",
    ]
    kpis = Catalog(indicators=[catalog[i] for i in ids])
    store = WindowStore(kpis, partitions=["p0"])
    book = DeadlineBook(kpis.workorders)
    stream = [  # (clock after the batch in minutes, the batch)
        (5, orders((0, "A", "reported", "small"), (2, "B", "reported", "small"))),
        (20, orders((10, "B", "dispatched", "small"))),
        (50, orders((50, "A", "dispatched", "small"))),  # 20 min late, after the overdue record
        (55, orders((55, "A", "dispatched", "small"))),  # sent twice by the source system
        (80, orders((70, "A", "arrived", "small"), (80, "A", "closed", "small"))),
        (130, orders((130, "B", "closed", "small"))),
    ]
    records, values = [], []
    for clock, batch in stream:
        for d in kpis.indicators:
            store.add({d.id: partial(d, batch)})
        records.append(book.observe(changes(batch)))
        records.append(book.advance(us(clock)))
        values.append(store.advance("p0", us(clock)))
    values.append(store.advance("p0", us(180)))
    assert brief(pl.concat(records)) == [
        ("A", "overdue", 30.0, 0.0),
        ("A", "dispatched_late", 50.0, 20.0),
    ]
    v = pl.concat(values)

    def series(indicator: str, entity: str) -> dict[int, tuple[float, int]]:
        rows = v.filter((pl.col("indicator_id") == indicator) & (pl.col("entity_id") == entity))
        return {
            int((ws - T0).total_seconds() // 60): (value, n)
            for ws, value, n in rows.select("window_start", "value", "samples").iter_rows()
        }

    overdue = series("workorder.overdue", "D1")
    assert {m: x for m, (x, _) in overdue.items()} == {
        0: 0.0,
        15: 0.0,
        30: 1.0,  # overdue at 10:45, the first window end after the deadline
        45: 0.0,  # dispatched at 10:50: no longer overdue
        **{m: 0.0 for m in range(60, 180, 15)},
    }
    # Dispatched in [10:00, 11:00): B on time, A late, each once.
    assert series("workorder.on_time_rate", "roads") == {0: (0.5, 2)}
    # Delays 8 (B) and 50 (A) minutes: the re-dispatch of A adds no third.
    assert series("workorder.dispatch_delay_p50.small", "D1/small") == {0: (29.0, 2)}
    open_orders = series("workorder.open", "D1")
    assert [open_orders[m][0] for m in (0, 45, 75, 120)] == [2.0, 2.0, 1.0, 0.0]
