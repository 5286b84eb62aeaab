"""``cityvitals bench``: the city flow against a naive baseline and batch lower bounds.

One input set is generated once (simulator lines, ``bad_rate=0`` so every engine reads
the same rows), written to a temporary JSON-lines file, and each engine runs on it in a
child process of its own (``multiprocessing`` spawn), so that each child's
``ru_maxrss`` is that engine's peak resident memory. Every child first reads the whole
file into memory (untimed); the timed part starts from the bytes in memory:

``flow``
    :func:`flows.city.build` end to end over a :class:`~flows.sources.BatchIteratorSource`
    of the in-memory lines (batches of ``batch_size`` lines, default shards), sinks into a
    temporary lake: decode, validate, every indicator, thresholds, breaches, timers.
``naive``
    :mod:`flows.naive`, the per-event Bytewax baseline, over the same source.
``polars``
    ``pl.read_ndjson`` of the bytes, then the naive subset's aggregates by ``group_by``.
``duckdb``
    ``read_json`` of the file, then the same aggregates in SQL.
``kafka`` (when a broker is given)
    the input published to fresh topics (untimed), then the Kafka flow
    (:func:`flows.city_kafka.build_kafka_flow`, ``stop_at_end``, breaches to Kafka) timed
    from start to end; ``kafka_flow_startup_s`` is the part of that before its first
    record was read, and ``kafka_flow_running_events_per_s`` the rate after it. The
    Kafka source alone (consumers made and assigned on the clock) is timed too.
``latency``
    the city flow fed at a steady rate (see :func:`_latency_child`).

The naive, Polars and DuckDB engines compute the same subset (:func:`flows.naive.subset`);
the city flow computes the whole catalogue and more, so its ratios are conservative.
"""

from __future__ import annotations

import contextlib
import io
import math
import multiprocessing
import os
import platform
import resource
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from flows import collector
from schemas.decode import RawBatch, partition_key

__all__ = [
    "REQUIRED_KEYS",
    "BenchSettings",
    "duckdb_aggregates",
    "make_input",
    "polars_aggregates",
    "print_report",
    "run_bench",
    "run_sizes",
    "subset_catalog_and_rules",
    "write_input",
]

#: Keys the JSON report always has (``kafka_flow_events_per_s`` may be null).
REQUIRED_KEYS = (
    "events",
    "flow_events_per_s",
    "naive_events_per_s",
    "polars_batch_events_per_s",
    "duckdb_batch_events_per_s",
    "kafka_flow_events_per_s",
    "p50_latency_ms",
    "p99_latency_ms",
    "peak_rss_mb",
)

#: Events per device and simulated minute, roughly (readings, heartbeats, gates, orders).
_EVENTS_PER_DEVICE_MINUTE = 2.0


@dataclass(frozen=True)
class BenchSettings:
    """What ``cityvitals bench`` runs."""

    events: int = 300_000
    devices: int = 500
    seed: int = 7
    batch_size: int = 50_000  # the pipeline's default (flows.config.DEFAULT_BATCH_SIZE)
    rate: float = 100_000.0  # steady input rate for the latency run, events/s
    latency_events: int | None = None  # events of the latency run (default: all)
    tick: float = 0.1  # seconds between the steady source's batches
    bootstrap: str | None = None
    naive: bool = True


def _input_batches(events: int, devices: int, seed: int) -> Iterator[list[bytes]]:
    from cityvitals.simulate import Scenario, generate

    minutes = max(60, math.ceil(1.5 * events / (devices * _EVENTS_PER_DEVICE_MINUTE)) + 5)
    left = events
    for batch in generate(Scenario(devices=devices, minutes=minutes, seed=seed, bad_rate=0.0)):
        yield batch[:left]
        left -= len(batch[:left])
        if left <= 0:
            return


def make_input(events: int, devices: int, seed: int = 7) -> list[bytes]:
    """The first ``events`` lines of a clean simulated afternoon with ``devices`` devices.

    >>> lines = make_input(1_000, 200)
    >>> len(lines), lines[0][:20]
    (1000, b'{"family":"reading",')
    """
    return [line for batch in _input_batches(events, devices, seed) for line in batch]


def write_input(path: Path, events: int, devices: int, seed: int = 7) -> int:
    """:func:`make_input`'s lines written to ``path`` as they are generated; the line count."""
    count = 0
    with path.open("wb") as f:
        for batch in _input_batches(events, devices, seed):
            if batch:
                f.write(b"\n".join(batch) + b"\n")
                count += len(batch)
    return count


