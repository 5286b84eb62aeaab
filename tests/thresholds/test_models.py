"""Online models: river is the reference, state stays small, a restore continues exactly."""

from __future__ import annotations

import pickle
import sys
import tracemalloc
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from river import stats

from indicators.definitions import (
    AdwinModel,
    EwmZScore,
    HalfSpaceTreesModel,
    QuantileModel,
    load_catalog,
)
from thresholds.models import EwmScores, RiverScores, Scorer

T0 = datetime(2026, 5, 12, 6, tzinfo=UTC)


def ewm(**changes) -> EwmZScore:
    base = {"id": "t.anomaly", "indicator": "t", "kind": "ewm_zscore", "description": "d"}
    return EwmZScore(**(base | changes))


def values(indicator: str, rows: list[tuple[str, int, float]], minutes: int = 5) -> pl.DataFrame:
    """Indicator values as the window store emits them: (entity, window index, value)."""
    n = len(rows)
    return pl.DataFrame(
        {
            "indicator_id": [indicator] * n,
            "sector": ["traffic"] * n,
            "entity_type": ["road_segment"] * n,
            "entity_id": [e for e, _, _ in rows],
            "window_start": [T0 + timedelta(minutes=minutes * k) for _, k, _ in rows],
            "window_end": [T0 + timedelta(minutes=minutes * (k + 1)) for _, k, _ in rows],
            "value": [float(v) for _, _, v in rows],
            "samples": [3] * n,
            "unit": ["s"] * n,
        },
        schema_overrides={
            "window_start": pl.Datetime("us", "UTC"),
            "window_end": pl.Datetime("us", "UTC"),
        },
    )


@pytest.mark.parametrize("alpha", [0.05, 0.3, 1.0])
def test_the_columnar_ewm_has_rivers_mean_and_variance(alpha):
    """river's EWMean/EWVar with fading_factor = alpha are the reference, series by series."""
    rng = np.random.default_rng(3)
    model = EwmScores(ewm(alpha=alpha, grace=10_000))  # in warm-up: learns every value
    river = {e: (stats.EWMean(alpha), stats.EWVar(alpha)) for e in ("a", "b", "c")}
    for step in range(200):
        # Batches of changing composition: series come and go, in varying order.
        present = [e for e in ("c", "a", "b") if rng.random() < 0.7] or ["a"]
        xs = rng.normal(50.0 + step * 0.1, 5.0, len(present)) * rng.choice([1, 10], len(present))
        model.update(present, xs)
        for e, x in zip(present, xs, strict=True):
            river[e][0].update(x)
            river[e][1].update(x)
    for e, (mean, var) in river.items():
        got_mean, got_var, _ = model.stats(e)
        assert got_mean == pytest.approx(mean.get(), rel=1e-12, abs=1e-12)
        assert got_var == pytest.approx(var.get(), rel=1e-9, abs=1e-12)


def test_default_model_state_is_small_at_700000_series():
    """Measured with tracemalloc, plus the entity ids it keeps: at most 200 bytes per series."""
    n = 700_000
    model = EwmScores(ewm(grace=2))
    rng = np.random.default_rng(1)
    entities = [f"bldg-{i // 400:04d}/flat-{i % 400:04d}" for i in range(n)]
    xs = rng.normal(25.0, 1.0, n)
    ids = sum(sys.getsizeof(e) for e in entities)  # made before tracing, kept by the model
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        model.update(entities, xs)
        per_series = (tracemalloc.get_traced_memory()[0] - before + ids) / n
    finally:
        tracemalloc.stop()
    assert len(model) == n
    model.update([f"bldg-0000/flat-{i:04d}" for i in range(400)], rng.normal(25.0, 1.0, 400))
    assert len(model) == n and model.stats("bldg-0000/flat-0001")[2] == 2
    assert 20 <= per_series <= 200, per_series
    assert len(pickle.dumps(model)) / n <= 64


def test_warm_up_gives_no_score_and_a_step_is_scored_on_its_side():
    model = EwmScores(ewm(grace=5, direction="above", min_std=0.1))
    out = [model.update(["s"], [v])[0] for v in [10, 10.2, 9.9, 10.1, 10.0, 10.1, 14, 6]]
    assert np.isnan(out[:5]).all()
    assert out[5] < 0.9
    assert out[6] > 0.999999  # far above: scored
    assert out[7] == 0.0  # far below: "above" does not watch that side


def test_a_long_anomaly_is_not_learned_into_the_baseline():
    """With learning frozen above ``freeze_above``, a held step stays anomalous to its end."""
    calm = [20.0 + 0.5 * np.sin(k) for k in range(30)]
    held = [30.0] * 60
    frozen = EwmScores(ewm(grace=10, alpha=0.1, freeze_above=0.99))
    learning = EwmScores(ewm(grace=10, alpha=0.1, freeze_above=1.0))
    f = [frozen.update(["s"], [v])[0] for v in calm + held]
    lr = [learning.update(["s"], [v])[0] for v in calm + held]
    assert min(f[30:]) > 0.999999
    assert lr[-1] < 0.5  # without the freeze, the flood became the new normal
    assert frozen.stats("s")[2] == 30  # the held values were not learned


