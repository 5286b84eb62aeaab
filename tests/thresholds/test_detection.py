"""The online models find the scenario's anomalous stretches: precision and recall >= 0.9.

Definitions (also in the README):

- **Truth**: each incident of ``cityvitals.simulate.incidents`` whose indicator has a model
  in the catalogue is one true stretch ``[start, end)`` of that model on that entity. The
  script's dismissal jam hits all three nan2 arterials (``seg-nan2-1`` is the incident's
  entity, ``-2`` and ``-3`` jam with it over the same minutes, to 620 s and 480 s): they are
  true stretches too.
- **Detection**: a maximal run of adjacent windows of one model and entity whose score is
  at or above the lowest bound of the model's rules (the level an operator first sees).
- **Recall**: true stretches that some detection of the same model and entity overlaps,
  over all true stretches. **Precision**: detections that overlap a true stretch of their
  model and entity, over all detections, on every entity the model scores (hundreds of
  calm flats, gauges, segments, venues and garages).

A model that flags everything detects one long run per calm entity and fails precision;
the last test checks that the measure does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import polars as pl

from cityvitals.simulate import incidents
from indicators.definitions import load_catalog
from thresholds.rules import load_rules

#: The arterials that jam with seg-nan2-1 in the script (cityvitals/simulate.py, _JAM_PEAKS).
COMPANIONS = {"dismissal_congestion": ["seg-nan2-2", "seg-nan2-3"]}


@dataclass(frozen=True)
class Stretch:
    model: str
    entity: str
    start: datetime
    end: datetime

    def overlaps(self, other: Stretch) -> bool:
        return (
            (self.model, self.entity) == (other.model, other.entity)
            and self.start < other.end
            and other.start < self.end
        )


def truth(scenario) -> list[Stretch]:
    models = {m.indicator: m.id for m in load_catalog().models}
    out = []
    for i in incidents(scenario):
        if i.indicator_id in models:
            for entity in [i.entity_id, *COMPANIONS.get(i.id, [])]:
                out.append(Stretch(models[i.indicator_id], entity, i.start, i.end))
    return out


def detections(scores: pl.DataFrame) -> list[Stretch]:
    """Maximal runs of adjacent windows at or above each model's lowest rule bound."""
    cat = load_catalog()
    rules = load_rules(catalog=cat)
    out = []
    for m in cat.models:
        bound = min(min(r.levels.values()) for r in rules.for_indicator(m.id))
        hot = scores.filter((pl.col("indicator_id") == m.id) & (pl.col("value") >= bound))
        for (entity,), rows in (
            hot.sort("window_start").partition_by("entity_id", as_dict=True).items()
        ):
            run = None
            for start, end in rows.select("window_start", "window_end").iter_rows():
                if run is not None and run[1] == start:
                    run[1] = end
                    continue
                if run is not None:
                    out.append(Stretch(m.id, entity, *run))
                run = [start, end]
            out.append(Stretch(m.id, entity, *run))
    return out


def precision_recall(found: list[Stretch], true: list[Stretch]) -> tuple[float, float]:
    hits = sum(any(d.overlaps(t) for t in true) for d in found)
    caught = sum(any(t.overlaps(d) for d in found) for t in true)
    return (hits / len(found) if found else 0.0), (caught / len(true) if true else 0.0)


def _scores(lake) -> pl.DataFrame:
    ids = [m.id for m in load_catalog().models]
    rows = (
        lake.connect()
        .execute(
            "SELECT indicator_id, entity_id, window_start, window_end, value "
            "FROM indicator_values WHERE list_contains(?, indicator_id)",
            [ids],
        )
        .fetchall()
    )
    return pl.DataFrame(
        rows,
        schema=["indicator_id", "entity_id", "window_start", "window_end", "value"],
        orient="row",
    )


def test_models_find_the_anomalous_stretches_with_precision_and_recall_of_09(small_run):
    scenario, lake = small_run
    scores = _scores(lake)
    true = truth(scenario)
    assert {t.model for t in true} == {m.id for m in load_catalog().models}
    # Every model scored many calm series as well, so precision is tested for real.
    assert scores.group_by("indicator_id").agg(pl.col("entity_id").n_unique()).min()[0, 1] >= 6
    found = detections(scores)
    precision, recall = precision_recall(found, true)
    assert precision >= 0.9, (precision, [d for d in found if not any(d.overlaps(t) for t in true)])
    assert recall >= 0.9, (recall, [t for t in true if not any(t.overlaps(d) for d in found)])


def test_a_model_that_flags_everything_fails_precision(small_run):
    scenario, lake = small_run
    everything = _scores(lake).with_columns(value=pl.lit(1.0))
    precision, recall = precision_recall(detections(everything), truth(scenario))
    assert recall == 1.0
    assert precision < 0.2
