"""Risk-point files: the default one loads and covers the scenario; bad files explain why.

Each ``fixtures/risk/*.bad.yaml`` is checked against the default catalogue and
carries its expected problems in ``# expect: <line> | <key> | <fragment> | ...``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cityvitals.simulate import Scenario, risk_expectations
from cityvitals.yamlconf import ConfigError
from indicators.definitions import load_catalog
from schemas.families import RISK_CATEGORIES
from tests.config_fixtures import assert_problems_match, check_command, expectations
from thresholds.risk_points import DEFAULT_RISK_POINTS, load_risk_points

FIXTURES = Path(__file__).with_name("fixtures") / "risk"
BAD = sorted(FIXTURES.glob("*.bad.yaml"))


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def test_default_file_loads_against_the_catalogue(catalog):
    points = load_risk_points(catalog=catalog)
    assert {p.category for p in points.points} <= set(RISK_CATEGORIES)
    assert {"collapse", "slope", "high_rise"} <= set(points.models)
    for p in points.points:
        assert p.model in points.models
        for f in p.factors:
            assert f.indicator in catalog.ids, (p.id, f.name)


def test_scenario_ground_truth_names_the_default_points(catalog):
    points = load_risk_points(catalog=catalog)
    expected = {e.risk_point_id: e for e in risk_expectations(Scenario())}
    assert set(expected) == {p.id for p in points.points}
    for p in points.points:
        assert p.location.grid_id == expected[p.id].grid_id
    categories = {points.point(i).category for i, e in expected.items() if e.rises}
    assert categories == {"road_section", "slope", "high_rise"}


def test_there_are_bad_fixtures():
    assert len(BAD) >= 3
    for path in BAD:
        assert expectations(path), path


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_file_reports_each_problem_at_its_line_and_key(path, catalog):
    with pytest.raises(ConfigError) as exc:
        load_risk_points(path, catalog)
    assert_problems_match(exc.value, path)


def test_cli_check_validates_the_risk_point_file():
    ok = check_command("--risk-points", str(DEFAULT_RISK_POINTS))
    assert ok.returncode == 0, ok.stderr
    assert "risk points" in ok.stdout
    bad = FIXTURES / "unknown_indicator.bad.yaml"
    failed = check_command("--risk-points", str(bad))
    assert failed.returncode != 0
    assert f"{bad}:17: points.0.factors.1.indicator" in failed.stdout + failed.stderr
