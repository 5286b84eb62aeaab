"""Threshold rules: the default set loads and covers the catalogue; bad files explain why.

Each ``fixtures/*.bad.yaml`` is checked against ``fixtures/catalog.small.yaml`` and
carries its expected problems in comment lines::

    # expect: <line> | <key> | <fragment> | ...
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cityvitals.yamlconf import ConfigError
from indicators.definitions import load_catalog
from tests.config_fixtures import assert_problems_match, expectations
from thresholds.rules import DEFAULT_RULES, LEVELS, Rule, load_rules

FIXTURES = Path(__file__).with_name("fixtures")
BAD = sorted(FIXTURES.glob("*.bad.yaml"))


@pytest.fixture(scope="module")
def small_catalog():
    return load_catalog(FIXTURES / "catalog.small.yaml")


def rule(direction: str = "above", /, **changes) -> Rule:
    levels = (
        {"blue": 10.0, "yellow": 20.0, "red": 40.0}
        if direction == "above"
        else {"blue": 40.0, "yellow": 20.0, "red": 10.0}
    )
    data = {"id": "r", "indicator": "x.y", "direction": direction, "levels": levels}
    data.update(changes)
    return Rule.model_validate(data)


# -- the default rules ---------------------------------------------------------------


def test_default_rules_cover_every_indicator_of_the_catalogue():
    catalog = load_catalog()
    rules = load_rules(catalog=catalog)
    assert {r.indicator for r in rules.rules} == set(catalog.ids)
    for indicator_id in catalog.ids:
        assert rules.for_indicator(indicator_id), indicator_id
    assert len({r.id for r in rules.rules}) == len(rules.rules)


def test_default_rules_are_ordered_mild_to_grave():
    for r in load_rules(catalog=load_catalog()).rules:
        names = list(r.levels)
        assert names == [n for n in LEVELS if n in names], r.id
        if r.direction != "outside":
            bounds = list(r.levels.values())
            assert bounds == sorted(bounds, reverse=r.direction == "below"), r.id
        assert r.hysteresis >= 0


def test_default_rules_with_one_rule_removed_name_the_uncovered_indicator(tmp_path):
    data = yaml.safe_load(DEFAULT_RULES.read_text(encoding="utf-8"))
    kept = [r for r in data["rules"] if r["indicator"] != "flood.water_level"]
    assert len(kept) < len(data["rules"])
    data["rules"] = kept
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")

    with pytest.raises(ConfigError) as info:
        load_rules(path, catalog=load_catalog())
    assert len(info.value.problems) == 1
    problem = info.value.problems[0]
    assert problem.startswith(f"{path}:1: ")
    assert "flood.water_level" in problem
    # Without a catalogue there is nothing to be complete against.
    assert len(load_rules(path).rules) == len(data["rules"])


def test_rules_file_of_the_small_catalogue(small_catalog):
    rules = load_rules(FIXTURES / "rules.small.yaml", catalog=small_catalog)
    hot = rules.for_indicator("fire.temperature")[0]
    assert (hot.for_, hot.hysteresis, hot.clear_for, hot.min_samples) == (2, 3.0, 1, 1)
    slow = rules.for_indicator("traffic.segment_speed")[0]
    assert (slow.for_, slow.hysteresis, slow.clear_for, slow.min_samples) == (1, 0.0, 3, 4)


def test_every_fixture_declares_its_expectations():
    assert len(BAD) >= 7
    for path in BAD:
        assert expectations(path), path.name


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_rules_list_every_problem_with_file_line_and_key(path, small_catalog):
    with pytest.raises(ConfigError) as info:
        load_rules(path, catalog=small_catalog)
    assert_problems_match(info.value, path)


def test_levels_are_reordered_mild_to_grave_whatever_the_file_order(tmp_path, small_catalog):
    path = tmp_path / "r.yaml"
    path.write_text(
        "rules:\n"
        "  - {id: a, indicator: fire.temperature, direction: above,\n"
        "     levels: {red: 70, yellow: 45, orange: 57}}\n"
        "  - {id: b, indicator: traffic.segment_speed, direction: below, levels: {red: 5}}\n",
        encoding="utf-8",
    )
    r = load_rules(path, catalog=small_catalog).rules[0]
    assert list(r.levels) == ["yellow", "orange", "red"]
    assert r.level_of(60) == "orange"


# -- level_of and holds ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "level"),
    [
        (-1e9, "normal"),
        (9.999, "normal"),
        (10.0, "blue"),
        (10.001, "blue"),
        (19.999, "blue"),
        (20.0, "yellow"),
        (39.999, "yellow"),
        (40.0, "red"),
        (1e9, "red"),
    ],
)
def test_level_of_above_is_inclusive(value, level):
    assert rule("above").level_of(value) == level


@pytest.mark.parametrize(
    ("value", "level"),
    [
        (1e9, "normal"),
        (40.001, "normal"),
        (40.0, "blue"),
        (20.001, "blue"),
        (20.0, "yellow"),
        (10.001, "yellow"),
        (10.0, "red"),
        (-5.0, "red"),
    ],
)
def test_level_of_below_is_inclusive(value, level):
    assert rule("below").level_of(value) == level


def test_nan_is_above_every_number_one_value_at_a_time_as_in_batches():
    """The evaluator grades batches with NaN above every number (as Polars orders it): the
    one-value grading and the hysteresis that settles an open alert agree with it."""
    nan = float("nan")
    assert rule("above").level_of(nan) == "red"
    assert rule("below").level_of(nan) == "normal"
    assert rule("above").settle("yellow", nan) == "red"  # rises, as a very high value would
    assert rule("below").settle("red", nan) == "normal"  # a very high value clears a low alert


def test_level_of_skips_levels_a_rule_leaves_out():
    r = rule("above", levels={"red": 0.5})
    assert r.level_of(0.49) == "normal"
    assert r.level_of(0.5) == "red"


@pytest.mark.parametrize(
    ("level", "value", "holds"),
    [
        ("normal", -100.0, True),
        ("yellow", 20.0, True),
        ("yellow", 17.0, True),  # exactly bound - hysteresis
        ("yellow", 16.999, False),
        ("red", 37.5, True),
        ("red", 36.9, False),
        ("blue", 7.0, True),
        ("blue", 6.9, False),
    ],
)
def test_holds_above_with_hysteresis(level, value, holds):
    assert rule("above", hysteresis=3).holds(level, value) is holds


@pytest.mark.parametrize(
    ("level", "value", "holds"),
    [
        ("normal", 1e9, True),
        ("yellow", 20.0, True),
        ("yellow", 23.0, True),  # exactly bound + hysteresis
        ("yellow", 23.001, False),
        ("red", 13.0, True),
        ("red", 13.5, False),
        ("blue", 43.0, True),
        ("blue", 43.1, False),
    ],
)
def test_holds_below_with_hysteresis(level, value, holds):
    assert rule("below", hysteresis=3).holds(level, value) is holds


def test_holds_without_hysteresis_is_level_of_at_least():
    r = rule("above")
    for value in (9.9, 10.0, 19.9, 20.0, 39.9, 40.0):
        for level in r.levels:
            assert r.holds(level, value) is (value >= r.bound(level))


@pytest.mark.parametrize(
    "changes",
    [
        {"for": 0},
        {"clear_for": 0},
        {"min_samples": 0},
        {"hysteresis": -0.5},
        {"levels": {}},
        {"levels": {"purple": 3.0}},
        {"direction": "up"},
        {"levels": {"blue": 20.0, "red": 10.0}},
    ],
)
def test_rule_model_rejects(changes):
    with pytest.raises(ValueError):
        rule("above", **changes)


def test_rule_for_is_read_from_its_yaml_name():
    assert rule("above", **{"for": 4}).for_ == 4
