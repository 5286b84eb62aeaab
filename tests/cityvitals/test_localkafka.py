"""The local Kafka broker, against the real thing: topics, keyed order, restarts, the CLI."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from cityvitals import localkafka
from cityvitals.localkafka import (
    KAFKA_VERSION,
    BrokerError,
    LocalKafka,
    default_cache,
    ensure_jars,
    metadata_ok,
)

QUIET = {"log_level": 0}


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, **QUIET})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(timeout=30)


def produce(producer: Producer, topic: str, messages: list[tuple[str, str]]) -> None:
    errors: list[str] = []

    def report(err, _msg):
        if err is not None:
            errors.append(str(err))

    for key, value in messages:
        producer.produce(topic, key=key, value=value, on_delivery=report)
        producer.poll(0)
    assert producer.flush(30) == 0, "messages still undelivered after 30 s"
    assert errors == []


def consume(bootstrap: str, topic: str, group: str, count: int, timeout: float = 60) -> list:
    """``count`` messages of ``topic`` read from the start by a new consumer group."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **QUIET,
        }
    )
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            got.append(msg)
        # Anything beyond ``count`` would be a duplicate: give it a moment to show.
        extra = consumer.poll(1.0)
        if extra is not None and not extra.error():
            got.append(extra)
    finally:
        consumer.close()
    return got


def keyed(keys: int, per_key: int, start: int = 0) -> list[tuple[str, str]]:
    """Messages ``key:seq``, keys interleaved: k0:0, k1:0, ..., k0:1, ..."""
    return [(f"k{k}", f"k{k}:{seq}") for seq in range(start, start + per_key) for k in range(keys)]


def test_keyed_messages_come_back_complete_and_in_order_per_key(kafka_bootstrap, topic_prefix):
    topic = f"{topic_prefix}orders"
    create_topic(kafka_bootstrap, topic, partitions=3)
    sent = keyed(keys=20, per_key=50)
    assert len(sent) == 1000
    produce(Producer({"bootstrap.servers": kafka_bootstrap, **QUIET}), topic, sent)

    got = consume(kafka_bootstrap, topic, f"{topic_prefix}g", count=1000)

    assert len(got) == 1000
    by_key: dict[str, list[int]] = defaultdict(list)
    partitions_of_key: dict[str, set[int]] = defaultdict(set)
    for msg in got:
        key = msg.key().decode()
        name, seq = msg.value().decode().split(":")
        assert name == key
        by_key[key].append(int(seq))
        partitions_of_key[key].add(msg.partition())
    assert all(seqs == list(range(50)) for seqs in by_key.values()), by_key
    assert len(by_key) == 20
    assert all(len(parts) == 1 for parts in partitions_of_key.values())
    assert {p for parts in partitions_of_key.values() for p in parts} == {0, 1, 2}


def test_a_restarted_broker_keeps_its_address_topics_and_messages(fresh_broker, topic_prefix):
    kafka = fresh_broker
    bootstrap = kafka.bootstrap
    topic = f"{topic_prefix}restart"
    create_topic(bootstrap, topic, partitions=2)
    producer = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 120_000, **QUIET})
    produce(producer, topic, keyed(keys=4, per_key=25))

    kafka.stop()
    assert not kafka.running()
    admin = AdminClient({"bootstrap.servers": bootstrap, **QUIET})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=2)
    # A message sent during the outage waits in the producer...
    producer.produce(topic, key="k0", value="k0:during-outage")
    assert producer.flush(1) == 1

    kafka.start()
    assert kafka.bootstrap == bootstrap
    # ...and is delivered once the broker is back.
    assert producer.flush(60) == 0
    produce(producer, topic, keyed(keys=4, per_key=25, start=25))

    got = consume(bootstrap, topic, f"{topic_prefix}g", count=201)
    values = [m.value().decode() for m in got]
    assert len(values) == 201
    assert "k0:during-outage" in values
    k1 = [v for v in values if v.startswith("k1:")]
    assert k1 == [f"k1:{i}" for i in range(50)]


