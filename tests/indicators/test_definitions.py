"""The indicator catalogue: the default one loads, bad ones say exactly what is wrong.

Each ``fixtures/*.bad.yaml`` carries its expected problems in comment lines::

    # expect: <line> | <key> | <fragment> | ...

one line per problem. The error must hold exactly that many problems, and for each
one a problem that reads ``<file>:<line>: <key>`` and contains every fragment.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from cityvitals.yamlconf import ConfigError
from indicators.definitions import DEFAULT_CATALOG, LIFECYCLE, IndicatorDef, load_catalog
from schemas.families import EVENT_CLASSES, INPUT_FAMILIES
from tests.config_fixtures import assert_problems_match, expectations

FIXTURES = Path(__file__).with_name("fixtures")
BAD = sorted(FIXTURES.glob("*.bad.yaml"))

REQUIRED_IDS = {
    "parking.occupancy_rate",
    "traffic.segment_travel_time",
    "fire.temperature",
    "fire.smoke_alarm",
    "device.online_rate",
    "crowd.density_ratio",
    "flood.water_level",
    "workorder.overdue",
}


def base_def(**changes) -> dict:
    d = {
        "id": "fire.temperature",
        "name_zh": "室内温度",
        "name_en": "Flat temperature",
        "sector": "fire",
        "unit": "°C",
        "family": "reading",
        "where": {"metric": "temperature"},
        "entity": {"type": "flat", "by": ["site_id"]},
        "window": "1m",
        "aggregation": "max",
        "field": "value",
        "description": "Hottest temperature reading in the flat.",
    }
    d.update(changes)
    return d


def test_default_catalogue_loads_with_the_core_indicators():
    cat = load_catalog()
    assert REQUIRED_IDS <= set(cat.ids)
    assert len(cat.ids) == len(set(cat.ids))


#: The sectors of DOMAIN.md, each with its indicators.
SECTORS = {
    "parking",
    "traffic",
    "fire",
    "sensing",
    "crowd",
    "flood",
    "road_collapse",
    "infrastructure",
    "workorder",
    "service",
}


def test_default_catalogue_covers_every_domain():
    cat = load_catalog()
    assert len(cat.ids) >= 44
    assert {d.sector for d in cat.indicators} == SECTORS
    assert {"ratio", *LIFECYCLE} <= {d.aggregation for d in cat.indicators}
    assert {
        "workorder.closure_rate",
        "workorder.return_rate",
        "workorder.on_time_rate",
        "workorder.open",
        "workorder.arrival_time",
        "device.online_rate_district",
        "device.online_rate_all",
        "flood.rainfall_1h",
        "collapse.road_vibration_p95",
        "parking.gate_exit_entry_ratio",
    } <= set(cat.ids)
    for cls in EVENT_CLASSES:
        for q in ("p50", "p90"):
            d = cat[f"workorder.dispatch_delay_{q}.{cls}"]
            assert d.aggregation == f"dispatch_delay_{q}"
            assert d.where == {"event_class": cls}
            assert "event_class" in d.entity.by


def test_default_catalogue_columns_exist_in_their_family():
    for d in load_catalog().indicators:
        columns = set(INPUT_FAMILIES[d.family].names)
        used = {*d.where, *d.entity.by, d.field, *d.numerator, *d.denominator}
        assert used <= columns, d.id
        assert d.window_us == int(d.window.total_seconds()) * 1_000_000
        assert d.window_us >= 1_000_000


def test_default_catalogue_details_users_rely_on():
    cat = load_catalog(DEFAULT_CATALOG)
    assert cat.workorders.deadlines["small"] == timedelta(minutes=30)
    assert cat.workorders.deadlines["thorny"] == timedelta(days=10)
    assert cat.devices.allowance_us["smoke_detector"] == 3 * 60_000_000
    assert cat["device.online_rate"].aggregation == "online_rate"
    assert cat["device.online_rate"].entity.by == ["device_type", "grid_id"]
    assert cat["parking.occupancy_rate"].divide_by == "capacity"
    assert cat["fire.temperature"].window_us == 60_000_000
    with pytest.raises(KeyError):
        cat["no.such_indicator"]


def test_every_fixture_declares_its_expectations():
    assert len(BAD) >= 7
    for path in BAD:
        assert expectations(path), path.name


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_catalogue_lists_every_problem_with_file_line_and_key(path):
    with pytest.raises(ConfigError) as info:
        load_catalog(path)
    assert_problems_match(info.value, path)


def test_unreadable_file_is_a_config_error(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_catalog(missing)


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("indicators:\n  - id: a.b\n    window: [1m\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_catalog(path)
    assert "broken.yaml:" in str(info.value)
    assert "not valid YAML" in str(info.value)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"window": "1500ms"}, "whole seconds"),
        ({"window": "500ms"}, "whole seconds"),
        ({"window": "0s"}, "positive"),
        ({"id": "Fire temperature"}, "pattern"),
        ({"where": {"colour": "red"}}, "colour"),
        ({"divide_by": "capacityy"}, "capacityy"),
        ({"entity": {"type": "flat", "by": []}}, "entity.by"),
        ({"where": {"metric": "temprature"}}, "among"),
        ({"where": {"value": "1"}}, "string column"),
        ({"numerator": {"metric": "temperature"}}, "only with 'ratio'"),
        ({"params": {"deadlines": {"small": "30m"}}}, "params"),
        ({"aggregation": "on_time_rate"}, "family 'workorder'"),
    ],
)
def test_model_rejects_bad_definitions(changes, fragment):
    with pytest.raises(ValueError, match=fragment):
        IndicatorDef.model_validate(base_def(**changes))


@pytest.mark.parametrize("window", ["30s", "5m", "1h", "1d", "1h30m"])
def test_model_accepts_durations(window):
    d = IndicatorDef.model_validate(base_def(window=window))
    assert d.window_us % 1_000_000 == 0
    assert d.window_us > 0


def test_a_definition_pickled_before_window_offsets_restores_with_utc_windows():
    """Snapshots of an older version hold definitions without an offset: their windows were
    aligned in UTC, and they restore so."""
    import copy
    import pickle

    d = load_catalog()["service.satisfaction_rate"]
    assert pickle.loads(pickle.dumps(d)).window_offset_us == 8 * 3_600_000_000
    old = copy.copy(d)
    object.__setattr__(old, "__pydantic_private__", None)  # as the older version pickled it
    restored = pickle.loads(pickle.dumps(old))
    assert restored.window_offset_us == 0
    assert restored.model_dump() == d.model_dump()
