"""A flow process runs with the collector's thresholds raised (:mod:`flows.collector`)."""

from __future__ import annotations

import gc

import pytest

from flows import collector


@pytest.fixture
def default_thresholds():
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


def test_tune_sets_the_thresholds_and_returns_the_old_ones(default_thresholds):
    assert collector.tune() == (700, 10, 10)
    assert gc.get_threshold() == collector.THRESHOLDS
    assert collector.THRESHOLDS[0] > 700  # runs less often than Python's default


def test_the_file_flow_for_bytewax_run_tunes_its_process(default_thresholds, tmp_path, monkeypatch):
    import signal

    import flows.city

    path = tmp_path / "in.jsonl"
    path.write_bytes(b"")
    monkeypatch.setenv("CITYVITALS_INPUT", str(path))
    monkeypatch.setenv("CITYVITALS_OUT", str(tmp_path / "out"))
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        assert flows.city.flow is not None
    finally:
        signal.signal(signal.SIGTERM, sigterm)  # the flow's own stop, not the test session's
    assert gc.get_threshold() == collector.THRESHOLDS
