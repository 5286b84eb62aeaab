"""The Kafka flow against a real broker: end to end, after SIGKILL, through a broker outage.

Each test publishes the SMALL scenario into input topics of its own, starts
``python -m bytewax.run flows.city_kafka`` as users do (settings in the
environment, ``stop_at_end`` so it finishes), and reads the outputs back with
an independent consumer group. The uninterrupted file run of the same scenario
(``small_run``) is the reference.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import duckdb
import jsonschema
import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from cityvitals.lake import Lake
from cityvitals.publish import publish
from cityvitals.simulate import generate, incidents
from cityvitals.summary import match_incidents
from flows.config import KafkaConfig, KafkaTopics
from flows.kafka_io import ensure_topics
from schemas.families import SCHEMA_VERSION
from schemas.messages import ID_HEADER

ROOT = Path(__file__).resolve().parents[2]
BREACH_SCHEMA = json.loads((ROOT / "schemas/json/breaches.schema.json").read_text())


def kafka_config(bootstrap: str, prefix: str) -> KafkaConfig:
    names = ("readings", "heartbeats", "gates", "workorders", "breaches", "deadletter")
    return KafkaConfig(
        bootstrap_servers=bootstrap, topics=KafkaTopics(**{n: f"{prefix}{n}" for n in names})
    )


def flow_env(kafka: KafkaConfig, out: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYVITALS")}
    env |= {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "CITYVITALS__PIPELINE__OUT": str(out),
        "CITYVITALS__KAFKA__STOP_AT_END": "true",
        "CITYVITALS__METRICS__PORT": "0",  # any free port: tests run side by side
    }
    for name, topic in kafka.topics.model_dump().items():
        if topic:
            env[f"CITYVITALS__KAFKA__TOPICS__{name.upper()}"] = topic
    return env | extra


def start_flow(
    env: dict[str, str], recovery: Path | None, log: Path, workers: int = 1
) -> subprocess.Popen:
    args = [sys.executable, "-m", "bytewax.run", "flows.city_kafka", "-w", str(workers)]
    if recovery is not None:
        args += ["-r", str(recovery), "-s", "1", "-b", "30"]
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


def finish(proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the flow did not finish in {timeout} s:\n{log.read_text()[-3000:]}")
    assert code == 0, log.read_text()[-3000:]


def read_topic(bootstrap: str, topic: str) -> list:
    """Every message of ``topic`` in partition order, read by a group of its own."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{topic}-{time.monotonic_ns()}",
            "enable.partition.eof": True,
            "enable.auto.commit": False,
        }
    )
    try:
        parts = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        done: set[int] = set()
        out = []
        deadline = time.monotonic() + 60
        while len(done) < len(parts) and time.monotonic() < deadline:
            for msg in consumer.consume(5000, 1.0):
                if msg.error() is None:
                    out.append(msg)
                elif msg.error().code() == KafkaError._PARTITION_EOF:
                    done.add(msg.partition())
        assert len(done) == len(parts), f"could not read {topic} to its end"
        return out
    finally:
        consumer.close()


def of_kind(messages, kind: str) -> list:
    """The messages whose ``kind`` header is ``kind`` (breach, risk-level, ...)."""
    return [m for m in messages if dict(m.headers())["kind"] == kind.encode()]


def breach_records(messages) -> list[dict]:
    records = []
    for m in of_kind(messages, "breach"):
        rec = orjson.loads(m.value())
        for key in ("first_ts", "event_ts", "emitted_at"):
            rec[key] = datetime.fromisoformat(rec[key])
        records.append(rec)
    return records


def lake_breaches(lake: Lake) -> set[tuple]:
    con = lake.connect()
    try:
        return set(
            con.execute("SELECT alert_id, sequence, state, severity FROM breaches").fetchall()
        )
    finally:
        con.close()


def lake_duplicates(out: Path) -> dict[str, int]:
    """Rows that share their identity with another row, per table."""
    keys = {
        "indicator_values": "indicator_id, entity_id, window_start",
        "breaches": "alert_id, sequence",
        "dead_letters": 'source, partition, "offset"',
        "ingest_batches": "source, partition, first_offset",
        "risk_levels": "risk_point_id, event_ts",
    }
    con = duckdb.connect(str(out / "cityvitals.duckdb"), read_only=True)
    try:
        return {
            table: con.execute(
                f"SELECT count(*) - count(DISTINCT ({key})) FROM {table}"
            ).fetchone()[0]
            for table, key in keys.items()
        }
    finally:
        con.close()