def _chunks(lines: list[bytes], size: int) -> Callable[[], Iterator[list[bytes]]]:
    return lambda: (lines[i : i + size] for i in range(0, len(lines), size))


def _read_lines(path: str) -> list[bytes]:
    return Path(path).read_bytes().splitlines()


class _Clock:
    """Wall-clock and CPU seconds of a ``with`` block: ``seconds``; ``cpu_s``, every thread
    of this process (user and system); ``thread_cpu_s``, the calling thread's alone (the one
    that runs a Bytewax worker under ``run_main``: its Python and the GIL-held work is
    there, while Polars and Arrow also spread over pool threads); and ``machine_cpu_s``,
    every process of the machine (``/proc/stat``; None elsewhere), which counts a local
    Kafka broker's work too. A report can then tell how many cores an engine kept busy
    (``cpu_s / seconds``) and how fast it could go with all of them.

    >>> with _Clock() as clock:
    ...     _ = sum(range(100_000))
    >>> clock.seconds > 0, clock.cpu_s >= 0
    (True, True)
    """

    seconds: float = 0.0
    cpu_s: float = 0.0
    thread_cpu_s: float = 0.0
    machine_cpu_s: float | None = None

    def __enter__(self) -> _Clock:
        self._machine = _machine_cpu_s()
        self._cpu = time.process_time()
        self._thread = time.thread_time()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
        self.thread_cpu_s = time.thread_time() - self._thread
        self.cpu_s = time.process_time() - self._cpu
        machine = _machine_cpu_s()
        if machine is not None and self._machine is not None:
            self.machine_cpu_s = machine - self._machine


def _machine_cpu_s() -> float | None:
    """CPU seconds every process of this machine has had since it booted (Linux), hypervisor
    steal and idle left out; None where ``/proc/stat`` can't tell."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with Path("/proc/stat").open() as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
        return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
    return None


def _rss_mb() -> float:
    """This process's peak resident memory, MiB.

    ``VmHWM`` of ``/proc/self/status`` where there is one: a spawned child's
    ``ru_maxrss`` starts from its parent's resident size at the fork before the exec,
    so it would count the parent's memory; ``VmHWM`` belongs to the child's own address
    space. Elsewhere ``ru_maxrss`` (KiB on Linux).
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _result(events: int, clock: _Clock, **more: object) -> dict:
    """An engine's figures: ``events`` in ``clock``'s seconds, its CPU, its peak memory."""
    return {
        "events": events,
        "seconds": clock.seconds,
        "cpu_s": clock.cpu_s,
        "thread_cpu_s": clock.thread_cpu_s,
        "machine_cpu_s": clock.machine_cpu_s,
        **more,
        "rss_mb": _rss_mb(),
    }


# ------------------------------------------------------------------ engines (child processes)


def subset_catalog_and_rules():
    """The catalogue cut to the naive subset, and the rules of those indicators."""
    from flows.config import PipelineConfig
    from flows.naive import subset
    from indicators.definitions import load_catalog
    from thresholds.rules import load_rules

    catalog = load_catalog()
    cut = catalog.model_copy(update={"indicators": subset(catalog), "models": []})
    rules = load_rules(PipelineConfig().rules)
    ids = set(cut.ids)
    return cut, rules.model_copy(update={"rules": [r for r in rules.rules if r.indicator in ids]})


def _no_risk_points():
    from thresholds.risk_points import load_risk_points

    return load_risk_points().model_copy(update={"points": []})


def _flow_child(path: str, batch_size: int, subset_only: bool = False) -> dict:
    from bytewax.testing import run_main

    from cityvitals.lake import Lake
    from flows.city import build
    from flows.config import PipelineConfig
    from flows.sources import BatchIteratorSource

    catalog, rules = subset_catalog_and_rules() if subset_only else (None, None)
    risk = _no_risk_points() if subset_only else None  # the naive flow grades no risk points
    lines = _read_lines(path)
    with tempfile.TemporaryDirectory(prefix="cityvitals-bench-") as out:
        config = PipelineConfig(out=Path(out), batch_size=batch_size)
        source = BatchIteratorSource("bench", _chunks(lines, batch_size))
        flow = build(source, config, catalog, rules, risk_points=risk)  # start-up: untimed
        with _Clock() as clock:
            run_main(flow)
        con = Lake(out).connect()
        values = con.execute("SELECT count(*) FROM indicator_values").fetchone()[0]
        breaches = con.execute("SELECT count(*) FROM breaches").fetchone()[0]
    return _result(len(lines), clock, rows=values, breaches=breaches)


