"""Typed settings of a pipeline run, validated before anything starts.

>>> PipelineConfig().allowed_lateness
datetime.timedelta(seconds=30)
>>> try:
...     PipelineConfig.from_mapping({"shards": 0, "colour": "red"}, source="flags")
... except ConfigError as e:
...     print(e)
flags: 2 errors
  flags: shards: got 0, expected input should be greater than or equal to 1
  flags: colour: unknown key
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cityvitals.yamlconf import ConfigError, Duration, load_model, validate_data
from indicators.definitions import DEFAULT_CATALOG
from thresholds.risk_points import DEFAULT_RISK_POINTS
from thresholds.rules import DEFAULT_RULES

__all__ = [
    "ENV_PREFIX",
    "ConfigError",
    "FlowConfig",
    "KafkaConfig",
    "KafkaTopics",
    "PipelineConfig",
    "load_flow_config",
    "recovery_requested",
]


class PipelineConfig(BaseModel):
    """Everything a run of the city flow needs besides its source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    out: Path = Field(default=Path("data"), description="Output directory (lake + DuckDB).")
    batch_size: int = Field(default=10_000, ge=1, le=1_000_000, description="Lines per batch.")
    allowed_lateness: Duration = Field(
        default=timedelta(seconds=30),
        description="How far behind the latest event time an event may arrive and still count.",
    )
    shards: int = Field(
        default=4, ge=1, le=4096, description="Keyed state shards; at least the total worker count."
    )
    flush_rows: int = Field(default=200_000, ge=1, description="Rows buffered per sink file.")
    flush_interval: Duration = Field(
        default=timedelta(seconds=2), description="Longest wait before buffered rows are written."
    )
    max_future: Duration = Field(
        default=timedelta(days=1), description="Event times further ahead of now are rejected."
    )
    max_age: Duration = Field(
        default=timedelta(days=3650), description="Event times further behind now are rejected."
    )
    recovery: bool = Field(
        default=False,
        description=(
            "The flow runs with Bytewax recovery (set by the bytewax.run entry points when "
            "-r is given): sink files get stable names, and a start without recovery state "
            "replaces what an earlier start wrote before its first snapshot."
        ),
    )
    clock: Literal["event", "wall"] | None = Field(
        default=None,
        description=(
            "How the timers step (device offline, order overdue) tells time. 'event': the "
            "input's low watermark only, so replays give the same records. 'wall': the "
            "watermark, carried on by the wall clock while it stands still, so devices of a "
            "live stream that went silent still go offline on time. Unset: 'wall' for a live "
            "Kafka stream, 'event' for files, the simulator and Kafka with stop_at_end."
        ),
    )
    catalog: Path = Field(default=DEFAULT_CATALOG, description="Indicator catalogue (YAML).")
    rules: Path = Field(default=DEFAULT_RULES, description="Threshold rules (YAML).")
    risk_points: Path = Field(
        default=DEFAULT_RISK_POINTS, description="Risk points and grading models (YAML)."
    )

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str = "configuration") -> PipelineConfig:
        """Validate settings from flags or environment, naming every bad key."""
        return validate_data(data, cls, source)


#: librdkafka settings the flow sets itself; configuration may not override them.
_OWNED = frozenset({"bootstrap.servers", "enable.auto.commit", "enable.partition.eof", "group.id"})


class KafkaTopics(BaseModel):
    """Topic names: the four input families and the three outputs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    readings: str = Field(default="city.readings", min_length=1)
    heartbeats: str = Field(default="city.heartbeats", min_length=1)
    gates: str = Field(default="city.gates", min_length=1)
    workorders: str = Field(default="city.workorders", min_length=1)
    breaches: str = Field(default="city.breaches", min_length=1)
    deadletter: str = Field(default="city.deadletter", min_length=1)
    indicators: str | None = Field(
        default=None, description="Indicator values topic; None (the default) publishes none."
    )

    @property
    def inputs(self) -> dict[str, str]:
        """Input topic per family (``reading`` → ``city.readings``)."""
        return {
            "reading": self.readings,
            "heartbeat": self.heartbeats,
            "gate": self.gates,
            "workorder": self.workorders,
        }


class KafkaConfig(BaseModel):
    """How the Kafka flow reaches the cluster.

    ``client`` is passed to librdkafka unchanged (security protocol, SASL,
    SSL paths, client id, ...): see librdkafka's CONFIGURATION.md.

    >>> KafkaConfig(bootstrap_servers="127.0.0.1:9092").topics.inputs["reading"]
    'city.readings'
    >>> try:
    ...     validate_data({"client": {"group.id": "x"}}, KafkaConfig, "env")
    ... except ConfigError as e:
    ...     print(e.problems[0])
    env: client: expected no 'group.id': cityvitals sets it itself
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    bootstrap_servers: str = Field(default="127.0.0.1:9092", min_length=1)
    client: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="librdkafka settings for every client (auth, TLS, ids)."
    )
    topics: KafkaTopics = Field(default_factory=KafkaTopics)
    starting_offset: Literal["earliest", "latest"] = Field(
        default="earliest", description="Where a partition without recovery state starts."
    )
    stop_at_end: bool = Field(
        default=False,
        description="Stop at the end of the data in the topics when the flow started.",
    )
    max_poll: int = Field(default=10_000, ge=1, description="Most messages per poll per partition.")
    idle_timeout: Duration = Field(
        default=timedelta(minutes=2),
        description=(
            "A partition caught up and quiet this long stops holding windows open: no event "
            "older than now minus this is expected from it (later ones are late events). "
            "Longer than the delivery delays and broker outages you expect; unused with "
            "stop_at_end."
        ),
    )
    create_topics: bool = Field(default=True, description="Create missing output topics.")
    output_partitions: int = Field(default=4, ge=1, description="Partitions of created topics.")

    @field_validator("client")
    @classmethod
    def _not_owned(cls, value: dict) -> dict:
        for key in sorted(value):
            if key in _OWNED:
                raise ValueError(f"expected no {key!r}: cityvitals sets it itself")
        return value

    def client_config(self, **extra) -> dict:
        """The librdkafka configuration for one client, extra settings last."""
        return {"bootstrap.servers": self.bootstrap_servers, **self.client, **extra}


