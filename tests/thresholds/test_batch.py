"""Reading a batch of values by rows: the same as Polars' own gather and rle."""

from __future__ import annotations

import numpy as np
import polars as pl

from thresholds.batch import column_at, indicator_runs, null_first


def test_column_at_equals_a_gather_for_slices_gaps_and_nothing():
    frame = pl.DataFrame({"e": [f"e{i}" if i % 5 else None for i in range(40)]})
    for rows in ([], [3], [3, 4, 5, 6], [0, 2, 39], list(range(40))):
        at = np.array(rows, dtype=np.int64)
        assert column_at(frame, "e", at) == frame.get_column("e").gather(at).to_list()


def test_indicator_runs_cover_every_row_in_order():
    ids = ["a", "a", "b", "b", "b", "a", "c"]
    names, lengths = indicator_runs(pl.DataFrame({"indicator_id": ids}))
    assert [n for n, k in zip(names, lengths.tolist(), strict=True) for _ in range(k)] == ids
    assert names == ["a", "b", "a", "c"]


def test_null_first_sorts_as_polars_does():
    entities = ["b", None, "a", "c", None]
    assert sorted(entities, key=null_first) == pl.Series(entities).sort().to_list()
