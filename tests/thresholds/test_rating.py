"""The five-colour department rating: its configuration, and the view analysts query.

The view is checked on a real lake (Parquet written through :meth:`Lake.write`,
the DuckDB file opened read-only) against a plain-Python reference
computation and hand-computed figures. Each ``fixtures/rating/*.bad.yaml``
carries its expected problems in comment lines::

    # expect: <line> | <key> | <fragment> | ...
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from click.testing import CliRunner

from cityvitals.cli import main
from cityvitals.lake import Lake
from cityvitals.yamlconf import ConfigError
from indicators.definitions import Catalog, load_catalog
from schemas.families import INDICATOR_VALUES
from tests.config_fixtures import assert_problems_match, check_command, expectations
from thresholds.rating import (
    COLUMNS,
    DEFAULT_RATING,
    RATING_VIEW,
    UNRATED,
    Rating,
    load_rating,
    rating_sql,
)

FIXTURES = Path(__file__).with_name("fixtures") / "rating"
BAD = sorted(FIXTURES.glob("*.bad.yaml"))

TIMELY = "workorder.on_time_rate"
SATISFIED = "service.satisfaction_rate"
ANCHOR = datetime(2026, 1, 4, 16, tzinfo=UTC)  # Monday 5 January, 00:00 in Beijing
HOUR, DAY, WEEK = timedelta(hours=1), timedelta(days=1), timedelta(days=7)

#: Weekly periods, weights 0.6 / 0.4, at least 10 orders in each dimension.
WEEKLY = {
    "period": "7d",
    "anchor": "2026-01-05",
    "timeliness": {"indicator": TIMELY, "weight": 0.6},
    "quality": {"indicator": SATISFIED, "weight": 0.4},
    "min_orders": 10,
}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def weekly(**changes) -> Rating:
    return Rating.model_validate({**WEEKLY, **changes}, context={"catalog": load_catalog()})


# -- a lake of indicator values ------------------------------------------------------------


def row(indicator: str, department: str, start: datetime, value: float | None, samples: int):
    window = HOUR if indicator == TIMELY else DAY
    return {
        "indicator_id": indicator,
        "sector": indicator.split(".")[0],
        "entity_type": "department",
        "entity_id": department,
        "window_start": start,
        "window_end": start + window,
        "value": value,
        "samples": samples,
        "unit": "ratio",
        "level": "normal",
    }


def lake_of(root: Path, rows: list[dict], rating: Rating | Path | None = None) -> Lake:
    """A lake holding ``rows`` of ``indicator_values``, written as the pipeline writes."""
    lake = Lake(root, rating=rating)
    lake.create()
    lake.write("indicator_values", pa.Table.from_pylist(rows, schema=INDICATOR_VALUES), "t", 0)
    return lake


def view_rows(lake: Lake, timezone: str = "UTC") -> list[dict]:
    """The view's rows, read as an analyst reads them (read-only, any session time zone)."""
    con = lake.connect()
    try:
        con.execute(f"SET TimeZone = '{timezone}'")
        cur = con.execute(f"SELECT * FROM {RATING_VIEW}")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        con.close()


def by_key(rows: list[dict]) -> dict[tuple, dict]:
    return {(r["period_start"], r["department"]): r for r in rows}


# -- the reference computation -------------------------------------------------------------


def reference(rating: Rating, rows: list[dict]) -> list[dict]:
    """The rating computed in plain Python, row by row, from the definition."""
    dims = {rating.timeliness.indicator: "timeliness", rating.quality.indicator: "quality"}
    sums: dict[tuple, dict[str, list]] = defaultdict(
        lambda: {"timeliness": [0.0, 0], "quality": [0.0, 0]}
    )
    for r in rows:
        dim = dims.get(r["indicator_id"])
        value, samples = r["value"], r["samples"]
        if dim is None or value is None or not math.isfinite(value) or samples <= 0:
            continue
        if r["window_start"] < rating.start:
            continue
        n = (r["window_start"] - rating.start) // rating.period
        acc = sums[(n, r["entity_id"])][dim]
        acc[0] += value * samples
        acc[1] += samples
    out = []
    for (n, department), acc in sums.items():
        (t_sum, t_n), (q_sum, q_n) = acc["timeliness"], acc["quality"]
        rated = t_n >= rating.min_orders and q_n >= rating.min_orders
        score = (
            round(rating.timeliness.weight * t_sum / t_n + rating.quality.weight * q_sum / q_n, 6)
            if rated
            else None
        )
        colour = UNRATED
        if score is not None:
            colour = next(
                (c.colour for c in rating.colours if score >= c.min_score),
                rating.colours[-1].colour,
            )
        start = rating.start + n * rating.period
        out.append(
            {
                "period_start": start,
                "period_end": start + rating.period,
                "department": department,
                "timeliness": t_sum / t_n if t_n else None,
                "timeliness_orders": t_n,
                "quality": q_sum / q_n if q_n else None,
                "quality_orders": q_n,
                "score": score,
                "colour": colour,
            }
        )
    for r in out:
        rivals = [o["score"] for o in out if o["period_start"] == r["period_start"]]
        r["rank"] = (
            None
            if r["score"] is None
            else 1 + sum(s is not None and s > r["score"] for s in rivals)
        )
    return out