def _naive_child(path: str, batch_size: int) -> dict:
    from bytewax.testing import TestingSink, run_main

    from flows import naive
    from flows.sources import BatchIteratorSource

    lines = _read_lines(path)
    rows: list[dict] = []
    source = BatchIteratorSource("bench", _chunks(lines, batch_size))
    flow = naive.build(source, TestingSink(rows))
    with _Clock() as clock:
        run_main(flow)
    return _result(len(lines), clock, rows=len(rows))


#: The columns the subset reads, as Polars and DuckDB types.
_COLUMNS = {
    "family": ("String", "VARCHAR"),
    "ts": ("String", "VARCHAR"),
    "metric": ("String", "VARCHAR"),
    "value": ("Float64", "DOUBLE"),
    "capacity": ("Float64", "DOUBLE"),
    "site_id": ("String", "VARCHAR"),
    "grid_id": ("String", "VARCHAR"),
}


def polars_aggregates(data: bytes, catalog=None):
    """The naive subset's values (of ``catalog``; by default the default one) from JSON-lines
    ``data``, by Polars in batch.

    Columns: ``indicator_id``, ``entity_id``, ``window_start`` (UTC), ``value``, ``samples``.
    """
    import polars as pl

    from flows.naive import subset
    from indicators.definitions import load_catalog

    schema = {c: getattr(pl, t) for c, (t, _) in _COLUMNS.items()}
    frame = pl.read_ndjson(io.BytesIO(data), schema=schema, ignore_errors=True).lazy()
    rows = frame.filter(pl.col("family") == "reading").with_columns(
        t=pl.col("ts").str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_zone="UTC").dt.epoch("us")
    )
    plans = []
    for d in subset(catalog or load_catalog()):
        sel = rows
        for k, v in (d.where or {}).items():
            sel = sel.filter(pl.col(k) == v)
        value = pl.col(d.field).cast(pl.Float64)
        if d.aggregation == "count":
            sel, value = sel.filter(pl.col(d.field).is_not_null()), pl.lit(1.0)
        elif d.divide_by:
            value = value / pl.col(d.divide_by)
        sel = sel.with_columns(v=value).filter(pl.col("v").is_not_null() & pl.col("v").is_finite())
        by = [pl.col(c) for c in d.entity.by]
        entity = by[0] if len(by) == 1 else pl.concat_str(by, separator="/")
        w, offset = d.window_us, d.window_offset_us
        agg = {
            "mean": pl.col("v").mean(),
            "max": pl.col("v").max(),
            "min": pl.col("v").min(),
            "sum": pl.col("v").sum(),
            "count": pl.len().cast(pl.Float64),
        }[d.aggregation]
        plans.append(
            sel.group_by(
                entity.alias("entity_id"), (pl.col("t") - (pl.col("t") + offset) % w).alias("ws")
            )
            .agg(agg.alias("value"), pl.len().cast(pl.Int64).alias("samples"))
            .select(
                pl.lit(d.id).alias("indicator_id"),
                "entity_id",
                pl.from_epoch("ws", "us").dt.replace_time_zone("UTC").alias("window_start"),
                "value",
                "samples",
            )
        )
    return pl.concat(pl.collect_all(plans))


