"""``cityvitals report`` writes the plots and a summary whose figures are the lake's."""

from __future__ import annotations

import re

from click.testing import CliRunner

from cityvitals.cli import main
from cityvitals.report import PLOTS
from tests.conftest import alert_counts


def test_report_on_the_small_lake(small_run, tmp_path):
    _, lake = small_run
    out = tmp_path / "report"
    result = CliRunner().invoke(
        main, ["report", "--lake", str(lake.root), "--out", str(out)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    summary = (out / "summary.md").read_text()
    for name in PLOTS:
        assert f"]({name})" in summary

    con = lake.connect()
    alerts, still_open = alert_counts(lake)
    assert f"## Alerts: {alerts}\n" in summary
    assert f"## Open alerts: {still_open}\n" in summary
    dispatched, on_time = con.execute(
        "SELECT sum(samples), round(sum(value * samples)) FROM indicator_values "
        "WHERE indicator_id = 'workorder.on_time_rate'"
    ).fetchall()[0]
    assert dispatched > 0
    assert f"on time: {int(on_time)} of {int(dispatched)} " in summary
    # The silent cameras' grid is listed with its lowest online rate.
    lowest = con.execute(
        "SELECT min(value) FROM indicator_values WHERE indicator_id = 'device.online_rate' "
        "AND entity_id = 'camera/D01-G07'"
    ).fetchall()[0][0]
    assert re.search(rf"\| camera \| D01-G07 \| {lowest:.1%} \|", summary), summary
    # Every sector of the indicator values has its row under "Sectors now".
    for (sector,) in con.execute("SELECT DISTINCT sector FROM indicator_values").fetchall():
        assert f"\n| {sector} | " in summary, sector
    # Every risk point that changed level, with the level its last change led to.
    last = con.execute(
        "SELECT risk_point_id, arg_max(to_level, event_ts), count(*) FROM risk_levels GROUP BY 1"
    ).fetchall()
    assert last, "the scenario graded no risk point"
    assert f"{len(last)} risk points changed level" in summary
    for point, level, changes in last:
        row = re.search(rf"\| {re.escape(point)} \| [^\n]*", summary)
        assert row, point
        assert f"| {level} |" in row.group(0) and row.group(0).endswith(f"| {changes} |")


def test_report_without_a_lake_says_so(tmp_path):
    result = CliRunner().invoke(main, ["report", "--lake", str(tmp_path / "none")])
    assert result.exit_code != 0
    assert "no lake in" in result.output
