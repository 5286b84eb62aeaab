"""The evaluator's grading against the rules' own expressions, and its snapshots.

The evaluator grades on NumPy arrays and keeps the bands in force by entity or
by minute; these tests hold it to :meth:`Rule.variant_of` and
:meth:`Rule.level_of` on random batches (NaN, null, infinite values, bounds
hit exactly, rows in any order, schedules across midnight and a change of
daylight saving time, windows not on a minute), and check that a restored
evaluator continues exactly like an uninterrupted one.
"""

from __future__ import annotations

import pickle
import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from tests.thresholds.series import NOW, at, values
from thresholds.evaluate import Evaluator
from thresholds.rules import Rule, RuleSet

NIGHT = {"name": "night", "from": "22:00", "to": "06:00", "levels": {"yellow": 20, "red": 40}}
WEEKEND = {"name": "weekend", "days": ["sat", "sun"], "from": "09:00", "to": "18:00"}
RULES = [
    {"id": "plain", "indicator": "a", "direction": "above", "levels": {"yellow": 45, "red": 70}},
    {"id": "low", "indicator": "b", "direction": "below", "levels": {"blue": 10, "red": 2}},
    {
        "id": "band",
        "indicator": "c",
        "direction": "outside",
        "levels": {"yellow": [10, 20], "red": [0, 30]},
        "min_samples": 3,
    },
    {
        "id": "by_entity",
        "indicator": "d",
        "direction": "above",
        "levels": {"red": 70},
        "overrides": [
            {"entities": ["north-*"], "levels": {"yellow": 30, "red": 90}},
            {"entities": ["*-7"], "levels": {"blue": 5}},
        ],
    },
    {
        "id": "by_time",
        "indicator": "e",
        "direction": "above",
        "levels": {"red": 70},
        "schedules": [NIGHT, {**WEEKEND, "levels": {"orange": 50}}],
    },
    {
        "id": "by_both",
        "indicator": "f",
        "direction": "above",
        "levels": {"red": 70},
        "schedules": [NIGHT],
        "overrides": [{"entities": ["north-*"], "schedule": "night", "levels": {"blue": 1}}],
    },
]
# Sunday 2026-03-29 01:00 UTC: Europe/Paris moves from UTC+1 to UTC+2.
START = datetime(2026, 3, 27, 12, tzinfo=UTC)


def ruleset(timezone: str) -> RuleSet:
    return RuleSet(timezone=timezone, rules=[Rule.model_validate(r) for r in RULES])


def batch(rng: random.Random, call: int, n: int) -> pl.DataFrame:
    """``n`` rows, one per (indicator, entity): new entities in each call."""
    specials = [float("nan"), float("inf"), float("-inf"), None, 0.0, 10.0, 20.0, 30.0, 70.0]
    rows = []
    for i in range(n):
        minutes = rng.randrange(5 * 24 * 60)
        start = START + timedelta(minutes=minutes)
        if rng.random() < 0.1:  # a window that does not start on a minute
            start += timedelta(seconds=rng.randrange(1, 60))
        value = rng.choice(specials) if rng.random() < 0.3 else rng.uniform(-10, 100)
        rows.append(
            {
                "indicator_id": rng.choice("abcdefx"),
                "sector": "s",
                "entity_type": "t",
                "entity_id": f"{rng.choice(['north', 'south'])}-{call}-{i}-{rng.randrange(9)}",
                "window_start": start,
                "window_end": start + timedelta(minutes=1),
                "value": value,
                "samples": rng.choice([None, 1, 2, 3, 5, 10, 10, 10]),
                "unit": "u",
            }
        )
    if rng.random() < 0.5:  # rows grouped by indicator, as the window store gives them
        rows.sort(key=lambda r: r["indicator_id"])
    return pl.DataFrame(rows, schema_overrides={"window_start": pl.Datetime("us", "UTC")})


def expected(rules: RuleSet, frame: pl.DataFrame) -> list[str]:
    """Each row's raw level by the rules' own grading of one value at a time, under the bands
    :meth:`Rule.variant_of` puts its row in (one rule per indicator)."""
    rule_of = {rule.indicator: rule for rule in rules.rules}
    variants = {  # a rule with one set of bands gives a literal: broadcast it to the rows
        rule.id: frame.with_columns(
            _v=rule.variant_of(pl.col("entity_id"), pl.col("window_start"), rules.timezone)
        )["_v"].to_list()
        for rule in rules.rules
    }
    out = []
    for i, row in enumerate(frame.iter_rows(named=True)):
        rule = rule_of.get(row["indicator_id"])
        judged = rule is not None and row["value"] is not None
        if not judged or row["samples"] is None or row["samples"] < rule.min_samples:
            out.append("normal")
            continue
        out.append(rule.level_of(row["value"], variants[rule.id][i]))
    return out


