"""Properties of the evaluator that must hold for every series (hypothesis)."""

from __future__ import annotations

import itertools

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.families import SEVERITIES
from tests.thresholds.series import NOW, at, evaluator, values

RANK = {name: i for i, name in enumerate(SEVERITIES)}
PROPERTY = settings(max_examples=120, deadline=None)

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


def states(changes: list[dict]) -> list[str]:
    return [c["state"] for c in changes]


@PROPERTY
@given(
    bound=st.floats(min_value=-100, max_value=100),
    hysteresis=st.floats(min_value=0.5, max_value=10),
    fractions=st.lists(st.floats(min_value=-1, max_value=1), min_size=1, max_size=60),
    leave=st.booleans(),
)
def test_oscillating_inside_the_hysteresis_band_opens_and_clears_at_most_once(
    bound, hysteresis, fractions, leave
):
    """Values within ``bound ± hysteresis`` never flap; leaving the band clears once."""
    series = [bound + f * hysteresis * 0.999 for f in fractions]
    if leave:
        series.append(bound - 2 * hysteresis)
    ev = evaluator(levels={"red": bound}, hysteresis=hysteresis)
    _, changes = ev.evaluate(values("f", series), now=NOW)
    assert states(changes).count("opened") <= 1
    assert states(changes).count("cleared") <= 1
    if not leave:
        assert "cleared" not in states(changes)
    if any(v >= bound for v in series):
        assert states(changes)[0] == "opened"


@st.composite
def spiky(draw, need: int):
    """Calm values with spikes shorter than ``need`` windows, each followed by calm."""
    series: list[float] = []
    for _ in range(draw(st.integers(min_value=1, max_value=8))):
        series += draw(st.lists(st.floats(min_value=0, max_value=69.9), min_size=1, max_size=5))
        series += draw(
            st.lists(st.floats(min_value=70, max_value=1e4), min_size=1, max_size=need - 1)
        )
    series.append(draw(st.floats(min_value=0, max_value=69.9)))
    return series


@PROPERTY
@given(data=st.data(), need=st.integers(min_value=2, max_value=6), as_time=st.booleans())
def test_a_spike_shorter_than_for_never_opens(data, need, as_time):
    series = data.draw(spiky(need))
    ev = evaluator(levels={"red": 70}, **{"for": f"{need}m" if as_time else need})
    levels, changes = ev.evaluate(values("f", series), now=NOW)
    assert changes == []
    assert set(levels["level"]) == {"normal"}
    assert ev.open_alerts == 0


@PROPERTY
@given(
    series=st.lists(st.floats(min_value=0, max_value=120), min_size=1, max_size=80),
    hysteresis=st.floats(min_value=0, max_value=8),
    need=st.integers(min_value=1, max_value=3),
    calm=st.integers(min_value=1, max_value=3),
)
def test_every_alert_life_is_ordered_opened_moves_cleared(series, hysteresis, need, calm):
    ev = evaluator(
        levels={"blue": 20, "yellow": 45, "orange": 57, "red": 70},
        hysteresis=hysteresis,
        clear_for=calm,
        **{"for": need},
    )
    _, changes = ev.evaluate(values("f", series), now=NOW)
    lives: dict[str, list[dict]] = {}
    for c in changes:
        lives.setdefault(c["alert_id"], []).append(c)
    for life in lives.values():
        assert [c["sequence"] for c in life] == list(range(len(life)))
        assert life[0]["state"] == "opened"
        assert life[0]["previous_severity"] == "normal"
        assert all(c["state"] != "cleared" for c in life[:-1])
        for before, c in itertools.pairwise(life):
            assert c["previous_severity"] == before["severity"]
            assert c["event_ts"] > before["event_ts"]
        for c in life:
            rises = RANK[c["severity"]] > RANK[c["previous_severity"]]
            assert rises is (c["state"] in ("opened", "escalated"))
            assert (c["severity"] == "normal") == (c["state"] == "cleared")
            assert c["peak_value"] >= c["value"]
    # Alerts follow one another: at most one is open at a time, and only the last.
    opened = [c["event_ts"] for c in changes if c["state"] == "opened"]
    cleared = [c["event_ts"] for c in changes if c["state"] == "cleared"]
    assert len(opened) - len(cleared) in (0, 1)
    assert all(c < o for c, o in zip(cleared, opened[1:], strict=False))
    assert ev.open_alerts == len(opened) - len(cleared)


@PROPERTY
@given(
    series=st.lists(st.floats(min_value=0, max_value=120), min_size=2, max_size=60),
    cuts=st.lists(st.integers(min_value=1, max_value=59), max_size=6, unique=True),
    measure=st.sampled_from(["value", "change"]),
)
def test_results_do_not_depend_on_how_values_are_batched(series, cuts, measure):
    def run(chunks):
        ev = evaluator(
            levels={"yellow": 20, "red": 50}, measure=measure, clear_for="2m", **{"for": 2}
        )
        out = [ev.evaluate(chunk, now=NOW) for chunk in chunks]
        return pl.concat([lv for lv, _ in out]), [c for _, ch in out for c in ch]

    frame = values("f", series)
    bounds = [0, *sorted(c for c in cuts if c < len(series)), len(series)]
    chunks = [
        frame.filter(pl.col("window_start").is_between(at(a), at(b), closed="left"))
        for a, b in itertools.pairwise(bounds)
    ]
    whole_levels, whole = run([frame])
    split_levels, split = run(chunks)
    assert split == whole
    assert split_levels.equals(whole_levels)
