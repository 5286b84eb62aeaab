"""The city flow on Kafka: input topics in; breaches, dead letters and the lake out.

Start it the Bytewax way; settings come from the YAML file named by
``CITYVITALS_CONFIG`` and from the environment (see
:func:`flows.config.load_flow_config`)::

    KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 CITYVITALS__PIPELINE__OUT=data \\
        python -m bytewax.run flows.city_kafka -w 2 -r recovery -s 10 -b 60

It is :func:`flows.city.build` over a :class:`flows.kafka_io.KafkaInput`, with
the Kafka outputs switched on; missing output topics are created first when
``kafka.create_topics`` is set.
"""

from __future__ import annotations

import os
import sys

from bytewax.dataflow import Dataflow

from flows.city import build
from flows.config import FlowConfig, load_flow_config, recovery_requested
from flows.kafka_io import KafkaInput, ensure_topics

__all__ = ["build_kafka_flow"]


def build_kafka_flow(config: FlowConfig) -> Dataflow:
    """The Kafka flow for ``config``: input topics must exist, outputs are created if allowed."""
    kafka = config.kafka
    outputs = [kafka.topics.breaches, kafka.topics.deadletter]
    if kafka.topics.indicators:
        outputs.append(kafka.topics.indicators)
    if kafka.create_topics:
        ensure_topics(kafka, outputs, kafka.output_partitions)
    return build(KafkaInput(kafka), config.pipeline, kafka=kafka)


def __getattr__(name: str) -> Dataflow:
    """``flows.city_kafka.flow`` for ``python -m bytewax.run``, built from the environment."""
    if name != "flow":
        raise AttributeError(name)
    config = load_flow_config(os.environ)
    if recovery_requested(sys.argv, os.environ):
        pipeline = config.pipeline.model_copy(update={"recovery": True})
        config = config.model_copy(update={"pipeline": pipeline})
    return build_kafka_flow(config)
