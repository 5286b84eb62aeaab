"""What a flow process does before Bytewax runs its flow (``python -m bytewax.run``).

Both entry points, the file flow (``flows.city``) and the Kafka flow
(``flows.city_kafka``), set their process up alike with :func:`prepare`: the
settings of this start settled against the recovered state (the shard count
and the catalogue's time zone, :func:`settle_state`), the logs set
up (``logging``) and the settings logged, ``/metrics`` served (``metrics``,
port + process id), SIGTERM made a clean stop (:mod:`flows.shutdown`) and the
garbage collector tuned (:mod:`flows.collector`). :func:`entry` turns a bad
setting into one message naming the key, the value and what was expected,
and exit status 2.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path

import orjson
from bytewax.dataflow import Dataflow

from cityvitals.yamlconf import ConfigError
from flows import collector, logs, metrics, shutdown
from flows.config import FlowConfig, cluster_workers, process_id, recovery_requested
from flows.kafka_io import write_mark
from indicators.definitions import Catalog, fixed_offset, load_catalog

__all__ = ["STATE_FILE", "entry", "prepare", "settle_state"]

log = logging.getLogger("cityvitals.flow")


def prepare(
    config: FlowConfig, argv: list[str], environ: Mapping[str, str]
) -> tuple[FlowConfig, Catalog]:
    """Set this flow process up for ``config``; return the settings of this start (shards
    settled, ``pipeline.recovery`` on with ``-r``) and the catalogue, loaded once.

    ``pipeline.recovery`` is this start's to set, from ``-r``: set without it, nothing
    would be recovered and every start would replace what the one before wrote, so it is
    refused."""
    process = process_id(argv, environ)
    workers = cluster_workers(argv, environ)
    recovering = recovery_requested(argv, environ)
    if config.pipeline.recovery and not recovering:
        raise ConfigError(
            "pipeline.recovery",
            [
                "pipeline.recovery: got true, expected it unset: bytewax.run's -r (--recovery-"
                "directory) turns recovery on, and without it nothing would be recovered and "
                "every start would replace what the one before wrote"
            ],
        )
    catalog = load_catalog(config.pipeline.catalog)
    shards = settle_state(
        config.pipeline.out, config.pipeline.shards, workers, recovering, timezone=catalog.timezone
    )
    pipeline = config.pipeline.model_copy(update={"recovery": recovering, "shards": shards})
    config = config.model_copy(update={"pipeline": pipeline})
    logs.setup(config.logging)
    log.info("start", extra={"process_id": process, "pid": os.getpid()})
    log.info("configuration", extra={"config": config.summary()})
    if shards < workers:
        log.warning(
            "pipeline.shards %d < %d workers: %d workers get no keyed work",
            shards,
            workers,
            workers - shards,
        )
    shutdown.install()  # SIGTERM: stop reading, flush the lake sinks, exit 0
    collector.tune()
    metrics.serve(config.metrics, process)
    atexit.register(_stopped, process)
    return config, catalog


#: The file in ``pipeline.out`` that records what the recovered state was built with: the
#: shard count and the catalogue's time zone.
STATE_FILE = "_pipeline.json"


def settle_state(
    out: Path, requested: int | None, workers: int, recovering: bool, *, timezone: str
) -> int:
    """The shard count of this start: ``pipeline.shards``, or one per worker when unset.

    A recovering start keeps what its state was built with. The shard count: keyed state
    (windows, timers, sink writers) lives under the shard ids ``0 .. shards-1`` and every
    entity is placed by ``hash % shards``, so resumed under another count an entity's
    history would sit on the wrong shard. The catalogue's ``timezone``: the recovered
    windows start where its UTC offset put them, and windows of another offset would
    overlap them. The first recovering start records both in ``OUT/_pipeline.json``;
    later ones take the count from there (unset) or refuse another (set), and refuse a
    zone of another offset (a file without a zone is from before zones: its windows were
    aligned in UTC).

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> a = settle_state(out, None, 4, True, timezone="Asia/Shanghai")
    >>> a, settle_state(out, None, 2, True, timezone="PRC")
    (4, 4)
    >>> settle_state(out, None, 2, False, timezone="UTC")
    2
    >>> try:
    ...     settle_state(out, 8, 2, True, timezone="UTC")
    ... except ConfigError as e:
    ...     for problem in e.problems:
    ...         print(problem.split(" (")[0])
    pipeline.shards: got 8, expected 4, the shard count of the recovered state in ...
    timezone: got 'UTC', expected 'Asia/Shanghai', the time zone the recovered windows ...
    """
    shards = requested or workers
    if not recovering:
        return shards
    path = out / STATE_FILE
    if not path.is_file():
        write_mark(path, {"shards": shards, "timezone": timezone})
        return shards
    state = orjson.loads(path.read_bytes())
    had, had_zone = state["shards"], state.get("timezone", "UTC")
    again = "to change it, start over with an empty pipeline.out and a new recovery directory"
    problems = []
    if requested is not None and requested != had:
        problems.append(
            f"pipeline.shards: got {requested}, expected {had}, the shard count of the "
            f"recovered state in {out} (leave it unset to keep it; {again})"
        )
    if _offset_or_none(timezone) != _offset_or_none(had_zone):
        problems.append(
            f"timezone: got '{timezone}', expected '{had_zone}', the time zone the recovered "
            f"windows in {out} were aligned in (the catalogue's timezone; {again})"
        )
    if problems:
        raise ConfigError(str(path), problems)
    return had


def _offset_or_none(zone: str) -> timedelta | None:
    """The fixed UTC offset of ``zone``; None if it has none (a recorded zone this host's
    zone data no longer knows, or whose offset now moves, matches no catalogue's)."""
    try:
        return fixed_offset(zone)
    except ValueError:
        return None


def entry(make: Callable[[], Dataflow]) -> Dataflow:
    """``make()``; a bad setting ends the process with one message and status 2."""
    try:
        return make()
    except ConfigError as exc:  # one message, no traceback: the key, the value, the expectation
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _stopped(process: int) -> None:
    log.info("stop", extra={"process_id": process, "on_sigterm": shutdown.requested()})
