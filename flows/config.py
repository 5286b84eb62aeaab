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

import argparse
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from cityvitals.yamlconf import (
    ConfigError,
    Duration,
    KeyedProblems,
    load_model,
    secret_name,
    validate_data,
)
from indicators.definitions import DEFAULT_CATALOG
from thresholds.risk_points import DEFAULT_RISK_POINTS
from thresholds.rules import DEFAULT_RULES

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "ENV_PREFIX",
    "ConfigError",
    "FlowConfig",
    "KafkaConfig",
    "KafkaTopics",
    "LoggingConfig",
    "MetricsConfig",
    "PathsConfig",
    "PipelineConfig",
    "RecoveryConfig",
    "cluster_workers",
    "load_flow_config",
    "process_id",
    "recovery_requested",
]


#: Lines per batch of a file source. Every batch pays a fixed cost per query of the flow's
#: steps, so bigger batches are cheaper per line: on the bench's input, 50,000-line batches
#: ran 1.6–1.9× faster than 10,000-line ones (BENCHMARKS.md); a batch is ~9 MB of JSON.
DEFAULT_BATCH_SIZE = 50_000


class PipelineConfig(BaseModel):
    """Everything a run of the city flow needs besides its source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    out: Path = Field(default=Path("data"), description="Output directory (lake + DuckDB).")
    batch_size: int = Field(
        default=DEFAULT_BATCH_SIZE,
        ge=1,
        le=1_000_000,
        description=(
            "Lines per batch read from a file (Kafka: kafka.max_poll per partition), and the "
            "most lines decoded together."
        ),
    )
    allowed_lateness: Duration = Field(
        default=timedelta(seconds=30),
        description="How far behind the latest event time an event may arrive and still count.",
    )
    shards: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description=(
            "Keyed state shards, at least the total worker count; unset: one per worker of "
            "the cluster (kept across resumes)."
        ),
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

    @property
    def shard_count(self) -> int:
        """``shards``, or 1 when unset: a lone worker's (``run_main``); the ``bytewax.run``
        entry points set ``shards`` to the cluster's worker count before building.

        >>> PipelineConfig().shard_count, PipelineConfig(shards=4).shard_count
        (1, 4)
        """
        return self.shards or 1

    @classmethod
    def from_mapping(cls, data: dict[str, Any], source: str = "configuration") -> PipelineConfig:
        """Validate settings from flags or environment, naming every bad key."""
        return validate_data(data, cls, source)


#: librdkafka settings the flow sets itself; configuration may not override them.
_OWNED = frozenset({"bootstrap.servers", "enable.auto.commit", "enable.partition.eof", "group.id"})

#: The maps of librdkafka settings passed through: to every client, the consumers, the producers.
_CLIENT_MAPS = ("client", "consumer", "producer")


def _masked(settings: dict) -> dict:
    """``settings`` with the values of keys that look secret masked."""
    return {k: "**********" if secret_name(k) else v for k, v in settings.items()}


#: Typed security settings and the librdkafka keys they set (``client`` may not repeat these).
_TYPED = {
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_username": "sasl.username",
    "sasl_password": "sasl.password",
    "ssl_ca_location": "ssl.ca.location",
    "ssl_certificate_location": "ssl.certificate.location",
    "ssl_key_location": "ssl.key.location",
    "ssl_key_password": "ssl.key.password",
}


def _secret_text(value: Any) -> Any:
    """A password must be text: YAML reads ``0123`` as 83 and ``1e3`` as 1000.0, so a number
    from the file could only be turned back into the wrong password."""
    if isinstance(value, int | float | bool):
        raise ValueError("expected text: quote the password in the YAML file ('...')")
    return value


Secret = Annotated[SecretStr, BeforeValidator(_secret_text)]


def _topic_name(value: Any) -> Any:
    """Kafka's own rule for topic names; they also become file names under the lake."""
    if isinstance(value, str) and (value in (".", "..") or not _TOPIC.fullmatch(value)):
        raise ValueError("expected a Kafka topic name: 1-249 of a-z A-Z 0-9 . _ -, not . or ..")
    return value


_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
Topic = Annotated[str, BeforeValidator(_topic_name)]