def duckdb_aggregates(path: str, catalog=None):
    """The naive subset's values (of ``catalog``; by default the default one) from the
    JSON-lines file ``path``, by DuckDB (an Arrow table)."""
    import duckdb

    from flows.naive import subset
    from indicators.definitions import load_catalog

    columns = "{" + ", ".join(f"'{c}': '{t}'" for c, (_, t) in _COLUMNS.items()) + "}"
    selects = []
    for d in subset(catalog or load_catalog()):
        where = " AND ".join(f"{k} = '{v}'" for k, v in (d.where or {}).items()) or "TRUE"
        value = f"CAST({d.field} AS DOUBLE)"
        if d.aggregation == "count":
            value, where = "1.0", f"{where} AND {d.field} IS NOT NULL"
        elif d.divide_by:
            value = f"{value} / {d.divide_by}"
        entity = " || '/' || ".join(d.entity.by)
        agg = {"mean": "avg(v)", "max": "max(v)", "min": "min(v)", "sum": "sum(v)"}.get(
            d.aggregation, "CAST(count(*) AS DOUBLE)"
        )
        selects.append(
            f"SELECT '{d.id}' AS indicator_id, e AS entity_id, make_timestamptz(ws) AS "
            f"window_start, {agg} AS value, count(*) AS samples FROM ("
            f"SELECT {entity} AS e, t - (t + {d.window_offset_us}) % {d.window_us} AS ws, "
            f"{value} AS v FROM readings "
            f"WHERE {where}) WHERE v IS NOT NULL AND isfinite(v) GROUP BY ALL"
        )
    con = duckdb.connect()
    con.sql("SET TimeZone = 'UTC'")
    con.sql(
        "CREATE TEMP TABLE readings AS SELECT *, epoch_us(CAST(ts AS TIMESTAMPTZ)) AS t "
        f"FROM read_json('{path}', format = 'newline_delimited', columns = {columns}, "
        "ignore_errors = true) WHERE family = 'reading'"
    )
    return con.sql(" UNION ALL ".join(selects)).to_arrow_table()


def _polars_child(path: str) -> dict:
    data = Path(path).read_bytes()
    events = data.count(b"\n")
    with _Clock() as clock:
        rows = polars_aggregates(data).height
    return _result(events, clock, rows=rows)


def _duckdb_child(path: str) -> dict:
    events = Path(path).read_bytes().count(b"\n")
    with _Clock() as clock:
        rows = duckdb_aggregates(path).num_rows
    return _result(events, clock, rows=rows)


def _write_child(path: str, events: int, devices: int, seed: int) -> int:
    return write_input(Path(path), events, devices, seed)


