"""The evaluator: graded levels and the life of every alert."""

from __future__ import annotations

import math
import random
from datetime import timedelta

import polars as pl
import pytest

from schemas.families import BREACHES
from tests.thresholds.series import NOW, at, brief, evaluator, values
from thresholds.evaluate import Evaluator
from thresholds.rules import Rule, RuleSet

# -- flapping, for, escalation ---------------------------------------------------------


def test_value_hovering_on_a_bound_opens_once_and_does_not_flap():
    ev = evaluator(levels={"red": 70})
    hovering = [69, 71, 69.5, 70.5, 68, 71, 67.5, 70, 67.0, 69.9]
    levels, changes = ev.evaluate(values("f1", hovering), now=NOW)
    assert brief(changes) == [("opened", "red")]
    assert changes[0]["first_ts"] == at(1)
    assert levels["level"].to_list() == ["normal"] + ["red"] * 9
    assert ev.open_alerts == 1

    _, changes = ev.evaluate(values("f1", [66.9], start=10), now=NOW)
    assert brief(changes) == [("cleared", "normal")]
    assert changes[0]["bound"] == 67.0


def test_hovering_between_two_levels_does_not_flap():
    ev = evaluator()
    _, changes = ev.evaluate(values("f1", [71, 69, 70.2, 67.5, 69.9, 68]), now=NOW)
    assert brief(changes) == [("opened", "red")]


def test_for_delays_opening_until_the_nth_breaching_window():
    ev = evaluator(**{"for": 3})
    levels, changes = ev.evaluate(values("f1", [30, 80, 81]), now=NOW)
    assert changes == []
    assert levels["level"].to_list() == ["normal", "normal", "normal"]
    assert ev.open_alerts == 0

    levels, changes = ev.evaluate(values("f1", [60, 58], start=3), now=NOW)
    assert brief(changes) == [("opened", "orange")]
    opened = changes[0]
    assert opened["first_ts"] == at(1)  # the first breaching window, not the third
    assert opened["event_ts"] == at(4)  # end of the third breaching window
    assert opened["sequence"] == 0
    assert opened["peak_value"] == 60.0
    assert levels["level"].to_list() == ["orange", "orange"]
    assert ev.open_alerts == 1


def test_for_counts_consecutive_windows_only():
    ev = evaluator(**{"for": 3})
    _, changes = ev.evaluate(values("f1", [80, 81, 30, 80, 81, 30, 50, 50, 50]), now=NOW)
    assert brief(changes) == [("opened", "yellow")]
    assert changes[0]["first_ts"] == at(6)


def test_escalation_and_downgrade_carry_previous_severity_and_sequence():
    ev = evaluator()
    _, changes = ev.evaluate(values("f1", [30, 50, 60, 75, 60, 50, 75, 45, 30]), now=NOW)
    assert [
        (c["sequence"], c["state"], c["previous_severity"], c["severity"], c["bound"])
        for c in changes
    ] == [
        (0, "opened", "normal", "yellow", 45.0),
        (1, "escalated", "yellow", "orange", 57.0),
        (2, "escalated", "orange", "red", 70.0),
        (3, "downgraded", "red", "orange", 57.0),
        (4, "downgraded", "orange", "yellow", 45.0),
        (5, "escalated", "yellow", "red", 70.0),
        (6, "downgraded", "red", "yellow", 45.0),  # 45 keeps neither red nor orange
        (7, "cleared", "yellow", "normal", 42.0),  # back past yellow by the hysteresis
    ]
    assert len({c["alert_id"] for c in changes}) == 1
    assert [c["peak_value"] for c in changes] == [50, 60, 75, 75, 75, 75, 75, 75]
    assert [c["event_ts"] for c in changes] == [at(i) for i in range(2, 10)]
    assert {c["first_ts"] for c in changes} == {at(1)}
    assert {c["emitted_at"] for c in changes} == {NOW}


def test_records_have_the_breaches_schema_columns():
    _, changes = evaluator().evaluate(values("f1", [50, 30]), now=NOW)
    assert [set(c) for c in changes] == [set(BREACHES.names)] * 2
    # And they form a frame of that schema.
    frame = pl.DataFrame(changes, schema=pl.DataFrame(BREACHES.empty_table()).schema)
    assert frame.height == 2
    assert frame["indicator_id"].to_list() == ["t", "t"]
    assert frame["direction"].to_list() == ["above", "above"]


def test_downgrade_waits_for_the_hysteresis():
    ev = evaluator()
    _, changes = ev.evaluate(values("f1", [75, 68, 67, 66.9]), now=NOW)
    assert brief(changes) == [("opened", "red"), ("downgraded", "orange")]
    assert changes[1]["value"] == 66.9


