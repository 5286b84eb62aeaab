"""The analysts' views and macros agree with the same questions asked of the tables directly."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from cityvitals.lake import Lake
from cityvitals.views import VIEWS, objects
from schemas.families import RISK_LEVELS


def _rows(con, sql, *params):
    return con.execute(sql, list(params)).fetchall()


def test_every_view_and_macro_is_in_the_lake_file(tmp_path):
    lake = Lake(tmp_path)
    lake.create()
    con = lake.connect()
    names = {r[0] for r in _rows(con, "SELECT view_name FROM duckdb_views() WHERE NOT internal")}
    macros = {r[0] for r in _rows(con, "SELECT function_name FROM duckdb_functions()")}
    for name, kind in objects():
        assert name in (names if kind == "view" else macros), name
    for view in VIEWS:  # each answers on an empty lake
        assert _rows(con, f"SELECT count(*) FROM {view}")[0][0] == 0, view


def test_latest_values_is_the_last_window_of_every_series(small_run):
    _, lake = small_run
    con = lake.connect()
    by_window_function = _rows(
        con,
        "SELECT indicator_id, entity_id, window_start, value, level FROM indicator_values "
        "QUALIFY row_number() OVER (PARTITION BY indicator_id, entity_id "
        "ORDER BY window_start DESC) = 1",
    )
    view = _rows(
        con, "SELECT indicator_id, entity_id, window_start, value, level FROM latest_values"
    )
    assert len(view) > 500
    assert sorted(view) == sorted(by_window_function)


def test_open_alerts_are_those_whose_last_record_is_not_cleared(small_run):
    _, lake = small_run
    con = lake.connect()
    last: dict[str, tuple[int, str]] = {}
    for alert_id, seq, state in _rows(con, "SELECT alert_id, sequence, state FROM breaches"):
        if alert_id not in last or seq > last[alert_id][0]:
            last[alert_id] = (seq, state)
    expected = {a for a, (_, state) in last.items() if state != "cleared"}
    assert expected and len(expected) < len(last)  # some open, some cleared
    assert {r[0] for r in _rows(con, "SELECT alert_id FROM open_alerts")} == expected
    assert _rows(con, "SELECT count(*) FROM alerts")[0][0] == len(last)


def test_alert_life_of_the_balcony_fire(small_run):
    _, lake = small_run
    con = lake.connect()
    (alert_id,) = _rows(
        con,
        "SELECT alert_id FROM breaches WHERE rule_id = 'fire.smoke_alarm.on' "
        "AND entity_id = 'bldg-08/flat-1203' AND state = 'opened'",
    )[0]
    life = _rows(
        con,
        "SELECT sequence, state, event_ts, since_first_s, since_previous_s, first_ts "
        "FROM alert_life(?)",
        alert_id,
    )
    raw = _rows(
        con,
        "SELECT sequence, state, event_ts FROM breaches WHERE alert_id = ? ORDER BY 1",
        alert_id,
    )
    assert [r[:3] for r in life] == raw
    assert life[0][1] == "opened" and life[-1][1] == "cleared"
    assert life[0][4] is None
    for prev, row in itertools.pairwise(life):
        assert row[3] == (row[2] - row[5]).total_seconds()
        assert row[4] == (row[2] - prev[2]).total_seconds()


def test_days_turn_at_midnight_in_the_catalogue_time_zone(tmp_path):
    """local_day follows the catalogue the lake is written for: 17:00 UTC is tomorrow in
    Beijing (the default catalogue's zone) and still today in UTC."""
    from indicators.definitions import Catalog, load_catalog

    late = "SELECT local_day(TIMESTAMPTZ '2026-05-12 17:00:00+00')"
    beijing = Lake(tmp_path / "a")
    beijing.create()
    in_utc = Lake(tmp_path / "b", catalog=Catalog(**{**dict(load_catalog()), "timezone": "UTC"}))
    in_utc.create()
    assert str(_rows(beijing.connect(), late)[0][0]) == "2026-05-13"
    assert str(_rows(in_utc.connect(), late)[0][0]) == "2026-05-12"


def test_breaches_per_sector_day_counts_every_alert_once(small_run):
    _, lake = small_run
    con = lake.connect()
    rows = _rows(
        con, "SELECT sector, alerts, red + orange + yellow + blue FROM breaches_per_sector_day"
    )
    assert all(n == by_level for _, n, by_level in rows)
    per_sector = dict(
        _rows(con, "SELECT sector, count(DISTINCT alert_id) FROM breaches GROUP BY sector")
    )
    assert {s: n for s, n, _ in rows} == per_sector  # the scenario is one day (in Beijing too)


def test_device_online_rate_of_the_silent_cameras(small_run):
    _, lake = small_run
    con = lake.connect()
    lowest, offline = _rows(
        con,
        "SELECT min(online_rate), sum(went_offline) FROM device_online_rate "
        "WHERE device_type = 'camera' AND grid_id = 'D01-G07'",
    )[0]
    went = _rows(
        con,
        "SELECT count(*) FROM device_status WHERE status = 'offline' "
        "AND device_type = 'camera' AND grid_id = 'D01-G07'",
    )[0][0]
    assert lowest < 0.9 and went > 0
    assert offline == went
    n = _rows(
        con, "SELECT count(*) FROM indicator_values WHERE indicator_id = 'device.online_rate'"
    )
    assert _rows(con, "SELECT count(*) FROM device_online_rate") == n


def test_workorder_sla_adds_up_to_the_indicators_and_the_deadline_records(small_run):
    _, lake = small_run
    con = lake.connect()
    dispatched = dict(
        _rows(
            con,
            "SELECT entity_id, sum(samples) FROM indicator_values "
            "WHERE indicator_id = 'workorder.on_time_rate' GROUP BY 1",
        )
    )
    by_department = {
        d: (n, overdue)
        for d, n, overdue in _rows(
            con,
            "SELECT department, sum(dispatched), sum(overdue) FROM workorder_sla "
            "WHERE event_class = '*' GROUP BY 1",
        )
    }
    assert {d: n for d, (n, _) in by_department.items() if n} == dispatched
    overdue = _rows(
        con, "SELECT count(DISTINCT order_id) FROM order_deadlines WHERE state = 'overdue'"
    )[0][0]
    assert overdue >= 5 and sum(o for _, o in by_department.values()) == overdue
    by_class = _rows(con, "SELECT sum(overdue) FROM workorder_sla WHERE department = '*'")[0][0]
    assert by_class == overdue
    for compliance, on_time, n in _rows(
        con, "SELECT compliance, on_time, dispatched FROM workorder_sla WHERE dispatched > 0"
    ):
        assert 0 <= compliance <= 1 and compliance == pytest.approx(on_time / n)


def test_risk_level_history_in_time_order_with_how_long_each_level_held(tmp_path):
    lake = Lake(tmp_path)
    lake.create()
    t0 = datetime(2026, 5, 12, 6, tzinfo=UTC)
    steps = [("normal", "yellow", 0), ("yellow", "red", 20), ("red", "yellow", 45)]
    rows = [
        {
            "risk_point_id": point,
            "category": "slope",
            "grid_id": "D01-G01",
            "district_id": "D01",
            "model": "composite",
            "from_level": a,
            "to_level": b,
            "change": "upgraded" if b in ("yellow", "red") and a != "red" else "downgraded",
            "score": 0.5,
            "event_ts": t0 + timedelta(minutes=m),
            "emitted_at": t0,
            "factors": [{"factor": "rain", "value": 1.0, "contribution": 0.5}],
        }
        for point in ("rp-1", "rp-2")
        for a, b, m in reversed(steps)  # written out of order
    ]
    lake.write("risk_levels", pa.Table.from_pylist(rows, schema=RISK_LEVELS), "w", 0)
    history = _rows(
        lake.connect(),
        "SELECT from_level, to_level, held_for_s, risk_point_id FROM risk_level_history('rp-1')",
    )
    assert history == [
        ("normal", "yellow", 1200.0, "rp-1"),
        ("yellow", "red", 1500.0, "rp-1"),
        ("red", "yellow", None, "rp-1"),
    ]


def test_risk_level_history_of_the_rain_grids_road_section(small_run):
    """The road section in the rain: its whole history, each level leading to the next."""
    _, lake = small_run
    con = lake.connect()
    history = _rows(
        con,
        "SELECT from_level, to_level, change, held_for_s, event_ts "
        "FROM risk_level_history('rp-road-G03-1')",
    )
    written = _rows(
        con,
        "SELECT count(*) FROM risk_levels WHERE risk_point_id = 'rp-road-G03-1'",
    )[0][0]
    assert len(history) == written >= 2
    assert history[0][0] == "normal" and history[-1][1] == "normal"
    for before, after in itertools.pairwise(history):
        assert before[1] == after[0]  # the level a change leads to is where the next one starts
        assert before[3] == (after[4] - before[4]).total_seconds()
    assert history[-1][3] is None  # the last level is still in force
    assert {h[2] for h in history} == {"upgraded", "downgraded"}


def test_every_example_of_the_readme_views_table_runs(small_run):
    """The README's example per view and macro is a query that works on a scenario lake."""
    _, lake = small_run
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Views and macros for analysts", 1)[1].split("\n### ", 1)[0]
    examples = re.findall(r"\| `(SELECT [^`]+)` \|", section)
    undocumented = [name for name, _ in objects() if f"`{name}" not in section]
    assert undocumented == []
    con = lake.connect()
    for query in examples:
        con.execute(query).fetchall()  # raises on a wrong name, column or macro argument
    assert len(examples) >= len(VIEWS)
