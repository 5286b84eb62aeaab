"""Analysts read the DuckDB file while the pipeline runs, from another process."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import duckdb

from cityvitals.lake import Lake

CITYVITALS = Path(sys.executable).with_name("cityvitals")


def test_read_only_queries_during_a_run_never_lock_and_never_go_back(tmp_path):
    out = tmp_path / "out"
    Lake(out).create()  # the analyst may open the file before the first run writes
    proc = subprocess.Popen(
        [str(CITYVITALS), "demo", "--devices", "400", "--minutes", "240", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    seen: list[int] = []
    errors: list[str] = []
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            con = duckdb.connect(str(out / "cityvitals.duckdb"), read_only=True)
            try:
                seen.append(con.execute("SELECT count(*) FROM indicator_values").fetchone()[0])
            finally:
                con.close()
        except duckdb.Error as exc:  # a lock error or a half-written file lands here
            errors.append(str(exc))
        time.sleep(0.05)
    output = proc.communicate(timeout=600)[0].decode()
    assert proc.returncode == 0, output
    assert errors == []
    assert seen == sorted(seen), "counts went backwards"
    final = Lake(out).connect().execute("SELECT count(*) FROM indicator_values").fetchone()[0]
    # Some reads happened mid-run: they saw data, but not all of it yet.
    assert any(0 < n < final for n in seen), (seen[:5], seen[-5:], final)
