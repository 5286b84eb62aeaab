"""The city flow: raw wire batches to indicator values, breaches and dead letters.

Read it top to bottom; after each step a comment gives the shape of its items.
All logic lives in ``schemas``, ``indicators`` and ``thresholds``; this module
only wires it into Bytewax. ``python -m bytewax.run flows.city`` runs it on the
JSON-lines file named by ``CITYVITALS_INPUT`` into ``CITYVITALS_OUT``.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import bytewax.operators as op
import polars as pl
import pyarrow as pa
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource
from bytewax.operators import StatefulBatchLogic, StatefulLogic

from cityvitals.lake import Lake
from flows import metrics, shutdown
from flows.config import KafkaConfig, PipelineConfig
from flows.kafka_io import KafkaOutput
from flows.sinks import ParquetSink
from indicators import deadlines
from indicators.aggregate import Aggregator, split_by_shard
from indicators.definitions import Catalog, load_catalog
from indicators.liveness import heard
from indicators.timers import Clock, Timers
from indicators.watermark import PartitionClock
from indicators.windows import WindowStore
from schemas.decode import Decoded, Decoder, RawBatch
from schemas.families import (
    BREACHES,
    DEAD_LETTERS,
    DEVICE_STATUS,
    INDICATOR_VALUES,
    INGEST_BATCHES,
    ORDER_DEADLINES,
    RISK_LEVELS,
)
from schemas.messages import (
    breach_messages,
    dead_letter_messages,
    indicator_messages,
    risk_level_messages,
)
from thresholds.evaluate import Evaluator
from thresholds.models import Scorer
from thresholds.risk import PointTracker
from thresholds.risk_points import RiskPointSet, load_risk_points
from thresholds.rules import RuleSet, load_rules

__all__ = [
    "Closed",
    "EmptySnapshotError",
    "Fired",
    "Ingested",
    "ShardItem",
    "TimerItem",
    "build",
]


@dataclass(slots=True)
class Ingested:
    """One decoded batch after the lateness check, with its partials per shard."""

    decoded: Decoded
    shard_parts: list[dict[str, pl.DataFrame]]
    timer_parts: list[dict[str, pl.DataFrame]]  # heartbeat "runs" and order "changes"
    watermark_us: int | None
    max_event_us: int | None
    ended: bool  # the partition's last batch: nothing follows
    ingested_at: float  # wall clock (Unix seconds) when the batch was decoded


@dataclass(slots=True)
class TimerItem:
    """What one shard's timers receive from one batch."""

    partition: str
    runs: pl.DataFrame | None
    changes: pl.DataFrame | None
    watermark_us: int | None
    ended: bool


@dataclass(slots=True)
class ShardItem:
    """What one shard's window state receives from one batch."""

    partition: str
    parts: dict[str, pl.DataFrame]
    watermark_us: int | None
    max_event_us: int | None
    ended: bool
    ingested_at: float | None = None


def _decode(decoder: Decoder, most_lines: int):
    """The batches an activation brings, decoded together (:meth:`Decoder.decode_all`) in
    runs of up to ``most_lines`` lines (a larger batch alone), to bound the memory.

    This runs on the worker that read the batches, before ``ingest`` routes each by its
    partition: in a cluster of several processes a batch whose partition is another
    process's crosses pickled with its frames (about twice its lines' bytes)."""

    def decode(batches: list[RawBatch]) -> list[tuple[str, tuple[RawBatch, Decoded]]]:
        out = []
        for run in _runs_of(batches, most_lines):
            out += [
                (batch.key, (batch, decoded))
                for batch, decoded in zip(run, decoder.decode_all(run), strict=True)
            ]
        return out

    return decode


