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
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import polars as pl

from indicators.aggregate import ENGINE
from schemas.families import SEVERITIES
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
        self._by_indicator: dict[str, list[Rule]] = {}
        for r in rules.rules:
            self._by_indicator.setdefault(r.indicator, []).append(r)
        self._series: dict[str, dict[str, _Series]] = {}  # rule id -> entity -> state
        self._previous: dict[str, pl.DataFrame] = {}  # change rules: last window per entity
        self._seen: dict[str, dict[str, _Seen]] = {}  # no_data alert rules: entity -> last
        self._gid = {r.id: i for i, r in enumerate(rules.rules)}  # rule id -> position
        self._k = [self._by_indicator[r.indicator].index(r) for r in rules.rules]
        self._simple = {i for i, r in enumerate(rules.rules) if _simple(r)}
        self._no_data_alert = [
            i for i, r in enumerate(rules.rules) if r.no_data and r.no_data.action == "alert"
        ]
        # Built once: expressions of the rules the table of bounds does not serve.
        self._exprs = {
            i: self._graded(r) for i, r in enumerate(rules.rules) if i not in self._simple
        }
        self._bounds = _bounds(
            [(i, self._k[i], r) for i, r in enumerate(rules.rules) if i in self._simple]
        )

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

        All (value, rule) pairs are graded by one query: rules that judge the
        value under their own bands only join a table of bounds; rules with
        schedules or overrides, and ``change`` rules, add a plan of their own.
        Only the series in trouble then go through :meth:`_step`, in the
        order of the indicators' first rows, the rules' order, entity and window.
        """
        present = set(values["indicator_id"].unique())
        rows = values.lazy().with_row_index("_i")
        # The indicators' order of first rows: the order the series are stepped in.
        rows = rows.with_columns(_ind=pl.col("_i").min().over("indicator_id"))
        simple = self._bounds.filter(pl.col("indicator_id").is_in(list(present)))
        plans = [
            rows.join(simple.lazy(), on="indicator_id")
            .with_columns(_v=pl.col("value"), _variant=pl.lit(0, dtype=pl.Int16))
            .with_columns(_raw=_SIMPLE_RAW)
            .select(_COLUMNS)
        ]
        lasts: dict[str, pl.LazyFrame] = {}  # change rules: each entity's last window
        for gid, rule in enumerate(self.rules.rules):
            if gid in self._simple or rule.indicator not in present:
                continue
            variant, raw = self._exprs[gid]
            mine = rows.filter(pl.col("indicator_id") == rule.indicator)
            mine = mine.with_columns(_variant=variant)
            if rule.measure == "value":  # bands by schedule or override: no state
                mine = mine.with_columns(_v=pl.col("value"))
            else:
                mine, lasts[rule.id] = self._changes(rule, mine)
            plans.append(
                mine.with_columns(
                    _rule=pl.lit(gid, dtype=pl.Int32),
                    _k=pl.lit(self._k[gid], dtype=pl.Int32),
                    _raw=raw,
                ).select(_COLUMNS)
            )
        pairs = pl.concat(plans)
        # Series in trouble: watched already, or in breach somewhere in this batch.
        trouble = (pl.col("_raw") != "normal").fill_null(False).any().over("_rule", "entity_id")
        watched = [(self._gid[r], e) for r, by in self._series.items() for e in by]
        if watched:
            keys = pl.DataFrame(
                watched, schema={"_rule": pl.Int32, "entity_id": pl.String}, orient="row"
            ).with_columns(_watched=pl.lit(True))
            pairs = pairs.join(keys.lazy(), on=["_rule", "entity_id"], how="left")
            trouble = trouble | pl.col("_watched").fill_null(False)
        pairs, *kept = pl.collect_all(
            [pairs.with_columns(_hot=trouble), *lasts.values()], engine=ENGINE
        )
        self._previous.update(zip(lasts, kept, strict=True))
        for g in self._no_data_alert:
            if self.rules.rules[g].indicator in present:
                self._remember(self.rules.rules[g], pairs.filter(pl.col("_rule") == g))
        hot = pairs.filter("_hot").sort("_ind", "_k", "entity_id", "window_start")
        ranks = np.zeros(values.height, dtype=np.int64)
        rules = self.rules.rules
        for row in hot.iter_rows(named=True):
            rank = _RANK[self._step(rules[row["_rule"]], row, now, changes)]
            if rank > ranks[row["_i"]]:
                ranks[row["_i"]] = rank
        return values.with_columns(level=_LEVEL_NAMES.gather(ranks))

    def _graded(self, rule: Rule) -> tuple[pl.Expr, pl.Expr]:
        """``rule``'s expressions of the bands in force for each row (``_variant``), and of
        the raw level of its ``_v`` under them (``_raw``, null where it is not judged)."""
        tz = self.rules.timezone
        variant = rule.variant_of(pl.col("entity_id"), pl.col("window_start"), tz)
        raw = rule.level_expr(pl.col("_v"), pl.col("_variant"))
        judged = (pl.col("samples") >= rule.min_samples) & pl.col("_v").is_not_null()
        return variant, pl.when(judged).then(raw).otherwise(None)

    def _changes(self, rule: Rule, rows: pl.LazyFrame) -> tuple[pl.LazyFrame, pl.LazyFrame]:
        """Add ``_v``, the difference from the same entity's previous, adjacent window.

        Also returns the plan of what to keep: each entity's last window.
        """
        cols = ["entity_id", "window_start", "window_end", "value"]
        now = rows.select("_i", *cols)
        stored = self._previous.get(rule.id)
        if stored is not None:
            before = (
                stored.lazy()
                .join(now.select("entity_id").unique(), on="entity_id", how="semi")
                .with_columns(_i=pl.lit(None, dtype=pl.UInt32))
            )
            now = pl.concat([before.select("_i", *cols), now])
        now = now.sort("entity_id", "window_start").with_columns(
            _v=pl.when(pl.col("window_end").shift(1).over("entity_id") == pl.col("window_start"))
            .then(pl.col("value") - pl.col("value").shift(1).over("entity_id"))
            .otherwise(None)
        )
        last = now.group_by("entity_id").agg(pl.all().exclude("_i", "_v").last()).select(cols)
        if stored is not None:  # entities without a value in this batch keep theirs
            kept = stored.lazy().join(last.select("entity_id"), on="entity_id", how="anti")
            last = pl.concat([kept, last])
        judged = rows.join(now.filter(pl.col("_i").is_not_null()).select("_i", "_v"), on="_i")
        return judged, last

    def _remember(self, rule: Rule, rows: pl.DataFrame) -> None:
        """Note each entity's latest window, so its silence can be noticed."""
        seen = self._seen.setdefault(rule.id, {})
        latest = (
            rows.sort("window_start")
            .group_by("entity_id")
            .agg(
                pl.col("sector", "entity_type", "window_end").last(),
                pl.col("_v").drop_nulls().last(),
                pl.col("value").last(),
            )
        )
        for entity, sector, etype, end, v, value in latest.iter_rows():
            old = seen.get(entity)
            if old is None or end > old.last_end:
                seen[entity] = _Seen(sector, etype, end, v if v is not None else value)
            s = self._series.get(rule.id, {}).get(entity)
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
        for rule in self.rules.rules:
            policy = rule.no_data
            if policy is None or policy.action == "keep":
                continue
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


