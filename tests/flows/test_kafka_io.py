"""The Kafka source's partitions against a real broker: where they start and where they end."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from flows.config import KafkaConfig
from flows.kafka_io import KafkaInput, KafkaIOError, ensure_topics


def produce(bootstrap: str, topic: str, partition: int, n: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(n):
        producer.produce(topic, f'{{"n":{i}}}'.encode(), partition=partition)
    assert producer.flush(30) == 0


def read_all(source: KafkaInput, names: list[str]) -> dict[str, int]:
    """Records read from each partition until its end (``stop_at_end``)."""
    counts = {}
    for name in names:
        part = source.build_part("read", name, None)
        counts[name] = 0
        try:
            while True:
                counts[name] += sum(len(b.lines) for b in part.next_batch())
        except StopIteration:
            pass
        finally:
            part.close()
    return counts


@pytest.fixture
def topic(kafka_bootstrap, topic_prefix) -> str:
    name = f"{topic_prefix}in"
    ensure_topics(KafkaConfig(bootstrap_servers=kafka_bootstrap), [name], partitions=2)
    produce(kafka_bootstrap, name, 0, 3)
    return name


@pytest.mark.parametrize(("start", "offsets"), [("earliest", [0, 0]), ("latest", [5, 0])])
def test_partitions_start_from_the_offsets_of_when_the_first_is_built(
    kafka_bootstrap, topic, start, offsets
):
    """The offsets are asked for when the first partition is built, not when listed:
    records written in between are before ``latest`` and after ``earliest``."""
    kafka = KafkaConfig(bootstrap_servers=kafka_bootstrap, starting_offset=start)
    source = KafkaInput(kafka, [topic])
    names = source.list_parts()
    assert names == [f"{topic}#0", f"{topic}#1"]
    produce(kafka_bootstrap, topic, 0, 2)
    parts = [source.build_part("read", name, None) for name in names]
    try:
        assert [part.snapshot() for part in parts] == offsets
    finally:
        for part in parts:
            part.close()


def test_a_partition_resumes_at_its_snapshot_and_stops_at_the_end_of_when_it_started(
    kafka_bootstrap, topic
):
    kafka = KafkaConfig(bootstrap_servers=kafka_bootstrap, stop_at_end=True)
    source = KafkaInput(kafka, [topic])
    names = source.list_parts()
    resumed = source.build_part("read", names[0], 1)
    assert resumed.snapshot() == 1
    resumed.close()
    assert read_all(source, names) == {names[0]: 3, names[1]: 0}


def test_a_missing_topic_is_named(kafka_bootstrap, topic_prefix):
    source = KafkaInput(KafkaConfig(bootstrap_servers=kafka_bootstrap), [f"{topic_prefix}gone"])
    with pytest.raises(KafkaIOError, match=f"topic '{topic_prefix}gone' on .*create it"):
        source.list_parts()
