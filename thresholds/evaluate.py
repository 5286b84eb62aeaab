"""From indicator values to graded levels and the lives of alerts.

The :class:`Evaluator` grades every value against its rules in one
vectorised pass. Only values that are in breach, or that belong to a series
with an alert open or pending, go through the per-series state machine:

- **pending**: in breach, but for fewer than ``for`` windows; nothing is said;
- **opened**: the first record of an alert, with a stable ``alert_id``;
- **escalated / downgraded**: the level moved; a level is left only once the
  value is back past its bound by ``hysteresis``, so a value that hovers on
  a bound does not flap;
- **cleared**: back to normal for ``clear_for`` windows; the series is then
  forgotten, so state stays as small as the set of series in trouble.

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

import polars as pl

from schemas.families import SEVERITIES
from thresholds.rules import Rule, RuleSet

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

    level: str = "normal"
    pending: int = 0
    pending_since: datetime | None = None
    calm: int = 0
    alert_id: str | None = None
    sequence: int = -1
    first_ts: datetime | None = None
    peak: float | None = None
    evidence: deque = field(default_factory=deque)


def _raw_level(rule: Rule) -> pl.Expr:
    v = pl.col("value")
    expr = pl.lit("normal")
    for name, bound in rule.levels.items():  # mild to grave: the last match wins
        hit = (v >= bound) if rule.direction == "above" else (v <= bound)
        expr = pl.when(hit).then(pl.lit(name)).otherwise(expr)
    return expr


class Evaluator:
    """Grades indicator values and tracks alerts, per (rule, entity)."""

    def __init__(self, rules: RuleSet, evidence: int = 5) -> None:
        self.rules = rules
        self.evidence = evidence
        self._by_indicator: dict[str, list[Rule]] = {}
        for r in rules.rules:
            self._by_indicator.setdefault(r.indicator, []).append(r)
        self._series: dict[str, dict[str, _Series]] = {}  # rule id -> entity -> state

    @property
    def open_alerts(self) -> int:
        return sum(
            1 for by_entity in self._series.values() for s in by_entity.values() if s.alert_id
        )

    def evaluate(self, values: pl.DataFrame, now: datetime) -> tuple[pl.DataFrame, list[dict]]:
        """Return ``values`` with a ``level`` column, and the alert changes they cause."""
        if values.height == 0:
            return values.with_columns(level=pl.lit(None, dtype=pl.String)), []
        values = values.with_row_index("_i")
        graded: list[pl.DataFrame] = []
        changes: list[dict] = []
        for indicator_id, rows in values.partition_by("indicator_id", as_dict=True).items():
            indicator_id = indicator_id[0]
            level = pl.lit("normal")
            for rule in self._by_indicator.get(indicator_id, []):
                raw = _raw_level(rule)
                judged = pl.col("samples") >= rule.min_samples
                rows = rows.with_columns(_raw=pl.when(judged).then(raw).otherwise(None))
                # Series in trouble: watched already, or in breach somewhere in this batch.
                watched = set(self._series.get(rule.id, ()))
                watched.update(rows.filter(pl.col("_raw") != "normal")["entity_id"].unique())
                hot = rows.filter(pl.col("entity_id").is_in(list(watched))).sort(
                    "entity_id", "window_start"
                )
                levels: dict[int, str] = {}
                for row in hot.iter_rows(named=True):
                    lvl = self._step(rule, row, now, changes)
                    levels[row["_i"]] = lvl
                if levels:
                    stepped = pl.DataFrame(
                        {"_i": list(levels), "_lvl": list(levels.values())},
                        schema={"_i": pl.UInt32, "_lvl": pl.String},
                    )
                    rows = rows.join(stepped, on="_i", how="left")
                else:
                    rows = rows.with_columns(_lvl=pl.lit(None, dtype=pl.String))
                rule_level = pl.coalesce("_lvl", pl.lit("normal"))
                level = pl.when(_rank(rule_level) > _rank(level)).then(rule_level).otherwise(level)
                rows = rows.with_columns(_acc=level).drop("_raw", "_lvl")
                level = pl.col("_acc")
            graded.append(rows.with_columns(level=level).drop("_acc", strict=False))
        out = pl.concat(graded).sort("_i").drop("_i")
        return out, changes

    def _step(self, rule: Rule, row: dict, now: datetime, changes: list[dict]) -> str:
        entity = row["entity_id"]
        s = self._series.get(rule.id, {}).get(entity)
        raw = row["_raw"]
        if raw is None:  # too few samples to judge: keep the state as it is
            return s.level if s else "normal"
        value = row["value"]
        if s is None:
            s = _Series(evidence=deque(maxlen=self.evidence))
            self._series.setdefault(rule.id, {})[entity] = s
        s.evidence.append(value)
        if s.alert_id is None:
            if raw == "normal":
                self._forget(rule.id, entity)
                return "normal"
            if s.pending == 0:
                s.pending_since = row["window_start"]
            s.pending += 1
            if s.pending < rule.for_:
                return "normal"
            s.first_ts = s.pending_since
            s.alert_id = alert_id(rule.id, row["entity_id"], s.first_ts)
            s.peak = value
            self._emit(rule, s, row, "opened", raw, now, changes)
            return s.level
        s.peak = max(s.peak, value) if rule.direction == "above" else min(s.peak, value)
        target = raw
        if _RANK[raw] < _RANK[s.level]:
            # Leave a level only when the value is back past its bound by the hysteresis.
            target = s.level
            for name in reversed(("normal", *rule.levels)):
                if _RANK[name] < _RANK[raw]:
                    break
                if rule.holds(name, value):
                    target = name
                    break
        if target == "normal":
            s.calm += 1
            if s.calm >= rule.clear_for:
                self._emit(rule, s, row, "cleared", "normal", now, changes)
                self._forget(rule.id, entity)
                return "normal"
            return s.level
        s.calm = 0
        if target != s.level:
            state = "escalated" if _RANK[target] > _RANK[s.level] else "downgraded"
            self._emit(rule, s, row, state, target, now, changes)
        return s.level

    def _forget(self, rule_id: str, entity: str) -> None:
        """Drop a series back at normal, so state only holds series in trouble."""
        series = self._series[rule_id]
        del series[entity]
        if not series:
            del self._series[rule_id]

    def _emit(self, rule, s: _Series, row, state, severity, now, changes) -> None:
        previous = s.level
        s.sequence += 1
        s.level = severity
        bound_level = severity if severity != "normal" else previous
        bound = rule.levels[bound_level]
        if severity == "normal":  # the bound it had to get back past
            bound = (
                bound - rule.hysteresis if rule.direction == "above" else bound + rule.hysteresis
            )
        changes.append(
            {
                "alert_id": s.alert_id,
                "sequence": s.sequence,
                "state": state,
                "severity": severity,
                "previous_severity": previous,
                "rule_id": rule.id,
                "indicator_id": rule.indicator,
                "sector": row["sector"],
                "entity_type": row["entity_type"],
                "entity_id": row["entity_id"],
                "direction": rule.direction,
                "bound": float(bound),
                "value": float(row["value"]),
                "peak_value": float(s.peak),
                "first_ts": s.first_ts,
                "event_ts": row["window_end"],
                "emitted_at": now,
                "evidence": [float(v) for v in s.evidence],
            }
        )


def _rank(level: pl.Expr) -> pl.Expr:
    return level.replace_strict(_RANK, default=0, return_dtype=pl.Int8)
