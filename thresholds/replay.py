"""Backtest: the live scoring and grading code over a recorded series, in event time.

``cityvitals replay`` reads a CSV or Parquet file of ``timestamp,value`` (and
optionally an entity column and ``samples``); each row is one window value of
an indicator, the window **ending** at ``timestamp``. It runs the very objects
the flow runs: a :class:`thresholds.models.Scorer` for the model scores and a
:class:`thresholds.evaluate.Evaluator` for levels and alert lives, over the
rows in timestamp order, in chunks of whole timestamps, with the event-time
watermark at the chunk's last timestamp. So a model or a rule can be tried on
history before it goes live, and gives the scores the live flow would give.

- ``--model ID``: ``value`` is the model's source indicator,
  ``anomaly_score`` the model's score, ``level`` its rules' level of that
  score (empty during the model's warm-up). A ``half_space_trees`` model also
  needs one column per feature, named by the feature's indicator id.
- ``--indicator ID``: ``level`` is the indicator's rules' level of ``value``;
  ``anomaly_score`` is the score of the indicator's first model in the
  catalogue, empty if it has none.

Timestamps: timezone-aware values (``Z``, ``+08:00``, or a Parquet timestamp
with a zone) are converted to UTC; **naive ones are read as UTC**. Without a
``samples`` column every row counts as having enough samples for the rules'
``min_samples``. Without an entity column every row is one series, ``series``.

>>> import polars as pl
>>> from datetime import datetime, timedelta, UTC
>>> from indicators.definitions import load_catalog
>>> from thresholds.rules import load_rules
>>> cat = load_catalog()
>>> t0 = datetime(2026, 5, 12, 6, tzinfo=UTC)
>>> levels = [1.80, 1.81] * 10 + [1.84, 1.88, 1.95, 2.2]
>>> series = pl.DataFrame({"timestamp": [t0 + timedelta(minutes=5 * k) for k in range(24)],
...                        "value": levels})
>>> result = replay(read_series(series), cat, load_rules(catalog=cat),
...                 model="flood.water_level.anomaly")
>>> result.rows["level"].to_list()[-4:]
['normal', 'blue', 'yellow', 'yellow']
>>> [(c["state"], c["severity"]) for c in result.changes]
[('opened', 'blue'), ('escalated', 'yellow')]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from indicators.definitions import Catalog
from schemas.families import SEVERITIES
from thresholds.evaluate import Evaluator
from thresholds.models import Scorer
from thresholds.rules import RuleSet

__all__ = [
    "LONG_INPUT",
    "ReplayError",
    "ReplayResult",
    "out_format",
    "read_series",
    "replay",
    "summary_lines",
    "write_rows",
]

#: The entity of every row when the input has no entity column.
SINGLE = "series"
#: Inputs of at least this many rows get a progress bar.
LONG_INPUT = 10_000
#: Alert changes listed one by one in the summary; the rest are counted.
_LISTED = 20


class ReplayError(ValueError):
    """An input or a choice ``replay`` can't use; the message says which and why."""


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """Per input row ``timestamp, entity_id, value, anomaly_score, level``; alert changes."""

    rows: pl.DataFrame
    changes: list[dict]
    subject: str  # the indicator or model id replayed
    rules: list[str]  # the rules that graded it


def read_series(
    source: Path | str | pl.DataFrame, entity_column: str | None = None
) -> pl.DataFrame:
    """Read ``timestamp, value`` (+ entity, ``samples``, feature columns) from CSV or Parquet.

    Returns ``timestamp`` (UTC), ``entity_id``, ``value`` and any other columns.
    """
    name = "input"
    if isinstance(source, pl.DataFrame):
        frame = source
    else:
        path = Path(source)
        name = str(path)
        suffix = path.suffix.lower()
        try:
            if suffix == ".parquet":
                frame = pl.read_parquet(path)
            elif suffix == ".csv":
                frame = pl.read_csv(path, infer_schema_length=None, try_parse_dates=False)
            else:
                raise ReplayError(f"{path}: expected a .csv or .parquet file, got '{suffix}'")
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise ReplayError(f"{path}: cannot read: {exc}") from None
    needed = ["timestamp", "value"] + ([entity_column] if entity_column else [])
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ReplayError(f"{name}: expected columns {needed}, missing {missing}")
    if (
        frame.schema["value"] not in (pl.Float64, pl.Float32)
        and not frame.schema["value"].is_integer()
    ):
        raise ReplayError(f"{name}: value: expected numbers, got {frame.schema['value']}")
    entity = pl.col(entity_column).cast(pl.String) if entity_column else pl.lit(SINGLE)
    out = frame.with_columns(
        timestamp=_utc(frame["timestamp"], name),
        value=pl.col("value").cast(pl.Float64),
        entity_id=entity,
    )
    if entity_column and entity_column != "entity_id":
        out = out.drop(entity_column)
    return out.select(
        "timestamp", "entity_id", "value", pl.exclude("timestamp", "entity_id", "value")
    )