def assert_matches_reference(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    assert set(by_key(got)) == set(by_key(expected))
    want = by_key(expected)
    for key, g in by_key(got).items():
        e = want[key]
        assert list(g) == list(COLUMNS)
        for col in ("period_end", "timeliness_orders", "quality_orders", "colour", "rank"):
            assert g[col] == e[col], (key, col, g[col], e[col])
        for col in ("timeliness", "quality", "score"):
            if e[col] is None:
                assert g[col] is None, (key, col)
            else:
                assert g[col] == pytest.approx(e[col], abs=1e-9), (key, col)


# -- a hand-made fortnight -----------------------------------------------------------------

P0, P1 = ANCHOR, ANCHOR + WEEK


def hand_rows() -> list[dict]:
    """Two weekly periods of six departments, with the corner cases of the definition."""
    rows = [
        # roads: P0 timeliness (0.9 x 20 + 1.0 x 10) / 30, the second window in P0's last hour;
        # quality (1.0 x 10 + 0.9 x 10) / 20 = 0.95; score 0.6 x 0.9333 + 0.4 x 0.95 = 0.94.
        row(TIMELY, "roads", P0 + 9 * HOUR, 0.9, 20),
        row(TIMELY, "roads", P1 - HOUR, 1.0, 10),
        row(SATISFIED, "roads", P0 + DAY, 1.0, 10),
        row(SATISFIED, "roads", P1 - DAY, 0.9, 10),
        # roads, P1: the window starting exactly at the boundary is P1's. Exactly 0.95: green.
        row(TIMELY, "roads", P1, 0.95, 20),
        row(SATISFIED, "roads", P1, 0.95, 20),
        # 城管局 (city management), P0: 0.6 x 0.5 + 0.4 x 0.75 = 0.6, red; P1: nothing.
        row(TIMELY, "城管局", P0 + 30 * HOUR, 0.5, 40),
        row(SATISFIED, "城管局", P0 + 2 * DAY, 0.75, 12),
        # water: 9 orders dispatched in P0, one short of min_orders: unrated however good.
        row(TIMELY, "water", P0 + 5 * HOUR, 1.0, 5),
        row(TIMELY, "water", P0 + 50 * HOUR, 1.0, 4),
        row(SATISFIED, "water", P0 + 3 * DAY, 1.0, 30),
        # water in P1: only quality measured: unrated, timeliness null, 0 orders.
        row(SATISFIED, "water", P1 + DAY, 0.8, 15),
        # parks and housing, P1: the same figures, so the same score and the same rank;
        # transport after them is 4th, not 3rd; at 0.6 x 0.7 + 0.4 x 0.7 = 0.7 it is orange.
        row(TIMELY, "parks", P1 + 10 * HOUR, 0.8, 10),
        row(SATISFIED, "parks", P1 + 2 * DAY, 0.8, 10),
        row(TIMELY, "housing", P1 + 11 * HOUR, 0.8, 10),
        row(SATISFIED, "housing", P1 + 3 * DAY, 0.8, 10),
        row(TIMELY, "transport", P1 + 20 * HOUR, 0.7, 10),
        row(SATISFIED, "transport", P1 + 4 * DAY, 0.7, 10),
        # Not counted: before the anchor, a NaN, a window without samples,
        # another indicator of the department, another entity type's indicator.
        row(TIMELY, "roads", P0 - HOUR, 0.0, 100),
        row(SATISFIED, "roads", P0 + 4 * DAY, float("nan"), 7),
        row(TIMELY, "roads", P0 + 13 * HOUR, 0.0, 0),
        row("workorder.closure_rate", "roads", P0 + DAY, 0.1, 100),
        {**row(TIMELY, "D01", P0 + HOUR, 0.0, 100), "indicator_id": "workorder.on_time_rate_x"},
    ]
    return rows


def test_the_view_rates_a_hand_computed_fortnight(tmp_path):
    rating = weekly()
    got = by_key(view_rows(lake_of(tmp_path, hand_rows(), rating)))
    assert sorted((k[0].astimezone(UTC), k[1]) for k in got) == [
        (P0, "roads"),
        (P0, "water"),
        (P0, "城管局"),
        (P1, "housing"),
        (P1, "parks"),
        (P1, "roads"),
        (P1, "transport"),
        (P1, "water"),
    ]
    roads = got[(P0, "roads")]
    assert roads["timeliness"] == pytest.approx(28 / 30)
    assert (roads["timeliness_orders"], roads["quality_orders"]) == (30, 20)
    assert roads["quality"] == pytest.approx(0.95)
    assert (roads["score"], roads["colour"], roads["rank"]) == (0.94, "blue", 1)
    assert roads["period_end"] == P1
    city = got[(P0, "城管局")]
    assert (city["score"], city["colour"], city["rank"]) == (0.6, "red", 2)
    water = got[(P0, "water")]
    assert (water["timeliness_orders"], water["quality_orders"]) == (9, 30)
    assert (water["score"], water["colour"], water["rank"]) == (None, UNRATED, None)
    assert water["timeliness"] == 1.0  # measured, just not enough of it
    # P1: exactly at a bound is that colour; equal scores share rank 2, nobody is 3rd.
    assert (got[(P1, "roads")]["score"], got[(P1, "roads")]["colour"]) == (0.95, "green")
    assert (got[(P1, "transport")]["score"], got[(P1, "transport")]["colour"]) == (0.7, "orange")
    ranks = [got[(P1, d)]["rank"] for d in ("roads", "parks", "housing", "transport")]
    assert ranks == [1, 2, 2, 4]
    assert got[(P1, "parks")]["colour"] == "yellow"
    late_water = got[(P1, "water")]
    assert (late_water["timeliness"], late_water["timeliness_orders"]) == (None, 0)
    assert (late_water["quality"], late_water["colour"]) == (0.8, UNRATED)


def test_the_view_matches_the_reference_on_the_hand_made_fortnight(tmp_path):
    rating = weekly()
    rows = hand_rows()
    assert_matches_reference(view_rows(lake_of(tmp_path, rows, rating)), reference(rating, rows))


def test_the_view_is_ordered_by_period_then_rank():
    rating = weekly()
    con = duckdb.connect()
    table = pa.Table.from_pylist(hand_rows(), schema=INDICATOR_VALUES)
    con.register("indicator_values", table)
    got = con.execute(
        f"SELECT period_start, rank, department FROM ({rating_sql(rating)})"
    ).fetchall()
    assert [(r[1], r[2]) for r in got] == [
        (1, "roads"),
        (2, "城管局"),
        (None, "water"),
        (1, "roads"),
        (2, "housing"),
        (2, "parks"),
        (4, "transport"),
        (None, "water"),
    ]


def random_rows(seed: int, departments: int, periods: int, rating: Rating) -> list[dict]:
    """Windows of both dimensions over several periods, with gaps, NaNs and idle windows."""
    rnd = random.Random(seed)
    rows = []
    span = periods * rating.period

    def share(n: int, p: float) -> float:
        return sum(rnd.random() < p for _ in range(n)) / n

    for d in range(departments):
        name = f"dept-{d:02d}"
        on_time, satisfied = rnd.uniform(0.6, 1.0), rnd.uniform(0.6, 1.0)
        for _ in range(rnd.randint(0, 60)):
            start = rating.start - DAY + rnd.randrange(int((span + DAY) / HOUR)) * HOUR
            n = rnd.choice([0, 1, 2, 3, 5, 8, 13])
            rows.append(row(TIMELY, name, start, share(n, on_time) if n else 0.0, n))
        for _ in range(rnd.randint(0, 21)):
            start = rating.start + rnd.randrange(int(span / DAY)) * DAY
            n = rnd.randint(0, 12)
            value = share(n, satisfied) if n else rnd.choice([0.0, float("nan")])
            rows.append(row(SATISFIED, name, start, value, n))
    return rows


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_view_matches_the_reference_on_random_departments(tmp_path, seed):
    rating = weekly(min_orders=15)
    rows = random_rows(seed, departments=12, periods=3, rating=rating)
    expected = reference(rating, rows)
    # The data exercise every branch: rated and unrated, several colours, several periods.
    colours = {r["colour"] for r in expected}
    assert UNRATED in colours
    assert len(colours - {UNRATED}) >= 3
    assert len({r["period_start"] for r in expected}) == 3
    got = view_rows(lake_of(tmp_path, rows, rating), timezone="Asia/Shanghai")
    assert_matches_reference(got, expected)


def test_periods_are_the_same_instants_whatever_the_session_time_zone(tmp_path):
    lake = lake_of(tmp_path, hand_rows(), weekly())
    for tz in ("UTC", "Asia/Shanghai", "America/New_York"):
        starts = sorted({r["period_start"] for r in view_rows(lake, tz)})
        assert starts == [P0, P1], tz


def test_the_default_rating_uses_fortnights_from_its_anchor(tmp_path):
    rating = load_rating(catalog=load_catalog())
    rows = [
        row(TIMELY, "roads", ANCHOR + 13 * DAY + 23 * HOUR, 1.0, 10),  # last hour of the first
        row(SATISFIED, "roads", ANCHOR + 13 * DAY, 0.8, 10),
        row(TIMELY, "roads", ANCHOR + 14 * DAY, 0.5, 10),  # first hour of the second
        row(SATISFIED, "roads", ANCHOR + 14 * DAY, 0.5, 10),
    ]
    got = view_rows(lake_of(tmp_path, rows))  # the lake's default rating
    assert [(r["period_start"], r["period_end"], r["score"], r["colour"]) for r in got] == [
        (ANCHOR, ANCHOR + 14 * DAY, 0.9, "blue"),
        (ANCHOR + 14 * DAY, ANCHOR + 28 * DAY, 0.5, "red"),
    ]
    assert_matches_reference(got, reference(rating, rows))


def test_the_empty_lake_has_an_empty_rating(tmp_path):
    lake = Lake(tmp_path)
    lake.create()
    con = lake.connect()
    cur = con.execute(f"SELECT * FROM {RATING_VIEW}")
    assert [d[0] for d in cur.description] == list(COLUMNS)
    assert cur.fetchall() == []


# -- the view in the lake's DuckDB file ----------------------------------------------------


def test_the_views_are_rewritten_when_the_rating_changes_and_only_then(tmp_path):
    rows = hand_rows()
    lake = lake_of(tmp_path, rows, weekly())
    inode = lake.db_path.stat().st_ino
    Lake(tmp_path, rating=weekly()).create()  # the same rating: the file is kept
    assert lake.db_path.stat().st_ino == inode
    assert by_key(view_rows(lake))[(P0, "roads")]["colour"] == "blue"

    stricter = weekly(min_orders=25)
    Lake(tmp_path, rating=stricter).create()
    assert lake.db_path.stat().st_ino != inode
    got = view_rows(lake)
    assert by_key(got)[(P0, "roads")]["colour"] == UNRATED  # 20 closed orders < 25
    assert_matches_reference(got, reference(stricter, rows))


def test_a_file_without_the_rating_view_is_rewritten(tmp_path):
    lake = lake_of(tmp_path, hand_rows(), weekly())
    con = duckdb.connect(str(lake.db_path))
    con.execute(f"DROP VIEW {RATING_VIEW}")
    con.close()
    Lake(tmp_path, rating=weekly()).create()
    assert len(view_rows(lake)) == 8


def test_a_lake_takes_its_rating_from_a_file(tmp_path):
    path = tmp_path / "rating.yaml"
    path.write_text("period: 7d\nmin_orders: 100\n", encoding="utf-8")
    lake = lake_of(tmp_path / "out", hand_rows(), path)
    assert lake.rating.min_orders == 100
    assert {r["colour"] for r in view_rows(lake)} == {UNRATED}


def test_a_lake_with_a_bad_rating_file_fails_on_create(tmp_path):
    with pytest.raises(ConfigError) as info:
        Lake(tmp_path, rating=FIXTURES / "weights_sum.bad.yaml").create()
    assert "quality.weight: got 0.6" in str(info.value)
    assert not (tmp_path / "cityvitals.duckdb").exists()


def test_a_lake_rates_in_the_time_zone_of_the_flows_catalogue(tmp_path):
    """Periods start at midnight where the flow's daily windows do; a rating file in another
    offset is refused against that catalogue, not the default one."""
    catalog = Catalog(**{**dict(load_catalog()), "timezone": "America/Sao_Paulo"})  # UTC-3
    lake = Lake(tmp_path / "a", catalog=catalog)
    assert lake.rating.timezone == "America/Sao_Paulo"
    assert lake.rating.start == datetime(2026, 1, 5, 3, tzinfo=UTC)
    assert Lake(tmp_path / "b").rating.start == ANCHOR  # the default catalogue's Beijing
    path = tmp_path / "rating.yaml"
    path.write_text("timezone: Asia/Shanghai\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected the catalogue's 'America/Sao_Paulo'"):
        Lake(tmp_path / "c", rating=path, catalog=catalog).create()
    # A flow computing neither indicator has nothing to rate: the default catalogue checks it.
    cut = Catalog(timezone="UTC", indicators=[load_catalog()["fire.temperature"]])
    assert Lake(tmp_path / "d", catalog=cut).rating.timezone == "Asia/Shanghai"


# -- the configuration ---------------------------------------------------------------------


def test_the_default_file_says_what_the_model_defaults_say(catalog):
    from_file = load_rating(DEFAULT_RATING, catalog=catalog)
    assert from_file == Rating.model_validate({}, context={"catalog": catalog})
    assert from_file.period == timedelta(days=14)
    assert from_file.anchor == date(2026, 1, 5)
    assert [(c.colour, c.min_score) for c in from_file.colours] == [
        ("green", 0.95),
        ("blue", 0.90),
        ("yellow", 0.80),
        ("orange", 0.70),
        ("red", 0.0),
    ]
    text = DEFAULT_RATING.read_text(encoding="utf-8")
    for key in ("period", "anchor", "timeliness", "quality", "min_orders", "colours"):
        assert f"# {key}:" in text, key  # each key is documented in the header


def test_a_rating_is_frozen_and_forbids_unknown_keys():
    rating = weekly()
    with pytest.raises(ValueError, match="frozen"):
        rating.min_orders = 1
    with pytest.raises(ValueError, match="Extra inputs"):
        Rating.model_validate({"period": "7d", "colour": "green"})


@pytest.mark.parametrize(
    ("timeliness", "quality", "ok"),
    [
        (0.7, 0.3, True),
        (0.25, 0.75, True),
        (0.333333333, 0.666666667, True),
        (0.5, 0.500001, False),
        (0.5, 0.4, False),
    ],
)
def test_weights_sum_to_one(timeliness, quality, ok):
    spec = {
        "timeliness": {"indicator": TIMELY, "weight": timeliness},
        "quality": {"indicator": SATISFIED, "weight": quality},
    }
    if ok:
        assert Rating.model_validate(spec).quality.weight == quality
    else:
        with pytest.raises(ValueError, match="expected the weights to sum to 1"):
            Rating.model_validate(spec)


def test_colour_names_are_quoted_in_the_sql(tmp_path):
    colours = [
        {"colour": "A'", "min_score": 0.9},
        {"colour": "B", "min_score": 0.8},
        {"colour": "C", "min_score": 0.7},
        {"colour": "D", "min_score": 0.6},
        {"colour": "E", "min_score": 0},
    ]
    got = view_rows(lake_of(tmp_path, hand_rows(), weekly(colours=colours)))
    assert by_key(got)[(P0, "roads")]["colour"] == "A'"


def test_without_a_catalogue_indicators_are_not_checked():
    rating = Rating.model_validate({"timeliness": {"indicator": "x.y", "weight": 0.5}})
    assert rating.timeliness.indicator == "x.y"


def test_period_of_needs_an_aware_datetime():
    with pytest.raises(ValueError, match="timezone-aware"):
        weekly().period_of(datetime(2026, 1, 6))
    assert weekly().period_of(ANCHOR - HOUR) is None
    assert weekly().period_of(P1) == (P1, P1 + WEEK)


def test_every_fixture_declares_its_expectations():
    assert len(BAD) >= 6
    for path in BAD:
        assert expectations(path), path.name


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_bad_ratings_list_every_problem_with_file_line_and_key(path, catalog):
    with pytest.raises(ConfigError) as info:
        load_rating(path, catalog=catalog)
    assert_problems_match(info.value, path)


# -- cityvitals check ----------------------------------------------------------------------


def test_check_prints_the_rating():
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 0, result.output
    assert "department rating: every 14d from 2026-01-05 00:00 Asia/Shanghai" in result.output
    assert "windows aligned in Asia/Shanghai (a day from 00:00 there)" in result.output
    assert "green >= 0.95" in result.output


def test_check_through_the_command_names_the_rating_file_line_and_key():
    bad = FIXTURES / "colours.bad.yaml"
    done = check_command("--rating", str(bad))
    assert done.returncode == 2
    assert f"{bad}:11: colours.2.colour: got 'green'" in done.stderr
    assert done.stdout == ""