@pytest.fixture(scope="module")
def published(kafka_bootstrap, small_run) -> tuple[KafkaConfig, int]:
    """The SMALL scenario in input topics of this module (tests use their own outputs)."""
    scenario, _ = small_run
    prefix = f"m{time.monotonic_ns() % 10**8}."
    kafka = kafka_config(kafka_bootstrap, prefix)
    stats = publish(generate(scenario), kafka, partitions=3)
    return kafka, stats.total


def with_outputs(kafka: KafkaConfig, prefix: str) -> KafkaConfig:
    topics = kafka.topics.model_copy(
        update={"breaches": f"{prefix}breaches", "deadletter": f"{prefix}deadletter"}
    )
    return kafka.model_copy(update={"topics": topics})


def check_outputs(kafka: KafkaConfig, out: Path, small_run, events: int) -> list[dict]:
    """What every Kafka test proves of a finished run; returns the breach records."""
    scenario, reference = small_run
    lake = Lake(out)
    assert lake_duplicates(out) == dict.fromkeys(lake_duplicates(out), 0)
    con = lake.connect()
    try:
        assert con.execute("SELECT sum(events_in) FROM ingest_batches").fetchone()[0] == events
    finally:
        con.close()
    assert lake_breaches(lake) == lake_breaches(reference)

    messages = read_topic(kafka.bootstrap_servers, kafka.topics.breaches)
    ids = Counter(dict(m.headers())[ID_HEADER] for m in messages)
    assert max(ids.values()) == 1, "a breach message was sent twice"
    records = breach_records(messages)
    assert {(r["alert_id"], r["sequence"], r["state"], r["severity"]) for r in records} == (
        lake_breaches(reference)
    )
    results = match_incidents(records, incidents(scenario))
    assert [r["id"] for r in results if not r["detected"]] == []
    assert risk_changes(messages) == lake_risk_changes(reference)
    assert model_scores(lake) == pytest.approx(model_scores(reference), abs=1e-9)
    return records


def model_scores(lake: Lake) -> dict[tuple, float]:
    """Every online model's score, by model, entity and window end.

    A model whose state were lost in a stop would start over (no score during
    its warm-up, another baseline after), so a resumed run must give the
    reference run's scores. Not bit for bit: the Kafka batches cut the input
    elsewhere, so sums of one window may differ in their last bits.
    """
    con = lake.connect()
    try:
        rows = con.execute(
            "SELECT indicator_id, entity_id, window_end, value FROM indicator_values "
            "WHERE unit = 'score'"
        ).fetchall()
    finally:
        con.close()
    assert rows, "the scenario has no model scores"
    return {(i, e, w): v for i, e, w, v in rows}


def risk_changes(messages) -> set[tuple]:
    """Risk level changes on the breaches topic, told apart by their ``kind`` header."""
    out = set()
    for m in of_kind(messages, "risk-level"):
        rec = orjson.loads(m.value())
        assert m.key() == rec["risk_point_id"].encode()
        assert dict(m.headers())["level"] == rec["to_level"].encode()
        at = datetime.fromisoformat(rec["event_ts"])
        out.add((rec["risk_point_id"], rec["from_level"], rec["to_level"], at))
    return out


def lake_risk_changes(lake: Lake) -> set[tuple]:
    con = lake.connect()
    try:
        rows = con.execute(
            "SELECT risk_point_id, from_level, to_level, event_ts FROM risk_levels"
        ).fetchall()
    finally:
        con.close()
    assert rows, "the scenario raised no risk level change"
    return set(rows)


