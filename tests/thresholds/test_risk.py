"""The composite score, the grader and a point's tracker, as pure logic."""

from __future__ import annotations

import pickle
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thresholds.risk import Grader, PointTracker, score
from thresholds.risk_points import BaseFactor, DynamicFactor, GradingModel, RiskPoint

T0 = datetime(2026, 5, 12, 6, 0, tzinfo=UTC)
STEP = timedelta(minutes=5)
RANK = {"normal": 0, "blue": 1, "yellow": 2, "orange": 3, "red": 4}


def model(**changes) -> GradingModel:
    data = {
        "levels": {"blue": 0.2, "yellow": 0.4, "orange": 0.6, "red": 0.8},
        "clear": {"blue": 0.15, "yellow": 0.3, "orange": 0.5, "red": 0.7},
        "up_after": 2,
        "down_after": 3,
        "cool_down": "15m",
    }
    return GradingModel.model_validate({**data, **changes})


def feed(grader: Grader, scores: list[float], start: int = 0) -> list[tuple[int, str, str]]:
    """(window index, from, to) of every change, scores one window apart from T0."""
    out = []
    for i, s in enumerate(scores, start):
        change = grader.update(s, T0 + i * STEP)
        if change is not None:
            out.append((i, change.from_level, change.to_level))
    return out


# -- the score --------------------------------------------------------------------------------


BASE = [BaseFactor(name="soil", value=0.8, weight=3), BaseFactor(name="pipes", value=0.4)]
DYN = [
    DynamicFactor(name="rain", indicator="flood.rainfall", entity="r", low=2, high=22, weight=2),
    DynamicFactor(
        name="speed", indicator="traffic.segment_speed", entity="s", low=40, high=10
    ),  # falling speed is the bad side
]


def test_score_is_base_times_dynamic_with_weights():
    s = score(BASE, DYN, {"rain": 12.0, "speed": 25.0})
    base = (3 * 0.8 + 0.4) / 4  # 0.7
    dynamic = (2 * 0.5 + 0.5) / 3  # 0.5
    assert s.score == pytest.approx(base * dynamic)
    assert score(BASE, DYN, {"rain": 0.0, "speed": 60.0}).score == 0.0
    assert score(BASE, DYN, {"rain": 99.0, "speed": 0.0}).score == pytest.approx(base)


def test_contributions_are_shares_that_sum_to_one_largest_first():
    s = score(BASE, DYN, {"rain": 20.0, "speed": 35.0})
    shares = [c.contribution for c in s.factors]
    assert sum(shares) == pytest.approx(1.0)
    assert shares == sorted(shares, reverse=True)
    by_name = {c.factor: c for c in s.factors}
    assert by_name["rain"].value == 20.0 and by_name["soil"].value == 0.8
    # Half the score is the base's, split by weighted value; half the dynamic factors'.
    assert by_name["soil"].contribution + by_name["pipes"].contribution == pytest.approx(0.5)
    assert by_name["soil"].contribution / by_name["pipes"].contribution == pytest.approx(6.0)
    assert by_name["rain"].contribution > by_name["speed"].contribution
    assert all(c.contribution == 0.0 for c in score(BASE, DYN, {"rain": 0, "speed": 50}).factors)


@given(
    st.lists(st.floats(0, 1), min_size=1, max_size=4),
    st.lists(st.floats(-50, 50), min_size=1, max_size=4),
)
def test_score_stays_in_the_unit_interval(bases, values):
    base = [BaseFactor(name=f"b{i}", value=v) for i, v in enumerate(bases)]
    dyn = [
        DynamicFactor(name=f"d{i}", indicator="x", entity="e", low=-10, high=10)
        for i in range(len(values))
    ]
    s = score(base, dyn, {f"d{i}": v for i, v in enumerate(values)})
    assert 0.0 <= s.score <= 1.0
    assert sum(c.contribution for c in s.factors) == pytest.approx(1.0 if s.score > 0 else 0.0)


# -- the grader -------------------------------------------------------------------------------


def test_upgrade_needs_n_consecutive_windows_at_or_above_the_bound():
    g = Grader(model(up_after=3))
    assert feed(g, [0.45, 0.45, 0.1, 0.45, 0.45]) == []  # broken streak
    assert feed(g, [0.4], start=5) == [(5, "normal", "yellow")]  # third in a row, at the bound
    # The gravest level all of the last N windows reached.
    g = Grader(model(up_after=2))
    assert feed(g, [0.9, 0.65]) == [(1, "normal", "orange")]


def test_downgrade_needs_m_windows_below_the_lower_bound_and_the_cool_down():
    g = Grader(model(down_after=3, cool_down="30m"))
    assert feed(g, [0.9, 0.9]) == [(1, "normal", "red")]
    # Below red's clearing bound (0.7) from window 2: three windows by window 4, but the
    # cool-down since window 1 lasts until window 7.
    assert feed(g, [0.65] * 6, start=2) == [(7, "red", "orange")]
    g = Grader(model(down_after=3, cool_down="5m"))
    feed(g, [0.9, 0.9])
    assert feed(g, [0.65, 0.65, 0.65], start=2) == [(4, "red", "orange")]


