"""From indicator values to graded levels and the lives of alerts.

The :class:`Evaluator` grades every value against its rules in one
vectorised pass: it picks the bands in force for each row (override,
schedule or the rule's own), derives the judged value (the value, or for
``measure: change`` its difference from the previous window), and grades
it. Only values that are in breach, or that belong to a series with an
alert open or pending, go through the per-series state machine:

- **pending**: in breach, but not yet for ``for`` (windows or event time);
  nothing is said;
- **opened**: the first record of an alert, with a stable ``alert_id``;
- **escalated / downgraded**: the level moved; a level is left only once the
  value is back past its clearing bound, so a value that hovers on a bound
  does not flap;
- **cleared**: back to normal for ``clear_for``; the series is then
  forgotten, so state stays as small as the set of series in trouble.

When the caller passes the event-time ``watermark``, series that went silent
are handled by their rule's ``no_data`` policy (see :class:`NoData`).

Each change is one record (see ``schemas.families.BREACHES``). Values must
arrive in window order per series, which the window store guarantees.

>>> import polars as pl
>>> from datetime import datetime, timedelta, UTC
>>> from thresholds.rules import Rule, RuleSet
>>> rules = RuleSet(rules=[Rule(id="hot", indicator="t", direction="above",
...                             levels={"yellow": 45, "red": 70}, hysteresis=3)])
>>> ev = Evaluator(rules)
>>> t0 = datetime(2026, 5, 12, 6, tzinfo=UTC)
>>> def vals(*vs):
...     n = len(vs)
...     return pl.DataFrame({"indicator_id": ["t"] * n, "sector": ["fire"] * n,
...         "entity_type": ["flat"] * n, "entity_id": ["f1"] * n,
...         "window_start": [t0 + timedelta(minutes=i) for i in range(n)],
...         "window_end": [t0 + timedelta(minutes=i + 1) for i in range(n)],
...         "value": list(vs), "samples": [1] * n, "unit": ["C"] * n})
>>> levels, changes = ev.evaluate(vals(30, 50, 80, 68, 40), now=t0)
>>> levels["level"].to_list()
['normal', 'yellow', 'red', 'red', 'normal']
>>> [(c["state"], c["severity"]) for c in changes]
[('opened', 'yellow'), ('escalated', 'red'), ('cleared', 'normal')]
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

import numpy as np
import polars as pl

from indicators.aggregate import ENGINE
from schemas.families import SEVERITIES
from thresholds.batch import column_at, indicator_runs, null_first
from thresholds.rules import LEVELS, Rule, RuleSet, duration_met

__all__ = ["Evaluator", "alert_id"]

_RANK = {name: i for i, name in enumerate(SEVERITIES)}


def alert_id(rule_id: str, entity_id: str, first_ts: datetime) -> str:
    """A stable id for one alert: the same input always gives the same id.

    >>> from datetime import datetime, UTC
    >>> alert_id("r", "e", datetime(2026, 1, 1, tzinfo=UTC))
    '75029d11bf54b466752e89e5'
    """
    key = f"{rule_id}|{entity_id}|{first_ts.isoformat()}".encode()
    return hashlib.sha256(key).hexdigest()[:24]


@dataclass(slots=True)
class _Series:
    """State of one (rule, entity) series that is in trouble."""

    sector: str
    entity_type: str
    level: str = "normal"
    pending: int = 0
    pending_since: datetime | None = None
    calm: int = 0
    calm_since: datetime | None = None
    alert_id: str | None = None
    sequence: int = -1
    first_ts: datetime | None = None
    peak: float | None = None
    last_end: datetime | None = None
    silent: bool = False
    evidence: deque = field(default_factory=deque)


@dataclass(slots=True)
class _Seen:
    """Last value of a series watched for silence (``no_data: alert``)."""

    sector: str
    entity_type: str
    last_end: datetime
    value: float


class Evaluator:
    """Grades indicator values and tracks alerts, per (rule, entity)."""

    def __init__(self, rules: RuleSet, evidence: int = 5) -> None:
        self.rules = rules
        self.evidence = evidence
        self._series: dict[str, dict[str, _Series]] = {}  # rule id -> entity -> state
        self._previous: dict[str, _Last] = {}  # change rules: last window per entity
        self._seen: dict[str, dict[str, _Seen]] = {}  # no_data alert rules: entity -> last
        self._plan()

    def _plan(self) -> None:
        """Build what the rules imply once: the tables :meth:`_grade` looks up."""
        rules = self.rules.rules
        self._gid = {r.id: i for i, r in enumerate(rules)}  # rule id -> position
        # Each indicator's code, and its rules in order (a rule's position there is its k).
        self._codes: dict[str, int] = {}
        by_code: list[list[int]] = []
        for gid, r in enumerate(rules):
            code = self._codes.setdefault(r.indicator, len(by_code))
            if code == len(by_code):
                by_code.append([])
            by_code[code].append(gid)
        self._k = [0] * len(rules)
        # _rules[code, k]: the k-th rule of the indicator (-1: none); the last row for
        # indicators without rules.
        self._rules = np.full((len(by_code) + 1, max(map(len, by_code))), -1, np.int64)
        for code, gids in enumerate(by_code):
            self._rules[code, : len(gids)] = gids
            for k, gid in enumerate(gids):
                self._k[gid] = k
        # Bounds of every set of bands: row _base[gid] + variant (see :func:`_ranks`).
        lo, hi, base = [], [], []
        for r in rules:
            base.append(len(lo))
            for bands in r.variants:
                spans = [
                    bands.span(name, r.direction) if name in bands.levels else (None, None)
                    for name in LEVELS
                ]
                lo.append([np.nan if low is None else low for low, _ in spans])
                hi.append([np.nan if high is None else high for _, high in spans])
        self._lo = np.array(lo, np.float64).T.copy()  # [level, band]
        self._hi = np.array(hi, np.float64).T.copy()
        self._base = np.array(base, np.int64)
        self._min = np.array([r.min_samples for r in rules], np.int64)
        self._change = [gid for gid, r in enumerate(rules) if r.measure == "change"]
        # Rules with schedules or overrides: which bands each of their rows is under. What
        # that depends on decides what is kept of it (rebuilt, not pickled): the entity
        # only (overrides without schedules), the window's start only (schedules without
        # overrides), or both (nothing kept: a query per batch).
        tz = self.rules.timezone
        self._variant_of: dict[int, pl.Expr] = {}  # of a frame of the rule's rows
        self._by_entity: dict[int, dict[str, int]] = {}
        self._by_minute: dict[int, dict[int, np.ndarray]] = {}  # UTC day -> each minute's
        for gid, r in enumerate(rules):
            if not (r.schedules or r.overrides):
                continue
            self._variant_of[gid] = r.variant_of(pl.col("entity_id"), pl.col("window_start"), tz)
            if not r.schedules:
                self._by_entity[gid] = {}
            elif not r.overrides:
                self._by_minute[gid] = {}
        self._no_data_alert = [
            gid for gid, r in enumerate(rules) if r.no_data and r.no_data.action == "alert"
        ]
        self._no_data = [r for r in rules if r.no_data and r.no_data.action != "keep"]

    def __getstate__(self) -> dict:
        return {name: self.__dict__[name] for name in _STATE}

    def __setstate__(self, state: dict) -> None:
        state = {name: state[name] for name in _STATE}  # older snapshots held tables too
        state["_previous"] = {  # older snapshots kept the last windows as frames
            rule: _Last.of(last) if isinstance(last, pl.DataFrame) else last
            for rule, last in state["_previous"].items()
        }
        self.__dict__.update(state)
        self._plan()

    @property
    def open_alerts(self) -> int:
        return sum(
            1 for by_entity in self._series.values() for s in by_entity.values() if s.alert_id
        )

    def evaluate(
        self, values: pl.DataFrame, now: datetime, watermark: datetime | None = None
    ) -> tuple[pl.DataFrame, list[dict]]:
        """Return ``values`` with a ``level`` column, and the alert changes they cause.

        ``watermark`` (event time up to which every window has been delivered)
        lets silent series be judged by their rule's ``no_data`` policy.
        """
        changes: list[dict] = []
        if values.height == 0:
            out = values.with_columns(level=pl.lit(None, dtype=pl.String))
        else:
            out = self._grade(values, now, changes)
        if watermark is not None:
            self._silence(watermark, now, changes)
        return out, changes

    def _grade(self, values: pl.DataFrame, now: datetime, changes: list[dict]) -> pl.DataFrame:
        """Grade every value under every rule of its indicator, in one pass.

        Every (value, rule) pair is graded at once on NumPy arrays against a
        table of bounds (no query: a batch with nothing in breach and no
        series in trouble costs a few array operations). The bands in force
        under overrides or schedules are kept by entity or by minute; a rule
        with both takes a query over its rows. Only the series in trouble then
        go through :meth:`_step`, in the order of the indicators' first rows,
        the rules' order, entity and window.
        """
        n = values.height
        names, lengths = indicator_runs(values)
        none = len(self._rules) - 1  # the code of indicators without rules
        codes = [self._codes.get(x, none) for x in names]  # of each run
        code = np.repeat(np.array(codes, np.int64), lengths)
        present = {g for g in self._rules[list(set(codes))].ravel().tolist() if g >= 0}
        if not present:
            return _with_level(values, None)
        # Pairs: (row, rule) for each rule of the row's indicator, k by k.
        rows, gids = [], []
        for k in range(self._rules.shape[1]):
            g = self._rules[code, k]
            at = np.flatnonzero(g >= 0)
            rows.append(at)
            gids.append(g[at])
        row, gid = np.concatenate(rows), np.concatenate(gids)
        rules = self.rules.rules
        cols = _Columns(values)
        v, vnull = cols.value[row], cols.null[row]
        variant = np.zeros(row.size, np.int64)
        mine = {g: np.flatnonzero(gid == g) for g in present if g in self._variant_of}
        for g in self._change:
            if g in present:
                mine[g] = at = np.flatnonzero(gid == g)
                v[at], vnull[at] = self._changes(rules[g], row[at], cols)
        asked = {}  # rules whose bands take a query over their rows
        for g, at in mine.items():
            if g in self._variant_of:
                found = self._known_variants(g, row[at], cols)
                if found is None:
                    indicator = pl.col("indicator_id") == rules[g].indicator
                    asked[g] = values.lazy().filter(indicator).select(self._variant_of[g])
                else:
                    variant[at] = found
        for g, found in zip(asked, pl.collect_all(asked.values(), engine=ENGINE), strict=True):
            variant[mine[g]] = found.to_series().to_numpy()
        raw = self._ranks(v, vnull, cols.samples[row], gid, variant)
        for g in self._no_data_alert:
            if g in present:
                at = mine.get(g)
                at = np.flatnonzero(gid == g) if at is None else at
                self._remember(rules[g], row[at], v[at], vnull[at], cols)
        # Series in trouble: watched already, or in breach somewhere in this batch.
        watched = {self._gid[r]: by for r, by in self._series.items()}
        trouble = present & (set(np.unique(gid[raw > 0]).tolist()) | watched.keys())
        if not trouble:
            return _with_level(values, None)
        hot = []
        first = {}  # indicator code -> its first row: the indicators' order of first rows
        for g in trouble:
            at = mine.get(g)
            at = np.flatnonzero(gid == g) if at is None else at
            entities = column_at(cols.frame, "entity_id", row[at])
            keys = {entities[j] for j in np.flatnonzero(raw[at] > 0).tolist()}
            keys.update(watched.get(g, ()))
            c = int(code[row[at[0]]])
            if c not in first:
                first[c] = int(np.argmax(code == c))
            ind, k = first[c], self._k[g]
            starts = cols.start[row[at]]
            for j, e in enumerate(entities):
                if e in keys:
                    p = int(at[j])
                    hot.append((ind, k, e, int(starts[j]), int(row[p]), g, p))
        hot.sort(key=lambda h: (h[0], h[1], *null_first(h[2]), *h[3:]))  # as Polars sorted
        about = cols.take(
            ["sector", "entity_type", "window_start", "window_end"], [h[4] for h in hot]
        )
        ranks = np.zeros(n, dtype=np.int64)
        for (_, _, entity, _, i, g, p), (sector, etype, start, end) in zip(hot, about, strict=True):
            r = int(raw[p])
            step = {
                "entity_id": entity,
                "sector": sector,
                "entity_type": etype,
                "window_start": start,
                "window_end": end,
                "_v": None if vnull[p] else float(v[p]),
                "_variant": int(variant[p]),
                "_raw": None if r < 0 else SEVERITIES[r],
            }
            rank = _RANK[self._step(rules[g], step, now, changes)]
            if rank > ranks[i]:
                ranks[i] = rank
        return _with_level(values, ranks if ranks.any() else None)

    def _known_variants(self, gid: int, rows: np.ndarray, cols: _Columns) -> np.ndarray | None:
        """The bands in force at ``rows`` of rule ``gid`` from what is kept, else ``None``.

        By entity: each new entity is looked up once. By window start: every
        minute of a UTC day is looked up at once, for windows that start on a
        minute (the few last days are kept).
        """
        by_entity = self._by_entity.get(gid)
        if by_entity is not None:
            entities = column_at(cols.frame, "entity_id", rows)
            new = [e for e in dict.fromkeys(entities) if e not in by_entity]
            if new:
                frame = pl.DataFrame(
                    {"entity_id": new, "window_start": None},
                    schema={"entity_id": pl.String, "window_start": _UTC},
                )
                found = frame.lazy().select(self._variant_of[gid]).collect(engine=ENGINE)
                by_entity.update(zip(new, found.to_series().to_list(), strict=True))
            return np.fromiter((by_entity[e] for e in entities), np.int64, len(entities))
        by_minute = self._by_minute.get(gid)
        if by_minute is None:
            return None
        start = cols.start[rows]
        day, minute = np.divmod(start, _DAY)
        minute, second = np.divmod(minute, _MINUTE)
        if second.any():
            return None
        days = np.unique(day).tolist()
        for d in days:
            if d not in by_minute:
                at = pl.Series(d * _DAY + np.arange(0, _DAY, _MINUTE), dtype=pl.Int64)
                frame = pl.DataFrame({"entity_id": None, "window_start": at.cast(_UTC)})
                found = frame.lazy().select(self._variant_of[gid]).collect(engine=ENGINE)
                by_minute[d] = found.to_series().to_numpy().astype(np.int64)
        if len(days) == 1:
            out = by_minute[days[0]][minute]
        else:
            out = np.empty(rows.size, np.int64)
            for d in days:
                here = day == d
                out[here] = by_minute[d][minute[here]]
        for d in sorted(by_minute)[: -max(_DAYS_KEPT, len(days))]:
            del by_minute[d]  # the oldest
        return out

    def _ranks(
        self, v: np.ndarray, null: np.ndarray, samples: np.ndarray, gid: np.ndarray, variant
    ) -> np.ndarray:
        """The raw rank of each pair's ``v`` under the bands in force (-1: not judged).

        The gravest level reached: at or below its low bound or at or above its
        high bound. As in Polars, NaN is above every number: it reaches every
        high bound and no low one.
        """
        band = self._base.take(gid) + variant
        rank = np.zeros(v.size, np.int64)
        nan = np.isnan(v)
        nan = nan if nan.any() else None
        for level, (lo, hi) in enumerate(zip(self._lo, self._hi, strict=True), 1):
            high = hi.take(band)
            hit = (v <= lo.take(band)) | (v >= high)
            if nan is not None:
                hit |= nan & ~np.isnan(high)
            np.putmask(rank, hit, level)  # mild to grave: the last match wins
        judged = (samples >= self._min.take(gid)) & ~null
        return np.where(judged, rank, -1)

    def _changes(
        self, rule: Rule, rows: np.ndarray, cols: _Columns
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each row's difference from the same entity's previous, adjacent window, and
        where it is null; keeps each entity's last window for the next batch."""
        last = self._previous.get(rule.id)
        if last is None:
            last = self._previous[rule.id] = _Last()
        slot = last.slots(column_at(cols.frame, "entity_id", rows))
        here = np.zeros(last.known.size, bool)
        here[slot] = True
        before = np.flatnonzero(here & last.known)  # stored windows of the batch's entities
        m = before.size
        slots = np.concatenate([before, slot])
        start = np.concatenate([last.start[before], cols.start[rows]])
        end = np.concatenate([last.end[before], cols.end[rows]])
        value = np.concatenate([last.value[before], cols.value[rows]])
        null = np.concatenate([last.null[before], cols.null[rows]])
        order = np.lexsort((start, slots))  # stable: a stored window first on a tie
        slots, start, end, value, null = (a[order] for a in (slots, start, end, value, null))
        same = slots[1:] == slots[:-1]
        diff = np.full(order.size, np.nan)
        with np.errstate(invalid="ignore"):
            diff[1:] = value[1:] - value[:-1]
        missing = np.ones(order.size, bool)
        missing[1:] = ~(same & (end[:-1] == start[1:])) | null[1:] | null[:-1]
        tail = np.ones(order.size, bool)
        tail[:-1] = ~same
        last.keep(slots[tail], start[tail], end[tail], value[tail], null[tail])
        at = np.empty(order.size, np.int64)
        at[order] = np.arange(order.size)
        at = at[m:]
        return diff[at], missing[at]

    def _remember(
        self, rule: Rule, rows: np.ndarray, v: np.ndarray, null: np.ndarray, cols: _Columns
    ) -> None:
        """Note each entity's latest window, so its silence can be noticed."""
        entities = column_at(cols.frame, "entity_id", rows)
        index: dict[str, int] = {}
        codes = np.fromiter(
            (index.setdefault(e, len(index)) for e in entities), np.int64, rows.size
        )
        order = np.lexsort((cols.start[rows], codes))
        codes = codes[order]
        tail = np.ones(rows.size, bool)
        tail[:-1] = codes[1:] != codes[:-1]
        head = np.flatnonzero(np.concatenate([[True], tail[:-1]]))
        # the last judged value of each entity (_v not null), else its last value
        known = np.maximum.accumulate(np.where(null[order], -1, np.arange(rows.size)))
        tail = np.flatnonzero(tail)
        judged = known[tail] >= head
        picked = np.where(judged, order[known[tail]], order[tail])
        value = np.where(judged, v[picked], cols.value[rows[picked]])
        missing = np.where(judged, False, cols.null[rows[picked]])
        latest = order[tail].tolist()
        about = cols.take(["sector", "entity_type", "window_end"], rows[latest].tolist())
        seen = self._seen.setdefault(rule.id, {})
        series = self._series.get(rule.id, {})
        for i, (sector, etype, end), x, gone in zip(
            latest, about, value.tolist(), missing.tolist(), strict=True
        ):
            entity = entities[i]
            old = seen.get(entity)
            if old is None or end > old.last_end:
                seen[entity] = _Seen(sector, etype, end, None if gone else x)
            s = series.get(entity)
            if s is not None:
                s.silent = False

    def _step(self, rule: Rule, row: dict, now: datetime, changes: list[dict]) -> str:
        entity = row["entity_id"]
        s = self._series.get(rule.id, {}).get(entity)
        raw = row["_raw"]
        if raw is None:  # too few samples, or no previous window: keep the state as it is
            return s.level if s else "normal"
        value, variant = row["_v"], row["_variant"]
        if s is None:
            s = _Series(row["sector"], row["entity_type"], evidence=deque(maxlen=self.evidence))
            self._series.setdefault(rule.id, {})[entity] = s
        s.silent = False
        s.last_end = row["window_end"]
        s.evidence.append(value)
        if s.alert_id is None:
            if raw == "normal":
                self._forget(rule.id, entity)
                return "normal"
            if s.pending == 0:
                s.pending_since = row["window_start"]
            s.pending += 1
            if not duration_met(rule.for_, s.pending, row["window_end"] - s.pending_since):
                return "normal"
            s.first_ts = s.pending_since
            s.alert_id = alert_id(rule.id, entity, s.first_ts)
            s.peak = value
            self._emit(rule, s, entity, "opened", raw, row, now, changes)
            return s.level
        s.peak = _worse(rule, s.peak, value)
        target = rule.settle(s.level, value, variant)
        if target == "normal":
            if s.calm == 0:
                s.calm_since = row["window_start"]
            s.calm += 1
            if duration_met(rule.clear_for, s.calm, row["window_end"] - s.calm_since):
                self._emit(rule, s, entity, "cleared", "normal", row, now, changes)
                self._forget(rule.id, entity)
                return "normal"
            return s.level
        s.calm = 0
        if target != s.level:
            state = "escalated" if _RANK[target] > _RANK[s.level] else "downgraded"
            self._emit(rule, s, entity, state, target, row, now, changes)
        return s.level

    def _silence(self, watermark: datetime, now: datetime, changes: list[dict]) -> None:
        """Apply ``no_data`` to every series silent for its rule's ``after``."""
        for rule in self._no_data:
            policy = rule.no_data
            series = self._series.get(rule.id, {})
            if policy.action == "clear":
                for entity, s in list(series.items()):
                    if s.alert_id and watermark - s.last_end >= policy.after:
                        row = _silent_row(s.last_end + policy.after, s.evidence[-1])
                        self._emit(rule, s, entity, "cleared", "normal", row, now, changes, True)
                        self._forget(rule.id, entity)
                continue
            for entity, seen in self._seen.get(rule.id, {}).items():
                if watermark - seen.last_end < policy.after:
                    continue
                s = series.get(entity)
                if s is not None and s.silent:
                    continue
                if s is None:
                    s = _Series(seen.sector, seen.entity_type, evidence=deque(maxlen=self.evidence))
                    series = self._series.setdefault(rule.id, series)
                    series[entity] = s
                s.silent = True
                s.pending = 0
                row = _silent_row(seen.last_end + policy.after, seen.value)
                if s.alert_id is None:
                    s.first_ts = seen.last_end
                    s.alert_id = alert_id(rule.id, entity, s.first_ts)
                    s.peak = seen.value
                    self._emit(rule, s, entity, "opened", policy.severity, row, now, changes, True)
                elif _RANK[policy.severity] > _RANK[s.level]:
                    self._emit(
                        rule, s, entity, "escalated", policy.severity, row, now, changes, True
                    )

    def _forget(self, rule_id: str, entity: str) -> None:
        """Drop a series back at normal, so state only holds series in trouble."""
        series = self._series[rule_id]
        del series[entity]
        if not series:
            del self._series[rule_id]

    def _emit(self, rule, s: _Series, entity, state, severity, row, now, changes, silent=False):
        previous = s.level
        s.sequence += 1
        s.level = severity
        value, variant = row["_v"], row["_variant"]
        if silent:
            bound = None
        elif severity == "normal":  # the clearing bound it had to get back past
            bound = rule.clearing_bound(_known(rule, previous, variant), value, variant)
        else:
            bound = rule.bound(severity, value, variant)
        changes.append(
            {
                "alert_id": s.alert_id,
                "sequence": s.sequence,
                "state": state,
                "severity": severity,
                "previous_severity": previous,
                "rule_id": rule.id,
                "indicator_id": rule.indicator,
                "sector": s.sector,
                "entity_type": s.entity_type,
                "entity_id": entity,
                "measure": "no_data" if silent else rule.measure,
                "direction": rule.direction,
                "bound": bound,
                "value": float(value),
                "peak_value": float(s.peak),
                "first_ts": s.first_ts,
                "event_ts": row["window_end"],
                "emitted_at": now,
                "evidence": [float(v) for v in s.evidence],
            }
        )