def _in_child(fn: Callable[..., dict], *args) -> dict:
    """``fn(*args)`` in a fresh spawned process: its own interpreter, its own peak RSS, and
    the garbage collector's thresholds of a flow process (:func:`flows.collector.tune`)."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=collector.tune) as pool:
        return pool.submit(fn, *args).result()


def _rate(result: dict | None) -> float | None:
    if not result or not result["seconds"]:
        return None
    return result["events"] / result["seconds"]


def _running(result: dict | None) -> dict | None:
    """``result`` with its start-up left out of its seconds; None without a start-up."""
    if not result or result.get("startup_s") is None:
        return None
    return {
        **result,
        "seconds": result["seconds"] - result["startup_s"],
        "cpu_s": None,
        "thread_cpu_s": None,
        "machine_cpu_s": None,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _ceiling(result: dict | None, cpus: int | None, cpu: str = "cpu_s") -> float | None:
    """The events/s ``result``'s engine would reach with its CPU seconds (``cpu``: its own,
    or ``machine_cpu_s``, the machine's) spread evenly over ``cpus`` cores and nothing else
    to wait for: a bound no tuning of how the work is spread can beat, only doing less of it.

    >>> _ceiling({"events": 300_000, "cpu_s": 1.5}, 2)
    400000.0
    """
    if not result or not result.get(cpu) or not cpus:
        return None
    return result["events"] * cpus / result[cpu]


def host() -> dict:
    """The machine: cores, CPU model and memory (Linux)."""
    model = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {"cpus": os.cpu_count(), "cpu_model": model, "mem_gb": mem_gb}


def run_bench(settings: BenchSettings, say: Callable[[str], None] = print) -> dict:
    """Run every engine on one input; return the report (see :data:`REQUIRED_KEYS`)."""
    say(f"generating {settings.events:,} events from {settings.devices:,} devices ...")
    with tempfile.TemporaryDirectory(prefix="cityvitals-bench-in-") as tmp:
        path = str(Path(tmp) / "input.jsonl")
        # In a child, so that this process stays small while the engines run.
        events = _in_child(_write_child, path, settings.events, settings.devices, settings.seed)
        report: dict = {
            "events": events,
            "devices": settings.devices,
            "batch_size": settings.batch_size,
            "input_mb": round(os.path.getsize(path) / 2**20, 1),
            "host": host(),
        }
        results: dict[str, dict | None] = {}
        say("flow ...")
        results["flow"] = _in_child(_flow_child, path, settings.batch_size)
        say("flow, cut to the naive subset ...")
        results["flow_subset"] = _in_child(_flow_child, path, settings.batch_size, True)
        if settings.naive:
            say("naive flow ...")
            results["naive"] = _in_child(_naive_child, path, settings.batch_size)
        say("polars batch ...")
        results["polars"] = _in_child(_polars_child, path)
        say("duckdb batch ...")
        results["duckdb"] = _in_child(_duckdb_child, path)
        results["kafka"] = None
        if settings.bootstrap:
            say(f"kafka flow ({settings.bootstrap}) ...")
            results["kafka"] = _kafka(path, settings)
        flow_rate = _rate(results["flow"])
        rate = settings.rate
        if flow_rate and flow_rate < rate:
            rate = math.floor(flow_rate * 0.5 / 1000) * 1000 or 1000.0
        say(f"latency at a steady {rate:,.0f} events/s ...")
        results["latency"] = _in_child(
            _latency_child, path, rate, settings.latency_events, settings.batch_size, settings.tick
        )
    lat = results["latency"]
    report |= {
        "flow_events_per_s": flow_rate,
        "naive_events_per_s": _rate(results.get("naive")),
        "flow_subset_events_per_s": _rate(results["flow_subset"]),
        "polars_batch_events_per_s": _rate(results["polars"]),
        "duckdb_batch_events_per_s": _rate(results["duckdb"]),
        "kafka_flow_events_per_s": _rate(results["kafka"]),
        "kafka_publish_events_per_s": (results["kafka"] or {}).get("publish_events_per_s"),
        "kafka_source_events_per_s": _rate((results["kafka"] or {}).get("source")),
        "kafka_flow_startup_s": (results["kafka"] or {}).get("startup_s"),
        "kafka_flow_running_events_per_s": _rate(_running(results["kafka"])),
        "p50_latency_ms": lat["p50_ms"],
        "p99_latency_ms": lat["p99_ms"],
        "latency_rate_events_per_s": rate,
        "latency_requested_rate_events_per_s": settings.rate,
        "latency_samples": lat["samples"],
        "latency_tick_s": settings.tick,
        "latency_achieved_events_per_s": lat["achieved_events_per_s"],
        "peak_rss_mb": results["flow"]["rss_mb"],
        "flow_cpu_s": results["flow"]["cpu_s"],
        "flow_ceiling_events_per_s": _ceiling(results["flow"], report["host"]["cpus"]),
        "flow_subset_ceiling_events_per_s": _ceiling(
            results["flow_subset"], report["host"]["cpus"]
        ),
        "kafka_flow_ceiling_events_per_s": _ceiling(
            results["kafka"], report["host"]["cpus"], "machine_cpu_s"
        ),
        "flow_vs_naive": None,
        "flow_vs_polars": None,
        "flow_subset_vs_naive": None,
        "flow_subset_vs_polars": None,
        "engines": results,
    }
    report["flow_subset_vs_naive"] = _ratio(
        report["flow_subset_events_per_s"], report["naive_events_per_s"]
    )
    report["flow_vs_naive"] = _ratio(flow_rate, report["naive_events_per_s"])
    report["flow_vs_polars"] = _ratio(flow_rate, report["polars_batch_events_per_s"])
    report["flow_subset_vs_polars"] = _ratio(
        report["flow_subset_events_per_s"], report["polars_batch_events_per_s"]
    )
    return report


# ------------------------------------------------------------------ Kafka in the loop


def _kafka(path: str, settings: BenchSettings) -> dict:
    from flows.config import KafkaConfig, KafkaTopics

    prefix = f"bench{uuid.uuid4().hex[:8]}."
    names = ("readings", "heartbeats", "gates", "workorders", "breaches", "deadletter")
    kafka = KafkaConfig(
        bootstrap_servers=settings.bootstrap,
        topics=KafkaTopics(**{n: prefix + n for n in names}),
        stop_at_end=True,
    )
    published = _in_child(_publish_child, path, kafka, settings.batch_size)
    result = _in_child(_kafka_child, kafka)
    result["publish_events_per_s"] = published
    result["source"] = _in_child(_kafka_source_child, kafka)
    return result


def _kafka_source_child(kafka) -> dict:
    """The flow's Kafka source alone: every input partition read to its end, nothing done
    with the records (the ceiling of the Kafka row on this machine and broker)."""
    from flows.kafka_io import KafkaInput

    with _Clock() as clock:  # consumers made and assigned on the clock, as in the flow
        source = KafkaInput(kafka)
        parts = [source.build_part("read", name, None) for name in source.list_parts()]
        events = 0
        while parts:
            for part in list(parts):
                try:
                    events += sum(len(b.lines) for b in part.next_batch())
                except StopIteration:
                    part.close()
                    parts.remove(part)
    return _result(events, clock)


def _publish_child(path: str, kafka, batch_size: int) -> float:
    from cityvitals.publish import publish

    lines = _read_lines(path)
    stats = publish(_chunks(lines, batch_size)(), kafka)
    return stats.events_per_second


def _kafka_child(kafka) -> dict:
    """The Kafka flow, timed from start to end; ``startup_s`` is the part of that before
    its first record was read (listing partitions, consumers connecting, first fetch)."""
    from bytewax.testing import run_main

    from flows.city_kafka import build_kafka_flow
    from flows.config import FlowConfig, PipelineConfig
    from flows.kafka_io import KafkaInput

    first_read: list[float] = []

    class FirstRead(StatefulSourcePartition):
        """A partition of the flow's source, noting when any partition first gave records."""

        def __init__(self, part: StatefulSourcePartition) -> None:
            self._part = part

        def next_batch(self) -> list[RawBatch]:
            batches = self._part.next_batch()
            if not first_read and any(b.lines for b in batches):
                first_read.append(time.perf_counter())
            return batches

        def next_awake(self):
            return self._part.next_awake()

        def snapshot(self):
            return self._part.snapshot()

        def close(self) -> None:
            self._part.close()

    class Source(KafkaInput):
        def build_part(self, step_id, for_part, resume_state):
            return FirstRead(super().build_part(step_id, for_part, resume_state))

    with tempfile.TemporaryDirectory(prefix="cityvitals-bench-kafka-") as out:
        config = FlowConfig(pipeline=PipelineConfig(out=Path(out)), kafka=kafka)
        flow = build_kafka_flow(config, Source(kafka))
        with _Clock() as clock:
            run_main(flow)
        from cityvitals.lake import Lake

        con = Lake(out).connect()
        events = con.execute("SELECT coalesce(sum(events_in), 0) FROM ingest_batches").fetchone()[0]
    startup = first_read[0] - clock.started if first_read else None
    return _result(int(events), clock, startup_s=startup)


