"""Small hand-made input streams for the indicator tests: work orders and heartbeats."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

__all__ = ["heartbeats", "workorders"]

_TS = pl.Datetime("us", "UTC")


def workorders(t0: datetime, rows, **constant: str) -> pl.DataFrame:
    """Status changes ``(minutes after t0, order, status, class)``.

    Every row gets the ``constant`` columns (``district_id="D1"`` unless given).
    """
    rows = list(rows)
    columns = {"district_id": "D1", **constant}
    return pl.DataFrame(
        {
            "ts": [t0 + timedelta(minutes=m) for m, _, _, _ in rows],
            "order_id": [o for _, o, _, _ in rows],
            "status": [s for _, _, s, _ in rows],
            "event_class": [c for _, _, _, c in rows],
            **{k: [v] * len(rows) for k, v in columns.items()},
        },
        schema_overrides={"ts": _TS},
    )


def heartbeats(t0: datetime, rows, kind: str = "camera") -> pl.DataFrame:
    """Heartbeats ``(minutes after t0, device, grid)`` of one device type in district D1."""
    rows = list(rows)
    return pl.DataFrame(
        {
            "device_id": [d for _, d, _ in rows],
            "device_type": [kind] * len(rows),
            "grid_id": [g for _, _, g in rows],
            "district_id": ["D1"] * len(rows),
            "ts": [t0 + timedelta(minutes=m) for m, _, _ in rows],
        },
        schema_overrides={"ts": _TS},
    )
