"""Generated JSON Schemas: no drift from the Arrow schemas, and they validate the wire."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
from jsonschema import Draft202012Validator

from schemas.families import INPUT_FAMILIES, OUTPUT_TABLES
from schemas.jsonschema import JSON_DIR, all_schemas, drift, write_all

#: Good wire examples, one per input family (as in schemas/README.md).
WIRE = {
    "reading": {
        "family": "reading",
        "ts": "2026-05-12T07:52:30.000Z",
        "device_id": "tmp-000123",
        "device_type": "temperature_sensor",
        "metric": "temperature",
        "value": 84.5,
        "site_id": "bldg-08/flat-1203",
        "grid_id": "D01-G04",
        "district_id": "D01",
    },
    "heartbeat": {
        "family": "heartbeat",
        "ts": "2026-05-12T07:50:00+08:00",
        "device_id": "cam-7",
        "device_type": "camera",
        "grid_id": "D01-G04",
        "district_id": "D01",
        "battery_pct": None,
    },
    "gate": {
        "family": "gate",
        "ts": "2026-05-12T07:40:00Z",
        "garage_id": "garage-3",
        "gate_id": "garage-3/g1",
        "direction": "out",
        "lift_ms": 850,
        "grid_id": "D01-G04",
        "district_id": "D01",
    },
    "workorder": {
        "family": "workorder",
        "ts": "2026-05-12T07:01:12.000Z",
        "order_id": "WO-000042",
        "status": "reported",
        "event_class": "small",
        "department": "urban_management",
        "grid_id": "D01-G05",
        "district_id": "D01",
        "source": "grid_worker",
    },
}

#: (field to drop, field to set to an unknown enum value) per family.
BREAK = {
    "reading": ("value", "metric"),
    "heartbeat": ("device_id", "device_type"),
    "gate": ("lift_ms", "direction"),
    "workorder": ("order_id", "status"),
}


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((JSON_DIR / f"{name}.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_checked_in_schemas_do_not_drift():
    assert drift() == []


def test_one_file_per_family_and_table():
    expected = {f"{n}.schema.json" for n in (*INPUT_FAMILIES, *OUTPUT_TABLES)}
    assert {p.name for p in JSON_DIR.glob("*.schema.json")} == expected
    assert set(all_schemas()) == expected


def test_fresh_copy_has_no_drift(tmp_path):
    written = write_all(tmp_path)
    assert len(written) == len(INPUT_FAMILIES) + len(OUTPUT_TABLES)
    assert drift(tmp_path) == []


def test_edited_file_is_reported(tmp_path):
    write_all(tmp_path)
    path = tmp_path / "gate.schema.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    schema["properties"]["direction"]["enum"].append("sideways")
    path.write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
    assert drift(tmp_path) == ["gate.schema.json"]


def test_whitespace_only_edit_is_reported(tmp_path):
    write_all(tmp_path)
    path = tmp_path / "reading.schema.json"
    path.write_text(path.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    assert drift(tmp_path) == ["reading.schema.json"]


def test_missing_and_unexpected_files_are_reported(tmp_path):
    write_all(tmp_path)
    (tmp_path / "breaches.schema.json").unlink()
    shutil.copy(tmp_path / "reading.schema.json", tmp_path / "weather.schema.json")
    assert drift(tmp_path) == ["breaches.schema.json", "weather.schema.json"]


@pytest.mark.parametrize("family", sorted(INPUT_FAMILIES))
def test_schema_accepts_a_good_wire_example(family):
    v = validator(family)
    errors = list(v.iter_errors(WIRE[family]))
    assert errors == []
    # Unknown extra fields are allowed: producers may add fields first.
    assert v.is_valid({**WIRE[family], "firmware": "1.2.3"})


@pytest.mark.parametrize("family", sorted(INPUT_FAMILIES))
def test_schema_rejects_a_missing_required_field(family):
    dropped, _ = BREAK[family]
    bad = copy.deepcopy(WIRE[family])
    del bad[dropped]
    errors = list(validator(family).iter_errors(bad))
    assert [e.validator for e in errors] == ["required"]
    assert dropped in errors[0].message


@pytest.mark.parametrize("family", sorted(INPUT_FAMILIES))
def test_schema_rejects_an_unknown_enum_value(family):
    _, field = BREAK[family]
    bad = {**WIRE[family], field: "no-such-value"}
    errors = list(validator(family).iter_errors(bad))
    assert [(e.validator, list(e.path)) for e in errors] == [("enum", [field])]


@pytest.mark.parametrize("family", sorted(INPUT_FAMILIES))
def test_schema_rejects_another_family_tag(family):
    other = next(f for f in sorted(INPUT_FAMILIES) if f != family)
    assert not validator(family).is_valid({**WIRE[family], "family": other})


def test_schema_rejects_wrong_types():
    v = validator("reading")
    assert not v.is_valid({**WIRE["reading"], "value": "high"})
    assert not v.is_valid({**WIRE["reading"], "device_id": {"id": 1}})
    assert v.is_valid({**WIRE["reading"], "capacity": None})
    assert v.is_valid({**WIRE["reading"], "capacity": 120})


def test_output_schemas_validate_output_rows():
    row = {
        "received_at": "2026-05-12T07:00:00Z",
        "source": "file.jsonl",
        "partition": None,
        "offset": 3,
        "reason": "malformed_json",
        "detail": "empty line",
        "raw": "",
    }
    v = validator("dead_letters")
    assert v.is_valid(row)
    assert not v.is_valid({**row, "reason": "gremlins"})
    assert not v.is_valid({k: x for k, x in row.items() if k != "offset"})