#: What a snapshot keeps: the rules and the state; the rest is rebuilt from the rules.
_STATE = ("rules", "evidence", "_series", "_previous", "_seen")

_LEVEL_NAMES = pl.Series("level", SEVERITIES)
_UTC = pl.Datetime("us", "UTC")
_MINUTE = 60_000_000  # µs
_DAY = 24 * 60 * _MINUTE
_DAYS_KEPT = 4  # days of bands by minute kept per rule


def _with_level(values: pl.DataFrame, ranks: np.ndarray | None) -> pl.DataFrame:
    """``values`` with the ``level`` of each rank (``None``: all normal)."""
    if ranks is None:
        level = _LEVEL_NAMES.new_from_index(0, values.height)
    else:
        level = _LEVEL_NAMES.gather(ranks)
    if "level" in values.columns:
        return values.with_columns(level)
    return values.hstack([level])


class _Columns:
    """The columns of one batch the evaluator reads, as NumPy arrays (times in µs)."""

    def __init__(self, values: pl.DataFrame) -> None:
        self.frame = values
        value = values.get_column("value")
        self.value = value.to_numpy().astype(np.float64, copy=False)  # NaN where null
        self.null = value.is_null().to_numpy() if value.null_count() else np.zeros(len(value), bool)
        self.samples = values.get_column("samples").to_numpy()  # NaN where null: not judged

    @cached_property
    def start(self) -> np.ndarray:
        return _micros(self.frame.get_column("window_start"))

    @cached_property
    def end(self) -> np.ndarray:
        return _micros(self.frame.get_column("window_end"))

    def take(self, names: list[str], rows: list[int]) -> list[tuple]:
        """Columns ``names`` at ``rows`` (in that order), as tuples."""
        if not rows:
            return []
        low, high = min(rows), max(rows) + 1
        if high - low <= 4 * len(rows) + 64:  # near each other: slices
            got = [self.frame.get_column(c).slice(low, high - low).to_list() for c in names]
            return [tuple(c[i - low] for c in got) for i in rows]
        at = pl.Series(rows, dtype=pl.Int64)
        return self.frame.lazy().select(pl.col(names).gather(at)).collect(engine=ENGINE).rows()


