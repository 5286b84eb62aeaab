"""The city flow wired in Bytewax: sharding, lateness, and the bytewax.run entry point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import polars as pl
from bytewax.testing import run_main
from polars.testing import assert_frame_equal

from cityvitals.lake import Lake
from cityvitals.simulate import Scenario, write_jsonl
from flows.city import _Ingest, build
from flows.config import PipelineConfig
from flows.sources import JsonLinesSource
from indicators.definitions import load_catalog
from schemas.decode import Decoder, RawBatch


def _run(path, out, **settings) -> Lake:
    config = PipelineConfig(out=out, **settings)
    run_main(build(JsonLinesSource(path, config.batch_size), config))
    return Lake(out)


def _table(lake: Lake, sql: str) -> pl.DataFrame:
    return pl.from_arrow(lake.connect().sql(sql).to_arrow_table())


def test_results_do_not_depend_on_shards_or_batch_size(tmp_path):
    path = tmp_path / "in.jsonl"
    write_jsonl(Scenario(devices=200, minutes=120, seed=5), path)
    a = _run(path, tmp_path / "a", shards=1, batch_size=50_000)
    b = _run(path, tmp_path / "b", shards=5, batch_size=997)
    values = (
        "SELECT indicator_id, entity_id, window_start, value, samples, level "
        "FROM indicator_values ORDER BY ALL"
    )
    va, vb = _table(a, values), _table(b, values)
    assert va.height > 10_000
    # Sums merge in another order with other batches: equal up to float rounding.
    assert_frame_equal(va, vb, check_exact=False, rel_tol=1e-9)
    breaches = (
        "SELECT alert_id, sequence, state, severity, value, event_ts FROM breaches ORDER BY ALL"
    )
    assert _table(a, breaches).equals(_table(b, breaches))


def _reading(ts: str, value: float, site: str = "flat-1") -> bytes:
    return orjson.dumps(
        {
            "family": "reading",
            "ts": ts,
            "device_id": f"t-{site}",
            "device_type": "temperature_sensor",
            "metric": "temperature",
            "value": value,
            "site_id": site,
            "grid_id": "D01-G01",
            "district_id": "D01",
        }
    )


def test_out_of_order_within_lateness_counts_and_later_is_a_dead_letter(tmp_path):
    lines = [
        _reading("2026-05-12T06:00:10Z", 20.0),
        _reading("2026-05-12T06:01:20Z", 21.0),
        _reading("2026-05-12T06:00:55Z", 50.0),  # 25 s behind the latest: still on time
        _reading("2026-05-12T06:03:00Z", 22.0),
        _reading("2026-05-12T06:00:30Z", 99.0),  # 150 s behind: late
        _reading("2026-05-12T06:04:10Z", 23.0),
    ]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    lake = _run(path, tmp_path / "out", batch_size=1, allowed_lateness="30s")
    first = _table(
        lake,
        "SELECT value, samples FROM indicator_values WHERE indicator_id = 'fire.temperature' "
        "ORDER BY window_start LIMIT 1",
    )
    assert first.rows() == [(50.0, 2)]  # the out-of-order 50 °C made it in, the late 99 did not
    dead = _table(lake, 'SELECT reason, "offset", raw, detail FROM dead_letters')
    assert dead["reason"].to_list() == ["late_event"]
    assert dead["offset"].to_list() == [4]
    assert dead["raw"].to_list() == [lines[4]]
    assert "behind the watermark" in dead["detail"][0]


def _file_flow_env(path: Path, out: Path, **settings: str) -> dict[str, str]:
    """The environment of ``python -m bytewax.run flows.city`` on ``path`` into ``out``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CITYVITALS", "BYTEWAX_"))}
    env |= {"CITYVITALS_INPUT": str(path), "CITYVITALS_OUT": str(out)}
    return env | {"CITYVITALS__METRICS__PORT": "0"} | settings  # any free port: side by side


