"""Publishing JSON lines into the Kafka input topics, checked against a real broker.

The broker tests read everything back with an independent consumer and compare it with
what :func:`cityvitals.simulate.generate` produced.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cityvitals.cli import main
from cityvitals.publish import (
    KEY_FIELDS,
    PublishError,
    check_settings,
    pause_needed,
    publish,
    router,
)
from cityvitals.simulate import Scenario, generate, manifest
from flows.config import KafkaConfig, KafkaTopics

CITYVITALS = Path(sys.executable).with_name("cityvitals")

#: The smallest scenario, with more broken lines than usual so every kind of damage occurs.
SCENARIO = Scenario(devices=200, minutes=60, seed=3, bad_rate=0.01)

HEARTBEAT = (
    b'{"family":"heartbeat","ts":"2026-05-12T06:00:00.000Z","device_id":"cam-000001",'
    b'"device_type":"camera","grid_id":"D01-G01","district_id":"D01"}'
)

#: How long reading back may take before the test fails (a guard, not a measurement).
READ_BACK_LIMIT_S = 120.0


@dataclass(frozen=True)
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


def _topics(prefix: str) -> KafkaTopics:
    return KafkaTopics(
        readings=f"{prefix}readings",
        heartbeats=f"{prefix}heartbeats",
        gates=f"{prefix}gates",
        workorders=f"{prefix}workorders",
    )


def _partitions(bootstrap: str, topic: str) -> int:
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return len(meta.topics[topic].partitions)


def _end_offsets(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    """The high watermark of every partition of the ``topics`` that exist."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ends-{uuid.uuid4().hex}"})
    try:
        meta = consumer.list_topics(timeout=10)
        ends = {}
        for topic in topics:
            if topic not in meta.topics or meta.topics[topic].error is not None:
                continue
            for p in meta.topics[topic].partitions:
                ends[(topic, p)] = consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=10
                )[1]
        return ends
    finally:
        consumer.close()


def _read_back(
    bootstrap: str, topics: list[str], since: dict[tuple[str, int], int] | None = None
) -> list[Message]:
    """Every message of ``topics`` (after the offsets in ``since``), as it is stored."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"readback-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        ends = _end_offsets(bootstrap, topics)
        since = since or {}
        todo = {tp: end for tp, end in ends.items() if end > since.get(tp, 0)}
        consumer.assign([TopicPartition(t, p, since.get((t, p), 0)) for t, p in todo])
        out: list[Message] = []
        deadline = time.monotonic() + READ_BACK_LIMIT_S
        while todo:
            if time.monotonic() > deadline:
                pytest.fail(f"reading back stalled; partitions left: {sorted(todo)}")
            for m in consumer.consume(10_000, 1.0):
                if m.error() is not None:
                    raise KafkaException(m.error())
                tp = (m.topic(), m.partition())
                out.append(Message(m.topic(), m.partition(), m.offset(), m.key(), m.value()))
                if tp in todo and m.offset() + 1 >= todo[tp]:
                    del todo[tp]
        return out
    finally:
        consumer.close()


def _generated(scenario: Scenario = SCENARIO) -> list[bytes]:
    return [line for batch in generate(scenario) for line in batch]


def _check_round_trip(lines: list[bytes], got: list[Message], topics: KafkaTopics) -> None:
    """Same bytes, each family in its topic, keys as routed, each key's order kept."""
    assert len(got) == len(lines)
    assert Counter(m.value for m in got) == Counter(lines)

    route = router(topics)
    expected: dict[tuple[str, str | None], list[bytes]] = defaultdict(list)
    for line in lines:
        expected[route(line)].append(line)
    stored: dict[tuple[str, str | None], list[Message]] = defaultdict(list)
    for m in got:
        stored[(m.topic, None if m.key is None else m.key.decode())].append(m)
    assert set(stored) == set(expected)

    for (topic, key), messages in stored.items():
        if key is None:  # unkeyed lines: only the broken ones, all on the readings topic
            assert topic == topics.readings
            assert Counter(m.value for m in messages) == Counter(expected[(topic, key)])
            continue
        assert len({m.partition for m in messages}) == 1, f"{key} spread over partitions"
        in_order = [m.value for m in sorted(messages, key=lambda m: m.offset)]
        assert in_order == expected[(topic, key)], f"{key}: order changed"
        for m in messages:
            event = orjson.loads(m.value)
            assert topics.inputs[event["family"]] == topic
            assert event[KEY_FIELDS[event["family"]]] == key