# ------------------------------------------------------------------ latency at a steady rate


def _latency_child(
    path: str, rate: float, events: int | None, batch_size: int, tick: float
) -> dict:
    """The city flow fed at a steady ``rate``; latency of each breach it emits.

    The source makes ``rate × tick`` lines due every ``tick`` seconds of wall time, on a
    fixed schedule from its first batch: batch ``k`` is *due* at ``t0 + k × tick``. When
    the flow polls, it gets every batch due by then, at once (up to ``batch_size`` lines),
    as a Kafka consumer gets what was sent since its last poll. A batch is stamped with
    its due time (its arrival; if the flow falls behind, the wait until it is read counts
    as latency). A breach's window closes when the partition's
    watermark (latest event time − allowed lateness) reaches its ``event_ts`` (the
    window end); the *closing batch* is the first whose lines bring the watermark there.
    Latency = the breach's ``emitted_at`` (stamped by the thresholds step) − the due time
    of its closing batch. Breaches closed only by the end of the input are left out.
    """
    import numpy as np
    from bytewax.testing import run_main

    from cityvitals.lake import Lake
    from flows.city import build
    from flows.config import PipelineConfig

    lines = _read_lines(path)[:events] if events else _read_lines(path)
    per = max(1, round(rate * tick))
    batches = [lines[i : i + per] for i in range(0, len(lines), per)]
    stamps = [orjson.loads(b).get("ts") for b in lines]
    ts_us = np.array(
        [datetime.fromisoformat(s).timestamp() * 1e6 if s else -np.inf for s in stamps]
    )
    ends = np.minimum(np.arange(1, len(batches) + 1) * per, len(lines))
    running_max = np.maximum.accumulate(ts_us)[ends - 1]  # after each batch
    due: list[float] = []
    with tempfile.TemporaryDirectory(prefix="cityvitals-bench-lat-") as out:
        config = PipelineConfig(out=Path(out), batch_size=batch_size)
        source = _SteadySource(batches, due, tick, batch_size)
        flow = build(source, config)
        with _Clock() as clock:
            run_main(flow)
        seconds = clock.seconds
        con = Lake(out).connect()
        rows = con.execute(
            "SELECT epoch_us(event_ts) AS end_us, epoch_us(emitted_at) AS at_us FROM breaches"
        ).fetchall()
    lateness_us = config.allowed_lateness / timedelta(microseconds=1)
    latencies = []
    for end_us, at_us in rows:
        k = int(np.searchsorted(running_max - lateness_us, end_us, side="left"))
        if k < len(due):
            latencies.append((at_us / 1e6 - due[k]) * 1000)
    p50 = float(np.percentile(latencies, 50)) if latencies else None
    p99 = float(np.percentile(latencies, 99)) if latencies else None
    return {
        "events": len(lines),
        "seconds": seconds,
        "achieved_events_per_s": len(lines) / seconds if seconds else None,
        "samples": len(latencies),
        "p50_ms": p50,
        "p99_ms": p99,
        "rss_mb": _rss_mb(),
    }


