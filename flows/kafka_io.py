"""Kafka source and sink for the city flow, with recovery that neither loses nor doubles.

**Source.** :class:`KafkaInput` reads every partition of the input topics;
each Kafka partition is one Bytewax partition, so partitions spread over the
workers. It yields :class:`~schemas.decode.RawBatch` items (one per poll, with
the messages' own offsets), so the same decoder as the file input sees them.
Its recovery state is the next offset to read. With ``stop_at_end`` each
partition stops at the end offset it had when the flow started. Otherwise a
partition that has reached its end and stays quiet for ``idle_timeout`` sends
idleness ticks, so that it does not hold every window open (see
:class:`~schemas.decode.RawBatch`).

**Sink.** :class:`KafkaOutput` writes :class:`~schemas.messages.OutMessage`
items to one topic with an idempotent producer (``acks=all``), so broker
retries never duplicate. At every snapshot it waits until everything sent
is acknowledged (a broker outage holds the flow there instead of losing
messages) and records the topic's end offsets. When it resumes after a crash,
it reads the topic from those offsets and skips every message whose
``cityvitals-id`` is already there: what the crashed run sent after its last
snapshot is not sent again. With a ``marks`` directory (runs with recovery),
a partition that starts without state records the topic's end offsets there
the first time, and on every later fresh start reads back from that mark:
a start killed before its first snapshot was saved is not doubled either.

Transient broker errors (a broker restarting, a network blip) are retried
by librdkafka; only fatal errors stop the flow, with the topic in the message.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from flows import shutdown
from flows.config import KafkaConfig
from schemas.decode import RawBatch, partition_key
from schemas.messages import ID_HEADER, OutMessage

__all__ = [
    "KafkaIOError",
    "KafkaInput",
    "KafkaOutput",
    "ensure_topics",
    "topic_partitions",
    "write_mark",
]

log = logging.getLogger(__name__)
_QUIET = logging.getLogger("cityvitals.kafka.admin")  # the admin client's retry chatter
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False

_TIMEOUT = 30.0  # seconds for metadata and offset queries
_IDLE = timedelta(milliseconds=50)  # wait before polling an empty partition again
_TICK = timedelta(seconds=1)  # idleness ticks of a quiet partition, at most this often


class KafkaIOError(RuntimeError):
    """Kafka could not be used: a missing topic, a fatal client error, a lost message."""


def _admin(kafka: KafkaConfig) -> AdminClient:
    return AdminClient(kafka.client_config())


def topic_partitions(kafka: KafkaConfig, topic: str) -> list[int]:
    """The partition ids of ``topic``; a clear error if it does not exist."""
    return _partitions_of(kafka, [topic])[topic]


def _partitions_of(kafka: KafkaConfig, topics: list[str]) -> dict[str, list[int]]:
    """The partition ids of each of ``topics``, asked through one client."""
    admin = _admin(kafka)
    return {topic: _partitions(admin, kafka, topic) for topic in topics}


def _partitions(admin: AdminClient, kafka: KafkaConfig, topic: str) -> list[int]:
    try:
        meta = admin.list_topics(topic, timeout=_TIMEOUT)
    except KafkaException as exc:
        raise KafkaIOError(
            f"cannot reach Kafka at {kafka.bootstrap_servers!r} to list topic {topic!r}: {exc}"
        ) from None
    info = meta.topics.get(topic)
    if info is None or info.error is not None:
        why = info.error.str() if info is not None and info.error else "no such topic"
        raise KafkaIOError(
            f"topic {topic!r} on {kafka.bootstrap_servers}: {why}; "
            "create it (cityvitals simulate --bootstrap creates the input topics) "
            "or fix kafka.topics in the configuration"
        )
    return sorted(info.partitions)


def ensure_topics(
    kafka: KafkaConfig,
    topics: list[str],
    partitions: int = 4,
    replication_factor: int = 1,
    timeout: float = _TIMEOUT,
) -> tuple[str, ...]:
    """Create those of ``topics`` that do not exist yet; return the ones created.

    Existing topics are left as they are, whatever their partition count.
    """
    for name, value in (("partitions", partitions), ("replication_factor", replication_factor)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    errors: list[str] = []  # connection problems (refused, TLS, auth), in the order seen
    admin = AdminClient(
        kafka.client_config(logger=_QUIET, error_cb=lambda err: errors.append(err.str()))
    )
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        admin.poll(0)  # serves error_cb
        detail = f" ({errors[0]})" if errors else ""
        raise KafkaIOError(
            f"cannot list the topics of Kafka at {kafka.bootstrap_servers} within "
            f"{timeout:g} s: {reason_of(exc)}{detail}"
        ) from exc
    missing = [t for t in dict.fromkeys(topics) if t not in existing]
    if not missing:
        return ()
    futures = admin.create_topics(
        [NewTopic(t, partitions, replication_factor) for t in missing],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    created, problems = [], []
    for topic, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # created meanwhile by someone else: fine
            problems.append(f"{topic}: {reason_of(exc)}")
        else:
            created.append(topic)
    if problems:
        raise KafkaIOError(
            f"cannot create topics with {partitions} partitions and replication factor "
            f"{replication_factor} at {kafka.bootstrap_servers}: " + "; ".join(problems)
        )
    return tuple(created)


def reason_of(exc: KafkaException) -> str:
    """The broker's or librdkafka's own words for a failed call."""
    err = exc.args[0] if exc.args else None
    return err.str() if isinstance(err, KafkaError) else str(exc)


def _reader(kafka: KafkaConfig, group: str) -> Consumer:
    """A consumer for assigned partitions: it commits nothing and reports partition ends.

    librdkafka wants a ``group.id`` even when partitions are assigned by hand.
    """
    return Consumer(
        kafka.client_config(
            "consumer",
            **{"group.id": group, "enable.auto.commit": False, "enable.partition.eof": True},
        )
    )


# -- source ---------------------------------------------------------------------------


def _watermarks(kafka: KafkaConfig, parts: dict[str, list[int]]) -> dict[str, tuple[int, int]]:
    """(low, high) offsets of each partition of ``parts`` (partition ids by topic), by name,
    asked over one connection."""
    consumer = _reader(kafka, "cityvitals-offsets")
    bounds = {}
    try:
        for topic, ids in parts.items():
            for p in ids:
                try:
                    tp = TopicPartition(topic, p)
                    bounds[partition_key(topic, p)] = consumer.get_watermark_offsets(
                        tp, timeout=_TIMEOUT
                    )
                except KafkaException as exc:
                    raise KafkaIOError(
                        f"cannot read the offsets of {topic}[{p}] at "
                        f"{kafka.bootstrap_servers}: {reason_of(exc)}"
                    ) from None
    finally:
        consumer.close()
    return bounds


class _InputPartition(StatefulSourcePartition[RawBatch, int]):
    def __init__(
        self,
        kafka: KafkaConfig,
        topic: str,
        partition: int,
        resume: int | None,
        bounds: tuple[int, int] | None = None,
    ):
        """``bounds``: the partition's (low, high) offsets if known, else asked for here."""
        self._topic = topic
        self._partition = partition
        self._max_poll = kafka.max_poll
        self._consumer = _reader(kafka, "cityvitals")
        tp = TopicPartition(topic, partition)
        low, high = bounds or self._consumer.get_watermark_offsets(tp, timeout=_TIMEOUT)
        start = low if kafka.starting_offset == "earliest" else high
        self._next = resume if resume is not None else start
        self._end = high if kafka.stop_at_end else None
        self._done = self._end is not None and self._next >= self._end
        self._idle = False
        self._said_end = False
        self._idle_timeout = None if kafka.stop_at_end else kafka.idle_timeout
        self._caught_up: datetime | None = None  # when the partition's end was last reached
        self._ticked: datetime | None = None
        self._consumer.assign([TopicPartition(topic, partition, self._next)])

    def next_batch(self) -> list[RawBatch]:
        if shutdown.requested():  # SIGTERM: end here, without saying the data ended
            raise StopIteration
        if self._done:
            if not self._said_end:  # once more after the end: say that nothing follows
                self._said_end = True
                return [RawBatch(self._topic, self._partition, self._next, [], ended=True)]
            raise StopIteration
        lines, offsets = [], []
        for msg in self._consumer.consume(self._max_poll, 0):
            err = msg.error()
            if err is None:
                lines.append(msg.value() or b"")
                offsets.append(msg.offset())
                self._caught_up = None
            elif err.code() == KafkaError._PARTITION_EOF:
                self._done = self._end is not None
                self._caught_up = datetime.now(UTC)
            elif err.fatal() or err.code() in (
                KafkaError.UNKNOWN_TOPIC_OR_PART,
                KafkaError.TOPIC_AUTHORIZATION_FAILED,
                KafkaError._UNKNOWN_PARTITION,
            ):
                raise KafkaIOError(f"consuming {self._topic}[{self._partition}]: {err.str()}")
            else:  # transient: librdkafka reconnects and retries by itself
                log.warning("consuming %s[%s]: %s", self._topic, self._partition, err.str())
        if offsets:
            self._next = offsets[-1] + 1
        if self._end is not None and self._next >= self._end:
            self._done = True
        self._idle = not lines
        if not lines:
            return self._idle_tick()
        return [RawBatch(self._topic, self._partition, offsets[0], lines, offsets=offsets)]

    def _idle_tick(self) -> list[RawBatch]:
        """An empty batch vouching for ``now - idle_timeout``, at most once a second.

        Only a partition that reached its end (not one cut off by a broker
        outage) and stayed quiet for ``idle_timeout`` is idle.
        """
        if self._idle_timeout is None or self._caught_up is None:
            return []
        now = datetime.now(UTC)
        quiet = now - self._caught_up >= self._idle_timeout
        if not quiet or (self._ticked is not None and now - self._ticked < _TICK):
            return []
        self._ticked = now
        return [
            RawBatch(
                self._topic, self._partition, self._next, [], idle_until=now - self._idle_timeout
            )
        ]

    def next_awake(self) -> datetime | None:
        return datetime.now(UTC) + _IDLE if self._idle and not self._done else None

    def snapshot(self) -> int:
        return self._next

    def close(self) -> None:
        self._consumer.close()