def test_several_windows_of_a_series_in_one_batch_are_applied_in_order():
    cat = load_catalog()
    rows = [("seg-1", k, 60 + (k % 3)) for k in range(20)] + [("seg-2", k, 80.0) for k in range(20)]
    one_go = Scorer(cat).score(values("traffic.segment_travel_time", rows))
    stepwise = Scorer(cat)
    parts = [
        stepwise.score(values("traffic.segment_travel_time", [r for r in rows if r[1] == k]))
        for k in range(20)
    ]
    key = ["indicator_id", "entity_id", "window_start"]
    assert one_go.sort(key).equals(pl.concat(parts).sort(key))
    assert one_go.height == 2 * (20 - cat.model("traffic.segment_travel_time.anomaly").grace)
    assert set(one_go["unit"]) == {"score"} and one_go["samples"].to_list() == [3] * one_go.height


def _all_kinds_catalog():
    cat = load_catalog()
    travel = "traffic.segment_travel_time"
    common = {"indicator": travel, "description": "d", "grace": 5}
    models = [
        *cat.models,
        QuantileModel(id="traffic.tt.q", kind="quantile", window=20, **common),
        HalfSpaceTreesModel(
            id="traffic.tt.hst",
            kind="half_space_trees",
            features=["traffic.segment_speed"],
            window_size=10,
            seed=7,
            **common,
        ),
        AdwinModel(id="traffic.tt.adwin", kind="adwin", **common),
    ]
    return cat.model_copy(update={"models": models})


def _traffic_batches(n: int = 60) -> list[pl.DataFrame]:
    rng = np.random.default_rng(5)
    out = []
    for k in range(n):
        jam = 400.0 if 40 <= k < 50 else 0.0
        tt = [("seg-1", k, 70 + rng.normal(0, 3) + jam), ("seg-2", k, 90 + rng.normal(0, 3))]
        speed = [(e, k, 36 + rng.normal(0, 1) - (20 if v > 200 else 0)) for e, k, v in tt]
        out.append(
            pl.concat(
                [
                    values("traffic.segment_travel_time", tt),
                    values("traffic.segment_speed", speed),
                ]
            )
        )
    return out


def test_a_restored_scorer_continues_exactly_like_an_uninterrupted_one():
    """Every kind: pickle mid-stream (as Bytewax recovery does), restore, carry on."""
    cat = _all_kinds_catalog()
    batches = _traffic_batches()
    straight = Scorer(cat)
    expected = [straight.score(b) for b in batches]
    first = Scorer(cat)
    got = [first.score(b) for b in batches[:30]]
    resumed = pickle.loads(pickle.dumps(first, protocol=pickle.HIGHEST_PROTOCOL))
    got += [resumed.score(b) for b in batches[30:]]
    assert pl.concat(got).equals(pl.concat(expected))
    ids = set(pl.concat(expected)["indicator_id"])
    assert {"traffic.tt.q", "traffic.tt.hst", "traffic.tt.adwin"} <= ids


def test_the_heavier_kinds_see_the_jam():
    scorer = Scorer(_all_kinds_catalog())
    scores = pl.concat([scorer.score(b) for b in _traffic_batches()])
    seg1 = scores.filter(pl.col("entity_id") == "seg-1")

    def window(model: str, lo: int, hi: int) -> pl.Series:
        start, end = T0 + timedelta(minutes=5 * lo), T0 + timedelta(minutes=5 * hi)
        return seg1.filter(
            (pl.col("indicator_id") == model)
            & pl.col("window_start").is_between(start, end, "left")
        )["value"]

    assert window("traffic.tt.q", 40, 50).min() > 0.9 > window("traffic.tt.q", 20, 40).max()
    assert window("traffic.tt.hst", 40, 42).min() > window("traffic.tt.hst", 20, 40).mean()
    adwin = window("traffic.tt.adwin", 40, 60)
    assert adwin.max() == 1.0 and window("traffic.tt.adwin", 5, 40).max() == 0.0
    assert adwin[-1] < 1.0  # fading after the detection


def test_a_heavier_model_refuses_series_beyond_its_cap_and_counts_them():
    m = QuantileModel(
        id="x.q", indicator="x", kind="quantile", description="d", grace=0, max_series=2
    )
    model = RiverScores(m)
    out = model.update(["a", "b", "c", "d"], [1.0, 2.0, 3.0, 4.0])
    assert len(model) == 2 and model.refused == 2
    assert np.isnan(out[2:]).all() and not np.isnan(out[:2]).any()
    model.update(["c"], [5.0])
    assert model.refused == 2  # distinct series


def test_an_empty_batch_scores_nothing_and_learns_nothing():
    empty = np.zeros(0, np.int64)
    quantile = QuantileModel(id="x.q", indicator="x", kind="quantile", description="d")
    for state in (EwmScores(ewm()), RiverScores(quantile)):
        assert state.update_in_rounds([], empty, empty, np.zeros(0)).size == 0
        assert len(state) == 0