#: The columns of every graded (value, rule) pair.
_COLUMNS = [
    "_rule",
    "_k",
    "_i",
    "_ind",
    "indicator_id",
    "sector",
    "entity_type",
    "entity_id",
    "window_start",
    "window_end",
    "value",
    "samples",
    "_v",
    "_variant",
    "_raw",
]

_LEVEL_NAMES = pl.Series("level", SEVERITIES)


def _simple(rule: Rule) -> bool:
    """Whether ``rule`` judges the value itself under its own bands only."""
    return rule.measure == "value" and not rule.schedules and not rule.overrides


def _bounds(rules: list[tuple[int, int, Rule]]) -> pl.DataFrame:
    """One row per ``(position, position among its indicator's rules, rule)``: its bounds.

    ``_lo_L`` / ``_hi_L``: values at or below / at or above reach level ``L``
    (null where the rule has no such level or side); see :data:`_SIMPLE_RAW`.

    >>> from thresholds.rules import Rule
    >>> r = Rule(id="hot", indicator="t", direction="above", levels={"red": 70}, min_samples=2)
    >>> _bounds([(0, 0, r)]).select("_rule", "_min", "_lo_red", "_hi_red").rows()
    [(0, 2, None, 70.0)]
    """
    cols: dict[str, list] = {"indicator_id": [], "_rule": [], "_k": [], "_min": []}
    for name in LEVELS:
        cols[f"_lo_{name}"], cols[f"_hi_{name}"] = [], []
    for gid, k, rule in rules:
        cols["indicator_id"].append(rule.indicator)
        cols["_rule"].append(gid)
        cols["_k"].append(k)
        cols["_min"].append(rule.min_samples)
        for name in LEVELS:
            low, high = rule.span(name, rule.direction) if name in rule.levels else (None, None)
            cols[f"_lo_{name}"].append(low)
            cols[f"_hi_{name}"].append(high)
    schema = {"indicator_id": pl.String, "_rule": pl.Int32, "_k": pl.Int32, "_min": pl.Int64}
    schema |= {c: pl.Float64 for c in cols if c.startswith(("_lo_", "_hi_"))}
    return pl.DataFrame(cols, schema=schema)


def _simple_raw() -> pl.Expr:
    """The raw level from a row's ``_v`` and its rule's bounds: the gravest level reached.

    Null where the rule does not judge the row (too few samples, no value).
    """
    v = pl.col("_v")
    raw = pl.lit("normal")
    for name in LEVELS:  # mild to grave: the last match wins
        hit = (v <= pl.col(f"_lo_{name}")).fill_null(False) | (
            v >= pl.col(f"_hi_{name}")
        ).fill_null(False)
        raw = pl.when(hit).then(pl.lit(name)).otherwise(raw)
    judged = (pl.col("samples") >= pl.col("_min")) & v.is_not_null()
    return pl.when(judged).then(raw).otherwise(None)


_SIMPLE_RAW = _simple_raw()


def _silent_row(at: datetime, value: float) -> dict:
    return {"window_end": at, "_v": value, "_variant": 0}


def _known(rule: Rule, level: str, variant: int) -> str:
    """``level`` if the bands in force have it, else their mildest level."""
    levels = rule.variants[variant].levels
    return level if level in levels else next(iter(levels))


def _worse(rule: Rule, peak: float, value: float) -> float:
    """The worse of two values under ``rule``: further out on the bad side."""
    if rule.direction == "above":
        return max(peak, value)
    if rule.direction == "below":
        return min(peak, value)
    low, high = rule.variants[0].span(next(iter(rule.levels)), "outside")
    middle = (low + high) / 2
    return value if abs(value - middle) > abs(peak - middle) else peak