class KafkaTopics(BaseModel):
    """Topic names: the four input families and the three outputs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    readings: Topic = Field(default="city.readings")
    heartbeats: Topic = Field(default="city.heartbeats")
    gates: Topic = Field(default="city.gates")
    workorders: Topic = Field(default="city.workorders")
    breaches: Topic = Field(default="city.breaches")
    deadletter: Topic = Field(default="city.deadletter")
    indicators: Topic | None = Field(
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

    Security has typed fields (``security_protocol``, ``sasl_*``, ``ssl_*``),
    mapped to librdkafka's keys; the two secrets are :class:`~pydantic.SecretStr`,
    so they never show in a repr, a log line or an error message. ``client`` is
    passed to librdkafka unchanged for anything else (client id, timeouts, ...):
    see librdkafka's CONFIGURATION.md. ``consumer`` and ``producer`` are the same
    for the consumers (fetch sizes ...) or the producers (batching ...) alone, after
    ``client``: a consumer-only key in ``client`` makes every producer warn.

    >>> k = KafkaConfig(client={"client.id": "d7"}, consumer={"fetch.max.bytes": 1 << 20})
    >>> k.client_config("consumer")["fetch.max.bytes"], "fetch.max.bytes" in k.client_config()
    (1048576, False)

    >>> k = KafkaConfig(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
    ...     sasl_username="cv", sasl_password="hunter2")
    >>> "hunter2" in repr(k), k.client_config()["sasl.password"]
    (False, 'hunter2')
    >>> try:
    ...     validate_data({"client": {"sasl.password": "x"}}, KafkaConfig, "env")
    ... except ConfigError as e:
    ...     print(e.problems[0])
    env: client: expected no 'sasl.password': set kafka.sasl_password instead
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    bootstrap_servers: str = Field(default="127.0.0.1:9092", min_length=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = Field(
        default=None, description="librdkafka security.protocol; unset: PLAINTEXT."
    )
    sasl_mechanism: (
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER"] | None
    ) = Field(default=None, description="librdkafka sasl.mechanism.")
    sasl_username: str | None = Field(default=None, min_length=1)
    sasl_password: Secret | None = Field(default=None, description="Never printed.")
    ssl_ca_location: Path | None = Field(default=None, description="CA certificate (PEM).")
    ssl_certificate_location: Path | None = Field(default=None, description="Client certificate.")
    ssl_key_location: Path | None = Field(default=None, description="Client private key.")
    ssl_key_password: Secret | None = Field(default=None, description="Never printed.")
    client: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Other librdkafka settings for every client (client id, timeouts, ...).",
    )
    consumer: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="librdkafka settings for the consumers only (fetch sizes, ...).",
    )
    producer: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="librdkafka settings for the producers only (batching, ...).",
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

    @field_validator(*_CLIENT_MAPS)
    @classmethod
    def _not_owned(cls, value: dict) -> dict:
        for key in sorted(value):
            if key in _OWNED:
                raise ValueError(f"expected no {key!r}: cityvitals sets it itself")
            typed = next((f for f, k in _TYPED.items() if k == key), None)
            if typed:
                raise ValueError(f"expected no {key!r}: set kafka.{typed} instead")
        return value

    @model_validator(mode="after")
    def _sasl_needs_sasl_protocol(self) -> KafkaConfig:
        sasl = self.sasl_mechanism or self.sasl_username or self.sasl_password
        if sasl and not (self.security_protocol or "").startswith("SASL_"):
            got = self.security_protocol
            raise KeyedProblems(
                [
                    (
                        ("security_protocol",),
                        f"got {got!r}, expected SASL_SSL or SASL_PLAINTEXT with sasl_* settings",
                    )
                ]
            )
        return self

    def __repr_args__(self):
        """The repr, with librdkafka values whose key looks secret masked too."""
        for name, value in super().__repr_args__():
            if name in _CLIENT_MAPS:
                value = _masked(value)
            yield name, value

    def client_config(
        self, role: Literal["admin", "consumer", "producer"] = "admin", **extra
    ) -> dict:
        """The librdkafka configuration for one client of ``role``: the typed settings,
        ``client``, the role's own map (none for an admin client), then ``extra``."""
        typed = {}
        for field, key in _TYPED.items():
            value = getattr(self, field)
            if value is not None:
                typed[key] = (
                    value.get_secret_value() if isinstance(value, SecretStr) else str(value)
                )
        own = {"consumer": self.consumer, "producer": self.producer}.get(role, {})
        return {
            "bootstrap.servers": self.bootstrap_servers,
            **typed,
            **self.client,
            **own,
            **extra,
        }


#: Environment variables starting with this set single settings (see :func:`load_flow_config`).
ENV_PREFIX = "CITYVITALS__"