# -- pure logic ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (HEARTBEAT, ("city.heartbeats", "cam-000001")),
        (HEARTBEAT.replace(b"heartbeat", b"reading"), ("city.readings", "cam-000001")),
        (b'{"family":"gate","garage_id":"garage-01","gate_id":"garage-01-gate-in"}',
         ("city.gates", "garage-01-gate-in")),
        (b'{"family":"workorder","order_id":"WO-0000042"}', ("city.workorders", "WO-0000042")),
        (b'{"family": "reading", "ts": ', ("city.readings", None)),
        (b"[" + HEARTBEAT + b"]", ("city.readings", None)),
        (b"", ("city.readings", None)),
        (b"\xff\xfe", ("city.readings", None)),
        (b'{"family":"toaster","device_id":"t1"}', ("city.readings", None)),
        (b'{"family":["heartbeat"],"device_id":"t1"}', ("city.readings", None)),
        (b'{"family":"heartbeat","device_id":7}', ("city.heartbeats", None)),
        (b'{"family":"workorder","device_id":"x"}', ("city.workorders", None)),
    ],
)  # fmt: skip
def test_router_finds_the_topic_and_the_key(line, expected):
    assert router(KafkaTopics())(line) == expected


def test_router_uses_the_configured_topic_names():
    route = router(_topics("p."))
    assert route(HEARTBEAT) == ("p.heartbeats", "cam-000001")
    assert route(b"{not json") == ("p.readings", None)


@pytest.mark.parametrize(
    ("sent", "rate", "elapsed", "pause"),
    [
        (0, 10.0, 0.0, 0.0),
        (100, 10.0, 0.0, 10.0),
        (100, 10.0, 4.0, 6.0),
        (100, 10.0, 10.0, 0.0),
        (100, 10.0, 25.0, 0.0),  # behind: no pause, never a negative one
        (1, 1_000_000.0, 0.0, 1e-6),
    ],
)
def test_pause_keeps_the_count_behind_the_rate(sent, rate, elapsed, pause):
    assert pause_needed(sent, rate, elapsed) == pytest.approx(pause)


@pytest.mark.parametrize(
    "client",
    [{"acks": "1"}, {"acks": 0}, {"enable.idempotence": "false"}, {"enable.idempotence": False}],
)
def test_settings_that_break_ordering_are_refused(client):
    with pytest.raises(ValueError, match="is not allowed: publishing needs"):
        check_settings(KafkaConfig(client=client))


@pytest.mark.parametrize(
    "client", [{}, {"acks": "all"}, {"acks": "-1"}, {"enable.idempotence": True}]
)
def test_settings_that_keep_ordering_are_accepted(client):
    check_settings(KafkaConfig(client=client))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 0}, "rate must be a finite number"),
        ({"rate": -5.0}, "rate must be a finite number"),
        ({"rate": float("inf")}, "rate must be a finite number"),
        ({"rate": float("nan")}, "rate must be a finite number"),
        ({"partitions": 0}, "partitions must be an int >= 1"),
        ({"replication_factor": 0}, "replication_factor must be an int >= 1"),
    ],
)
def test_bad_arguments_are_refused_before_connecting(kwargs, message):
    kafka = KafkaConfig(bootstrap_servers="127.0.0.1:1")
    with pytest.raises(ValueError, match=message):
        publish([[HEARTBEAT]], kafka, **kwargs)


def test_an_unreachable_cluster_is_named():
    kafka = KafkaConfig(bootstrap_servers="127.0.0.1:1")
    with pytest.raises(PublishError, match=r"cannot list the topics of Kafka at 127\.0\.0\.1:1"):
        publish([[HEARTBEAT]], kafka, timeout=1.0)


# -- against a broker ------------------------------------------------------------------------


def test_the_scenario_arrives_complete_unchanged_and_in_order(kafka_bootstrap, topic_prefix):
    topics = _topics(topic_prefix)
    kafka = KafkaConfig(bootstrap_servers=kafka_bootstrap, topics=topics)
    lines = _generated()
    unparsable = [line for line in lines if not _parses(line)]
    assert unparsable, "the scenario should hold lines that do not parse"
    assert any(isinstance(orjson.loads(line), list) for line in lines if _parses(line))

    stats = publish(generate(SCENARIO), kafka, partitions=3)

    names = list(topics.inputs.values())
    assert sorted(stats.created) == sorted(names)
    assert stats.total == len(lines)
    for name in names:
        assert _partitions(kafka_bootstrap, name) == 3
    got = _read_back(kafka_bootstrap, names)
    assert stats.messages == dict(Counter(m.topic for m in got))
    assert all(stats.messages[name] > 0 for name in names)
    _check_round_trip(lines, got, topics)
    readings = Counter(m.value for m in got if m.topic == topics.readings and m.key is None)
    assert all(readings[line] for line in unparsable)


def test_an_existing_topic_is_left_as_it_is(kafka_bootstrap, topic_prefix):
    topics = _topics(topic_prefix)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topics.heartbeats, 1, 1)])[topics.heartbeats].result()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(topics.heartbeats, b"already here")
    assert producer.flush(30) == 0
    lines = [HEARTBEAT, HEARTBEAT.replace(b"cam-000001", b"cam-000002")]
    kafka = KafkaConfig(bootstrap_servers=kafka_bootstrap, topics=topics)

    stats = publish([lines], kafka, partitions=2)

    assert topics.heartbeats not in stats.created
    assert len(stats.created) == 3
    assert _partitions(kafka_bootstrap, topics.heartbeats) == 1
    assert _partitions(kafka_bootstrap, topics.gates) == 2
    got = _read_back(kafka_bootstrap, [topics.heartbeats])
    assert [m.value for m in sorted(got, key=lambda m: m.offset)] == [b"already here", *lines]
    assert publish([lines], kafka, partitions=5).created == ()  # a second run creates nothing


