"""Operating the Kafka flow: its /metrics during a live run, its logs, SIGTERM, secrets.

The flow runs as users run it (``python -m bytewax.run flows.city_kafka``) on a
real broker, tailing its topics (no ``stop_at_end``) with a one-hour sink
flush interval, so rows reach the lake only through the SIGTERM that ends it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cityvitals.publish import publish
from cityvitals.simulate import Scenario, generate
from cityvitals.yamlconf import ConfigError
from flows.city_kafka import STATE_FILE
from tests.flows.test_city_kafka import ROOT, flow_env, kafka_config, read_topic

#: Two hours ending now: a live stream, whose quiet partitions soon stop holding windows open.
START = (datetime.now(UTC) - timedelta(minutes=125)).replace(second=0, microsecond=0)
SCENARIO = Scenario(devices=200, minutes=120, seed=5, bad_rate=0.01, start=START)
SECRET = "sasl-" + "9f3b" * 6


def scrape(url: str) -> dict[str, dict[tuple, float]]:
    """``name -> {labels: value}`` of every cityvitals_* sample at ``url``."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith(("cityvitals_", "bytewax_")):
                samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def log_records(log: Path) -> list[dict]:
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def wait_for(what, check, proc, log: Path, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"the flow ended early:\n{log.read_text()[-3000:]}"
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.3)


def per_label(samples: dict[tuple, float], *names: str) -> dict:
    out = {}
    for labels, value in samples.items():
        d = dict(labels)
        key = tuple(d[n] for n in names)
        out[key[0] if len(names) == 1 else key] = int(value)
    return out