def _runs_of(batches: list[RawBatch], most_lines: int) -> list[list[RawBatch]]:
    """``batches`` in order, cut into runs of at most ``most_lines`` lines (or one batch).

    >>> sizes = lambda runs: [[len(b.lines) for b in run] for run in runs]
    >>> sizes(_runs_of([RawBatch("t", p, 0, [b"x"] * n) for p, n in enumerate([3, 4, 9, 0, 2])], 8))
    [[3, 4], [9], [0, 2]]
    >>> sizes(_runs_of([RawBatch("t", p, 0, [b"x"] * n) for p, n in enumerate([0, 8, 1])], 8))
    [[0, 8], [1]]
    """
    runs: list[list[RawBatch]] = []
    lines = 0
    for batch in batches:
        if not runs or lines + len(batch.lines) > most_lines:
            runs.append([])
            lines = 0
        runs[-1].append(batch)
        lines += len(batch.lines)
    return runs


class _Ingest:
    """Set late events aside and pre-aggregate: one partition's step."""

    def __init__(
        self, now: Callable[[], datetime], catalog: Catalog, config: PipelineConfig
    ) -> None:
        self.now = now  # the decoder's clock: what "now" late events are judged at
        self.catalog = catalog
        self.config = config
        self._aggregator = Aggregator(catalog)

    def __call__(self, clock: PartitionClock | None, item: tuple[RawBatch, Decoded]):
        batch, decoded = item
        clock = clock or PartitionClock(self.config.allowed_lateness)
        decoded = clock.set_aside_late(decoded, self.now())
        metrics.observe_batch(decoded.frames, decoded.dead["reason"])
        if batch.idle_until is not None:  # an idle partition must not hold windows open
            clock.observe(int(batch.idle_until.timestamp() * 1_000_000))
        parts = split_by_shard(self._aggregator.partials(decoded.frames), self.config.shard_count)
        timed = {}
        if (beats := decoded.frames.get("heartbeat")) is not None and beats.height:
            timed["runs"] = heard(beats, self.catalog.devices)
        if (orders := decoded.frames.get("workorder")) is not None and orders.height:
            timed["changes"] = deadlines.changes(orders)
        timers = split_by_shard(timed, self.config.shard_count, _TIMER_KEYS)
        ing = Ingested(
            decoded,
            parts,
            timers,
            clock.watermark_us,
            clock.max_event_us,
            batch.ended,
            time.time(),
        )
        return clock, ing


#: Devices and orders are spread over the shards by their own ids.
_TIMER_KEYS = {"runs": "device_id", "changes": "order_id"}


@dataclass(slots=True)
class Closed:
    """Values of the windows a shard just closed, and its watermark (event time).

    Sent whenever either changes, so silent series are judged on time.
    """

    values: pl.DataFrame
    watermark: datetime | None
    ingested_at: float | None = None  # earliest of the batches that closed them (errs high)


class _Windows(StatefulBatchLogic[ShardItem, Closed, bytes]):
    """Bytewax glue around one shard's :class:`WindowStore`.

    All the items an activation brings (one per source partition that had a batch)
    are merged and closed together: one close, not one per partition.
    """

    def __init__(self, store: WindowStore, recovery: bool) -> None:
        self.store = store
        self.recovery = recovery
        self._said: int | None = None  # the watermark last passed on

    def on_batch(self, values: list[ShardItem]):
        for value in values:
            self.store.add(value.parts)
        out = self.store.advance_all(
            (v.partition, v.watermark_us, v.max_event_us, v.ended) for v in values
        )
        mark = self.store.watermark_us
        if not out.height and mark == self._said:
            return [], StatefulBatchLogic.RETAIN
        self._said = mark
        at = None if mark is None else datetime.fromtimestamp(mark / 1e6, UTC)
        stamps = [v.ingested_at for v in values if v.ingested_at is not None]
        return [Closed(out, at, min(stamps, default=None))], StatefulBatchLogic.RETAIN

    def on_eof(self):
        if shutdown.requested():  # a stop, not the end of the stream: windows stay open
            return [], StatefulBatchLogic.RETAIN
        out = self.store.flush()  # the end of input is not silence: no watermark
        return ([Closed(out, None)] if out.height else []), StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return _frozen(self.store, self.recovery)


class _Score(StatefulLogic[Closed, Closed, bytes]):
    """Bytewax glue around one shard's :class:`Scorer`: model scores join the values."""

    def __init__(self, scorer: Scorer, recovery: bool) -> None:
        self.scorer = scorer
        self.recovery = recovery

    def on_item(self, value: Closed):
        scores = self.scorer.score(value.values)
        if scores.height:
            value = replace(value, values=pl.concat([value.values, scores]))
        return [value], StatefulLogic.RETAIN

    def snapshot(self) -> bytes:
        return _frozen(self.scorer, self.recovery)