class KafkaInput(FixedPartitionedSource[RawBatch, int]):
    """Every partition of the input topics, as batches of raw records.

    Partition names are ``<topic>#<partition>`` (see
    :func:`schemas.decode.partition_key`). The offsets the partitions start
    from are asked for over one connection, once per process and listing, when
    the first of them is built (not over a connection of each partition's own,
    which made starting with many partitions slow).
    """

    def __init__(self, kafka: KafkaConfig, topics: list[str] | None = None) -> None:
        self.kafka = kafka
        self.topics = topics if topics is not None else list(kafka.topics.inputs.values())
        self._lock = threading.Lock()  # the workers of a process share this source
        self._listed: dict[str, list[int]] = {}  # partition ids by topic, from list_parts
        self._bounds: dict[str, tuple[int, int]] | None = None  # by name; None: not asked yet

    def list_parts(self) -> list[str]:
        listed = _partitions_of(self.kafka, self.topics)
        with self._lock:  # every worker lists at the start of a run: offsets asked afresh
            self._listed, self._bounds = listed, None
        return [partition_key(topic, p) for topic, ids in listed.items() for p in ids]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None):
        topic, partition = for_part.rsplit("#", 1)
        with self._lock:
            if self._bounds is None:
                self._bounds = _watermarks(self.kafka, self._listed)
            bounds = self._bounds.pop(for_part, None)  # None, if not listed: it asks itself
        part = _InputPartition(self.kafka, topic, int(partition), resume_state, bounds)
        log.info(
            "partition assigned",
            extra={
                "topic": topic,
                "partition": int(partition),
                "offset": part.snapshot(),
                "resumed": resume_state is not None,
            },
        )
        return part


