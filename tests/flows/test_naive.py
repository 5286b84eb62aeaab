"""The naive baseline computes exactly what the city flow computes for its subset."""

from __future__ import annotations

import polars as pl
from bytewax.testing import TestingSink, run_main
from polars.testing import assert_frame_equal

from cityvitals.lake import Lake
from cityvitals.simulate import Scenario, generate
from flows import naive
from flows.city import build
from flows.config import PipelineConfig
from flows.sources import BatchIteratorSource
from indicators.definitions import load_catalog

SCENARIO = Scenario(devices=200, minutes=70, seed=3, bad_rate=0.0)
KEYS = ["indicator_id", "entity_id", "window_start"]


def _source() -> BatchIteratorSource:
    return BatchIteratorSource("simulator", lambda: generate(SCENARIO))


def city_values(out) -> pl.DataFrame:
    """The city flow's indicator values for the naive subset, sorted by key."""
    run_main(build(_source(), PipelineConfig(out=out)))
    ids = [d.id for d in naive.subset(load_catalog())]
    table = (
        Lake(out)
        .connect()
        .sql("SELECT indicator_id, entity_id, window_start, value, samples FROM indicator_values")
    )
    frame = pl.from_arrow(table.to_arrow_table())
    return frame.filter(pl.col("indicator_id").is_in(ids)).sort(KEYS)


def naive_values() -> pl.DataFrame:
    rows: list[dict] = []
    run_main(naive.build(_source(), TestingSink(rows)))
    return pl.DataFrame(rows).sort(KEYS)


def test_naive_flow_equals_city_flow(tmp_path):
    expected = city_values(tmp_path / "lake")
    got = naive_values()
    assert expected.height > 1000
    assert set(expected["indicator_id"]) == {d.id for d in naive.subset(load_catalog())}
    got = got.with_columns(pl.col("window_start").cast(expected.schema["window_start"]))
    assert_frame_equal(got, expected, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)


def test_batch_lower_bounds_equal_the_naive_flow(tmp_path):
    from cityvitals.bench import duckdb_aggregates, make_input, polars_aggregates

    lines = make_input(30_000, 200, seed=3)
    data = b"\n".join(lines) + b"\n"
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    rows: list[dict] = []
    run_main(
        naive.build(
            BatchIteratorSource("x", lambda: iter([lines[:15_000], lines[15_000:]])),
            TestingSink(rows),
        )
    )
    expected = pl.DataFrame(rows).sort(KEYS)
    for got in (polars_aggregates(data), pl.from_arrow(duckdb_aggregates(str(path)))):
        got = got.with_columns(
            pl.col("window_start")
            .dt.convert_time_zone("UTC")
            .cast(expected.schema["window_start"]),
            pl.col("samples").cast(pl.Int64),
        ).sort(KEYS)
        assert_frame_equal(got, expected, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)
