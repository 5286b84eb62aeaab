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
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cityvitals.yamlconf import ConfigError, Duration, validate_data
from indicators.definitions import DEFAULT_CATALOG
from thresholds.rules import DEFAULT_RULES

__all__ = ["ConfigError", "PipelineConfig"]


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