# -- sink -----------------------------------------------------------------------------


class _OutputPartition(StatefulSinkPartition[list[OutMessage], dict[int, int]]):
    def __init__(
        self, kafka: KafkaConfig, topic: str, resume: dict[int, int] | None, mark: Path | None
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self._failed: list[str] = []
        self._partitions = topic_partitions(kafka, topic)
        self._meta = _reader(kafka, "cityvitals-offsets")
        if resume is None and mark is not None:
            resume = self._fresh_start_mark(mark)
        self._skip = self._already_sent(resume) if resume else set()
        self._producer = Producer(
            kafka.client_config(
                "producer",
                **{
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 20,
                    "compression.type": "lz4",
                },
            )
        )

    def _fresh_start_mark(self, mark: Path) -> dict[int, int] | None:
        """The end offsets when this partition first started fresh (recorded now if unknown)."""
        if mark.is_file():
            return {int(p): o for p, o in orjson.loads(mark.read_bytes()).items()}
        write_mark(mark, {str(p): o for p, o in self._end_offsets().items()})
        return None

    def _already_sent(self, since: dict[int, int]) -> set[str]:
        """Ids of messages written to the topic after the snapshot we resume from."""
        consumer = _reader(self._kafka, "cityvitals-resume")
        ids: set[str] = set()
        try:
            ends = self._end_offsets()
            pending = {p: high for p, high in ends.items() if high > since.get(p, 0)}
            consumer.assign([TopicPartition(self._topic, p, since.get(p, 0)) for p in pending])
            deadline = time.monotonic() + 10 * _TIMEOUT
            while pending:
                if time.monotonic() > deadline:
                    raise KafkaIOError(f"timed out reading back {self._topic} to resume")
                for msg in consumer.consume(10_000, 1.0):
                    if msg.error() is not None:
                        if msg.error().code() == KafkaError._PARTITION_EOF:
                            pending.pop(msg.partition(), None)
                        continue
                    if msg.offset() + 1 >= pending.get(msg.partition(), 0):
                        pending.pop(msg.partition(), None)
                    for name, value in msg.headers() or ():
                        if name == ID_HEADER:
                            ids.add(value.decode())
        finally:
            consumer.close()
        log.info("%s: %d messages already written after the snapshot", self._topic, len(ids))
        return ids

    def _delivered(self, err, msg) -> None:
        if err is not None:
            self._failed.append(f"{msg.topic()}: {err.str()}")

    def write_batch(self, items: list[list[OutMessage]]) -> None:
        for messages in items:
            for m in messages:
                if m.message_id in self._skip:
                    self._skip.discard(m.message_id)
                    continue
                self._produce(m)
        self._producer.poll(0)
        self._raise_failures()

    def _produce(self, m: OutMessage) -> None:
        while True:
            try:
                self._producer.produce(
                    self._topic,
                    value=m.value,
                    key=m.key,
                    headers=list(m.headers),
                    on_delivery=self._delivered,
                )
                return
            except BufferError:  # the local queue is full: let deliveries drain
                self._producer.poll(0.1)

    def _raise_failures(self) -> None:
        if self._failed:
            raise KafkaIOError(
                f"{len(self._failed)} message(s) could not be delivered, first: {self._failed[0]}"
            )

    def snapshot(self) -> dict[int, int]:
        waited = 0
        while self._producer.flush(5.0) > 0:
            waited += 5
            log.warning("%s: waiting %d s for the broker to acknowledge", self._topic, waited)
        self._raise_failures()
        return self._end_offsets()

    def _end_offsets(self) -> dict[int, int]:
        return {
            p: self._meta.get_watermark_offsets(TopicPartition(self._topic, p), timeout=_TIMEOUT)[1]
            for p in self._partitions
        }

    def close(self) -> None:
        while self._producer.flush(5.0) > 0:
            log.warning("%s: waiting for the broker to acknowledge before closing", self._topic)
        self._meta.close()
        self._raise_failures()


class KafkaOutput(FixedPartitionedSink[list[OutMessage], dict[int, int]]):
    """Lists of messages to ``topic``, keyed upstream by shard (``parts`` names them)."""

    def __init__(
        self, kafka: KafkaConfig, topic: str, parts: list[str], marks: Path | None = None
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.parts = parts
        self.marks = marks

    def list_parts(self) -> list[str]:
        return self.parts

    def build_part(self, step_id: str, for_part: str, resume_state: dict[int, int] | None):
        mark = self.marks / f"{self.topic}.{for_part}.json" if self.marks else None
        return _OutputPartition(self.kafka, self.topic, resume_state, mark)


def write_mark(path: Path, value: object) -> None:
    """Write ``value`` as JSON to ``path`` atomically: a reader sees the old file or the new.

    The temporary file is per process: processes of one cluster may write at once.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(orjson.dumps(value))
    os.replace(tmp, path)
