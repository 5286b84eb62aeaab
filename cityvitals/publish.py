"""Publish JSON-lines events into the Kafka input topics.

:func:`publish` takes batches of encoded lines (what :func:`cityvitals.simulate.generate`
yields), creates the missing input topics of a :class:`~flows.config.KafkaConfig`, and sends
every line, byte for byte, to its family's topic, keyed by the entity its events are ordered
by, so that one entity's events stay in one partition, in the order they were given:

============  ============
family        key
============  ============
``reading``   ``device_id``
``heartbeat`` ``device_id``
``gate``      ``gate_id``
``workorder`` ``order_id``
============  ============

A line that does not parse, is not an object, or names no known family is sent unkeyed to
the readings topic, unchanged: such lines are the simulator's deliberate corruptions, and the
pipeline turns them into dead letters.

The producer is idempotent with ``acks=all``, so retries neither duplicate nor reorder
messages; a message that is not delivered stops the run with a :class:`PublishError`.

>>> from flows.config import KafkaTopics
>>> route = router(KafkaTopics())
>>> route(b'{"family":"heartbeat","ts":"2026-05-12T06:00:00.000Z","device_id":"cam-000001"}')
('city.heartbeats', 'cam-000001')
>>> route(b'{"family":"workorder","order_id":"WO-0000001","status":"reported"}')
('city.workorders', 'WO-0000001')
>>> route(b'{"family": "reading", "ts": ')
('city.readings', None)
>>> pause_needed(sent=500, rate=100.0, elapsed=2.0)
3.0
>>> pause_needed(sent=500, rate=100.0, elapsed=6.0)
0.0
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from flows.config import KafkaConfig, KafkaTopics
from flows.kafka_io import KafkaIOError, ensure_topics, reason_of

__all__ = [
    "KEY_FIELDS",
    "PRODUCER_DEFAULTS",
    "PublishError",
    "PublishStats",
    "check_settings",
    "pause_needed",
    "publish",
    "router",
]

#: The field whose value keys a family's messages (the entity its events are ordered by).
KEY_FIELDS: dict[str, str] = {
    "reading": "device_id",
    "heartbeat": "device_id",
    "gate": "gate_id",
    "workorder": "order_id",
}

#: Producer tuning; ``KafkaConfig.client`` may override any of these.
PRODUCER_DEFAULTS: dict[str, str | int] = {
    "linger.ms": 50,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
}

#: Settings publishing relies on (no duplicates, per-key order); the client may not change them.
_REQUIRED: dict[str, str] = {"enable.idempotence": "true", "acks": "all"}
_ACKS_ALL = {"all", "-1"}

#: The admin client's librdkafka log (a line per failed connection attempt) is dropped: its
#: errors reach the exception instead. The producer logs to ``cityvitals.publish``.
_LOG = logging.getLogger("cityvitals.publish")

#: Longest burst when pacing: a rate's events are sent in slices of this many seconds.
_SLICE_SECONDS = 0.1


class PublishError(RuntimeError):
    """Publishing could not be done, or not completely; the message says what was lost."""


@dataclass(frozen=True)
class PublishStats:
    """What :func:`publish` sent."""

    messages: dict[str, int]  #: messages delivered, per topic
    seconds: float  #: wall time, topic creation included
    created: tuple[str, ...] = field(default=())  #: topics that did not exist before

    @property
    def total(self) -> int:
        """Messages delivered to all topics."""
        return sum(self.messages.values())

    @property
    def events_per_second(self) -> float:
        """Delivered messages per second of wall time."""
        return self.total / self.seconds if self.seconds > 0 else 0.0


def router(topics: KafkaTopics) -> Callable[[bytes], tuple[str, str | None]]:
    """A function giving one line's topic and key (``None``: unkeyed); see the module doc."""
    fallback = topics.readings
    routes = {family: (topic, KEY_FIELDS[family]) for family, topic in topics.inputs.items()}
    loads, decode_error = orjson.loads, orjson.JSONDecodeError

    def route(line: bytes) -> tuple[str, str | None]:
        try:
            event = loads(line)
        except decode_error:
            return fallback, None
        if type(event) is not dict:
            return fallback, None
        family = event.get("family")
        found = routes.get(family) if type(family) is str else None
        if found is None:
            return fallback, None
        topic, key_field = found
        key = event.get(key_field)
        return topic, key if type(key) is str else None

    return route


def check_settings(kafka: KafkaConfig) -> None:
    """Raise ``ValueError`` if ``kafka.client`` or ``kafka.producer`` turns off what
    publishing relies on.

    >>> try:
    ...     check_settings(KafkaConfig(client={"acks": "1"}))
    ... except ValueError as e:
    ...     print(e)
    acks=1 is not allowed: publishing needs acks=all (per-entity order, nothing lost)
    """
    settings = {**kafka.client, **kafka.producer}
    for key, needed in _REQUIRED.items():
        if key in settings:
            given = str(settings[key]).lower()
            if given != needed and not (key == "acks" and given in _ACKS_ALL):
                raise ValueError(
                    f"{key}={settings[key]} is not allowed: publishing needs "
                    f"{key}={needed} (per-entity order, nothing lost)"
                )


