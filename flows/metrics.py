"""The flow's Prometheus metrics (all named ``cityvitals_*``) and their endpoint.

Every metric is defined here; the flow steps call the ``observe_*`` functions
once per batch (never per event), so counting costs a few dictionary updates
per batch.

=====================================  =============================================
``cityvitals_events_in_total``         valid input events, by ``family``
``cityvitals_dead_letters_total``      rejected records, by ``reason``
``cityvitals_breaches_total``          breach state changes, by ``severity``, ``state``
``cityvitals_window_lag_seconds``      wall clock minus a shard's watermark, by ``shard``
``cityvitals_ingest_to_breach_seconds``  from the decoding of the batch that closed the
                                       window to the breach record's ``emitted_at``
``cityvitals_sink_write_seconds``      one lake write (Parquet files), by ``table``
``cityvitals_sink_rows_total``         rows a lake sink received, by ``table``
=====================================  =============================================

Bytewax's own metrics (``bytewax_*``: per-step batch durations, item counts,
snapshot times) exist only on Bytewax's Dataflow API server
(``BYTEWAX_DATAFLOW_API_ENABLED``), which always binds all interfaces. With
``metrics.bytewax_port`` set, :func:`serve` starts that server on that port
(plus the process id) and re-exports its ``bytewax_*`` metrics on this
endpoint, read over loopback at each scrape.

>>> from prometheus_client import generate_latest
>>> observe_sink("breaches", 3, 0.01)
>>> b'cityvitals_sink_rows_total{table="breaches"}' in generate_latest()
True
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import urllib.request
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from datetime import datetime

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from cityvitals.yamlconf import ConfigError
from flows.config import MetricsConfig

__all__ = [
    "BREACHES",
    "DEAD_LETTERS",
    "EVENTS_IN",
    "INGEST_TO_BREACH",
    "SINK_ROWS",
    "SINK_WRITE",
    "WINDOW_LAG",
    "BytewaxMetrics",
    "observe_batch",
    "observe_breaches",
    "observe_sink",
    "observe_watermark",
    "serve",
]

log = logging.getLogger("cityvitals.metrics")

EVENTS_IN = Counter("cityvitals_events_in", "Valid input events, by family.", ["family"])
DEAD_LETTERS = Counter(
    "cityvitals_dead_letters", "Input records turned into dead letters, by reason.", ["reason"]
)
BREACHES = Counter(
    "cityvitals_breaches",
    "Breach state changes emitted, by severity and state.",
    ["severity", "state"],
)
WINDOW_LAG = Gauge(
    "cityvitals_window_lag_seconds",
    "Wall clock minus the shard's event-time watermark (how far window closing lags).",
    ["shard"],
)
INGEST_TO_BREACH = Histogram(
    "cityvitals_ingest_to_breach_seconds",
    "From the decoding of the batch that closed a window to its breach record's emission.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
SINK_WRITE = Histogram(
    "cityvitals_sink_write_seconds",
    "Time of one lake write (its Parquet files), by table.",
    ["table"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SINK_ROWS = Counter("cityvitals_sink_rows", "Rows a lake sink received, by table.", ["table"])


def observe_batch(frames: dict, dead_reasons: Iterable[str]) -> None:
    """Count one decoded batch: its valid frames per family and its dead letters' reasons."""
    for family, frame in frames.items():
        if frame.height:
            EVENTS_IN.labels(family).inc(frame.height)
    for reason, n in Tally(dead_reasons).items():
        DEAD_LETTERS.labels(reason).inc(n)


def observe_watermark(_step: str, item: tuple[str, object]) -> None:
    """An ``op.inspect`` of ``(shard, Closed)``: the shard's window lag behind the wall clock."""
    shard, closed = item
    mark: datetime | None = closed.watermark
    if mark is not None:
        WINDOW_LAG.labels(shard).set(time.time() - mark.timestamp())


def observe_breaches(records: list[dict], ingested_at: float | None) -> None:
    """Count breach records and time them from the ingest of the batch that caused them."""
    for r in records:
        BREACHES.labels(r["severity"], r["state"]).inc()
        if ingested_at is not None:
            INGEST_TO_BREACH.observe(max(0.0, r["emitted_at"].timestamp() - ingested_at))


def observe_sink(table: str, rows: int, seconds: float) -> None:
    """One lake write of ``rows`` rows that took ``seconds``."""
    SINK_ROWS.labels(table).inc(rows)
    SINK_WRITE.labels(table).observe(seconds)


class BytewaxMetrics(Collector):
    """Bytewax's own ``bytewax_*`` metrics, read from its Dataflow API server at each scrape."""

    def __init__(self, url: str) -> None:
        self.url = url

    def collect(self) -> Iterator[Metric]:
        try:
            with urllib.request.urlopen(self.url, timeout=2) as response:
                text = response.read().decode("utf-8")
        except OSError:  # not up yet, or gone: this scrape has our metrics only
            return
        for family in text_string_to_metric_families(text):
            if family.name.startswith("bytewax_"):
                yield family


class _Both(Collector):
    """Another registry's metrics, as one collector of the served registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()


def serve(config: MetricsConfig, process: int) -> tuple[str, int] | None:
    """Start this process's endpoint (a daemon thread); return its address, None if disabled.

    Must run before Bytewax starts (the flow module's import) for Bytewax's
    server to see its settings.
    """
    if not config.enabled:
        return None
    # Served: the default registry (ours; Bytewax's server shows it too) and Bytewax's.
    # BytewaxMetrics must stay out of the default registry, or each server would ask the other.
    served = CollectorRegistry(auto_describe=False)
    served.register(_Both(REGISTRY))
    if config.bytewax_port is not None:
        port = config.bytewax_port + process
        os.environ["BYTEWAX_DATAFLOW_API_ENABLED"] = "true"
        os.environ["BYTEWAX_DATAFLOW_API_PORT"] = str(port)
        # The directory the server writes dataflow.json to (Bytewax's default: the working one)
        if "BYTEWAX_DATAFLOW_API_CACHE_PATH" not in os.environ:
            cache = tempfile.mkdtemp(prefix="cityvitals-bytewax-")
            os.environ["BYTEWAX_DATAFLOW_API_CACHE_PATH"] = cache
        served.register(BytewaxMetrics(f"http://127.0.0.1:{port}/metrics"))
    try:
        server, _ = start_http_server(config.port_of(process), addr=config.host, registry=served)
    except OSError as exc:
        raise ConfigError(
            "metrics",
            [
                f"metrics.port: got {config.port}, expected a free port on {config.host} for "
                f"process {process} (it serves on port + {process}): {exc.strerror}"
            ],
        ) from None
    host, port = server.server_address[:2]
    log.info(
        "metrics endpoint",
        extra={"url": f"http://{host}:{port}/metrics", "process_id": process, "port": port},
    )
    return host, port