def test_downgrade_lands_on_the_level_the_score_still_holds():
    g = Grader(model(cool_down="5m"))
    feed(g, [0.9, 0.9])
    # 0.35 is below every clearing bound from red down to yellow's (0.3): yellow holds.
    assert feed(g, [0.35, 0.35, 0.35], start=2) == [(4, "red", "yellow")]
    assert feed(g, [0.0, 0.0, 0.0], start=5) == [(7, "yellow", "normal")]
    assert g.get() == "normal"


def test_no_flapping_on_a_score_hovering_at_a_bound():
    g = Grader(model(cool_down="5m"))
    hover = [0.4 + (0.02 if i % 2 else -0.02) for i in range(60)]  # 0.38, 0.42, ...
    changes = feed(g, [0.42, 0.42, *hover])
    assert changes == [(1, "normal", "yellow")]  # up once, never back: 0.38 > clear 0.3


def test_no_level_is_revisited_up_down_up_on_noise_around_bounds():
    rng = random.Random(3)
    g = Grader(model())
    scores = [min(1.0, max(0.0, 0.6 + rng.uniform(-0.08, 0.08))) for _ in range(300)]
    levels = ["normal"] + [to for _, _, to in feed(g, scores)]
    assert not _flaps(levels), levels


def _flaps(levels: list[str]) -> bool:
    """An up-down-up (or down-up-down) pattern through the same level."""
    return any(
        (RANK[a] < RANK[b] > RANK[c] and RANK[c] < RANK[d])
        or (RANK[a] > RANK[b] < RANK[c] and RANK[c] > RANK[d])
        for a, b, c, d in zip(levels, levels[1:], levels[2:], levels[3:], strict=False)
    )


def test_a_grader_restored_from_pickle_continues_as_if_uninterrupted():
    rng = random.Random(11)
    scores = [rng.random() for _ in range(200)]
    straight = Grader(model())
    expected = feed(straight, scores)
    for cut in (1, 37, 120):
        g = Grader(model())
        head = feed(g, scores[:cut])
        g = pickle.loads(pickle.dumps(g))
        assert head + feed(g, scores[cut:], start=cut) == expected
    assert len(expected) >= 4


# -- the tracker ------------------------------------------------------------------------------


def point() -> RiskPoint:
    return RiskPoint.model_validate(
        {
            "id": "rp-1",
            "category": "road_section",
            "model": "m",
            "location": {"grid_id": "D01-G03", "district_id": "D01"},
            "base": [{"name": "soil", "value": 1.0}],
            "factors": [
                {"name": "rain", "indicator": "flood.rainfall", "entity": "r1", "low": 0,
                 "high": 20},
                {"name": "vib", "indicator": "collapse.road_vibration", "entity": "s1", "low": 1,
                 "high": 3},
            ],
        }
    )  # fmt: skip


def rows() -> list[tuple]:
    """15-minute rain windows and 5-minute vibration windows over two hours of a storm."""
    rain = [("flood.rainfall", "r1", T0 + timedelta(minutes=15 * k), v)
            for k, v in enumerate([0, 0, 10, 20, 20, 20, 15, 5, 0, 0, 0])]  # fmt: skip
    vib = [
        ("collapse.road_vibration", "s1", T0 + k * STEP, 1.0 + 2.0 * (6 <= k < 20))
        for k in range(33)
    ]
    return rain + vib


def test_tracker_scores_each_step_once_every_factor_has_reached_it():
    tr = PointTracker(point(), model(), STEP)
    rain = [r for r in rows() if r[0] == "flood.rainfall"]
    vib = [r for r in rows() if r[0] != "flood.rainfall"]
    assert tr.add(rain) == []  # vibration has not reached any window yet
    out = tr.add(vib)
    assert [(r["from_level"], r["to_level"], r["change"]) for r in out][:1] == [
        ("normal", "orange", "upgraded")
    ]
    first = out[0]
    assert first["event_ts"] == T0 + timedelta(minutes=35)  # vibration from 30, rain from 30
    assert first["risk_point_id"] == "rp-1" and first["model"] == "m"
    assert first["factors"][0]["factor"] == "soil"
    assert out[-1]["to_level"] == "normal"
    assert tr.level() == "normal"


@pytest.mark.parametrize("seed", range(5))
def test_tracker_output_does_not_depend_on_how_factors_interleave(seed):
    expected = PointTracker(point(), model(), STEP).add(rows())
    assert len(expected) >= 3
    rng = random.Random(seed)
    rain = [r for r in rows() if r[0] == "flood.rainfall"]
    vib = [r for r in rows() if r[0] != "flood.rainfall"]
    tr = PointTracker(point(), model(), STEP)
    got = []
    while rain or vib:  # each series in order, the two in a random interleaving and batching
        src = rain if (rain and (not vib or rng.random() < 0.5)) else vib
        n = rng.randint(1, 4)
        batch, src[:n] = src[:n], []
        if rng.random() < 0.3:
            tr = pickle.loads(pickle.dumps(tr))  # and a recovery now and then
        got += tr.add(batch)
    assert got == expected