def _utc(ts: pl.Series, name: str) -> pl.Series:
    """Timestamps as UTC datetimes: aware ones converted, naive ones read as UTC."""
    dtype = ts.dtype
    if isinstance(dtype, pl.Datetime):
        zone = dtype.time_zone
        parsed = ts.cast(pl.Datetime("us", zone))
        if zone is None:
            parsed = parsed.dt.replace_time_zone("UTC")
        parsed = parsed.dt.convert_time_zone("UTC")
        expected = "a timestamp"
    elif dtype == pl.String:
        text = ts.str.strip_chars()
        aware = text.str.contains(r"\d:\d\d(?::\d\d(?:\.\d+)?)?\s*(?:Z|z|[+-]\d\d(?::?\d\d)?)$")
        text = pl.select(pl.when(aware).then(text).otherwise(text + "Z")).to_series()
        parsed = text.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
        expected = "an ISO 8601 date-time such as 2026-05-12T08:00:00Z (naive ones are read as UTC)"
    else:
        raise ReplayError(f"{name}: timestamp: expected date-times, got {dtype}")
    if (bad := parsed.is_null()).any():
        i = int(bad.arg_true()[0])
        raise ReplayError(f"{name}: row {i + 1}: timestamp: got {ts[i]!r}, expected {expected}")
    return parsed


def _subject(catalog: Catalog, indicator: str | None, model: str | None):
    if (indicator is None) == (model is None):
        raise ReplayError("expected exactly one of --indicator and --model")
    if model is not None:
        try:
            m = catalog.model(model)
        except KeyError:
            known = ", ".join(m.id for m in catalog.models) or "none"
            raise ReplayError(
                f"--model: got '{model}', expected a model of the catalogue ({known})"
            ) from None
        return m.indicator, m.id
    try:
        catalog[indicator]
    except KeyError:
        hint = " (a model: use --model)" if indicator in [m.id for m in catalog.models] else ""
        raise ReplayError(
            f"--indicator: got '{indicator}', expected an indicator of the catalogue{hint}"
        ) from None
    first = next((m.id for m in catalog.models if m.indicator == indicator), None)
    return indicator, first


