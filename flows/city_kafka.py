"""The city flow on Kafka: input topics in; breaches, dead letters and the lake out.

Start it the Bytewax way; settings come from the YAML file named by
``CITYVITALS_CONFIG`` and from the environment (see
:func:`flows.config.load_flow_config`)::

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 CITYVITALS__PIPELINE__OUT=data \\
        python -m bytewax.run flows.city_kafka -w 2 -r recovery -s 10 -b 60

It is :func:`flows.city.build` over a :class:`flows.kafka_io.KafkaInput`, with
the Kafka outputs switched on; missing output topics are created first when
``kafka.create_topics`` is set. Before the flow starts, the process sets up
its logs (``logging``), serves ``/metrics`` (``metrics``, port + process id)
and makes SIGTERM a clean stop (:mod:`flows.shutdown`). A bad setting stops
it here with one message naming the key, the value and what was expected.
"""

from __future__ import annotations

import os
import sys

from bytewax.dataflow import Dataflow

from flows.city import build
from flows.config import FlowConfig, load_flow_config
from flows.kafka_io import KafkaInput, ensure_topics
from flows.process import STATE_FILE, entry, prepare
from indicators.definitions import Catalog

__all__ = ["STATE_FILE", "build_kafka_flow"]


def build_kafka_flow(
    config: FlowConfig, source: KafkaInput | None = None, catalog: Catalog | None = None
) -> Dataflow:
    """The Kafka flow for ``config``: input topics must exist, outputs are created if allowed.

    ``source``: the input (default: every input topic of ``config.kafka``); ``catalog``: the
    indicators (default: loaded from ``config.pipeline.catalog``).
    """
    kafka = config.kafka
    outputs = [kafka.topics.breaches, kafka.topics.deadletter]
    if kafka.topics.indicators:
        outputs.append(kafka.topics.indicators)
    if kafka.create_topics:
        ensure_topics(kafka, outputs, kafka.output_partitions)
    source = source if source is not None else KafkaInput(kafka)
    return build(source, config.pipeline, catalog, kafka=kafka)


def _start(environ, argv) -> Dataflow:
    config, catalog = prepare(load_flow_config(environ), argv, environ)
    return build_kafka_flow(config, catalog=catalog)


def __getattr__(name: str) -> Dataflow:
    """``flows.city_kafka.flow`` for ``python -m bytewax.run``, built from the environment."""
    if name != "flow":
        raise AttributeError(name)
    return entry(lambda: _start(os.environ, sys.argv))
