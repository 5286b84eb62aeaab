"""The risk step in the flow: the same level changes whatever the workers, shards and batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from bytewax.testing import cluster_main, run_main

from cityvitals.lake import Lake
from flows.city import build
from flows.config import PipelineConfig
from flows.sources import JsonLinesSource
from indicators.definitions import load_catalog
from thresholds.risk_points import load_risk_points

T0 = datetime(2026, 5, 12, 6, 0, tzinfo=UTC)

POINTS = """
step: 5m
models:
  m:
    levels: {yellow: 0.3, red: 0.6}
    clear: {yellow: 0.2, red: 0.5}
    up_after: 2
    down_after: 2
    cool_down: 10m
points:
  - id: rp-storm
    category: road_section
    model: m
    location: {grid_id: D01-G03, district_id: D01}
    base: [{name: soil, value: 1.0}]
    factors:
      - {name: rain, indicator: flood.rainfall, entity: rain-1, low: 0, high: 20}
      - {name: vib, indicator: collapse.road_vibration, entity: sec-1, low: 1, high: 3}
  - id: rp-calm
    category: slope
    model: m
    location: {grid_id: D01-G05, district_id: D01}
    base: [{name: geology, value: 1.0}]
    factors:
      - {name: rain, indicator: flood.rainfall, entity: rain-2, low: 0, high: 20}
"""


def _reading(t: datetime, device: str, kind: str, metric: str, site: str, value: float) -> bytes:
    return orjson.dumps(
        {
            "family": "reading",
            "ts": t.isoformat().replace("+00:00", "Z"),
            "device_id": device,
            "device_type": kind,
            "metric": metric,
            "value": value,
            "site_id": site,
            "grid_id": "D01-G03",
            "district_id": "D01",
        }
    )


def _storm(path) -> None:
    """Two hours, one reading a minute per device: a storm from minute 30 to 75."""
    lines = []
    for m in range(120):
        t = T0 + timedelta(minutes=m, seconds=7)
        storm = 30 <= m < 75
        lines.append(_reading(t, "r1", "rain_gauge", "rainfall", "rain-1", 1.5 * storm))
        lines.append(_reading(t, "r2", "rain_gauge", "rainfall", "rain-2", 0.0))
        lines.append(_reading(t, "v1", "vibration_sensor", "vibration", "sec-1", 1.0 + 2.5 * storm))
    path.write_bytes(b"\n".join(lines) + b"\n")


@pytest.fixture(scope="module")
def storm(tmp_path_factory):
    root = tmp_path_factory.mktemp("risk")
    _storm(root / "in.jsonl")
    (root / "points.yaml").write_text(POINTS)
    return root


def _changes(out) -> list[tuple]:
    return (
        Lake(out)
        .connect()
        .execute(
            "SELECT risk_point_id, event_ts, from_level, to_level, score, factors "
            "FROM risk_levels ORDER BY ALL"
        )
        .fetchall()
    )


def _flow(storm, out, shards: int, batch: int, points=None):
    config = PipelineConfig(out=out, shards=shards, batch_size=batch)
    points = points or load_risk_points(storm / "points.yaml", load_catalog())
    return build(JsonLinesSource(storm / "in.jsonl", batch), config, risk_points=points)


def test_same_changes_on_one_worker_and_on_two_with_other_shards_and_batches(storm, tmp_path):
    run_main(_flow(storm, tmp_path / "a", shards=1, batch=10_000))
    cluster_main(_flow(storm, tmp_path / "b", shards=6, batch=7), [], 0, worker_count_per_proc=2)
    a, b = _changes(tmp_path / "a"), _changes(tmp_path / "b")
    assert [(p, f, t) for p, _, f, t, _, _ in a] == [
        ("rp-storm", "normal", "yellow"),
        ("rp-storm", "yellow", "red"),
        ("rp-storm", "red", "normal"),
    ]
    assert a == b


def test_a_file_without_risk_points_runs(storm, tmp_path):
    empty = load_risk_points(storm / "points.yaml").model_copy(update={"points": []})
    run_main(_flow(storm, tmp_path / "e", shards=2, batch=100, points=empty))
    assert _changes(tmp_path / "e") == []