def test_breaches_and_dead_letters_over_kafka(published, small_run, topic_prefix, tmp_path):
    kafka, events = published
    kafka = with_outputs(kafka, topic_prefix)
    topics = kafka.topics.model_copy(update={"indicators": f"{topic_prefix}indicators"})
    kafka = kafka.model_copy(update={"topics": topics})
    log = tmp_path / "flow.log"
    finish(start_flow(flow_env(kafka, tmp_path / "out"), None, log), log)

    check_outputs(kafka, tmp_path / "out", small_run, events)
    messages = of_kind(read_topic(kafka.bootstrap_servers, kafka.topics.breaches), "breach")
    records = breach_records(messages)
    by_alert = defaultdict(list)
    for m, rec in zip(messages, records, strict=True):
        jsonschema.validate(orjson.loads(m.value()), BREACH_SCHEMA)
        headers = dict(m.headers())
        assert m.key() == rec["alert_id"].encode()
        assert headers["severity"] == rec["severity"].encode()
        assert headers["schema-version"] == SCHEMA_VERSION.encode()
        by_alert[rec["alert_id"]].append((m.partition(), rec["sequence"]))
    for alert, seen in by_alert.items():
        assert len({p for p, _ in seen}) == 1, f"alert {alert} spread over partitions"
        assert [s for _, s in seen] == list(range(len(seen))), f"alert {alert} out of order"

    dead = read_topic(kafka.bootstrap_servers, kafka.topics.deadletter)
    values = read_topic(kafka.bootstrap_servers, kafka.topics.indicators)
    con = small_run[1].connect()
    assert len(dead) == con.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    assert len(values) == con.execute("SELECT count(*) FROM indicator_values").fetchone()[0]
    con.close()
    assert len({dict(m.headers())[ID_HEADER] for m in values}) == len(values)
    originals = {}
    for m in dead:
        h = dict(m.headers())
        topic, part, offset = (
            h["source-topic"].decode(),
            int(h["source-partition"]),
            int(h["source-offset"]),
        )
        originals[(topic, part, offset)] = (m.value(), h["reason"].decode())
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": "check"})
    try:
        for (topic, part, offset), (value, reason) in originals.items():
            consumer.assign([TopicPartition(topic, part, offset)])
            (msg,) = consumer.consume(1, 10)
            assert msg.offset() == offset
            assert msg.value() == value, f"dead letter {reason} does not carry the original bytes"
    finally:
        consumer.close()


def new_recovery_store(tmp_path: Path, partitions: int) -> Path:
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run(
        [sys.executable, "-m", "bytewax.recovery", str(recovery), str(partitions)],
        check=True,
        cwd=ROOT,
    )
    return recovery


def stop_midway(proc: subprocess.Popen, out: Path, log: Path, sig: int, events: int) -> int:
    """Send ``sig`` once the lake accounts for half the ``events``; return those it holds then.

    Halfway, the models and windows hold an hour and more of state, so a
    resume that lost it would not give the reference run's scores.
    """
    deadline = time.monotonic() + 240
    while (seen := _ingested(out)) < events // 2:
        assert proc.poll() is None, f"the flow ended before the stop:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"only {seen} events written within 240 s"
        time.sleep(0.5)
    proc.send_signal(sig)
    code = proc.wait(timeout=120)
    assert sig == signal.SIGKILL or code == 0, log.read_text()[-3000:]
    return _ingested(out)


def _ingested(out: Path) -> int:
    if not list((out / "lake" / "ingest_batches").glob("date=*/*.parquet")):
        return 0
    con = duckdb.connect(str(out / "cityvitals.duckdb"), read_only=True)
    try:
        return con.execute("SELECT coalesce(sum(events_in), 0) FROM ingest_batches").fetchone()[0]
    finally:
        con.close()


@pytest.mark.parametrize(
    ("sig", "workers", "resumed_on"),
    [(signal.SIGKILL, 1, 1), (signal.SIGTERM, 1, 2)],
    ids=["sigkill-restart", "sigterm-resume-on-2-workers"],
)
def test_stopped_mid_stream_then_resumed_loses_and_doubles_nothing(
    published, small_run, topic_prefix, tmp_path, sig, workers, resumed_on
):
    """A crash (SIGKILL) or a clean stop (SIGTERM: open windows stay in state), then a resume.

    Resuming on more workers is rescaling: Bytewax routes recovered state by
    key, so the same store and shard count serve a cluster of another size.
    """
    kafka, events = published
    kafka = with_outputs(kafka, topic_prefix)
    recovery = new_recovery_store(tmp_path, 2)
    out = tmp_path / "out"
    env = flow_env(kafka, out, CITYVITALS__KAFKA__MAX_POLL="300")
    log = tmp_path / "flow.log"
    seen = stop_midway(start_flow(env, recovery, log, workers), out, log, sig, events)
    assert seen < events, "the stop came after the end of the stream"

    finish(start_flow(env, recovery, log, resumed_on), log)
    check_outputs(kafka, out, small_run, events)


