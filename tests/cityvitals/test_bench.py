"""``cityvitals bench`` runs end to end on a small input and writes every required key."""

from __future__ import annotations

import orjson
import pytest
from click.testing import CliRunner

from cityvitals.bench import REQUIRED_KEYS
from cityvitals.cli import main


def test_bench_writes_every_required_key(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner(env={"KAFKA_BOOTSTRAP_SERVERS": ""}).invoke(
        main,
        ["bench", "--events", "5000", "--devices", "200", "--json", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "flow / naive" in result.output
    report = orjson.loads(out.read_bytes())
    for key in REQUIRED_KEYS:
        assert key in report, key
    assert report["events"] == 5000
    for key in (
        "flow_events_per_s",
        "naive_events_per_s",
        "polars_batch_events_per_s",
        "duckdb_batch_events_per_s",
        "peak_rss_mb",
    ):
        assert isinstance(report[key], float) and report[key] > 0, key
    assert report["kafka_flow_events_per_s"] is None
    # Every engine's CPU seconds; the flow's ceiling is its events over its CPU per core.
    for name in ("flow", "flow_subset", "naive", "polars", "duckdb"):
        engine = report["engines"][name]
        assert 0 < engine["cpu_s"] <= engine["seconds"] * report["host"]["cpus"] * 1.05, name
    flow = report["engines"]["flow"]
    ceiling = flow["events"] * report["host"]["cpus"] / flow["cpu_s"]
    assert report["flow_ceiling_events_per_s"] == pytest.approx(ceiling)
    assert "cores busy" in result.output and "spread over all" in result.output
    for key in ("p50_latency_ms", "p99_latency_ms"):
        assert report[key] is None or isinstance(report[key], float)


def test_bench_with_a_broker_reads_every_event_through_kafka(kafka_bootstrap, tmp_path):
    """The Kafka row: the flow and its source alone each read the whole input from Kafka."""
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        main,
        ["bench", "--events", "3000", "--devices", "200", "--no-naive", "--json", str(out)],
        env={"KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    report = orjson.loads(out.read_bytes())
    kafka = report["engines"]["kafka"]
    assert kafka["events"] == 3000  # counted by the lake's ingest_batches
    assert kafka["source"]["events"] == 3000
    assert report["kafka_flow_events_per_s"] > 0
    assert report["kafka_source_events_per_s"] > report["kafka_flow_events_per_s"]
    assert 0 < kafka["startup_s"] < kafka["seconds"]  # the first record came in the run
    assert report["kafka_flow_startup_s"] == kafka["startup_s"]
    running = 3000 / (kafka["seconds"] - kafka["startup_s"])
    assert report["kafka_flow_running_events_per_s"] == pytest.approx(running)
    assert "its Kafka source alone" in result.output
    # The Kafka row's ceiling counts the machine's CPU (the broker's too), not the flow's alone.
    ceiling = 3000 * report["host"]["cpus"] / kafka["machine_cpu_s"]
    assert report["kafka_flow_ceiling_events_per_s"] == pytest.approx(ceiling)
    assert 0 < kafka["thread_cpu_s"] <= kafka["cpu_s"]
    assert f"after {kafka['startup_s']:.2f} s of start-up" in result.output


def test_sizes_report_time_per_event_and_memory_per_device():
    from cityvitals.bench import BenchSettings, run_sizes

    rows = run_sizes([2000], [200], BenchSettings(devices=200), say=lambda _: None)
    assert [(r["events"], r["devices"]) for r in rows] == [(2000, 200), (1200, 200)]
    for r in rows:
        assert r["us_per_event"] > 0 and r["peak_rss_mb"] > 0 and r["rss_kb_per_device"] > 0


def test_views_part_times_every_view_on_a_synthetic_lake(tmp_path):
    from cityvitals.lakebench import QUERIES

    out = tmp_path / "views.json"
    result = CliRunner().invoke(
        main,
        ["bench", "--lake-rows", "150000", "--views-only", "--json", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    views = orjson.loads(out.read_bytes())["views"]
    assert views["lake_rows"] == 150_000
    assert set(views["timings"]) == set(QUERIES)
    for name, t in views["timings"].items():
        assert 0 < t["best_s"] <= t["first_s"], name
        assert t["rows"] > 0, name
        assert name in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--devices", "100"], "Scenario.devices must be an int >= 200, got 100"),
        (["--events", "0"], "Invalid value for '--events': 0 is not in the range x>=1"),
        (["--tick", "0"], "Invalid value for '--tick': 0.0 is not in the range x>0"),
        (["--rate", "inf"], "expected a finite number of events per second, got inf"),
    ],
)
def test_bad_options_stop_before_any_run_with_one_message(args, message):
    result = CliRunner(env={"KAFKA_BOOTSTRAP_SERVERS": ""}).invoke(main, ["bench", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output and "generating" not in result.output


def test_views_only_needs_lake_rows():
    result = CliRunner().invoke(main, ["bench", "--views-only"])
    assert result.exit_code == 2
    assert "--views-only needs --lake-rows N" in result.output