@pytest.fixture(scope="module")
def run(kafka_bootstrap, tmp_path_factory):
    """One live run: published input, scraped while running, then SIGTERM."""
    tmp = tmp_path_factory.mktemp("ops")
    kafka = kafka_config(kafka_bootstrap, f"ops{time.monotonic_ns() % 10**8}.")
    stats = publish(generate(SCENARIO), kafka, partitions=2)
    out = tmp / "out"
    env = flow_env(kafka, out)
    del env["CITYVITALS__KAFKA__STOP_AT_END"]  # a live, tailing run
    env |= {
        "CITYVITALS__PIPELINE__FLUSH_INTERVAL": "1h",
        "CITYVITALS__KAFKA__IDLE_TIMEOUT": "5s",  # quiet partitions stop holding windows
        "CITYVITALS__METRICS__PORT": "0",  # any free port, read from the log
        "CITYVITALS__METRICS__BYTEWAX_PORT": str(_free_port()),
        "CITYVITALS__LOGGING__FORMAT": "json",
        "CITYVITALS__KAFKA__SSL_KEY_PASSWORD": SECRET,  # unused on PLAINTEXT, never shown
    }
    log = tmp / "flow.log"
    # -s without -r: Bytewax's epochs (at which sinks also flush) an hour apart; two
    # workers, and pipeline.shards unset: one shard per worker
    proc = subprocess.Popen(
        [sys.executable, "-m", "bytewax.run", "flows.city_kafka", "-s", "3600", "-w", "2"],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        url = wait_for(
            "no metrics endpoint",
            lambda: next(
                (r["url"] for r in log_records(log) if r["message"] == "metrics endpoint"), None
            ),
            proc,
            log,
        )

        def consumed():
            m = scrape(url)
            valid = sum(m.get("cityvitals_events_in_total", {}).values())
            dead = sum(m.get("cityvitals_dead_letters_total", {}).values())
            return m if valid + dead == stats.total else None

        wait_for("not every message consumed", consumed, proc, log)

        def caught_up():  # quiet partitions let the watermark reach the wall clock
            lags = scrape(url).get("cityvitals_window_lag_seconds", {})
            return len(lags) == 2 and max(lags.values()) < 300  # a lag per shard

        wait_for("windows did not catch up with the wall clock", caught_up, proc, log)
        before = _settled(url, proc, log)
        lake_before = _lake_rows(out)
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)  # the stacks, into the log
            time.sleep(2)
            pytest.fail(f"no exit 120 s after SIGTERM:\n{log.read_text()[-6000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
    return {
        "kafka": kafka,
        "stats": stats,
        "out": out,
        "metrics": before,
        "lake_before": lake_before,
        "code": code,
        "log": log,
    }


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settled(url, proc, log) -> dict:
    """A scrape equal to the one before it (the downstream steps caught up), lag aside."""
    last = None

    def same():
        nonlocal last
        m = scrape(url)
        now = {k: v for k, v in m.items() if k.startswith("cityvitals_") and "lag" not in k}
        done = now == last
        last = now
        return m if done else None

    return wait_for("metrics did not settle", same, proc, log)


def _lake_rows(out: Path) -> dict[str, int]:
    db = out / "cityvitals.duckdb"
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {
            t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("ingest_batches", "dead_letters", "breaches", "indicator_values")
        }
    finally:
        con.close()


def test_sigterm_flushes_every_buffered_row_and_exits_zero(run):
    assert run["code"] == 0, run["log"].read_text()[-3000:]
    assert run["lake_before"] == dict.fromkeys(run["lake_before"], 0)  # all still buffered
    assert "cityvitals_sink_rows_total" not in run["metrics"]  # no sink had written
    after = _lake_rows(run["out"])
    con = duckdb.connect(str(run["out"] / "cityvitals.duckdb"), read_only=True)
    try:
        events = con.execute("SELECT sum(events_in) FROM ingest_batches").fetchone()[0]
    finally:
        con.close()
    assert events == run["stats"].total
    assert after["dead_letters"] == sum(run["metrics"]["cityvitals_dead_letters_total"].values())
    assert after["indicator_values"] > 0
    kafka = run["kafka"]
    assert after["breaches"] == len(read_topic(kafka.bootstrap_servers, kafka.topics.breaches))
    assert after["breaches"] >= sum(run["metrics"]["cityvitals_breaches_total"].values()) > 0


def test_metrics_scraped_during_the_run_match_the_input_and_the_lake(run):
    m, kafka, stats = run["metrics"], run["kafka"], run["stats"]
    events_in = per_label(m["cityvitals_events_in_total"], "family")
    con = duckdb.connect(str(run["out"] / "cityvitals.duckdb"), read_only=True)
    try:
        valid = dict(
            con.execute("SELECT source, sum(valid) FROM ingest_batches GROUP BY 1").fetchall()
        )
        dead_by_source = dict(
            con.execute("SELECT source, count(*) FROM dead_letters GROUP BY 1").fetchall()
        )
        dead = dict(con.execute("SELECT reason, count(*) FROM dead_letters GROUP BY 1").fetchall())
        breaches = Counter(
            dict(
                ((sev, state), n)
                for sev, state, n in con.execute(
                    "SELECT severity, state, count(*) FROM breaches GROUP BY 1, 2"
                ).fetchall()
            )
        )
    finally:
        con.close()
    for family, topic in kafka.topics.inputs.items():
        assert events_in.get(family, 0) == valid.get(topic, 0)
        assert events_in.get(family, 0) + dead_by_source.get(topic, 0) == stats.messages[topic]
    assert per_label(m["cityvitals_dead_letters_total"], "reason") == dead
    assert sum(dead.values()) > 0
    # Breaches scraped just before the SIGTERM are in the lake (a window closing in between
    # may add more: the quiet partitions advance the watermark with the wall clock).
    scraped = Counter(per_label(m["cityvitals_breaches_total"], "severity", "state"))
    assert scraped and not scraped - breaches
    lat = m["cityvitals_ingest_to_breach_seconds_count"]
    assert sum(lat.values()) == sum(breaches.values())
    lags = m["cityvitals_window_lag_seconds"]
    assert {dict(k)["shard"] for k in lags} == {"0", "1"}  # unset shards: one per worker
    assert all(v > 0 for v in lags.values())  # the simulated afternoon is in the past
    # Bytewax's own metrics, re-exported from its API server
    assert any(name.startswith("bytewax_") for name in m)


def test_logs_are_json_and_tell_the_life_of_the_run(run):
    records = log_records(run["log"])
    messages = [r["message"] for r in records]
    for expected in ("start", "configuration", "partition assigned", "metrics endpoint"):
        assert expected in messages
    assert messages.index("stop requested: ending the inputs and flushing the sinks") < (
        messages.index("stop")
    )
    flushed = [r for r in records if r["message"] == "flush"]  # at the stop: INFO
    assert {r["table"] for r in flushed} >= {"ingest_batches", "dead_letters", "breaches"}
    assigned = [r for r in records if r["message"] == "partition assigned"]
    assert len(assigned) == 4 * 2  # four input topics of two partitions
    config = next(r for r in records if r["message"] == "configuration")["config"]
    assert config["kafka"]["ssl_key_password"] == "**********"


def test_no_secret_in_logs_or_the_breach_topic(run):
    assert SECRET not in run["log"].read_text()
    kafka = run["kafka"]
    messages = read_topic(kafka.bootstrap_servers, kafka.topics.breaches)
    assert messages
    for m in messages:
        assert SECRET.encode() not in m.value()
        assert all(SECRET.encode() not in (v or b"") for _, v in m.headers() or ())


def test_a_bad_setting_stops_the_flow_at_start_with_one_message(tmp_path):
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYVITALS")}
    env |= {"CITYVITALS__METRICS__PORT": "99999", "CITYVITALS__KAFKA__SASL_PASSWORD": SECRET}
    out = subprocess.run(
        [sys.executable, "-m", "bytewax.run", "flows.city_kafka"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "CITYVITALS__METRICS__PORT: metrics.port: got 99999" in out.stderr
    assert "kafka.security_protocol: got None, expected SASL_SSL" in out.stderr
    assert SECRET not in out.stderr + out.stdout


def recovering_start(tmp_path: Path, state: str, **env: str) -> subprocess.CompletedProcess:
    """``python -m bytewax.run flows.city_kafka`` with recovery, over a lake whose state file
    (``_pipeline.json``) says ``state``, as an earlier recovering start left it."""
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith(("CITYVITALS", "BYTEWAX_"))}
    base |= {"CITYVITALS__PIPELINE__OUT": str(tmp_path / "out"), "CITYVITALS__METRICS__PORT": "0"}
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / STATE_FILE).write_text(state)
    argv = ["flows.city_kafka", "-r", str(tmp_path), "-s", "5", "-b", "5"]
    return subprocess.run(
        [sys.executable, "-m", "bytewax.run", *argv],
        env=base | env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def test_a_recovering_start_with_another_shard_count_is_refused(tmp_path):
    """State is keyed by shard: resuming it under another count would misplace entities."""
    state = '{"shards": 4, "timezone": "Asia/Shanghai"}'  # what a first start records
    out = recovering_start(tmp_path, state, CITYVITALS__PIPELINE__SHARDS="8")
    assert out.returncode == 2, out.stderr
    assert "pipeline.shards: got 8, expected 4, the shard count of the recovered state" in (
        out.stderr
    )
    assert "timezone" not in out.stderr and "Traceback" not in out.stderr


def test_a_recovering_start_in_another_time_zone_is_refused(tmp_path):
    """Recovered windows start where their zone put them: state recorded before zones were
    (its windows aligned in UTC) is not resumed under the catalogue's Asia/Shanghai."""
    out = recovering_start(tmp_path, '{"shards": 1}')  # an older first start's
    assert out.returncode == 2, out.stderr
    assert "timezone: got 'Asia/Shanghai', expected 'UTC', the time zone the recovered" in (
        out.stderr
    )
    assert "pipeline.shards" not in out.stderr and "Traceback" not in out.stderr


def test_writer_names_from_state_cannot_leave_the_lake(tmp_path):
    """A sink's writer name (from its state, or a recovery store) never names a path outside."""
    import pyarrow as pa

    from cityvitals.lake import Lake
    from schemas.families import INGEST_BATCHES

    lake = Lake(tmp_path / "lake")
    lake.create()
    victim = tmp_path / "keep.parquet"
    victim.write_bytes(b"x")
    row = {
        "processed_at": datetime.now(UTC),
        "source": "s",
        "partition": 0,
        "first_offset": 0,
        "events_in": 1,
        "valid": 1,
        "dead_letters": 0,
        "max_event_ts": None,
    }
    data = pa.Table.from_pylist([row], schema=INGEST_BATCHES)
    for writer in ("../../..", "a/b", "*", ".hidden", ""):
        with pytest.raises(ValueError, match="not a safe file name part"):
            lake.write("ingest_batches", data, writer, 0)
        with pytest.raises(ValueError, match="not a safe file name part"):
            lake.discard_from("ingest_batches", writer, 0)
    assert victim.exists()
    assert lake.write("ingest_batches", data, "r0", 0)  # a normal name still works


def test_a_busy_metrics_port_is_a_clear_start_error():
    import socket

    from flows import metrics
    from flows.config import MetricsConfig

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ConfigError, match=f"metrics.port: got {port}, expected a free port"):
            metrics.serve(MetricsConfig(port=port), 0)
