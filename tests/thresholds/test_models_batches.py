"""The scorer on batches as they come: rows in any order, gaps, several windows per series."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from indicators.definitions import Catalog, EwmZScore, QuantileModel, load_catalog
from thresholds.models import EwmScores, RiverScores, Scorer

T0 = datetime(2026, 5, 12, 6, tzinfo=UTC)


def catalog(*models) -> Catalog:
    return load_catalog().model_copy(update={"models": list(models)})


def frame(rows: list[tuple[str, str, int, float | None]]) -> pl.DataFrame:
    """Indicator values: (indicator, entity, window index, value)."""
    return pl.DataFrame(
        {
            "indicator_id": [i for i, _, _, _ in rows],
            "sector": "s",
            "entity_type": "t",
            "entity_id": [e for _, e, _, _ in rows],
            "window_start": [T0 + timedelta(minutes=k) for _, _, k, _ in rows],
            "window_end": [T0 + timedelta(minutes=k + 1) for _, _, k, _ in rows],
            "value": pl.Series([v for *_, v in rows], dtype=pl.Float64),
            "samples": 4,
            "unit": "u",
        },
        schema_overrides={"window_start": pl.Datetime("us", "UTC")},
    )


def test_scores_are_each_series_scored_alone_in_window_order_whatever_the_row_order():
    a = EwmZScore(id="a.z", indicator="a", kind="ewm_zscore", description="d", grace=3)
    b = EwmZScore(
        id="b.z", indicator="b", kind="ewm_zscore", description="d", grace=2, direction="both"
    )
    rng = random.Random(3)
    batches = []
    for start in range(0, 40, 8):  # several windows of each series per batch
        rows = [
            (i, e, k, rng.choice([None, float("nan"), rng.gauss(20, 2), rng.gauss(40, 2)]))
            for i in "abc"
            for e in ("e3", "e1", "e2")
            for k in range(start, start + 8)
            if rng.random() < 0.9  # gaps
        ]
        rng.shuffle(rows)
        batches.append(frame(rows))
    scorer = Scorer(catalog(a, b))
    got = pl.concat([scorer.score(batch) for batch in batches])
    # Reference: one series at a time, window by window.
    expected = []
    alone: dict[tuple[str, str], EwmScores] = {}
    for batch in batches:
        for model in (a, b):
            ordered = batch.filter(
                (pl.col("indicator_id") == model.indicator)
                & pl.col("value").is_not_null()
                & pl.col("value").is_not_nan()
            ).sort("entity_id", "window_start")
            for row in ordered.iter_rows(named=True):
                state = alone.setdefault((model.id, row["entity_id"]), EwmScores(model))
                score = state.update([row["entity_id"]], [row["value"]])[0]
                if not np.isnan(score):
                    expected.append(row | {"indicator_id": model.id, "value": score})
    expected = pl.DataFrame(expected, schema=got.schema).with_columns(unit=pl.lit("score"))
    assert got.height > 0
    assert got.equals(expected)  # same rows, same values, same order


def test_new_series_beyond_the_cap_are_refused_in_entity_order():
    q = QuantileModel(
        id="a.q", indicator="a", kind="quantile", description="d", grace=0, max_series=2
    )
    scorer = Scorer(catalog(q))
    rows = [("a", e, k, 1.0 + k) for e in ("c", "a", "b") for k in range(2)]
    out = scorer.score(frame(rows[::-1]))
    assert sorted(set(out["entity_id"])) == ["a", "b"]  # c comes last: refused
    assert scorer.refused == {"a.q": 1}
    assert isinstance(scorer._models["a.q"], RiverScores)


def test_a_batch_without_a_value_to_score_gives_no_rows():
    a = EwmZScore(id="a.z", indicator="a", kind="ewm_zscore", description="d", grace=0)
    scorer = Scorer(catalog(a))
    empty = frame([("a", "e", 0, None), ("x", "e", 0, 1.0)])
    assert scorer.score(empty).height == 0
    assert scorer.score(empty.clear()).height == 0
    assert scorer.score(frame([("a", "e", 0, 1.0)])).height == 1