def test_a_paced_run_sends_everything_and_reports_progress(kafka_bootstrap, topic_prefix):
    topics = _topics(topic_prefix)
    kafka = KafkaConfig(bootstrap_servers=kafka_bootstrap, topics=topics)
    batches = list(generate(SCENARIO))[:5]
    lines = [line for batch in batches for line in batch]
    seen: list[int] = []

    # a rate far above what a test machine reaches: the pacing runs but never waits long
    stats = publish(batches, kafka, partitions=2, rate=1e7, progress=seen.append)

    assert seen == [sum(len(b) for b in batches[: k + 1]) for k in range(len(batches))]
    assert stats.total == len(lines)
    _check_round_trip(lines, _read_back(kafka_bootstrap, list(topics.inputs.values())), topics)


@pytest.mark.parametrize(
    ("client", "message"),
    [
        ({}, r"cannot send a 2,000,000-byte line to .*readings: .*Message size too large"),
        (
            {"message.max.bytes": 5_000_000},  # the producer sends it; the broker refuses it
            r"1 of \d+ messages were not delivered \(first: .*readings: .*too large\)",
        ),
    ],
)
def test_an_undeliverable_message_fails_the_run(kafka_bootstrap, topic_prefix, client, message):
    kafka = KafkaConfig(
        bootstrap_servers=kafka_bootstrap, topics=_topics(topic_prefix), client=client
    )
    # random bytes do not compress below the 1 MB a broker accepts by default
    huge = random.Random(1).randbytes(2_000_000)
    with pytest.raises(PublishError, match=message):
        publish([[HEARTBEAT] * 10, [huge], [HEARTBEAT] * 10], kafka, flush_timeout=60)


# -- the command -----------------------------------------------------------------------------


def test_the_command_publishes_the_scenario_and_writes_it(kafka_bootstrap, tmp_path):
    # The command writes the default topic names: only what this run adds is compared.
    topics = KafkaTopics()
    names = list(topics.inputs.values())
    before = _end_offsets(kafka_bootstrap, names)
    scenario = Scenario(devices=200, minutes=60, seed=5)
    out = subprocess.run(
        [
            str(CITYVITALS),
            "simulate",
            "--bootstrap",
            kafka_bootstrap,
            "--minutes",
            "60",
            "--devices",
            "200",
            "--seed",
            "5",
            "--partitions",
            "2",
            "--kafka-config",
            "client.id=cityvitals-test",
            "--manifest",
            str(tmp_path / "manifest.json"),
            "--out",
            str(tmp_path / "events.jsonl"),
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""
    lines = _generated(scenario)
    assert f"published {len(lines):,} events" in out.stderr
    for name in names:
        assert name in out.stderr
    assert orjson.loads((tmp_path / "manifest.json").read_bytes()) == manifest(scenario)
    assert (tmp_path / "events.jsonl").read_bytes() == b"".join(line + b"\n" for line in lines)
    _check_round_trip(lines, _read_back(kafka_bootstrap, names, since=before), topics)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kafka-config", "security.protocol"], "Invalid value for '--kafka-config'"),
        (["--kafka-config", "=SASL_SSL"], "Invalid value for '--kafka-config'"),
        (["--kafka-config", "acks=1"], "Invalid value for '--kafka-config': acks=1"),
        (["--kafka-config", "group.id=g"], "--kafka-config: client: expected no 'group.id'"),
        (["--rate", "0"], "Invalid value for '--rate'"),
        (["--rate", "-3"], "Invalid value for '--rate'"),
        (["--rate", "inf"], "Invalid value for '--rate'"),
        (["--partitions", "0"], "Invalid value for '--partitions'"),
        (["--bootstrap", " "], "Invalid value for '--bootstrap'"),
    ],
)
def test_bad_publishing_options_are_usage_errors(args, message):
    base = ["simulate", "--bootstrap", "127.0.0.1:1", "--minutes", "60", "--devices", "200"]
    result = CliRunner().invoke(main, [*base, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


@pytest.mark.parametrize(
    "args", [["--rate", "100"], ["--partitions", "2"], ["--kafka-config", "client.id=x"]]
)
def test_publishing_options_need_bootstrap(args):
    result = CliRunner().invoke(main, ["simulate", "--minutes", "60", "--devices", "200", *args])
    assert result.exit_code == 2
    assert f"{args[0]} needs --bootstrap" in result.output


def _parses(line: bytes) -> bool:
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True