def _micros(col: pl.Series) -> np.ndarray:
    return col.to_numpy().astype("datetime64[us]", copy=False).view(np.int64)


class _Last:
    """Each entity's last window under one ``change`` rule: start, end (µs) and value."""

    def __init__(self) -> None:
        self.slot: dict[str, int] = {}  # entity -> its row in the arrays
        self.start = np.zeros(0, np.int64)
        self.end = np.zeros(0, np.int64)
        self.value = np.zeros(0, np.float64)
        self.null = np.zeros(0, bool)
        self.known = np.zeros(0, bool)  # whether the row holds a window yet

    @classmethod
    def of(cls, frame: pl.DataFrame) -> _Last:
        """From a frame of ``entity_id``, ``window_start``, ``window_end`` and ``value``."""
        last = cls()
        value = frame.get_column("value")
        last.keep(
            last.slots(frame.get_column("entity_id").to_list()),
            _micros(frame.get_column("window_start")),
            _micros(frame.get_column("window_end")),
            value.to_numpy().astype(np.float64),
            value.is_null().to_numpy(),
        )
        return last

    def slots(self, entities: list[str]) -> np.ndarray:
        """The row of each entity, new ones added (not ``known``)."""
        slot = self.slot
        found = np.fromiter((slot.get(e, -1) for e in entities), np.int64, len(entities))
        if found.size and found.min() < 0:
            for e in entities:
                slot.setdefault(e, len(slot))
            grow = len(slot) - self.known.size
            self.start = np.concatenate([self.start, np.zeros(grow, np.int64)])
            self.end = np.concatenate([self.end, np.zeros(grow, np.int64)])
            self.value = np.concatenate([self.value, np.zeros(grow, np.float64)])
            self.null = np.concatenate([self.null, np.zeros(grow, bool)])
            self.known = np.concatenate([self.known, np.zeros(grow, bool)])
            found = np.fromiter((slot[e] for e in entities), np.int64, len(entities))
        return found

    def keep(self, slots, start, end, value, null) -> None:
        """Store the last window of each of ``slots`` (distinct)."""
        self.start[slots], self.end[slots] = start, end
        self.value[slots], self.null[slots] = value, null
        self.known[slots] = True


def _silent_row(at: datetime, value: float) -> dict:
    return {"window_end": at, "_v": value, "_variant": 0}


def _known(rule: Rule, level: str, variant: int) -> str:
    """``level`` if the bands in force have it, else their mildest level."""
    levels = rule.variants[variant].levels
    return level if level in levels else next(iter(levels))


def _worse(rule: Rule, peak: float, value: float) -> float:
    """The worse of two values under ``rule``: further out on the bad side. NaN is above
    every number, as the grading has it: the worst ``above`` and ``outside``, never worse
    ``below``."""
    if math.isnan(value) or math.isnan(peak):
        if rule.direction == "below":
            return peak if math.isnan(value) else value
        return math.nan
    if rule.direction == "above":
        return max(peak, value)
    if rule.direction == "below":
        return min(peak, value)
    low, high = rule.variants[0].span(next(iter(rule.levels)), "outside")
    middle = (low + high) / 2
    return value if abs(value - middle) > abs(peak - middle) else peak