def test_clear_for_needs_consecutive_calm_windows():
    ev = evaluator(clear_for=2)
    levels, changes = ev.evaluate(values("f1", [80, 30, 80, 30, 30, 30]), now=NOW)
    assert brief(changes) == [("opened", "red"), ("cleared", "normal")]
    assert changes[1]["event_ts"] == at(5)  # the second calm window in a row
    assert changes[1]["sequence"] == 1
    # While clearing the alert is still in force.
    assert levels["level"].to_list() == ["red", "red", "red", "red", "normal", "normal"]


def test_min_samples_windows_are_not_judged():
    ev = evaluator(min_samples=5)
    levels, changes = ev.evaluate(values("f1", [99, 99], samples=[1, 4]), now=NOW)
    assert changes == []
    assert levels["level"].to_list() == ["normal", "normal"]
    assert ev.open_alerts == 0

    levels, changes = ev.evaluate(
        values("f1", [80, 10, 10, 10], start=2, samples=[5, 1, 4, 5]), now=NOW
    )
    # The thin windows neither clear the alert nor count as evidence.
    assert brief(changes) == [("opened", "red"), ("cleared", "normal")]
    assert changes[1]["event_ts"] == at(6)
    assert changes[1]["evidence"] == [80.0, 10.0]
    assert levels["level"].to_list() == ["red", "red", "red", "normal"]


def test_direction_below():
    ev = evaluator(
        id="slow",
        direction="below",
        levels={"blue": 25, "yellow": 20, "red": 5},
        hysteresis=2,
    )
    levels, changes = ev.evaluate(values("s1", [30, 25, 19, 21, 23, 26, 4, 7, 26, 28]), now=NOW)
    assert [(c["state"], c["previous_severity"], c["severity"], c["bound"]) for c in changes] == [
        ("opened", "normal", "blue", 25.0),
        ("escalated", "blue", "yellow", 20.0),
        ("downgraded", "yellow", "blue", 25.0),  # 23 > 20 + 2
        ("escalated", "blue", "red", 5.0),
        ("downgraded", "red", "blue", 25.0),  # 26 keeps neither red nor yellow
        ("cleared", "blue", "normal", 27.0),  # back past blue by the hysteresis
    ]
    assert [c["peak_value"] for c in changes] == [25, 19, 19, 4, 4, 4]
    assert levels["level"].to_list() == [
        "normal",
        "blue",
        "yellow",
        "yellow",  # 21 <= 20 + 2 keeps yellow
        "blue",
        "blue",  # 26 <= 25 + 2 keeps blue
        "red",
        "red",  # 7 <= 5 + 2 keeps red
        "blue",
        "normal",
    ]
    assert {c["direction"] for c in changes} == {"below"}


# -- identity, evidence, batching, memory --------------------------------------------------


def test_alert_id_is_stable_on_replay_and_differs_per_entity():
    vs = [30, 50, 80, 30]
    _, first = evaluator().evaluate(values("f1", vs), now=NOW)
    _, replay = evaluator().evaluate(values("f1", vs), now=NOW + timedelta(hours=5))
    _, other = evaluator().evaluate(values("f2", vs), now=NOW)
    _, shifted = evaluator().evaluate(values("f1", vs, start=7), now=NOW)
    assert [c["alert_id"] for c in first] == [c["alert_id"] for c in replay]
    assert len({c["alert_id"] for c in first}) == 1
    assert first[0]["alert_id"] != other[0]["alert_id"]
    assert first[0]["alert_id"] != shifted[0]["alert_id"]
    drop = {"emitted_at"}
    assert [{k: v for k, v in c.items() if k not in drop} for c in first] == [
        {k: v for k, v in c.items() if k not in drop} for c in replay
    ]


def test_a_new_breach_after_clearing_is_a_new_alert():
    ev = evaluator()
    _, changes = ev.evaluate(values("f1", [80, 30, 80, 30]), now=NOW)
    assert brief(changes) == [("opened", "red"), ("cleared", "normal")] * 2
    assert changes[0]["alert_id"] != changes[2]["alert_id"]
    assert [c["sequence"] for c in changes] == [0, 1, 0, 1]
    assert changes[2]["first_ts"] == at(2)


@pytest.mark.parametrize("keep", [1, 3])
def test_evidence_holds_the_latest_values_oldest_first(keep):
    ev = evaluator(evidence=keep)
    vs = [30, 50, 60, 75, 80, 30]
    _, changes = ev.evaluate(values("f1", vs), now=NOW)
    assert brief(changes) == [
        ("opened", "yellow"),
        ("escalated", "orange"),
        ("escalated", "red"),
        ("cleared", "normal"),
    ]
    upto = {0: 2, 1: 3, 2: 4, 3: 6}  # values seen when each record was made
    for i, change in enumerate(changes):
        seen = [float(v) for v in vs[1 : upto[i]]]  # 30 came before the series existed
        assert change["evidence"] == seen[-keep:]