class MetricsConfig(BaseModel):
    """The Prometheus endpoint (``/metrics``) of each flow process.

    >>> MetricsConfig(port=9464).port_of(2)
    9466
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="Serve /metrics.")
    host: Literal["127.0.0.1", "::1", "localhost", "0.0.0.0", "::"] = Field(
        default="127.0.0.1",
        description="Interface to bind; all interfaces (0.0.0.0) only inside a container.",
    )
    port: int = Field(
        default=9464,
        ge=0,
        le=65535,
        description="Port of process 0; process i of a cluster serves on port + i. 0: any free.",
    )
    bytewax_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description=(
            "Also start Bytewax's own Dataflow API server on this port (+ process id) and "
            "re-export its bytewax_* metrics here. Bytewax binds it on ALL interfaces."
        ),
    )

    def port_of(self, process: int) -> int:
        """The port process ``process`` serves on (0 stays 0: any free port)."""
        return self.port + process if self.port else 0


class LoggingConfig(BaseModel):
    """Log lines of the ``cityvitals`` and ``flows`` loggers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["json", "text"] = Field(default="json", description="One JSON object per line.")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO")


class RecoveryConfig(BaseModel):
    """Bytewax recovery: pass the same values as ``-r``, ``-s`` and ``-b`` to bytewax.run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    directory: Path | None = Field(default=None, description="Recovery store (-r).")
    partitions: int = Field(default=1, ge=1, le=4096, description="Store partitions to create.")
    snapshot_interval: Duration = Field(
        default=timedelta(seconds=10), description="Time between snapshots (-s)."
    )
    backup_interval: Duration = Field(
        default=timedelta(minutes=1), description="How long old snapshots are kept (-b)."
    )


class PathsConfig(BaseModel):
    """Where the flow may write."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: Path | None = Field(
        default=None,
        description=(
            "Every path the flow writes (pipeline.out, recovery.directory) must be inside "
            "this directory. Unset: any path without '..' parts."
        ),
    )


