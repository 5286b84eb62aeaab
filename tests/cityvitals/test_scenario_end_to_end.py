"""The whole path at small scale: simulator -> Bytewax flow -> lake -> DuckDB."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cityvitals.simulate import calm_period, incidents
from cityvitals.summary import check_incidents, summarize
from indicators.definitions import load_catalog
from schemas.families import SEVERITIES
from tests.conftest import SMALL

RANK = {s: i for i, s in enumerate(SEVERITIES)}
#: The afternoon's two thorny orders wait longer than it lasts for a dispatch.
NOTHING_TO_MEASURE = {"workorder.dispatch_delay_p50.thorny", "workorder.dispatch_delay_p90.thorny"}


@pytest.mark.parametrize("incident", incidents(SMALL), ids=lambda i: i.id)
def test_every_incident_is_detected_at_its_severity(small_run, incident):
    _, lake = small_run
    (result,) = check_incidents(lake, [incident])
    assert result["peak_severity"] == incident.severity, result
    # Detected within two windows of the indicator (15 min at most) of the start.
    assert 0 <= result["delay_s"] <= 30 * 60, result


def test_the_script_has_all_incident_kinds():
    ids = {i.indicator_id for i in incidents(SMALL)}
    assert {
        "parking.occupancy_rate",
        "traffic.segment_travel_time",
        "fire.temperature",
        "fire.smoke_alarm",
        "device.online_rate",
        "crowd.density_ratio",
        "flood.water_level",
        "workorder.overdue",
    } <= ids


def test_no_breach_fires_in_the_calm_stretch(small_run):
    scenario, lake = small_run
    _, end = calm_period(scenario)
    con = lake.connect()
    rows = con.execute(
        "SELECT rule_id, entity_id, state, first_ts FROM breaches WHERE first_ts < ?", [end]
    ).fetchall()
    assert rows == []
    # ... while the indicators were computed all along that stretch.
    n = con.execute(
        "SELECT count(DISTINCT indicator_id) FROM indicator_values WHERE window_end <= ?", [end]
    ).fetchone()[0]
    assert n >= 12


def test_every_indicator_is_computed_from_what_the_simulator_sends(small_run):
    _, lake = small_run
    rows = lake.connect().execute("SELECT DISTINCT indicator_id FROM indicator_values").fetchall()
    assert {r[0] for r in rows} == set(load_catalog().ids) - NOTHING_TO_MEASURE


def test_every_input_is_accounted_for(small_run):
    _, lake = small_run
    s = summarize(lake)
    assert s["events_in"] > 100_000
    assert s["events_in"] == s["valid"] + s["dead_letters"]
    # The simulator corrupts ~0.05 % of lines; each becomes a dead letter with a reason.
    assert 0 < s["dead_letters"] < s["events_in"] * 0.002
    assert set(s["dead_letters_by_reason"]) <= {
        "malformed_json",
        "not_an_object",
        "mistyped_field",
        "missing_field",
        "unknown_device_type",
        "bad_timestamp",
        "timestamp_out_of_range",
        "late_event",
    }
    dead_rows = lake.connect().execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    assert dead_rows == s["dead_letters"]


def test_alert_lives_are_ordered_and_end_cleared_or_open(small_run):
    _, lake = small_run
    con = lake.connect()
    lives = con.execute(
        "SELECT alert_id, list(state ORDER BY sequence), list(sequence ORDER BY sequence) "
        "FROM breaches GROUP BY alert_id"
    ).fetchall()
    assert lives
    for alert_id, states, seqs in lives:
        assert seqs == list(range(len(seqs))), alert_id
        assert states[0] == "opened", alert_id
        assert "opened" not in states[1:] and "cleared" not in states[:-1], alert_id


def test_indicator_levels_agree_with_breaches(small_run):
    _, lake = small_run
    con = lake.connect()
    # The fire flat reads red in indicator_values exactly when its alert is red.
    levels = {
        r[0]
        for r in con.execute(
            "SELECT level FROM indicator_values WHERE indicator_id = 'fire.smoke_alarm' "
            "AND entity_id = 'bldg-08/flat-1203'"
        ).fetchall()
    }
    assert levels == {"normal", "red"}


def test_silent_cameras_go_offline_and_come_back_in_the_device_status_table(small_run):
    scenario, lake = small_run
    (silent,) = [i for i in incidents(scenario) if i.id == "devices_silent"]
    allowance = load_catalog().devices.allowance_us["camera"] / 1e6
    con = lake.connect()
    rows = con.execute(
        "SELECT device_id, device_type, grid_id, status, event_ts, silent_s FROM device_status"
    ).fetchall()
    offline = [r for r in rows if r[3] == "offline"]
    assert offline, "the silent cameras must go offline"
    # Only the incident's cameras, each offline once, within an allowance of the start.
    assert {(r[1], r[2]) for r in offline} == {("camera", silent.entity_id.split("/")[1])}
    assert len({r[0] for r in offline}) == len(offline)
    for r in offline:
        assert r[5] == allowance
        assert silent.start <= r[4] <= silent.start + timedelta(seconds=2 * allowance), r
    # ... and each is back online after the incident, with its silence measured.
    back = {r[0]: r for r in rows if r[3] == "online"}
    assert set(back) == {r[0] for r in offline}
    for r in back.values():
        assert r[4] >= silent.end - timedelta(minutes=1), r
        assert r[5] > allowance


def test_orders_never_dispatched_are_overdue_at_their_deadline(small_run):
    scenario, lake = small_run
    deadline = load_catalog().workorders.deadlines["small"]
    rows = (
        lake.connect()
        .execute(
            "SELECT order_id, state, event_ts, reported_ts, deadline_ts, department "
            "FROM order_deadlines WHERE state = 'overdue'"
        )
        .fetchall()
    )
    # The scripted ones (6 reports, urban management) whose deadline falls in the afternoon.
    end = scenario.start + timedelta(minutes=scenario.minutes)
    assert len(rows) >= 5
    for order_id, _, event_ts, reported, due, department in rows:
        assert due == reported + deadline == event_ts, order_id
        assert event_ts < end
        assert department == "urban_management"
    assert len({r[0] for r in rows}) == len(rows)  # once per order