def test_values_split_across_calls_give_the_same_records():
    rng = random.Random(11)
    series = {
        "f1": [30, 50, 60, 75, 68, 60, 50, 30, 30, 80, 80, 30, 30, 30],
        "f2": [80, 81, 82, 30, 30, 46, 47, 58, 71, 72, 40, 20, 10, 10],
        "f3": [10] * 14,
    }
    n = 14
    allvals = pl.concat([values(e, vs) for e, vs in series.items()])

    def run(chunks):
        ev = evaluator(clear_for=2, **{"for": 2})
        levels, changes = [], []
        for chunk in chunks:
            lv, ch = ev.evaluate(chunk, now=NOW)
            levels.append(lv)
            changes.extend(ch)
        return pl.concat(levels), changes, ev.open_alerts

    one_levels, one_changes, one_open = run([allvals])
    cuts = sorted(rng.sample(range(1, n), k=5))
    chunks = [
        allvals.filter(pl.col("window_start").is_between(at(a), at(b), closed="left"))
        for a, b in zip([0, *cuts], [*cuts, n], strict=True)
    ]
    many_levels, many_changes, many_open = run(chunks)

    def key(c):
        return (c["alert_id"], c["sequence"])

    assert one_changes
    assert sorted(many_changes, key=key) == sorted(one_changes, key=key)
    sort = ["entity_id", "window_start"]
    assert many_levels.sort(sort).equals(one_levels.sort(sort))
    assert many_open == one_open


def test_levels_line_up_with_input_rows_in_any_order():
    ev = evaluator()
    frame = pl.concat(
        [
            values("f2", [30], start=1),
            values("f1", [80], start=0),
            values("f2", [80], start=0),
            values("f1", [50], start=1),
        ]
    )
    levels, _ = ev.evaluate(frame, now=NOW)
    assert levels.drop("level").equals(frame)
    # f2: 80 then 30 (cleared); f1: 80 then 50 (back to yellow).
    assert levels["level"].to_list() == ["normal", "red", "red", "yellow"]


def test_state_is_forgotten_after_clear():
    ev = evaluator()
    assert ev.open_alerts == 0
    ev.evaluate(pl.concat([values("f1", [80, 90]), values("f2", [50])]), now=NOW)
    assert ev.open_alerts == 2
    ev.evaluate(values("f1", [30], start=2), now=NOW)
    assert ev.open_alerts == 1
    ev.evaluate(values("f2", [30], start=1), now=NOW)
    assert ev.open_alerts == 0
    assert not ev._series  # nothing kept for calm series


def test_quiet_series_keep_no_state():
    ev = evaluator(**{"for": 2})
    ev.evaluate(values("f1", [10, 20, 30]), now=NOW)
    assert not ev._series
    ev.evaluate(values("f1", [80], start=3), now=NOW)  # pending: remembered, not open
    assert ev.open_alerts == 0
    assert len(ev._series) == 1
    ev.evaluate(values("f1", [10], start=4), now=NOW)
    assert not ev._series


def test_indicator_without_rule_is_normal_and_silent():
    ev = evaluator()
    levels, changes = ev.evaluate(values("f1", [999], indicator="other"), now=NOW)
    assert levels["level"].to_list() == ["normal"]
    assert changes == []


def test_several_rules_on_one_indicator_take_the_gravest_level():
    rules = RuleSet(
        rules=[
            Rule(id="warm", indicator="t", direction="above", levels={"yellow": 45}),
            Rule(id="fire", indicator="t", direction="above", levels={"red": 90}),
        ]
    )
    ev = Evaluator(rules)
    levels, changes = ev.evaluate(values("f1", [30, 50, 95, 50, 30]), now=NOW)
    assert levels["level"].to_list() == ["normal", "yellow", "red", "yellow", "normal"]
    by_rule = sorted((c["rule_id"], c["state"], c["event_ts"]) for c in changes)
    assert by_rule == [
        ("fire", "cleared", at(4)),
        ("fire", "opened", at(3)),
        ("warm", "cleared", at(5)),
        ("warm", "opened", at(2)),
    ]


def test_empty_input():
    levels, changes = evaluator().evaluate(values("f1", []), now=NOW)
    assert levels.height == 0
    assert "level" in levels.columns
    assert changes == []


@pytest.mark.parametrize(
    ("direction", "peak", "value", "worse"),
    [
        ("above", 80.0, float("nan"), "nan"),  # NaN is above every number: the worst above
        ("above", float("nan"), 80.0, "nan"),
        ("below", 5.0, float("nan"), 5.0),  # and never the worse below
        ("below", float("nan"), 5.0, 5.0),
        ("above", 80.0, 90.0, 90.0),
        ("below", 5.0, 3.0, 3.0),
    ],
)
def test_an_alerts_peak_is_its_worst_value_nan_above_every_number(direction, peak, value, worse):
    from thresholds.evaluate import _worse

    levels = {"yellow": 45, "red": 70} if direction == "above" else {"blue": 10, "red": 2}
    rule = Rule(id="r", indicator="i", direction=direction, levels=levels)
    got = _worse(rule, peak, value)
    assert math.isnan(got) if worse == "nan" else got == worse, got