def _file_flow(path: Path, out: Path, **settings: str) -> subprocess.CompletedProcess:
    """``python -m bytewax.run flows.city`` on ``path`` into ``out``, run to its end."""
    return subprocess.run(
        [sys.executable, "-m", "bytewax.run", "flows.city"],
        env=_file_flow_env(path, out, **settings),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_bytewax_run_entry_point(tmp_path):
    """The file flow takes the settings the Kafka flow takes, and logs as it does."""
    path = tmp_path / "in.jsonl"
    n = write_jsonl(Scenario(devices=200, minutes=60, seed=2), path)
    image = tmp_path / "image-default"  # what an image's environment sets: CITYVITALS_OUT wins
    run = _file_flow(
        path,
        tmp_path / "out",
        CITYVITALS__PIPELINE__BATCH_SIZE="1000",
        CITYVITALS__PIPELINE__OUT=str(image),
    )
    assert run.returncode == 0, run.stderr
    assert not image.exists()
    lake = Lake(tmp_path / "out").connect()
    events, batches = lake.execute("SELECT sum(events_in), count(*) FROM ingest_batches").fetchone()
    assert events == n
    assert batches == -(-n // 1000)  # batches of pipeline.batch_size lines
    logged = [orjson.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    messages = [record["message"] for record in logged]
    assert messages[:2] == ["start", "configuration"] and messages[-1] == "stop"
    config = logged[1]["config"]["pipeline"]
    assert config["batch_size"] == 1000 and config["out"] == str(tmp_path / "out")


def test_bytewax_run_entry_point_names_a_bad_setting(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"")
    run = _file_flow(path, tmp_path / "out", CITYVITALS__PIPELINE__BATCH_SIZE="0")
    assert run.returncode == 2
    assert "CITYVITALS__PIPELINE__BATCH_SIZE: pipeline.batch_size: got 0" in run.stderr
    assert "Traceback" not in run.stderr


def test_bytewax_run_entry_point_refuses_recovery_without_a_store(tmp_path):
    """Recovery is -r's to turn on: set in the settings alone, every start would replace the
    files of the one before, so the start is refused and the earlier output stays."""
    path = tmp_path / "in.jsonl"
    write_jsonl(Scenario(devices=200, minutes=60, seed=2), path)
    out = tmp_path / "out"
    assert _file_flow(path, out).returncode == 0
    before = sorted(out.glob("lake/*/*/*.parquet"))
    run = _file_flow(path, out, CITYVITALS__PIPELINE__RECOVERY="true")
    assert run.returncode == 2
    assert "pipeline.recovery: got true, expected it unset" in run.stderr
    assert "Traceback" not in run.stderr
    assert sorted(out.glob("lake/*/*/*.parquet")) == before and before


def test_an_idleness_tick_moves_the_partition_watermark_and_later_older_events_are_late():
    now = datetime(2026, 5, 12, 7, 0, tzinfo=UTC)
    config = PipelineConfig(allowed_lateness=timedelta(seconds=30))
    decoder = Decoder(now=lambda: now)
    step = _Ingest(decoder.now, load_catalog(), config)

    def ingest(clock, batch):
        return step(clock, (batch, decoder.decode(batch)))

    clock, first = ingest(None, RawBatch("p", 0, 0, [_reading("2026-05-12T06:00:00Z", 20.0)]))
    assert first.watermark_us == int(datetime(2026, 5, 12, 5, 59, 30, tzinfo=UTC).timestamp() * 1e6)

    quiet = datetime(2026, 5, 12, 6, 10, tzinfo=UTC)
    clock, tick = ingest(clock, RawBatch("p", 0, 1, [], idle_until=quiet))
    assert tick.decoded.events_in == 0
    assert tick.watermark_us == int((quiet - timedelta(seconds=30)).timestamp() * 1e6)

    _, after = ingest(clock, RawBatch("p", 0, 1, [_reading("2026-05-12T06:05:00Z", 99.0)]))
    assert after.decoded.dead["reason"].to_list() == ["late_event"]


def test_a_series_that_falls_silent_is_alerted_by_the_flow_in_event_time(tmp_path):
    """The watermark reaches the thresholds step even when no window of the silent series closes."""
    from thresholds.rules import Rule, RuleSet

    t0 = datetime(2026, 5, 12, 6, tzinfo=UTC)
    lines = []
    for minute in range(40):
        ts = (t0 + timedelta(minutes=minute, seconds=5)).isoformat().replace("+00:00", "Z")
        lines.append(_reading(ts, 21.0, "flat-2"))
        if minute < 5:  # flat-1 goes quiet after 06:05
            lines.append(_reading(ts, 20.0, "flat-1"))
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    rules = RuleSet(
        rules=[
            Rule.model_validate(
                {
                    "id": "flat.silent",
                    "indicator": "fire.temperature",
                    "direction": "above",
                    "levels": {"red": 70},
                    "no_data": {"after": "10m", "action": "alert", "severity": "orange"},
                }
            )
        ]
    )
    config = PipelineConfig(out=tmp_path / "out", batch_size=7, allowed_lateness="30s")
    run_main(build(JsonLinesSource(path, config.batch_size), config, rules=rules))
    got = _table(
        Lake(tmp_path / "out"),
        "SELECT entity_id, state, severity, measure, bound, first_ts, event_ts FROM breaches",
    )
    assert got.rows() == [
        (
            "flat-1",
            "opened",
            "orange",
            "no_data",
            None,
            t0 + timedelta(minutes=5),
            t0 + timedelta(minutes=15),
        )
    ]


def test_keyed_steps_snapshot_their_state_only_when_the_flow_recovers():
    """Without recovery Bytewax drops every snapshot: pickling a whole shard would be waste."""
    import pickle

    from flows.city import _restore, _Windows
    from indicators.windows import WindowStore

    store = WindowStore(load_catalog(), ["p0"])
    assert _Windows(store, recovery=False).snapshot() == b""
    snapshot = _Windows(store, recovery=True).snapshot()
    restored = _restore(snapshot, load_catalog(), ["p1"])
    assert isinstance(restored, WindowStore) and restored.partitions == ["p0"]
    plain = pickle.dumps(store, protocol=pickle.HIGHEST_PROTOCOL)
    assert len(snapshot) < len(plain) / 2  # compressed
    assert _restore(plain, load_catalog(), ["p1"]).partitions == ["p0"]  # an older snapshot


def test_an_empty_snapshot_stops_the_resume_instead_of_starting_fresh():
    """Written while Bytewax recovered but pipeline.recovery was off: the state is not in it."""
    import pytest

    from flows.city import EmptySnapshotError, _restore

    with pytest.raises(EmptySnapshotError, match="windows: the recovery store holds an empty"):
        _restore(b"", load_catalog(), ["p0"])
    assert _restore(None, load_catalog(), ["p0"]).partitions == ["p0"]


def test_bytewax_run_entry_point_stops_cleanly_on_sigterm(tmp_path):
    """SIGTERM ends the file flow as ``cityvitals run``'s: what was read is written, open
    windows stay open (no end-of-input flush), and the process exits 0.

    The input is a FIFO held open by the test, so the flow cannot reach its end before the
    signal: it has read every line written and waits for more when SIGTERM comes.
    """
    path = tmp_path / "in.jsonl"
    n = write_jsonl(Scenario(devices=200, minutes=60, seed=2), path)
    whole = _run(path, tmp_path / "whole")  # the same input to its end, in process
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    env = _file_flow_env(fifo, out)
    log = tmp_path / "flow.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", "flows.city"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        with fifo.open("wb") as writer:  # opens once the flow opened it: handlers are set
            writer.write(path.read_bytes())
            writer.flush()
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    lake = Lake(out)
    assert lake.connect().execute("SELECT sum(events_in) FROM ingest_batches").fetchone()[0] == n
    count = "SELECT count(*) FROM indicator_values"
    stopped, ended = lake.connect().execute(count).fetchone()[0], whole.connect().execute(count)
    assert 0 < stopped < ended.fetchone()[0]  # the windows still open were not flushed
