"""Analysts read the DuckDB file while the pipeline runs, from another process.

The pipeline (``cityvitals demo`` on a 400-device afternoon) runs in a child
process; this process opens the DuckDB file read-only again and again and asks
every view, the analysts' ones included, and the two table macros.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import duckdb

from cityvitals.lake import Lake
from cityvitals.views import VIEWS

CITYVITALS = Path(sys.executable).with_name("cityvitals")
#: Counts that only grow while a run appends: tables, and views of every key seen so far.
GROWING = {
    "indicator_values": "SELECT count(*) FROM indicator_values",
    "breaches": "SELECT count(*) FROM breaches",
    "device_status": "SELECT count(*) FROM device_status",
    "latest_values": "SELECT count(*) FROM latest_values",
    "alerts": "SELECT count(*) FROM alerts",
    "alerts_per_day": "SELECT coalesce(sum(alerts), 0) FROM breaches_per_sector_day",
    "online_rate_windows": "SELECT count(*) FROM device_online_rate",
}


def _read(db: Path) -> dict[str, int]:
    """One analyst session: every growing count, every view, and both macros."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        counts = {name: con.execute(sql).fetchall()[0][0] for name, sql in GROWING.items()}
        for view in VIEWS:
            con.execute(f"SELECT * FROM {view}").fetchall()
        (alert,) = con.execute("SELECT max(alert_id) FROM breaches").fetchall()[0]
        if alert is not None:  # an alert seen once has its life in every later query
            counts["alert_life"] = len(
                con.execute("SELECT * FROM alert_life(?)", [alert]).fetchall()
            )
            assert counts["alert_life"] >= 1, alert
        con.execute("SELECT * FROM risk_level_history('rp-1')").fetchall()
        return counts
    finally:
        con.close()


def test_read_only_queries_during_a_run_never_lock_and_never_go_back(tmp_path):
    out = tmp_path / "out"
    Lake(out).create()  # the analyst may open the file before the first run writes
    proc = subprocess.Popen(
        [str(CITYVITALS), "demo", "--devices", "400", "--minutes", "240", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    seen: list[dict[str, int]] = []
    errors: list[str] = []
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            seen.append(_read(out / "cityvitals.duckdb"))
        except duckdb.Error as exc:  # a lock error or a half-written file lands here
            errors.append(str(exc))
        time.sleep(0.05)
    output = proc.communicate(timeout=600)[0].decode()
    assert proc.returncode == 0, output
    assert errors == []
    assert len(seen) >= 10, "too few analyst sessions during the run to prove anything"
    for name in GROWING:
        series = [s[name] for s in seen]
        assert series == sorted(series), f"{name} went backwards"
    final = _read(out / "cityvitals.duckdb")
    # Some reads happened mid-run: they saw data, but not all of it yet.
    values = [s["indicator_values"] for s in seen]
    assert any(0 < n < final["indicator_values"] for n in values), (values[:5], values[-5:])
    assert any(0 < s["alerts"] < final["alerts"] for s in seen), "no read saw alerts mid-run"