@dataclass(slots=True)
class Fired:
    """Records a shard's timers produced: device status and order deadline changes."""

    devices: pl.DataFrame
    orders: pl.DataFrame


class _Timers(StatefulBatchLogic[TimerItem, Fired, bytes]):
    """Bytewax glue around one shard's :class:`Timers`: input, and wall-clock wake-ups.

    All the items an activation brings are taken at once: the clock moves once.
    """

    def __init__(self, timers: Timers, recovery: bool) -> None:
        self.timers = timers
        self.recovery = recovery

    def on_batch(self, values: list[TimerItem]):
        fired = self.timers.add_all(
            ((v.partition, v.runs, v.changes, v.watermark_us, v.ended) for v in values),
            datetime.now(UTC),
        )
        return _fired(*fired), StatefulBatchLogic.RETAIN

    def on_notify(self):
        return _fired(*self.timers.tick(datetime.now(UTC))), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self.timers.wake_at()

    def snapshot(self) -> bytes:
        return _frozen(self.timers, self.recovery)


def _fired(devices: pl.DataFrame, orders: pl.DataFrame) -> list[Fired]:
    return [Fired(devices, orders)] if devices.height or orders.height else []


def _to_timers(item: tuple[str, Ingested]) -> list[tuple[str, TimerItem]]:
    partition, ing = item
    return [
        (
            str(i),
            TimerItem(
                partition, parts.get("runs"), parts.get("changes"), ing.watermark_us, ing.ended
            ),
        )
        for i, parts in enumerate(ing.timer_parts)
    ]


def _stamped(frame: pl.DataFrame, schema: pa.Schema) -> pa.Table | None:
    """Records with their ``emitted_at`` (now), as an Arrow table; None if there are none."""
    if not frame.height:
        return None
    return _arrow(frame.with_columns(emitted_at=pl.lit(datetime.now(UTC))), schema)


def _to_shards(item: tuple[str, Ingested]) -> list[tuple[str, ShardItem]]:
    partition, ing = item
    return [
        (
            str(i),
            ShardItem(
                partition, parts, ing.watermark_us, ing.max_event_us, ing.ended, ing.ingested_at
            ),
        )
        for i, parts in enumerate(ing.shard_parts)
    ]


def _accounting(item: tuple[str, Ingested]) -> tuple[str, pa.Table]:
    key, ing = item
    d = ing.decoded
    return key, pa.Table.from_pylist(
        [
            {
                "processed_at": datetime.now(UTC),
                "source": d.source,
                "partition": d.partition,
                "first_offset": d.first_offset,
                "events_in": d.events_in,
                "valid": d.valid,
                "dead_letters": d.dead.height,
                "max_event_ts": d.max_event_ts,
            }
        ],
        schema=INGEST_BATCHES,
    )