#: Environment variables starting with this set single settings (see :func:`load_flow_config`).
ENV_PREFIX = "CITYVITALS__"


class FlowConfig(BaseModel):
    """The Kafka flow's settings: a ``pipeline`` and a ``kafka`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Nested settings from ``CITYVITALS__SECTION__KEY=value`` variables, and their names.

    Values are read as YAML scalars (``4``, ``true``, ``30s``). Under
    ``kafka.client``, underscores become dots: ``..._CLIENT__SECURITY_PROTOCOL``
    sets librdkafka's ``security.protocol``.

    >>> data, names = _env_overrides({"CITYVITALS__KAFKA__STOP_AT_END": "true",
    ...     "CITYVITALS__KAFKA__CLIENT__CLIENT_ID": "district-7", "HOME": "/root"})
    >>> data
    {'kafka': {'client': {'client.id': 'district-7'}, 'stop_at_end': True}}
    >>> names["kafka.stop_at_end"]
    'CITYVITALS__KAFKA__STOP_AT_END'
    """
    out: dict[str, Any] = {}
    names: dict[str, str] = {}
    for name, text in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        path = [p.lower() for p in name.removeprefix(ENV_PREFIX).split("__")]
        if path[:2] == ["kafka", "client"] and len(path) == 3:
            path[2] = path[2].replace("_", ".")
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = yaml.safe_load(text) if text.strip() else text
        names[".".join(path)] = name
    return out, names


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_flow_config(environ: Mapping[str, str]) -> FlowConfig:
    """Settings from the YAML file named by ``CITYVITALS_CONFIG`` (if any), then the environment.

    ``KAFKA_BOOTSTRAP_SERVERS`` sets ``kafka.bootstrap_servers``;
    ``CITYVITALS__<SECTION>__<KEY>`` variables set any other key and win
    over the file. Errors name the file and line, or the variable.

    >>> load_flow_config({"CITYVITALS__PIPELINE__SHARDS": "8"}).pipeline.shards
    8
    >>> try:
    ...     load_flow_config({"CITYVITALS__KAFKA__MAX_POLL": "0"})
    ... except ConfigError as e:
    ...     print(e.problems[0].split(", expected")[0])
    CITYVITALS__KAFKA__MAX_POLL: kafka.max_poll: got 0
    """
    path = environ.get("CITYVITALS_CONFIG")
    config = load_model(path, FlowConfig) if path else FlowConfig()
    overrides, names = _env_overrides(environ)
    if environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        names.setdefault("kafka.bootstrap_servers", "KAFKA_BOOTSTRAP_SERVERS")
        overrides = _merge(
            {"kafka": {"bootstrap_servers": environ["KAFKA_BOOTSTRAP_SERVERS"]}}, overrides
        )
    if not overrides:
        return config
    data = _merge(config.model_dump(exclude_unset=True), overrides)
    try:
        return validate_data(data, FlowConfig, "environment")
    except ConfigError as exc:
        problems = []
        for problem in exc.problems:
            key = problem.removeprefix("environment: ").split(":", 1)[0]
            var = next((v for k, v in names.items() if key == k or key.startswith(k + ".")), None)
            problems.append(problem.replace("environment", var or "environment", 1))
        raise ConfigError("environment", problems) from None


def recovery_requested(argv: list[str], environ: Mapping[str, str]) -> bool:
    """Whether ``python -m bytewax.run`` was asked for recovery (``-r`` or its variable).

    >>> recovery_requested(["bytewax.run", "flows.city_kafka", "-r", "rec"], {})
    True
    >>> recovery_requested(["x"], {"BYTEWAX_RECOVERY_DIRECTORY": "rec"})
    True
    """
    flags = ("-r", "--recovery-directory")
    return bool(environ.get("BYTEWAX_RECOVERY_DIRECTORY")) or any(
        a in flags or a.startswith("--recovery-directory=") for a in argv
    )
