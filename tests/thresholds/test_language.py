"""The threshold language at work: overrides, schedules, bands, rates, durations, silence."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from tests.thresholds.series import MIN, NOW, T0, at, brief, evaluator, values
from thresholds.evaluate import Evaluator
from thresholds.rules import Rule, RuleSet

# T0 is Tuesday 2026-05-12 06:00 UTC, 14:00 in Shanghai; window i starts at T0 + i minutes.
SHANGHAI = "Asia/Shanghai"


def ruleset(timezone: str = "UTC", **spec) -> RuleSet:
    base = {"id": "r", "indicator": "t", "direction": "above", "levels": {"red": 70}}
    base.update(spec)
    return RuleSet(timezone=timezone, rules=[Rule.model_validate(base)])


# -- overrides -------------------------------------------------------------------------


def test_an_override_beats_the_default_for_its_entities_only():
    ev = Evaluator(
        ruleset(
            levels={"yellow": 45, "red": 70},
            overrides=[{"entities": ["garage-0?"], "levels": {"yellow": 80, "red": 95}}],
        )
    )
    frame = pl.concat([values("garage-01", [60, 85]), values("garage-10", [60, 85])])
    levels, changes = ev.evaluate(frame, now=NOW)
    assert levels["level"].to_list() == ["normal", "yellow", "yellow", "red"]
    assert [(c["entity_id"], c["state"], c["severity"], c["bound"]) for c in changes] == [
        ("garage-01", "opened", "yellow", 80.0),
        ("garage-10", "opened", "yellow", 45.0),
        ("garage-10", "escalated", "red", 70.0),
    ]


def test_the_first_matching_override_wins_and_patterns_cover_areas():
    ev = Evaluator(
        ruleset(
            overrides=[
                {"entities": ["smoke_detector/g03"], "levels": {"red": 10}},
                {"entities": ["*/g03"], "levels": {"red": 20}},
            ]
        )
    )
    frame = pl.concat(
        [values("smoke_detector/g03", [15]), values("camera/g03", [15, 25]), values("x/g04", [25])]
    )
    levels, _ = ev.evaluate(frame, now=NOW)
    assert levels["level"].to_list() == ["red", "normal", "red", "normal"]


# -- schedules -------------------------------------------------------------------------


def dismissal(**changes) -> dict:
    s = {
        "name": "dismissal",
        "days": ["mon", "tue", "wed", "thu", "fri"],
        "from": "15:30",
        "to": "17:30",
        "levels": {"red": 90},
    }
    s.update(changes)
    return s


def test_a_schedule_switches_bands_at_its_boundaries_in_local_time():
    ev = Evaluator(ruleset(SHANGHAI, schedules=[dismissal()]))
    # 15:29 local (window 89) uses the default 70; 15:30 to 17:29 use 90; 17:30 is back to 70.
    levels, _ = ev.evaluate(values("seg", [80] * 4, start=88), now=NOW)
    assert levels["level"].to_list() == ["red", "red", "normal", "normal"]
    ev = Evaluator(ruleset(SHANGHAI, schedules=[dismissal()]))
    levels, _ = ev.evaluate(values("seg", [80] * 4, start=208), now=NOW)
    assert levels["level"].to_list() == ["normal", "normal", "red", "red"]


def test_a_schedule_is_off_on_days_it_does_not_name():
    ev = Evaluator(ruleset(SHANGHAI, schedules=[dismissal(days=["sat", "sun"])]))
    levels, _ = ev.evaluate(values("seg", [80], start=100), now=NOW)  # a Tuesday
    assert levels["level"].to_list() == ["red"]


def test_a_night_schedule_runs_across_midnight_and_belongs_to_the_day_it_starts():
    # 22:00-06:00 on Tuesdays only. Shanghai midnight is 16:00 UTC = window 600.
    night = dismissal(name="night", days=["tue"], **{"from": "22:00", "to": "06:00"})
    ev = Evaluator(ruleset(SHANGHAI, schedules=[night]))
    starts = [479, 480, 599, 600, 959, 960]  # 21:59, 22:00, 23:59 Tue; 00:00, 05:59, 06:00 Wed
    frame = pl.concat([values(f"e{w}", [80], start=w) for w in starts])
    levels, _ = ev.evaluate(frame, now=NOW)
    assert levels["level"].to_list() == ["red", "normal", "normal", "normal", "normal", "red"]
    # The next night (Wednesday 22:00 local) is not Tuesday's: the default applies.
    levels, _ = ev.evaluate(values("w", [80], start=480 + 1440), now=NOW)
    assert levels["level"].to_list() == ["red"]


def test_an_override_can_apply_only_during_a_schedule():
    ev = Evaluator(
        ruleset(
            SHANGHAI,
            schedules=[dismissal()],
            overrides=[
                {"entities": ["school-road"], "schedule": "dismissal", "levels": {"red": 99}}
            ],
        )
    )
    frame = pl.concat(
        [values("school-road", [95], start=100), values("school-road", [95], start=300)]
    )
    levels, _ = ev.evaluate(frame, now=NOW)
    assert levels["level"].to_list() == ["normal", "red"]  # 99 while dismissal, 70 after


# -- bands outside which values are bad ------------------------------------------------


def test_outside_grades_both_sides_and_names_the_bound_on_the_side_crossed():
    ev = evaluator(
        direction="outside",
        levels={"yellow": [18, 26], "red": [10, 35]},
        hysteresis=1,
    )
    levels, changes = ev.evaluate(
        values("flat", [22, 27, 36, 25.5, 24.9, 17, 9, 17.5, 19.1]), now=NOW
    )
    assert levels["level"].to_list() == [
        "normal",
        "yellow",
        "red",
        "yellow",  # 25.5 is still within 1 of 26
        "normal",
        "yellow",
        "red",
        "yellow",
        "normal",
    ]
    assert [(c["state"], c["severity"], c["bound"]) for c in changes] == [
        ("opened", "yellow", 26.0),
        ("escalated", "red", 35.0),
        ("downgraded", "yellow", 26.0),
        ("cleared", "normal", 25.0),
        ("opened", "yellow", 18.0),
        ("escalated", "red", 10.0),
        ("downgraded", "yellow", 18.0),
        ("cleared", "normal", 19.0),
    ]
    assert {c["direction"] for c in changes} == {"outside"}
    assert changes[2]["peak_value"] == 36.0


def test_explicit_clearing_bounds_replace_the_hysteresis():
    ev = evaluator(levels={"yellow": 45, "red": 70}, hysteresis=0, clear={"red": 60, "yellow": 44})
    levels, changes = ev.evaluate(values("f", [71, 61, 59, 44, 43.9]), now=NOW)
    assert levels["level"].to_list() == ["red", "red", "yellow", "yellow", "normal"]
    assert [c["bound"] for c in changes] == [70.0, 45.0, 44.0]


# -- rate of change --------------------------------------------------------------------


def test_a_change_rule_judges_the_rise_from_the_previous_adjacent_window():
    ev = evaluator(measure="change", levels={"yellow": 5, "red": 10}, hysteresis=0)
    levels, changes = ev.evaluate(values("f", [20, 24, 35, 36, 36]), now=NOW)
    assert levels["level"].to_list() == ["normal", "normal", "red", "normal", "normal"]
    assert [(c["state"], c["value"], c["measure"]) for c in changes] == [
        ("opened", 11.0, "change"),
        ("cleared", 1.0, "change"),
    ]
    # Across calls the previous window is remembered; after a gap nothing is judged.
    levels, changes = ev.evaluate(values("f", [50], start=5), now=NOW)
    assert brief(changes) == [("opened", "red")]
    levels, changes = ev.evaluate(values("f", [99], start=7), now=NOW)  # window 6 missing
    assert levels["level"].to_list() == ["red"]  # not judged: the alert stays as it was
    assert changes == []


def test_a_falling_change_rule():
    ev = evaluator(measure="change", direction="below", levels={"red": -15})
    levels, _ = ev.evaluate(values("seg", [60, 50, 30, 31]), now=NOW)
    assert levels["level"].to_list() == ["normal", "normal", "red", "normal"]


# -- for and clear_for as event time ---------------------------------------------------


def test_for_as_a_duration_opens_once_the_breach_has_lasted_that_long():
    ev = evaluator(**{"for": "3m"})
    _, changes = ev.evaluate(values("f", [30, 80, 80, 80, 80]), now=NOW)
    assert brief(changes) == [("opened", "red")]
    assert changes[0]["first_ts"] == at(1)
    assert changes[0]["event_ts"] == at(4)  # windows 1..3 cover 3 minutes


def test_clear_for_as_a_duration():
    ev = evaluator(clear_for="2m")
    _, changes = ev.evaluate(values("f", [80, 30, 80, 30, 30, 30]), now=NOW)
    assert brief(changes) == [("opened", "red"), ("cleared", "normal")]
    assert changes[1]["event_ts"] == at(5)


# -- no data ---------------------------------------------------------------------------


def test_no_data_clear_ends_an_open_alert_once_the_series_is_silent_long_enough():
    ev = evaluator(no_data={"after": "10m", "action": "clear"})
    _, changes = ev.evaluate(values("f", [80, 80]), now=NOW, watermark=at(2))
    assert brief(changes) == [("opened", "red")]
    _, changes = ev.evaluate(values("g", [10], start=5), now=NOW, watermark=at(11))
    assert changes == []  # silent for 9 minutes
    _, changes = ev.evaluate(values("g", [10], start=6), now=NOW, watermark=at(12))
    assert [(c["state"], c["measure"], c["bound"], c["event_ts"]) for c in changes] == [
        ("cleared", "no_data", None, at(12))
    ]
    assert ev.open_alerts == 0


def test_no_data_alert_raises_on_silence_once_and_clears_when_values_return():
    ev = evaluator(no_data={"after": "5m", "action": "alert", "severity": "orange"})
    ev.evaluate(values("gauge", [10, 11]), now=NOW, watermark=at(2))
    _, changes = ev.evaluate(values("other", [10], start=3), now=NOW, watermark=at(6))
    assert changes == []
    _, changes = ev.evaluate(values("other", [10], start=6), now=NOW, watermark=at(7))
    assert [(c["entity_id"], c["state"], c["severity"], c["measure"]) for c in changes] == [
        ("gauge", "opened", "orange", "no_data")
    ]
    silent = changes[0]
    assert (silent["first_ts"], silent["event_ts"], silent["value"]) == (at(2), at(7), 11.0)
    _, changes = ev.evaluate(values("other", [10] * 23, start=7), now=NOW, watermark=at(30))
    assert changes == []  # said once, not at every batch
    _, changes = ev.evaluate(values("gauge", [12], start=30), now=NOW, watermark=at(31))
    assert [(c["state"], c["alert_id"]) for c in changes] == [("cleared", silent["alert_id"])]


def test_no_data_alert_escalates_an_alert_already_open_below_its_severity():
    ev = evaluator(
        levels={"yellow": 45, "red": 70},
        no_data={"after": "5m", "action": "alert", "severity": "red"},
    )
    _, changes = ev.evaluate(values("f", [50]), now=NOW, watermark=at(1))
    _, more = ev.evaluate(values("x", [0], start=6), now=NOW, watermark=at(7))
    assert brief(changes + more) == [("opened", "yellow"), ("escalated", "red")]
    assert more[0]["alert_id"] == changes[0]["alert_id"]


def test_keep_and_no_policy_leave_silent_alerts_alone():
    for policy in ({"after": "1m", "action": "keep"}, None):
        ev = evaluator(no_data=policy)
        ev.evaluate(values("f", [80]), now=NOW, watermark=at(1))
        _, changes = ev.evaluate(values("x", [0], start=500), now=NOW, watermark=at(600))
        assert changes == []
        assert ev.open_alerts == 1


def test_no_data_results_do_not_depend_on_how_often_the_watermark_is_reported():
    def run(marks):
        ev = evaluator(no_data={"after": "5m", "action": "alert", "severity": "orange"})
        ev.evaluate(values("gauge", [10]), now=NOW, watermark=at(1))
        out = []
        for m in marks:
            out += ev.evaluate(values("gauge", []), now=NOW, watermark=at(m))[1]
        return out

    once = run([40])
    many = run(range(2, 41))
    assert once == many
    assert brief(once) == [("opened", "orange")]


@pytest.mark.parametrize("after", [timedelta(minutes=3), timedelta(hours=2)])
def test_silence_is_measured_from_the_end_of_the_last_window(after):
    ev = evaluator(
        no_data={"after": after, "action": "alert", "severity": "blue"},
        levels={"blue": 1, "red": 70},
    )
    ev.evaluate(values("f", [0]), now=NOW, watermark=at(1))
    end = T0 + MIN
    _, early = ev.evaluate(values("f", []), now=NOW, watermark=end + after - MIN)
    _, due = ev.evaluate(values("f", []), now=NOW, watermark=end + after)
    assert early == []
    assert [c["event_ts"] for c in due] == [end + after]
