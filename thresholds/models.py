"""Online models: an adaptive baseline per series and an anomaly score in [0, 1].

Models are declared in ``indicators/catalog.yaml`` under ``models:`` (see
:class:`indicators.definitions.EwmZScore` and its siblings). Each turns the
values of one indicator into a **derived indicator**: same entity and window,
``value`` = the score, unit ``score``, ``samples`` = the source row's
samples. Thresholds grade it like any other value (every model id has a rule
in ``thresholds/rules.yaml``).

Kinds, cheapest first:

- ``ewm_zscore`` (the default, for per-device and per-site series): an
  exponentially weighted mean and variance per series, kept **columnar**
  (NumPy arrays indexed through one dict from entity to row), updated for a
  whole batch at once. It matches river's ``stats.EWMean``/``stats.EWVar``
  (to 1e-9 relative; a test checks it). The score of ``z = (x - mean) / std`` is
  ``2Φ(|z|) - 1`` (``both``), or the same of ``max(z, 0)`` (``above``) or of
  ``max(-z, 0)`` (``below``): 0.99 is 2.6 σ, 0.999 is 3.3 σ, 0.9999 is 3.9 σ.
  State: 8-byte mean, 8-byte variance and a 4-byte count per series plus the
  dict entry and the entity string: **164 bytes per series, measured with
  tracemalloc at 700,000 series** with 22-character entity ids (115 MB; a
  test bounds it at 200), 47 bytes per series in a snapshot.
- ``quantile``: river ``stats.RollingQuantile`` of ``q``, the median and
  ``1 - q`` over the last ``window`` values; the score of a value ``e``
  spreads (``q`` quantile minus median) past the ``q`` quantile is
  ``e / (1 + e)``. About 1 kB per series.
- ``half_space_trees``: river ``anomaly.HalfSpaceTrees`` behind a
  ``MinMaxScaler``, over several indicators of one entity and window (the
  model's ``indicator`` and its ``features``); its own score. About 170 kB
  per series: for aggregated series only.
- ``adwin``: river ``drift.ADWIN``: 1 when it detects that the series' mean
  shifted, then ``decay`` to the power of the windows since.

The heavier kinds hold at most ``max_series`` series; a series beyond the cap
is refused (not scored) and counted in :attr:`Scorer.refused`.

Every kind learns ``grace`` windows of a series before it scores it (no row
during warm-up), and the ``ewm_zscore``, ``quantile`` and ``half_space_trees``
kinds do not learn from a value that scored at or above ``freeze_above``
(below 1), so a long anomaly (a river in flood) is not learned into the
baseline and stays visible to the end.

Values must come in window order per series, as the window store delivers
them; several windows of one series in one batch are applied in order.
State is in private attributes; a :class:`Scorer` pickles whole (Bytewax
recovery) and continues exactly as if never interrupted.

>>> from indicators.definitions import EwmZScore
>>> m = EwmZScore(id="t.anomaly", indicator="t", kind="ewm_zscore", description="d",
...               alpha=0.2, grace=3, direction="above")
>>> model = EwmScores(m)
>>> [round(float(model.update(["a"], [v])[0]), 3) for v in (20.0, 21.0, 20.0, 20.5, 35.0)]
[nan, nan, nan, 0.646, 1.0]
>>> mean, var, learned = model.stats("a")  # 35 scored 1.0: not learned
>>> round(mean, 3), learned
(20.228, 4)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import polars as pl
from river import anomaly, drift, preprocessing, stats
from scipy.special import erf

from indicators.definitions import (
    AdwinModel,
    Catalog,
    EwmZScore,
    HalfSpaceTreesModel,
    QuantileModel,
)
from thresholds.batch import column_at, indicator_runs, null_first

__all__ = ["EwmScores", "RiverScores", "Scorer", "z_score"]

_SQRT2 = math.sqrt(2.0)
_TINY = 1e-12


def z_score(z: np.ndarray, direction: str) -> np.ndarray:
    """Map z-scores to [0, 1]: ``2Φ(|z|) - 1`` on the side(s) ``direction`` watches.

    >>> z_score(np.array([0.0, 1.0, -3.0]), "both").round(4).tolist()
    [0.0, 0.6827, 0.9973]
    >>> z_score(np.array([1.0, -3.0]), "above").round(4).tolist()
    [0.6827, 0.0]
    """
    if direction == "above":
        z = np.maximum(z, 0.0)
    elif direction == "below":
        z = np.maximum(-z, 0.0)
    else:
        z = np.abs(z)
    return erf(z / _SQRT2)


class EwmScores:
    """Columnar EWM mean/variance z-scores of many series (one ``ewm_zscore`` model)."""

    def __init__(self, model: EwmZScore) -> None:
        self.model = model
        self._row: dict[str, int] = {}
        self._mean = np.empty(0, np.float64)
        self._var = np.empty(0, np.float64)
        self._n = np.empty(0, np.int32)  # windows learned

    def __len__(self) -> int:
        return len(self._row)

    def stats(self, entity: str) -> tuple[float, float, int]:
        """``(mean, variance, windows learned)`` of one series."""
        i = self._row[entity]
        return float(self._mean[i]), float(self._var[i]), int(self._n[i])

    def _rows(self, entities: Sequence[str]) -> np.ndarray:
        rows = self._row
        new = [e for e in dict.fromkeys(entities) if e not in rows]
        if new:
            start = len(rows)
            rows.update(zip(new, range(start, start + len(new)), strict=True))
            self._mean = np.concatenate([self._mean, np.zeros(len(new))])
            self._var = np.concatenate([self._var, np.zeros(len(new))])
            self._n = np.concatenate([self._n, np.zeros(len(new), np.int32)])
        return np.fromiter((rows[e] for e in entities), np.int64, len(entities))

    def update(self, entities: Sequence[str], values: Sequence[float]) -> np.ndarray:
        """Score one value of each of ``entities`` (distinct), then learn from it.

        Returns the scores, NaN where a series is still in its warm-up.
        """
        return self._update(self._rows(entities), np.asarray(values, np.float64))

    def update_in_rounds(
        self, names: Sequence[str], codes: np.ndarray, rounds: np.ndarray, x: np.ndarray
    ) -> np.ndarray:
        """:meth:`update` of the values ``x`` of entities ``names[codes]``, one round at a
        time (round ``r``: the values with ``rounds == r``, each entity once), the names
        looked up once. New series come in the order of ``names``."""
        slots = self._rows(names)[codes]
        return _by_round(rounds, lambda k: self._update(slots[k], x[k]), len(x))

    def _update(self, i: np.ndarray, x: np.ndarray) -> np.ndarray:
        """:meth:`update` of the series at rows ``i`` (distinct) of the arrays."""
        m = self.model
        n, mean, var = self._n[i], self._mean[i], self._var[i]
        std = np.sqrt(np.maximum(var, m.min_std * m.min_std))
        d = x - mean
        with np.errstate(divide="ignore", invalid="ignore"):
            if (std > 0).all():  # the common case, without its wheres
                z = d / std
            else:
                z = np.where(std > 0, d / np.where(std > 0, std, 1.0), np.sign(d) * np.inf)
        if not np.isfinite(z).all():
            z = np.nan_to_num(z, nan=0.0)
        score = z_score(z, m.direction)
        scored = n >= m.grace
        learn = ~scored | (score < m.freeze_above) | (m.freeze_above >= 1.0)
        a = m.alpha
        new_mean = mean + a * d
        new_var = (1.0 - a) * (var + a * d * d)
        first = n == 0
        if first.any():
            new_mean = np.where(first, x, new_mean)
            new_var = np.where(first, 0.0, new_var)
        if learn.all():
            self._mean[i], self._var[i], self._n[i] = new_mean, new_var, n + 1
        else:
            self._mean[i] = np.where(learn, new_mean, mean)
            self._var[i] = np.where(learn, new_var, var)
            self._n[i] = n + learn
        return score if scored.all() else np.where(scored, score, np.nan)


def _by_round(
    rounds: np.ndarray, update: Callable[[np.ndarray | slice], np.ndarray], size: int
) -> np.ndarray:
    """Scores of ``size`` values: ``update(k)`` of the positions ``k`` of each round in turn
    (all at once when there is one); NaN where a value is not scored."""
    got = np.full(size, np.nan)
    if not size:
        return got
    last = int(rounds.max())
    for r in range(last + 1):
        k = np.flatnonzero(rounds == r) if last else slice(None)
        got[k] = update(k)
    return got


def _excess(x: float, edge: float, middle: float, floor: float) -> float:
    spread = max(abs(edge - middle), floor, _TINY)
    e = (x - edge) / spread if edge >= middle else (edge - x) / spread
    return e / (1.0 + e) if e > 0 else 0.0


class _Quantiles:
    """One series of a ``quantile`` model."""

    def __init__(self, m: QuantileModel) -> None:
        self._hi = stats.RollingQuantile(m.q, m.window)
        self._mid = stats.RollingQuantile(0.5, m.window)
        self._lo = stats.RollingQuantile(1.0 - m.q, m.window)

    def score(self, m: QuantileModel, x: float) -> float:
        mid = self._mid.get()
        if mid is None:  # nothing learned yet
            return 0.0
        above = _excess(x, self._hi.get(), mid, m.min_spread)
        below = _excess(x, self._lo.get(), mid, m.min_spread)
        return {"above": above, "below": below, "both": max(above, below)}[m.direction]

    def learn(self, x) -> None:
        for q in (self._hi, self._mid, self._lo):
            q.update(x)


class _Trees:
    """One series of a ``half_space_trees`` model."""

    def __init__(self, m: HalfSpaceTreesModel) -> None:
        self._model = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(
            n_trees=m.n_trees, height=m.height, window_size=m.window_size, seed=m.seed
        )

    def score(self, m: HalfSpaceTreesModel, x: dict) -> float:
        return float(self._model.score_one(x))

    def learn(self, x: dict) -> None:
        self._model.learn_one(x)


class _Drift:
    """One series of an ``adwin`` model."""

    def __init__(self, m: AdwinModel) -> None:
        self._adwin = drift.ADWIN(delta=m.delta, clock=1)
        self._since: int | None = None  # windows since the last drift

    def score(self, m: AdwinModel, x: float) -> float:
        self._adwin.update(x)
        if self._adwin.drift_detected:
            self._since = 0
        elif self._since is not None:
            self._since += 1
        return 0.0 if self._since is None else m.decay**self._since

    def learn(self, x: float) -> None:
        """ADWIN learned in :meth:`score`: it adapts by design."""


_KINDS = {"quantile": _Quantiles, "half_space_trees": _Trees, "adwin": _Drift}


class RiverScores:
    """Per-series river objects of one heavier model, at most ``max_series`` of them."""

    def __init__(self, model: QuantileModel | HalfSpaceTreesModel | AdwinModel) -> None:
        self.model = model
        self._series: dict[str, object] = {}
        self._n: dict[str, int] = {}
        self._refused: set[str] = set()

    def __len__(self) -> int:
        return len(self._series)

    @property
    def refused(self) -> int:
        """Distinct series refused for want of room under ``max_series``."""
        return len(self._refused)

    def update_in_rounds(
        self, names: Sequence[str], codes: np.ndarray, rounds: np.ndarray, x: np.ndarray
    ) -> np.ndarray:
        """:meth:`update` of the values ``x`` of entities ``names[codes]``, one round at a
        time (see :meth:`EwmScores.update_in_rounds`)."""
        entities = np.array(names, dtype=object)[codes]
        return _by_round(rounds, lambda k: self.update(entities[k].tolist(), x[k]), len(x))

    def update(self, entities: Sequence[str], values: Sequence) -> np.ndarray:
        """Score then learn one value (a number, or a dict of features) per entity."""
        m = self.model
        out = np.full(len(entities), np.nan)
        freeze = getattr(m, "freeze_above", None)
        for k, (entity, x) in enumerate(zip(entities, values, strict=True)):
            s = self._series.get(entity)
            if s is None:
                if len(self._series) >= m.max_series:
                    self._refused.add(entity)
                    continue
                s = self._series[entity] = _KINDS[m.kind](m)
                self._n[entity] = 0
            n = self._n[entity]
            score = s.score(m, x)
            if n >= m.grace:
                out[k] = score
            if n < m.grace or freeze is None or freeze >= 1.0 or score < freeze:
                s.learn(x)
                self._n[entity] = n + 1
        return out


class Scorer:
    """Every model of a catalogue, applied to closed indicator values.

    :meth:`score` takes indicator values (the window store's columns) and
    returns the models' rows in the same columns; a caller appends them.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._models = {
            m.id: EwmScores(m) if m.kind == "ewm_zscore" else RiverScores(m) for m in catalog.models
        }
        # every indicator a model reads: its source and its features
        self._read = sorted(
            {m.indicator for m in catalog.models}
            | {f for m in catalog.models for f in getattr(m, "features", None) or ()}
        )

    @property
    def refused(self) -> dict[str, int]:
        """Per heavier model, the series it refused (beyond its ``max_series``)."""
        return {k: v.refused for k, v in self._models.items() if isinstance(v, RiverScores)}

    def score(self, values: pl.DataFrame) -> pl.DataFrame:
        """The score rows of every model whose source indicator is in ``values``.

        The values any model reads are picked on NumPy arrays, each series'
        windows in window order (its k-th window of the batch in round k);
        each model then learns round by round, so a series learns its windows
        in order. The score rows are the picked rows, gathered once.
        """
        if not values.height:
            return values.clear()
        names, lengths = indicator_runs(values)
        ends = np.cumsum(lengths)
        spans: dict[str, list[np.ndarray]] = {}  # each indicator a model reads: its rows
        for name, start, end in zip(names, (ends - lengths).tolist(), ends.tolist(), strict=True):
            if name in self._read:
                spans.setdefault(name, []).append(np.arange(start, end))
        if not spans:
            return values.clear()
        batch = _Batch(values, spans)
        picked, ids, scores = [], [], []
        for state in self._models.values():
            m = state.model
            if m.indicator not in spans:
                continue
            at, names, codes, rounds = batch.series(m.indicator)
            if not len(at):
                continue
            if getattr(m, "features", None):
                at, got = self._with_features(state, batch.mine())
            else:
                got = state.update_in_rounds(names, codes, rounds, batch.value[at])
            keep = ~np.isnan(got)
            picked.append(at[keep])
            ids += [m.id] * int(keep.sum())
            scores.append(got[keep])
        if not picked:
            return values.clear()
        rows = values[np.concatenate(picked)]
        made = {
            "indicator_id": pl.Series("indicator_id", ids, dtype=pl.String),
            "value": pl.Series("value", np.concatenate(scores), dtype=pl.Float64),
            "unit": pl.Series("unit", ["score"], dtype=pl.String).new_from_index(0, len(ids)),
        }
        return pl.DataFrame([made.get(c, rows.get_column(c)) for c in values.columns])

    def _with_features(
        self, state: RiverScores, mine: pl.DataFrame
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the batch a several-feature model scores, and their scores (NaN: none).

        A window is scored only when every feature has a value for it.
        """
        m = state.model
        rows = mine.with_row_index("_at").filter(pl.col("indicator_id") == m.indicator)
        for f in m.features:
            other = mine.filter(pl.col("indicator_id") == f)
            other = other.select("entity_id", "window_start", pl.col("value").alias(f))
            rows = rows.join(other, on=["entity_id", "window_start"], how="inner")
        rows = rows.sort("_at")
        cols = [m.indicator, *m.features]
        table = rows.select(pl.col("value").alias(m.indicator), *m.features).rows()
        rounds = rows["_round"].to_numpy()
        entities = rows["entity_id"].to_list()
        got = np.full(rows.height, np.nan)
        for r in range(int(rounds.max()) + 1 if rows.height else 0):
            k = np.flatnonzero(rounds == r)
            inputs = [dict(zip(cols, table[i], strict=True)) for i in k]
            got[k] = state.update([entities[i] for i in k], inputs)
        return rows["_i"].to_numpy().astype(np.int64), got


class _Batch:
    """The values of one batch that models read, as NumPy arrays (times in µs)."""

    def __init__(self, values: pl.DataFrame, spans: dict[str, list[np.ndarray]]) -> None:
        self.values = values
        self.spans = spans  # indicator -> its rows
        self.value = values.get_column("value").to_numpy().astype(np.float64, copy=False)
        self.start = values.get_column("window_start").to_numpy()
        self._series: dict[str, tuple[np.ndarray, list, np.ndarray, np.ndarray]] = {}

    def series(self, indicator: str) -> tuple[np.ndarray, list, np.ndarray, np.ndarray]:
        """The rows of ``indicator`` with a value (neither null nor NaN) by entity, then
        window start; its entities (sorted), the entity of each row (their position)
        and the round of each row (its rank among its series' rows).
        """
        found = self._series.get(indicator)
        if found is not None:
            return found
        spans = self.spans[indicator]
        rows = spans[0] if len(spans) == 1 else np.concatenate(spans)
        rows = rows[~np.isnan(self.value[rows])]
        entities = column_at(self.values, "entity_id", rows)
        names = sorted(set(entities), key=null_first)
        rank = {e: i for i, e in enumerate(names)}
        codes = np.fromiter((rank[e] for e in entities), np.int64, len(entities))
        order = np.lexsort((self.start[rows], codes))
        codes = codes[order]
        head = np.ones(len(order), bool)
        head[1:] = codes[1:] != codes[:-1]
        place = np.arange(len(order))
        rounds = place - np.maximum.accumulate(np.where(head, place, 0))
        found = rows[order], names, codes, rounds
        self._series[indicator] = found
        return found

    def mine(self) -> pl.DataFrame:
        """Every row :meth:`series` picks, with its ``_round`` and its row ``_i``."""
        picked = [self.series(indicator) for indicator in self.spans]
        rows = np.concatenate([rows for rows, *_ in picked])
        rounds = np.concatenate([rounds for *_, rounds in picked])
        return self.values[rows].hstack(
            [pl.Series("_round", rounds, dtype=pl.Int64), pl.Series("_i", rows, dtype=pl.Int64)]
        )