class FlowConfig(BaseModel):
    """The Kafka flow's settings, one section per concern.

    Written paths stay inside ``paths.root`` and never climb out with ``..``:

    >>> data = {"paths": {"root": "/srv/cv"}, "pipeline": {"out": "/etc"}}
    >>> try:
    ...     validate_data(data, FlowConfig, "cv.yaml")
    ... except ConfigError as e:
    ...     print(e.problems[0].split(" (")[0])
    cv.yaml: pipeline.out: got '/etc', expected a path inside paths.root '/srv/cv'
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    paths: PathsConfig = Field(default_factory=PathsConfig)

    @model_validator(mode="after")
    def _paths_inside_root(self) -> FlowConfig:
        problems = []
        for loc, path in (
            (("pipeline", "out"), self.pipeline.out),
            (("recovery", "directory"), self.recovery.directory),
        ):
            if path is not None and (why := _outside(path, self.paths.root)):
                problems.append((loc, f"got {str(path)!r}, expected {why}"))
        if problems:
            raise KeyedProblems(problems)
        return self

    def summary(self) -> dict[str, Any]:
        """Every setting as JSON-ready values, secrets masked: for the start log line."""
        data = self.model_dump(mode="json")
        for name in _CLIENT_MAPS:
            data["kafka"][name] = _masked(data["kafka"][name])
        return data


def _outside(path: Path, root: Path | None) -> str | None:
    """What is wrong with ``path`` as a place to write under ``root``; None if nothing.

    >>> _outside(Path("data/../../etc"), None)
    "a path without '..' parts"
    >>> _outside(Path("/srv/cv/data"), Path("/srv/cv")) is None
    True
    """
    if root is None:
        return "a path without '..' parts" if ".." in path.parts else None
    base = root.resolve()
    full = path.resolve()  # a relative path is opened from the working directory
    if full != base and base not in full.parents:
        return f"a path inside paths.root {str(root)!r}"
    return None


def _path_settings(model: type[BaseModel], at: tuple[str, ...] = ()) -> frozenset[tuple]:
    """Where ``model``'s settings that are paths are (``("pipeline", "out")``, ...).

    >>> ("pipeline", "out") in _path_settings(FlowConfig)
    True
    """
    found: set[tuple] = set()
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            found |= _path_settings(kind, (*at, name))
        elif Path in (kind, *get_args(kind)):
            found.add((*at, name))
    return frozenset(found)


#: The settings that are paths: read from the environment as text.
_PATH_SETTINGS = _path_settings(FlowConfig)


def _scalar(text: str) -> Any:
    """``text`` read as a YAML scalar, or as itself where YAML cannot read it (``@a``)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Nested settings from ``CITYVITALS__SECTION__KEY=value`` variables, and their names.

    Values are read as YAML scalars (``4``, ``true``, ``30s``), except paths and secrets,
    which are text as given (``2026``, ``out #1``), and values YAML cannot read, which are
    text too. Under ``kafka.client``, ``kafka.consumer`` and ``kafka.producer``,
    underscores become dots: ``..._CLIENT__SECURITY_PROTOCOL`` sets librdkafka's
    ``security.protocol``.

    >>> _env_overrides({"CITYVITALS__PIPELINE__OUT": "2026 #1", "CITYVITALS__X__Y": "@a"})[0]
    {'pipeline': {'out': '2026 #1'}, 'x': {'y': '@a'}}

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
        if path[0] == "kafka" and len(path) == 3 and path[1] in _CLIENT_MAPS:
            path[2] = path[2].replace("_", ".")
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        as_text = secret_name(path[-1]) or tuple(path) in _PATH_SETTINGS  # whatever they look like
        node[path[-1]] = text if as_text or not text.strip() else _scalar(text)
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


def _run_flags(argv: list[str]) -> argparse.Namespace:
    """The ``bytewax.run`` flags this module reads, in every form argparse takes (``-i 1``,
    ``-i1``, ``--process-id=1``); the others are left alone."""
    # Abbreviations as bytewax.run's own parser takes them (--recovery-dir is -r there too).
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    parser.add_argument("-i", "--process-id", type=int)
    parser.add_argument("-r", "--recovery-directory")
    parser.add_argument("-w", "--workers-per-process", type=int)
    parser.add_argument("-a", "--addresses")
    return parser.parse_known_args(argv[1:])[0]


def recovery_requested(argv: list[str], environ: Mapping[str, str]) -> bool:
    """Whether ``python -m bytewax.run`` was asked for recovery (``-r`` or its variable).

    >>> recovery_requested(["bytewax.run", "flows.city_kafka", "-r", "rec"], {})
    True
    >>> recovery_requested(["x"], {"BYTEWAX_RECOVERY_DIRECTORY": "rec"})
    True
    >>> recovery_requested(["bytewax.run", "flows.city_kafka", "--recovery-dir", "rec"], {})
    True
    >>> recovery_requested(["bytewax.run", "flows.city_kafka", "-w", "2"], {})
    False
    """
    flag = _run_flags(argv).recovery_directory
    return flag is not None or environ.get("BYTEWAX_RECOVERY_DIRECTORY") is not None


def process_id(argv: list[str], environ: Mapping[str, str]) -> int:
    """This process's id in a ``bytewax.run`` cluster (``-i``, or its variable); 0 alone.

    >>> process_id(["bytewax.run", "flows.city_kafka", "-i", "1", "-a", "a:1;b:2"], {})
    1
    >>> process_id(["bytewax.run", "flows.city_kafka", "-w2", "-i1"], {})
    1
    >>> process_id(["bytewax.run", "flows.city_kafka", "--process-id=2"], {})
    2
    >>> process_id(["x"], {"BYTEWAX_PROCESS_ID": "3"}), process_id(["x"], {})
    (3, 0)
    """
    given = _run_flags(argv).process_id
    return given if given is not None else int(environ.get("BYTEWAX_PROCESS_ID") or 0)


def cluster_workers(argv: list[str], environ: Mapping[str, str]) -> int:
    """Total workers of a ``bytewax.run`` cluster: workers per process (``-w``) × processes
    (the ``-a`` addresses, or the hostfile Bytewax reads); 1 for a lone worker.

    >>> cluster_workers(["bytewax.run", "flows.city", "-w", "2", "-i", "0", "-a", "a:1;b:2"], {})
    4
    >>> cluster_workers(["bytewax.run", "flows.city_kafka", "-w3"], {})
    3
    >>> cluster_workers(["bytewax.run", "flows.city_kafka", "--workers", "2"], {})
    2
    >>> cluster_workers(["x"], {"BYTEWAX_WORKERS_PER_PROCESS": "2"}), cluster_workers(["x"], {})
    (2, 1)
    """
    flags = _run_flags(argv)
    per = flags.workers_per_process or int(environ.get("BYTEWAX_WORKERS_PER_PROCESS") or 1)
    addresses = flags.addresses or environ.get("BYTEWAX_ADDRESSES")
    hostfile = environ.get("BYTEWAX_HOSTFILE_PATH")
    clustered = flags.process_id is not None or environ.get("BYTEWAX_PROCESS_ID") is not None
    if not addresses and clustered and hostfile and Path(hostfile).is_file():
        addresses = ";".join(Path(hostfile).read_text().split())
    processes = len([a for a in (addresses or "").split(";") if a.strip()]) or 1
    return per * processes
