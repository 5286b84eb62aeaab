"""Every notebook in notebooks/ runs top to bottom against the small scenario's lake.

The kernel is the Python running the tests (a kernel spec written for the test
that names ``sys.executable``), so a fresh clone needs nothing installed beyond
``make venv``. A cell that raises fails the test; each test also checks a figure
the notebook printed against DuckDB.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import alert_counts

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
KERNEL = "cityvitals-tests"


@pytest.fixture(scope="module")
def kernel(tmp_path_factory) -> str:
    """A kernel spec of this interpreter, found through ``JUPYTER_PATH``."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec.joinpath("kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"})
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(root))
        yield KERNEL


def run(name: str, lake_root: Path, kernel: str, monkeypatch) -> str:
    """Execute ``notebooks/<name>`` on the lake; return everything it printed."""
    monkeypatch.setenv("CITYVITALS_LAKE", str(lake_root))
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        nb, kernel_name=kernel, timeout=120, resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    images = sum(
        1 for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})
    )
    assert images >= 2, f"{name} drew {images} plots"
    return "".join(
        o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("name") == "stdout"
    )


def test_there_are_at_least_three_notebooks():
    assert len(sorted(NOTEBOOKS.glob("*.ipynb"))) >= 3


def test_city_overview(small_run, kernel, monkeypatch):
    _, lake = small_run
    printed = run("01_city_overview.ipynb", lake.root, kernel, monkeypatch)
    alerts, still_open = alert_counts(lake)
    assert f"open alerts: {still_open}\n" in printed
    assert f"alerts: {alerts}\n" in printed
    (lowest,) = lake.connect().execute(
        "SELECT min(value) FROM indicator_values WHERE indicator_id = 'device.online_rate'"
    ).fetchall()[0]
    assert f"lowest online rate: camera in D01-G07 at {lowest:.1%}\n" in printed


def test_incident_review_of_the_balcony_fire(small_run, kernel, monkeypatch):
    _, lake = small_run
    printed = run("02_incident_review.ipynb", lake.root, kernel, monkeypatch)
    changes = lake.connect().execute(
        "SELECT rule_id, state, severity, epoch(event_ts) - epoch(first_ts) FROM breaches "
        "WHERE entity_id = 'bldg-08/flat-1203' ORDER BY first_ts, rule_id, sequence"
    ).fetchall()
    assert {r[0] for r in changes} >= {"fire.temperature.hot", "fire.smoke_alarm.on"}
    for rule_id, state, severity, seconds in changes:
        line = f"{rule_id}: {state} ({severity}) {seconds:.0f} s after the first window in breach"
        assert line in printed


def test_threshold_tuning_backtests_the_current_rule_as_the_pipeline_ran_it(
    small_run, kernel, monkeypatch
):
    _, lake = small_run
    printed = run("03_threshold_tuning.ipynb", lake.root, kernel, monkeypatch)
    counts = dict(re.findall(r"^(parking\.occupancy_rate\.\w+): (\d+) alarms$", printed, re.M))
    raised = lake.connect().execute(
        "SELECT count(DISTINCT alert_id) FROM breaches WHERE rule_id = 'parking.occupancy_rate.high'"
    ).fetchall()[0][0]
    assert raised >= 1
    # The backtest of the rule in force raises what the pipeline raised; the candidate more.
    assert int(counts["parking.occupancy_rate.high"]) == raised
    assert int(counts["parking.occupancy_rate.candidate"]) > raised
