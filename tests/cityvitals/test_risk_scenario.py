"""Risk points on the simulated afternoon: graded up in the rain, down after it, never flapping.

The SMALL scenario runs once through the real flow (``small_run``); the level
changes are read back from the lake's ``risk_levels`` table with DuckDB.
"""

from __future__ import annotations

import itertools

import pytest

from cityvitals.simulate import risk_expectations
from cityvitals.summary import summarize
from schemas.families import SEVERITIES
from tests.conftest import SMALL
from thresholds.risk_points import load_risk_points

RANK = {s: i for i, s in enumerate(SEVERITIES)}


def changes_of(lake, point_id: str) -> list[dict]:
    con = lake.connect()
    try:
        cur = con.execute(
            "SELECT * FROM risk_levels WHERE risk_point_id = ? ORDER BY event_ts", [point_id]
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    finally:
        con.close()


def flaps(levels: list[str]) -> bool:
    """Flapping: the level goes down and then up again (or up, down, up) within the story.

    On a single storm a point's levels must be unimodal: only upgrades, then
    only downgrades. Any downgrade followed by an upgrade is a flap.
    """
    went_down = False
    for a, b in itertools.pairwise(levels):
        if RANK[b] < RANK[a]:
            went_down = True
        elif went_down:
            return True
    return False


def test_flap_definition_catches_up_down_up():
    assert flaps(["normal", "yellow", "blue", "yellow"])
    assert flaps(["normal", "red", "orange", "red", "normal"])
    assert not flaps(["normal", "blue", "orange", "red", "yellow", "normal"])


@pytest.mark.parametrize(
    "expected", risk_expectations(SMALL), ids=lambda e: f"{e.risk_point_id}-{e.min_peak}"
)
def test_risk_point_follows_the_rain(small_run, expected):
    _, lake = small_run
    rows = changes_of(lake, expected.risk_point_id)
    if not expected.rises:
        assert rows == [], f"{expected.risk_point_id} outside the rain changed level"
        return
    levels = ["normal"] + [r["to_level"] for r in rows]
    assert not flaps(levels), levels
    ups = [r for r in rows if r["change"] == "upgraded"]
    downs = [r for r in rows if r["change"] == "downgraded"]
    assert ups and downs, levels
    # Up during the rain, down after it, back to normal before the afternoon ends.
    assert all(expected.rise_from <= r["event_ts"] <= expected.rise_until for r in ups), ups
    assert all(r["event_ts"] > expected.rise_until for r in downs), downs
    assert levels[-1] == "normal"
    assert rows[-1]["event_ts"] <= expected.normal_by
    peak = max(levels, key=RANK.__getitem__)
    assert RANK[peak] >= RANK[expected.min_peak], levels


def test_every_change_record_is_consistent(small_run):
    _, lake = small_run
    points = load_risk_points()
    seen = 0
    for p in points.points:
        previous = "normal"
        for r in changes_of(lake, p.id):
            seen += 1
            assert r["from_level"] == previous
            assert r["change"] == (
                "upgraded" if RANK[r["to_level"]] > RANK[r["from_level"]] else "downgraded"
            )
            assert (r["category"], r["grid_id"], r["district_id"], r["model"]) == (
                p.category,
                p.location.grid_id,
                p.location.district_id,
                p.model,
            )
            assert 0.0 <= r["score"] <= 1.0
            # An upgrade's score reaches the new level's bound; the factors are shares.
            if r["change"] == "upgraded":
                assert r["score"] >= points.models[p.model].levels[r["to_level"]]
            shares = [f["contribution"] for f in r["factors"]]
            assert shares == sorted(shares, reverse=True)
            assert sum(shares) <= 1.0 + 1e-9
            names = {f.name for f in p.base} | {f.name for f in p.factors}
            assert {f["factor"] for f in r["factors"]} <= names
            assert r["emitted_at"] is not None
            previous = r["to_level"]
    assert seen >= 6


def test_the_summary_counts_risk_level_changes(small_run):
    _, lake = small_run
    s = summarize(lake)
    up, down = s["risk_level_changes"]["upgraded"], s["risk_level_changes"]["downgraded"]
    assert up >= 3 and down >= 3
    assert s["risk_points_changed"] == sum(e.rises for e in risk_expectations(SMALL))