class _SteadyPartition(StatefulSourcePartition[RawBatch, int]):
    """Releases every batch that is due, at once (at most ``max_lines``, at least one
    batch), as a Kafka consumer polling a partition gets everything sent since its last
    poll: a flow that falls behind catches up in bigger batches."""

    def __init__(
        self, batches: list[list[bytes]], due: list[float], tick: float, max_lines: int
    ) -> None:
        self.batches = batches
        self.due = due
        self.tick = tick
        self.max_lines = max_lines
        self.k = 0
        self.offset = 0
        self.t0: float | None = None

    def next_batch(self) -> list[RawBatch]:
        if self.k >= len(self.batches):
            raise StopIteration
        now = time.time()
        if self.t0 is None:
            self.t0 = now
        lines: list[bytes] = []
        while self.k < len(self.batches):
            at = self.t0 + self.k * self.tick
            if now < at or (lines and len(lines) + len(self.batches[self.k]) > self.max_lines):
                break
            self.due.append(at)
            lines.extend(self.batches[self.k])
            self.k += 1
        if not lines:
            return []
        batch = RawBatch("steady", 0, self.offset, lines)
        self.offset += len(lines)
        return [batch]

    def next_awake(self) -> datetime | None:
        if self.t0 is None or self.k >= len(self.batches):
            return None
        return datetime.fromtimestamp(self.t0 + self.k * self.tick, UTC)

    def snapshot(self) -> int:
        return self.k


class _SteadySource(FixedPartitionedSource[RawBatch, int]):
    """Batches released on a wall-clock schedule; ``due`` gets each batch's due time (epoch s)."""

    def __init__(
        self, batches: list[list[bytes]], due: list[float], tick: float, max_lines: int
    ) -> None:
        self.batches = batches
        self.due = due
        self.tick = tick
        self.max_lines = max_lines

    def list_parts(self) -> list[str]:
        return [partition_key("steady", 0)]

    def build_part(self, step_id, for_part, resume_state) -> _SteadyPartition:
        return _SteadyPartition(self.batches, self.due, self.tick, self.max_lines)


# ------------------------------------------------------------------ how cost grows


def _file_flow_child(path: str, batch_size: int) -> dict:
    from bytewax.testing import run_main

    from flows.city import build
    from flows.config import PipelineConfig
    from flows.sources import JsonLinesSource

    with tempfile.TemporaryDirectory(prefix="cityvitals-bench-size-") as out:
        config = PipelineConfig(out=Path(out), batch_size=batch_size)
        flow = build(JsonLinesSource(path, batch_size), config)
        with _Clock() as clock:
            run_main(flow)
    return {"seconds": clock.seconds, "cpu_s": clock.cpu_s, "rss_mb": _rss_mb()}


def run_sizes(
    event_sizes: list[int],
    device_sizes: list[int],
    settings: BenchSettings,
    say: Callable[[str], None] = print,
) -> list[dict]:
    """The city flow at several sizes, read from a file (so the input is not held in memory).

    Event sizes run with ``settings.devices`` devices; device sizes with about three
    simulated minutes of events (every device heard from three times or more).
    """
    runs = [(e, settings.devices) for e in event_sizes]
    runs += [(max(1000, round(3 * d * _EVENTS_PER_DEVICE_MINUTE)), d) for d in device_sizes]
    out = []
    with tempfile.TemporaryDirectory(prefix="cityvitals-bench-sizes-") as tmp:
        for events, devices in runs:
            say(f"size: {events:,} events, {devices:,} devices ...")
            path = Path(tmp) / "input.jsonl"
            n = write_input(path, events, devices, settings.seed)
            r = _in_child(_file_flow_child, str(path), settings.batch_size)
            out.append(
                {
                    "events": n,
                    "devices": devices,
                    "seconds": r["seconds"],
                    "events_per_s": n / r["seconds"],
                    "us_per_event": r["seconds"] / n * 1e6,
                    "peak_rss_mb": r["rss_mb"],
                    "rss_kb_per_device": r["rss_mb"] * 1024 / devices,
                }
            )
            path.unlink()
    return out