@pytest.mark.parametrize("timezone", ["UTC", "Europe/Paris", "Asia/Shanghai"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_levels_are_the_rules_own_levels(timezone, seed):
    # Every entity is new and every rule opens at once without hysteresis: the level
    # of each row is its raw level under the bands in force.
    rng = random.Random(seed)
    rules = ruleset(timezone)
    ev = Evaluator(rules)
    for call in range(6):  # the bands kept by entity and by minute serve later calls
        frame = batch(rng, call, rng.choice([1, 40, 400]))
        levels, _ = ev.evaluate(frame, now=NOW)
        assert levels.drop("level").equals(frame)
        assert levels["level"].to_list() == expected(rules, frame)


def test_a_change_rule_judges_windows_given_in_any_row_order_after_a_gap():
    rule = Rule(id="rise", indicator="t", measure="change", direction="above", levels={"red": 5})
    rng = random.Random(4)
    frames = [values("f1", [0, 1, 2, 3, 4, 5, 20, 27, 28, 29, 30, 31])]
    for e in ("f2", "f3"):  # random rises, and null values
        total, vs = 0.0, []
        for _ in range(12):
            step = rng.choice([0.0, 1.0, 6.0, None])
            total += step or 0.0
            vs.append(None if step is None else total)
        frames.append(values(e, [0] * 12).with_columns(value=pl.Series(vs, dtype=pl.Float64)))
    frame = pl.concat(frames).filter(pl.col("window_start") != at(5))  # a gap
    once = Evaluator(RuleSet(rules=[rule])).evaluate(frame, now=NOW)
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=5)
    levels, changes = Evaluator(RuleSet(rules=[rule])).evaluate(shuffled, now=NOW)
    assert changes == once[1]
    key = ["entity_id", "window_start"]
    assert levels.sort(key).equals(once[0].sort(key))
    # f1: 4 -> 20 spans the gap (not judged); 20 -> 27 is the first rise judged
    assert next(c["event_ts"] for c in changes if c["entity_id"] == "f1") == at(8)
    assert {c["entity_id"] for c in changes} == {"f1", "f2", "f3"}


def test_a_restored_evaluator_continues_exactly_like_an_uninterrupted_one():
    rng = random.Random(6)
    rules = ruleset("Europe/Paris")
    spec = {"direction": "above", "levels": {"yellow": 30, "red": 60}}
    extra = [
        Rule.model_validate({**spec, "id": "rise", "indicator": "a", "measure": "change"}),
        Rule.model_validate(
            {
                **spec,
                "levels": {"red": 1000},  # raised by silence only
                "id": "quiet",
                "indicator": "b",
                "no_data": {"after": "5m", "action": "alert", "severity": "red"},
            }
        ),
    ]
    rules = RuleSet(timezone=rules.timezone, rules=[*rules.rules, *extra])
    # Each entity has a value of each indicator in most windows: some go silent a while.
    keys = [(i, f"{side}-{n}") for i in "abcdef" for side in ("north", "south") for n in range(4)]
    frames = []
    for w in range(20):
        start = START + timedelta(minutes=w)
        here = [k for k in keys if rng.random() < 0.8 and (w < 9 or k != ("b", "north-0"))]
        frames.append(
            pl.DataFrame(
                {
                    "indicator_id": [i for i, _ in here],
                    "sector": "s",
                    "entity_type": "t",
                    "entity_id": [e for _, e in here],
                    "window_start": start,
                    "window_end": start + timedelta(minutes=1),
                    "value": [rng.uniform(0, 100) for _ in here],
                    "samples": 10,
                    "unit": "u",
                }
            )
        )

    def run(ev: Evaluator, part: list[pl.DataFrame]):
        out = []
        for f in part:
            end = f["window_end"].max()
            out.append(ev.evaluate(f, now=NOW, watermark=end + timedelta(minutes=3)))
        return out

    whole = run(Evaluator(rules), frames)
    ev = Evaluator(rules)
    first = run(ev, frames[:10])
    snapshot = pickle.dumps(ev)
    assert b"_by_minute" not in snapshot  # what the rules imply is rebuilt, not kept
    rest = run(pickle.loads(snapshot), frames[10:])
    assert [c for _, c in whole] == [c for _, c in first + rest]
    assert all(a.equals(b) for (a, _), (b, _) in zip(whole, first + rest, strict=True))
    quiet = [c for _, ch in rest for c in ch if c["rule_id"] == "quiet"]
    assert ("north-0", "opened") in [(c["entity_id"], c["state"]) for c in quiet]
    states = {c["state"] for _, ch in whole for c in ch}
    assert {"opened", "escalated", "cleared"} <= states
    assert {c["measure"] for _, ch in whole for c in ch} == {"value", "change", "no_data"}


def test_a_snapshot_of_the_frame_era_restores_its_last_windows():
    # Snapshots made before the last windows were columnar held each change rule's
    # last windows as a frame, and the derived tables; a restore still continues.
    rule = Rule(id="rise", indicator="t", measure="change", direction="above", levels={"red": 5})
    rules = RuleSet(rules=[rule])
    frame = pl.concat([values("f1", [1, 2, 3, 4]), values("f2", [10, 11, 12, 13])])
    later = pl.concat([values("f1", [10, 11], start=4), values("f2", [14, 30], start=4)])
    whole = Evaluator(rules)
    whole.evaluate(frame, now=NOW)
    expected = whole.evaluate(later, now=NOW)

    ev = Evaluator(rules)
    ev.evaluate(frame, now=NOW)
    state = dict(ev.__getstate__())
    last = state["_previous"]["rise"]
    entities = sorted(last.slot, key=last.slot.get)
    state["_previous"] = {
        "rise": pl.DataFrame(
            {
                "entity_id": entities,
                "window_start": pl.Series(last.start).cast(pl.Datetime("us", "UTC")),
                "window_end": pl.Series(last.end).cast(pl.Datetime("us", "UTC")),
                "value": last.value,
            }
        )
    }
    state["_exprs"] = {}  # a derived table of the time
    old = Evaluator.__new__(Evaluator)
    old.__setstate__(state)
    levels, changes = old.evaluate(later, now=NOW)
    assert changes == expected[1]
    assert levels.equals(expected[0])
    # f1 rises from its last window before the snapshot (4 -> 10)
    assert [(c["entity_id"], c["state"], c["event_ts"]) for c in changes] == [
        ("f1", "opened", at(5)),
        ("f1", "cleared", at(6)),
        ("f2", "opened", at(6)),
    ]
