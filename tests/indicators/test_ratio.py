"""The ratio aggregation: two counts per entity and window, merged by addition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from indicators.aggregate import partial
from indicators.definitions import Catalog, IndicatorDef, load_catalog
from indicators.windows import WindowStore

T0 = datetime(2026, 5, 12, 6, 0, tzinfo=UTC)
HOUR_US = 3_600_000_000
CLOSURE = load_catalog()["workorder.closure_rate"]


def us(dt: datetime) -> int:
    return int(dt.timestamp()) * 1_000_000


def changes(*rows) -> pl.DataFrame:
    """Status changes (minutes after T0, order, status, district)."""
    return pl.DataFrame(
        {
            "ts": [T0 + timedelta(minutes=m) for m, _, _, _ in rows],
            "order_id": [o for _, o, _, _ in rows],
            "status": [s for _, _, s, _ in rows],
            "district_id": [d for _, _, _, d in rows],
        }
    )


def closed_values(d: IndicatorDef, *batches: pl.DataFrame, hours: int = 1) -> dict:
    """{(entity, hour): (value, samples)} once ``hours`` hours are over."""
    store = WindowStore(Catalog(indicators=[d]), partitions=["p0"])
    for batch in batches:
        store.add({d.id: partial(d, batch)})
    out = store.advance("p0", us(T0) + hours * HOUR_US)
    return {
        (e, int((ws - T0).total_seconds() // 3600)): (v, n)
        for e, ws, v, n in out.select("entity_id", "window_start", "value", "samples").iter_rows()
    }


def test_closure_rate_is_closed_over_reported_merged_across_batches():
    first = changes(
        (1, "a", "reported", "D1"), (2, "b", "reported", "D1"), (3, "c", "reported", "D1")
    )
    second = changes(
        (20, "a", "closed", "D1"), (30, "d", "reported", "D1"), (50, "x", "closed", "D1")
    )
    noise = changes((40, "b", "dispatched", "D1"), (41, "b", "arrived", "D1"))
    # 2 closed, 4 reported: the denominator's count is the samples.
    assert closed_values(CLOSURE, first, noise, second) == {("D1", 0): (0.5, 4)}


def test_closure_rate_can_exceed_one_when_a_backlog_is_closed():
    batch = changes(
        (5, "new", "reported", "D1"),
        (10, "old-1", "closed", "D1"),
        (11, "old-2", "closed", "D1"),
        (12, "new", "closed", "D1"),
    )
    assert closed_values(CLOSURE, batch) == {("D1", 0): (3.0, 1)}


def test_zero_denominator_emits_nothing_for_that_window():
    batch = changes(
        (5, "a", "reported", "D1"),
        (6, "b", "closed", "D2"),  # D2 closes an order but reports none: no rate
        (70, "a", "closed", "D1"),  # D1's second hour: closures, no reports
        (75, "c", "reported", "D2"),  # D2's second hour: a report, no closure
    )
    assert closed_values(CLOSURE, batch, hours=2) == {("D1", 0): (0.0, 1), ("D2", 1): (0.0, 1)}


def test_a_row_may_count_on_both_sides():
    share = IndicatorDef.model_validate(
        {
            **CLOSURE.model_dump(),
            "id": "workorder.closure_share",
            "numerator": {"status": "closed"},
            "denominator": {"district_id": "D1"},
        }
    )
    batch = changes(
        (1, "a", "reported", "D1"),
        (2, "a", "closed", "D1"),
        (3, "b", "closed", "D1"),
        (4, "c", "reported", "D1"),
    )
    assert closed_values(share, batch) == {("D1", 0): (0.5, 4)}


def test_partial_counts_only_rows_that_match_a_side():
    batch = changes((1, "a", "reported", "D1"), (2, "a", "arrived", "D1"), (3, "b", "closed", "D2"))
    p = partial(CLOSURE, batch).sort("entity_id")
    assert p.columns == ["entity_id", "window_start", "num", "den"]
    assert p.select("entity_id", "num", "den").rows() == [("D1", 0, 1), ("D2", 1, 0)]


def test_ratio_of_gate_exits_over_entries_per_garage():
    d = load_catalog()["parking.gate_exit_entry_ratio"]
    gates = pl.DataFrame(
        {
            "ts": [T0 + timedelta(minutes=m) for m in (1, 2, 3, 4, 5, 16)],
            "garage_id": ["g1"] * 6,
            "gate_id": ["g1-in", "g1-in", "g1-out", "g1-in", "g1-in", "g1-out"],
            "direction": ["in", "in", "out", "in", "in", "out"],
        }
    )
    store = WindowStore(Catalog(indicators=[d]), partitions=["p0"])
    store.add({d.id: partial(d, gates)})
    out = store.flush().sort("window_start")
    # [0, 15 min): 1 exit over 4 entries; [15, 30 min): an exit and no entry, so no value.
    assert out.select("value", "samples").rows() == [(0.25, 4)]


@pytest.mark.parametrize("side", ["numerator", "denominator"])
def test_ratio_needs_both_sides(side):
    spec = CLOSURE.model_dump()
    spec[side] = {}
    with pytest.raises(ValueError, match=f"non-empty {side}"):
        IndicatorDef.model_validate(spec)