# ------------------------------------------------------------------ the table


def _fmt(v: float | None, unit: str = "") -> str:
    return "—" if v is None else f"{v:,.0f}{unit}"


def _fmt2(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def print_report(report: dict, echo: Callable[[str], None] = print) -> None:
    """The report as a table."""
    h = report["host"]
    echo(
        f"{report['events']:,} events, {report['devices']:,} devices, "
        f"{report['input_mb']} MB of JSON lines; {h['cpus']} CPUs ({h['cpu_model']}), "
        f"{h['mem_gb']} GB"
    )
    echo(
        f"{'engine':<34}{'events/s':>12}{'seconds':>9}{'CPU s':>7}{'main thread s':>15}"
        f"{'cores busy':>12}{'peak RSS MB':>13}"
    )
    names = {
        "flow": "city flow (whole catalogue)",
        "flow_subset": "city flow cut to the subset",
        "naive": "naive per-event Bytewax (subset)",
        "polars": "Polars batch (subset)",
        "duckdb": "DuckDB batch (subset)",
        "kafka": "city flow, Kafka in the loop",
    }
    for key, name in names.items():
        r = report["engines"].get(key)
        if not r:
            echo(f"{name:<34}{'—':>12}{'—':>9}{'—':>7}{'—':>15}{'—':>12}{'—':>13}")
            continue
        rows = [(name, r)]
        if (running := _running(r)) is not None:
            rows.append((f"  after {r['startup_s']:.2f} s of start-up", running))
        if r.get("source"):
            rows.append(("  its Kafka source alone", r["source"]))
        for label, row in rows:
            cpu, main = row.get("cpu_s"), row.get("thread_cpu_s")
            busy = f"{cpu / row['seconds']:.2f}" if cpu and row["seconds"] else "—"
            echo(
                f"{label:<34}{_fmt(_rate(row)):>12}{row['seconds']:>9.2f}"
                f"{_fmt2(cpu):>7}{_fmt2(main):>15}{busy:>12}{row['rss_mb']:>13,.0f}"
            )
    for label, key in (
        ("flow / naive", "flow_vs_naive"),
        ("flow / Polars", "flow_vs_polars"),
        ("flow cut to the subset / naive", "flow_subset_vs_naive"),
        ("flow cut to the subset / Polars", "flow_subset_vs_polars"),
    ):
        v = report[key]
        echo(f"{label:<34}{'—' if v is None else f'{v:.2f}×':>12}")
    ceilings = [
        (label, report[key])
        for label, key in (
            ("city flow (whole catalogue)", "flow_ceiling_events_per_s"),
            ("city flow cut to the subset", "flow_subset_ceiling_events_per_s"),
            ("Kafka in the loop (+ broker)", "kafka_flow_ceiling_events_per_s"),
        )
        if report.get(key) is not None
    ]
    if ceilings:
        echo(f"at most, with the CPU seconds spread over all {h['cpus']} cores (BENCHMARKS.md):")
    for label, ceiling in ceilings:
        against = [
            f"{ratio:.2f}× {name}"
            for name, base in (("naive", "naive"), ("Polars", "polars_batch"))
            if (ratio := _ratio(ceiling, report.get(f"{base}_events_per_s"))) is not None
        ]
        echo(f"  {label:<32}{_fmt(ceiling):>12}  {', '.join(against)}")
    echo(
        f"latency event in → breach out at a steady {report['latency_rate_events_per_s']:,.0f} "
        f"events/s ({report['latency_samples']} breaches): p50 {_fmt(report['p50_latency_ms'])} "
        f"ms, p99 {_fmt(report['p99_latency_ms'])} ms"
    )
    for s in report.get("sizes", []):
        echo(
            f"size {s['events']:>11,} events {s['devices']:>8,} devices: "
            f"{s['us_per_event']:6.1f} µs/event, {s['events_per_s']:>9,.0f} events/s, "
            f"peak RSS {s['peak_rss_mb']:,.0f} MB ({s['rss_kb_per_device']:.2f} KB/device)"
        )
