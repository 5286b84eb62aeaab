"""The naive baseline computes exactly what the city flow computes for its subset."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
from bytewax.testing import TestingSink, run_main
from polars.testing import assert_frame_equal

from cityvitals.lake import Lake
from cityvitals.simulate import Scenario, generate
from flows import naive
from flows.city import build
from flows.config import PipelineConfig
from flows.sources import BatchIteratorSource
from indicators.definitions import Catalog, load_catalog

SCENARIO = Scenario(devices=200, minutes=70, seed=3, bad_rate=0.0)
KEYS = ["indicator_id", "entity_id", "window_start"]


def _source() -> BatchIteratorSource:
    return BatchIteratorSource("simulator", lambda: generate(SCENARIO))


def city_values(out, source=None, catalog=None) -> pl.DataFrame:
    """The city flow's indicator values for the naive subset, sorted by key."""
    run_main(build(source or _source(), PipelineConfig(out=out), catalog))
    ids = [d.id for d in naive.subset(catalog or load_catalog())]
    table = (
        Lake(out)
        .connect()
        .sql("SELECT indicator_id, entity_id, window_start, value, samples FROM indicator_values")
    )
    frame = pl.from_arrow(table.to_arrow_table())
    return frame.filter(pl.col("indicator_id").is_in(ids)).sort(KEYS)


def naive_values(source=None, catalog=None) -> pl.DataFrame:
    rows: list[dict] = []
    run_main(naive.build(source or _source(), TestingSink(rows), catalog))
    return pl.DataFrame(rows).sort(KEYS)


def test_naive_flow_equals_city_flow(tmp_path):
    expected = city_values(tmp_path / "lake")
    got = naive_values()
    assert expected.height > 1000
    assert set(expected["indicator_id"]) == {d.id for d in naive.subset(load_catalog())}
    got = got.with_columns(pl.col("window_start").cast(expected.schema["window_start"]))
    assert_frame_equal(got, expected, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)


def test_batch_lower_bounds_equal_the_naive_flow(tmp_path):
    from cityvitals.bench import make_input

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
    assert_batches_equal(data, path, pl.DataFrame(rows).sort(KEYS))


def assert_batches_equal(data: bytes, path, expected: pl.DataFrame, catalog=None) -> None:
    """The Polars and DuckDB queries over ``data`` (also in the file ``path``) give
    ``expected``, the naive flow's rows."""
    from cityvitals.bench import duckdb_aggregates, polars_aggregates

    for got in (
        polars_aggregates(data, catalog),
        pl.from_arrow(duckdb_aggregates(str(path), catalog)),
    ):
        got = got.with_columns(
            pl.col("window_start")
            .dt.convert_time_zone("UTC")
            .cast(expected.schema["window_start"]),
            pl.col("samples").cast(pl.Int64),
        ).sort(KEYS)
        assert_frame_equal(got, expected, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)


def test_every_engine_aligns_windows_in_the_catalogue_time_zone(tmp_path):
    """In Asia/Kolkata (UTC+05:30) an hour's window starts at half past a UTC hour: the city
    flow, the naive flow and both batch queries cut the same windows."""
    catalog = Catalog(**{**dict(load_catalog()), "timezone": "Asia/Kolkata"})
    lines = [line for batch in generate(SCENARIO) for line in batch][:40_000]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")

    def source() -> BatchIteratorSource:
        return BatchIteratorSource("x", lambda: iter([lines[:20_000], lines[20_000:]]))

    expected = city_values(tmp_path / "lake", source(), catalog)
    hourly = {d.id for d in naive.subset(catalog) if d.window == timedelta(hours=1)}
    starts = expected.filter(pl.col("indicator_id").is_in(list(hourly)))["window_start"]
    assert hourly and starts.len() and (starts.dt.minute() == 30).all()
    got = naive_values(source(), catalog)
    got = got.with_columns(pl.col("window_start").cast(expected.schema["window_start"]))
    assert_frame_equal(got, expected, check_exact=False, rel_tol=1e-9, abs_tol=1e-9)
    assert_batches_equal(path.read_bytes(), path, got, catalog)
