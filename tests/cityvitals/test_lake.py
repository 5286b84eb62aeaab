"""The lake's writer clusters indicator values so that filters skip row groups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq

from cityvitals.lake import ROW_GROUP_ROWS, Lake
from schemas.families import INDICATOR_VALUES


def test_indicator_values_are_written_sorted_by_indicator_entity_and_window(tmp_path):
    lake = Lake(tmp_path)
    lake.create()
    t0 = datetime(2026, 5, 12, 6, tzinfo=UTC)
    n = ROW_GROUP_ROWS * 3
    rows = [
        {
            "indicator_id": f"ind-{i % 7}",
            "sector": "fire",
            "entity_type": "flat",
            "entity_id": f"e{i % 5}",
            "window_start": t0 + timedelta(minutes=(n - i) % 600),
            "window_end": t0 + timedelta(minutes=(n - i) % 600 + 1),
            "value": float(i),
            "samples": 1,
            "unit": "C",
            "level": "normal",
        }
        for i in range(n)
    ]
    (path,) = lake.write("indicator_values", pa.Table.from_pylist(rows, INDICATOR_VALUES), "w", 0)
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 3
    keys = [
        (r["indicator_id"], r["entity_id"], r["window_start"])
        for r in pq.read_table(path).to_pylist()
    ]
    assert keys == sorted(keys) and len(keys) == n
    # A filter on one indicator can skip the row groups whose statistics exclude it.
    ranges = [meta.row_group(g).column(0).statistics for g in range(meta.num_row_groups)]
    assert sum(1 for st in ranges if st.min <= "ind-6" <= st.max) < meta.num_row_groups