def test_jars_are_fetched_once(monkeypatch, kafka_bootstrap):
    lib = ensure_jars()  # fetched already for the session broker, unless it is external
    stamp = lib.parent / ".complete"
    before = stamp.stat().st_mtime_ns

    def no_maven(*args, **kwargs):
        raise AssertionError(f"mvn must not run again: {args}")

    monkeypatch.setattr(localkafka.shutil, "which", no_maven)
    monkeypatch.setattr(localkafka.subprocess, "run", no_maven)
    assert ensure_jars() == lib
    assert stamp.stat().st_mtime_ns == before
    assert (lib / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file()
    assert lib.parent == default_cache()


def fake_mvn(bin_dir: Path, script: str) -> None:
    """An ``mvn`` on PATH running ``script`` (with $out the -DoutputDirectory)."""
    bin_dir.mkdir()
    mvn = bin_dir / "mvn"
    mvn.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in -DoutputDirectory=*) out="${a#*=}";; esac; done\n' + script
    )
    mvn.chmod(0o755)


def test_a_failed_download_names_mvn_output_and_is_redone(tmp_path, monkeypatch):
    fake_mvn(
        tmp_path / "bin",
        'mkdir -p "$out"; touch "$out/half.jar"\n'
        'echo "[ERROR] Could not resolve org.apache.kafka:kafka_2.13"\n'
        "exit 1\n",
    )
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    cache = tmp_path / "cache"

    with pytest.raises(BrokerError, match=r"(?s)mvn failed.*Could not resolve"):
        ensure_jars(cache=cache)
    assert not (cache / ".complete").exists()
    assert not (cache / "lib").exists()

    shutil.rmtree(tmp_path / "bin")
    fake_mvn(tmp_path / "bin", f'mkdir -p "$out"; touch "$out/kafka_2.13-{KAFKA_VERSION}.jar"\n')
    lib = ensure_jars(cache=cache)
    assert [p.name for p in lib.iterdir()] == [f"kafka_2.13-{KAFKA_VERSION}.jar"]
    assert (cache / ".complete").is_file()
    assert "kafka_2.13" in (cache / "pom.xml").read_text()


def test_missing_maven_is_named(tmp_path, monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(
        localkafka.shutil, "which", lambda name: None if name == "mvn" else real_which(name)
    )
    with pytest.raises(BrokerError, match="mvn not found on PATH"):
        ensure_jars(cache=tmp_path / "cache")
    assert not (tmp_path / "cache" / ".complete").exists()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cityvitals.localkafka", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_cli_up_status_down(tmp_path):
    where = tmp_path / "broker"
    up = cli("up", "--dir", str(where))
    try:
        assert up.returncode == 0, up.stderr
        bootstrap = up.stdout.strip().splitlines()[-1]
        assert bootstrap.startswith("127.0.0.1:")
        assert metadata_ok(bootstrap, timeout=10)
        assert "INFO" in (where / "broker.log").read_text()

        again = cli("up", "--dir", str(where))
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip().splitlines()[-1] == bootstrap
        assert "already running" in again.stderr

        status = cli("status", "--dir", str(where))
        assert status.returncode == 0, status.stderr
        assert status.stdout.strip() == bootstrap
    finally:
        down = cli("down", "--dir", str(where))
    assert down.returncode == 0, down.stderr
    assert "stopped" in down.stderr
    assert not where.exists()
    assert not metadata_ok(bootstrap, timeout=2)

    status = cli("status", "--dir", str(where))
    assert status.returncode == 1
    assert "no Kafka broker" in status.stderr
    down = cli("down", "--dir", str(where))
    assert down.returncode == 0
    assert "no Kafka broker" in down.stderr


def test_cli_refuses_a_directory_that_is_not_its_own(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    up = cli("up", "--dir", str(tmp_path))
    assert up.returncode == 1
    assert "not a local Kafka directory" in up.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_a_port_taken_before_the_broker_binds_it_is_chosen_again(tmp_path, monkeypatch):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    real_pick = localkafka._pick_ports
    # The controller port: it is bound first, so the failed attempt ends early.
    picks = iter([[*real_pick(1), taken.getsockname()[1]]])
    monkeypatch.setattr(localkafka, "_pick_ports", lambda n: next(picks, None) or real_pick(n))
    try:
        with LocalKafka(tmp_path / "kafka") as kafka:
            kafka.start()
            assert kafka.controller_port != taken.getsockname()[1]
            assert metadata_ok(kafka.bootstrap)
            assert b"Address already in use" in kafka.log_file.read_bytes()
    finally:
        taken.close()


def test_cluster_ids_never_start_with_a_dash_the_storage_tool_reads_as_an_option():
    from cityvitals.localkafka import new_cluster_id

    ids = [new_cluster_id() for _ in range(2_000)]  # 1 in 64 random ids would start with '-'
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 22 for i in ids)
