"""The cityvitals command, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from cityvitals.cli import main
from cityvitals.simulate import Scenario, write_jsonl
from tests.config_fixtures import check_command

CITYVITALS = Path(sys.executable).with_name("cityvitals")

GOOD = (
    b'{"family":"heartbeat","ts":"2026-05-12T06:00:00Z","device_id":"c1",'
    b'"device_type":"camera","grid_id":"D01-G01","district_id":"D01"}'
)


def test_the_command_is_installed():
    out = subprocess.run([str(CITYVITALS), "--help"], capture_output=True, check=True, text=True)
    for command in ("demo", "run", "simulate", "schemas"):
        assert command in out.stdout


def test_run_counts_malformed_lines_and_names_their_reasons(tmp_path):
    lines = [
        GOOD,
        b"{not json",
        b"[1, 2]",
        GOOD.replace(b'"camera"', b'"toaster"'),
        GOOD.replace(b"2026-05-12T06:00:00Z", b"yesterday"),
        b"",
        GOOD.replace(b"c1", b"c2"),
    ]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    summary = tmp_path / "summary.json"
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--input",
            str(path),
            "--out",
            str(tmp_path / "out"),
            "--summary-json",
            str(summary),
        ],
    )
    assert result.exit_code == 0, result.output
    s = orjson.loads(summary.read_bytes())
    assert (s["events_in"], s["valid"], s["dead_letters"]) == (7, 2, 5)
    assert s["dead_letters_by_reason"] == {
        "malformed_json": 2,
        "not_an_object": 1,
        "unknown_device_type": 1,
        "bad_timestamp": 1,
    }
    assert s["breaches"] == 0


def test_run_refuses_to_mix_into_an_existing_lake(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(GOOD + b"\n")
    args = ["run", "--input", str(path), "--out", str(tmp_path / "out")]
    assert CliRunner().invoke(main, args).exit_code == 0
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert CliRunner().invoke(main, [*args, "--overwrite"]).exit_code == 0


def test_run_recorded_scenario_matches_summary_json(tmp_path):
    path = tmp_path / "afternoon.jsonl"
    n = write_jsonl(Scenario(devices=200, minutes=60, seed=3), path)
    summary = tmp_path / "s.json"
    result = CliRunner().invoke(
        main,
        ["run", "--input", str(path), "--out", str(tmp_path / "o"), "--summary-json", str(summary)],
    )
    assert result.exit_code == 0, result.output
    s = orjson.loads(summary.read_bytes())
    assert s["events_in"] == n == s["valid"] + s["dead_letters"]
    assert s["breaches"] == 0  # the first hour is the calm stretch


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--batch-size", "0"], "batch_size: got 0"),
        (["--allowed-lateness", "soon"], "allowed_lateness: got 'soon', expected a duration"),
    ],
)
def test_bad_settings_stop_the_start_naming_the_key(tmp_path, args, fragment):
    path = tmp_path / "in.jsonl"
    path.write_bytes(GOOD + b"\n")
    proc = subprocess.run(
        [str(CITYVITALS), "run", "--input", str(path), "--out", str(tmp_path / "o"), *args],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert fragment in proc.stderr
    assert not (tmp_path / "o").exists()


# -- check and catalog ---------------------------------------------------------------


def test_check_reports_full_coverage_per_sector():
    result = CliRunner().invoke(main, ["check"])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()]
    total = next(r for r in rows if r and r[0] == "total")
    sectors = [r for r in rows[1:] if len(r) == 5 and r[0] != "total"]
    assert len(sectors) >= 8
    assert all(r[3] == "100%" for r in [*sectors, total])
    assert int(total[1]) == sum(int(r[1]) for r in sectors)


def test_check_fails_naming_the_indicator_without_thresholds(tmp_path):
    from indicators.definitions import DEFAULT_CATALOG
    from thresholds.rules import DEFAULT_RULES

    text = DEFAULT_RULES.read_text(encoding="utf-8")
    start = text.index("  - {id: flood.rainfall.heavy")
    end = text.index("  - ", start + 4)
    rules = tmp_path / "rules.yaml"
    rules.write_text(text[:start] + text[end:], encoding="utf-8")
    result = CliRunner().invoke(
        main, ["check", "--catalog", str(DEFAULT_CATALOG), "--rules", str(rules)]
    )
    assert result.exit_code != 0
    assert f"{rules}:" in str(result.exception)
    assert "'flood.rainfall' has none" in str(result.exception)


def test_check_through_the_command_names_file_line_and_key():
    bad = Path(__file__).parents[1] / "thresholds" / "fixtures" / "clear_wrong_side.bad.yaml"
    done = check_command("--rules", str(bad))
    assert done.returncode == 2
    assert f"{bad}:12: rules.0.clear.orange: got 60" in done.stderr
    assert done.stdout == ""
