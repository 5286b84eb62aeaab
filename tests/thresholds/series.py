"""Small hand-made series of indicator values for the threshold tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from thresholds.evaluate import Evaluator
from thresholds.rules import Rule, RuleSet

__all__ = ["MIN", "NOW", "T0", "at", "brief", "evaluator", "values"]

T0 = datetime(2026, 5, 12, 6, 0, tzinfo=UTC)
NOW = datetime(2026, 5, 12, 9, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def values(entity: str, vs, *, start: int = 0, indicator: str = "t", samples=None):
    """One value per one-minute window, from window ``start`` on."""
    n = len(vs)
    return pl.DataFrame(
        {
            "indicator_id": [indicator] * n,
            "sector": ["fire"] * n,
            "entity_type": ["flat"] * n,
            "entity_id": [entity] * n,
            "window_start": [T0 + (start + i) * MIN for i in range(n)],
            "window_end": [T0 + (start + i + 1) * MIN for i in range(n)],
            "value": [float(v) for v in vs],
            "samples": list(samples) if samples is not None else [10] * n,
            "unit": ["C"] * n,
        }
    )


def evaluator(evidence: int = 5, **rule) -> Evaluator:
    spec = {
        "id": "hot",
        "indicator": "t",
        "direction": "above",
        "levels": {"yellow": 45, "orange": 57, "red": 70},
        "hysteresis": 3,
    }
    spec.update(rule)
    return Evaluator(RuleSet(rules=[Rule.model_validate(spec)]), evidence=evidence)


def brief(changes):
    return [(c["state"], c["severity"]) for c in changes]


def at(window: int) -> datetime:
    return T0 + window * MIN
