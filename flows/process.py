"""What a flow process does before Bytewax runs its flow (``python -m bytewax.run``).

Both entry points, the file flow (``flows.city``) and the Kafka flow
(``flows.city_kafka``), set their process up alike with :func:`prepare`: the
settings of this start settled against the recovered state (the shard count
and the catalogue's time zone, :func:`flows.city.settle_state`), the logs set
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

from bytewax.dataflow import Dataflow

from cityvitals.yamlconf import ConfigError
from flows import collector, logs, metrics, shutdown
from flows.city import settle_state
from flows.config import FlowConfig, cluster_workers, process_id, recovery_requested
from indicators.definitions import Catalog, load_catalog

__all__ = ["entry", "prepare"]

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
    pipeline = config.pipeline.model_copy(
        update={"recovery": recovering, "shards": shards}
    )
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


def entry(make: Callable[[], Dataflow]) -> Dataflow:
    """``make()``; a bad setting ends the process with one message and status 2."""
    try:
        return make()
    except ConfigError as exc:  # one message, no traceback: the key, the value, the expectation
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _stopped(process: int) -> None:
    log.info("stop", extra={"process_id": process, "on_sigterm": shutdown.requested()})