def test_the_flow_rides_out_a_20_second_broker_outage(fresh_broker, small_run, tmp_path):
    scenario, _ = small_run
    kafka = kafka_config(fresh_broker.bootstrap, "o.")
    events = publish(generate(scenario), kafka, partitions=3).total
    out = tmp_path / "out"
    log = tmp_path / "flow.log"
    proc = start_flow(flow_env(kafka, out, CITYVITALS__KAFKA__MAX_POLL="300"), None, log)
    deadline = time.monotonic() + 120
    while not list((out / "lake" / "ingest_batches").glob("date=*/*.parquet")):
        assert proc.poll() is None, f"the flow ended early:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "nothing ingested within 120 s"
        time.sleep(0.2)
    fresh_broker.stop()
    time.sleep(20)
    assert proc.poll() is None, f"the flow died with the broker:\n{log.read_text()[-3000:]}"
    fresh_broker.start()
    finish(proc, log)
    check_outputs(kafka, out, small_run, events)


def test_a_partition_with_no_data_does_not_hold_windows_open_while_tailing(
    published, topic_prefix, tmp_path
):
    kafka, _ = published
    kafka = with_outputs(kafka, topic_prefix)
    empty = f"{topic_prefix}no-orders"
    ensure_topics(kafka, [empty], partitions=2)
    topics = kafka.topics.model_copy(update={"workorders": empty})
    kafka = kafka.model_copy(update={"topics": topics})
    env = flow_env(
        kafka,
        tmp_path / "out",
        CITYVITALS__KAFKA__STOP_AT_END="false",
        CITYVITALS__KAFKA__IDLE_TIMEOUT="2s",
    )
    log = tmp_path / "flow.log"
    proc = start_flow(env, None, log)
    try:
        deadline = time.monotonic() + 120
        opened = []
        while not opened:
            assert proc.poll() is None, f"the tailing flow ended:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no breach published within 120 s while tailing"
            time.sleep(1)
            messages = read_topic(kafka.bootstrap_servers, kafka.topics.breaches)
            opened = [r for r in breach_records(messages) if r["state"] == "opened"]
    finally:
        # SIGKILL: SIGTERM would wait for the windows step, busy closing the months of
        # windows between the replayed afternoon and the wall clock the idle partitions vouch for
        proc.kill()
        proc.wait(timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_of_two_workers_give_what_one_process_gives(
    published, small_run, topic_prefix, tmp_path
):
    """A Bytewax cluster on loopback: every entity, device and order lives on one worker."""
    kafka, events = published
    kafka = with_outputs(kafka, topic_prefix)
    out = tmp_path / "out"
    env = flow_env(kafka, out, CITYVITALS__PIPELINE__SHARDS="8")
    addresses = ";".join(f"127.0.0.1:{_free_port()}" for _ in range(2))
    procs = []
    for i in range(2):
        log = tmp_path / f"flow-{i}.log"
        args = [sys.executable, "-m", "bytewax.run", "flows.city_kafka", "-w", "2"]
        args += ["-i", str(i), "-a", addresses]
        procs.append(
            (
                subprocess.Popen(
                    args, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
                ),
                log,
            )
        )
    for proc, log in procs:
        finish(proc, log)
    check_outputs(kafka, out, small_run, events)
    _, reference = small_run
    tables = {
        "indicator_values": "indicator_id, entity_id, window_start, samples, level, "
        "round(value, 9)",
        "breaches": "alert_id, sequence, state, severity, event_ts, round(value, 9)",
        "device_status": "device_id, status, event_ts, last_seen_ts",
        "order_deadlines": "order_id, state, event_ts, overdue_s",
        "risk_levels": "risk_point_id, event_ts, from_level, to_level, round(score, 9)",
    }
    for table, columns in tables.items():
        query = f"SELECT {columns} FROM {table} ORDER BY ALL"
        got, want = (
            Lake(out).connect().execute(query).fetchall(),
            reference.connect().execute(query).fetchall(),
        )
        assert len(got) == len(want), table
        assert got == want, table
