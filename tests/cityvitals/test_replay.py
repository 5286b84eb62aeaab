"""``cityvitals replay``: the live flow's scores and levels from a recorded series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from cityvitals.cli import main
from indicators.definitions import load_catalog

T0 = datetime(2026, 5, 12, 6, tzinfo=UTC)


def _flow_rows(lake, indicator_id: str) -> pl.DataFrame:
    rows = (
        lake.connect()
        .execute(
            "SELECT window_end, entity_id, value, samples FROM indicator_values "
            "WHERE indicator_id = ? ORDER BY window_end, entity_id",
            [indicator_id],
        )
        .fetchall()
    )
    return pl.DataFrame(
        rows, schema=["timestamp", "entity", "value", "samples"], orient="row"
    ).with_columns(pl.col("timestamp").dt.convert_time_zone("UTC"))


@pytest.mark.parametrize("model", [m.id for m in load_catalog().models])
def test_replay_gives_the_live_flows_scores_exactly(small_run, tmp_path, model):
    """The model's source values from the flow's lake, replayed: the very scores the flow wrote."""
    _, lake = small_run
    source = load_catalog().model(model).indicator
    recorded = tmp_path / "recorded.parquet"
    _flow_rows(lake, source).drop("samples").write_parquet(recorded)
    out = tmp_path / "replayed.parquet"
    args = ["replay", str(recorded), "--model", model, "--entity-column", "entity"]
    result = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    replayed = pl.read_parquet(out)
    assert replayed.columns == ["timestamp", "entity", "value", "anomaly_score", "level"]
    live = _flow_rows(lake, model).select("timestamp", "entity", live="value")
    both = replayed.drop_nulls("anomaly_score").join(
        live, on=["timestamp", "entity"], how="full", coalesce=True
    )
    assert both.height == live.height > 0
    assert both.filter(pl.col("anomaly_score") != pl.col("live")).height == 0
    assert both["anomaly_score"].null_count() == both["live"].null_count() == 0
    # ... and the levels are the flow's levels of those rows.
    flow_levels = (
        lake.connect()
        .execute(
            "SELECT count(*) FILTER (WHERE level != 'normal') FROM indicator_values "
            "WHERE indicator_id = ?",
            [model],
        )
        .fetchone()[0]
    )
    assert replayed.filter(pl.col("level") != "normal").height == flow_levels


def _series(n: int, jump_at: int | None = None, jump: float = 1.0) -> pl.DataFrame:
    rng = np.random.default_rng(2)
    level = 1.8 + rng.uniform(-0.01, 0.01, n)
    if jump_at is not None:
        level[jump_at:] += jump
    return pl.DataFrame(
        {"timestamp": [T0 + timedelta(minutes=5 * k) for k in range(n)], "value": level}
    )


def _invoke(*args: str):
    return CliRunner().invoke(main, ["replay", *args])


def test_replay_prints_the_alerts_and_writes_csv_rows(tmp_path):
    path = tmp_path / "gauge.csv"
    _series(60, jump_at=40).write_csv(path)
    out = tmp_path / "out.csv"
    result = _invoke(str(path), "--model", "flood.water_level.anomaly", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "alerts opened 1; level changes 1" in result.output
    assert "2026-05-12T09:20:00Z  opened     normal -> yellow series" in result.output
    assert "flood.water_level.anomaly.unusual" in result.output
    rows = pl.read_csv(out)
    assert rows.columns == ["timestamp", "value", "anomaly_score", "level"]
    assert rows["level"].null_count() == load_catalog().model("flood.water_level.anomaly").grace
    assert rows["level"][40:].to_list() == ["yellow"] * 20


def test_replay_of_an_indicator_grades_values_with_its_rules(tmp_path):
    path = tmp_path / "gauge.parquet"
    _series(60, jump_at=40, jump=2.0).write_parquet(path)
    out = tmp_path / "out.parquet"
    result = _invoke(str(path), "--indicator", "flood.water_level", "--out", str(out))
    assert result.exit_code == 0, result.output
    rows = pl.read_parquet(out)
    # flood.water_level.high: orange at 3.5 m, red at 4; the model of the indicator scores.
    assert set(rows["level"][:40]) == {"normal"} and set(rows["level"][40:]) == {"orange"}
    assert rows["anomaly_score"][40] == 1.0
    assert "flood.water_level.high" in result.output


def test_naive_timestamps_are_read_as_utc(tmp_path):
    series = _series(30, jump_at=20)
    naive, aware = tmp_path / "naive.csv", tmp_path / "aware.csv"
    series.with_columns(
        timestamp=pl.col("timestamp").dt.replace_time_zone(None).dt.strftime("%Y-%m-%d %H:%M:%S")
    ).write_csv(naive)
    series.with_columns(
        timestamp=pl.col("timestamp")
        .dt.convert_time_zone("Asia/Shanghai")
        .dt.strftime("%Y-%m-%dT%H:%M:%S%:z")
    ).write_csv(aware)
    outs = []
    for path in (naive, aware):
        out = path.with_suffix(".out.parquet")
        result = _invoke(str(path), "--model", "flood.water_level.anomaly", "--out", str(out))
        assert result.exit_code == 0, result.output
        outs.append(pl.read_parquet(out))
    assert outs[0].equals(outs[1])
    assert outs[0]["timestamp"][0] == T0 + timedelta(minutes=0)


def test_a_long_input_shows_a_progress_bar(tmp_path):
    path = tmp_path / "long.parquet"
    _series(12_000).write_parquet(path)
    result = _invoke(str(path), "--model", "flood.water_level.anomaly")
    assert result.exit_code == 0, result.output
    assert "replaying" in result.stderr
    assert "replayed 12,000 rows" in result.output
    short = tmp_path / "short.parquet"
    _series(100).write_parquet(short)
    assert "replaying" not in _invoke(str(short), "--model", "flood.water_level.anomaly").stderr


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (
            "time,value\n2026-05-12T06:00:00Z,1\n",
            [],
            "expected columns ['timestamp', 'value'], missing ['timestamp']",
        ),
        (
            "timestamp,value\n2026-05-12T06:00:00Z,1\n",
            ["--entity-column", "gauge"],
            "missing ['gauge']",
        ),
        (
            "timestamp,value\n2026-05-12T06:00:00Z,1\nyesterday,2\n",
            [],
            "row 2: timestamp: got 'yesterday', expected an ISO 8601 date-time",
        ),
        ("timestamp,value\n2026-05-12T06:00:00Z,high\n", [], "value: expected numbers"),
        (
            "timestamp,value\n2026-05-12T06:00:00Z,1\n2026-05-12T06:00:00Z,2\n",
            [],
            "expected one value per entity and timestamp",
        ),
    ],
)
def test_bad_inputs_are_refused_with_a_reason(tmp_path, content, args, message):
    path = tmp_path / "in.csv"
    path.write_text(content)
    result = _invoke(str(path), "--model", "flood.water_level.anomaly", *args)
    assert result.exit_code == 1
    assert message in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--model", "flood.water_level.anomal"],
            "--model: got 'flood.water_level.anomal', "
            "expected a model of the catalogue (fire.temperature.anomaly, ",
        ),
        (["--indicator", "flood.water_level.anomaly"], "(a model: use --model)"),
        (["--indicator", "flood.level"], "--indicator: got 'flood.level'"),
        ([], "expected exactly one of --indicator and --model"),
        (["--model", "flood.water_level.anomaly", "--out", "x.json"], "--out: expected a .csv"),
    ],
)
def test_unknown_ids_and_options_are_refused(tmp_path, args, message):
    path = tmp_path / "in.csv"
    _series(20).write_csv(path)
    result = _invoke(str(path), *args)
    assert result.exit_code == 1
    assert message in result.output


def test_a_model_over_several_features_replays_from_one_column_each():
    from indicators.definitions import HalfSpaceTreesModel
    from thresholds.replay import ReplayError, read_series, replay
    from thresholds.rules import Rule

    cat = load_catalog()
    trees = HalfSpaceTreesModel(
        id="traffic.segment.trees",
        indicator="traffic.segment_travel_time",
        kind="half_space_trees",
        features=["traffic.segment_speed"],
        window_size=10,
        grace=20,
        description="d",
    )
    cat = cat.model_copy(update={"models": [trees]})
    rule = Rule(id="trees.odd", indicator=trees.id, direction="above", levels={"blue": 0.9})
    rules = load_rules_with(rule)
    rng = np.random.default_rng(4)
    n = 80
    travel = 70 + rng.normal(0, 3, n)
    travel[60:] += 400
    frame = pl.DataFrame(
        {
            "timestamp": [T0 + timedelta(minutes=5 * k) for k in range(n)],
            "value": travel,
            "traffic.segment_speed": 36 + rng.normal(0, 1, n) - np.where(travel > 200, 25, 0),
        }
    )
    result = replay(read_series(frame), cat, rules, model=trees.id)
    scores = result.rows["anomaly_score"]
    assert scores[:20].null_count() == 20 and scores[20:].null_count() == 0
    assert scores[60] > scores[20:60].mean()
    with pytest.raises(ReplayError, match=r"expected a column for each, missing \['traffic"):
        replay(read_series(frame.drop("traffic.segment_speed")), cat, rules, model=trees.id)


def load_rules_with(rule):
    """The packaged rules plus ``rule`` (for a model of the test's own)."""
    from thresholds.rules import load_rules

    rules = load_rules()
    return rules.model_copy(update={"rules": [*rules.rules, rule]})


def test_a_missing_timestamp_in_parquet_is_refused_with_its_row(tmp_path):
    path = tmp_path / "in.parquet"
    t0 = datetime(2026, 5, 12, 6, tzinfo=UTC)
    pl.DataFrame(
        {"timestamp": [t0, None, t0 + timedelta(minutes=5)], "value": [1.0, 2.0, 3.0]}
    ).write_parquet(path)
    result = _invoke(str(path), "--model", "flood.water_level.anomaly")
    assert result.exit_code == 1
    assert "row 2: timestamp: got None, expected a timestamp" in result.output
