"""The naive per-event baseline: the reference the benchmark measures the city flow against.

``cityvitals bench`` runs it side by side with :func:`flows.city.build` on the same input.
It is what a first Bytewax version of the pipeline would look like: every line becomes a
Python dict (``orjson.loads``), every dict becomes one keyed item per indicator it feeds,
and Bytewax's own windowing (:func:`bytewax.operators.windowing.fold_window` with an
:class:`~bytewax.operators.windowing.EventClock` and a
:class:`~bytewax.operators.windowing.TumblingWindower` aligned as the city flow's windows are,
one per window length) folds them one at a time.

**What it computes** (:func:`subset`): every column aggregation of the ``reading`` family in
the catalogue, i.e. the ``reading`` indicators whose aggregation is ``mean``, ``max``,
``min``, ``sum`` or ``count`` (``p95`` and the other families are left out). Per indicator,
entity and window it emits the same ``value`` and ``samples`` as the city flow's
``indicator_values`` for those indicators; ``tests/flows/test_naive.py`` checks it.

**What it does not do**: no dead letters (lines that don't parse, aren't ``reading``
objects, or lack a usable field are dropped), no thresholds, no timers, no lake. Its lateness
is Bytewax's: ``wait_for_system_duration`` is the same allowed lateness as the city flow's
(30 s), and late items are dropped.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource
from bytewax.operators.windowing import EventClock, TumblingWindower, fold_window
from bytewax.outputs import DynamicSink

from indicators.definitions import Catalog, IndicatorDef, load_catalog

__all__ = ["AGGREGATIONS", "EPOCH", "build", "subset"]

#: The column aggregations the baseline computes (of the ``reading`` family).
AGGREGATIONS = ("mean", "max", "min", "sum", "count")

#: Windows are tumbling and start a whole number of windows from the epoch moved back by the
#: catalogue's UTC offset, as the city flow's do
#: (:attr:`indicators.definitions.IndicatorDef.window_offset_us`).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_SEP = "\x1f"  # between indicator id and entity id in a key


def subset(catalog: Catalog) -> list[IndicatorDef]:
    """The indicators the baseline computes: reading-family column aggregations.

    >>> ids = [d.id for d in subset(load_catalog())]
    >>> "fire.temperature" in ids, "bridge.vibration_p95" in ids
    (True, False)
    """
    return [
        d for d in catalog.indicators if d.family == "reading" and d.aggregation in AGGREGATIONS
    ]


@dataclass(frozen=True, slots=True)
class _Spec:
    id: str
    window: int  # index into the window lengths
    by: tuple[str, ...]
    where: tuple[tuple[str, str], ...]
    field: str
    divide_by: str | None
    count: bool


def _specs(defs: list[IndicatorDef]) -> tuple[list[timedelta], dict[str | None, list[_Spec]]]:
    """Window lengths, and the indicators by the metric their filter names (None: any)."""
    lengths = sorted({d.window for d in defs})
    by_metric: dict[str | None, list[_Spec]] = defaultdict(list)
    for d in defs:
        where = dict(d.where or {})
        metric = where.pop("metric", None)
        by_metric[metric].append(
            _Spec(
                d.id,
                lengths.index(d.window),
                tuple(d.entity.by),
                tuple(where.items()),
                d.field,
                d.divide_by,
                d.aggregation == "count",
            )
        )
    return lengths, dict(by_metric)


def _parse_ts(ts: object) -> datetime | None:
    if not isinstance(ts, str):
        return None
    try:
        t = datetime.fromisoformat(ts)
    except ValueError:
        return None
    return t.astimezone(UTC) if t.tzinfo is not None else None


def _explode(by_metric: dict[str | None, list[_Spec]]):
    """One line to ``(window index, (key, (ts, value)))`` items, one per indicator it feeds."""

    def explode(line: bytes) -> list[tuple[int, tuple[str, tuple[datetime, float]]]]:
        try:
            ev = orjson.loads(line)
        except orjson.JSONDecodeError:
            return []
        if not isinstance(ev, dict) or ev.get("family") != "reading":
            return []
        ts = _parse_ts(ev.get("ts"))
        if ts is None:
            return []
        out = []
        for spec in by_metric.get(ev.get("metric"), []) + by_metric.get(None, []):
            if any(ev.get(k) != v for k, v in spec.where):
                continue
            parts = [ev.get(c) for c in spec.by]
            if not all(isinstance(p, str) for p in parts):
                continue
            raw = ev.get(spec.field)
            if raw is None:
                continue
            if spec.count:
                v = 1.0
            else:
                if isinstance(raw, bool) or not isinstance(raw, int | float):
                    continue
                v = float(raw)
                if spec.divide_by is not None:
                    den = ev.get(spec.divide_by)
                    if isinstance(den, bool) or not isinstance(den, int | float) or den == 0:
                        continue
                    v = v / den
                if not math.isfinite(v):
                    continue
            out.append((spec.window, (spec.id + _SEP + "/".join(parts), (ts, v))))
        return out

    return explode


def _new() -> list[float]:
    return [0, 0.0, math.inf, -math.inf]  # n, sum, min, max


def _fold(acc: list[float], item: tuple[datetime, float]) -> list[float]:
    v = item[1]
    acc[0] += 1
    acc[1] += v
    if v < acc[2]:
        acc[2] = v
    if v > acc[3]:
        acc[3] = v
    return acc


def _merge(a: list[float], b: list[float]) -> list[float]:
    return [a[0] + b[0], a[1] + b[1], min(a[2], b[2]), max(a[3], b[3])]


def _finisher(defs: list[IndicatorDef], length: timedelta, align: datetime):
    aggregation = {d.id: d.aggregation for d in defs}

    def finish(item: tuple[str, tuple[int, list[float]]]) -> dict:
        key, (window_id, (n, total, low, high)) = item
        indicator_id, entity_id = key.split(_SEP, 1)
        agg = aggregation[indicator_id]
        value = {
            "mean": total / n if n else math.nan,
            "max": high,
            "min": low,
            "sum": total,
            "count": float(n),
        }[agg]
        return {
            "indicator_id": indicator_id,
            "entity_id": entity_id,
            "window_start": align + window_id * length,
            "value": value,
            "samples": int(n),
        }

    return finish


def build(
    source: FixedPartitionedSource,
    sink: DynamicSink,
    catalog: Catalog | None = None,
    allowed_lateness: timedelta = timedelta(seconds=30),
) -> Dataflow:
    """The naive flow: ``source`` yields batches with ``.lines`` (``RawBatch``); rows to ``sink``.

    Each row is a dict with ``indicator_id``, ``entity_id``, ``window_start`` (UTC),
    ``value`` and ``samples``.
    """
    catalog = catalog or load_catalog()
    defs = subset(catalog)
    lengths, by_metric = _specs(defs)
    # The definitions' own offset, as the city flow's aggregator takes it (one catalogue's).
    offset = defs[0].window_offset_us if defs else 0
    align = EPOCH - timedelta(microseconds=offset)
    flow = Dataflow("cityvitals_naive")
    batches = op.input("read", flow, source)
    lines = op.flat_map("lines", batches, lambda b: b.lines)
    # bytes: one line
    items = op.flat_map("explode", lines, _explode(by_metric))
    # (window index, (indicator\x1fentity, (ts, value))): one per indicator the event feeds
    clock = EventClock(lambda x: x[0], wait_for_system_duration=allowed_lateness)
    outs = []
    for i, length in enumerate(lengths):
        mine = op.filter_map(f"window_{i}", items, lambda it, i=i: it[1] if it[0] == i else None)
        windower = TumblingWindower(length=length, align_to=align)
        folded = fold_window(f"fold_{i}", mine, clock, windower, _new, _fold, _merge)
        # (key, (window id, [n, sum, min, max]))
        outs.append(op.map(f"finish_{i}", folded.down, _finisher(defs, length, align)))
    rows = op.merge("rows", *outs)
    op.output("out", rows, sink)
    return flow
