"""Shared fixtures: a small simulated afternoon run once through the real flow."""

from __future__ import annotations

from pathlib import Path

import pytest
from bytewax.testing import run_main

from cityvitals.lake import Lake
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