def replay(
    series: pl.DataFrame,
    catalog: Catalog,
    rules: RuleSet,
    *,
    indicator: str | None = None,
    model: str | None = None,
    chunk_rows: int = 50_000,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Score and grade ``series`` (from :func:`read_series`) as the live flow would.

    ``progress`` is called with the number of rows done after each chunk.
    """
    source_id, model_id = _subject(catalog, indicator, model)
    graded_id = model_id if model is not None else source_id
    source = catalog[source_id]
    m = catalog.model(model_id) if model_id else None
    features = list(getattr(m, "features", []) or [])
    missing = [f for f in features if f not in series.columns]
    if missing:
        raise ReplayError(
            f"model '{model_id}' scores features {features}: expected a column for each, "
            f"missing {missing}"
        )
    dupes = series.select("entity_id", "timestamp").is_duplicated()
    if dupes.any():
        i = int(dupes.arg_true()[0])
        raise ReplayError(
            f"row {i + 1}: expected one value per entity and timestamp, "
            f"'{series['entity_id'][i]}' has two at {series['timestamp'][i]}"
        )
    applied = [r.id for r in rules.for_indicator(graded_id)]
    need = max((r.min_samples for r in rules.rules), default=1)
    ordered = series.with_row_index("_row").sort("timestamp", "entity_id", maintain_order=True)
    if "samples" not in ordered.columns:
        ordered = ordered.with_columns(samples=pl.lit(need, pl.Int64))
    ordered = ordered.with_columns(
        window_end=pl.col("timestamp"),
        window_start=pl.col("timestamp") - source.window,
        samples=pl.col("samples").cast(pl.Int64),
    )
    rank = ordered["timestamp"].rank("dense").cast(pl.Int64) - 1
    distinct = int(rank.max() or 0) + 1
    per_chunk = max(1, chunk_rows * distinct // max(ordered.height, 1))
    ordered = ordered.with_columns(_chunk=rank // per_chunk)

    scorer = Scorer(catalog.model_copy(update={"models": [m] if m else []}))
    evaluator = Evaluator(rules)
    now = datetime.now(UTC)
    scores, levels, changes = [], [], []
    done = 0
    for (_,), chunk in ordered.partition_by("_chunk", as_dict=True, maintain_order=True).items():
        values = pl.concat(
            [_values(chunk, source_id, "value", catalog)]
            + [_values(chunk, f, f, catalog) for f in features]
        )
        scored = scorer.score(values)
        judged = scored if model is not None else values.filter(pl.col("indicator_id") == source_id)
        graded, found = evaluator.evaluate(judged, now=now, watermark=chunk["timestamp"].max())
        changes += [c for c in found if c["rule_id"] in applied]
        scores.append(scored.select("entity_id", "window_end", anomaly_score="value"))
        levels.append(graded.select("entity_id", "window_end", "level"))
        done += chunk.height
        if progress is not None:
            progress(done)
    keys = ["entity_id", "window_end"]
    rows = (
        ordered.select("_row", "timestamp", "entity_id", "value", "window_end")
        .join(pl.concat(scores), on=keys, how="left")
        .join(pl.concat(levels), on=keys, how="left")
        .sort("_row")
        .select("timestamp", "entity_id", "value", "anomaly_score", "level")
    )
    changes.sort(key=lambda c: (c["event_ts"], c["rule_id"], c["entity_id"]))
    return ReplayResult(rows, changes, graded_id, applied)


def _values(chunk: pl.DataFrame, indicator_id: str, column: str, catalog: Catalog) -> pl.DataFrame:
    d = catalog[indicator_id]
    return chunk.select(
        pl.lit(indicator_id).alias("indicator_id"),
        pl.lit(d.sector).alias("sector"),
        pl.lit(d.entity.type).alias("entity_type"),
        "entity_id",
        pl.col("window_start").dt.cast_time_unit("us"),
        pl.col("window_end").dt.cast_time_unit("us"),
        pl.col(column).cast(pl.Float64).alias("value"),
        "samples",
        pl.lit(d.unit).alias("unit"),
    ).drop_nulls("value")


def out_format(path: Path | str) -> str:
    """``csv`` or ``parquet``, by the output file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ReplayError(f"--out: expected a .csv or .parquet file, got '{Path(path).name}'")
    return suffix[1:]


def write_rows(rows: pl.DataFrame, path: Path | str, entity_column: str | None = None) -> None:
    """Write replayed rows as CSV or Parquet, by the file's suffix."""
    out = rows if entity_column else rows.drop("entity_id")
    if entity_column and entity_column != "entity_id":
        out = out.rename({"entity_id": entity_column})
    if out_format(path) == "parquet":
        out.write_parquet(path)
    else:  # UTC, as RFC 3339 with Z
        out.with_columns(pl.col("timestamp").dt.convert_time_zone("UTC")).write_csv(
            path, datetime_format="%Y-%m-%dT%H:%M:%S%.fZ"
        )


def _ts(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _by_severity(levels: pl.Series) -> list[tuple[str, int]]:
    counts = dict(levels.drop_nulls().value_counts().rows())
    return [(s, counts[s]) for s in SEVERITIES if s in counts]


def summary_lines(result: ReplayResult) -> list[str]:
    """What an analyst reads: rows, scores, alerts and level changes and when."""
    rows = result.rows
    span = (
        f"{_ts(rows['timestamp'].min())} to {_ts(rows['timestamp'].max())}" if rows.height else ""
    )
    entities = rows["entity_id"].n_unique()
    opened = [c for c in result.changes if c["state"] == "opened"]
    lines = [
        f"replayed {rows.height:,} rows of {result.subject} ({entities:,} "
        f"entit{'y' if entities == 1 else 'ies'}), {span}",
        f"scored   {rows['anomaly_score'].is_not_null().sum():,} rows",
        "levels   " + ", ".join(f"{lvl} {n:,}" for lvl, n in _by_severity(rows["level"])),
        f"rules    {', '.join(result.rules) or 'none'}",
        f"alerts opened {len(opened):,}; level changes {len(result.changes):,}",
    ]
    for c in result.changes[:_LISTED]:
        lines.append(
            f"  {_ts(c['event_ts'])}  {c['state']:<10} {c['previous_severity']:>6} -> "
            f"{c['severity']:<6} {c['entity_id']}  {c['rule_id']}  value {c['value']:g}"
        )
    if len(result.changes) > _LISTED:
        lines.append(f"  ... and {len(result.changes) - _LISTED:,} more")
    return lines
