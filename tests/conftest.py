"""Shared fixtures: a small simulated afternoon run once through the real flow, and Kafka.

Kafka tests run against a real broker: ``$KAFKA_BOOTSTRAP_SERVERS`` if set,
otherwise a local one started for the session (:mod:`cityvitals.localkafka`).
A broker that can't be reached or started fails the tests; they never skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from bytewax.testing import run_main

from cityvitals.lake import Lake
from cityvitals.localkafka import BrokerError, LocalKafka, metadata_ok
from cityvitals.simulate import Scenario, generate
from flows.city import build
from flows.config import PipelineConfig
from flows.sources import BatchIteratorSource

#: Small enough for CI, long enough for every incident of the script.
SMALL = Scenario(devices=300, minutes=240, seed=11)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory) -> tuple[Scenario, Lake]:
    """The SMALL scenario through the real dataflow into a fresh lake."""
    out: Path = tmp_path_factory.mktemp("small_run")
    config = PipelineConfig(out=out)
    run_main(build(BatchIteratorSource("simulator", lambda: generate(SMALL)), config))
    return SMALL, Lake(out)


def alert_counts(lake: Lake) -> tuple[int, int]:
    """(alerts, alerts still open) of a lake, from the breaches table itself (not the views)."""
    return (
        lake.connect()
        .execute(
            "WITH last AS (SELECT alert_id, max_by(state, sequence) AS state FROM breaches "
            "GROUP BY alert_id) SELECT count(*), count(*) FILTER (state <> 'cleared') FROM last"
        )
        .fetchall()[0]
    )


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory) -> Iterator[str]:
    """``bootstrap.servers`` of a running Kafka broker shared by the session.

    ``$KAFKA_BOOTSTRAP_SERVERS`` if set (it must answer within 15 s), else a
    local broker started now and stopped at the end of the session.
    """
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        if not metadata_ok(external, timeout=15):
            pytest.fail(
                f"KAFKA_BOOTSTRAP_SERVERS={external!r} does not answer a metadata request "
                "within 15 s",
                pytrace=False,
            )
        yield external
        return
    with _local_broker(tmp_path_factory.mktemp("kafka")) as kafka:
        yield kafka.bootstrap


@pytest.fixture
def fresh_broker(tmp_path) -> Iterator[LocalKafka]:
    """A started Kafka broker of the test's own, which it may stop and start again."""
    with _local_broker(tmp_path / "kafka") as kafka:
        yield kafka


@contextmanager
def _local_broker(workdir: Path) -> Iterator[LocalKafka]:
    """A started local broker, closed on exit; failing to start it fails the test."""
    kafka = LocalKafka(workdir)
    try:
        kafka.start()
    except (BrokerError, OSError) as exc:
        kafka.close()
        pytest.fail(f"could not start a local Kafka broker: {exc}", pytrace=False)
    try:
        yield kafka
    finally:
        kafka.close()


@pytest.fixture
def topic_prefix() -> str:
    """A prefix unique to the test, for its topic and group names on a shared broker."""
    return f"t{uuid.uuid4().hex[:8]}."
