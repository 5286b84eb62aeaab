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

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cityvitals.yamlconf import ConfigError, Duration, validate_data
from indicators.definitions import DEFAULT_CATALOG
from thresholds.rules import DEFAULT_RULES

__all__ = ["ConfigError", "KafkaConfig", "KafkaTopics", "PipelineConfig"]


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
    catalog: Path = Field(default=DEFAULT_CATALOG, description="Indicator catalogue (YAML).")
    rules: Path = Field(default=DEFAULT_RULES, description="Threshold rules (YAML).")

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
