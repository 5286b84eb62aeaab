"""JSON Schemas generated from the Arrow schemas, for downstream consumers.

One file per input family and per output table, in ``schemas/json/``. They
describe the wire form: timestamps are RFC 3339 strings, binary is base64.
``cityvitals schemas --write`` regenerates them; ``drift()`` lists the files
that no longer match (a test fails on it).

>>> s = json_schema("reading", INPUT_FAMILIES["reading"])
>>> s["properties"]["ts"]["format"]
'date-time'
>>> "capacity" in s["required"]
False
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from schemas.families import INPUT_FAMILIES, OUTPUT_TABLES, SCHEMA_VERSION

__all__ = ["JSON_DIR", "all_schemas", "drift", "json_schema", "write_all"]

JSON_DIR = Path(__file__).with_name("json")
_BASE = "https://cityvitals.invalid/schemas"


def _type(t: pa.DataType) -> dict:
    if pa.types.is_timestamp(t):
        return {"type": "string", "format": "date-time"}
    if pa.types.is_floating(t):
        return {"type": "number"}
    if pa.types.is_integer(t):
        return {"type": "integer"}
    if pa.types.is_boolean(t):
        return {"type": "boolean"}
    if pa.types.is_binary(t):
        return {"type": "string", "contentEncoding": "base64"}
    if pa.types.is_list(t):
        return {"type": "array", "items": _type(t.value_type)}
    if pa.types.is_string(t):
        return {"type": "string"}
    if pa.types.is_struct(t):
        fields = [t.field(i) for i in range(t.num_fields)]
        return {
            "type": "object",
            "properties": {f.name: _property(f) for f in fields},
            "required": [f.name for f in fields if not f.nullable],
        }
    raise TypeError(f"no JSON Schema mapping for Arrow type {t}")


def _property(f: pa.Field) -> dict:
    meta = {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
    prop = _type(f.type)
    if "enum" in meta:
        prop["enum"] = meta["enum"].split(",")
    if f.nullable:
        prop = {"anyOf": [prop, {"type": "null"}]}
    if "doc" in meta:
        prop["description"] = meta["doc"]
    return prop


def json_schema(name: str, schema: pa.Schema) -> dict:
    """The JSON Schema (draft 2020-12) of one Arrow schema."""
    doc = (schema.metadata or {}).get(b"doc", b"").decode()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{_BASE}/v{SCHEMA_VERSION}/{name}.schema.json",
        "title": name,
        "description": doc,
        "type": "object",
        "properties": {f.name: _property(f) for f in schema},
        "required": [f.name for f in schema if not f.nullable],
        "additionalProperties": True,
    }


def all_schemas() -> dict[str, dict]:
    """File name -> JSON Schema, for every input family and output table."""
    named = {**INPUT_FAMILIES, **OUTPUT_TABLES}
    return {f"{name}.schema.json": json_schema(name, schema) for name, schema in named.items()}


def _render(schema: dict) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_all(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in all_schemas().items():
        path = directory / name
        path.write_text(_render(schema), encoding="utf-8")
        paths.append(path)
    return paths


def drift(directory: Path = JSON_DIR) -> list[str]:
    """Names of checked-in schema files that are missing, stale or unexpected."""
    want = {name: _render(s) for name, s in all_schemas().items()}
    have = {p.name: p.read_text(encoding="utf-8") for p in directory.glob("*.schema.json")}
    return sorted(n for n in want.keys() | have.keys() if want.get(n) != have.get(n))
