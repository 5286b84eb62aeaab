"""The views part of ``cityvitals bench``: a synthetic lake of N indicator rows, each view timed.

:func:`synthetic_lake` writes the lake with :meth:`Lake.write` (the flow's
own writer): ``N`` indicator values of the catalogue's indicators, as
``max(1, N // 2000)`` series (indicator and entity) of consecutive
five-minute windows, in files of 100,000 rows in time order as a flow's
flushes would leave them (the writer sorts each file by indicator, entity and
window, see ``Lake.write``), plus a few thousand breaches, device and order
records and risk-level changes so that every view has something to read.
:func:`time_views` opens the DuckDB file read-only, as an analyst does, and
times one query per view and macro.

>>> import tempfile
>>> lake = synthetic_lake(tempfile.mkdtemp(), rows=200_000)
>>> lake.connect().execute("SELECT count(*) FROM indicator_values").fetchone()
(200000,)
>>> timings = time_views(lake, repeat=1)
>>> sorted(timings) == sorted(QUERIES)
True
>>> all(t["rows"] > 0 for t in timings.values())
True
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from cityvitals.lake import Lake
from cityvitals.views import objects
from indicators.definitions import load_catalog
from schemas.families import DEVICE_TYPES, EVENT_CLASSES, OUTPUT_TABLES, SEVERITIES

__all__ = ["QUERIES", "synthetic_lake", "time_views"]

#: Arguments of the table macros, as an analyst would call them ({alert} and {point} filled in).
_MACRO_ARGS = {"alert_life": "'{alert}'", "risk_level_history": "'{point}'"}

#: One query per view and table macro of :mod:`cityvitals.views`.
QUERIES: dict[str, str] = {
    name: f"SELECT * FROM {name}" + (f"({_MACRO_ARGS[name]})" if kind == "macro" else "")
    for name, kind in objects()
    if kind == "view" or name in _MACRO_ARGS
}

START = datetime(2026, 5, 5, tzinfo=UTC)
FILE_ROWS = 100_000
WINDOW = timedelta(minutes=5)


def _entity(by: list[str], j: int) -> str:
    """The ``j``-th entity id of an indicator keyed by ``by`` (distinct for distinct j)."""
    parts = []
    for field in by:
        if field == "device_type":
            j, k = divmod(j, len(DEVICE_TYPES))
            parts.append(DEVICE_TYPES[k])
        elif field == "event_class":
            j, k = divmod(j, len(EVENT_CLASSES))
            parts.append(EVENT_CLASSES[k])
        else:
            parts.append(f"{field}-{j}")
            j = 0
    return "/".join(parts) if j == 0 else "/".join(parts) + f"-{j}"


def _series(n: int) -> dict[str, np.ndarray]:
    """``n`` series spread round-robin over the catalogue's indicators."""
    defs = load_catalog().indicators
    cols: dict[str, list] = {k: [] for k in ("indicator_id", "sector", "entity_type", "unit")}
    cols["entity_id"] = []
    for s in range(n):
        d = defs[s % len(defs)]
        cols["indicator_id"].append(d.id)
        cols["sector"].append(d.sector)
        cols["entity_type"].append(d.entity.type)
        cols["unit"].append(d.unit)
        cols["entity_id"].append(_entity(d.entity.by, s // len(defs)))
    return {k: np.array(v, dtype=object) for k, v in cols.items()}


def synthetic_lake(root: Path | str, rows: int, seed: int = 7) -> Lake:
    """A fresh lake in ``root`` holding ``rows`` indicator values and some of everything else."""
    lake = Lake(root)
    lake.create()
    rng = np.random.default_rng(seed)
    n_series = max(1, rows // 2000)
    series = _series(n_series)
    levels = np.array(SEVERITIES, dtype=object)
    start_us = int(START.timestamp() * 1e6)
    step_us = int(WINDOW.total_seconds() * 1e6)
    for n, first in enumerate(range(0, rows, FILE_ROWS)):
        r = np.arange(first, min(rows, first + FILE_ROWS))
        s, w = r % n_series, r // n_series
        ws = start_us + w * step_us
        level = np.where(rng.random(len(r)) < 0.98, 0, rng.integers(1, 5, len(r)))
        table = pa.table(
            {
                **{k: pa.array(v[s]) for k, v in series.items()},
                "window_start": pa.array(ws, pa.timestamp("us", tz="UTC")),
                "window_end": pa.array(ws + step_us, pa.timestamp("us", tz="UTC")),
                "value": rng.random(len(r)),
                "samples": rng.integers(1, 50, len(r)),
                "level": pa.array(levels[level]),
            }
        )
        lake.write("indicator_values", table, "bench", n)
    end = START + WINDOW * (rows // n_series + 1)
    for table, data in _others(rng, series, end).items():
        lake.write(table, pa.Table.from_pylist(data, schema=OUTPUT_TABLES[table]), "bench", 0)
    return lake


def _others(rng: np.random.Generator, series: dict, end: datetime) -> dict[str, list[dict]]:
    """Breaches (2,000 alerts), device and order records, risk-level changes."""
    span = (end - START).total_seconds()

    def at() -> datetime:
        return START + timedelta(seconds=float(rng.random() * span))

    breaches = []
    for a in range(2000):
        k = int(rng.integers(len(series["indicator_id"])))
        first, sev = at(), SEVERITIES[int(rng.integers(1, 5))]
        states = ["opened", "escalated", "cleared"][: int(rng.integers(1, 4))]
        for seq, state in enumerate(states):
            breaches.append(
                {
                    "alert_id": f"alert-{a:05d}",
                    "sequence": seq,
                    "state": state,
                    "severity": "normal" if state == "cleared" else sev,
                    "previous_severity": "normal" if seq == 0 else sev,
                    "rule_id": f"{series['indicator_id'][k]}.rule",
                    "indicator_id": series["indicator_id"][k],
                    "sector": series["sector"][k],
                    "entity_type": series["entity_type"][k],
                    "entity_id": series["entity_id"][k],
                    "measure": "value",
                    "direction": "above",
                    "bound": 1.0,
                    "value": 1.5,
                    "peak_value": 2.0,
                    "first_ts": first,
                    "event_ts": first + WINDOW * (seq + 1),
                    "emitted_at": first,
                    "evidence": [1.5],
                }
            )
    devices = [
        {
            "device_id": f"dev-{i}",
            "device_type": DEVICE_TYPES[i % len(DEVICE_TYPES)],
            "grid_id": f"grid_id-{i % 20}",
            "district_id": "D01",
            "status": "offline",
            "event_ts": (t := at()),
            "last_seen_ts": t - timedelta(minutes=3),
            "silent_s": 180.0,
            "emitted_at": t,
        }
        for i in range(1000)
    ]
    orders = [
        {
            "order_id": f"order-{i}",
            "event_class": EVENT_CLASSES[i % len(EVENT_CLASSES)],
            "department": f"department-{i % 8}",
            "grid_id": "grid_id-0",
            "district_id": "D01",
            "state": "overdue",
            "reported_ts": (t := at()) - timedelta(minutes=30),
            "deadline_ts": t,
            "event_ts": t,
            "overdue_s": 0.0,
            "emitted_at": t,
        }
        for i in range(500)
    ]
    risks = [
        {
            "risk_point_id": f"rp-{i % 200:03d}",
            "category": "slope",
            "grid_id": "grid_id-0",
            "district_id": "D01",
            "model": "bench",
            "from_level": SEVERITIES[i // 200 % 2],
            "to_level": SEVERITIES[1 - i // 200 % 2],
            "change": "upgraded" if i // 200 % 2 == 0 else "downgraded",
            "score": float(rng.random()),
            "event_ts": START + timedelta(hours=i // 200),
            "emitted_at": START,
            "factors": [{"factor": "base", "value": None, "contribution": 1.0}],
        }
        for i in range(2000)
    ]
    return {
        "breaches": breaches,
        "device_status": devices,
        "order_deadlines": orders,
        "risk_levels": risks,
    }


def time_views(lake: Lake, repeat: int = 3) -> dict[str, dict]:
    """Per view: ``first_s`` (its first run on a fresh read-only connection), ``best_s``
    (the best of ``repeat`` runs) and ``rows``."""
    con = lake.connect()
    try:
        alert, point = con.execute(
            "SELECT (SELECT max(alert_id) FROM breaches), "
            "(SELECT max(risk_point_id) FROM risk_levels)"
        ).fetchall()[0]
        out = {}
        for name, query in QUERIES.items():
            q = query.format(alert=alert, point=point)
            runs = [_timed(lambda q=q: con.sql(q).to_arrow_table()) for _ in range(repeat)]
            out[name] = {
                "first_s": runs[0][0],
                "best_s": min(t for t, _ in runs),
                "rows": runs[0][1].num_rows,
            }
        return out
    finally:
        con.close()


def _timed(fn: Callable[[], pa.Table]) -> tuple[float, pa.Table]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result