def pause_needed(sent: int, rate: float, elapsed: float) -> float:
    """Seconds to wait so that ``sent`` events are not ahead of ``rate`` events per second.

    ``elapsed`` is the time since publishing started; the answer is never negative.
    """
    return max(0.0, sent / rate - elapsed)


def publish(
    lines_batches: Iterable[list[bytes]],
    kafka: KafkaConfig,
    partitions: int = 4,
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    replication_factor: int = 1,
    timeout: float = 30.0,
    flush_timeout: float = 120.0,
) -> PublishStats:
    """Send every line of ``lines_batches`` to its family's input topic; see the module doc.

    ``rate`` is in events per second (``None``: as fast as possible); ``progress`` is called
    after each batch with the number of lines sent so far. Topics missing from the cluster
    are created first (see :func:`flows.kafka_io.ensure_topics`, which ``timeout`` bounds). Raises
    :class:`PublishError` if a message is not delivered, or still queued ``flush_timeout``
    seconds after the last one was sent.
    """
    if rate is not None and (
        isinstance(rate, bool)
        or not isinstance(rate, int | float)
        or not math.isfinite(rate)
        or rate <= 0
    ):
        raise ValueError(f"rate must be a finite number of events per second > 0, got {rate!r}")
    check_settings(kafka)
    started = time.perf_counter()
    try:
        created = ensure_topics(
            kafka, list(kafka.topics.inputs.values()), partitions, replication_factor, timeout
        )
    except KafkaIOError as exc:
        raise PublishError(str(exc)) from exc

    failures: list[tuple[str, str]] = []  # (topic, reason) of each undelivered message
    fatal: list[str] = []

    def on_delivery(err: KafkaError | None, msg) -> None:
        if err is not None:
            failures.append((msg.topic(), err.str()))

    def on_error(err: KafkaError) -> None:
        if err.fatal():
            fatal.append(err.str())

    producer = Producer(_producer_config(kafka, on_delivery, on_error))
    route = router(kafka.topics)
    counts: dict[str, int] = dict.fromkeys(kafka.topics.inputs.values(), 0)
    produce, poll = producer.produce, producer.poll
    slice_size = max(1, int(rate * _SLICE_SECONDS)) if rate is not None else 0
    sent = 0
    paced_from = time.perf_counter()
    topic, line = "", b""
    try:
        for batch in lines_batches:
            if failures or fatal:
                break
            for part in _slices(batch, slice_size):
                if rate is not None:
                    elapsed = time.perf_counter() - paced_from
                    _wait(poll, pause_needed(sent + len(part), rate, elapsed))
                for line in part:
                    topic, key = route(line)
                    while True:
                        try:
                            produce(topic, line, key)
                            break
                        except BufferError:  # the local queue is full: let it drain
                            poll(0.05)
                    counts[topic] += 1
                sent += len(part)
                poll(0)
            if progress is not None:
                progress(sent)
    except KafkaException as exc:  # refused before sending: too large, unknown topic, ...
        producer.flush(flush_timeout)
        raise PublishError(
            f"cannot send a {len(line):,}-byte line to {topic}: {reason_of(exc)}; "
            f"publishing stopped after {sum(counts.values()):,} messages"
        ) from exc
    remaining = producer.flush(flush_timeout)
    seconds = time.perf_counter() - started
    if fatal:
        raise PublishError(f"the producer failed after {sent:,} messages: {fatal[0]}")
    if failures:
        topic, reason = failures[0]
        raise PublishError(
            f"{len(failures):,} of {sent:,} messages were not delivered (first: {topic}: {reason})"
        )
    if remaining:
        raise PublishError(
            f"{remaining:,} of {sent:,} messages were still undelivered {flush_timeout:g} s "
            f"after the last was sent (Kafka at {kafka.bootstrap_servers})"
        )
    return PublishStats(messages=counts, seconds=seconds, created=created)


def _producer_config(
    kafka: KafkaConfig,
    on_delivery: Callable[[KafkaError | None, object], None],
    on_error: Callable[[KafkaError], None],
) -> dict:
    return {
        **PRODUCER_DEFAULTS,
        **kafka.client_config(
            "producer",
            **_REQUIRED,
            # Only failures are reported: a callback per delivered message costs more
            # than producing it.
            **{"delivery.report.only.error": True},
            on_delivery=on_delivery,
            error_cb=on_error,
            logger=_LOG,
        ),
    }


def _slices(batch: list[bytes], size: int) -> list[list[bytes]]:
    """``batch`` cut in lists of ``size`` lines (0: the whole batch)."""
    if size <= 0 or len(batch) <= size:
        return [batch]
    return [batch[i : i + size] for i in range(0, len(batch), size)]


def _wait(poll: Callable[[float], int], seconds: float) -> None:
    """Wait ``seconds`` while serving the producer's callbacks."""
    deadline = time.perf_counter() + seconds
    while (left := deadline - time.perf_counter()) > 0:
        poll(left)