def _arrow(frame: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    return frame.select(schema.names).to_arrow().cast(schema)


def _to_risk(readers: pl.DataFrame):
    """The rows of a shard's values that are factors of risk points, per risk point id."""

    def route(item: tuple[str, tuple[pl.DataFrame, list]]) -> list[tuple[str, tuple]]:
        values = item[1][0]
        if not values.height or not readers.height:
            return []
        rows = values.join(readers, on=["indicator_id", "entity_id"]).sort(
            "risk_point_id", "window_end", "indicator_id", "entity_id"
        )
        cols = ("indicator_id", "entity_id", "window_end", "value")
        return [
            (point, (point, group.select(cols).rows()))
            for (point,), group in rows.group_by("risk_point_id", maintain_order=True)
        ]

    return route


def _risk_readers(points: RiskPointSet) -> pl.DataFrame:
    """``(indicator_id, entity_id, risk_point_id)``: which point reads which series."""
    rows = [(i, e, p) for (i, e), ids in points.readers().items() for p in ids]
    return pl.DataFrame(
        rows,
        schema=dict.fromkeys(("indicator_id", "entity_id", "risk_point_id"), pl.String),
        orient="row",
    )


def _emitted(records: list[dict]) -> list[dict] | None:
    """Risk level changes with their ``emitted_at`` (now); None if there are none."""
    now = datetime.now(UTC)
    return [{**r, "emitted_at": now} for r in records] or None


def _dead(item: tuple[str, Ingested]) -> tuple[str, pl.DataFrame] | None:
    key, ing = item
    return (key, ing.decoded.dead) if ing.decoded.dead.height else None


def build(
    source: FixedPartitionedSource,
    config: PipelineConfig,
    catalog: Catalog | None = None,
    rules: RuleSet | None = None,
    decoder: Decoder | None = None,
    kafka: KafkaConfig | None = None,
    risk_points: RiskPointSet | None = None,
) -> Dataflow:
    """The city dataflow over ``source``, writing into ``config.out``.

    With ``kafka``, breaches, risk level changes and dead letters (and
    indicator values, if that topic is set) are also published to its topics.
    Unset ``config.shards`` means one shard (see :attr:`PipelineConfig.shard_count`);
    the ``bytewax.run`` entry points set it to the cluster's worker count.
    """
    catalog = catalog or load_catalog(config.catalog)
    rules = rules or load_rules(config.rules, catalog)
    risk_points = risk_points or load_risk_points(config.risk_points, catalog)
    decoder = decoder or Decoder(max_future=config.max_future, max_age=config.max_age)
    lake = Lake(config.out, catalog=catalog)
    lake.create()
    partitions = source.list_parts()
    shards = [str(i) for i in range(config.shard_count)]

    def sink(table: str) -> ParquetSink:
        return ParquetSink(
            lake, table, shards, config.flush_rows, config.flush_interval, config.recovery
        )

    clock: Clock = config.clock or (
        "wall" if kafka is not None and not kafka.stop_at_end else "event"
    )

    def timers(resume: bytes | None) -> _Timers:
        state = _thawed(resume, "timers")
        if state is None:
            return _Timers(Timers(catalog, partitions, clock), config.recovery)
        return _Timers(state.resumed(datetime.now(UTC)), config.recovery)

    def evaluate(ev: Evaluator | None, closed: Closed):
        ev = ev or Evaluator(rules)
        graded = ev.evaluate(closed.values, now=datetime.now(UTC), watermark=closed.watermark)
        metrics.observe_breaches(graded[1], closed.ingested_at)
        return ev, graded

    def grade(tracker: PointTracker | None, routed: tuple[str, list[tuple]]):
        point_id, rows = routed
        if tracker is None:
            point = risk_points.point(point_id)
            tracker = PointTracker(point, risk_points.models[point.model], risk_points.step)
        return tracker, tracker.add(rows)

    flow = Dataflow("cityvitals")
    raw = op.input("read", flow, source)
    # RawBatch: lines of one source partition
    decoded = op.flat_map_batch("decode", raw, _decode(decoder, config.batch_size))
    # (partition, (RawBatch, Decoded)): valid frames and dead letters, all batches at once
    ingested = op.stateful_map("ingest", decoded, _Ingest(decoder.now, catalog, config))
    # (partition, Ingested): valid frames, dead letters, partials per shard, watermark
    dead = op.filter_map("dead", ingested, _dead)
    # (partition, pl.DataFrame of dead letters)
    dead_tables = op.map_value("dead_table", dead, lambda d: _arrow(d, DEAD_LETTERS))
    # (partition, pa.Table of dead letters)
    op.output("dead_letters_out", dead_tables, sink("dead_letters"))
    arrived = op.filter("arrived", ingested, lambda kv: kv[1].decoded.events_in > 0)
    # (partition, Ingested) of batches with records (not idleness ticks)
    accounting = op.map("accounting", arrived, _accounting)
    # (partition, pa.Table): one row per batch, events_in = valid + dead_letters
    op.output("ingest_out", accounting, sink("ingest_batches"))
    timed = op.flat_map("to_timers", ingested, _to_timers)
    # (shard, TimerItem): heartbeat runs by device, order changes by order id, watermark
    fired = op.stateful_batch("timers", timed, timers)
    # (shard, Fired): devices gone offline or back, orders overdue and what became of them
    device_tables = op.filter_map_value(
        "device_table", fired, lambda f: _stamped(f.devices, DEVICE_STATUS)
    )
    # (shard, pa.Table of device status changes)
    op.output("device_status_out", device_tables, sink("device_status"))
    order_tables = op.filter_map_value(
        "order_table", fired, lambda f: _stamped(f.orders, ORDER_DEADLINES)
    )
    # (shard, pa.Table of order deadline records)
    op.output("order_deadlines_out", order_tables, sink("order_deadlines"))
    sharded = op.flat_map("to_shards", ingested, _to_shards)
    # (shard, ShardItem)
    values = op.stateful_batch(
        "windows",
        sharded,
        lambda resume: _Windows(_restore(resume, catalog, partitions), config.recovery),
    )
    # (shard, Closed: indicator values of windows just closed, and the watermark)
    lagged = op.inspect("window_lag", values, metrics.observe_watermark)
    # (shard, Closed), the shard's watermark lag behind the wall clock measured
    scored = op.stateful(
        "score",
        lagged,
        lambda resume: _Score(_restore_scorer(resume, catalog), config.recovery),
    )
    # (shard, Closed: the same, plus one row per model score of those values)
    graded = op.stateful_map("thresholds", scored, evaluate)
    # (shard, (values with level, [breach state changes]))
    value_tables = op.filter_map_value(
        "value_table", graded, lambda g: _arrow(g[0], INDICATOR_VALUES) if g[0].height else None
    )
    # (shard, pa.Table of indicator values)
    op.output("indicator_values_out", value_tables, sink("indicator_values"))
    breaches = op.filter_map_value("breaches", graded, lambda g: g[1] or None)
    # (shard, [breach state change dicts])
    breach_tables = op.map_value(
        "breach_table", breaches, lambda b: pa.Table.from_pylist(b, schema=BREACHES)
    )
    # (shard, pa.Table of breach state changes)
    op.output("breaches_out", breach_tables, sink("breaches"))
    routed = op.flat_map("to_risk", graded, _to_risk(_risk_readers(risk_points)))
    # (risk point id, (risk point id, [(indicator_id, entity_id, window_end, value)]))
    risk = op.stateful_map("risk", routed, grade)
    # (risk point id, [level change records]): scored and graded, see thresholds/risk.py
    risk_changes = op.filter_map_value("risk_changes", risk, _emitted)
    # (risk point id, [RISK_LEVELS record dicts with emitted_at])
    risk_tables = op.map_value(
        "risk_table", risk_changes, lambda r: pa.Table.from_pylist(r, schema=RISK_LEVELS)
    )
    # (risk point id, pa.Table of risk level changes)
    op.output("risk_levels_out", risk_tables, sink("risk_levels"))
    if kafka is not None:
        topics = kafka.topics

        marks = lake.root / "_kafka" if config.recovery else None

        def publish(topic: str) -> KafkaOutput:
            return KafkaOutput(kafka, topic, shards, marks)

        breach_msgs = op.map_value("breach_msgs", breaches, breach_messages)
        # (shard, [OutMessage] keyed by alert id)
        risk_msgs = op.map_value("risk_msgs", risk_changes, risk_level_messages)
        # (risk point id, [OutMessage] keyed by risk point id, header kind: risk-level)
        alerts = op.merge("alerts", breach_msgs, risk_msgs)
        # (shard or risk point id, [OutMessage]): what goes where breaches go
        op.output("breaches_kafka", alerts, publish(topics.breaches))
        dead_msgs = op.map_value("dead_msgs", dead, dead_letter_messages)
        # (partition, [OutMessage]: original bytes, reason and offset in headers)
        op.output("dead_letters_kafka", dead_msgs, publish(topics.deadletter))
        if topics.indicators:
            value_msgs = op.filter_map_value(
                "value_msgs", graded, lambda g: indicator_messages(g[0]) or None
            )
            # (shard, [OutMessage] keyed by indicator and entity)
            op.output("indicator_values_kafka", value_msgs, publish(topics.indicators))
    return flow


def _restore(resume: bytes | None, catalog: Catalog, partitions: list[str]) -> WindowStore:
    store = _thawed(resume, "windows")
    return WindowStore(catalog, partitions) if store is None else store


def _restore_scorer(resume: bytes | None, catalog: Catalog) -> Scorer:
    scorer = _thawed(resume, "score")
    return Scorer(catalog) if scorer is None else scorer


class EmptySnapshotError(RuntimeError):
    """A keyed step was resumed from a snapshot taken without recovery's state in it."""


def _thawed(resume: bytes | None, step: str) -> object | None:
    """The state a keyed step resumes from (None: a fresh start).

    An empty snapshot is one :func:`_frozen` wrote while ``pipeline.recovery`` was off
    although Bytewax was recovering: starting that step fresh would silently lose its
    windows, clocks or models, so it stops the start instead.
    """
    if resume is None:
        return None
    if not resume:
        raise EmptySnapshotError(
            f"{step}: the recovery store holds an empty snapshot, written while the flow ran "
            "with Bytewax recovery but pipeline.recovery off; start over with an empty "
            "pipeline.out and a new recovery store, and start with -r through "
            "flows.city_kafka or flows.city (they set pipeline.recovery)"
        )
    if resume.startswith(_ZSTD_MAGIC):
        with pa.CompressedInputStream(pa.BufferReader(resume), "zstd") as stream:
            return pickle.load(stream)
    return pickle.loads(resume)  # a snapshot from before they were compressed


def _frozen(state: object, recovery: bool) -> bytes:
    """A keyed step's snapshot: its state pickled (a copy, frozen now) when the flow runs
    with recovery, else nothing. Without recovery Bytewax still asks at every epoch and
    drops the answer, and pickling a shard's whole window state costs time and a transient
    copy (about 0.5 GB of peak memory at 700,000 devices on one shard).

    The pickle is streamed through zstd, never whole in memory uncompressed: at 700,000
    devices on one shard that took the recovering flow's peak from 2.2-2.3 GB to 1.8 GB
    and its recovery store from ~800 to ~150 MB, at no cost in speed (less to write).

    >>> frozen = _frozen({"a": [1, 2]}, recovery=True)
    >>> frozen.startswith(_ZSTD_MAGIC), _thawed(frozen, "doc"), _frozen({}, recovery=False)
    (True, {'a': [1, 2]}, b'')
    """
    if not recovery:
        return b""
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as stream:
        pickle.dump(state, stream, protocol=pickle.HIGHEST_PROTOCOL)
    return sink.getvalue().to_pybytes()


#: How a zstd frame starts (a pickle starts with its protocol: ``b"\x80\x05"``).
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def __getattr__(name: str):
    """``flows.city.flow`` for ``python -m bytewax.run``, built from the environment.

    The input is the file ``CITYVITALS_INPUT`` names; the settings are read as the Kafka
    flow's are (``CITYVITALS_CONFIG`` and ``CITYVITALS__...`` variables, see
    :func:`flows.config.load_flow_config`), ``CITYVITALS_OUT`` standing for
    ``CITYVITALS__PIPELINE__OUT``, and the process is set up alike
    (:func:`flows.process.prepare`: logs, ``/metrics``, the clean stop).
    """
    if name != "flow":
        raise AttributeError(name)
    from flows.config import load_flow_config
    from flows.process import entry, prepare
    from flows.sources import JsonLinesSource

    path = os.environ.get("CITYVITALS_INPUT")
    if not path:
        raise RuntimeError("CITYVITALS_INPUT must name a JSON-lines file to run flows.city")
    environ = dict(os.environ)
    if "CITYVITALS_OUT" in environ:  # named for this run: over an image's or a file's default
        environ["CITYVITALS__PIPELINE__OUT"] = environ["CITYVITALS_OUT"]

    def start() -> Dataflow:
        config, catalog = prepare(load_flow_config(environ), sys.argv, environ)
        return build(JsonLinesSource(path, config.pipeline.batch_size), config.pipeline, catalog)

    return entry(start)
